# dsv3-convert: identical to the official convert.py (per-tensor and whole-file hashes of its
# output, tests/data/ref_convert_mp{1,2,4}.tsv), reshards, --dtype bf16, --keep-mtp;
# an independent numpy re-implementation of convert.py; invalid degrees, bad inputs, resume.
dsv3_shell_test(convert_tiny convert/convert_tiny.sh)
dsv3_shell_test(convert_errors convert/convert_errors.sh)
if(Python3_EXECUTABLE)
  add_test(NAME convert_numpy COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/convert/convert_numpy.py
           $<TARGET_FILE:dsv3-convert> ${DSV3_TINY})
  set_tests_properties(convert_numpy PROPERTIES SKIP_RETURN_CODE 77)
endif()
