/* test_cuda_linear - FP8/BF16 GEMV, dequantise + cuBLAS GEMM, the dispatching linear, the
 * dense MLP and dtype conversions against the CPU reference ops (kernels/cpu). */
#include "cuda_test.h"

typedef struct {
  dsv3_wmat h, d; /* host and device views */
} wpair;

static wpair make_w(dsv3_dtype dt, int64_t rows, int64_t cols) {
  wpair p = {{dt, NULL, NULL, rows, cols}, {dt, NULL, NULL, rows, cols}};
  if (dt == DSV3_F8_E4M3) {
    int64_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    uint8_t *w = t_xmalloc((size_t)(rows * cols));
    float *s = t_xmalloc((size_t)ns * 4);
    t_fp8(w, s, rows, cols);
    p.h.data = w, p.h.scale = s;
    p.d.data = t_dev(w, (size_t)(rows * cols)), p.d.scale = t_dev(s, (size_t)ns * 4);
  } else {
    uint16_t *w = t_xmalloc((size_t)(rows * cols) * 2);
    t_bf16(w, (size_t)(rows * cols), 0.05f);
    p.h.data = w;
    p.d.data = t_dev(w, (size_t)(rows * cols) * 2);
  }
  return p;
}
static void free_w(wpair *p) {
  free((void *)p->h.data);
  free((void *)p->h.scale);
  cudaFree((void *)p->d.data);
  cudaFree((void *)p->d.scale);
}

/* |W| |x| (the magnitudes' products, summed): the scale of the error when x is rounded to bf16
 * (relative error <= 2^-8 of it per output), where |W x| itself can be near zero by
 * cancellation (N = 1, K = 16: a single output) */
static void ref_abs(float *out, const dsv3_wmat *w, const float *x, int64_t T) {
  size_t n = (size_t)(w->rows * w->cols);
  dsv3_wmat a = *w;
  if (w->dtype == DSV3_F8_E4M3) {
    uint8_t *b = t_xmalloc(n);
    for (size_t i = 0; i < n; i++) b[i] = ((const uint8_t *)w->data)[i] & 0x7f;
    a.data = b;
  } else {
    uint16_t *b = t_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) b[i] = ((const uint16_t *)w->data)[i] & 0x7fff;
    a.data = b;
  }
  float *ax = t_xmalloc((size_t)(T * w->cols) * 4);
  for (int64_t i = 0; i < T * w->cols; i++) ax[i] = fabsf(x[i]);
  dsv3_linear(out, ax, T, &a);
  free((void *)a.data), free(ax);
}
/* ||y - ref|| / || |W| |x| || */
static double rel_abs(const float *y, const float *ref, const float *rabs, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(y[i]) || isinf(y[i])) return INFINITY;
    num += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
    den += (double)rabs[i] * rabs[i];
  }
  return den == 0 ? (num == 0 ? 0 : INFINITY) : sqrt(num / den);
}

