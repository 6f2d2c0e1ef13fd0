# cuda_bench: kernels/cuda at 671B widths against the measured copy bandwidth and cuBLAS peak.
if(DSV3_HAVE_CUDA AND TARGET dsv3_cuda)
  add_executable(cuda_bench ${CMAKE_CURRENT_SOURCE_DIR}/cuda_bench.c)
  target_link_libraries(cuda_bench PRIVATE dsv3_cuda dsv3_ops dsv3)
endif()
