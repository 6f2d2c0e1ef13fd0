#!/bin/sh
# Builds the safetensors fuzz target with clang's libFuzzer (+ASan+UBSan) and runs it for
# SECONDS on a corpus seeded from the tiny model's headers and crafted cases, with a dictionary
# of the header's tokens.  Exit 0: no crash; non-zero: a crash (the reproducer is left in
# build-fuzz/, see fuzz.log); exit 0 with a message when clang/libFuzzer is missing and cannot
# be installed (not root).
# Usage: tests/fuzz/run.sh [SECONDS]     (make fuzz FUZZ_SECONDS=N)
set -eu
secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
probe='int LLVMFuzzerTestOneInput(const char*d,unsigned long n){return 0;}'
works() { echo "$probe" | "$1" -x c -fsanitize=fuzzer,address,undefined - -o /dev/null 2>/dev/null; }
CC=${FUZZ_CC:-}
if [ -z "$CC" ]; then
  for c in clang clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v $c >/dev/null 2>&1 && works $c; then CC=$c; break; fi
  done
fi
if [ -z "$CC" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz: installing clang and its libFuzzer runtime"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq clang >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq clang >/dev/null; }
    v=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
    works clang || apt-get install -y -qq "libclang-rt-$v-dev" >/dev/null 2>&1 || true
    works clang && CC=clang
  fi
  if [ -z "$CC" ]; then
    echo "fuzz: clang with libFuzzer not found (apt-get install clang libclang-rt-14-dev); skipped"
    exit 0
  fi
fi
mkdir -p "$out/corpus"
echo "fuzz: building with $CC"
$CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
  -I"$root/format" "$root/tests/fuzz/fuzz_safetensors.c" "$root/format/safetensors.c" "$root/format/util.c" \
  "$root/format/dtype.c" -lcjson -lm -lpthread -o "$out/fuzz_safetensors"

# seeds: each tiny shard's header (data cut: the fuzzer learns the length rules from them)
for f in "$root"/models/dsv3-tiny/*.safetensors; do
  head -c 70000 "$f" > "$out/corpus/$(basename "$f").head"
done
# small crafted files, valid and not: seed NAME HEADER DATA_BYTES
seed() {
  n=$(printf '%s' "$2" | wc -c)
  { printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' $((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))"
    printf '%s' "$2"; head -c "$3" /dev/zero; } > "$out/corpus/seed_$1"
}
seed small '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 4
seed meta '{"__metadata__":{"format":"pt","k":""},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}' 8
seed two '{"x":{"dtype":"U8","shape":[],"data_offsets":[1,2]},"y":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}' 2
seed empty '{}' 0
seed zero '{"e":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]},"f":{"dtype":"F8_E8M0","shape":[3],"data_offsets":[0,3]}}' 3
seed esc '{"a\"\\\u00e9\ud83d\ude00":{"dtype":"U16","shape":[1,1,1,1,1,1,1,1],"data_offsets":[0,2]}}  ' 2
seed overlap '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12
seed overflow '{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}' 4
seed dup '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' 8
cat > "$out/st.dict" <<'DICT'
"{"
"}"
"\"dtype\":"
"\"shape\":"
"\"data_offsets\":"
"\"__metadata__\":"
"\"F8_E4M3\""
"\"F8_E5M2\""
"\"F8_E8M0\""
"\"BF16\""
"\"F16\""
"\"F32\""
"\"F64\""
"\"I64\""
"\"U64\""
"\"BOOL\""
"\"U8\""
"null"
"\\u0000"
"\\ud800"
"4294967296"
"9007199254740993"
"1.5"
"-1"
"1e3"
DICT
rc=0
"$out/fuzz_safetensors" -max_total_time="$secs" -max_len=80000 -timeout=10 -rss_limit_mb=2048 \
  -dict="$out/st.dict" -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus" > "$out/fuzz.log" 2>&1 || rc=$?
grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss" "$out/fuzz.log" | tail -3
if [ $rc -eq 0 ]; then
  echo "fuzz: no crash in ${secs}s ($(ls "$out/corpus" | wc -l) corpus files)"
else
  tail -40 "$out/fuzz.log"
  echo "fuzz: FAILED (exit $rc): see $out/fuzz.log and the crash-* file in $out"
fi
exit $rc
