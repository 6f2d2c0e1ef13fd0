"""Minimal safetensors reading/writing for the dsv3-cast tests (numpy only: the installed
safetensors.numpy cannot load BF16 or F8 tensors).  Independent of libdsv3 on purpose."""
import json
import os
import struct

import numpy as np

ESIZE = {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1}
# numpy view dtype of the raw bytes (bit patterns; no bf16 / e4m3 in numpy)
RAW = {"F8_E4M3": np.uint8, "BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
       "I64": np.int64, "I32": np.int32, "U8": np.uint8, "I8": np.int8}


class File:
    """One safetensors file: header dict and raw tensor access through a memory map."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.header_bytes = f.read(n)
        self.data_start = 8 + n
        h = json.loads(self.header_bytes)
        self.metadata = h.pop("__metadata__", None)
        self.header = h
        self.map = np.memmap(path, dtype=np.uint8, mode="r")

    def names(self):
        return list(self.header)

    def info(self, name):
        v = self.header[name]
        return v["dtype"], tuple(v["shape"])

    def raw(self, name):
        v = self.header[name]
        a, b = v["data_offsets"]
        return self.map[self.data_start + a:self.data_start + b]

    def array(self, name):
        """Bit patterns (BF16 as uint16, F8 as uint8), shaped."""
        dt, shape = self.info(name)
        return np.frombuffer(self.raw(name).tobytes(), dtype=RAW[dt]).reshape(shape)


def write(path, tensors, metadata=None):
    """tensors: list of (name, dtype-string, shape, bytes-like) written in that order."""
    h, off, blobs = {}, 0, []
    if metadata is not None:
        h["__metadata__"] = metadata
    for name, dt, shape, data in tensors:
        data = bytes(data)
        n = ESIZE[dt] * int(np.prod(shape, dtype=np.int64)) if len(shape) else ESIZE[dt]
        assert len(data) == n, (name, len(data), n)
        h[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
        blobs.append(data)
    js = json.dumps(h, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js)
        for b in blobs:
            f.write(b)


def shards(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


# ---- number formats by integer ops (numpy has neither bf16 nor e4m3) ----

def e4m3_table():
    """float32 value of each of the 256 e4m3fn codes (NaN for 0x7f / 0xff)."""
    v = np.arange(256)
    s = np.where(v & 0x80, -1.0, 1.0)
    e = (v >> 3) & 15
    m = v & 7
    val = np.where(e == 0, m * 2.0 ** -9, (1 + m / 8.0) * 2.0 ** (e - 7.0)) * s
    val[(v & 0x7F) == 0x7F] = np.nan
    return val.astype(np.float32)


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_rne(x):
    """float32 array -> bf16 bit patterns, round to nearest even (NaN -> quiet NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def f32_to_e4m3_rne_sat(y):
    """float32 array -> e4m3fn codes, round to nearest even, saturating at +-448, NaN -> 0x7f."""
    y = np.asarray(y, dtype=np.float32)
    a = np.abs(y).astype(np.float64)  # exact
    code = np.zeros(y.shape, dtype=np.int64)
    sub = a < 2.0 ** -6
    code[sub] = np.rint(a[sub] * 512).astype(np.int64)  # 0..8 (8 is 2^-6, the first normal code)
    nrm = ~sub & np.isfinite(a)
    m, ex = np.frexp(a[nrm])  # a = m * 2^ex, m in [0.5, 1)
    E = ex - 1
    k = np.rint(a[nrm] / np.ldexp(1.0, E - 3)).astype(np.int64)  # 8..16, exact scaling
    E = np.where(k == 16, E + 1, E)
    k = np.where(k == 16, 8, k)
    c = ((E + 7) << 3) | (k - 8)
    code[nrm] = np.where(E + 7 > 15, 0x7E, np.minimum(c, 0x7E))
    code[np.isinf(a)] = 0x7E
    code |= np.where(np.signbit(y), 0x80, 0)
    code[np.isnan(y)] = 0x7F
    return code.astype(np.uint8)
