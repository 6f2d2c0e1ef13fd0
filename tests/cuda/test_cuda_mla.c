/* test_cuda_mla - MLA cache write (kv_norm + RoPE into the bf16 latent cache), q/o absorption,
 * the split attention (decode batches with ragged lengths, causal prefill) and the tensor-core
 * prefill (dsv3_cuda_mla_prefill) against the CPU ops and a float64 reference. */
#include "cuda_test.h"

static void test_cache_write(int64_t C, int64_t R, int64_t nseq, int64_t max_seq, int64_t T) {
  dsv3_rope_params rp = {R, max_seq, 10000.0, 40.0, 256, 32, 1};
  int64_t half = R / 2;
  float *cs = t_xmalloc((size_t)(max_seq * half) * 4), *sn = t_xmalloc((size_t)(max_seq * half) * 4);
  dsv3_rope_tables(&rp, cs, sn);
  float *kva = t_xmalloc((size_t)(T * (C + R)) * 4);
  t_fill(kva, (size_t)(T * (C + R)), 1.5f);
  uint16_t *nw = t_xmalloc((size_t)C * 2);
  t_bf16(nw, (size_t)C, 1.0f);
  int32_t *seq = t_xmalloc((size_t)T * 4), *pos = t_xmalloc((size_t)T * 4);
  for (int64_t t = 0; t < T; t++) { /* distinct rows */
    seq[t] = (int32_t)(t % nseq);
    pos[t] = (int32_t)((t / nseq) * 3 + (int64_t)(t_next() % 3));
  }
  size_t kvn = (size_t)(nseq * max_seq * C), pen = (size_t)(nseq * max_seq * R);
  uint16_t *dkv = t_poison(kvn * 2), *dpe = t_poison(pen * 2);
  float *dkva = t_dev(kva, (size_t)(T * (C + R)) * 4), *dcs = t_dev(cs, (size_t)(max_seq * half) * 4),
        *dsn = t_dev(sn, (size_t)(max_seq * half) * 4);
  void *dnw = t_dev(nw, (size_t)C * 2);
  int32_t *dseq = t_dev(seq, (size_t)T * 4), *dpos = t_dev(pos, (size_t)T * 4);
  OK(dsv3_cuda_mla_cache_write(dkv, dpe, dkva, T, dnw, DSV3_BF16, 1e-6f, dcs, dsn, dseq, dpos, C, R, max_seq, 0));
  uint16_t *hkv = t_xmalloc(kvn * 2), *hpe = t_xmalloc(pen * 2);
  t_host(hkv, dkv, kvn * 2);
  t_host(hpe, dpe, pen * 2);
  float *ref = t_xmalloc((size_t)(C + R) * 4), *got = t_xmalloc((size_t)(C + R) * 4);
  double worst = 0;
  char *written = calloc((size_t)(nseq * max_seq), 1);
  for (int64_t t = 0; t < T; t++) {
    int64_t row = (int64_t)seq[t] * max_seq + pos[t];
    written[row] = 1;
    dsv3_rmsnorm(ref, kva + t * (C + R), nw, DSV3_BF16, 1, C, 1e-6f);
    memcpy(ref + C, kva + t * (C + R) + C, (size_t)R * 4);
    dsv3_rope_apply(ref + C, R, cs, sn, pos[t]);
    for (int64_t i = 0; i < C + R; i++) {
      ref[i] = dsv3_bf16_to_f32(dsv3_f32_to_bf16(ref[i]));
      got[i] = dsv3_bf16_to_f32(i < C ? hkv[row * C + i] : hpe[row * R + i - C]);
    }
    double e = t_rel(got, ref, (size_t)(C + R));
    if (e > worst) worst = e;
  }
  CHECK(worst < 4e-3, "mla cache write C=%lld R=%lld: rel err %.3g (bf16: < 4e-3)", (long long)C, (long long)R, worst);
  int64_t touched = 0;
  for (int64_t r = 0; r < nseq * max_seq; r++)
    if (!written[r] && (hkv[r * C] != 0xffff || hpe[r * R + R - 1] != 0xffff)) touched++;
  CHECK(touched == 0, "mla cache write: %lld rows written that should not be", (long long)touched);
  cudaFree(dkv), cudaFree(dpe), cudaFree(dkva), cudaFree(dcs), cudaFree(dsn), cudaFree(dnw), cudaFree(dseq), cudaFree(dpos);
  free(cs), free(sn), free(kva), free(nw), free(seq), free(pos), free(hkv), free(hpe), free(ref), free(got), free(written);
}

