# The command-line conventions the four tools share (--help, --version, usage errors).
dsv3_shell_test(cli_common cli/cli_common.sh)
