# dsv3-cast: bit-exact with the official fp8_cast_bf16.py (per-tensor hashes made on an H100),
# with an independent numpy weight_dequant / block quantisation, round trip, bad inputs,
# bounded memory, kill -9 and --resume.
dsv3_shell_test(cast_tiny cast/cast_tiny.sh)
dsv3_shell_test(cast_numpy cast/cast_numpy.sh)
dsv3_shell_test(cast_errors cast/cast_errors.sh)
dsv3_shell_test(cast_resume cast/cast_resume.sh)
dsv3_shell_test(cast_layouts cast/cast_layouts.sh)