static void test_absorb(int64_t T, int64_t H, int64_t nope, int64_t R, int64_t V, int64_t C) {
  int64_t qk = nope + R, wr = H * (nope + V);
  float *q = t_xmalloc((size_t)(T * H * qk) * 4), *ol = t_xmalloc((size_t)(T * H * C) * 4);
  uint16_t *W = t_xmalloc((size_t)(wr * C) * 2);
  t_fill(q, (size_t)(T * H * qk), 1.0f);
  t_fill(ol, (size_t)(T * H * C), 1.0f);
  t_bf16(W, (size_t)(wr * C), 0.05f);
  double *rq = t_xmalloc((size_t)(T * H * C) * 8), *ro = t_xmalloc((size_t)(T * H * V) * 8);
  for (int64_t t = 0; t < T; t++)
    for (int64_t h = 0; h < H; h++) {
      for (int64_t c = 0; c < C; c++) {
        double a = 0;
        for (int64_t d = 0; d < nope; d++) a += (double)q[(t * H + h) * qk + d] * dsv3_bf16_to_f32(W[(h * (nope + V) + d) * C + c]);
        rq[(t * H + h) * C + c] = a;
      }
      for (int64_t v = 0; v < V; v++) {
        double a = 0;
        for (int64_t c = 0; c < C; c++)
          a += (double)ol[(t * H + h) * C + c] * dsv3_bf16_to_f32(W[(h * (nope + V) + nope + v) * C + c]);
        ro[(t * H + h) * V + v] = a;
      }
    }
  float *dq = t_dev(q, (size_t)(T * H * qk) * 4), *dol = t_dev(ol, (size_t)(T * H * C) * 4);
  uint16_t *dW = t_dev(W, (size_t)(wr * C) * 2);
  float *dql = t_poison((size_t)(T * H * C) * 4), *dout = t_poison((size_t)(T * H * V) * 4);
  OK(dsv3_cuda_mla_absorb_q(dql, dq, dW, T, H, nope, R, V, C, 0));
  OK(dsv3_cuda_mla_absorb_o(dout, dol, dW, T, H, nope, V, C, 0));
  float *gq = t_xmalloc((size_t)(T * H * C) * 4), *go = t_xmalloc((size_t)(T * H * V) * 4);
  t_host(gq, dql, (size_t)(T * H * C) * 4);
  t_host(go, dout, (size_t)(T * H * V) * 4);
  double e1 = t_rel_d(gq, rq, (size_t)(T * H * C)), e2 = t_rel_d(go, ro, (size_t)(T * H * V));
  CHECK(e1 < 1e-5, "absorb q T=%lld H=%lld C=%lld: rel err %.3g", (long long)T, (long long)H, (long long)C, e1);
  CHECK(e2 < 1e-5, "absorb o T=%lld H=%lld C=%lld: rel err %.3g", (long long)T, (long long)H, (long long)C, e2);
  cudaFree(dq), cudaFree(dol), cudaFree(dW), cudaFree(dql), cudaFree(dout);
  free(q), free(ol), free(W), free(rq), free(ro), free(gq), free(go);
}

/* The fused decode q path (dsv3_cuda_mla_q_fused) against the CPU reference ops: rmsnorm,
 * the FP8 q_b on its bf16-rounded weights, RoPE, absorb q (float64 for the last).  q_b runs
 * the packed-f16 GEMV's arithmetic (test_cuda_linear: 3e-3 of |W| |x|); with random signs
 * |W x| is about |W| |x| / sqrt(K) and so is each output's rounding error, so the relative L2
 * error stays near the per-term roundings (2^-9 for the reference's bf16 weights, 2^-11 for x
 * and the f16 sums): bound 5e-3 for q and for ql, which is linear in q.  A wrong row, scale
 * block or rotation gives O(1). */
