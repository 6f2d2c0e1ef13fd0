/* fp8.c: dequantisation of every FP8 weight of models/dsv3-tiny against the scalar formula of
 * the official weight_dequant (float32(e4m3) * scale in float32, then RNE), partial edge blocks
 * and row ranges included; quantisation against the scalar act_quant formula on synthetic
 * blocks (zeros, NaN, tiny amax, partial blocks, every input dtype, ue8m0) with its error bound;
 * and FP8 -> BF16 -> FP8 on every FP8 weight of the tiny model: bytes and scales compared with
 * the originals, and the requantised scale explained exactly. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "fp8.h"
#include "names.h"
#include "util.h"

static uint16_t ref_round(dsv3_dtype dt, float x, float *f32) {
  if (dt == DSV3_BF16) return dsv3_f32_to_bf16(x);
  if (dt == DSV3_F16) return dsv3_f32_to_f16(x);
  *f32 = x;
  return 0;
}

/* Dequantize rows [r0, r0+n) and compare with the scalar formula; returns mismatches. */
static long dequant_vs_scalar(const uint8_t *w, const float *s, int64_t M, int64_t N, int64_t r0, int64_t n,
                              dsv3_dtype dt) {
  int64_t nb = dsv3_ceil_div(N, 128), rows = r0 + n <= M ? n : M - r0;
  size_t es = dsv3_dtype_size(dt);
  uint8_t *out = malloc((size_t)(rows * N) * es + 1);
  dsv3_fp8_dequant_rows(w, s, M, N, r0, n, dt, out);
  long bad = 0;
  for (int64_t r = r0; r < r0 + rows; r++)
    for (int64_t c = 0; c < N; c++) {
      float x = dsv3_e4m3_to_f32(w[r * N + c]) * s[(r / 128) * nb + c / 128], f = 0;
      uint16_t h = ref_round(dt, x, &f);
      size_t o = (size_t)((r - r0) * N + c);
      if (es == 2 ? ((uint16_t *)out)[o] != h : memcmp(&((float *)out)[o], &f, 4) != 0) bad++;
    }
  free(out);
  return bad;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static float pow2_at_least(float s) {
  if (!isfinite(s) || !(s > 0)) return s;
  float p = 1.0f;
  while (p < s) p *= 2.0f;
  while (p * 0.5f >= s) p *= 0.5f;
  return p;
}

/* Quantize an [M, N] matrix given as float32 values `xf`, stored as `dt`, and compare with the
 * scalar act_quant formula block by block. */
static void quant_case(const float *xf, int64_t M, int64_t N, dsv3_dtype dt, int ue8m0, const char *what) {
  size_t es = dsv3_dtype_size(dt);
  int64_t nb = dsv3_ceil_div(N, 128), mb = dsv3_ceil_div(M, 128);
  void *x = malloc((size_t)(M * N) * es);
  float *xv = malloc((size_t)(M * N) * 4); /* the value as stored */
  for (int64_t i = 0; i < M * N; i++) {
    if (dt == DSV3_BF16) ((uint16_t *)x)[i] = dsv3_f32_to_bf16(xf[i]), xv[i] = dsv3_bf16_to_f32(((uint16_t *)x)[i]);
    else if (dt == DSV3_F16) ((uint16_t *)x)[i] = dsv3_f32_to_f16(xf[i]), xv[i] = dsv3_f16_to_f32(((uint16_t *)x)[i]);
    else ((float *)x)[i] = xf[i], xv[i] = xf[i];
  }
  uint8_t *q = malloc((size_t)(M * N)), *q2 = malloc((size_t)(M * N));
  float *s = malloc((size_t)(mb * nb) * 4);
  dsv3_fp8_quant_rows(x, dt, M, N, 0, M, ue8m0, q, s);
  long bad_s = 0, bad_q = 0, bad_err = 0;
  for (int64_t br = 0; br < mb; br++)
    for (int64_t bc = 0; bc < nb; bc++) {
      float amax = 0;
      for (int64_t r = br * 128; r < M && r < br * 128 + 128; r++)
        for (int64_t c = bc * 128; c < N && c < bc * 128 + 128; c++)
          if (!isnan(xv[r * N + c]) && fabsf(xv[r * N + c]) > amax) amax = fabsf(xv[r * N + c]);
      float sc = fmaxf(amax, 1e-4f) / 448.0f;
      if (ue8m0) sc = pow2_at_least(sc);
      if (memcmp(&sc, &s[br * nb + bc], 4) != 0) bad_s++;
      for (int64_t r = br * 128; r < M && r < br * 128 + 128; r++)
        for (int64_t c = bc * 128; c < N && c < bc * 128 + 128; c++) {
          float v = xv[r * N + c];
          if (q[r * N + c] != dsv3_f32_to_e4m3(v / sc)) bad_q++;
          if (isnan(v)) {
            if ((q[r * N + c] & 0x7f) != 0x7f) bad_err++;
            continue;
          }
          /* e4m3: 3 mantissa bits (relative error <= 2^-4 after RNE), subnormal step 2^-9 */
          float back = dsv3_e4m3_to_f32(q[r * N + c]) * sc;
          if (fabsf(back - v) > fmaxf(fabsf(v) * 0x1p-4f, sc * 0x1p-10f) * 1.000001f) bad_err++;
        }
    }
  CHECK(bad_s == 0 && bad_q == 0 && bad_err == 0, "%s %s %lldx%lld%s: %ld scales, %ld codes differ from act_quant, %ld past the bound",
        what, dsv3_dtype_name(dt), (long long)M, (long long)N, ue8m0 ? " ue8m0" : "", bad_s, bad_q, bad_err);
  /* with the same scales given, the same codes */
  dsv3_fp8_quant_rows_given(x, dt, M, N, 0, M, s, q2);
  CHECK(memcmp(q, q2, (size_t)(M * N)) == 0, "%s: quant_rows_given differs", what);
  /* a middle range of whole block rows, and a range running past M */
  if (M > 128) {
    int64_t n = M - 128 >= 128 ? 128 : M - 128;
    memset(q2, 0, (size_t)(M * N));
    float s2[64];
    if (nb <= 64) {
      dsv3_fp8_quant_rows(x, dt, M, N, 128, n + (M > 256 ? 0 : 1000), ue8m0, q2, s2);
      CHECK(memcmp(q + 128 * N, q2, (size_t)(n * N)) == 0 && memcmp(s + nb, s2, (size_t)nb * 4) == 0,
            "%s: rows from 128 differ", what);
    }
  }
  free(x), free(xv), free(q), free(q2), free(s);
}

static void synthetic(void) {
  static const int64_t shapes[][2] = {{1, 1}, {128, 128}, {200, 300}, {129, 127}, {300, 1}, {256, 384}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    int64_t M = shapes[k][0], N = shapes[k][1];
    float *xf = malloc((size_t)(M * N) * 4);
    for (int64_t i = 0; i < M * N; i++) {
      int64_t r = i / N, c = i % N, blk = (r / 128) * 7 + c / 128;
      double mag = blk % 4 == 1 ? 1e-7 : blk % 4 == 2 ? 3e3 : 1e-2; /* amax below the 1e-4 clamp, big, normal */
      xf[i] = (float)((urand() * 2 - 1) * mag * exp(urand() * 6 - 3)); /* |x| < 6.1e4: finite in F16 */
    }
    if (M * N > 2) xf[M * N / 2] = NAN, xf[1] = -0.0f;
    if (M >= 128 && N >= 128)
      for (int64_t r = 0; r < 128; r++) xf[r * N + 5] = 0; /* a column of zeros */
    static const dsv3_dtype dts[] = {DSV3_F32, DSV3_BF16, DSV3_F16};
    for (int d = 0; d < 3; d++)
      for (int u = 0; u < 2; u++) quant_case(xf, M, N, dts[d], u, "synthetic");
    /* an all-zero matrix: scale 1e-4/448, codes 0 */
    memset(xf, 0, (size_t)(M * N) * 4);
    quant_case(xf, M, N, DSV3_F32, 0, "zeros");
    free(xf);
  }
}

int main(void) {
  const char *tiny = check_env("DSV3_TINY");
  synthetic();
  dsv3_ckpt *ck;
  CHECK(dsv3_ckpt_open(tiny, &ck) == 0, "open tiny: %s", dsv3_error());
  if (!ck) return check_done("ckpt_fp8");
  long weights = 0, partial = 0, deq_bad = 0, blocks = 0;
  long rt_bytes = 0, rt_scales = 0, rt_explained = 0, rt_given = 0, f32_bytes = 0, f32_scales = 0, s_bf16_exact = 0;
  double max_rel = 0;
  for (size_t i = 0; i < dsv3_ckpt_count(ck); i++) {
    const dsv3_tensor *w = dsv3_ckpt_tensor(ck, i, NULL);
    if (w->dtype != DSV3_F8_E4M3) continue;
    char sn[1100];
    dsv3_name_scale_of(w->name, sn, sizeof sn);
    const dsv3_tensor *st = dsv3_ckpt_find(ck, sn, -1, NULL);
    CHECK(st && st->dtype == DSV3_F32 && w->ndim == 2, "%s: scale", w->name);
    if (!st || w->ndim != 2) continue;
    int64_t M = w->shape[0], N = w->shape[1], mb = dsv3_ceil_div(M, 128), nb = dsv3_ceil_div(N, 128);
    CHECK(st->shape[0] == mb && st->shape[1] == nb, "%s: scale shape", w->name);
    const uint8_t *q = w->data;
    const float *s = st->data;
    weights++;
    partial += (M % 128 || N % 128);
    /* dequantisation, whole and in ranges that cut blocks */
    deq_bad += dequant_vs_scalar(q, s, M, N, 0, M, DSV3_BF16);
    deq_bad += dequant_vs_scalar(q, s, M, N, 0, M, DSV3_F16);
    deq_bad += dequant_vs_scalar(q, s, M, N, 0, M, DSV3_F32);
    deq_bad += dequant_vs_scalar(q, s, M, N, M > 5 ? 5 : 0, 200, DSV3_BF16);
    deq_bad += dequant_vs_scalar(q, s, M, N, M - 1, 10, DSV3_BF16);

    /* FP8 -> BF16 -> FP8 */
    uint16_t *bf = malloc((size_t)(M * N) * 2);
    float *f32 = malloc((size_t)(M * N) * 4);
    uint8_t *q2 = malloc((size_t)(M * N));
    float *s2 = malloc((size_t)(mb * nb) * 4);
    dsv3_fp8_dequant_rows(q, s, M, N, 0, M, DSV3_BF16, bf);
    dsv3_fp8_quant_rows_given(bf, DSV3_BF16, M, N, 0, M, s, q2);
    rt_given += memcmp(q, q2, (size_t)(M * N)) == 0;
    dsv3_fp8_quant_rows(bf, DSV3_BF16, M, N, 0, M, 0, q2, s2);
    for (int64_t br = 0; br < mb; br++)
      for (int64_t bc = 0; bc < nb; bc++) {
        blocks++;
        int same = 1;
        float qmax = 0;
        for (int64_t r = br * 128; r < M && r < br * 128 + 128; r++)
          for (int64_t c = bc * 128; c < N && c < bc * 128 + 128; c++) {
            same &= q[r * N + c] == q2[r * N + c];
            qmax = fmaxf(qmax, fabsf(dsv3_e4m3_to_f32(q[r * N + c])));
          }
        rt_bytes += same;
        float s0 = s[br * nb + bc], s1 = s2[br * nb + bc];
        rt_scales += memcmp(&s0, &s1, 4) == 0;
        /* the requantised scale is the BF16-rounded block maximum over 448: rounding is
         * monotonic, so that maximum is bf16(qmax * s0) */
        float amax = dsv3_bf16_to_f32(dsv3_f32_to_bf16(qmax * s0)), want = fmaxf(amax, 1e-4f) / 448.0f;
        rt_explained += memcmp(&want, &s1, 4) == 0;
        float p448 = 448.0f * s0;
        s_bf16_exact += dsv3_bf16_to_f32(dsv3_f32_to_bf16(p448)) == p448;
        double rel = fabs((double)s1 - (double)s0) / (double)s0;
        if (rel > max_rel) max_rel = rel;
      }
    /* FP8 -> F32 -> FP8 for comparison */
    dsv3_fp8_dequant_rows(q, s, M, N, 0, M, DSV3_F32, f32);
    dsv3_fp8_quant_rows(f32, DSV3_F32, M, N, 0, M, 0, q2, s2);
    f32_bytes += memcmp(q, q2, (size_t)(M * N)) == 0;
    for (int64_t b = 0; b < mb * nb; b++) f32_scales += memcmp(&s[b], &s2[b], 4) == 0;
    free(bf), free(f32), free(q2), free(s2);
  }
  CHECK(weights == 136 && partial > 0, "%ld FP8 weights, %ld with partial edge blocks", weights, partial);
  CHECK(deq_bad == 0, "dequantisation: %ld elements differ from float32(e4m3) * scale rounded", deq_bad);
  CHECK(rt_given == weights, "FP8 -> BF16 -> FP8 with the original scales: %ld of %ld weights identical", rt_given,
        weights);
  CHECK(rt_bytes == blocks, "FP8 -> BF16 -> FP8: %ld of %ld blocks byte-identical", rt_bytes, blocks);
  CHECK(rt_explained == blocks, "requantised scale = max(bf16(max|q| * s0), 1e-4) / 448 in %ld of %ld blocks",
        rt_explained, blocks);
  CHECK(max_rel <= 0x1p-8, "requantised scales within 2^-8 of the originals (max %g)", max_rel);
  printf("fp8: %ld FP8 weights (%ld with partial edge blocks), %ld blocks; dequant bit-exact in BF16/F16/F32\n",
         weights, partial, blocks);
  printf("fp8: FP8 -> BF16 -> FP8 (computed scales): codes identical in %ld/%ld blocks, scale_inv identical in "
         "%ld/%ld (448 * scale_inv is a BF16 value in %ld), max relative scale change %.3g\n",
         rt_bytes, blocks, rt_scales, blocks, s_bf16_exact, max_rel);
  printf("fp8: FP8 -> BF16 -> FP8 (original scales given): %ld/%ld weights identical\n", rt_given, weights);
  printf("fp8: FP8 -> F32 -> FP8 (computed scales): %ld/%ld weights' codes identical, scale_inv identical in %ld/%ld\n",
         f32_bytes, weights, f32_scales, blocks);
  dsv3_ckpt_close(ck);
  return check_done("ckpt_fp8");
}
