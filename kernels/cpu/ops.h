/* ops.h - reference ops in plain C, float32 activations: the ground truth that every CUDA
 * kernel in kernels/cuda/ is tested against, and the CPU path of dsv3-run.
 * Semantics follow the official DeepSeek-V3 inference/model.py.  Row-major everywhere.
 * Ops over tokens are parallelised with dsv3_parallel_for where that pays. */
#ifndef DSV3_OPS_H
#define DSV3_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../../format/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix W[rows, cols] as stored: BF16/F16/F32, or F8_E4M3 with a float32
 * block scale S[ceil(rows/128), ceil(cols/128)] (scale_inv). */
typedef struct {
  dsv3_dtype dtype;
  const void *data;
  const float *scale; /* FP8 only */
  int64_t rows, cols;
} dsv3_wmat;

/* Element (r, c) of W as float32, exactly as the official bf16 path sees it: FP8 weights
 * are dequantised and rounded to bf16 (weight_dequant with default dtype bf16). */
float dsv3_wmat_get(const dsv3_wmat *w, int64_t r, int64_t c);
/* Row r of W into out[cols] (same rounding as dsv3_wmat_get). */
void dsv3_wmat_row(const dsv3_wmat *w, int64_t r, float *out);
/* FP8 rows by AVX2 + F16C (same values, bit for bit) where the CPU has them: -1 decides at
 * the first use, 0 forces the table path (tests compare the two), 1 forces SIMD. */
extern int dsv3_ops_simd;

/* y[t, n] = sum_k x[t, k] * W[n, k]   for t < ntok (x: [ntok, cols], y: [ntok, rows]).
 * Accumulates in float32 (double where it is cheap is allowed: the tolerance for GPU
 * kernels against this is relative, see tests). */
void dsv3_linear(float *y, const float *x, int64_t ntok, const dsv3_wmat *w);

/* out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w   (w: dim elements of dtype wdt) */
void dsv3_rmsnorm(float *out, const float *x, const void *w, dsv3_dtype wdt, int64_t ntok,
                  int64_t dim, float eps);

/* Embedding rows: out[t] = E[ids[t]] (E: [vocab, dim] of dtype edt). */
void dsv3_embed(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt,
                int64_t dim);

/* RoPE tables (official precompute_freqs_cis): cos/sin of [max_seq_len, rope_dim/2]; YaRN
 * frequency correction when factor > 1. */
typedef struct {
  int64_t rope_dim;          /* qk_rope_head_dim */
  int64_t max_seq_len;
  double theta;              /* rope_theta */
  double factor;             /* rope_factor (<= 1: no YaRN) */
  int64_t original_seq_len;
  double beta_fast, beta_slow;
} dsv3_rope_params;
void dsv3_rope_tables(const dsv3_rope_params *p, float *cos_t, float *sin_t);
/* Rotate interleaved pairs (x[2i], x[2i+1]) of a vector of rope_dim elements at position pos. */
void dsv3_rope_apply(float *x, int64_t rope_dim, const float *cos_t, const float *sin_t,
                     int64_t pos);

/* out[i] = silu(g[i]) * u[i] */
void dsv3_silu_mul(float *out, const float *g, const float *u, int64_t n);
/* In-place softmax over n values. */
void dsv3_softmax(float *x, int64_t n);

/* MoE routing for one token (official Gate): scores = sigmoid|softmax(logits); selection on
 * scores + bias (bias may be NULL) with group-limited top-k (group score: sum of top-2 with
 * bias, or max without); weights = original scores of the chosen experts, renormalised for
 * sigmoid, times route_scale.  Writes topk indices and weights. */
typedef struct {
  int64_t n_experts, topk, n_groups, topk_groups;
  int sigmoid;     /* 1: sigmoid, 0: softmax */
  float route_scale;
  int bf16; /* round scores and weights to bf16 as the official bf16 demo does */
} dsv3_route_params;
void dsv3_route(const dsv3_route_params *p, const float *logits, const float *bias,
                int32_t *idx, float *weight);

#ifdef __cplusplus
}
#endif
#endif