static void test_q_fused(int64_t H, int64_t nope, int64_t R, int64_t V, int64_t C, int64_t K, int64_t pos) {
  const int64_t qk = nope + R, rows = H * qk, wr = H * (nope + V), half = R / 2, npos = pos + 3;
  float *qa = t_xmalloc((size_t)K * 4), *nw = t_xmalloc((size_t)K * 4), *qn = t_xmalloc((size_t)K * 4);
  uint8_t *wq = t_xmalloc((size_t)(rows * K));
  float *sq = t_xmalloc((size_t)(((rows + 127) / 128) * ((K + 127) / 128)) * 4);
  uint16_t *wkvb = t_xmalloc((size_t)(wr * C) * 2);
  float *cs = t_xmalloc((size_t)(npos * half + 1) * 4), *sn = t_xmalloc((size_t)(npos * half + 1) * 4);
  t_fill(qa, (size_t)K, 3.0f);
  for (int64_t k = 0; k < K; k++) nw[k] = 0.5f + (float)t_unit();
  t_fp8(wq, sq, rows, K);
  t_bf16(wkvb, (size_t)(wr * C), 0.05f);
  for (int64_t i = 0; i < npos * half; i++) {
    const double th = 6.283185307179586 * t_unit();
    cs[i] = (float)cos(th), sn[i] = (float)sin(th);
  }
  dsv3_wmat hq = {DSV3_F8_E4M3, wq, sq, rows, K};
  float *rq = t_xmalloc((size_t)rows * 4);
  dsv3_rmsnorm(qn, qa, nw, DSV3_F32, 1, K, 1e-6f);
  dsv3_linear(rq, qn, 1, &hq);
  for (int64_t h = 0; h < H; h++)
    for (int64_t i = 0; i < half; i++) {
      float *p = rq + h * qk + nope + 2 * i, c = cs[pos * half + i], s = sn[pos * half + i], a = p[0], b = p[1];
      p[0] = a * c - b * s, p[1] = a * s + b * c;
    }
  double *rl = t_xmalloc((size_t)(H * C) * 8);
  for (int64_t h = 0; h < H; h++)
    for (int64_t c = 0; c < C; c++) {
      double a = 0;
      for (int64_t d = 0; d < nope; d++) a += (double)rq[h * qk + d] * dsv3_bf16_to_f32(wkvb[(h * (nope + V) + d) * C + c]);
      rl[h * C + c] = a;
    }
  int32_t p32 = (int32_t)pos;
  dsv3_wmat dqm = {DSV3_F8_E4M3, t_dev(wq, (size_t)(rows * K)), t_dev(sq, (size_t)(((rows + 127) / 128) * ((K + 127) / 128)) * 4), rows, K};
  float *dqa = t_dev(qa, (size_t)K * 4), *dnw = t_dev(nw, (size_t)K * 4);
  float *dcs = t_dev(cs, (size_t)(npos * half + 1) * 4), *dsn = t_dev(sn, (size_t)(npos * half + 1) * 4);
  uint16_t *dw = t_dev(wkvb, (size_t)(wr * C) * 2);
  int32_t *dpos = t_dev(&p32, 4);
  float *dq = t_poison((size_t)rows * 4), *dql = t_poison((size_t)(H * C) * 4);
  CHECK(dsv3_cuda_mla_q_fused_ok(&dqm, dqa, H, nope, R, C), "q fused H=%lld C=%lld K=%lld: shape not covered", (long long)H,
        (long long)C, (long long)K);
  OK(dsv3_cuda_mla_q_fused(dql, dq, dqa, dnw, DSV3_F32, 1e-6f, &dqm, dw, dcs, dsn, dpos, H, nope, R, V, C, 0));
  float *gq = t_xmalloc((size_t)rows * 4), *gl = t_xmalloc((size_t)(H * C) * 4);
  t_host(gq, dq, (size_t)rows * 4);
  t_host(gl, dql, (size_t)(H * C) * 4);
  const double e1 = t_rel(gq, rq, (size_t)rows), e2 = t_rel_d(gl, rl, (size_t)(H * C));
  printf("q fused H=%lld nope=%lld R=%lld C=%lld K=%lld: q rel err %.3g, ql %.3g\n", (long long)H, (long long)nope,
         (long long)R, (long long)C, (long long)K, e1, e2);
  CHECK(e1 < 5e-3, "q fused H=%lld C=%lld K=%lld: q rel err %.3g", (long long)H, (long long)C, (long long)K, e1);
  CHECK(e2 < 5e-3, "q fused H=%lld C=%lld K=%lld: ql rel err %.3g", (long long)H, (long long)C, (long long)K, e2);
  /* a shape it does not cover is refused with an error, not run */
  dsv3_wmat odd = dqm;
  odd.cols = K + 8;
  CHECK(!dsv3_cuda_mla_q_fused_ok(&odd, dqa, H, nope, R, C), "q fused accepted K %lld", (long long)(K + 8));
  CHECK(dsv3_cuda_mla_q_fused(dql, dq, dqa, dnw, DSV3_F32, 1e-6f, &odd, dw, dcs, dsn, dpos, H, nope, R, V, C, 0) != 0,
        "q fused ran K %lld", (long long)(K + 8));
  cudaFree((void *)dqm.data), cudaFree((void *)dqm.scale), cudaFree(dqa), cudaFree(dnw), cudaFree(dcs), cudaFree(dsn);
  cudaFree(dw), cudaFree(dpos), cudaFree(dq), cudaFree(dql);
  free(qa), free(nw), free(qn), free(wq), free(sq), free(wkvb), free(cs), free(sn), free(rq), free(rl), free(gq), free(gl);
}

