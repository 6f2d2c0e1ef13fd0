/* fp8.h - block-scaled FP8 (e4m3, 128x128 blocks, float32 scale_inv) math.  The one place it
 * lives: cast, convert, inspect and the CPU runtime all call these.
 *
 * Dequantisation, bit-exact with the official weight_dequant (Triton):
 *   out[i][j] = round_to(out_dtype, float32(e4m3(W[i][j])) * S[i/128][j/128])
 * computed in float32 (a single multiply, so the result is the correctly rounded product),
 * then rounded to nearest even into bf16/f16, or kept as f32.
 *
 * Quantisation, as the official act_quant / DeepSeek's weight quantisation:
 *   s = max(amax(block), 1e-4) / 448  (ue8m0: s = 2^ceil(log2(s)))
 *   q = e4m3_rne_saturate(x / s);  scale_inv = s */
#ifndef DSV3_FP8_H
#define DSV3_FP8_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV3_FP8_BLOCK 128

/* Dequantize rows [r0, r0+nrows) of an [M, N] e4m3 matrix `w` (pointing at row 0) with scale
 * matrix `s` of shape [ceil(M/128), ceil(N/128)], writing nrows x N elements of `out_dt`
 * (BF16, F16 or F32) to `out`. */
void dsv3_fp8_dequant_rows(const uint8_t *w, const float *s, int64_t M, int64_t N,
                           int64_t r0, int64_t nrows, dsv3_dtype out_dt, void *out);

/* Quantize rows [r0, r0 + nrows) of an [M, N] matrix `x` (of dtype in_dt, pointing at row 0);
 * r0 must be a multiple of 128 and nrows too unless the range ends at M.  Writes the e4m3
 * rows to q (q[0] is row r0) and the scale rows from block row r0/128 on to s (s[0] is the
 * first scale of block row r0/128; ceil(N/128) scales a block row).  ue8m0: power-of-two
 * scales. */
void dsv3_fp8_quant_rows(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                         int64_t nrows, int ue8m0, uint8_t *q, float *s);

/* As dsv3_fp8_quant_rows, but with given scales (s: block row r0/128 first), e.g. the scales
 * of the checkpoint a BF16 model was cast from: q = e4m3_rne_saturate(x / s). */
void dsv3_fp8_quant_rows_given(const void *x, dsv3_dtype in_dt, int64_t M, int64_t N, int64_t r0,
                               int64_t nrows, const float *s, uint8_t *q);

static inline int64_t dsv3_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#ifdef __cplusplus
}
#endif
#endif
