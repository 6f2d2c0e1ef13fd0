#!/usr/bin/env bash
# dsv3-inspect on models/dsv3-tiny: the summary's numbers, --tensors, --stats against an
# independent numpy computation, --check passing and failing, --diff, --json everywhere.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
expect "summary" "$INSPECT" "$M"
contains "tensor count" "$T/out" "tensors      309 (233 in the main model, 76 in MTP layers)"
contains "layers" "$T/out" "4 main (1 dense, 3 MoE) + 1 MTP"
contains "experts" "$T/out" "8 routed"
contains "total_size" "$T/out" "index total_size 31431328: matches"
expect "summary json" "$INSPECT" --json "$M"
if have_python; then
  "$PYTHON" - "$T/out" <<'PY' && ok || fail "summary json values"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["tensors"] == 309 and j["tensors_main"] == 233 and j["tensors_mtp"] == 76, j
assert j["tensor_bytes"] == j["index_total_size"] == 31431328
assert j["config"]["layers_dense"] == 1 and j["config"]["layers_moe"] == 3 and j["config"]["layers_mtp"] == 1
assert j["config"]["n_routed_experts"] == 8 and j["quantization"]["fp8_weights"] == 136
PY
fi
expect "tensors" "$INSPECT" --tensors --filter 'model.layers.0.self_attn.kv_b_proj.*' "$M"
contains "kv_b_proj row" "$T/out" "model.layers.0.self_attn.kv_b_proj.weight .*F8_E4M3 .*\[1024, 128\] .*131072.*scale \[8, 1\]"
[ "$(wc -l < "$T/out")" = 2 ] && ok || fail "--filter selected $(wc -l < "$T/out") rows"
expect "stats json" "$INSPECT" --stats --json -q --filter 'model.layers.1.*' "$M"
if have_python && "$PYTHON" -c 'import numpy' 2>/dev/null; then
  # independent: parse the shard with numpy, decode e4m3 by formula, apply block scales
  "$PYTHON" - "$T/out" "$M" <<'PY' && ok || fail "stats differ from numpy"
import json, struct, sys, numpy as np, os
stats = {e["name"]: e for e in json.load(open(sys.argv[1]))}
d = sys.argv[2]
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
def load(name):
    p = os.path.join(d, idx[name]); b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[name]
    raw = b[8 + n + t["data_offsets"][0]: 8 + n + t["data_offsets"][1]]
    return t, raw
def e4m3(u):
    u = u.astype(np.int64); s = np.where(u & 0x80, -1.0, 1.0); e = (u >> 3) & 15; m = u & 7
    v = np.where(e == 0, m * 2.0 ** -9, (8 + m) * 2.0 ** (e - 10)); return s * v
checked = 0
for name in ["model.layers.1.self_attn.o_proj.weight", "model.layers.1.input_layernorm.weight",
             "model.layers.1.mlp.gate.e_score_correction_bias"]:
    t, raw = load(name)
    if t["dtype"] == "F8_E4M3":
        w = e4m3(np.frombuffer(raw, np.uint8)).reshape(t["shape"])
        st, sraw = load(name + "_scale_inv")
        s = np.frombuffer(sraw, np.float32).reshape(st["shape"]).astype(np.float64)
        w = w * np.repeat(np.repeat(s, 128, 0), 128, 1)[: w.shape[0], : w.shape[1]]
    elif t["dtype"] == "BF16":
        w = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    else:
        w = np.frombuffer(raw, np.float32).astype(np.float64)
    e = stats[name]
    for k, v in [("min", w.min()), ("max", w.max()), ("mean", w.mean()), ("std", w.std()), ("absmax", abs(w).max())]:
        assert abs(e[k] - v) <= 1e-5 * max(1, abs(v)) + 1e-7, (name, k, e[k], v)
    checked += 1
assert checked == 3
PY
fi
expect "check passes" "$INSPECT" --check "$M"
contains "check ok" "$T/out" "^ok: 309 tensors"
expect "check json" "$INSPECT" --check --json "$M"
# a broken copy: a tensor removed from a shard, and a weight with a wrong scale shape
cp -r "$M" "$T/bad"
if have_python; then
  "$PYTHON" - "$T/bad" <<'PY'
import json, struct, os, sys
d = sys.argv[1]; p = os.path.join(d, "model-00001-of-00003.safetensors")
b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); data = b[8 + n:]
drop = "model.layers.0.post_attention_layernorm.weight"
items = sorted(((k, v) for k, v in h.items() if k not in ("__metadata__", drop)), key=lambda kv: kv[1]["data_offsets"][0])
out, new = b"", {}
for k, v in items:
    x = data[v["data_offsets"][0]:v["data_offsets"][1]]
    new[k] = dict(v, data_offsets=[len(out), len(out) + len(x)]); out += x
new["model.layers.0.mlp.down_proj.weight_scale_inv"]["shape"] = [12, 4]
js = json.dumps(new, separators=(",", ":")).encode(); js += b" " * (-len(js) % 8)
open(p, "wb").write(struct.pack("<Q", len(js)) + js + out)
PY
  expect_fail() { "$@" >"$T/out" 2>"$T/err"; [ $? -eq 1 ] && ok || fail "--check on a broken copy did not exit 1"; }
  expect_fail "$INSPECT" --check "$T/bad"
  contains "missing tensor" "$T/out" "tensor model.layers.0.post_attention_layernorm.weight: missing"
  contains "index names it" "$T/out" "model.layers.0.post_attention_layernorm.weight: in weight_map"
  contains "scale shape" "$T/out" "down_proj.weight: scale F32 \[12, 4\] does not fit weight \[512, 1536\]"
fi
# diff: identical with itself; a BF16 cast of it equals it dequantised... except the rounding
expect "diff self" "$INSPECT" --diff "$M" "$M"
contains "diff equal" "$T/out" "equal: 0 tensors differ"
"$INSPECT" --diff "$T/bad" "$M" > "$T/out" 2>&1; [ $? -eq 1 ] && ok || fail "diff of different checkpoints did not exit 1"
contains "diff names the tensor" "$T/out" "model.layers.0.post_attention_layernorm.weight *only in first"  # first = CKPT, second = --diff OTHER
expect_error "no such checkpoint" "nope: no such file or directory" "$INSPECT" "$T/nope"
finish
