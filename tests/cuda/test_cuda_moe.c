/* test_cuda_moe - routing against dsv3_route (sigmoid with bias and groups, softmax, bf16
 * rounding; with a shared-expert slot), the fused decode experts and the grouped prefill
 * experts against the CPU ops. */
#include "cuda_test.h"

static void test_route(const char *what, dsv3_route_params p, int64_t T, int with_bias) {
  int64_t E = p.n_experts, K = p.topk;
  float *lg = t_xmalloc((size_t)(T * E) * 4), *bias = t_xmalloc((size_t)E * 4);
  t_fill(lg, (size_t)(T * E), 2.0f);
  t_fill(bias, (size_t)E, 0.1f);
  if (p.bf16) /* the official gate output is a bf16 tensor */
    for (int64_t i = 0; i < T * E; i++) lg[i] = dsv3_bf16_to_f32(dsv3_f32_to_bf16(lg[i]));
  int32_t *ri = t_xmalloc((size_t)(T * K) * 4), *gi = t_xmalloc((size_t)(T * K) * 4);
  float *rw = t_xmalloc((size_t)(T * K) * 4), *gw = t_xmalloc((size_t)(T * K) * 4);
  for (int64_t t = 0; t < T; t++) dsv3_route(&p, lg + t * E, with_bias ? bias : NULL, ri + t * K, rw + t * K);
  float *dlg = t_dev(lg, (size_t)(T * E) * 4), *db = t_dev(bias, (size_t)E * 4), *dw = t_poison((size_t)(T * K) * 4);
  int32_t *di = t_poison((size_t)(T * K) * 4);
  OK(dsv3_cuda_route(&p, dlg, with_bias ? db : NULL, di, dw, T, 0));
  t_host(gi, di, (size_t)(T * K) * 4);
  t_host(gw, dw, (size_t)(T * K) * 4);
  int64_t badi = 0;
  double maxd = 0;
  for (int64_t i = 0; i < T * K; i++) {
    if (gi[i] != ri[i]) badi++;
    double d = fabs((double)gw[i] - rw[i]) / (fabs(rw[i]) + 1e-30);
    if (!(d <= maxd)) maxd = d;
  }
  CHECK(badi == 0, "route %s: %lld of %lld expert indices differ", what, (long long)badi, (long long)(T * K));
  CHECK(maxd < (p.bf16 ? 8e-3 : 1e-6), "route %s: weight rel diff %.3g", what, maxd);
  /* with a shared-expert slot: rows of K + 1, the same K routed slots, then expert E at 1.0 */
  int32_t *si = t_xmalloc((size_t)(T * (K + 1)) * 4), *dsi = t_poison((size_t)(T * (K + 1)) * 4);
  float *sw = t_xmalloc((size_t)(T * (K + 1)) * 4), *dsw = t_poison((size_t)(T * (K + 1)) * 4);
  OK(dsv3_cuda_route_shared(&p, dlg, with_bias ? db : NULL, dsi, dsw, T, 1, 0));
  t_host(si, dsi, (size_t)(T * (K + 1)) * 4);
  t_host(sw, dsw, (size_t)(T * (K + 1)) * 4);
  int64_t bads = 0;
  for (int64_t t = 0; t < T; t++) {
    bads += si[t * (K + 1) + K] != E || sw[t * (K + 1) + K] != 1.f;
    for (int64_t k = 0; k < K; k++)
      bads += si[t * (K + 1) + k] != gi[t * K + k] || sw[t * (K + 1) + k] != gw[t * K + k];
  }
  CHECK(bads == 0, "route %s with a shared slot: %lld of %lld slots differ", what, (long long)bads,
        (long long)(T * (K + 1)));
  /* NaN logits (a corrupt checkpoint): no agreement with the reference is asked for, but every
   * slot must still name a distinct expert in [0, E), or the expert GEMVs would read outside
   * the expert table */
  for (int64_t t = 0; t < T; t++)
    for (int64_t e = 0; e < E; e += 1 + t % 3) lg[t * E + e] = NAN;
  CU(cudaMemcpy(dlg, lg, (size_t)(T * E) * 4, cudaMemcpyHostToDevice));
  OK(dsv3_cuda_route(&p, dlg, with_bias ? db : NULL, di, dw, T, 0));
  t_host(gi, di, (size_t)(T * K) * 4);
  int64_t badn = 0;
  for (int64_t t = 0; t < T; t++)
    for (int64_t k = 0; k < K; k++) {
      const int32_t v = gi[t * K + k];
      badn += v < 0 || v >= E;
      for (int64_t j = 0; j < k; j++) badn += gi[t * K + j] == v;
    }
  CHECK(badn == 0, "route %s with NaN logits: %lld slots outside the experts or repeated", what, (long long)badn);
  cudaFree(dsi), cudaFree(dsw);
  free(si), free(sw);
  cudaFree(dlg), cudaFree(db), cudaFree(dw), cudaFree(di);
  free(lg), free(bias), free(ri), free(gi), free(rw), free(gw);
}

