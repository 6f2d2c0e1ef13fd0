/* ops.c - reference ops in plain C (see ops.h): float32 activations, weights as stored. */
#include "ops.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../format/fp8.h"
#include "../../format/util.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DSV3_OPS_AVX2 1
#endif

#define B DSV3_FP8_BLOCK

static float bf16_round(float x) { return dsv3_bf16_to_f32(dsv3_f32_to_bf16(x)); }

static void fp8_row(const uint8_t *src, int64_t cols, const float *srow, float *out);
static int use_simd(void);

float dsv3_wmat_get(const dsv3_wmat *w, int64_t r, int64_t c) {
  int64_t i = r * w->cols + c;
  switch (w->dtype) {
  case DSV3_F8_E4M3: {
    int64_t nb = dsv3_ceil_div(w->cols, B);
    float s = w->scale[(r / B) * nb + c / B];
    return bf16_round(dsv3_e4m3_to_f32(((const uint8_t *)w->data)[i]) * s);
  }
  case DSV3_BF16: return dsv3_bf16_to_f32(((const uint16_t *)w->data)[i]);
  case DSV3_F16: return dsv3_f16_to_f32(((const uint16_t *)w->data)[i]);
  case DSV3_F32: return ((const float *)w->data)[i];
  default: return NAN;
  }
}

void dsv3_wmat_row(const dsv3_wmat *w, int64_t r, float *out) {
  if (w->dtype == DSV3_F8_E4M3) {
    fp8_row((const uint8_t *)w->data + r * w->cols, w->cols, w->scale + (r / B) * dsv3_ceil_div(w->cols, B), out);
    return;
  }
  size_t es = dsv3_dtype_size(w->dtype);
  dsv3_to_f32(w->dtype, (const uint8_t *)w->data + (size_t)r * (size_t)w->cols * es, out, (size_t)w->cols);
}

int dsv3_ops_simd = -1;

/* One row of an FP8 matrix, out[c] = bf16(e4m3(src[c]) * s[c / 128]), by a table per block
 * column (any CPU). */
static void fp8_row_lut(const uint8_t *src, int64_t cols, const float *srow, float *out) {
  const float *e4 = dsv3_e4m3_table();
  float tab[256];
  for (int64_t bc = 0; bc * B < cols; bc++) {
    for (int v = 0; v < 256; v++) tab[v] = bf16_round(e4[v] * srow[bc]);
    int64_t c0 = bc * B, c1 = c0 + B < cols ? c0 + B : cols;
    for (int64_t c = c0; c < c1; c++) out[c] = tab[src[c]];
  }
}

#ifdef DSV3_OPS_AVX2
/* The same values with AVX2 + F16C, 8 at a time and exactly: the e4m3 bits moved into an f16
 * (sign to bit 15, exponent and mantissa shifted left by 7) are e4m3 * 2^-8 for normal and
 * subnormal codes alike; vcvtph2ps makes that an exact float; times (s * 2^8) is one rounding
 * of the exact product e4m3 * s, as in the reference; then bf16 round-to-nearest-even by
 * integer arithmetic.  NaN codes (S.1111.111) and scales whose * 2^8 could overflow go to the
 * table path.  Here: 8 codes sign-extended to 16 bits (no NaN code among them) times the scale:
 * shifted left by 7, the sign lands on bits 15 and 14, and clearing bit 14 leaves the f16. */
__attribute__((target("avx2,f16c"))) static inline __m256 fp8x8_avx2(__m128i b, __m256 s8) {
  __m128i h = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16((short)0xbfff));
  __m256i u = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtph_ps(h), s8));
  u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
  return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xffff0000u)));
}
/* 8 codes at p, sign-extended to 16 bits (fp8x8_avx2's input) */
__attribute__((target("avx2,f16c"))) static inline __m128i fp8x8_load(const uint8_t *p) {
  return _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
}
/* 1 when one of the n (8, or a multiple of 32) codes at p is a NaN code (S.1111.111) */
__attribute__((target("avx2,f16c"))) static inline int fp8_has_nan(const uint8_t *p, int n) {
  if (n >= 32) {
    const __m256i m7f = _mm256_set1_epi8(0x7f);
    __m256i any = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < n; k += 32) {
      const __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + k)), m7f);
      any = _mm256_or_si256(any, _mm256_cmpeq_epi8(v, m7f));
    }
    return _mm256_movemask_epi8(any) != 0;
  }
  const __m128i m7f = _mm_set1_epi8(0x7f);
  return _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(_mm_loadl_epi64((const __m128i *)p), m7f), m7f)) & 0xff;
}

