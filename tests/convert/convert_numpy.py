#!/usr/bin/env python3
"""Independent check of dsv3-convert: the official inference/convert.py loop re-implemented on
raw bytes with numpy (no torch, no libdsv3), saved with safetensors.numpy.save_file, compared
file by file with dsv3-convert's output.

numpy has no FP8 or BF16, so F8_E4M3 is carried as uint8 and BF16 as uint16: save_file then
writes U8/U16 where the official script writes F8_E4M3/BF16.  Both dtypes have the same size,
so save_file's layout (sorted by alignment, then name) is the same: we compare, per file, the
tensor set, each tensor's dtype (U8 <-> F8_E4M3, U16 <-> BF16), shape, data offsets and bytes,
and the whole data section byte for byte.  (Whole-file identity, header included, is checked
against the official script's own output in convert_tiny.sh.)

--dtype bf16 is checked against an FP8 -> BF16 dequantisation written here from the e4m3 bit
layout (x * scale in float32, rounded to nearest even as fp8_cast_bf16.py's kernel stores it).
--keep-mtp is checked with the MTP components named as in format/names.h (convert.py itself
cannot keep them: it asserts on eh_proj).

usage: convert_numpy.py DSV3_CONVERT MODEL_DIR      exit 0 pass, 1 fail, 77 skip"""
import json, os, struct, subprocess, sys, tempfile

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError:
    print("numpy and safetensors needed")
    sys.exit(77)

MAPPING = {  # inference/convert.py
    "embed_tokens": ("embed", 0), "input_layernorm": ("attn_norm", None),
    "post_attention_layernorm": ("ffn_norm", None), "q_proj": ("wq", 0), "q_a_proj": ("wq_a", None),
    "q_a_layernorm": ("q_norm", None), "q_b_proj": ("wq_b", 0), "kv_a_proj_with_mqa": ("wkv_a", None),
    "kv_a_layernorm": ("kv_norm", None), "kv_b_proj": ("wkv_b", 0), "o_proj": ("wo", 1),
    "gate": ("gate", None), "gate_proj": ("w1", 0), "down_proj": ("w2", 1), "up_proj": ("w3", 0),
    "norm": ("norm", None), "lm_head": ("head", 0), "scale": ("scale", None),
}
# MTP-only components (--keep-mtp): kept under their own names; shared_head.head split like head
MTP = {"enorm": ("enorm", None), "hnorm": ("hnorm", None), "eh_proj": ("eh_proj", None), "head": ("head", 0)}
NP = {"F8_E4M3": np.uint8, "BF16": np.uint16, "F32": np.float32, "F16": np.float16, "I64": np.int64,
      "I32": np.int32, "U8": np.uint8, "U16": np.uint16, "F64": np.float64}
AS_SAVED = {"F8_E4M3": "U8", "BF16": "U16"}


def read_st(path):
    """{name: (dtype, ndarray)} and {name: header entry}, from the raw bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    hdr.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, t in hdr.items():
        b, e = t["data_offsets"]
        a = np.frombuffer(blob[base + b:base + e], dtype=NP[t["dtype"]]).reshape(t["shape"])
        out[name] = (t["dtype"], a)
    return out, hdr, blob[base:]


def e4m3_table():
    v = np.zeros(256, np.float32)
    for b in range(256):
        s, e, m = b >> 7, (b >> 3) & 15, b & 7
        if e == 15 and m == 7:
            x = np.nan
        elif e == 0:
            x = m / 8.0 * 2.0 ** -6
        else:
            x = (1 + m / 8.0) * 2.0 ** (e - 7)
        v[b] = -x if s else x
    return v


E4M3 = e4m3_table()


def dequant_bf16(w, s):
    """FP8 (uint8) weight with 128x128 float32 scales -> BF16 bits (uint16)."""
    x = E4M3[w]
    sc = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:w.shape[0], :w.shape[1]]
    y = (x * sc).astype(np.float32)
    u = y.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(y)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def convert(model, n_layers, n_experts, mp, keep_mtp=False, bf16=False):
    """convert.py's loop, on numpy arrays.  Returns [{name: (dtype, array)}] per rank."""
    tensors = {}
    for fn in sorted(os.listdir(model)):
        if fn.endswith(".safetensors"):
            tensors.update(read_st(os.path.join(model, fn))[0])
    n_local = n_experts // mp
    dicts = [{} for _ in range(mp)]
    for name, (dt, param) in tensors.items():
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
        mtp = layer >= n_layers
        if mtp and not keep_mtp:
            continue  # convert.py: `if "model.layers.61" in name: continue`
        if bf16 and name.endswith("_scale_inv"):
            continue
        if bf16 and dt == "F8_E4M3":
            param, dt = dequant_bf16(param, tensors[name + "_scale_inv"][1]), "BF16"
        if name.startswith("model."):
            name = name[len("model."):]
        name = name.replace("self_attn", "attn").replace("mlp", "ffn")
        name = name.replace("weight_scale_inv", "scale").replace("e_score_correction_bias", "bias")
        key = name.split(".")[-2]
        table = dict(MAPPING, **MTP) if mtp else MAPPING
        assert key in table, "Key %s not found in mapping" % key
        new_key, dim = table[key]
        name = name.replace(key, new_key)
        for i in range(mp):
            new = param
            if "experts" in name and "shared_experts" not in name:
                idx = int(name.split(".")[-3])
                if idx < i * n_local or idx >= (i + 1) * n_local:
                    continue
            elif dim is not None:
                assert param.shape[dim] % mp == 0
                sh = param.shape[dim] // mp
                new = np.ascontiguousarray(param.take(range(i * sh, (i + 1) * sh), axis=dim))
            dicts[i][name] = (dt, new)
    return dicts


