#!/usr/bin/env bash
# dsv3-manifest.json and `dsv3-inspect verify`: hashes written in the writing pass equal
# independent ones (sha256sum; Python xxhash when installed); one flipped byte in any shard is
# reported with its file and tensor; a truncated shard, a wrong etag, a sha256sum list, a
# manifest that does not match.
. "$SRC/tests/lib.sh"
expect "cast writes a manifest" "$CAST" -q "$DSV3_TINY" "$T/c"
[ -f "$T/c/dsv3-manifest.json" ] && ok || fail "no manifest"
expect "convert writes a manifest" "$CONVERT" -q "$DSV3_TINY" "$T/v" --mp 2
expect "reshard writes a manifest" "$CONVERT" -q "$T/v" "$T/v4" --mp 4
for d in c v v4; do
  # file hashes in the manifest equal sha256sum's
  (cd "$T/$d" && sha256sum model*.safetensors) > "$T/$d.sums"
  n=0
  while read -r h f; do
    grep -q "\"$f\":" "$T/$d/dsv3-manifest.json" && grep -A2 "\"$f\":" "$T/$d/dsv3-manifest.json" | grep -q "$h" && n=$((n+1))
  done < "$T/$d.sums"
  [ "$n" = "$(wc -l < "$T/$d.sums")" ] && [ "$n" -gt 0 ] && ok || fail "$d: manifest SHA-256 differs from sha256sum"
  expect "$d verifies" "$INSPECT" verify -q "$T/$d"
done
if have_python && "$PYTHON" -c 'import xxhash' 2>/dev/null; then
  "$PYTHON" - "$T/c" <<'PY' && ok || fail "XXH3-128 differs from python xxhash"
import json, os, struct, sys, xxhash
d = sys.argv[1]; m = json.load(open(os.path.join(d, "dsv3-manifest.json"))); n = 0
for f, e in m["files"].items():
    b = open(os.path.join(d, f), "rb").read(); hl = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + hl])
    for name, t in e["tensors"].items():
        s, en = h[name]["data_offsets"]
        assert xxhash.xxh3_128_hexdigest(b[8 + hl + s: 8 + hl + en]) == t["xxh3_128"], name; n += 1
assert n == 173, n
PY
fi
# every input file's SHA-256 is recorded
(cd "$DSV3_TINY" && sha256sum model-00001-of-00003.safetensors) | cut -c1-64 > "$T/in1"
grep -q "$(cat "$T/in1")" "$T/c/dsv3-manifest.json" && ok || fail "input SHA-256 not in the manifest"
# one flipped byte in each shard: reported with the file and the tensor
for f in "$T"/c/model-*.safetensors; do
  b=$(basename "$f"); cp "$f" "$T/orig"
  size=$(stat -c %s "$f"); off=$((size - 1000))
  printf '\x5a' | dd of="$f" bs=1 seek=$off conv=notrunc 2>/dev/null
  cmp -s "$f" "$T/orig" || {
    "$INSPECT" verify -q "$T/c" > "$T/out" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "BAD  $b: SHA-256 mismatch" "$T/out" && grep -q "BAD  $b: tensor .*: XXH3-128 mismatch" "$T/out" && ok || fail "flip in $b: $(cat "$T/out")"
  }
  cp "$T/orig" "$f"
done
expect "restored verifies" "$INSPECT" verify -q "$T/c"
# truncated shard
truncate -s 1000000 "$T/c/model-00003-of-00003.safetensors"
"$INSPECT" verify -q --json "$T/c" > "$T/out" 2>&1; [ $? -eq 1 ] && grep -q '"error":.*"size 1000000, expected' "$T/out" && ok || fail "truncated: $(head -c 800 "$T/out")"
# manifest naming a file that is missing
rm "$T/c/model-00003-of-00003.safetensors"
"$INSPECT" verify -q "$T/c" > "$T/out" 2>&1; [ $? -eq 1 ] && grep -q "model-00003-of-00003.safetensors: missing" "$T/out" && ok || fail "missing file"
# Hugging Face etags (.cache/huggingface/download/NAME.metadata: commit, etag, timestamp)
cp -r "$DSV3_TINY" "$T/hf"; mkdir -p "$T/hf/.cache/huggingface/download"
for f in "$T"/hf/*.safetensors; do
  printf 'abc123\n%s\n1700000000.0\n' "$(sha256sum "$f" | cut -c1-64)" > "$T/hf/.cache/huggingface/download/$(basename "$f").metadata"
done
expect "etags verify" "$INSPECT" verify "$T/hf"
contains "etag source" "$T/out" "huggingface etag"
printf 'abc123\n%064d\n1700000000.0\n' 0 > "$T/hf/.cache/huggingface/download/model-00002-of-00003.safetensors.metadata"
"$INSPECT" verify -q "$T/hf" > "$T/out" 2>&1; [ $? -eq 1 ] && grep -q "BAD  model-00002-of-00003.safetensors: SHA-256 mismatch (huggingface etag)" "$T/out" && ok || fail "wrong etag"
# a sha256sum list
(cd "$DSV3_TINY" && sha256sum *.json *.safetensors) > "$T/list"
expect "sha256 list" "$INSPECT" verify --sha256 "$T/list" "$DSV3_TINY"
sed -i '1s/^./0/; 1s/^00/11/' "$T/list"
"$INSPECT" verify -q --sha256 "$T/list" "$DSV3_TINY" > "$T/out" 2>&1; [ $? -eq 1 ] && ok || fail "bad list entry not reported"
echo "not a hash line" > "$T/badlist"
expect_error "malformed list" "line 1 is not" "$INSPECT" verify --sha256 "$T/badlist" "$DSV3_TINY"
expect_error "nothing to verify" "nothing to verify" "$INSPECT" verify "$DSV3_TINY"
echo '{"files": {"../x": {"size": 1, "sha256": "00"}}}' > "$T/v/dsv3-manifest.json"
expect_error "hostile manifest" "needs a plain name" "$INSPECT" verify "$T/v"
# hostile manifests of other shapes (these crashed the loader): one line, exit 1, never a crash
Z=$(printf '%064d' 0) X=$(printf '%032d' 0)
i=0
for m in '{"files": {"a": {"size": 1, "sha256": "'$Z'"}}, "inputs": [{"size": 1}]}' \
         '{"files": {"a": {"size": 1, "sha256": "'$Z'", "tensors": [{"dtype": "F32"}]}}}' \
         '{"files": {"a": {"size": 1e300, "sha256": "'$Z'"}}}' \
         '{"files": {"a": {"size": -5, "sha256": "'$Z'"}}}' \
         '{"files": {"a": {"size": 1.5, "sha256": "'$Z'"}}}' \
         '{"files": {"a": 7}}' \
         '{"files": {"": {"size": 1, "sha256": "'$Z'"}}}' \
         '{"files": {"a": {"size": 1, "sha256": "'$Z'", "tensors": {"t": {"shape": [1e300], "xxh3_128": "'$X'"}}}}}' \
         '{"files": {"a": {"size": 1, "sha256": "'$Z'", "tensors": {"t": {"shape": 3, "xxh3_128": "'$X'"}}}}}' \
         '{"files": {"a": {"size": 1, "sha256": "'$Z'", "tensors": {"t": {"shape": [1,1,1,1,1,1,1,1,1], "xxh3_128": "'$X'"}}}}}'; do
  i=$((i + 1))
  printf '%s' "$m" > "$T/v/dsv3-manifest.json"
  expect_error "hostile manifest $i" "dsv3-manifest.json" "$INSPECT" verify "$T/v"
done
finish