__attribute__((target("avx2,f16c"))) static void fp8_row_avx2(const uint8_t *src, int64_t cols, const float *srow,
                                                              float *out) {
  for (int64_t bc = 0; bc * B < cols; bc++) {
    const int64_t c0 = bc * B, c1 = c0 + B < cols ? c0 + B : cols;
    const float sc = srow[bc];
    if (!(fabsf(sc) < 0x1p100f)) { /* inf, NaN or huge: the table path decides */
      fp8_row_lut(src + c0, c1 - c0, &sc, out + c0);
      continue;
    }
    const __m256 s8 = _mm256_set1_ps(sc * 256.0f);
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      if (((c - c0) & 31) == 0 && c + 32 <= c1 && !fp8_has_nan(src + c, 32)) { /* 32 codes, none NaN */
        for (int k = 0; k < 32; k += 8) _mm256_storeu_ps(out + c + k, fp8x8_avx2(fp8x8_load(src + c + k), s8));
        c += 24;
        continue;
      }
      if (fp8_has_nan(src + c, 8)) { /* a NaN code among the 8 */
        fp8_row_lut(src + c, 8, &sc, out + c);
        continue;
      }
      _mm256_storeu_ps(out + c, fp8x8_avx2(fp8x8_load(src + c), s8));
    }
    if (c < c1) fp8_row_lut(src + c, c1 - c, &sc, out + c);
  }
}
#endif

static int use_simd(void) {
#ifdef DSV3_OPS_AVX2
  if (dsv3_ops_simd < 0) dsv3_ops_simd = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return dsv3_ops_simd > 0;
#else
  return 0;
#endif
}

/* row of an FP8 matrix whose block row of scales is srow */
static void fp8_row(const uint8_t *src, int64_t cols, const float *srow, float *out) {
#ifdef DSV3_OPS_AVX2
  if (use_simd()) {
    fp8_row_avx2(src, cols, srow, out);
    return;
  }
#endif
  fp8_row_lut(src, cols, srow, out);
}

/* Every dot below keeps 16 partial sums: 8 lanes for the even groups of 8 products (i / 8 even)
 * and 8 for the odd ones, each summed in index order; then the odd lanes are added to the even
 * ones and the 8 results summed in this order, then the tail.  Two independent chains let the
 * AVX2 paths issue an add every 2 cycles instead of every 4 (their latency). */
static inline float sum8(const float *s) { return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])); }
static inline float sum16(const float *s0, const float *s1) {
  float s[8];
  for (int k = 0; k < 8; k++) s[k] = s0[k] + s1[k];
  return sum8(s);
}

/* 16-way unrolled dot product (vectorises without -ffast-math). */
static float dot(const float *a, const float *b, int64_t n) {
  float s[2][8] = {{0}};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[(i >> 3) & 1][k] += a[i + k] * b[i + k];
  float t = sum16(s[0], s[1]);
  for (; i < n; i++) t += a[i] * b[i];
  return t;
}

#ifdef DSV3_OPS_AVX2
/* an AVX accumulator pair's sum as sum16 makes it */
__attribute__((target("avx2"))) static inline float hsum16(__m256 a0, __m256 a1) {
  float s[8];
  _mm256_storeu_ps(s, _mm256_add_ps(a0, a1));
  return sum8(s);
}
/* dot() with its 16 partial sums in two AVX registers: the same additions in the same order, so
 * the same result bit for bit (no FMA: target avx2 alone, nothing to contract into). */
__attribute__((target("avx2"))) static float dot_avx2(const float *a, const float *b, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
  }
  if (i + 8 <= n) a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i))), i += 8;
  float t = hsum16(a0, a1);
  for (; i < n; i++) t += a[i] * b[i];
  return t;
}

