#!/usr/bin/env python3
"""Files made by the libdsv3 streaming writer (through st-write: declared in a scrambled order,
data pwritten in odd-sized chunks from several threads) against the Python safetensors
library's files for the same tensors: byte for byte.  Every dtype both support, 0-d, empty and
8-d shapes, odd sizes, names that sort awkwardly or need JSON escapes, with and without
__metadata__.  With more than one metadata key the reference's order is its HashMap's (it
varies from run to run), so there the headers are compared as JSON plus the tensor order and
the data bytes.  Our reader (st-dump) must also read every reference file as it was written.

Usage: writer_interop.py ST_WRITE ST_DUMP   (exit 0 pass, 1 fail, 77 skip)"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

from stlib import reference, sha256, st_dump

st_write, st_dump_exe = sys.argv[1], sys.argv[2]
safetensors, rust = reference()
try:
    import numpy as np
except ImportError:
    print("numpy not installed: skipped")
    sys.exit(77)

SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
        "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
NPNAME = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
          "F8_E8M0": "float8_e8m0fnu", "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16",
          "I32": "int32", "U32": "uint32", "F32": "float32", "F64": "float64", "I64": "int64", "U64": "uint64"}
NUMPY_OK = {"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64", "I64", "U64"}
rng = random.Random(7)
tmp = tempfile.mkdtemp(prefix="dsv3-st-interop-")
fails = []


def tensor(name, dt, shape):
    n = 1
    for d in shape:
        n *= d
    nb = n * SIZE[dt]
    data = bytes(rng.randrange(2) for _ in range(nb)) if dt == "BOOL" else rng.randbytes(nb)
    return {"name": name, "dtype": dt, "shape": list(shape), "data": data}


def ref_bytes(tensors, meta):
    """The reference library's file image for these tensors."""
    keep = []
    if hasattr(rust, "TensorSpec"):  # safetensors >= 0.7: specs point at memory
        d = {}
        for t in tensors:
            a = np.frombuffer(t["data"], dtype=np.uint8).copy() if t["data"] else np.zeros(1, np.uint8)
            keep.append(a)
            d[t["name"]] = rust.TensorSpec(dtype=NPNAME[t["dtype"]], shape=tuple(t["shape"]),
                                           data_ptr=a.ctypes.data, data_len=len(t["data"]))
    else:  # older: dicts with the numpy dtype name and the bytes
        d = {t["name"]: {"dtype": NPNAME[t["dtype"]], "shape": t["shape"], "data": t["data"]} for t in tensors}
    return bytes(rust.serialize(d, meta))


def ours(case, tensors, meta, threads=4, chunk=4093):
    d = os.path.join(tmp, case)
    os.makedirs(d, exist_ok=True)
    spec = {"tensors": [], "metadata": [[k, v] for k, v in (meta or {}).items()]}
    order = list(tensors)
    rng.shuffle(order)  # the writer must impose the reference order itself
    for i, t in enumerate(order):
        f = "t%d.bin" % i
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(t["data"])
        spec["tensors"].append({"name": t["name"], "dtype": t["dtype"], "shape": t["shape"], "file": f})
    with open(os.path.join(d, "spec.json"), "w") as fh:
        json.dump(spec, fh)
    out = os.path.join(d, "ours.safetensors")
    p = subprocess.run([st_write, os.path.join(d, "spec.json"), out, "--threads", str(threads), "--chunk", str(chunk)],
                       capture_output=True)
    if p.returncode != 0:
        fails.append("%s: st-write failed: %s" % (case, p.stderr.decode(errors="replace").strip()))
        return None, d
    if [x for x in os.listdir(d) if ".tmp." in x]:
        fails.append("%s: temporary file left behind" % case)
    with open(out, "rb") as fh:
        return fh.read(), d


def split(b):
    n = struct.unpack("<Q", b[:8])[0]
    return n, json.loads(b[8:8 + n]), b[8 + n:]


