#!/usr/bin/env python3
"""Decode tables of every code of every small float format, from implementations no one on
the team wrote: numpy (float16) and the PyPI package ml_dtypes (bfloat16, float8_e4m3fn,
float8_e5m2, float8_e8m0fnu).  test_st_dtype checks dsv3_*_to_f32 against them code by code
and uses them as the value table of its independent (search-based) rounding reference.

Regenerate (the output is committed):
  pip install numpy ml_dtypes
  python3 tests/format_st/gen_dtype_tables.py > tests/data/dtype_tables.txt

Line format: `T <fmt> <first code, hex> <16 float32 bit patterns, hex>`; lines starting
with '#' are comments."""
import sys
import ml_dtypes
import numpy as np

fmts = [("e4m3", ml_dtypes.float8_e4m3fn, 8), ("e5m2", ml_dtypes.float8_e5m2, 8),
        ("e8m0", ml_dtypes.float8_e8m0fnu, 8), ("f16", np.float16, 16),
        ("bf16", ml_dtypes.bfloat16, 16)]
out = sys.stdout
out.write("# dsv3 dtype decode tables: numpy %s, ml_dtypes %s (tests/format_st/gen_dtype_tables.py)\n"
          % (np.__version__, ml_dtypes.__version__))
for name, dt, bits in fmts:
    codes = np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16)
    vals = codes.view(dt).astype(np.float32).view(np.uint32)
    for c in range(0, 1 << bits, 16):
        out.write("T %s %x %s\n" % (name, c, " ".join("%08x" % int(v) for v in vals[c:c + 16])))
