#!/usr/bin/env python3
"""Expected contents of a few tensors of models/dsv3-tiny, as the Python safetensors library
reads them (raw bytes from its Rust deserialize(); values decoded by ml_dtypes/numpy), for
test_st_reader.  Regenerate (the output is committed):
  pip install safetensors numpy ml_dtypes
  python3 tests/format_st/gen_tiny_expected.py models/dsv3-tiny > tests/format_st/tiny_expected.txt
Line: `FILE NAME DTYPE SHAPE(d0,d1 or -) SHA256 NVALUES V0 V1 ...` where the values are the first
four and the last two elements as float32 bit patterns (hex)."""
import hashlib
import os
import sys

import ml_dtypes
import numpy as np
from safetensors import _safetensors_rust as rust

NP = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F32": np.float32}
PICK = {
    "model-00001-of-00003.safetensors": ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                         "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.weight_scale_inv"],
    "model-00002-of-00003.safetensors": ["model.layers.3.mlp.gate.e_score_correction_bias", "lm_head.weight",
                                         "model.norm.weight"],
    "model-00003-of-00003.safetensors": ["model.layers.4.eh_proj.weight", "model.layers.4.enorm.weight"],
}
model = sys.argv[1]
print("# %s" % __doc__.splitlines()[0])
for f, names in PICK.items():
    with open(os.path.join(model, f), "rb") as fh:
        tensors = dict(rust.deserialize(fh.read()))
    for n in names:
        t = tensors[n]
        data = bytes(t["data"])
        v = np.frombuffer(data, dtype=NP[t["dtype"]]).astype(np.float32).view(np.uint32)
        vals = list(v[:4]) + list(v[-2:])
        print(f, n, t["dtype"], ",".join(map(str, t["shape"])) or "-", hashlib.sha256(data).hexdigest(), len(vals),
              " ".join("%08x" % int(x) for x in vals))
