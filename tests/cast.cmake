# dsv3-cast: bit-exact with the official fp8_cast_bf16.py, round trip, resume, bad inputs.
dsv3_shell_test(cast_tiny cast/cast_tiny.sh)
