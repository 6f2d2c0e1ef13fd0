#!/usr/bin/env python3
"""Per-tensor SHA-256 of every safetensors file in a directory, from the raw bytes.

Usage: hash_tensors.py DIR OUT.tsv
Writes `file\tname\tdtype\tshape\tsha256` per tensor (shape comma-separated) and
`#file\tfilename\tsha256` per file.  Parses the header itself so any dtype works."""
import hashlib, json, os, struct, sys

def main(d, out):
    rows = []
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        p = os.path.join(d, fn)
        with open(p, "rb") as f:
            blob = f.read()
        n = struct.unpack("<Q", blob[:8])[0]
        hdr = json.loads(blob[8:8 + n])
        base = 8 + n
        rows.append("#file\t%s\t%s" % (fn, hashlib.sha256(blob).hexdigest()))
        for name in sorted(k for k in hdr if k != "__metadata__"):
            t = hdr[name]
            b, e = t["data_offsets"]
            h = hashlib.sha256(blob[base + b: base + e]).hexdigest()
            rows.append("%s\t%s\t%s\t%s\t%s" % (fn, name, t["dtype"], ",".join(map(str, t["shape"])), h))
    with open(out, "w") as f:
        f.write("\n".join(rows) + "\n")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
