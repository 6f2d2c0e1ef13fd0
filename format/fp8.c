/* fp8.c - block-scaled FP8 <-> BF16/F16/F32: see fp8.h.
 *
 * Dequantisation uses a 256-entry table per 128x128 block: T[v] = round(e4m3(v) * s).  Each
 * entry is the very product and rounding the official kernel computes, so the result is
 * bit-exact, and the inner loop becomes one table load per element (no float math).  The
 * tables of a block row are built once per call and block row (256 x ceil(N/128) entries for
 * up to 128 x N elements), so callers should pass whole 128-row blocks where they can.
 *
 * Quantisation works on one 128x128 block at a time in a float32 scratch tile: widen, amax
 * on the integer bits (NaN ignored; the order of non-negative floats is that of their bits),
 * then x / s and a branch-free float32 -> e4m3 rounding that equals dsv3_f32_to_e4m3 for every
 * float32 input (checked exhaustively over all 2^32 inputs when it was written). */
#include "fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define B DSV3_FP8_BLOCK

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* One full 128-column row segment: unrolled by 8 so the loads of the table, which no x86
 * vector unit can do for 16-bit entries, at least issue back to back. */
static inline void lookup16_block(const uint16_t *t, const uint8_t *src, uint16_t *dst) {
  for (int c = 0; c < B; c += 8) {
    uint16_t a0 = t[src[c]], a1 = t[src[c + 1]], a2 = t[src[c + 2]], a3 = t[src[c + 3]];
    uint16_t a4 = t[src[c + 4]], a5 = t[src[c + 5]], a6 = t[src[c + 6]], a7 = t[src[c + 7]];
    dst[c] = a0, dst[c + 1] = a1, dst[c + 2] = a2, dst[c + 3] = a3;
    dst[c + 4] = a4, dst[c + 5] = a5, dst[c + 6] = a6, dst[c + 7] = a7;
  }
}
static inline void lookup32_block(const float *t, const uint8_t *src, float *dst) {
  for (int c = 0; c < B; c += 8) {
    float a0 = t[src[c]], a1 = t[src[c + 1]], a2 = t[src[c + 2]], a3 = t[src[c + 3]];
    float a4 = t[src[c + 4]], a5 = t[src[c + 5]], a6 = t[src[c + 6]], a7 = t[src[c + 7]];
    dst[c] = a0, dst[c + 1] = a1, dst[c + 2] = a2, dst[c + 3] = a3;
    dst[c + 4] = a4, dst[c + 5] = a5, dst[c + 6] = a6, dst[c + 7] = a7;
  }
}

void dsv3_fp8_dequant_rows(const uint8_t *w, const float *s, int64_t M, int64_t N, int64_t r0,
                           int64_t nrows, dsv3_dtype out_dt, void *out) {
  if (N <= 0 || nrows <= 0 || r0 >= M) return;
  const float *e4 = dsv3_e4m3_table();
  int64_t nb = dsv3_ceil_div(N, B);
  size_t esz = out_dt == DSV3_F32 ? 4 : 2;
  /* tables for the block columns of one block row */
  void *tab = dsv3_xmalloc((size_t)nb * 256 * esz);
  int64_t cur_br = -1;
  for (int64_t r = r0; r < r0 + nrows && r < M; r++) {
    int64_t br = r / B;
    if (br != cur_br) {
      cur_br = br;
      for (int64_t bc = 0; bc < nb; bc++) {
        float sc = s[br * nb + bc];
        if (out_dt == DSV3_BF16) {
          uint16_t *t = (uint16_t *)tab + bc * 256;
          for (int v = 0; v < 256; v++) t[v] = dsv3_f32_to_bf16(e4[v] * sc);
        } else if (out_dt == DSV3_F16) {
          uint16_t *t = (uint16_t *)tab + bc * 256;
          for (int v = 0; v < 256; v++) t[v] = dsv3_f32_to_f16(e4[v] * sc);
        } else {
          float *t = (float *)tab + bc * 256;
          for (int v = 0; v < 256; v++) t[v] = e4[v] * sc;
        }
      }
    }
    const uint8_t *src = w + r * N;
    if (esz == 2) {
      uint16_t *dst = (uint16_t *)out + (r - r0) * N;
      for (int64_t bc = 0; bc < nb; bc++) {
        const uint16_t *t = (const uint16_t *)tab + bc * 256;
        int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N;
        if (c1 - c0 == B)
          lookup16_block(t, src + c0, dst + c0);
        else
          for (int64_t c = c0; c < c1; c++) dst[c] = t[src[c]];
      }
    } else {
      float *dst = (float *)out + (r - r0) * N;
      for (int64_t bc = 0; bc < nb; bc++) {
        const float *t = (const float *)tab + bc * 256;
        int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N;
        if (c1 - c0 == B)
          lookup32_block(t, src + c0, dst + c0);
        else
          for (int64_t c = c0; c < c1; c++) dst[c] = t[src[c]];
      }
    }
  }
  free(tab);
}

