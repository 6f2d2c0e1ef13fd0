#!/usr/bin/env bash
# What the four tools share on the command line: --help (usage on stdout, exit 0), --version
# (one line, exit 0), and usage errors (an unknown option, a missing value, a bad number): exit 2
# with one line on stderr naming the tool and the argument, never a usage dump or a crash.
. "$SRC/tests/lib.sh"
expect_usage() { # expect_usage DESC PATTERN CMD... : exit 2, one stderr line matching PATTERN
  local d=$1 pat=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ $rc -ne 2 ]; then fail "$d: exit $rc, not 2: $(head -c 300 "$T/err")"; return; fi
  local lines; lines=$(grep -c . "$T/err")
  if [ "$lines" != 1 ]; then fail "$d: $lines lines on stderr: $(head -c 300 "$T/err")"; return; fi
  if grep -q -- "$pat" "$T/err"; then ok; else fail "$d: stderr lacks '$pat': $(cat "$T/err")"; fi
}
for tool in "$CAST" "$CONVERT" "$INSPECT" "$RUN"; do
  [ -x "$tool" ] || continue
  name=$(basename "$tool")
  expect "$name --help" "$tool" --help
  contains "$name --help: usage on stdout" "$T/out" "^usage: $name"
  expect "$name --version" "$tool" --version
  contains "$name --version" "$T/out" "^$name [0-9]"
  expect_usage "$name unknown option" "^$name: error: unknown option or missing value: --no-such-flag" \
    "$tool" --no-such-flag x y
  expect_usage "$name missing value" "^$name: error: unknown option or missing value: --threads" "$tool" x --threads
  expect_usage "$name bad --threads" "^$name: error: --threads needs" "$tool" --threads abc x y
done
expect_usage "inspect verify unknown option" "^dsv3-inspect verify: error: unknown option" "$INSPECT" verify --bar x
expect_usage "inspect verify bad --threads" "^dsv3-inspect verify: error: --threads needs" "$INSPECT" verify --threads 0 x
expect_usage "inspect verify without a checkpoint" "^dsv3-inspect verify: error: needs one checkpoint" "$INSPECT" verify
finish