/* float64 reference: ref [nq, H, C] = softmax(scale * (ql.kv + q_pe.pe)) . kv, query i in
 * sequence seq[i] over rows [0, len[i]); q_pe of (i, h) at q + (i * H + h) * (nope + R) + nope. */
static void ref_attention(double *ref, const float *ql, const float *q, int64_t nope, const uint16_t *kv,
                          const uint16_t *pe, const int32_t *seq, const int32_t *len, int64_t nq, int64_t H, int64_t C,
                          int64_t R, int64_t max_seq, float scale) {
  const int64_t qk = nope + R;
  int64_t max_len = 1;
  for (int64_t i = 0; i < nq; i++)
    if (len[i] > max_len) max_len = len[i];
  double *p = t_xmalloc((size_t)max_len * 8);
  for (int64_t i = 0; i < nq; i++)
    for (int64_t h = 0; h < H; h++) {
      const float *a = ql + (i * H + h) * C, *b = q + (i * H + h) * qk + nope;
      double mx = -INFINITY, sum = 0;
      for (int64_t s = 0; s < len[i]; s++) {
        const uint16_t *k = kv + ((int64_t)seq[i] * max_seq + s) * C, *e = pe + ((int64_t)seq[i] * max_seq + s) * R;
        double acc = 0;
        for (int64_t c = 0; c < C; c++) acc += (double)a[c] * dsv3_bf16_to_f32(k[c]);
        for (int64_t r = 0; r < R; r++) acc += (double)b[r] * dsv3_bf16_to_f32(e[r]);
        p[s] = acc * scale;
        if (p[s] > mx) mx = p[s];
      }
      for (int64_t s = 0; s < len[i]; s++) sum += (p[s] = exp(p[s] - mx));
      double *o = ref + (i * H + h) * C;
      for (int64_t c = 0; c < C; c++) o[c] = 0;
      for (int64_t s = 0; s < len[i]; s++) {
        const uint16_t *k = kv + ((int64_t)seq[i] * max_seq + s) * C;
        for (int64_t c = 0; c < C; c++) o[c] += p[s] / sum * dsv3_bf16_to_f32(k[c]);
      }
    }
  free(p);
}

/* nq queries; query i in sequence seq[i] sees len[i] rows */
static void test_attention(dsv3_cuda_ctx *ctx, const char *what, int64_t H, int64_t C, int64_t R, int64_t nseq,
                           int64_t max_seq, int64_t nq, const int32_t *seq, const int32_t *len, int64_t max_len) {
  const int64_t nope = 16, qk = nope + R; /* q_pe lives inside a [nq, H, nope + R] buffer */
  size_t kvn = (size_t)(nseq * max_seq * C), pen = (size_t)(nseq * max_seq * R);
  uint16_t *kv = t_xmalloc(kvn * 2), *pe = t_xmalloc(pen * 2);
  t_bf16(kv, kvn, 1.0f);
  t_bf16(pe, pen, 1.0f);
  float *ql = t_xmalloc((size_t)(nq * H * C) * 4), *q = t_xmalloc((size_t)(nq * H * qk) * 4);
  t_fill(ql, (size_t)(nq * H * C), 1.0f);
  t_fill(q, (size_t)(nq * H * qk), 1.0f);
  float scale = (float)(1.5 / sqrt((double)(C + R)));
  double *ref = t_xmalloc((size_t)(nq * H * C) * 8);
  ref_attention(ref, ql, q, nope, kv, pe, seq, len, nq, H, C, R, max_seq, scale);
  uint16_t *dkv = t_dev(kv, kvn * 2), *dpe = t_dev(pe, pen * 2);
  float *dql = t_dev(ql, (size_t)(nq * H * C) * 4), *dq = t_dev(q, (size_t)(nq * H * qk) * 4);
  int32_t *dseq = t_dev(seq, (size_t)nq * 4), *dlen = t_dev(len, (size_t)nq * 4);
  float *dol = t_poison((size_t)(nq * H * C) * 4), *got = t_xmalloc((size_t)(nq * H * C) * 4);
  for (int rep = 0; rep < 2; rep++) { /* the same answer twice: no race */
    CU(cudaMemset(dol, 0xff, (size_t)(nq * H * C) * 4));
    OK(dsv3_cuda_mla_attention(ctx, dol, dql, dq + nope, H * qk, qk, dkv, dpe, dseq, dlen, nq, H, C, R, max_seq,
                               rep ? max_seq : max_len, scale));
    t_host(got, dol, (size_t)(nq * H * C) * 4);
    double e = t_rel_d(got, ref, (size_t)(nq * H * C));
    CHECK(e < 1e-4, "mla attention %s%s (H=%lld C=%lld R=%lld nq=%lld, max_len %lld): rel err %.3g", what,
          getenv("DSV3_MLA_TC") ? " (CUDA cores)" : "", (long long)H,
          (long long)C, (long long)R, (long long)nq, (long long)(rep ? max_seq : max_len), e);
  }
  cudaFree(dkv), cudaFree(dpe), cudaFree(dql), cudaFree(dq), cudaFree(dseq), cudaFree(dlen), cudaFree(dol);
  free(kv), free(pe), free(ql), free(q), free(ref), free(got);
}

