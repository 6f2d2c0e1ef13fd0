#!/bin/bash
# Run one of the format_st Python tests: run_py.sh SCRIPT ARGS...  Exit 77 (skip) without python3.
py=${PYTHON:-}
[ -n "$py" ] && [ -x "$py" ] || py=$(command -v python3 || true)
if [ -z "$py" ]; then echo "python3 not found: skipped"; exit 77; fi
here=$(cd "$(dirname "$0")" && pwd)
script=$1; shift
exec "$py" "$here/$script" "$@"
