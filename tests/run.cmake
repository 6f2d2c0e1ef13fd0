# dsv3-run CPU path: tokenizer vs Hugging Face tokenizers, forward pass vs the official model.py,
# CLI end to end, hostile checkpoints.
if(TARGET dsv3_run)
  dsv3_test(test_cpu_ops SOURCES run/test_cpu_ops.c LIBS dsv3_ops) # AVX2 FP8 rows = table rows, bit for bit
  dsv3_test(test_ref_logits SOURCES run/test_ref_logits.c LIBS dsv3_run)
  set_tests_properties(test_ref_logits PROPERTIES TIMEOUT 600)
  dsv3_shell_test(run_cli run/run_cli.sh)
  dsv3_shell_test(run_hostile run/run_hostile.sh) # broken checkpoints: one-line errors, input untouched
endif()
# across ranks: the rendezvous and agreement errors (CPU: no GPU needed), and on GPUs the
# batched --input-file and mp 2/4 against mp 1 in both launch modes (run_gpu: label cuda)
if(TARGET dsv3_run AND TARGET dsv3-run)
  add_executable(logits_cmp run/logits_cmp.c)
  target_link_libraries(logits_cmp PRIVATE dsv3)
  dsv3_shell_test(run_ranks run/run_ranks.sh)
  set_tests_properties(run_ranks PROPERTIES TIMEOUT 300)
  dsv3_shell_test(run_gpu run/run_gpu.sh)
  set_tests_properties(run_gpu PROPERTIES TIMEOUT 600 LABELS cuda)
endif()