static void test_linear(dsv3_cuda_ctx *ctx, dsv3_dtype dt, int64_t N, int64_t K, int misalign) {
  wpair w = make_w(dt, N, K);
  const char *dn = dt == DSV3_F8_E4M3 ? "fp8" : "bf16";
  /* dequantised values, bit-exact against the reference's bf16(e4m3 * scale) */
  uint16_t *dq = t_poison((size_t)(N * K) * 2), *hq = t_xmalloc((size_t)(N * K) * 2);
  OK(dsv3_cuda_dequant(dq, &w.d, dsv3_cuda_ctx_stream(ctx)));
  t_host(hq, dq, (size_t)(N * K) * 2);
  int64_t bad = 0;
  for (int64_t r = 0; r < N; r++)
    for (int64_t c = 0; c < K; c++)
      if (hq[r * K + c] != dsv3_f32_to_bf16(dsv3_wmat_get(&w.h, r, c))) bad++;
  CHECK(bad == 0, "dequant %s %lldx%lld: %lld values differ", dn, (long long)N, (long long)K, (long long)bad);
  cudaFree(dq);
  free(hq);

  const int64_t toks[] = {1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64, 65};
  for (size_t ti = 0; ti < sizeof toks / sizeof *toks; ti++) {
    int64_t T = toks[ti];
    float *x = t_xmalloc((size_t)(T * K) * 4), *ref = t_xmalloc((size_t)(T * N) * 4), *y = t_xmalloc((size_t)(T * N) * 4);
    float *y0 = t_xmalloc((size_t)(T * N) * 4), *refacc = t_xmalloc((size_t)(T * N) * 4);
    t_fill(x, (size_t)(T * K), 1.0f);
    t_fill(y0, (size_t)(T * N), 1.0f);
    dsv3_linear(ref, x, T, &w.h);
    for (int64_t i = 0; i < T * N; i++) refacc[i] = y0[i] + ref[i];
    float *rabs = t_xmalloc((size_t)(T * N) * 4);
    ref_abs(rabs, &w.h, x, T);
    float *xbuf = t_dev(NULL, (size_t)(T * K + 4) * 4), *dx = xbuf + (misalign ? 1 : 0);
    CU(cudaMemcpy(dx, x, (size_t)(T * K) * 4, cudaMemcpyHostToDevice));
    float *dy = t_poison((size_t)(T * N) * 4);
    double e;
    /* GEMV: float32 accumulation of the same products (h2 0); with h2 1 one FP8 token takes the
     * packed-f16 variant: the codes dotted per 128-wide block in f16 pairs, then the scale.
     * Against the reference's bf16 weights a product differs by up to 2^-9 (that rounding),
     * 2^-11 for x in f16, plus a 2^-11 rounding of each four-term f16 sum: 3e-3 of |W| |x| */
    const int keep_h2 = dsv3_cuda_gemv_h2;
    for (int h2 = 0; h2 <= 1; h2++) {
      dsv3_cuda_gemv_h2 = h2;
      const int h2_here = h2 && T == 1 && dt == DSV3_F8_E4M3;
      CU(cudaMemset(dy, 0xff, (size_t)(T * N) * 4));
      OK(dsv3_cuda_gemv(ctx, dy, dx, T, &w.d, 0));
      t_host(y, dy, (size_t)(T * N) * 4);
      e = h2_here ? rel_abs(y, ref, rabs, (size_t)(T * N)) : t_rel(y, ref, (size_t)(T * N));
      CHECK(e < (h2_here ? 3e-3 : 2e-5), "gemv %s N=%lld K=%lld T=%lld%s h2 %d: rel err %.3g", dn, (long long)N,
            (long long)K, (long long)T, misalign ? " misaligned" : "", h2, e);
      CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_gemv(ctx, dy, dx, T, &w.d, 1));
      t_host(y, dy, (size_t)(T * N) * 4);
      e = h2_here ? rel_abs(y, refacc, rabs, (size_t)(T * N)) : t_rel(y, refacc, (size_t)(T * N));
      CHECK(e < (h2_here ? 3e-3 : 2e-5), "gemv accumulate %s N=%lld K=%lld T=%lld h2 %d: rel err %.3g", dn, (long long)N,
            (long long)K, (long long)T, h2, e);
    }
    dsv3_cuda_gemv_h2 = keep_h2;
    /* the tensor-core GEMV (FP8, K % 64 == 0; otherwise it runs the GEMV): the official
     * fp8_gemm order (block dot of the e4m3 codes, then the scale) with x as f16; against the
     * reference's bf16-rounded weights each product may differ by 2^-9 relative (the rounding
     * the official bf16 path applies to a weight) plus 2^-11 for x: bound 3e-3 of |W| |x| */
    const int tc_here = dt == DSV3_F8_E4M3 && K % 64 == 0 && !misalign;
    /* elsewhere it runs the GEMV: at one FP8 token the packed-f16 variant, the same bound */
    const int tc_approx = tc_here || (dsv3_cuda_gemv_h2 && T == 1 && dt == DSV3_F8_E4M3);
    CU(cudaMemset(dy, 0xff, (size_t)(T * N) * 4));
    OK(dsv3_cuda_gemv_tcore(ctx, dy, dx, T, &w.d, 0));
    t_host(y, dy, (size_t)(T * N) * 4);
    e = tc_approx ? rel_abs(y, ref, rabs, (size_t)(T * N)) : t_rel(y, ref, (size_t)(T * N));
    CHECK(e < (tc_approx ? 3e-3 : 2e-5), "gemv_tcore %s N=%lld K=%lld T=%lld%s: rel err %.3g", dn, (long long)N,
          (long long)K, (long long)T, misalign ? " misaligned" : "", e);
    CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
    OK(dsv3_cuda_gemv_tcore(ctx, dy, dx, T, &w.d, 1));
    t_host(y, dy, (size_t)(T * N) * 4);
    e = tc_approx ? rel_abs(y, refacc, rabs, (size_t)(T * N)) : t_rel(y, refacc, (size_t)(T * N));
    CHECK(e < (tc_approx ? 3e-3 : 2e-5), "gemv_tcore accumulate %s N=%lld K=%lld T=%lld: rel err %.3g", dn, (long long)N,
          (long long)K, (long long)T, e);
    /* tensor-core skinny GEMM: activations rounded to bf16 (falls back to the GEMV where its
     * tiles do not fit: then the GEMV tolerance holds too); errors against |W| |x| */
    CU(cudaMemset(dy, 0xff, (size_t)(T * N) * 4));
    OK(dsv3_cuda_gemv_mma(ctx, dy, dx, T, &w.d, 0));
    t_host(y, dy, (size_t)(T * N) * 4);
    e = rel_abs(y, ref, rabs, (size_t)(T * N));
    CHECK(e < 5e-3, "gemv_mma %s N=%lld K=%lld T=%lld%s: rel err %.3g", dn, (long long)N, (long long)K, (long long)T,
          misalign ? " misaligned" : "", e);
    CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
    OK(dsv3_cuda_gemv_mma(ctx, dy, dx, T, &w.d, 1));
    t_host(y, dy, (size_t)(T * N) * 4);
    e = rel_abs(y, refacc, rabs, (size_t)(T * N));
    CHECK(e < 5e-3, "gemv_mma accumulate %s N=%lld K=%lld T=%lld: rel err %.3g", dn, (long long)N, (long long)K,
          (long long)T, e);
    /* GEMM: activations rounded to bf16 */
    CU(cudaMemset(dy, 0xff, (size_t)(T * N) * 4));
    OK(dsv3_cuda_gemm(ctx, dy, dx, T, &w.d, 0));
    t_host(y, dy, (size_t)(T * N) * 4);
    e = rel_abs(y, ref, rabs, (size_t)(T * N));
    CHECK(e < 1e-2, "gemm %s N=%lld K=%lld T=%lld: rel err %.3g", dn, (long long)N, (long long)K, (long long)T, e);
    /* with the BF16 weight cache: the same bits on the call that fills it and on one that
     * reads it; a budget below the matrix keeps nothing */
    {
      float *y1 = t_xmalloc((size_t)(T * N) * 4);
      const size_t wbytes = (size_t)(N * K) * 2;
      for (int pass = 0; pass < 3; pass++) {
        dsv3_cuda_weight_cache(ctx, pass == 2 ? wbytes - 1 : (size_t)1 << 30);
        CU(cudaMemset(dy, 0xff, (size_t)(T * N) * 4));
        OK(dsv3_cuda_gemm(ctx, dy, dx, T, &w.d, 0));
        t_host(y1, dy, (size_t)(T * N) * 4);
        CHECK(memcmp(y, y1, (size_t)(T * N) * 4) == 0, "gemm %s N=%lld K=%lld T=%lld weight cache pass %d: differs", dn,
              (long long)N, (long long)K, (long long)T, pass);
        const size_t used = dsv3_cuda_weight_cache_used(ctx), expect = dt == DSV3_BF16 || pass == 2 ? 0 : wbytes;
        CHECK(used == expect, "gemm %s weight cache pass %d: %zu bytes kept, expected %zu", dn, pass, used, expect);
        if (pass == 1) dsv3_cuda_weight_cache(ctx, 0);
      }
      dsv3_cuda_weight_cache(ctx, 0);
      free(y1);
    }
    /* linear_xb with xb = bf16(x) gives linear's bits exactly (the GEMM reads the same bf16 x) */
    {
      uint16_t *dxb = NULL;
      float *y1 = t_xmalloc((size_t)(T * N) * 4);
      CU(cudaMalloc((void **)&dxb, (size_t)(T * K) * 2));
      OK(dsv3_cuda_f32_to_bf16(dxb, dx, T * K, 0));
      CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_linear(ctx, dy, dx, T, &w.d, 1));
      t_host(y, dy, (size_t)(T * N) * 4);
      CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_linear_xb(ctx, dy, dx, dxb, T, &w.d, 1));
      t_host(y1, dy, (size_t)(T * N) * 4);
      CHECK(memcmp(y, y1, (size_t)(T * N) * 4) == 0, "linear_xb %s N=%lld K=%lld T=%lld: differs from linear", dn, (long long)N,
            (long long)K, (long long)T);
      cudaFree(dxb);
      free(y1);
    }
    CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
    OK(dsv3_cuda_linear(ctx, dy, dx, T, &w.d, 1));
    t_host(y, dy, (size_t)(T * N) * 4);
    const int tc_linear = tc_here && T <= 8 && (dsv3_cuda_gemv_tc == 2 || (dsv3_cuda_gemv_tc == 1 && T >= 2));
    const int h2_linear = dsv3_cuda_gemv_h2 && T == 1 && dt == DSV3_F8_E4M3;
    if (T <= dsv3_cuda_gemv_max_tokens && !tc_linear && !h2_linear) {
      e = t_rel(y, refacc, (size_t)(T * N));
      CHECK(e < 2e-5, "linear accumulate %s N=%lld K=%lld T=%lld: rel err %.3g", dn, (long long)N, (long long)K, (long long)T, e);
    } else {
      /* above the skinny GEMM's tokens an FP8 weight may take the FP8 GEMM: x quantised to
       * e4m3, the hard bound of test_fp8_gemm */
      const int f8 = T > dsv3_cuda_mma_max_tokens && dsv3_cuda_fp8_gemm && dsv3_cuda_gemm_fp8_ok(&w.d, dx, T);
      e = rel_abs(y, refacc, rabs, (size_t)(T * N));
      CHECK(e < (f8 ? 0.065 : 1e-2), "linear accumulate %s N=%lld K=%lld T=%lld: rel err %.3g of |W| |x|", dn, (long long)N,
            (long long)K, (long long)T, e);
    }
    cudaFree(xbuf);
    cudaFree(dy);
    free(x), free(ref), free(y), free(y0), free(refacc), free(rabs);
  }
  free_w(&w);
}