def check(case, tensors, meta=None, exact=True, **kw):
    ref = ref_bytes(tensors, meta)
    got, d = ours(case, tensors, meta, **kw)
    if got is None:
        return
    if exact:
        if got != ref:
            fails.append("%s: files differ (ours %d bytes, reference %d)\n  ours: %r\n  ref:  %r"
                         % (case, len(got), len(ref), got[:300], ref[:300]))
    else:  # metadata order is the reference's HashMap order: compare as JSON
        gn, gh, gd = split(got)
        rn, rh, rd = split(ref)
        if gn != rn or gh != rh or gd != rd or [k for k in gh if k != "__metadata__"] != [k for k in rh if k != "__metadata__"] \
                or list(gh)[0] != "__metadata__":
            fails.append("%s: files differ beyond the metadata order\n  ours: %r\n  ref:  %r" % (case, got[:300], ref[:300]))
    # our reader reads the reference file as written
    rp = os.path.join(d, "ref.safetensors")
    with open(rp, "wb") as fh:
        fh.write(ref)
    try:
        dump = st_dump(st_dump_exe, rp)
    except RuntimeError as e:
        fails.append("%s: %s" % (case, e))
        return
    byname = {t["name"]: t for t in tensors}
    if dump["count"] != len(tensors) or dump["meta"] != (meta or {}):
        fails.append("%s: reader sees %d tensors / %r" % (case, dump["count"], dump["meta"]))
    for t in dump["tensors"]:
        s = byname.get(t["name"])
        if not s or (t["dtype"], t["shape"], t["sha256"]) != (s["dtype"], s["shape"], sha256(s["data"])):
            fails.append("%s: reader: %s differs" % (case, t["name"]))


shapes = [[], [0], [0, 3], [7], [3, 5, 1], [1] * 8, [2, 3, 2], [13, 1], [1, 33]]
alltypes = [tensor("%s.%d" % (dt.lower(), i), dt, shapes[(i + j) % len(shapes)])
            for j, dt in enumerate(SIZE) for i in range(3)]
check("all_dtypes", alltypes)
check("all_dtypes_meta", alltypes, {"format": "pt"})
check("meta_escapes", alltypes[:5], {"k\"e\\y\t": "v\u00e9\n\x01\x7f\u65e5 "})
check("meta_many", alltypes, {"format": "pt", "a": "1", "zz": "", "m\u00e9ta": "x" * 50}, exact=False)
names = ["a", "A", "a.10", "a.9", "_", "~", "a b", "a\"b", "a\\b", "tab\tname", "ctl\x01\x1f", "\u00e9", "\u65e5\u672c",
         "\U0001F600", "z" * 300, "model.layers.10.x", "model.layers.9.x", "__metadata", "0", ""]
check("names", [tensor(n, "F32" if i % 2 else "BF16", [i % 4 + 1]) for i, n in enumerate(names)])
check("empty_file", [])
check("empty_file_meta", [], {"format": "pt"})
check("only_empty_tensors", [tensor("e%d" % i, dt, [0, 5]) for i, dt in enumerate(["F32", "U8", "BF16", "I64"])])
# padding: header JSON lengths of every residue mod 8
for k in range(8):
    check("pad%d" % k, [tensor("p" * (k + 1), "U8", [k + 1])])
big = [tensor("big.f32", "F32", [1000, 777]), tensor("big.bf16", "BF16", [333, 129]), tensor("big.fp8", "F8_E4M3", [513, 257]),
       tensor("big.scale", "F32", [5, 3])]
check("big_threads8", big, {"format": "pt"}, threads=8, chunk=4093)
check("big_onechunk", big, threads=1, chunk=1 << 30)

# the numpy front end (save_file) writes the same files as the core for numpy's dtypes
np_tensors = [t for t in alltypes if t["dtype"] in NUMPY_OK]
from safetensors.numpy import save_file  # noqa: E402
arrays = {t["name"]: np.frombuffer(t["data"], dtype=NPNAME[t["dtype"]]).reshape(t["shape"]) for t in np_tensors}
sp = os.path.join(tmp, "numpy_save_file.safetensors")
save_file(arrays, sp, metadata={"format": "np"})
got, _ = ours("numpy_save_file", np_tensors, {"format": "np"})
with open(sp, "rb") as fh:
    if got is not None and fh.read() != got:
        fails.append("numpy save_file: files differ")

for f in fails[:20]:
    print("FAIL", f)
print("writer_interop: safetensors %s, %d failures" % (getattr(safetensors, "__version__", "?"), len(fails)))
if not fails:
    subprocess.run(["rm", "-rf", tmp])
sys.exit(1 if fails else 0)
