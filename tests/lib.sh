# Shared helpers for the shell tests (sourced).  BUILD, DSV3_TINY, DSV3_TESTDATA, SRC set by ctest.
set -u
fails=0
checks=0
T=$(mktemp -d /tmp/dsv3-test-XXXXXX)
trap 'rm -rf "$T"' EXIT
INSPECT=$BUILD/dsv3-inspect/dsv3-inspect
CAST=$BUILD/dsv3-cast/dsv3-cast
CONVERT=$BUILD/dsv3-convert/dsv3-convert
RUN=$BUILD/dsv3-run/dsv3-run
ok()   { checks=$((checks+1)); }
fail() { checks=$((checks+1)); fails=$((fails+1)); echo "FAILED: $*" >&2; }
expect() { # expect DESC CMD... : command must succeed
  local d=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then ok; else fail "$d (exit $?): $(head -c 600 "$T/err")"; fi
}
# expect_error DESC PATTERN CMD... : non-zero exit (not a crash), one stderr line matching PATTERN
expect_error() {
  local d=$1 pat=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ $rc -eq 0 ]; then fail "$d: succeeded"; return; fi
  if [ $rc -ge 128 ]; then fail "$d: crashed with signal $((rc-128))"; return; fi
  local lines; lines=$(grep -c . "$T/err")
  if [ "$lines" != 1 ]; then fail "$d: $lines lines on stderr: $(head -c 600 "$T/err")"; return; fi
  if grep -q -- "$pat" "$T/err"; then ok; else fail "$d: stderr lacks '$pat': $(cat "$T/err")"; fi
}
contains() { # contains DESC FILE PATTERN
  if grep -q -- "$3" "$2"; then ok; else fail "$1: '$3' not in output: $(head -c 600 "$2")"; fi
}
finish() { echo "$checks checks, $fails failed"; [ $fails -eq 0 ]; exit $?; }
have_python() { [ -n "${PYTHON:-}" ] && "$PYTHON" -c 'import json' 2>/dev/null; }