/* The FP8 GEMM (official fp8_gemm: act_quant, then the block-scaled product on the tensor
 * cores through cuBLASLt).  act_quant is bit-exact against a C emulation (s = max(amax, 1e-4) /
 * 448 in float32, q = e4m3(x / s) with round to nearest even).  The product is compared with
 * the same quantised operands summed in double: the tensor cores accumulate the e4m3 products
 * of a 128-wide block with ~14 bits (the DeepSeek-V3 report's figure for Hopper FP8 MMA) before
 * the float32 scaling, so the bound is 1e-3 of sum |terms|; a wrong scale layout gives O(1).
 * Against the float32 reference (the BF16 path's semantics) the quantisation of x moves each
 * term by at most 2^-4 relative, plus 2^-9 for the reference's bf16 weights: a hard bound of
 * 0.065 of |W| |x|, printed with the measured figure. */
static void test_fp8_gemm(dsv3_cuda_ctx *ctx, int64_t N, int64_t K, int64_t T) {
  wpair w = make_w(DSV3_F8_E4M3, N, K);
  const int64_t nkb = K / 128, nbn = (N + 127) / 128;
  float *x = t_xmalloc((size_t)(T * K) * 4);
  t_fill(x, (size_t)(T * K), 1.0f);
  for (int64_t t = 0; t < T; t++) /* blocks of very different magnitudes, and one of zeros */
    for (int64_t kb = 0; kb < nkb; kb++) {
      const float m = (t + kb) % 5 == 0 ? 100.f : (t + kb) % 5 == 1 ? 1e-3f : (t * 7 + kb) % 11 == 0 ? 0.f : 1.f;
      for (int64_t k = 0; k < 128; k++) x[t * K + kb * 128 + k] *= m;
    }
  float *dx = t_dev(x, (size_t)(T * K) * 4);
  /* act_quant, bit-exact */
  uint8_t *dq = t_poison((size_t)(T * K)), *q = t_xmalloc((size_t)(T * K));
  float *ds = t_poison((size_t)(nkb * T) * 4), *sx = t_xmalloc((size_t)(nkb * T) * 4);
  OK(dsv3_cuda_act_quant(dq, ds, dx, T, K, T, dsv3_cuda_ctx_stream(ctx)));
  t_host(q, dq, (size_t)(T * K));
  t_host(sx, ds, (size_t)(nkb * T) * 4);
  int64_t bad = 0;
  for (int64_t t = 0; t < T; t++)
    for (int64_t kb = 0; kb < nkb; kb++) {
      float m = 0.f;
      for (int64_t k = 0; k < 128; k++) m = fmaxf(m, fabsf(x[t * K + kb * 128 + k]));
      const float s = fmaxf(m, 1e-4f) / 448.f;
      if (memcmp(&s, &sx[kb * T + t], 4)) bad++;
      for (int64_t k = 0; k < 128; k++)
        if (q[t * K + kb * 128 + k] != dsv3_f32_to_e4m3(x[t * K + kb * 128 + k] / s)) bad++;
    }
  CHECK(bad == 0, "act_quant K=%lld T=%lld: %lld values or scales differ", (long long)K, (long long)T, (long long)bad);
  /* the product against the quantised operands in double; hyp 1: the weight scales read
   * transposed, hyp 2: the activation scales read token-major (diagnostics only) */
  const uint8_t *wq = w.h.data;
  const float *sw = w.h.scale;
  double *ref = t_xmalloc((size_t)(T * N) * 8 * 4), *rabs = ref + T * N, *h1 = rabs + T * N, *h2 = h1 + T * N;
  float *wf = t_xmalloc((size_t)(N * K) * 4), *xf = t_xmalloc((size_t)(T * K) * 4);
  for (int64_t i = 0; i < N * K; i++) wf[i] = dsv3_e4m3_to_f32(wq[i]);
  for (int64_t i = 0; i < T * K; i++) xf[i] = dsv3_e4m3_to_f32(q[i]);
  for (int64_t t = 0; t < T; t++)
    for (int64_t n = 0; n < N; n++) {
      double r = 0, a = 0, r1 = 0, r2 = 0;
      for (int64_t kb = 0; kb < nkb; kb++) {
        double d = 0, da = 0;
        for (int64_t k = kb * 128; k < kb * 128 + 128; k++) {
          d += (double)wf[n * K + k] * xf[t * K + k];
          da += fabs((double)wf[n * K + k] * xf[t * K + k]);
        }
        const double s = (double)sx[kb * T + t], s1 = (double)sw[(n / 128) * nkb + kb];
        r += d * s * s1, a += da * s * s1;
        const int64_t tr = kb * nbn + n / 128; /* the flat index read transposed */
        r1 += d * s * (tr < nbn * nkb ? (double)sw[tr] : 0.0);
        r2 += d * (double)sx[t * nkb + kb] * s1;
      }
      ref[t * N + n] = r, rabs[t * N + n] = a, h1[t * N + n] = r1, h2[t * N + n] = r2;
    }
  float *y = t_xmalloc((size_t)(T * N) * 4), *y0 = t_xmalloc((size_t)(T * N) * 4);
  float *dy = t_poison((size_t)(T * N) * 4);
  for (int acc = 0; acc < 2; acc++) {
    t_fill(y0, (size_t)(T * N), 1.0f);
    if (acc) CU(cudaMemcpy(dy, y0, (size_t)(T * N) * 4, cudaMemcpyHostToDevice));
    OK(dsv3_cuda_gemm_fp8(ctx, dy, dx, T, &w.d, acc));
    t_host(y, dy, (size_t)(T * N) * 4);
    double num = 0, den = 0, n1 = 0, n2 = 0;
    for (int64_t i = 0; i < T * N; i++) {
      const double v = (double)y[i] - (acc ? y0[i] : 0.f);
      num += (v - ref[i]) * (v - ref[i]), den += rabs[i] * rabs[i];
      n1 += (v - h1[i]) * (v - h1[i]), n2 += (v - h2[i]) * (v - h2[i]);
      if (isnan(y[i])) num = INFINITY;
    }
    const double e = sqrt(num / den);
    printf("fp8 gemm N=%lld K=%lld T=%lld%s: rel err %.3g of sum |terms| (if the weight scales were read transposed "
           "%.3g, the activation scales token-major %.3g)\n",
           (long long)N, (long long)K, (long long)T, acc ? " accumulate" : "", e, sqrt(n1 / den), sqrt(n2 / den));
    CHECK(e < 1e-3, "fp8 gemm N=%lld K=%lld T=%lld%s: rel err %.3g", (long long)N, (long long)K, (long long)T,
          acc ? " accumulate" : "", e);
  }
  /* against the float32 reference, through the dispatcher */
  float *rf = t_xmalloc((size_t)(T * N) * 4), *ra = t_xmalloc((size_t)(T * N) * 4);
  dsv3_linear(rf, x, T, &w.h);
  ref_abs(ra, &w.h, x, T);
  dsv3_cuda_fp8_gemm = 1;
  OK(dsv3_cuda_linear(ctx, dy, dx, T, &w.d, 0));
  dsv3_cuda_fp8_gemm = 0;
  t_host(y, dy, (size_t)(T * N) * 4);
  const double e = rel_abs(y, rf, ra, (size_t)(T * N));
  printf("fp8 gemm N=%lld K=%lld T=%lld: against the float32 activations %.3g of |W| |x| (bound 0.065)\n", (long long)N,
         (long long)K, (long long)T, e);
  CHECK(e < 0.065, "linear (fp8 gemm) N=%lld K=%lld T=%lld: rel err %.3g of |W| |x|", (long long)N, (long long)K,
        (long long)T, e);
  cudaFree(dx), cudaFree(dq), cudaFree(ds), cudaFree(dy);
  free(x), free(q), free(sx), free(ref), free(wf), free(xf), free(y), free(y0), free(rf), free(ra);
  free_w(&w);
}