/* dot(a, FP8 row) for one token: the row's values as fp8_row_avx2 makes them, consumed 8 at a
 * time by the same sum as dot_avx2 (the 8-chunks never straddle a 128-column block), so the
 * result equals fp8_row then dot, bit for bit, without writing the row out.  A whole 128-block
 * without NaN codes and with a plain scale takes the tight loop (its 16 groups alternate between
 * the two accumulators, starting with the even one: 128 / 8 is even). */
__attribute__((target("avx2,f16c"))) static float dot_fp8_avx2(const float *a, const uint8_t *src, const float *srow,
                                                               int64_t n) {
  const float *e4 = dsv3_e4m3_table();
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (int64_t bc = 0; bc * B < n; bc++) {
    const int64_t c1 = bc * B + B < n ? bc * B + B : n;
    const float sc = srow[bc];
    const int plain = fabsf(sc) < 0x1p100f;
    const __m256 s8 = _mm256_set1_ps(sc * 256.0f);
    i = bc * B;
    if (plain && c1 - i == B && !fp8_has_nan(src + i, B)) {
      for (int k = 0; k < B; k += 16) {
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i + k), fp8x8_avx2(fp8x8_load(src + i + k), s8)));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(a + i + k + 8), fp8x8_avx2(fp8x8_load(src + i + k + 8), s8)));
      }
      i += B;
      continue;
    }
    for (; i + 8 <= c1; i += 8) {
      __m256 wv;
      if (!plain || fp8_has_nan(src + i, 8)) { /* the reference's values, one by one */
        float tmp[8];
        for (int k = 0; k < 8; k++) tmp[k] = bf16_round(e4[src[i + k]] * sc);
        wv = _mm256_loadu_ps(tmp);
      } else {
        wv = fp8x8_avx2(fp8x8_load(src + i), s8);
      }
      const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(a + i), wv);
      if ((i >> 3) & 1) a1 = _mm256_add_ps(a1, p);
      else a0 = _mm256_add_ps(a0, p);
    }
  }
  float t = hsum16(a0, a1);
  for (; i < n; i++) t += a[i] * bf16_round(e4[src[i]] * srow[i / B]);
  return t;
}

/* 8 bf16 values widened to float (exact) */
__attribute__((target("avx2"))) static inline __m256 bf16x8(const uint16_t *w) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w)), 16));
}
/* dot(a, bf16 row w): the row widened 8 at a time (exact) inside the same sum as dot_avx2 */
__attribute__((target("avx2"))) static float dot_bf16_avx2(const float *a, const uint16_t *w, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i), bf16x8(w + i)));
    a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), bf16x8(w + i + 8)));
  }
  if (i + 8 <= n) a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i), bf16x8(w + i))), i += 8;
  float t = hsum16(a0, a1);
  for (; i < n; i++) t += a[i] * dsv3_bf16_to_f32(w[i]);
  return t;
}
#endif

static float dot_any(const float *a, const float *b, int64_t n) {
#ifdef DSV3_OPS_AVX2
  if (use_simd()) return dot_avx2(a, b, n);
#endif
  return dot(a, b, n);
}

typedef struct {
  float *y;
  const float *x;
  int64_t ntok;
  const dsv3_wmat *w;
  int64_t rows_per_task;
} lin_ctx;

