#!/bin/bash
# Malformed safetensors files through st-dump (full mmap read and --header-only read): each must
# give exit 1 and exactly one stderr line "st-dump: error: ..." naming the file and saying what
# is wrong (the expected phrase); never a crash, a hang or partial output.  A few unusual but
# valid files (as the reference library accepts them) must be read.
set -u
DUMP=$BUILD/tests/st-dump
[ -x "$DUMP" ] || { echo "st-dump not built: $DUMP"; exit 1; }
T=$(mktemp -d /tmp/dsv3-st-malformed-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0 n=0

le64() { # 8-byte little-endian encoding of $1
  local v=$1 s="" i
  for i in 0 1 2 3 4 5 6 7; do s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255))); done
  printf "$s"
}
# mk NAME HEADER DATA_BYTES [HEADER_LENGTH]
mk() {
  local f=$T/$1 hl=${4:-}
  [ -n "$hl" ] || hl=$(printf '%s' "$2" | wc -c)
  { le64 "$hl"; printf '%s' "$2"; head -c "$3" /dev/zero; } > "$f"
}
# bad NAME PHRASE: both reads fail with one line naming the file and containing PHRASE
bad() {
  local f=$T/$1 mode
  for mode in "" --header-only; do
    n=$((n + 1))
    timeout 20 "$DUMP" $mode "$f" > "$T/out" 2> "$T/err"
    local rc=$? lines
    lines=$(wc -l < "$T/err")
    if [ $rc -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -qF "st-dump: error: $f" "$T/err" || ! grep -qF -- "$2" "$T/err" || [ -s "$T/out" ]; then
      echo "FAIL $1 ${mode:-full}: rc=$rc lines=$lines want \"$2\": $(head -c 300 "$T/err")"
      fails=$((fails + 1))
    fi
  done
}
good() {
  local f=$T/$1 mode
  for mode in "" --header-only; do
    n=$((n + 1))
    if ! "$DUMP" $mode "$f" > "$T/out" 2> "$T/err" || ! grep -q "^file" "$T/out"; then
      echo "FAIL $1 ${mode:-full}: valid file rejected: $(cat "$T/err")"
      fails=$((fails + 1))
    fi
  done
}
T1='"dtype":"F32","shape":[1]'
printf 'abc' > "$T/trunc3";                                  bad trunc3 "too short"
: > "$T/empty";                                              bad empty "too short"
mk past_eof '{}' 0 1000;                                     bad past_eof "header length 1000 runs past the end of the file"
mk huge '{}' 0 200000000;                                    bad huge "header length 200000000 exceeds"
mk huge64 '{}' 0 18446744073709551615;                       bad huge64 "exceeds"
mk zero '' 0 0;                                              bad zero "header is empty"
mk badjson '{"a":{"dtype":"F32",' 0;                         bad badjson "not valid JSON"
mk notobj '[1,2,3]' 0;                                       bad notobj "not a JSON object"
mk string '"abc"' 0;                                         bad string "not a JSON object"
mk entry '{"a":[1]}' 0;                                      bad entry "tensor a: entry is not a JSON object"
mk dtype '{"w":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}}' 2;                  bad dtype 'tensor w: unknown dtype "F7"'
mk dtnum '{"w":{"dtype":7,"shape":[2],"data_offsets":[0,2]}}' 2;                     bad dtnum "tensor w: needs exactly"
mk missing '{"w":{"shape":[2],"data_offsets":[0,2]}}' 2;                             bad missing "tensor w: needs exactly"
mk extra '{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1}}' 2;           bad extra 'tensor w: unknown field "x"'
mk overflow '{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}' 4; bad overflow "tensor w: shape overflows"
mk bytesovf '{"w":{"dtype":"F64","shape":[4294967296,2147483648],"data_offsets":[0,8]}}' 8;   bad bytesovf "tensor w: byte size of shape overflows"
mk negshape '{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}' 4;             bad negshape "tensor w: shape[0] is not a non-negative integer"
mk fracshape '{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}' 4;           bad fracshape "tensor w: number 1.5 is not a non-negative integer"
mk floatshape '{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}' 4;          bad floatshape "tensor w: number 1.0 is not a non-negative integer"
mk expshape '{"w":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}' 4;           bad expshape "is not a non-negative integer"
mk strshape '{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}' 4;           bad strshape "tensor w: shape[0] is not a non-negative integer"
mk bigshape '{"w":{"dtype":"U8","shape":[18446744073709551616,0],"data_offsets":[0,0]}}' 0; bad bigshape "tensor w: shape[0]"
mk dims9 '{"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}' 1; bad dims9 "tensor w: 9 dimensions"
mk offs3 '{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}' 1;               bad offs3 "tensor w: data_offsets must be two"
mk negoff '{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}' 1;               bad negoff "tensor w: data_offsets must be two"
mk range '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}' 8;               bad range "tensor w: data_offsets [0, 16] run past the data section (8 bytes)"
mk mismatch '{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}' 16;           bad mismatch "tensor w: shape and dtype F32 need 12 bytes but data_offsets span 16"
mk backwards '{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}' 8;             bad backwards "tensor w: data_offsets [8, 4] end before they begin"
mk overlap "{\"a\":{$T1,\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}" 10
bad overlap "tensor b: data_offsets [2, 10] overlap tensor a"
mk gap "{\"a\":{$T1,\"data_offsets\":[0,4]},\"b\":{$T1,\"data_offsets\":[8,12]}}" 12; bad gap "tensor b: gap of 4 bytes"
mk gapstart "{\"a\":{$T1,\"data_offsets\":[4,8]}}" 8;                                  bad gapstart "tensor a: gap of 4 bytes"
mk uncovered "{\"a\":{$T1,\"data_offsets\":[0,4]}}" 10;                                bad uncovered "data section is 10 bytes but the tensors cover 4"
mk dup "{\"a\":{$T1,\"data_offsets\":[0,4]},\"a\":{$T1,\"data_offsets\":[4,8]}}" 8;   bad dup "tensor a: name appears twice"
mk metanum '{"__metadata__":{"format":3}}' 0;                                       bad metanum '__metadata__ value of "format" is not a string'
mk metaarr '{"__metadata__":["a"]}' 0;                                              bad metaarr "__metadata__ is not a JSON object"
mk metadup '{"__metadata__":{"k":"a","k":"b"}}' 0;                                  bad metadup '__metadata__ key "k" appears twice'
mk meta2 '{"__metadata__":{},"__metadata__":{}}' 0;                                 bad meta2 "__metadata__ appears twice"
mk trailing '{}x' 0;                                                                 bad trailing "trailing bytes"
{ le64 4; printf '{}\0\0'; } > "$T/nulpad";                                          bad nulpad "trailing bytes"
u8hdr='{"a\xff":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'
{ le64 "$(printf "$u8hdr" | wc -c)"; printf "$u8hdr"; } > "$T/utf8"
bad utf8 "not valid UTF-8"
{ le64 5; printf '{"\xc0\xaf"}'; } > "$T/overlong";                                  bad overlong "not valid UTF-8"
{ le64 6; printf '{"\xed\xa0\x80"}'; } > "$T/surrogate";                             bad surrogate "not valid UTF-8"
mk nulname '{"a\u0000b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}' 0;        bad nulname "NUL character"
{ le64 4; printf '{"\x01"}'; } > "$T/ctl";                                           bad ctl "control character"
mk nonexistent_target '{}' 0; rm "$T/nonexistent_target";                           bad nonexistent_target "No such file"
mkdir "$T/adir";                                                                     bad adir "not a regular file"
# the tiny model's shards, cut short
for f in "$DSV3_TINY"/model-0000[12]-of-00003.safetensors; do
  b=$(basename "$f")
  head -c 100 "$f" > "$T/cut100.$b";     bad "cut100.$b" "runs past the end of the file"
  head -c 200000 "$f" > "$T/cut200k.$b"; bad "cut200k.$b" "data_offsets"
  { cat "$f"; printf 'x'; } > "$T/long.$b"; bad "long.$b" "data section is"
done

mk ok_empty '{}' 0;                                                                  good ok_empty
mk ok_leading ' {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}  ' 2;         good ok_leading
mk ok_metanull '{"__metadata__":null,"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}' 1; good ok_metanull
mk ok_zerosize '{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}' 1
good ok_zerosize
mk ok_unicode '{"caf\u00e9 \"q\"":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]}}' 2; good ok_unicode
echo "st_malformed: $n reads, $fails failures"
[ $fails -eq 0 ]
