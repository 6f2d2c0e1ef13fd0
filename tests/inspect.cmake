# dsv3-inspect and dsv3-gen end to end (tests/inspect/*.sh; st.py is an independent
# struct+numpy reader the tests compare against).
dsv3_shell_test(inspect_tiny inspect/inspect_tiny.sh)
dsv3_shell_test(inspect_stats inspect/stats.sh)
dsv3_shell_test(inspect_check inspect/check.sh)
dsv3_shell_test(inspect_diff inspect/diff.sh)
dsv3_shell_test(inspect_gen inspect/gen.sh)
dsv3_shell_test(inspect_malformed inspect/malformed.sh)
