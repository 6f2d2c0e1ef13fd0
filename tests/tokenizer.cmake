# Tokenizer (dsv3-run/tokenizer.c) against Hugging Face `tokenizers`:
#   tokenizer_equality  the committed corpus (tests/data/tokenizer_corpus.txt -> tokenizer_ids.txt,
#                       made by scripts/ref/ref_tokenizer.py), round trips, chat, hostile files
#   tokenizer_diff_hf   random texts on the real tokenizer.json and on variants of it, compared
#                       live with the `tokenizers` package (skipped when it is not installed)
# tok_cli is the library on the command line (stdin -> ids, --lines, --decode, --time).
if(TARGET dsv3_run)
  dsv3_test(tokenizer_equality SOURCES tokenizer/test_tokenizer.c LIBS dsv3_run Threads::Threads)
  set_tests_properties(tokenizer_equality PROPERTIES TIMEOUT 300)
  add_executable(tok_cli tokenizer/tok_cli.c)
  target_link_libraries(tok_cli PRIVATE dsv3_run)
  dsv3_shell_test(tokenizer_diff_hf tokenizer/diff_hf.sh)
  set_tests_properties(tokenizer_diff_hf PROPERTIES TIMEOUT 600)
endif()
