# dsv3-inspect end to end on models/dsv3-tiny, and hostile inputs through the CLI.
dsv3_shell_test(inspect_tiny inspect/inspect_tiny.sh)
dsv3_shell_test(inspect_malformed inspect/malformed.sh)