static void test_mlp(dsv3_cuda_ctx *ctx, dsv3_dtype dt, int64_t D, int64_t I) {
  wpair w1 = make_w(dt, I, D), w2 = make_w(dt, D, I), w3 = make_w(dt, I, D);
  const int64_t toks[] = {1, 2, 3, 8, 20};
  for (size_t ti = 0; ti < 5; ti++) {
    int64_t T = toks[ti];
    float *x = t_xmalloc((size_t)(T * D) * 4), *g = t_xmalloc((size_t)(T * I) * 4), *u = t_xmalloc((size_t)(T * I) * 4);
    float *ref = t_xmalloc((size_t)(T * D) * 4), *y = t_xmalloc((size_t)(T * D) * 4);
    t_fill(x, (size_t)(T * D), 1.0f);
    dsv3_linear(g, x, T, &w1.h);
    dsv3_linear(u, x, T, &w3.h);
    dsv3_silu_mul(g, g, u, T * I);
    dsv3_linear(ref, g, T, &w2.h);
    float *dx = t_dev(x, (size_t)(T * D) * 4), *dy = t_poison((size_t)(T * D) * 4);
    const int keep = dsv3_cuda_gemv_tc, keep_h2 = dsv3_cuda_gemv_h2;
    /* tc: the tensor-core GEMVs (FP8, D and I multiples of 64, 2 (tc 2: 1) to 8 tokens); v 3: tc
     * and the packed-f16 GEMV off (the float32 GEMV at one token) */
    for (int v = 0; v <= 3; v++) {
      const int tc = v == 3 ? 0 : v;
      dsv3_cuda_gemv_tc = tc, dsv3_cuda_gemv_h2 = v == 3 ? 0 : keep_h2;
      const int tc_here = (tc && (tc == 2 || T >= 2) && T <= 8 && dt == DSV3_F8_E4M3 && D % 64 == 0 && I % 64 == 0) ||
                          (dsv3_cuda_gemv_h2 && T == 1 && dt == DSV3_F8_E4M3);
      CU(cudaMemset(dy, 0xff, (size_t)(T * D) * 4));
      OK(dsv3_cuda_mlp(ctx, dy, dx, T, &w1.d, &w2.d, &w3.d, 0));
      t_host(y, dy, (size_t)(T * D) * 4);
      double e = t_rel(y, ref, (size_t)(T * D));
      /* tc (or the packed-f16 GEMV at one token): the GEMV's 3e-3 of |W| |x| through two layers and silu */
      CHECK(e < (tc_here ? 5e-3 : T <= dsv3_cuda_gemv_max_tokens ? 3e-5 : 1.5e-2),
            "mlp %s D=%lld I=%lld T=%lld tc %d h2 %d: rel err %.3g", dt == DSV3_F8_E4M3 ? "fp8" : "bf16", (long long)D,
            (long long)I, (long long)T, tc, dsv3_cuda_gemv_h2, e);
    }
    dsv3_cuda_gemv_tc = keep, dsv3_cuda_gemv_h2 = keep_h2;
    cudaFree(dx), cudaFree(dy);
    free(x), free(g), free(u), free(ref), free(y);
  }
  free_w(&w1), free_w(&w2), free_w(&w3);
}

