"""Independent numpy re-implementation of what dsv3-cast must produce, compared byte for byte.

  verify_numpy.py dequant FP8_DIR OUT_DIR bf16|f16|f32
      The official weight_dequant: out = round(float32(e4m3(W)) * S[i//128, j//128]) per block,
      the product in float32, rounded to nearest even into bf16 (integer ops) / f16 / kept f32.
      Also: same shard names, same tensors per shard, scales dropped, others byte-identical.
  verify_numpy.py quant WIDE_DIR OUT_DIR [ue8m0]
      The official block quantisation (act_quant applied per 128x128 block):
      s = max(amax, 1e-4) / 448 (ue8m0: 2^ceil(log2 s)), q = e4m3_rne_saturate(x / s).
  verify_numpy.py roundtrip ORIG_FP8_DIR OUT_FP8_DIR bf16|f16|f32 [ue8m0]
      Explains a plain FP8 -> WIDE -> FP8 round trip: every re-quantised scale must be exactly
      max(round_wide(v * s0), 1e-4) / 448 (v: the block's largest |e4m3| value, 448 for
      DeepSeek's own blocks), and the FP8 bytes of every block whose scale came back must be
      identical: the wide file keeps the block maximum only rounded (bf16: 8 significant bits),
      which is all a re-quantisation can recover of the 24-bit original scale.
Exit 0 if all equal, 1 with the first differences listed."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

B = 128
E4 = stio.e4m3_table()


def expand(s, M, N):
    return np.repeat(np.repeat(s, B, axis=0), B, axis=1)[:M, :N]


def scale_name(n):
    if n.endswith(".weight") and not n.startswith("model."):
        return n[:-len(".weight")] + ".scale"  # runtime layout
    return n + "_scale_inv"


def is_scale(n):
    return n.endswith("_scale_inv") or n.endswith(".scale")


def dequant(fp8_dir, out_dir, to):
    bad = []
    ins, outs = stio.shards(fp8_dir), stio.shards(out_dir)
    if ins != outs:
        return ["shard names differ: %s vs %s" % (ins, outs)]
    allin = {f: stio.File(os.path.join(fp8_dir, f)) for f in ins}
    where = {n: f for f, st in allin.items() for n in st.names()}
    n_deq = 0
    for fname in ins:
        a, o = allin[fname], stio.File(os.path.join(out_dir, fname))
        want = sorted(n for n in a.names() if not is_scale(n))
        if sorted(o.names()) != want:
            bad.append("%s: tensor set differs" % fname)
            continue
        for n in want:
            dt, shape = a.info(n)
            odt, oshape = o.info(n)
            if oshape != shape:
                bad.append("%s: %s shape %s vs %s" % (fname, n, oshape, shape))
                continue
            sn = scale_name(n)
            if dt == "F8_E4M3" and sn in where:
                # same file first (runtime layout: names repeat on every rank), else the index's
                s = (a if sn in a.header else allin[where[sn]]).array(sn)
                x = E4[a.array(n)]
                y = (x * expand(s, *shape)).astype(np.float32)  # one correctly rounded f32 product
                if to == "bf16":
                    ref, exp_dt = stio.f32_to_bf16_rne(y).view(np.uint8), "BF16"
                elif to == "f16":
                    ref, exp_dt = y.astype(np.float16).view(np.uint8), "F16"  # numpy: RNE
                else:
                    ref, exp_dt = y.view(np.uint8), "F32"
                n_deq += 1
                got = np.asarray(o.raw(n))
                if odt != exp_dt:
                    bad.append("%s: %s dtype %s, want %s" % (fname, n, odt, exp_dt))
                elif not np.array_equal(ref.reshape(-1), got):
                    k = int(np.argmax(ref.reshape(-1) != got))
                    bad.append("%s: %s differs first at byte %d" % (fname, n, k))
            else:
                if odt != dt or not np.array_equal(np.asarray(a.raw(n)), np.asarray(o.raw(n))):
                    bad.append("%s: %s not copied unchanged" % (fname, n))
    if n_deq == 0:
        bad.append("no FP8 weight was checked")
    print("dequant %s: %d FP8 weights recomputed in numpy" % (to, n_deq))
    return bad


def quant_block(x, ue8m0):
    """x: float32 [M, N]. Returns (codes uint8 [M, N], scales float32 [ceil(M/B), ceil(N/B)])."""
    M, N = x.shape
    mb, nb = -(-M // B), -(-N // B)
    s = np.zeros((mb, nb), dtype=np.float32)
    for i in range(mb):
        for j in range(nb):
            blk = np.abs(x[i * B:(i + 1) * B, j * B:(j + 1) * B])
            amax = np.float32(np.nanmax(blk)) if blk.size else np.float32(0)
            amax = max(amax, np.float32(1e-4))
            sc = np.float32(amax) / np.float32(448.0)
            if ue8m0:
                sc = np.float32(2.0) ** np.ceil(np.log2(np.float32(sc)))
            s[i, j] = sc
    y = (x / expand(s, M, N)).astype(np.float32)  # f32 division, correctly rounded
    return stio.f32_to_e4m3_rne_sat(y), s


def to_f32(arr, dt):
    if dt == "BF16":
        return stio.bf16_to_f32(arr)
    return arr.astype(np.float32)


def quant(wide_dir, out_dir, ue8m0):
    bad, n_q = [], 0
    for fname in stio.shards(wide_dir):
        a, o = stio.File(os.path.join(wide_dir, fname)), stio.File(os.path.join(out_dir, fname))
        for n in a.names():
            dt, shape = a.info(n)
            odt, _ = o.info(n)
            if odt != "F8_E4M3":
                if not np.array_equal(np.asarray(a.raw(n)), np.asarray(o.raw(n))):
                    bad.append("%s: %s not copied unchanged" % (fname, n))
                continue
            q, s = quant_block(to_f32(a.array(n), dt), ue8m0)
            n_q += 1
            sn = scale_name(n)
            if not np.array_equal(q.reshape(-1), np.asarray(o.raw(n))):
                d = np.nonzero(q.reshape(-1) != np.asarray(o.raw(n)))[0]
                bad.append("%s: %s: %d FP8 codes differ, first at %d" % (fname, n, len(d), d[0]))
            if sn not in o.names() or not np.array_equal(s.view(np.uint8).reshape(-1), np.asarray(o.raw(sn))):
                bad.append("%s: %s differs" % (fname, sn))
    if n_q == 0:
        bad.append("no tensor was quantised")
    print("quant%s: %d weights recomputed in numpy" % (" ue8m0" if ue8m0 else "", n_q))
    return bad


def roundtrip(orig_dir, out_dir, via, ue8m0):
    """Predict each re-quantised scale from the original scale alone: the intermediate file
    (dtype `via`) holds each block's largest element as round_via(v * s0), v the largest |code|
    value of the block, so s1 = max(round_via(v * s0), 1e-4) / 448 (ue8m0: next power of two).
    Weight bytes must come back wherever s1 == s0."""
    bad, n_w, n_s, n_same, n_blk_w, n_fp8, n_fp8_same = [], 0, 0, 0, 0, 0, 0
    rnd = {"bf16": lambda x: stio.bf16_to_f32(stio.f32_to_bf16_rne(x)),
           "f16": lambda x: x.astype(np.float16).astype(np.float32),
           "f32": lambda x: x}[via]
    for fname in stio.shards(orig_dir):
        a, o = stio.File(os.path.join(orig_dir, fname)), stio.File(os.path.join(out_dir, fname))
        if sorted(a.names()) != sorted(o.names()):
            bad.append("%s: tensor set differs" % fname)
            continue
        for n in a.names():
            if is_scale(n):
                continue
            n_w += 1
            sn = scale_name(n)
            if sn not in a.names():
                if not np.array_equal(np.asarray(a.raw(n)), np.asarray(o.raw(n))):
                    bad.append("%s: %s bytes changed" % (fname, n))
                continue
            s0, s1, q0, q1 = a.array(sn), o.array(sn), a.array(n), o.array(n)
            n_fp8 += 1
            n_fp8_same += bool(np.array_equal(q0, q1))
            pred = np.zeros_like(s0)
            for i in range(s0.shape[0]):
                for j in range(s0.shape[1]):
                    blk = q0[i * B:(i + 1) * B, j * B:(j + 1) * B]
                    v = np.float32(np.nanmax(np.abs(E4[blk]))) if blk.size else np.float32(0)
                    amax = max(rnd(np.array([v * s0[i, j]], dtype=np.float32))[0], np.float32(1e-4))
                    sc = np.float32(amax) / np.float32(448.0)
                    if ue8m0:
                        sc = np.float32(2.0) ** np.ceil(np.log2(np.float32(sc)))
                    pred[i, j] = sc
                    if s1[i, j] == s0[i, j]:
                        n_blk_w += 1
                        if not np.array_equal(blk, q1[i * B:(i + 1) * B, j * B:(j + 1) * B]):
                            bad.append("%s: %s block (%d,%d): same scale but FP8 bytes changed" % (fname, n, i, j))
            n_s += s0.size
            n_same += int(np.sum(s0 == s1))
            if not np.array_equal(pred.view(np.uint32), s1.view(np.uint32)):
                k = int(np.argmax(pred.view(np.uint32) != s1.view(np.uint32)))
                bad.append("%s: %s not as predicted at %d: %r vs %r" % (fname, sn, k, pred.reshape(-1)[k], s1.reshape(-1)[k]))
    print("roundtrip via %s%s: %d scales, %d identical, %d changed (all as predicted from s0 alone); "
          "FP8 bytes identical in all %d blocks whose scale came back; %d of %d FP8 weights byte-identical"
          % (via, " ue8m0" if ue8m0 else "", n_s, n_same, n_s - n_same, n_blk_w, n_fp8_same, n_fp8))
    return bad


def main():
    mode = sys.argv[1]
    if mode == "dequant":
        bad = dequant(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "quant":
        bad = quant(sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "ue8m0")
    elif mode == "roundtrip":
        bad = roundtrip(sys.argv[2], sys.argv[3], sys.argv[4], len(sys.argv) > 5 and sys.argv[5] == "ue8m0")
    else:
        sys.exit("unknown mode " + mode)
    for b in bad[:10]:
        print("MISMATCH:", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