/* The quantisation loops in GCC/clang vector extensions (4 lanes: SSE2 on any x86-64, NEON
 * on arm64): -O2 does not vectorise them by itself. */
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint8_t v4b __attribute__((vector_size(4)));
typedef uint16_t v4h __attribute__((vector_size(8)));

/* float32 -> e4m3fn on 4 lanes, round to nearest even, saturating to +-448, NaN/Inf ->
 * 0x7f | sign: identical to dsv3_f32_to_e4m3 for every float32 (checked exhaustively).
 *   below 2^-6 (e4m3 subnormals, multiples of 2^-9): |y| * 2^9 rounded to an integer by
 *     adding 2^23 in the FPU's round-to-nearest-even;
 *   normal: RNE to 3 mantissa bits on the float32 bits, exponent rebiased 127 -> 7
 *     (960 = 120 << 3); a mantissa carry moves into the exponent; past 448 saturates.
 * |y|'s bits are < 2^31, so signed compares do. */
static inline v4u e4m3_rne4(v4f y) {
  v4u u = (v4u)y, a = u & 0x7fffffffu, sgn = (u >> 24) & 0x80u;
  v4f af = (v4f)a;
  v4u sub = (v4u)(af * 512.0f + 0x1p23f) - 0x4b000000u;
  v4u nor = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - 960u;
  v4i ai = (v4i)a;
  v4u m = (v4u)((v4i)nor > 0x7e); /* a wrapped nor (a < 2^-7) is replaced by sub below */
  v4u r = (nor & ~m) | (0x7eu & m);
  m = (v4u)(ai < 0x3c800000);
  r = (sub & m) | (r & ~m);
  m = (v4u)(ai >= 0x7f800000);
  r = (0x7fu & m) | (r & ~m);
  return sgn | r;
}

/* Widen rows [rb, re) x cols [c0, c1) of x into tile (row stride B, zero padded to B). */
static void load_tile(const void *x, dsv3_dtype dt, int64_t N, int64_t rb, int64_t re, int64_t c0,
                      int64_t c1, float *tile) {
  int64_t w = c1 - c0;
  for (int64_t r = rb; r < re; r++) {
    float *d = tile + (r - rb) * B;
    int64_t off = r * N + c0;
    switch (dt) {
    case DSV3_BF16: {
      const uint16_t *p = (const uint16_t *)x + off;
      int64_t c = 0;
      for (; c + 4 <= w; c += 4) {
        v4h h;
        memcpy(&h, p + c, sizeof h);
        v4u u = __builtin_convertvector(h, v4u) << 16;
        memcpy(d + c, &u, sizeof u);
      }
      for (; c < w; c++) d[c] = u2f((uint32_t)p[c] << 16);
      break;
    }
    case DSV3_F16: {
      const uint16_t *p = (const uint16_t *)x + off;
      for (int64_t c = 0; c < w; c++) d[c] = dsv3_f16_to_f32(p[c]);
      break;
    }
    case DSV3_F32: memcpy(d, (const float *)x + off, (size_t)w * sizeof(float)); break;
    default: /* not a float input: callers check; NaN quantises to NaN */
      for (int64_t c = 0; c < w; c++) d[c] = NAN;
      break;
    }
    if (w < B) memset(d + w, 0, (size_t)(B - w) * sizeof(float)); /* zeros: amax unchanged */
  }
}

