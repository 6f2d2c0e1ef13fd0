# libdsv3 checkpoint half: config, names, checkpoint layouts and index checks, FP8.
# tests/data/tiny_names_rt.tsv (used by ckpt_names) is the name loop of the official
# convert.py re-run on the tiny model's names:
#   python3 tests/format_ckpt/convert_names.py models/dsv3-tiny > tests/data/tiny_names_rt.tsv
dsv3_test(ckpt_config SOURCES format_ckpt/test_ckpt_config.c)
dsv3_test(ckpt_names SOURCES format_ckpt/test_ckpt_names.c)
dsv3_test(ckpt_open SOURCES format_ckpt/test_ckpt_open.c)
dsv3_test(ckpt_fp8 SOURCES format_ckpt/test_ckpt_fp8.c)
# In-memory FP8 dequant/quant rate per core; not run by ctest: build-DIR/tests/fp8_bench
add_executable(fp8_bench format_ckpt/fp8_bench.c)
target_link_libraries(fp8_bench PRIVATE dsv3)
