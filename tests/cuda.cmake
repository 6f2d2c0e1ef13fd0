# kernels/cuda unit tests: each op against the CPU reference ops on random inputs.  Built only
# with CUDA; they exit 77 (skip) on a machine without a GPU, so CI without one passes.
if(DSV3_HAVE_CUDA AND TARGET dsv3_cuda)
  foreach(t linear norm mla moe sample)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/cuda/test_cuda_${t}.c)
      dsv3_test(test_cuda_${t} SOURCES cuda/test_cuda_${t}.c LIBS dsv3_cuda dsv3_ops)
      set_tests_properties(test_cuda_${t} PROPERTIES TIMEOUT 300 LABELS cuda)
    endif()
  endforeach()
endif()
# the GPU backend of dsv3-run against the CPU forward pass on dsv3-tiny
if(DSV3_HAVE_CUDA AND TARGET dsv3_cuda AND TARGET dsv3_run_gpu)
  dsv3_test(test_cuda_forward SOURCES cuda/test_cuda_forward.c LIBS dsv3_run_gpu)
  set_tests_properties(test_cuda_forward PROPERTIES TIMEOUT 300 LABELS cuda)
endif()
