# dsv3-convert benchmark (never run by ctest): bench/convert_bench.sh reshards a slice of the
# 671B checkpoint to MP 8 and 16 (and mp16 -> mp8) against the I/O floor, with peak RSS.
#   cmake --build B --target bench-convert        (scratch in $BENCH_DIR, default bench/out)
add_custom_target(bench-convert
  COMMAND ${CMAKE_COMMAND} -E env BUILD=${PROJECT_BINARY_DIR} bash ${PROJECT_SOURCE_DIR}/bench/convert_bench.sh
  DEPENDS dsv3-convert dsv3-gen USES_TERMINAL)
