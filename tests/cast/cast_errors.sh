#!/usr/bin/env bash
# dsv3-cast on bad inputs: every case exits non-zero (1; usage errors 2) with ONE line on
# stderr naming the file (and tensor), never a crash, and leaves no output shard behind.
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed to forge inputs"; exit 77; }
"$PYTHON" -c 'import numpy' 2>/dev/null || { echo "numpy needed to forge inputs"; exit 77; }
G="$PYTHON $SRC/tests/cast/gen_fp8.py"
$G "$T/good" 2 2 300 260 || { echo "generator failed"; exit 1; }
expect "good input casts" "$CAST" -q "$T/good" "$T/good-out"

# forge DIR PYTHON-CODE : copy the good model to DIR, then edit shard 1 in Python.  The code
# sees h (header dict incl. __metadata__), data (bytes), and may set raw (whole file bytes),
# or call repack(nbytes_of_W_scale) after dropping/resizing the scale (data re-laid out
# without gaps, index updated).
forge() {
  rm -rf "$1"; cp -r "$T/good" "$1"
  "$PYTHON" - "$1/model-00001-of-00002.safetensors" "$2" <<'PY'
import json, struct, sys
p, code = sys.argv[1], sys.argv[2]
b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]; raw = None
W = "model.layers.0.mlp.gate_proj.weight"
def repack():
    global data
    import os
    items = sorted(((k, v) for k, v in h.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
    out = b""
    for k, v in items:
        sz = {"F32": 4, "I32": 4, "BF16": 2, "F8_E4M3": 1}[v["dtype"]]
        for d in v["shape"]: sz *= d
        x = data[v["data_offsets"][0]:v["data_offsets"][0] + sz]
        v["data_offsets"] = [len(out), len(out) + len(x)]; out += x
    data = out
    ip = os.path.join(os.path.dirname(p), "model.safetensors.index.json")
    j = json.load(open(ip)); j["weight_map"] = {k: f for k, f in j["weight_map"].items() if k in h or f != os.path.basename(p)}
    json.dump(j, open(ip, "w"))
exec(code)
if raw is None:
    js = json.dumps(h, separators=(",", ":")).encode(); js += b" " * (-len(js) % 8)
    raw = struct.pack("<Q", len(js)) + js + data
open(p, "wb").write(raw)
PY
}
# no_output DESC OUTDIR : nothing under a final shard name after a failure
no_output() { [ -z "$(ls "$2" 2>/dev/null | grep -v '^\.' | grep safetensors)" ] && ok || fail "$1: output shard left: $(ls -a "$2")"; }

S1=model-00001-of-00002.safetensors
W=model.layers.0.mlp.gate_proj.weight
forge "$T/dt" 'h[W]["dtype"] = "Q4_K"'
expect_error "unknown dtype" "$S1.*Q4_K" "$CAST" -q "$T/dt" "$T/o1"; no_output "unknown dtype" "$T/o1"
forge "$T/lie1" 'h[W]["data_offsets"][1] += 1'
expect_error "lying offsets (size vs shape)" "$S1.*$W" "$CAST" -q "$T/lie1" "$T/o2"; no_output "lying offsets" "$T/o2"
forge "$T/lie2" 'h[W]["shape"] = [300, 300]'
expect_error "lying shape" "$S1.*$W" "$CAST" -q "$T/lie2" "$T/o3"
forge "$T/lie3" 'e = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__"); h[W]["data_offsets"] = [e, e + 300 * 260]'
expect_error "offsets past the end" "$S1.*$W" "$CAST" -q "$T/lie3" "$T/o4"
forge "$T/lie4" 'raw = struct.pack("<Q", 1 << 40) + b[8:]'
expect_error "header length past the end" "$S1" "$CAST" -q "$T/lie4" "$T/o5"
forge "$T/lie5" 'raw = b[:8] + b"{not json" + b[17:]'
expect_error "header not JSON" "$S1" "$CAST" -q "$T/lie5" "$T/o6"
forge "$T/lie6" 'o = h[W]["data_offsets"]; h["model.layers.0.mlp.up_proj.weight"]["data_offsets"] = [o[0] + 8, o[1] + 8]'
expect_error "overlapping tensors" "$S1" "$CAST" -q "$T/lie6" "$T/o7"
forge "$T/sc1" 'h[W + "_scale_inv"]["shape"] = [2, 2]; repack()'
expect_error "scale of the wrong shape" "$S1: tensor $W: scale" "$CAST" -q "$T/sc1" "$T/o8"
forge "$T/sc2" 'h[W + "_scale_inv"]["dtype"] = "I32"'
expect_error "scale of the wrong dtype" "$S1: tensor $W: scale" "$CAST" -q "$T/sc2" "$T/o9"
forge "$T/e5" 'h[W]["dtype"] = "F8_E5M2"'
expect_error "FP8 e5m2 weight with a scale" "$S1: tensor $W" "$CAST" -q "$T/e5" "$T/o10"; no_output "e5m2" "$T/o10"
forge "$T/ms" 'del h[W + "_scale_inv"]; repack()'
expect_error "missing scale" "$S1: tensor $W: FP8 weight has no scale" "$CAST" -q "$T/ms" "$T/o11"; no_output "missing scale" "$T/o11"
cp -r "$T/good" "$T/tr"; truncate -s 100000 "$T/tr/$S1"
expect_error "truncated shard" "$S1" "$CAST" -q "$T/tr" "$T/o12"; no_output "truncated" "$T/o12"
cp -r "$T/good" "$T/idx"; rm "$T/idx/model-00002-of-00002.safetensors"
expect_error "index names a missing shard" "model-00002-of-00002.safetensors" "$CAST" -q "$T/idx" "$T/o13"
cp -r "$T/good" "$T/idx2"; "$PYTHON" -c "
import json,sys; p='$T/idx2/model.safetensors.index.json'; j=json.load(open(p)); j['weight_map']['model.layers.0.mlp.gate_proj.weight']='model-00002-of-00002.safetensors'; json.dump(j,open(p,'w'))"
expect_error "index lies about a tensor's shard" "model.layers.0.mlp.gate_proj.weight" "$CAST" -q "$T/idx2" "$T/o14"
mkdir -p "$T/empty"
expect_error "no safetensors in input" "$T/empty" "$CAST" -q "$T/empty" "$T/o15"
expect_error "input does not exist" "$T/nope" "$CAST" -q "$T/nope" "$T/o16"
# where the output goes
expect_error "output inside input" "must not be the input directory" "$CAST" -q "$T/good" "$T/good/sub"
expect_error "output is input" "must not be the input directory" "$CAST" -q "$T/good" "$T/good/"
expect_error "input inside output" "must not be the input directory" "$CAST" -q "$T/good" "$T"
ln -s "$T/good" "$T/goodlink"
expect_error "output is input through a symlink" "must not be the input directory" "$CAST" -q "$T/goodlink" "$T/good/x"
touch "$T/afile"
expect_error "output is a file" "$T/afile" "$CAST" -q "$T/good" "$T/afile"
# usage errors: exit 2, one line
for args in "--to int4" "--threads 0" "--memory lots" "--scale-fmt e5m2 --to fp8" "--scale-fmt ue8m0" "--bogus"; do
  "$CAST" $args "$T/good" "$T/o17" >/dev/null 2>"$T/err"; rc=$?
  [ $rc -eq 2 ] && [ "$(grep -c . "$T/err")" = 1 ] && ok || fail "usage error '$args': exit $rc: $(head -c 300 "$T/err")"
done
"$CAST" "$T/good" >/dev/null 2>&1; [ $? -eq 2 ] && ok || fail "one operand only: exit 2"
[ -z "$(find "$T" -name '.*.tmp.*')" ] && ok || fail "temp files left behind: $(find "$T" -name '.*.tmp.*')"
finish