/* dsv3_cuda_mla_prefill: nq queries of sequence sq at positions pos0 .. pos0 + nq - 1 over a
 * cache of nseq sequences in which every row is random, those of the other sequences and the
 * rows at and beyond pos0 + nq included, so a row the causal mask hides would show.  Run with
 * a score budget of `budget` bytes (small: many query chunks) and with the default one.  The
 * reference is the absorbed form in float64 (the same attention): ql = q_nope . W_nope, the
 * attention over the latent rows, o = ol . W_v^T.  nope = 16 and V = 24 differ so a stride
 * mix-up shows; W ~ N(0, 1/C) gives keys and values of unit scale, and scale 1.5/sqrt(nope + R)
 * logits of std ~1.5.
 *
 * Tolerance: the kernel rounds the queries, the keys and values (kv_b of the cache rows) and
 * the probabilities to bf16 (unit roundoff 2^-9 = 2e-3) and accumulates in fp32, as the
 * official model's bf16 einsums with a float32 softmax.  The absorbed form, which rounded
 * only the queries and probabilities, measured ~2.5e-3 over a call and at most 7.6e-3 for its
 * worst token (a numpy emulation over 100 seeds); the extra key and value roundings add errors
 * of the same size, independent.  Limits: 1e-2 over all, 2e-2 for the worst token; a wrong
 * row, head or mask boundary gives errors of order 0.1-1. */