static int lin_task(void *vctx, size_t task, int thread) {
  (void)thread;
  lin_ctx *c = vctx;
  const dsv3_wmat *w = c->w;
  int64_t r0 = (int64_t)task * c->rows_per_task, r1 = r0 + c->rows_per_task;
  if (r1 > w->rows) r1 = w->rows;
  float *row = dsv3_xmalloc((size_t)w->cols * sizeof(float));
  float *tab = NULL;
  int64_t nb = dsv3_ceil_div(w->cols, B), tab_br = -1;
  if (w->dtype == DSV3_F8_E4M3 && !use_simd()) tab = dsv3_xmalloc((size_t)nb * 256 * sizeof(float));
  const float *e4 = dsv3_e4m3_table();
  for (int64_t r = r0; r < r1; r++) {
    if (tab) {
      /* per 128-row block: one table per block column of bf16(e4m3(v) * scale), then each
       * row decodes by lookup (the official weight_dequant's values, exactly) */
      if (r / B != tab_br) {
        tab_br = r / B;
        for (int64_t bc = 0; bc < nb; bc++) {
          float sc = w->scale[tab_br * nb + bc];
          for (int v = 0; v < 256; v++) tab[bc * 256 + v] = bf16_round(e4[v] * sc);
        }
      }
      const uint8_t *src = (const uint8_t *)w->data + r * w->cols;
      for (int64_t col = 0; col < w->cols; col++) row[col] = tab[(col / B) * 256 + src[col]];
    } else {
#ifdef DSV3_OPS_AVX2
      if (w->dtype == DSV3_F8_E4M3 && c->ntok == 1 && use_simd()) { /* decode: straight from the FP8 row */
        c->y[r] = dot_fp8_avx2(c->x, (const uint8_t *)w->data + r * w->cols, w->scale + (r / B) * nb, w->cols);
        continue;
      }
      if (w->dtype == DSV3_BF16 && use_simd()) { /* straight from the bf16 row: one pass less */
        const uint16_t *wr = (const uint16_t *)w->data + r * w->cols;
        for (int64_t t = 0; t < c->ntok; t++) c->y[t * w->rows + r] = dot_bf16_avx2(c->x + t * w->cols, wr, w->cols);
        continue;
      }
#endif
      dsv3_wmat_row(w, r, row);
    }
    for (int64_t t = 0; t < c->ntok; t++) c->y[t * w->rows + r] = dot_any(c->x + t * w->cols, row, w->cols);
  }
  free(tab);
  free(row);
  return 0;
}

void dsv3_linear(float *y, const float *x, int64_t ntok, const dsv3_wmat *w) {
  /* tasks of whole 128-row blocks share one set of FP8 tables; split finer when there are
   * few blocks, so every core has work */
  int64_t per = B;
  int nc = dsv3_num_cpus();
  while (per > 8 && dsv3_ceil_div(w->rows, per) < 4 * nc) per /= 2;
  size_t ntask = (size_t)dsv3_ceil_div(w->rows, per);
  lin_ctx c = {y, x, ntok, w, per};
  int threads = w->rows * w->cols * (ntok < 4 ? ntok : 4) < (1 << 16) ? 1 : 0;
  dsv3_parallel_for(ntask, threads, lin_task, &c);
}

void dsv3_rmsnorm(float *out, const float *x, const void *w, dsv3_dtype wdt, int64_t ntok, int64_t dim, float eps) {
  float *wf = dsv3_xmalloc((size_t)dim * sizeof(float));
  dsv3_to_f32(wdt, w, wf, (size_t)dim);
  for (int64_t t = 0; t < ntok; t++) {
    const float *xi = x + t * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; i++) ss += (double)xi[i] * xi[i];
    float r = (float)(1.0 / sqrt(ss / (double)dim + eps));
    for (int64_t i = 0; i < dim; i++) out[t * dim + i] = xi[i] * r * wf[i];
  }
  free(wf);
}

void dsv3_embed(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt, int64_t dim) {
  size_t es = dsv3_dtype_size(edt);
  for (int64_t t = 0; t < ntok; t++)
    dsv3_to_f32(edt, (const uint8_t *)E + (size_t)ids[t] * (size_t)dim * es, out + t * dim, (size_t)dim);
}

void dsv3_rope_tables(const dsv3_rope_params *p, float *cos_t, float *sin_t) {
  int64_t half = p->rope_dim / 2, dim = p->rope_dim;
  float *freqs = dsv3_xmalloc((size_t)half * sizeof(float));
  for (int64_t i = 0; i < half; i++) freqs[i] = (float)(1.0 / pow(p->theta, (double)(2 * i) / (double)dim));
  if (p->factor > 1) {
    /* YaRN, as precompute_freqs_cis in the official model.py (which enables it when its
     * max_seq_len exceeds original_seq_len: the caller decides, by passing factor > 1) */
    double base = p->theta, osl = (double)p->original_seq_len;
#define CORR_DIM(rot) ((double)dim * log(osl / ((rot) * 2 * M_PI)) / (2 * log(base)))
    double low = floor(CORR_DIM(p->beta_fast)), high = ceil(CORR_DIM(p->beta_slow));
#undef CORR_DIM
    if (low < 0) low = 0;
    if (high > dim - 1) high = (double)(dim - 1);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; i++) {
      float ramp = (float)(((double)i - low) / (high - low));
      ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
      float smooth = 1 - ramp;
      freqs[i] = freqs[i] / (float)p->factor * (1 - smooth) + freqs[i] * smooth;
    }
  }
  for (int64_t t = 0; t < p->max_seq_len; t++)
    for (int64_t i = 0; i < half; i++) {
      float a = (float)t * freqs[i];
      cos_t[t * half + i] = cosf(a);
      sin_t[t * half + i] = sinf(a);
    }
  free(freqs);
}

