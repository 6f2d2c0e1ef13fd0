#!/usr/bin/env python3
"""Every tensor of the tiny model as libdsv3 reads it (through st-dump) against the Python
safetensors library: names, dtypes, shapes, metadata from safe_open; the raw bytes of every
tensor, whatever its dtype (numpy has no fp8/bf16), from the library's Rust deserialize();
data offsets from our own parse of the header.  Also --header-only agrees with the full read.

Usage: compare_tiny.py ST_DUMP MODEL_DIR EXPECTED_TOTAL   (exit 0 pass, 1 fail, 77 skip)"""
import glob
import os
import sys

from stlib import raw_header, reference, sha256, st_dump

exe, model, expected_total = sys.argv[1], sys.argv[2], int(sys.argv[3])
safetensors, rust = reference()
from safetensors import safe_open  # noqa: E402

fails = []
total = 0
files = sorted(glob.glob(os.path.join(model, "*.safetensors")))
if len(files) != 3:
    fails.append("expected 3 shards in %s, found %d" % (model, len(files)))
for path in files:
    ours = st_dump(exe, path)
    hdr = st_dump(exe, path, header_only=True)
    data_off, header = raw_header(path)
    with open(path, "rb") as fh:
        blob = fh.read()
    ref = {name: info for name, info in rust.deserialize(blob)}
    with safe_open(path, framework="numpy") as so:
        keys = set(so.keys())
        meta = so.metadata() or {}
        slices = {k: (so.get_slice(k).get_dtype(), list(so.get_slice(k).get_shape())) for k in keys}
    base = os.path.basename(path)
    total += ours["count"]
    if ours["count"] != len(keys) or set(t["name"] for t in ours["tensors"]) != keys:
        fails.append("%s: tensor names differ from safe_open's" % base)
    if set(ref) != keys:
        fails.append("%s: deserialize and safe_open disagree" % base)
    if ours["meta"] != meta:
        fails.append("%s: metadata %r, safe_open says %r" % (base, ours["meta"], meta))
    if ours["data_offset"] != data_off or ours["size"] != len(blob):
        fails.append("%s: data offset/size %d/%d, want %d/%d" % (base, ours["data_offset"], ours["size"], data_off, len(blob)))
    begins = [t["begin"] for t in ours["tensors"]]
    if begins != sorted(begins):
        fails.append("%s: tensors not in file order" % base)
    for t in ours["tensors"]:
        n = t["name"]
        if n not in ref:
            continue
        dt, shape = slices[n]
        if (t["dtype"], t["shape"]) != (dt, shape) or (t["dtype"], t["shape"]) != (ref[n]["dtype"], list(ref[n]["shape"])):
            fails.append("%s: %s: %s %s, reference %s %s" % (base, n, t["dtype"], t["shape"], dt, shape))
        b, e = header[n]["data_offsets"]
        if (t["begin"], t["end"]) != (b, e):
            fails.append("%s: %s: offsets [%d, %d], header says [%d, %d]" % (base, n, t["begin"], t["end"], b, e))
        if t["sha256"] != sha256(bytes(ref[n]["data"])):
            fails.append("%s: %s: bytes differ from the reference library's" % (base, n))
        if sha256(blob[data_off + b:data_off + e]) != t["sha256"]:
            fails.append("%s: %s: bytes differ from the file's own range" % (base, n))
    strip = lambda d: [dict(x, sha256="-") for x in d["tensors"]]  # noqa: E731
    if strip(hdr) != strip(ours) or hdr["meta"] != ours["meta"] or hdr["count"] != ours["count"]:
        fails.append("%s: --header-only parse differs from the full read" % base)
    if any(x["sha256"] != "-" for x in hdr["tensors"]):
        fails.append("%s: header-only parse exposed data" % base)
if total != expected_total:
    fails.append("%d tensors in all, expected %d" % (total, expected_total))
for f in fails[:30]:
    print("FAIL", f)
print("compare_tiny: %d files, %d tensors, %d failures" % (len(files), total, len(fails)))
sys.exit(1 if fails else 0)
