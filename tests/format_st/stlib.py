"""Shared helpers of the format_st Python tests: the reference library, st-dump's output."""
import hashlib
import json
import struct
import subprocess
import sys


def reference():
    """The Python safetensors package's Rust core (deserialize/serialize), or exit 77."""
    try:
        import safetensors
    except ImportError:
        print("python safetensors not installed: skipped")
        sys.exit(77)
    for mod in ("safetensors._safetensors_rust", "safetensors.safetensors_rust"):
        try:
            return safetensors, __import__(mod, fromlist=["deserialize"])
        except ImportError:
            pass
    print("safetensors without a Rust core module: skipped")
    sys.exit(77)


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            n = s[i + 1]
            if n == "x":
                out.append(chr(int(s[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append({"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[n])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def st_dump(exe, path, header_only=False):
    """Run st-dump; return (files: {path: {count, data_offset, size, meta, tensors: [..]}})."""
    cmd = [exe] + (["--header-only"] if header_only else []) + [path]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError("st-dump %s failed (%d): %s" % (path, p.returncode, p.stderr.decode(errors="replace")))
    res = None
    for line in p.stdout.decode("utf-8").split("\n"):
        if not line:
            continue
        f = line.split("\t")
        if f[0] == "file":
            res = {"count": int(f[2]), "data_offset": int(f[3]), "size": int(f[4]), "meta": {}, "tensors": []}
        elif f[0] == "meta":
            res["meta"][unescape(f[1])] = unescape(f[2])
        elif f[0] == "tensor":
            res["tensors"].append({"name": unescape(f[1]), "dtype": f[2], "shape": json.loads(f[3]),
                                   "begin": int(f[4]), "end": int(f[5]), "sha256": f[6]})
    return res


def raw_header(path):
    """Our own minimal parse of a file's header (no library): (data_offset, header dict)."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        return 8 + n, json.loads(fh.read(n))


def sha256(b):
    return hashlib.sha256(b).hexdigest()