typedef struct {
  dsv3_wmat h1, h2, h3;
  dsv3_cuda_expert d;
} expert;

static void make_mat(dsv3_dtype dt, int64_t rows, int64_t cols, dsv3_wmat *h, const void **dd, const float **ds) {
  *h = (dsv3_wmat){dt, NULL, NULL, rows, cols};
  if (dt == DSV3_F8_E4M3) {
    int64_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    uint8_t *w = t_xmalloc((size_t)(rows * cols));
    float *s = t_xmalloc((size_t)ns * 4);
    t_fp8(w, s, rows, cols);
    h->data = w, h->scale = s;
    *dd = t_dev(w, (size_t)(rows * cols));
    *ds = t_dev(s, (size_t)ns * 4);
  } else {
    uint16_t *w = t_xmalloc((size_t)(rows * cols) * 2);
    t_bf16(w, (size_t)(rows * cols), 0.05f);
    h->data = w;
    *dd = t_dev(w, (size_t)(rows * cols) * 2);
    *ds = NULL;
  }
}

static void ref_mlp(const dsv3_wmat *w1, const dsv3_wmat *w2, const dsv3_wmat *w3, const float *x, int64_t T, float *y) {
  int64_t I = w1->rows;
  float *g = t_xmalloc((size_t)(T * I) * 4), *u = t_xmalloc((size_t)(T * I) * 4);
  dsv3_linear(g, x, T, w1);
  dsv3_linear(u, x, T, w3);
  dsv3_silu_mul(g, g, u, T * I);
  dsv3_linear(y, g, T, w2);
  free(g), free(u);
}

/* NaNs among the n floats at dev (copied into host): what a 0xff poison left unwritten */
static int64_t nan_count(float *host, const float *dev, size_t n) {
  t_host(host, dev, n * 4);
  int64_t k = 0;
  for (size_t i = 0; i < n; i++) k += isnan(host[i]);
  return k;
}