static void test_prefill_dims(dsv3_cuda_ctx *ctx, int64_t H, int64_t C, int64_t R, int64_t nseq, int64_t max_seq, int64_t sq,
                              int64_t pos0, int64_t nq, size_t budget, int64_t nope, int64_t V) {
  const int64_t qk = nope + R, HW = H * (nope + V); /* q: [nq, H, nope + R] */
  size_t kvn = (size_t)(nseq * max_seq * C), pen = (size_t)(nseq * max_seq * R), on = (size_t)(nq * H * V);
  uint16_t *kv = t_xmalloc(kvn * 2), *pe = t_xmalloc(pen * 2), *W = t_xmalloc((size_t)(HW * C) * 2);
  t_bf16(kv, kvn, 1.0f);
  t_bf16(pe, pen, 1.0f);
  t_bf16(W, (size_t)(HW * C), (float)(1.0 / sqrt((double)C)));
  float *ql = t_xmalloc((size_t)(nq * H * C) * 4), *q = t_xmalloc((size_t)(nq * H * qk) * 4);
  t_fill(q, (size_t)(nq * H * qk), 1.0f);
  for (int64_t t = 0; t < nq; t++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t c = 0; c < C; c++) {
        double a = 0;
        for (int64_t d = 0; d < nope; d++) a += (double)q[(t * H + h) * qk + d] * dsv3_bf16_to_f32(W[(h * (nope + V) + d) * C + c]);
        ql[(t * H + h) * C + c] = (float)a;
      }
  int32_t *seq = t_xmalloc((size_t)nq * 4), *len = t_xmalloc((size_t)nq * 4);
  for (int64_t i = 0; i < nq; i++) seq[i] = (int32_t)sq, len[i] = (int32_t)(pos0 + i + 1);
  float scale = (float)(1.5 / sqrt((double)(nope + R)));
  double *rol = t_xmalloc((size_t)(nq * H * C) * 8), *ref = t_xmalloc(on * 8);
  ref_attention(rol, ql, q, nope, kv, pe, seq, len, nq, H, C, R, max_seq, scale);
  for (int64_t t = 0; t < nq; t++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t v = 0; v < V; v++) {
        double a = 0;
        for (int64_t c = 0; c < C; c++) a += rol[(t * H + h) * C + c] * dsv3_bf16_to_f32(W[(h * (nope + V) + nope + v) * C + c]);
        ref[(t * H + h) * V + v] = a;
      }
  uint16_t *dkv = t_dev(kv, kvn * 2), *dpe = t_dev(pe, pen * 2), *dW = t_dev(W, (size_t)(HW * C) * 2);
  float *dq = t_dev(q, (size_t)(nq * H * qk) * 4);
  float *dout = t_poison(on * 4), *got = t_xmalloc(on * 4);
  /* RoPE tables at random angles and q with its rope part rotated back by them: the prefill
   * rotating it at positions pos0 + i (rep 4) must see q again */
  const int64_t half = R / 2, npos = pos0 + nq;
  float *cs = t_xmalloc((size_t)(npos * half + 1) * 4), *sn = t_xmalloc((size_t)(npos * half + 1) * 4);
  float *qu = t_xmalloc((size_t)(nq * H * qk) * 4);
  memcpy(qu, q, (size_t)(nq * H * qk) * 4);
  for (int64_t i = 0; i < npos * half; i++) {
    const double th = 6.283185307179586 * rand() / RAND_MAX;
    cs[i] = (float)cos(th), sn[i] = (float)sin(th);
  }
  for (int64_t t = 0; t < nq; t++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t p = 0; p < half; p++) {
        float *x = qu + (t * H + h) * qk + nope + 2 * p;
        const float c = cs[(pos0 + t) * half + p], s = sn[(pos0 + t) * half + p], a = x[0], b = x[1];
        x[0] = a * c + b * s, x[1] = b * c - a * s;
      }
  float *dcs = t_dev(cs, (size_t)(npos * half + 1) * 4), *dsn = t_dev(sn, (size_t)(npos * half + 1) * 4);
  const size_t def = dsv3_cuda_mla_prefill_score_bytes;
  const int keep_fused = dsv3_cuda_mla_fused, keep_wg = dsv3_cuda_mla_wg, keep_ws = dsv3_cuda_mla_ws;
  /* 0: small score budget, 1: default (the warp-specialised wgmma kernel where it applies), 2:
   * the fused kernel off, 3: the mma.sync fused kernel, 4: the default with q's RoPE applied
   * inside, 5: the wgmma kernel whose warpgroups move in step (RoPE inside) */
  for (int rep = 0; rep < 6; rep++) {
    dsv3_cuda_mla_prefill_score_bytes = rep ? def : budget;
    dsv3_cuda_mla_fused = rep == 2 ? 0 : keep_fused;
    dsv3_cuda_mla_wg = rep == 3 ? 0 : keep_wg;
    dsv3_cuda_mla_ws = rep == 5 ? 0 : keep_ws;
    CU(cudaMemset(dout, 0xff, on * 4));
    if (rep >= 4 && R == 0) continue;
    if (rep >= 4) CU(cudaMemcpy(dq, qu, (size_t)(nq * H * qk) * 4, cudaMemcpyHostToDevice));
    /* rep 1 and 3 (each fused kernel where it applies) write o in bf16 too: bf16(o) exactly */
    uint16_t *dob = NULL;
    if (rep == 1 || rep == 3 || rep == 5) CU(cudaMalloc((void **)&dob, on * 2));
    OK(dsv3_cuda_mla_prefill(ctx, dout, dq, dW, dkv, dpe, sq, pos0, nq, H, nope, R, V, C, max_seq, scale, rep >= 4 ? dcs : NULL,
                             rep >= 4 ? dsn : NULL, dob));
    if (dob) {
      uint16_t *ob = t_xmalloc(on * 2);
      float *of = t_xmalloc(on * 4);
      t_host(ob, dob, on * 2);
      t_host(of, dout, on * 4);
      size_t bad = 0;
      for (size_t i = 0; i < on; i++) bad += ob[i] != dsv3_f32_to_bf16(of[i]);
      CHECK(bad == 0, "mla prefill rep %d nq=%lld: %zu bf16 o values differ from bf16(o)", rep, (long long)nq, bad);
      cudaFree(dob);
      free(ob), free(of);
    }
    t_host(got, dout, on * 4);
    double e = t_rel_d(got, ref, on), wt = 0;
    int64_t wi = 0;
    for (int64_t i = 0; i < nq; i++) {
      double ei = t_rel_d(got + i * H * V, ref + i * H * V, (size_t)(H * V));
      if (!(ei <= wt)) wt = ei, wi = i; /* NaN / inf count as worst */
    }
    CHECK(e < 1e-2 && wt < 2e-2,
          "mla prefill H=%lld C=%lld nope=%lld R=%lld V=%lld seq %lld pos0=%lld nq=%lld (score budget %zu, fused %d, wgmma "
          "%d): rel err %.3g (< 1e-2), worst token %lld: %.3g (< 2e-2)",
          (long long)H, (long long)C, (long long)nope, (long long)R, (long long)V, (long long)sq, (long long)pos0,
          (long long)nq, dsv3_cuda_mla_prefill_score_bytes, dsv3_cuda_mla_fused, dsv3_cuda_mla_wg, e, (long long)wi, wt);
    if (rep)
      printf("mla prefill H=%lld C=%lld nope=%lld R=%lld V=%lld pos0=%lld nq=%lld%s: rel err %.3g, worst token %.3g\n",
             (long long)H, (long long)C, (long long)nope, (long long)R, (long long)V, (long long)pos0, (long long)nq,
             !dsv3_cuda_mla_fused ? " (fused off)"
             : !dsv3_cuda_mla_wg ? " (wgmma off)"
             : rep == 5          ? " (wgmma in step, rope inside)"
             : rep == 4          ? " (rope inside)"
                                 : "",
             e, wt);
  }
  dsv3_cuda_mla_prefill_score_bytes = def;
  dsv3_cuda_mla_fused = keep_fused;
  dsv3_cuda_mla_wg = keep_wg;
  dsv3_cuda_mla_ws = keep_ws;
  cudaFree(dkv), cudaFree(dpe), cudaFree(dW), cudaFree(dq), cudaFree(dout), cudaFree(dcs), cudaFree(dsn);
  free(kv), free(pe), free(W), free(ql), free(q), free(seq), free(len), free(rol), free(ref), free(got), free(cs), free(sn), free(qu);
}