void dsv3_rope_apply(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t, int64_t pos) {
  int64_t half = rope_dim / 2;
  const float *c = cos_t + pos * half, *s = sin_t + pos * half;
  for (int64_t i = 0; i < half; i++) {
    float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c[i] - b * s[i];
    x[2 * i + 1] = a * s[i] + b * c[i];
  }
}

void dsv3_silu_mul(float *out, const float *g, const float *u, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void dsv3_softmax(float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - m);
    s += x[i];
  }
  for (int64_t i = 0; i < n; i++) x[i] = (float)(x[i] / s);
}

void dsv3_route(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx, float *weight) {
  int64_t E = p->n_experts, G = p->n_groups > 0 ? p->n_groups : 1, per = E / G;
  float *orig = dsv3_xmalloc((size_t)E * sizeof(float)), *sel = dsv3_xmalloc((size_t)E * sizeof(float));
  memcpy(orig, logits, (size_t)E * sizeof(float));
  if (p->sigmoid) {
    for (int64_t e = 0; e < E; e++) orig[e] = 1.0f / (1.0f + expf(-orig[e]));
    if (p->bf16) /* sigmoid of a bf16 tensor is bf16; softmax is taken in float32 */
      for (int64_t e = 0; e < E; e++) orig[e] = bf16_round(orig[e]);
  } else {
    dsv3_softmax(orig, E);
  }
  for (int64_t e = 0; e < E; e++) sel[e] = orig[e] + (bias ? bias[e] : 0.0f);
  if (G > 1) {
    /* group score: sum of the top-2 with a bias, the max without; keep the top groups */
    float *gs = dsv3_xmalloc((size_t)G * sizeof(float));
    for (int64_t g = 0; g < G; g++) {
      float a = -INFINITY, b = -INFINITY;
      for (int64_t e = g * per; e < (g + 1) * per; e++) {
        if (sel[e] > a) { b = a; a = sel[e]; }
        else if (sel[e] > b) b = sel[e];
      }
      gs[g] = bias ? a + (per > 1 ? b : 0) : a;
    }
    char *keep = dsv3_xcalloc((size_t)G, 1);
    for (int64_t k = 0; k < p->topk_groups; k++) {
      int64_t best = -1;
      for (int64_t g = 0; g < G; g++)
        if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
      keep[best] = 1;
    }
    for (int64_t g = 0; g < G; g++)
      if (!keep[g])
        for (int64_t e = g * per; e < (g + 1) * per; e++) sel[e] = -INFINITY;
    free(gs);
    free(keep);
  }
  /* top-k by selection score; ties go to the lower index, as torch.topk on CPU/GPU mostly does */
  char *used = dsv3_xcalloc((size_t)E, 1);
  double sum = 0;
  for (int64_t k = 0; k < p->topk; k++) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; e++)
      if (!used[e] && (best < 0 || sel[e] > sel[best])) best = e;
    used[best] = 1;
    idx[k] = (int32_t)best;
    weight[k] = orig[best];
    sum += orig[best];
  }
  if (p->bf16) { /* bf16 tensors: the sum, the division, the scaling each round */
    float s = 0;
    for (int64_t k = 0; k < p->topk; k++) s = bf16_round(s + weight[k]);
    for (int64_t k = 0; k < p->topk; k++) {
      if (p->sigmoid) weight[k] = bf16_round(weight[k] / s);
      weight[k] = bf16_round(weight[k] * p->route_scale);
    }
  } else {
    for (int64_t k = 0; k < p->topk; k++) {
      if (p->sigmoid) weight[k] = (float)(weight[k] / sum);
      weight[k] *= p->route_scale;
    }
  }
  free(used);
  free(orig);
  free(sel);
}
