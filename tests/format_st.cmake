# libdsv3 core (util, dtype, safetensors): unit tests, a test CLI and interop with Python safetensors.
dsv3_test(test_st_dtype SOURCES format_st/test_st_dtype.c)
dsv3_test(test_st_util SOURCES format_st/test_st_util.c LIBS util)