/* nope = 16 and V = 24 (not a size the fused kernel is built for: the score-matrix path) */
static void test_prefill(dsv3_cuda_ctx *ctx, int64_t H, int64_t C, int64_t R, int64_t nseq, int64_t max_seq, int64_t sq,
                         int64_t pos0, int64_t nq, size_t budget) {
  test_prefill_dims(ctx, H, C, R, nseq, max_seq, sq, pos0, nq, budget, 16, 24);
}

static void test_prefill_args(dsv3_cuda_ctx *ctx) {
  /* positions beyond the cache are refused before anything is touched */
  int rc = dsv3_cuda_mla_prefill(ctx, NULL, NULL, NULL, NULL, NULL, 0, 10, 7, 3, 16, 8, 16, 40, 16, 0.1f, NULL, NULL, NULL);
  CHECK(rc == -1 && strstr(dsv3_error(), "outside the cache"), "mla prefill past max_seq: rc %d, error '%s'", rc,
        dsv3_error());
  rc = dsv3_cuda_mla_prefill(ctx, NULL, NULL, NULL, NULL, NULL, -1, 0, 7, 3, 16, 8, 16, 40, 16, 0.1f, NULL, NULL, NULL);
  CHECK(rc == -1 && strstr(dsv3_error(), "bad sequence"), "mla prefill seq -1: rc %d, error '%s'", rc, dsv3_error());
  CHECK(dsv3_cuda_mla_prefill(ctx, NULL, NULL, NULL, NULL, NULL, 0, 3, 0, 3, 16, 8, 16, 40, 16, 0.1f, NULL, NULL, NULL) == 0,
        "mla prefill of 0 queries: %s", dsv3_error());
}

