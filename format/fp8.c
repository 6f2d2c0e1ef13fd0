/* fp8.c - block-scaled FP8 <-> BF16/F16/F32: see fp8.h.
 *
 * Dequantisation uses a 256-entry table per 128x128 block: T[v] = round(e4m3(v) * s).  Each
 * entry is the very product and rounding the official kernel computes, so the result is
 * bit-exact, and the inner loop becomes one table load per element (no float math), which is
 * what makes several GB/s per core possible. */
#include "fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define B DSV3_FP8_BLOCK

void dsv3_fp8_dequant_rows(const uint8_t *w, const float *s, int64_t M, int64_t N, int64_t r0,
                           int64_t nrows, dsv3_dtype out_dt, void *out) {
  const float *e4 = dsv3_e4m3_table();
  int64_t nb = dsv3_ceil_div(N, B);
  size_t esz = dsv3_dtype_size(out_dt);
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
        for (int64_t c = c0; c < c1; c++) dst[c] = t[src[c]];
      }
    } else {
      float *dst = (float *)out + (r - r0) * N;
      for (int64_t bc = 0; bc < nb; bc++) {
        const float *t = (const float *)tab + bc * 256;
        int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N;
        for (int64_t c = c0; c < c1; c++) dst[c] = t[src[c]];
      }
    }
  }
  free(tab);
}

static float load_f32(const void *x, dsv3_dtype dt, int64_t i) {
  switch (dt) {
  case DSV3_BF16: return dsv3_bf16_to_f32(((const uint16_t *)x)[i]);
  case DSV3_F16: return dsv3_f16_to_f32(((const uint16_t *)x)[i]);
  case DSV3_F32: return ((const float *)x)[i];
  default: return NAN;
  }
}

void dsv3_fp8_quant_rows(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                         int64_t nrows, int ue8m0, uint8_t *q, float *s) {
  int64_t nb = dsv3_ceil_div(N, B);
  int64_t r1 = r0 + nrows < M ? r0 + nrows : M;
  for (int64_t br0 = r0; br0 < r1; br0 += B) {
    int64_t br = br0 / B, rend = br0 + B < r1 ? br0 + B : r1;
    for (int64_t bc = 0; bc < nb; bc++) {
      int64_t c0 = bc * B, c1 = c0 + B < N ? c0 + B : N;
      float amax = 0;
      for (int64_t r = br0; r < rend; r++)
        for (int64_t c = c0; c < c1; c++) {
          float v = fabsf(load_f32(x, in_dt, r * N + c));
          if (v > amax || isnan(v)) amax = isnan(v) ? amax : v;
        }
      /* As the official act_quant: clamp amax to 1e-4, s = amax / 448, optional ue8m0. */
      if (amax < 1e-4f) amax = 1e-4f;
      float sc = amax / 448.0f;
      if (ue8m0) sc = exp2f(ceilf(log2f(sc)));
      s[(br - r0 / B) * nb + bc] = sc;
      for (int64_t r = br0; r < rend; r++)
        for (int64_t c = c0; c < c1; c++) q[(r - r0) * N + c] = dsv3_f32_to_e4m3(load_f32(x, in_dt, r * N + c) / sc);
    }
  }
}

void dsv3_fp8_quant_rows_given(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                               int64_t nrows, const float *s, uint8_t *q) {
  int64_t nb = dsv3_ceil_div(N, B);
  int64_t r1 = r0 + nrows < M ? r0 + nrows : M;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < N; c++)
      q[(r - r0) * N + c] = dsv3_f32_to_e4m3(load_f32(x, in_dt, r * N + c) / s[(r / B - r0 / B) * nb + c / B]);
}
