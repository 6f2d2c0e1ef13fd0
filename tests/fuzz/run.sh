#!/bin/sh
# Builds the fuzz targets with clang's libFuzzer (+ASan+UBSan) and runs each for SECONDS:
# fuzz_safetensors on a corpus seeded from the tiny model's headers and crafted cases, with a
# dictionary of the header's tokens; fuzz_tokenizer (dsv3-run's tokenizer: texts through the tiny
# model's tokenizer.json, and hostile tokenizer.json files) on crafted seeds; fuzz_json
# (config.json, dsv3-manifest.json, and model.safetensors.index.json beside the tiny shards).  Exit 0: no crash; non-zero: a crash (the reproducer is
# left in build-fuzz/, see fuzz.log / fuzz_tokenizer.log / fuzz_json.log);
# exit 0 with a message when clang/libFuzzer is missing and cannot be installed (not root).
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
mkdir -p "$out/corpus" "$out/corpus_tok"
echo "fuzz: building with $CC"
$CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
  -I"$root/format" "$root/tests/fuzz/fuzz_safetensors.c" "$root/format/safetensors.c" "$root/format/util.c" \
  "$root/format/dtype.c" -lcjson -lm -lpthread -o "$out/fuzz_safetensors"
onig_inc=$(pkg-config --cflags oniguruma 2>/dev/null || true)
onig_lib=$(pkg-config --libs oniguruma 2>/dev/null || echo -lonig)
$CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE $onig_inc \
  -I"$root/format" -I"$root/dsv3-run" "$root/tests/fuzz/fuzz_tokenizer.c" "$root/dsv3-run/tokenizer.c" \
  "$root/format/util.c" -lcjson $onig_lib -lm -lpthread -o "$out/fuzz_tokenizer"

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
$CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
  -I"$root/format" "$root/tests/fuzz/fuzz_json.c" "$root"/format/*.c \
  -lcjson -lxxhash -lcrypto -larchive -lzstd -lm -lpthread -o "$out/fuzz_json"
# JSON seeds (the first byte mod 3 picks the reader): the tiny model's config.json and the
# official demo's (0), a manifest in dsv3-cast's format (1), the tiny model's index (2)
mkdir -p "$out/corpus_json"
{ printf 0; cat "$root/models/dsv3-tiny/config.json"; } > "$out/corpus_json/tiny_config"
{ printf 0; cat "$root/tests/data/config_671B_demo.json"; } > "$out/corpus_json/demo_config"
Z=$(printf '%064d' 0) X=$(printf '%032d' 0)
{ printf 2; cat "$root/models/dsv3-tiny/model.safetensors.index.json"; } > "$out/corpus_json/tiny_index"
printf '1{"format":"dsv3-manifest/1","tool":"dsv3-cast","version":"1","arguments":"a b","files":{"model-00001-of-00001.safetensors":{"size":123,"sha256":"%s","tensors":{"w":{"dtype":"BF16","shape":[2,3],"xxh3_128":"%s"}}}},"inputs":{"x.safetensors":{"size":1,"sha256":"%s"}}}' "$Z" "$X" "$Z" > "$out/corpus_json/manifest"
# tokenizer seeds: texts (first byte even: 0) and tokenizer.json files (first byte odd: 1)
tseed() { { printf '%s' "$2"; cat; } > "$out/corpus_tok/$1"; }
printf 'def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1)  # 12345\n' | tseed code 0
printf '  \t\r\n\n  x  \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x81\x93 \xf0\x9f\x98\x80 3.14159 \xff\xfe\xc0\xaf' | tseed mixed 0
printf '<\xef\xbd\x9cbegin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>Hi<\xef\xbd\x9cUser\xef\xbd\x9c>' | tseed special 0
# small tokenizer.json files (the tiny model's own, 120 KB, would make every run slow), one per
# feature family: Split behaviours, ByteLevel, normalizers, added-token flags, unk and byte
# fallback, subword affixes, the other pre-tokenizers
V='"vocab":{"a":0,"b":1,"c":2,"ab":3,"abc":4,"\u0120":5,"\u0120a":6,"<unk>":7}'
printf '{"version":"1.0","model":{"type":"BPE",%s,"merges":["a b","ab c","\u0120 a"]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(a|b)+"},"behavior":"Isolated","invert":false},"added_tokens":[{"id":8,"content":"<s>","special":true}]}' "$V" | tseed split_json 1
printf '{"version":"1.0","model":{"type":"BPE",%s,"merges":[["a","b"],["ab","c"]],"ignore_merges":true},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"String":" "},"behavior":"MergedWithNext","invert":true},{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}]},"decoder":{"type":"ByteLevel"}}' "$V" | tseed bytelevel_json 1
printf '{"version":"1.0","normalizer":{"type":"Sequence","normalizers":[{"type":"Strip","strip_left":true,"strip_right":false},{"type":"Replace","pattern":{"Regex":"[0-9]{2}"},"content":"#"},{"type":"Prepend","prepend":"\u2581"}]},"model":{"type":"BPE",%s,"merges":["a b"],"unk_token":"<unk>","fuse_unk":true,"byte_fallback":true},"pre_tokenizer":{"type":"WhitespaceSplit"},"added_tokens":[{"id":9,"content":"ab","special":false,"normalized":true,"lstrip":true,"rstrip":true,"single_word":true},{"id":10,"content":"<|x|>","special":true,"normalized":false}]}' "$V" | tseed norm_json 1
# normalizer steps that match the empty string: the text grows geometrically, refused past the
# limit (an out-of-memory found by this target, 2026-11-23)
R='{"type":"Replace","pattern":{"Regex":""},"content":"0123456789abcdef"}'
printf '{"version":"1.0","normalizer":{"type":"Sequence","normalizers":[%s,%s,%s,%s,%s,%s]},"model":{"type":"BPE",%s,"merges":["a b"]},"added_tokens":[{"id":9,"content":"abc","special":false,"normalized":true}]}' "$R" "$R" "$R" "$R" "$R" "$R" "$V" | tseed growth_json 1
printf '{"version":"1.0","model":{"type":"BPE",%s,"merges":[],"continuing_subword_prefix":"##","end_of_word_suffix":"</w>","unk_token":"<unk>"},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Whitespace"},{"type":"Digits","individual_digits":true},{"type":"Punctuation","behavior":"Contiguous"},{"type":"Split","pattern":{"Regex":"\\b|x*|(?=[A-Z])"},"behavior":"Removed","invert":false}]}}' "$V" | tseed affix_json 1
cat > "$out/tok.dict" <<'DICT'
"\"type\":"
"\"BPE\""
"\"Split\""
"\"Sequence\""
"\"ByteLevel\""
"\"Regex\":"
"\"String\":"
"\"behavior\":"
"\"Isolated\""
"\"Removed\""
"\"MergedWithPrevious\""
"\"MergedWithNext\""
"\"Contiguous\""
"\"invert\":true"
"\"pretokenizers\":"
"\"normalizers\":"
"\"added_tokens\":"
"\"special\":true"
"\"lstrip\":true"
"\"rstrip\":true"
"\"single_word\":true"
"\"normalized\":true"
"\"unk_token\":"
"\"byte_fallback\":true"
"\"fuse_unk\":true"
"\"merges\":"
"\"vocab\":"
"\"add_prefix_space\":true"
"\"use_regex\":true"
"\"Whitespace\""
"\"WhitespaceSplit\""
"\"Digits\""
"\"Punctuation\""
"\"Strip\""
"\"Replace\""
"\"Prepend\""
"\"content\":"
"\"pattern\":"
"\"id\":"
"<0x41>"
"(?="
"\\p{L}"
"[^"
"{1,3}"
DICT

run() { # NAME CORPUS LOG [ARGS...]
  name=$1 corpus=$2 log=$3
  shift 3
  r=0
  "$out/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/" -print_final_stats=1 \
    "$@" "$corpus" > "$log" 2>&1 || r=$?
  grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss" "$log" | tail -3
  if [ $r -eq 0 ]; then
    echo "fuzz: $name: no crash in ${secs}s ($(ls "$corpus" | wc -l) corpus files)"
  else
    tail -40 "$log"
    echo "fuzz: $name FAILED (exit $r): see $log and the crash-* file in $out"
  fi
  return $r
}
rc=0
run fuzz_safetensors "$out/corpus" "$out/fuzz.log" -max_len=80000 -dict="$out/st.dict" || rc=$?
export FUZZ_TOKENIZER="$root/models/dsv3-tiny/tokenizer.json"
run fuzz_tokenizer "$out/corpus_tok" "$out/fuzz_tokenizer.log" -max_len=4096 -dict="$out/tok.dict" || rc=$?
export FUZZ_TINY="$root/models/dsv3-tiny"
run fuzz_json "$out/corpus_json" "$out/fuzz_json.log" -max_len=32768 || rc=$?
exit $rc
