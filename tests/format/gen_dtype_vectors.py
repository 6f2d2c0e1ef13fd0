#!/usr/bin/env python3
"""Test vectors for format/dtype.c from an implementation no one on the team wrote: numpy
(float16) and the PyPI package ml_dtypes (bfloat16, float8_e4m3fn, float8_e5m2).
Regenerate: pip install ml_dtypes numpy && python3 tests/format/gen_dtype_vectors.py > tests/data/dtype_vectors.txt
Lines: `D <fmt> <code hex> <f32 bits hex>` (decode of every code) and
       `E <fmt> <f32 bits hex> <code hex>` (round-to-nearest-even encode of chosen floats)."""
import numpy as np, ml_dtypes, struct, random

def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]

fmts = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
        "bf16": ml_dtypes.bfloat16, "f16": np.float16}
out = []
for name, dt in fmts.items():
    if name == "bf16":  # decode is bits << 16, checked in C; keep the file small
        continue
    bits = 8 if name in ("e4m3", "e5m2") else 16
    codes = np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16)
    vals = codes.view(dt).astype(np.float32)
    for c, v in zip(codes, vals):
        out.append("D %s %x %08x" % (name, int(c), int(v.view(np.uint32)) if not np.isnan(v) else 0x7fc00000))
random.seed(1)
for name, dt in fmts.items():
    codes_dt = np.uint8 if name in ("e4m3", "e5m2") else np.uint16
    finite = [float(v) for v in np.arange(1 << (8 if codes_dt == np.uint8 else 16), dtype=codes_dt).view(dt).astype(np.float32) if np.isfinite(v)]
    finite.sort()
    cands = []
    pairs = list(zip(finite, finite[1:]))
    if len(pairs) > 3000:
        pairs = random.sample(pairs, 3000)
    for a, b in pairs:  # ties and near-ties between neighbours
        m = (np.float64(a) + np.float64(b)) / 2
        for x in (m, np.nextafter(np.float32(m), np.float32(np.inf)), np.nextafter(np.float32(m), np.float32(-np.inf))):
            cands.append(np.float32(x))
    cands += [np.float32(random.uniform(-1, 1) * 10 ** random.uniform(-12, 6)) for _ in range(3000)]
    for x in cands:
        x = np.float32(x)
        if name == "e4m3" and abs(float(x)) > 448:  # ml_dtypes overflows to NaN; we saturate (tested in C)
            continue
        if not np.isfinite(x):
            continue
        with np.errstate(over='ignore'):
            y = np.array([x]).astype(dt).view(codes_dt)[0]
        out.append("E %s %08x %x" % (name, f32bits(x), int(y)))
print("\n".join(out))