static void test_experts(dsv3_cuda_ctx *ctx, dsv3_dtype dt, int64_t E, int64_t K, int64_t D, int64_t I) {
  expert *ex = t_xmalloc((size_t)E * sizeof *ex);
  dsv3_cuda_expert *tab = t_xmalloc((size_t)E * sizeof *tab);
  for (int64_t e = 0; e < E; e++) {
    make_mat(dt, I, D, &ex[e].h1, &ex[e].d.w1, &ex[e].d.s1);
    make_mat(dt, D, I, &ex[e].h2, &ex[e].d.w2, &ex[e].d.s2);
    make_mat(dt, I, D, &ex[e].h3, &ex[e].d.w3, &ex[e].d.s3);
    tab[e] = ex[e].d;
  }
  dsv3_cuda_expert *dtab = t_dev(tab, (size_t)E * sizeof *tab);
  /* the same table with the odd experts on another rank (NULL entries) */
  dsv3_cuda_expert *half = t_xmalloc((size_t)E * sizeof *half);
  for (int64_t e = 0; e < E; e++) half[e] = e % 2 ? (dsv3_cuda_expert){0} : tab[e];
  dsv3_cuda_expert *dhalf = t_dev(half, (size_t)E * sizeof *half);
  const char *dn = dt == DSV3_F8_E4M3 ? "fp8" : "bf16";
  const int64_t toks[] = {1, 3, 5, 40, 300};
  for (size_t ti = 0; ti < 5; ti++) {
    int64_t T = toks[ti];
    float *x = t_xmalloc((size_t)(T * D) * 4), *y0 = t_xmalloc((size_t)(T * D) * 4), *ref = t_xmalloc((size_t)(T * D) * 4);
    float *ys = t_xmalloc((size_t)D * 4), *got = t_xmalloc((size_t)(T * D) * 4), *w = t_xmalloc((size_t)(T * K) * 4);
    int32_t *idx = t_xmalloc((size_t)(T * K) * 4);
    t_fill(x, (size_t)(T * D), 1.0f);
    t_fill(y0, (size_t)(T * D), 1.0f);
    for (int64_t t = 0; t < T; t++) /* K distinct experts per token, weights in (0, 1) */
      for (int64_t k = 0; k < K; k++) {
        int32_t e;
        int dup;
        do {
          e = (int32_t)(t_next() % (uint64_t)E);
          dup = 0;
          for (int64_t j = 0; j < k; j++) dup |= idx[t * K + j] == e;
        } while (dup);
        idx[t * K + k] = e;
        w[t * K + k] = (float)t_unit();
      }
    /* ref: y0 + every pair's expert; ref_even: y0 + the pairs of even experts (the odd ones
     * belong to another rank) */
    float *ref_even = t_xmalloc((size_t)(T * D) * 4);
    memcpy(ref, y0, (size_t)(T * D) * 4);
    memcpy(ref_even, y0, (size_t)(T * D) * 4);
    for (int64_t t = 0; t < T; t++)
      for (int64_t k = 0; k < K; k++) {
        const expert *e = &ex[idx[t * K + k]];
        ref_mlp(&e->h1, &e->h2, &e->h3, x + t * D, 1, ys);
        for (int64_t d = 0; d < D; d++) ref[t * D + d] += w[t * K + k] * ys[d];
        if (idx[t * K + k] % 2 == 0)
          for (int64_t d = 0; d < D; d++) ref_even[t * D + d] += w[t * K + k] * ys[d];
      }
    float *dx = t_dev(x, (size_t)(T * D) * 4), *dy = t_dev(NULL, (size_t)(T * D) * 4), *dw = t_dev(w, (size_t)(T * K) * 4);
    int32_t *di = t_dev(idx, (size_t)(T * K) * 4);
    /* tc: the GEMVs through the tensor-core variant (FP8, D and I multiples of 64): the GEMV's
     * 3e-3 of |W| |x| (test_cuda_linear) through two layers and silu: 5e-3 */
    const int keep_tc = dsv3_cuda_gemv_tc, keep_h2 = dsv3_cuda_gemv_h2;
    const int tc_fits = dt == DSV3_F8_E4M3 && D % 64 == 0 && I % 64 == 0;
    for (int v = 0; v <= 3 && T * K < 65536; v++) { /* tc 0 off, 1 from 2 tokens, 2 from 1; v 3: tc and h2 off */
      const int tc = v == 3 ? 0 : v;
      dsv3_cuda_gemv_tc = tc, dsv3_cuda_gemv_h2 = v == 3 ? 0 : keep_h2;
      /* FP8 off the tensor cores: the packed-f16 GEMV (dsv3_cuda_gemv_h2), the same 5e-3 */
      const double tol = (tc && (tc == 2 || T >= 2) && tc_fits) || (dsv3_cuda_gemv_h2 && dt == DSV3_F8_E4M3) ? 5e-3 : 3e-5;
      CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_moe_decode(ctx, dy, dx, T, di, dw, K, dtab, dt, D, I, 1));
      t_host(got, dy, (size_t)(T * D) * 4);
      double e = t_rel(got, ref, (size_t)(T * D));
      CHECK(e < tol, "moe decode %s E=%lld K=%lld D=%lld I=%lld T=%lld tc %d h2 %d: rel err %.3g", dn, (long long)E,
            (long long)K, (long long)D, (long long)I, (long long)T, tc, dsv3_cuda_gemv_h2, e);
      /* the odd experts on another rank: their pairs add nothing */
      CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_moe_decode(ctx, dy, dx, T, di, dw, K, dhalf, dt, D, I, 1));
      t_host(got, dy, (size_t)(T * D) * 4);
      e = t_rel(got, ref_even, (size_t)(T * D));
      CHECK(e < tol, "moe decode %s, odd experts elsewhere, T=%lld tc %d h2 %d: rel err %.3g", dn, (long long)T, tc,
            dsv3_cuda_gemv_h2, e);
    }
    dsv3_cuda_gemv_tc = keep_tc, dsv3_cuda_gemv_h2 = keep_h2;
    int64_t most = 0; /* tokens of the busiest expert */
    for (int64_t e = 0; e < E; e++) {
      int64_t c = 0;
      for (int64_t p = 0; p < T * K; p++) c += idx[p] == e;
      if (c > most) most = c;
    }
    /* prefill: GEMV per expert group, then with a low GEMV limit the bf16 GEMM path */
    const int lims[2] = {16, 1};
    int keep = dsv3_cuda_gemv_max_tokens, keep_mma = dsv3_cuda_mma_max_tokens;
    for (int li = 0; li < 2; li++) {
      dsv3_cuda_gemv_max_tokens = lims[li];
      dsv3_cuda_mma_max_tokens = li ? 0 : keep_mma; /* li = 1: the dequantise + cuBLAS path */
      CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_moe_prefill(ctx, dy, dx, T, di, dw, K, tab, E, dt, D, I, 1));
      t_host(got, dy, (size_t)(T * D) * 4);
      double e = t_rel(got, ref, (size_t)(T * D));
      /* an expert with more than 64 tokens goes to the bf16 GEMM path even with the GEMV limit 16 */
      /* experts of up to 8 tokens go through the MLP's tensor-core GEMVs where they fit (5e-3) */
      CHECK(e < (li || most > 64                                                         ? 1e-2
                 : (dsv3_cuda_gemv_tc && tc_fits) || (dsv3_cuda_gemv_h2 && dt == DSV3_F8_E4M3) ? 5e-3
                                                                                               : 3e-5),
            "moe prefill %s (gemv limit %d) E=%lld K=%lld T=%lld: rel err %.3g", dn, lims[li],
            (long long)E, (long long)K, (long long)T, e);
      /* overwrite mode leaves nothing of the poison */
      CU(cudaMemset(dy, 0xff, (size_t)(T * D) * 4));
      OK(dsv3_cuda_moe_prefill(ctx, dy, dx, T, di, dw, K, tab, E, dt, D, I, 0));
      int64_t nan = nan_count(got, dy, (size_t)(T * D));
      CHECK(nan == 0, "moe prefill %s overwrite: %lld unwritten values", dn, (long long)nan);
    }
    dsv3_cuda_gemv_max_tokens = keep;
    dsv3_cuda_mma_max_tokens = keep_mma;
    /* the grouped tensor-core path (bf16 activations as the GEMM path, and the experts' outputs
     * rounded to bf16: 2^-9 more per term of the sum, the same 1e-2): accumulate, overwrite
     * (nothing of the poison left), and with the odd experts on another rank */
    if (dsv3_cuda_moe_grouped_ok(dt, D, I)) {
      CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_moe_grouped(ctx, dy, dx, T, di, dw, K, dtab, E, dt, D, I, 1));
      t_host(got, dy, (size_t)(T * D) * 4);
      double eg = t_rel(got, ref, (size_t)(T * D));
      printf("moe grouped %s E=%lld K=%lld D=%lld I=%lld T=%lld: rel err %.3g\n", dn, (long long)E, (long long)K,
             (long long)D, (long long)I, (long long)T, eg);
      CHECK(eg < 1e-2, "moe grouped %s E=%lld K=%lld D=%lld I=%lld T=%lld: rel err %.3g", dn, (long long)E, (long long)K,
            (long long)D, (long long)I, (long long)T, eg);
      CU(cudaMemset(dy, 0xff, (size_t)(T * D) * 4));
      OK(dsv3_cuda_moe_grouped(ctx, dy, dx, T, di, dw, K, dtab, E, dt, D, I, 0));
      int64_t nan = nan_count(got, dy, (size_t)(T * D));
      CHECK(nan == 0, "moe grouped %s overwrite T=%lld: %lld unwritten values", dn, (long long)T, (long long)nan);
      CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
      OK(dsv3_cuda_moe_grouped(ctx, dy, dx, T, di, dw, K, dhalf, E, dt, D, I, 1));
      t_host(got, dy, (size_t)(T * D) * 4);
      eg = t_rel(got, ref_even, (size_t)(T * D));
      CHECK(eg < 1e-2, "moe grouped %s, odd experts elsewhere, T=%lld: rel err %.3g", dn, (long long)T, eg);
      /* FP8 with dim and inter multiples of 64 ran the wgmma kernel on sm_90: the mma.sync one
       * too (same roundings, same bound) */
      if (dt == DSV3_F8_E4M3 && D % 64 == 0 && I % 64 == 0) {
        /* v 0: where that was the TMA loads (dims multiples of 128), the cp.async ones; v 1: the
         * mma.sync kernel; v 2: float32 expert outputs */
        for (int v = D % 128 == 0 && I % 128 == 0 ? 0 : 1; v < 3; v++) {
          const char *what = v == 2 ? "f32 outputs" : v ? "mma.sync" : "cp.async";
          if (v == 2) dsv3_cuda_moe_ys_bf16 = 0;
          else if (v) dsv3_cuda_moe_wgmma = 0;
          else dsv3_cuda_moe_tma = 0;
          CU(cudaMemcpy(dy, y0, (size_t)(T * D) * 4, cudaMemcpyHostToDevice));
          OK(dsv3_cuda_moe_grouped(ctx, dy, dx, T, di, dw, K, dtab, E, dt, D, I, 1));
          dsv3_cuda_moe_wgmma = dsv3_cuda_moe_tma = dsv3_cuda_moe_ys_bf16 = 1;
          t_host(got, dy, (size_t)(T * D) * 4);
          eg = t_rel(got, ref, (size_t)(T * D));
          printf("moe grouped (%s) %s T=%lld: rel err %.3g\n", what, dn, (long long)T, eg);
          CHECK(eg < 1e-2, "moe grouped (%s) %s E=%lld K=%lld D=%lld I=%lld T=%lld: rel err %.3g", what, dn, (long long)E,
                (long long)K, (long long)D, (long long)I, (long long)T, eg);
        }
      }
    } else {
      CHECK(dsv3_cuda_moe_grouped(ctx, dy, dx, T, di, dw, K, dtab, E, dt, D, I, 1) != 0 &&
                strstr(dsv3_error(), "multiples of 16"),
            "moe grouped %s D=%lld I=%lld: refused with one line (got: %s)", dn, (long long)D, (long long)I, dsv3_error());
    }
    cudaFree(dx), cudaFree(dy), cudaFree(dw), cudaFree(di);
    free(x), free(y0), free(ref), free(ref_even), free(ys), free(got), free(w), free(idx);
  }
  for (int64_t e = 0; e < E; e++) {
    free((void *)ex[e].h1.data), free((void *)ex[e].h2.data), free((void *)ex[e].h3.data);
    free((void *)ex[e].h1.scale), free((void *)ex[e].h2.scale), free((void *)ex[e].h3.scale);
    cudaFree((void *)tab[e].w1), cudaFree((void *)tab[e].w2), cudaFree((void *)tab[e].w3);
    cudaFree((void *)tab[e].s1), cudaFree((void *)tab[e].s2), cudaFree((void *)tab[e].s3);
  }
  cudaFree(dtab), cudaFree(dhalf);
  dsv3_cuda_moe_forget_tables(ctx); /* the next test's tables may reuse these addresses */
  free(ex), free(tab), free(half);
}

