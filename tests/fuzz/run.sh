#!/bin/sh
# Builds the safetensors fuzz target with clang's libFuzzer (+ASan+UBSan) and runs it for
# SECONDS on a corpus seeded from the tiny model's headers and crafted cases.  Exit 1 on a crash.
# Usage: tests/fuzz/run.sh [SECONDS]
set -eu
secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
CC=${FUZZ_CC:-}
for c in clang clang-16 clang-15 clang-14; do
  [ -n "$CC" ] && break
  command -v $c >/dev/null 2>&1 && CC=$c
done
if [ -z "$CC" ] || ! echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){return 0;}' | $CC -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz: installing clang and its libFuzzer runtime"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; }
    CC=clang
  else
    echo "fuzz: clang with libFuzzer not found (apt-get install clang); skipped"; exit 0
  fi
fi
mkdir -p "$out/corpus"
$CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
  -I"$root/format" "$root/tests/fuzz/fuzz_safetensors.c" "$root/format/safetensors.c" "$root/format/util.c" \
  "$root/format/dtype.c" -lcjson -lm -lpthread -o "$out/fuzz_safetensors"
# seeds: each tiny shard's header with a few bytes of data, plus small crafted files
for f in "$root"/models/dsv3-tiny/*.safetensors; do
  head -c 70000 "$f" > "$out/corpus/$(basename "$f").head"
done
printf '\x10\0\0\0\0\0\0\0{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' > "$out/corpus/small" 2>/dev/null || true
rc=0
"$out/fuzz_safetensors" -max_total_time="$secs" -max_len=80000 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 "$out/corpus" > "$out/fuzz.log" 2>&1 || rc=$?
tail -15 "$out/fuzz.log"
[ $rc -eq 0 ] && echo "fuzz: no crash in ${secs}s" || echo "fuzz: FAILED (exit $rc): see $out/fuzz.log"
exit $rc
