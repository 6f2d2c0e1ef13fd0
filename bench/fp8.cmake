add_executable(bench_fp8 ${CMAKE_CURRENT_LIST_DIR}/fp8.c)
target_link_libraries(bench_fp8 PRIVATE dsv3)
