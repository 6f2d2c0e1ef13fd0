"""Independent safetensors reading for the dsv3-inspect tests: struct + json + numpy only
(no libdsv3, no safetensors package), so the tests compare against a second implementation.

  python3 st.py stats DIR NAME...        JSON {name: {min, max, mean, std, absmax, nan, inf}}
  python3 st.py offsets DIR NAME...      JSON {name: [file, absolute offset, nbytes, shape]}
  python3 st.py mutate DIR FILE OP ARGS  rewrite one shard (the index is left alone):
        drop NAME | shape NAME D0,D1,... | dtype NAME DT | add NAME DT D0,... | flip NAME BYTE |
        poke NAME BYTE HEX (overwrite bytes at BYTE with the hex string)
"""
import json
import os
import struct
import sys

import numpy as np


def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:], 8 + n


def locate(d, name):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        return os.path.join(d, json.load(open(idx))["weight_map"][name])
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors") and name in read(os.path.join(d, f))[0]:
            return os.path.join(d, f)
    raise KeyError(name)


def raw(d, name):
    h, data, _ = read(locate(d, name))
    t = h[name]
    a, b = t["data_offsets"]
    return t, data[a:b]


def e4m3(u):
    # decode by formula (not a table): sign, 4-bit exponent (bias 7), 3-bit mantissa; S.1111.111 = NaN
    u = u.astype(np.int64)
    s = np.where(u & 0x80, -1.0, 1.0)
    e = (u >> 3) & 15
    m = u & 7
    v = np.where(e == 0, m * 2.0 ** -9, (8 + m) * 2.0 ** (e - 10))
    v = np.where((u & 0x7F) == 0x7F, np.nan, v)
    return s * v


def values(d, name):
    t, b = raw(d, name)
    dt, shape = t["dtype"], t["shape"]
    if dt == "F8_E4M3":
        w = e4m3(np.frombuffer(b, np.uint8)).reshape(shape)
        st, sb = raw(d, name + "_scale_inv")
        s = np.frombuffer(sb, np.float32).reshape(st["shape"])
        full = np.repeat(np.repeat(s, 128, 0), 128, 1)[: w.shape[0], : w.shape[1]]
        # dequantisation multiplies in float32
        return (w.astype(np.float32) * full).astype(np.float64)
    if dt == "BF16":
        return (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dt == "F16":
        return np.frombuffer(b, np.float16).astype(np.float64)
    if dt == "F32":
        return np.frombuffer(b, np.float32).astype(np.float64)
    raise ValueError(dt)


def stats(d, names):
    out = {}
    for n in names:
        v = values(d, n).ravel()
        f = v[np.isfinite(v)]
        out[n] = dict(min=f.min(), max=f.max(), mean=f.mean(), std=f.std(), absmax=np.abs(f).max(),
                      nan=int(np.isnan(v).sum()), inf=int(np.isinf(v).sum()), count=int(f.size))
    return out


def offsets(d, names):
    out = {}
    for n in names:
        p = locate(d, n)
        h, _, base = read(p)
        t = h[n]
        out[n] = [os.path.basename(p), base + t["data_offsets"][0], t["data_offsets"][1] - t["data_offsets"][0], t["shape"]]
    return out


SIZES = {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4}


def mutate(d, fname, op, args):
    p = os.path.join(d, fname)
    h, data, _ = read(p)
    meta = h.pop("__metadata__", None)
    items = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
    blobs = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in items}
    if op == "drop":
        items = [kv for kv in items if kv[0] != args[0]]
    elif op == "shape":
        h[args[0]]["shape"] = [int(x) for x in args[1].split(",")]
    elif op == "dtype":
        h[args[0]]["dtype"] = args[1]
    elif op == "add":
        shape = [int(x) for x in args[2].split(",")]
        h[args[0]] = {"dtype": args[1], "shape": shape}
        items.append((args[0], h[args[0]]))
        blobs[args[0]] = b"\0" * (int(np.prod(shape)) * SIZES[args[1]])
    elif op == "poke":
        b = bytearray(blobs[args[0]])
        x = bytes.fromhex(args[2])
        b[int(args[1]):int(args[1]) + len(x)] = x
        blobs[args[0]] = bytes(b)
    elif op == "flip":
        b = bytearray(blobs[args[0]])
        b[int(args[1])] ^= 0x01
        blobs[args[0]] = bytes(b)
    out, new = b"", {}
    if meta is not None:
        new["__metadata__"] = meta
    for k, v in items:
        x = blobs[k]
        new[k] = dict(v, data_offsets=[len(out), len(out) + len(x)])
        out += x
    js = json.dumps(new, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    open(p, "wb").write(struct.pack("<Q", len(js)) + js + out)


if __name__ == "__main__":
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "stats":
        print(json.dumps(stats(d, sys.argv[3:])))
    elif cmd == "offsets":
        print(json.dumps(offsets(d, sys.argv[3:])))
    elif cmd == "mutate":
        mutate(d, sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        sys.exit("unknown command " + cmd)