int main(void) {
  t_init("test_cuda_moe");
  dsv3_cuda_ctx *ctx;
  OK(dsv3_cuda_ctx_new(0, &ctx));
  /* DeepSeek-V3: 256 experts, 8 groups, 4 kept, top-8, sigmoid with bias, scale 2.5 */
  dsv3_route_params v3 = {256, 8, 8, 4, 1, 2.5f, 0};
  test_route("v3 sigmoid+bias", v3, 37, 1);
  v3.bf16 = 1;
  test_route("v3 sigmoid+bias bf16", v3, 37, 1);
  dsv3_route_params tiny = {8, 2, 4, 2, 1, 2.5f, 0};
  test_route("tiny", tiny, 100, 1);
  test_route("tiny no bias", tiny, 100, 0);
  dsv3_route_params sm = {64, 6, 1, 1, 0, 1.0f, 0};
  test_route("softmax", sm, 50, 0);
  dsv3_route_params sg = {160, 6, 8, 3, 0, 16.0f, 0};
  test_route("softmax groups (V2-like)", sg, 20, 0);
  test_experts(ctx, DSV3_F8_E4M3, 8, 2, 512, 256);
  test_experts(ctx, DSV3_F8_E4M3, 4, 2, 640, 384); /* TMA boxes past the last row (640 = 2.5 x 256 rows) */
  test_experts(ctx, DSV3_F8_E4M3, 16, 4, 272, 144);
  test_experts(ctx, DSV3_BF16, 8, 3, 256, 200);
  test_experts(ctx, DSV3_BF16, 6, 2, 384, 144);
  /* T = 300: ~75 tokens an expert (two 64-token tiles of the mma.sync kernel, one of the wgmma
   * kernel's 96 or 128), and ~150 (a full 128-token tile and a partial one) */
  test_experts(ctx, DSV3_F8_E4M3, 4, 1, 1024, 320);
  test_experts(ctx, DSV3_F8_E4M3, 2, 1, 1024, 320);
  dsv3_cuda_ctx_free(ctx);
  return check_done("test_cuda_moe");
}