fails = checks = 0


def check(ok, what):
    global fails, checks
    checks += 1
    if not ok:
        fails += 1
        print("FAILED: " + what, file=sys.stderr)
    return ok


def compare(dicts, out, tmp, label):
    mp = len(dicts)
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    want = sorted("model%d-mp%d.safetensors" % (i, mp) for i in range(mp))
    if not check(files == want, "%s: files %s, expected %s" % (label, files, want)):
        return
    for i, d in enumerate(dicts):
        fn = "model%d-mp%d.safetensors" % (i, mp)
        ref = os.path.join(tmp, "ref-" + fn)
        save_file({k: a for k, (dt, a) in d.items()}, ref)
        rt, rh, rdata = read_st(ref)
        ot, oh, odata = read_st(os.path.join(out, fn))
        if not check(sorted(rh) == sorted(oh), "%s %s: tensor names differ: only ours %s, only reference %s" % (
                label, fn, sorted(set(oh) - set(rh))[:5], sorted(set(rh) - set(oh))[:5])):
            continue
        bad = [n for n in rh if AS_SAVED.get(d[n][0], d[n][0]) != rh[n]["dtype"] or oh[n]["dtype"] != d[n][0]
               or oh[n]["shape"] != rh[n]["shape"] or oh[n]["data_offsets"] != rh[n]["data_offsets"]
               or ot[n][1].tobytes() != rt[n][1].tobytes()]
        check(not bad, "%s %s: %d tensors differ, e.g. %s" % (label, fn, len(bad), bad[:3]))
        check(odata == rdata, "%s %s: data sections differ" % (label, fn))
        os.unlink(ref)


def run(conv, *args):
    r = subprocess.run([conv, "-q"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return check(r.returncode == 0, "dsv3-convert %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                                      r.stderr.decode()[:400]))


def main(conv, model, tmp):
    cfg = json.load(open(os.path.join(model, "config.json")))
    L, E = cfg["num_hidden_layers"], cfg["n_routed_experts"]
    for mp in (1, 2, 4):
        out = os.path.join(tmp, "mp%d" % mp)
        if run(conv, model, out, "--mp", str(mp)):
            compare(convert(model, L, E, mp), out, tmp, "mp%d" % mp)
    # runtime -> runtime reshards equal the direct conversion
    for src, mp in ((4, 2), (2, 4), (1, 2)):
        out = os.path.join(tmp, "r%d%d" % (src, mp))
        if run(conv, os.path.join(tmp, "mp%d" % src), out, "--mp", str(mp)):
            compare(convert(model, L, E, mp), out, tmp, "mp%d->mp%d" % (src, mp))
    for mp in (1, 2, 8):
        out = os.path.join(tmp, "bf%d" % mp)
        if run(conv, model, out, "--mp", str(mp), "--dtype", "bf16"):
            compare(convert(model, L, E, mp, bf16=True), out, tmp, "bf16 mp%d" % mp)
    out = os.path.join(tmp, "bf4to2")
    if run(conv, os.path.join(tmp, "mp4"), out, "--mp", "2", "--dtype", "bf16"):
        compare(convert(model, L, E, 2, bf16=True), out, tmp, "bf16 mp4->mp2")
    for mp in (1, 4):
        out = os.path.join(tmp, "mtp%d" % mp)
        if run(conv, model, out, "--mp", str(mp), "--keep-mtp"):
            compare(convert(model, L, E, mp, keep_mtp=True), out, tmp, "keep-mtp mp%d" % mp)
    out = os.path.join(tmp, "mtp4to2")
    if run(conv, os.path.join(tmp, "mtp4"), out, "--mp", "2", "--keep-mtp"):
        compare(convert(model, L, E, 2, keep_mtp=True), out, tmp, "keep-mtp mp4->mp2")
    print("%d checks, %d failed" % (checks, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(1)
    if not os.access(sys.argv[1], os.X_OK):
        print("dsv3-convert not built")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="dsv3-convert-numpy-") as tmp:
        sys.exit(main(sys.argv[1], sys.argv[2], tmp))