int main(void) {
  t_init("test_cuda_mla");
  dsv3_cuda_ctx *ctx;
  OK(dsv3_cuda_ctx_new(0, &ctx));
  test_cache_write(128, 32, 2, 300, 37);
  test_cache_write(512, 64, 1, 64, 5);
  test_cache_write(32, 16, 3, 10, 6);
  test_absorb(1, 16, 32, 32, 32, 128);
  test_absorb(9, 128, 128, 64, 128, 512);
  test_absorb(3, 2, 16, 16, 16, 32);
  test_absorb(5, 3, 24, 8, 6, 64); /* 18 output rows of heads of 6 (a warp's 4 rows span heads), 2 token tiles */
  test_q_fused(128, 128, 64, 128, 512, 1536, 300); /* DeepSeek-V3 */
  test_q_fused(16, 32, 32, 32, 128, 192, 7);       /* models/dsv3-tiny */
  test_q_fused(5, 24, 16, 6, 64, 48, 0);           /* head 3 (rows 120-159) crosses a 128-row scale block; C / 8 = 8 */
  /* decode attention: the tensor-core kernel where the shapes fit it (C % 64 == 0: all but
   * "narrow"), then the CUDA-core kernel for every shape (DSV3_MLA_TC=0) */
  for (int cc = 0; cc < 2; cc++) {
    if (cc) setenv("DSV3_MLA_TC", "0", 1);
    {
      int32_t seq[2] = {0, 1}, len[2] = {1, 257};
      test_attention(ctx, "decode tiny", 16, 128, 32, 2, 300, 2, seq, len, 300);
    }
    {
      int32_t seq[1] = {0}, len[1] = {3001};
      test_attention(ctx, "decode long", 128, 512, 64, 1, 4096, 1, seq, len, 3001);
    }
    {
      int32_t seq[3] = {2, 0, 1}, len[3] = {1, 77, 1500};
      test_attention(ctx, "decode batch", 128, 512, 64, 3, 2048, 3, seq, len, 1500);
    }
    {
      int32_t seq[40], len[40];
      for (int i = 0; i < 40; i++) seq[i] = 0, len[i] = 50 + i + 1; /* causal prefill after 50 cached */
      test_attention(ctx, "prefill causal", 16, 128, 32, 1, 128, 40, seq, len, 90);
    }
    {
      int32_t seq[4] = {0, 0, 0, 0}, len[4] = {1, 2, 3, 4};
      test_attention(ctx, "narrow", 2, 32, 16, 1, 16, 4, seq, len, 4);
    }
    {
      int32_t seq[2] = {1, 0}, len[2] = {45, 200}; /* 20 heads: a partial head block; 5 k-steps over 8 warps (3 idle) */
      test_attention(ctx, "odd heads", 20, 64, 16, 2, 256, 2, seq, len, 200);
    }
    {
      int32_t seq[3] = {0, 0, 0}, len[3] = {1, 40, 64}; /* max_len <= 64: one split, normalised in the kernel */
      test_attention(ctx, "one split", 16, 128, 32, 1, 64, 3, seq, len, 64);
    }
  }
  unsetenv("DSV3_MLA_TC");
  /* tensor-core prefill: H, C, R, nseq, max_seq, seq, pos0, nq, score budget (bytes) */
  test_prefill_args(ctx);
  for (int64_t nq = 1; nq <= 70; nq += (nq < 8 ? 1 : 13)) { /* 1..8, 21, 34, 47, 60 */
    test_prefill(ctx, 3, 40, 8, 1, 128, 0, 0, nq, 4000);   /* fresh sequence; nq >= 21: 3-20 query chunks */
    test_prefill(ctx, 3, 40, 8, 3, 128, 2, 37, nq, 10000); /* after 37 cached rows, third sequence; likewise */
  }
  test_prefill(ctx, 3, 40, 8, 2, 128, 1, 58, 70, 1 << 16); /* pos0 + nq == max_seq */
  test_prefill(ctx, 2, 16, 0, 1, 16, 0, 3, 9, 1);          /* no rope part, one token per chunk */
  test_prefill(ctx, 16, 512, 64, 2, 512, 1, 0, 300, 1 << 20);
  test_prefill(ctx, 16, 512, 64, 1, 1024, 0, 211, 300, 3 << 20);
  /* the fused kernel's sizes (DeepSeek-V3, dsv3-tiny), against the same reference and with the
   * fused kernel off: partial 64-query and 64-key tiles, after cached rows, other sequences */
  test_prefill_dims(ctx, 3, 512, 64, 2, 512, 1, 0, 130, 1 << 20, 128, 128);
  test_prefill_dims(ctx, 2, 512, 64, 2, 512, 0, 77, 200, 1 << 20, 128, 128);
  /* 16 key tiles, queries starting mid-tile, L = 1001 keys (V^T's rows padded to 1008) */
  test_prefill_dims(ctx, 2, 512, 64, 1, 1024, 0, 301, 700, 1 << 22, 128, 128);
  test_prefill_dims(ctx, 2, 512, 64, 1, 256, 0, 64, 1, 1 << 22, 128, 128); /* one query: one block, its second warpgroup idle */
  /* 48 heads x 4 query blocks (192 blocks: more than an SM each, the fill a 128-head layer has) */
  test_prefill_dims(ctx, 48, 128, 64, 1, 512, 0, 5, 400, 1 << 22, 128, 128);
  test_prefill_dims(ctx, 4, 128, 32, 3, 256, 2, 5, 70, 1 << 18, 32, 32);
  test_prefill_dims(ctx, 4, 128, 32, 1, 256, 0, 0, 1, 1 << 18, 32, 32);
  dsv3_cuda_ctx_free(ctx);
  return check_done("test_cuda_mla");
}
