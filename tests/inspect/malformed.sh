#!/usr/bin/env bash
# Hostile checkpoints through the CLI: each is one line on stderr naming the file (and the
# tensor where there is one) and exit 1, never a crash or a hang.
. "$SRC/tests/lib.sh"
# mk FILE HEADER DATA_BYTES [HEADER_LEN]: an 8-byte little-endian length, the header, data
mk() {
  local f=$1 h=$2 n=$3 len=${4:-${#2}} le="" i
  for i in 0 1 2 3 4 5 6 7; do le="$le$(printf '\\x%02x' $(( (len >> (8*i)) & 255 )))"; done
  { printf "$le"; printf '%s' "$h"; head -c "$n" /dev/zero; } > "$f"
}
one() { # one NAME HEADER DATA_BYTES PATTERN [HEADER_LEN]
  mkdir -p "$T/$1"; mk "$T/$1/model.safetensors" "$2" "$3" "${5:-}"
  expect_error "$1" "$T/$1/model.safetensors: $4" timeout 20 "$INSPECT" "$T/$1/model.safetensors"
  expect_error "$1 (--check, directory)" "$4" timeout 20 "$INSPECT" --check "$T/$1"
  # every mode, and as the second checkpoint of --diff
  for m in --tensors --stats --json; do
    expect_error "$1 ($m)" "$T/$1/model.safetensors: $4" timeout 20 "$INSPECT" $m -q "$T/$1/model.safetensors"
  done
  expect_error "$1 (--diff OTHER)" "$T/$1/model.safetensors: $4" timeout 20 "$INSPECT" --diff "$T/$1/model.safetensors" "$DSV3_TINY"
}
one past_eof '{}' 0 "header length 4096 runs past the end" 4096
one huge_header "{}" 0 "header length 999999999999 exceeds the 100000000 byte limit" 999999999999
one bad_json '{"a":{"dtype":' 0 "header is not valid JSON"
one unknown_dtype '{"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}' 4 "tensor w: unknown dtype"
one overlap '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12 "tensor b: data_offsets \[4, 12\] overlap tensor a"
one out_of_range '{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}' 16 "tensor a: data_offsets \[0, 32\] run past"
one duplicate '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' 8 "tensor a: name appears twice"
one overflow '{"a":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,8]}}' 8 "tensor a: shape overflows 64 bits"
one zero_len_header '' 0 "header .*not a JSON object" 0
mkdir -p "$T/empty"; : > "$T/empty/model.safetensors"
expect_error "empty file" "$T/empty/model.safetensors: file is 0 bytes, too short" "$INSPECT" --check "$T/empty"
mkdir -p "$T/short"; printf 'abc' > "$T/short/model.safetensors"
expect_error "3-byte file" "$T/short/model.safetensors: file is 3 bytes, too short" "$INSPECT" "$T/short/model.safetensors"
# truncated shard of the real model
cp -r "$DSV3_TINY" "$T/trunc"; truncate -s 5000000 "$T/trunc/model-00002-of-00003.safetensors"
for m in "" --check --stats --tensors; do
  expect_error "truncated shard $m" "model-00002-of-00003.safetensors: .*run past the data section" "$INSPECT" $m "$T/trunc"
done
# the index names a shard that is not there
cp -r "$DSV3_TINY" "$T/missing"; rm "$T/missing/model-00003-of-00003.safetensors"
expect_error "missing shard" "model-00003-of-00003.safetensors named by model.safetensors.index.json is missing" "$INSPECT" "$T/missing"
# a lying index: garbage JSON
cp -r "$DSV3_TINY" "$T/badidx"; echo '{"weight_map": ' > "$T/badidx/model.safetensors.index.json"
expect_error "bad index" "model.safetensors.index.json: not a valid JSON object" "$INSPECT" "$T/badidx"
# a bad config.json
cp -r "$DSV3_TINY" "$T/badcfg"; sed -i 's/"hidden_size": 512/"hidden_size": -512/' "$T/badcfg/config.json"
expect_error "bad config" "config.json: field \"hidden_size\" must be positive" "$INSPECT" "$T/badcfg"
# the input is never modified
sum_before=$(cat "$DSV3_TINY"/* | md5sum)
"$INSPECT" --stats -q "$DSV3_TINY" >/dev/null 2>&1
[ "$(cat "$DSV3_TINY"/* | md5sum)" = "$sum_before" ] && ok || fail "input modified"
"$INSPECT" --check --stats "$DSV3_TINY" > /dev/null 2> "$T/err"; [ $? = 2 ] && grep -q "choose one of" "$T/err" && ok || fail "usage error"
finish
