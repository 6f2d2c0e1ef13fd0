# libdsv3 unit tests.
dsv3_test(test_dtype SOURCES format/test_dtype.c)
dsv3_test(test_safetensors SOURCES format/test_safetensors.c)
dsv3_test(test_checkpoint SOURCES format/test_checkpoint.c)
