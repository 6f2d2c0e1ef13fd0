# dsv3-cast benchmarks (never run by ctest): bench/cast_bench.sh (end to end against the I/O
# floor) and bench_cast_dequant (the kernels' in-memory rate per core).
add_executable(bench_cast_dequant ${CMAKE_CURRENT_LIST_DIR}/cast_dequant.c)
target_link_libraries(bench_cast_dequant PRIVATE dsv3)
