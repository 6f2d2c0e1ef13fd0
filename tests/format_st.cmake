# libdsv3 core (util, dtype, safetensors): unit tests, two test CLIs and interop with the Python
# safetensors library (skipped, exit 77, where python3 or safetensors is missing).
dsv3_test(test_st_dtype SOURCES format_st/test_st_dtype.c)
dsv3_test(test_st_util SOURCES format_st/test_st_util.c LIBS util)
dsv3_test(test_st_reader SOURCES format_st/test_st_reader.c)
dsv3_test(test_st_writer SOURCES format_st/test_st_writer.c)

# st-dump prints what the reader sees; st-write builds a file with the streaming writer.
add_executable(st-dump format_st/st_dump.c)
target_link_libraries(st-dump PRIVATE dsv3)
add_executable(st-write format_st/st_write.c)
target_link_libraries(st-write PRIVATE dsv3)

function(dsv3_st_py name)
  add_test(NAME ${name} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/format_st/run_py.sh ${ARGN}
           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "PYTHON=${Python3_EXECUTABLE}")
endfunction()
# every tensor of the tiny model (309) read by us == read by Python safetensors
dsv3_st_py(st_tiny_python compare_tiny.py $<TARGET_FILE:st-dump> ${DSV3_TINY} 309)
# our writer's files == safetensors' files, byte for byte (many dtypes, 0-d, empty, metadata)
dsv3_st_py(st_writer_python writer_interop.py $<TARGET_FILE:st-write> $<TARGET_FILE:st-dump>)
# malformed files: one error line naming the file, exit 1, through the full and header-only reads
dsv3_shell_test(st_malformed format_st/malformed.sh)