/* q for a whole tile row of B columns at a time; only the w valid columns are stored. */
static void quant_tile(const float *tile, int64_t nr, int64_t w, float sc, uint8_t *q, int64_t N) {
  uint8_t row[B];
  v4f vs = {sc, sc, sc, sc};
  for (int64_t r = 0; r < nr; r++) {
    const float *t = tile + r * B;
    for (int c = 0; c < B; c += 16) {
      v4u e[4];
      for (int k = 0; k < 4; k++) {
        v4f x;
        memcpy(&x, t + c + 4 * k, sizeof x);
        e[k] = e4m3_rne4(x / vs);
      }
#ifdef __SSE2__
      /* every lane is 0..255: signed 32->16 then unsigned 16->8 saturation keep it as is */
      __m128i lo = _mm_packs_epi32((__m128i)e[0], (__m128i)e[1]);
      __m128i hi = _mm_packs_epi32((__m128i)e[2], (__m128i)e[3]);
      _mm_storeu_si128((__m128i *)(row + c), _mm_packus_epi16(lo, hi));
#else
      for (int k = 0; k < 4; k++) {
        v4b b = __builtin_convertvector(e[k], v4b);
        memcpy(row + c + 4 * k, &b, 4);
      }
#endif
    }
    memcpy(q + r * N, row, (size_t)w);
  }
}

static uint32_t tile_amax_bits(const float *tile, int64_t nr) {
  v4i m = {0, 0, 0, 0};
  for (int64_t i = 0; i < nr * B; i += 4) {
    v4i a;
    memcpy(&a, tile + i, sizeof a);
    a &= 0x7fffffff;
    a &= (v4i)(a <= 0x7f800000); /* NaN does not count; non-negative floats order as ints */
    v4i gt = (v4i)(a > m);
    m = (a & gt) | (m & ~gt);
  }
  uint32_t r = 0;
  for (int k = 0; k < 4; k++) r = (uint32_t)m[k] > r ? (uint32_t)m[k] : r;
  return r;
}

/* 2^ceil(log2(s)) for a positive finite s, exactly (from the bits, not from log2f). */
static float pow2_ceil(float s) {
  uint32_t u = f2u(s);
  if (!(s > 0) || u >= 0x7f800000u) return s;
  int e;
  float m = frexpf(s, &e); /* s = m * 2^e, m in [0.5, 1) */
  return m == 0.5f ? s : ldexpf(1.0f, e);
}

void dsv3_fp8_quant_rows(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                         int64_t nrows, int ue8m0, uint8_t *q, float *s) {
  if (N <= 0) return;
  int64_t nb = dsv3_ceil_div(N, B);
  int64_t r1 = r0 + nrows < M ? r0 + nrows : M;
  float *tile = dsv3_xmalloc((size_t)B * B * sizeof(float));
  for (int64_t br0 = r0; br0 < r1; br0 += B) {
    int64_t br = br0 / B, rend = br0 + B < r1 ? br0 + B : r1, nr = rend - br0;
    for (int64_t bc = 0; bc < nb; bc++) {
      int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N, w = c1 - c0;
      load_tile(x, in_dt, N, br0, rend, c0, c1, tile);
      uint32_t amax_bits = tile_amax_bits(tile, nr);
      /* As the official act_quant: amax clamped to 1e-4, s = amax / 448, optional ue8m0. */
      float amax = u2f(amax_bits);
      if (amax < 1e-4f) amax = 1e-4f;
      float sc = amax / 448.0f;
      if (ue8m0) sc = pow2_ceil(sc);
      s[(br - r0 / B) * nb + bc] = sc;
      quant_tile(tile, nr, w, sc, q + (br0 - r0) * N + c0, N);
    }
  }
  free(tile);
}

void dsv3_fp8_quant_rows_given(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                               int64_t nrows, const float *s, uint8_t *q) {
  if (N <= 0) return;
  int64_t nb = dsv3_ceil_div(N, B);
  int64_t r1 = r0 + nrows < M ? r0 + nrows : M;
  float *tile = dsv3_xmalloc((size_t)B * B * sizeof(float));
  for (int64_t br0 = r0; br0 < r1; br0 += B) {
    int64_t br = br0 / B, rend = br0 + B < r1 ? br0 + B : r1;
    for (int64_t bc = 0; bc < nb; bc++) {
      int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N;
      load_tile(x, in_dt, N, br0, rend, c0, c1, tile);
      quant_tile(tile, rend - br0, c1 - c0, s[(br - r0 / B) * nb + bc], q + (br0 - r0) * N + c0, N);
    }
  }
  free(tile);
}
