# dsv3-inspect benchmarks (never run by ctest):
#   cmake --build B --target bench-inspect-open    163-shard index + headers (bench/inspect_open.sh)
#   cmake --build B --target bench-inspect-stats   --stats GB/s against RAM bandwidth (bench/inspect_stats.sh)
# Scratch data goes to $DSV3_BENCH_DIR (default /tmp/dsv3-bench).
add_executable(inspect_floor ${PROJECT_SOURCE_DIR}/bench/inspect_floor.c)
target_include_directories(inspect_floor PRIVATE ${CJSON_INCLUDE_DIR})
target_link_libraries(inspect_floor PRIVATE ${CJSON_LIBRARY} Threads::Threads)
foreach(b open stats)
  add_custom_target(bench-inspect-${b}
    COMMAND bash ${PROJECT_SOURCE_DIR}/bench/inspect_${b}.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
    DEPENDS dsv3-inspect dsv3-gen inspect_floor USES_TERMINAL)
endforeach()