/* n = 100003: the scalar kernel; 100000: the 8-wide one (a multiple of 8, 16-byte aligned) */
static void test_convert(int64_t n) {
  float *x = t_xmalloc(n * 4), *back = t_xmalloc(n * 4);
  uint16_t *b = t_xmalloc(n * 2);
  t_fill(x, n, 3.0f);
  x[1] = INFINITY, x[2] = -INFINITY, x[3] = 3.4e38f, x[4] = 1e-40f, x[n - 1] = -0.0f; /* to inf, denormal */
  float *dx = t_dev(x, n * 4), *db = t_poison(n * 4);
  uint16_t *dh = t_poison(n * 2);
  OK(dsv3_cuda_f32_to_bf16(dh, dx, n, 0));
  OK(dsv3_cuda_bf16_to_f32(db, dh, n, 0));
  t_host(b, dh, n * 2);
  t_host(back, db, n * 4);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (b[i] != dsv3_f32_to_bf16(x[i]) || back[i] != dsv3_bf16_to_f32(b[i])) bad++;
  CHECK(bad == 0, "f32<->bf16 (n %lld): %lld differ", (long long)n, (long long)bad);
  cudaFree(dx), cudaFree(db), cudaFree(dh);
  free(x), free(back), free(b);
}

int main(void) {
  t_init("test_cuda_linear");
  dsv3_cuda_ctx *ctx;
  OK(dsv3_cuda_ctx_new(0, &ctx));
  test_convert(100003);
  test_convert(100000);
  /* ragged: partial 128-row and 128-column blocks, odd row counts, K not a multiple of 16
   * (scalar path), a misaligned x (scalar path) */
  const int64_t fp8[][2] = {{1, 16},   {7, 48},     {130, 272}, {257, 1040}, {576, 2048}, {2100, 7168},
                            {37, 100}, {5, 24},     {33, 192},  {3000, 1536}};
  for (size_t i = 0; i < sizeof fp8 / sizeof *fp8; i++) test_linear(ctx, DSV3_F8_E4M3, fp8[i][0], fp8[i][1], 0);
  test_linear(ctx, DSV3_F8_E4M3, 130, 272, 1);
  const int64_t bf[][2] = {{3, 8}, {130, 272}, {1000, 520}, {19, 100}, {2200, 512}};
  for (size_t i = 0; i < sizeof bf / sizeof *bf; i++) test_linear(ctx, DSV3_BF16, bf[i][0], bf[i][1], 0);
  /* the FP8 GEMM: partial 128-row blocks (592), token counts of every residue mod 4 (the
   * padded path below a multiple of 4) */
  const int64_t f8g[][3] = {{576, 2048, 77}, {1536, 7168, 65}, {256, 512, 300}, {592, 1024, 33}, {1024, 1024, 260},
                            {576, 2048, 16}, {576, 2048, 78}, {576, 2048, 79}, {576, 2048, 129}};
  for (size_t i = 0; i < sizeof f8g / sizeof *f8g; i++) test_fp8_gemm(ctx, f8g[i][0], f8g[i][1], f8g[i][2]);
  test_mlp(ctx, DSV3_F8_E4M3, 512, 1536);
  test_mlp(ctx, DSV3_F8_E4M3, 272, 144);
  test_mlp(ctx, DSV3_BF16, 256, 200);
  dsv3_cuda_ctx_free(ctx);
  return check_done("test_cuda_linear");
}
