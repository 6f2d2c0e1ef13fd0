# dsv3-convert: identical to the official convert.py, reshards, --dtype bf16, invalid degrees.
dsv3_shell_test(convert_tiny convert/convert_tiny.sh)
