# dsv3-run CPU path: tokenizer vs Hugging Face tokenizers, forward pass vs the official model.py,
# CLI end to end.
if(TARGET dsv3_run)
  dsv3_test(test_ref_logits SOURCES run/test_ref_logits.c LIBS dsv3_run)
  set_tests_properties(test_ref_logits PROPERTIES TIMEOUT 600)
  dsv3_shell_test(run_cli run/run_cli.sh)
endif()
