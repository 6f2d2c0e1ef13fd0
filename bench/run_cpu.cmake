if(TARGET dsv3_run)
  add_executable(bench_run_cpu ${CMAKE_CURRENT_LIST_DIR}/run_cpu.c)
  target_link_libraries(bench_run_cpu PRIVATE dsv3_run)
endif()
