/* dsv3_cuda.h - CUDA kernels for the DeepSeek-V3 forward pass (Hopper, sm_90a), C API.
 *
 * Conventions (see docs/cuda.md):
 * - Every pointer argument is a device pointer unless its comment says "host".
 * - Activations are float32 on the device ([ntok, dim] row-major); the MLA latent cache is
 *   bf16.  Weights are dsv3_wmat (kernels/cpu/ops.h) whose data/scale point at device memory:
 *   FP8 e4m3 [rows, cols] with float32 block scales [ceil(rows/128), ceil(cols/128)], or BF16.
 *   An FP8 weight is seen as bf16(e4m3 * scale), exactly as the CPU reference (dsv3_wmat_get).
 * - Functions enqueue work on the given stream and return 0, or -1 after dsv3_error_set()
 *   (one line: "cuda: OP: what").  Nothing synchronises unless the comment says so; the
 *   decode-path functions (GEMV, norms, RoPE, MLA decode, MoE decode, sampling) allocate
 *   nothing and never sync, so they can be captured in a CUDA graph.
 * - Positions, token ids and sequence lengths that change per step are read from device
 *   memory, so a captured graph stays valid from one step to the next. */
#ifndef DSV3_CUDA_H
#define DSV3_CUDA_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- context */
/* Holds the cuBLAS handle (bound to `stream`), its workspace and the scratch buffers of the
 * ops below.  One per stream/GPU.  Scratch grows on first use with the largest shape seen
 * (cudaMalloc: not allowed while the stream is captured), so run one step of every shape
 * before capturing a graph; a capture that would need more fails with an error. */
typedef struct dsv3_cuda_ctx dsv3_cuda_ctx;
int dsv3_cuda_ctx_new(cudaStream_t stream, dsv3_cuda_ctx **out);
void dsv3_cuda_ctx_free(dsv3_cuda_ctx *ctx);
cudaStream_t dsv3_cuda_ctx_stream(const dsv3_cuda_ctx *ctx);
int dsv3_cuda_ctx_sms(const dsv3_cuda_ctx *ctx); /* multiprocessors of the device */
size_t dsv3_cuda_ctx_scratch_bytes(const dsv3_cuda_ctx *ctx); /* all scratch held now */
/* How many times a scratch buffer was reallocated (freed and allocated larger): a graph
 * captured before a change of this count may point at freed scratch and must be re-captured. */
uint64_t dsv3_cuda_ctx_scratch_moves(const dsv3_cuda_ctx *ctx);

/* Number of CUDA devices, 0 when there is none or the driver cannot be used (never fails). */
int dsv3_cuda_device_count(void);

/* ---------------------------------------------------------------- linear (linear.cu) */
/* y[t, n] (+)= sum_k x[t, k] * W[n, k] for t < ntok.  accumulate: add to y instead of
 * overwriting it (residual adds).  Dispatch: 2 to 8 tokens and an FP8 weight with cols % 64 ==
 * 0: the tensor-core GEMV (dsv3_cuda_gemv_tc: the official fp8_gemm order, x as f16); else
 * ntok <= dsv3_cuda_gemv_max_tokens (2): the GEMV (float32 x); ntok <= dsv3_cuda_mma_max_tokens
 * (64): the tensor-core skinny GEMM (x rounded to bf16; falls back to the GEMV for shapes it
 * does not cover); above: the FP8 GEMM on FP8 activations (dsv3_cuda_gemm_fp8) where it
 * applies, else dequantise + cuBLAS BF16 GEMM (both need scratch: capturable only after a first
 * run of the same shape). */
int dsv3_cuda_linear(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                     int accumulate);
/* The same with xb (NULL, or x rounded to bf16: dsv3_cuda_rmsnorm_bf16) as the BF16 GEMM's
 * input in place of its conversion of x; the other paths read x.  dsv3_cuda_linear_xb_only:
 * whether, for ntok tokens of w, it takes that GEMM (x itself never read: its producer may
 * write xb alone). */
int dsv3_cuda_linear_xb_only(const dsv3_cuda_ctx *ctx, int64_t ntok, const dsv3_wmat *w);
int dsv3_cuda_linear_xb(dsv3_cuda_ctx *ctx, float *y, const float *x, const uint16_t *xb, int64_t ntok, const dsv3_wmat *w,
                        int accumulate);
extern int dsv3_cuda_gemv_max_tokens; /* default 2; DSV3_CUDA_GEMV_MAX=1..8 at context creation */
extern int dsv3_cuda_mma_max_tokens;  /* default 64; 0 (or DSV3_CUDA_MMA=0 at context creation) disables */
/* 1 (default): decode GEMVs of FP8 weights from 2 tokens (linear and MLP up to 8 tokens, the MoE
 * decode) through the tensor-core variant; 2: from 1 token too; 0: never (the float32 GEMV and
 * the skinny GEMM, whose sums use the bf16-rounded weights of the reference).
 * DSV3_CUDA_GEMV_TC=0/1/2 at context creation. */
extern int dsv3_cuda_gemv_tc;
/* 1 (default): one-token GEMVs of FP8 weights (linear, MLP, MoE decode; where a warp takes 2 or
 * more rows) through the packed-f16 variant (gemv.cuh: the e4m3 codes dotted with x in f16
 * pairs per 128-wide block, then the scale); 0: the float32 GEMV on the reference's
 * bf16-rounded weights.  DSV3_CUDA_GEMV_H2=0/1 at context creation; dsv3_cuda_h2_rbig: its most
 * rows a warp (16; DSV3_CUDA_H2_ROWS=4 or 16). */
extern int dsv3_cuda_gemv_h2;
extern int dsv3_cuda_h2_rbig;
/* The paths, explicitly.  gemv_mma needs cols % 64 == 0, FP8 or BF16 and 16-byte aligned data
 * (otherwise it runs the GEMV); the dispatcher uses it only for rows >= 16 * SMs (16-row tiles
 * would leave SMs idle on narrower matrices: the GEMV serves those).  gemv_tcore: per 128-wide K
 * block, the e4m3 codes dotted with x (f16, scaled per row by a power of two) on the tensor
 * cores in float32, times the block scale; FP8 with cols % 64 == 0 and 16-byte alignment
 * (otherwise the GEMV); any ntok, in tiles of 8 tokens. */
int dsv3_cuda_gemv(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w, int accumulate);
int dsv3_cuda_gemv_mma(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w, int accumulate);
int dsv3_cuda_gemv_tcore(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w, int accumulate);
int dsv3_cuda_gemm(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w, int accumulate);
/* BF16 copies of FP8 weights for dsv3_cuda_gemm (which otherwise dequantises a matrix into
 * scratch at every call): up to `budget` bytes of device memory, a matrix kept on its first
 * GEMM while it fits (not while a graph is being captured), found again by its data and scale
 * addresses and shape; the same bits as the dequantisation into scratch.  0 (the default)
 * frees them: call it so after freeing or rewriting weights that ctx has seen. */
void dsv3_cuda_weight_cache(dsv3_cuda_ctx *ctx, size_t budget);
size_t dsv3_cuda_weight_cache_used(const dsv3_cuda_ctx *ctx);
/* y = x * W^T with W already bf16 [rows, cols] (e.g. from dsv3_cuda_dequant) and x bf16. */
int dsv3_cuda_gemm_bf16(dsv3_cuda_ctx *ctx, float *y, const uint16_t *xb, int64_t ntok, const uint16_t *wb,
                        int64_t rows, int64_t cols, int accumulate);
/* The official fp8_gemm (fp8gemm.cu; the official model's gemm_impl = "fp8"): x quantised per
 * token and 128 columns (act_quant: s = max(amax, 1e-4) / 448, q = e4m3(x / s)), then q and the
 * FP8 weight multiplied on the tensor cores by cuBLASLt's block scaling (sm_90), both scales
 * applied per 128-wide K block, float32 output.  Shapes it does not cover
 * (dsv3_cuda_gemm_fp8_ok: FP8, cols % 512 == 0, rows % 16 == 0, 16-byte aligned) run
 * dsv3_cuda_gemm.  dsv3_cuda_linear uses it above dsv3_cuda_mma_max_tokens tokens when
 * dsv3_cuda_fp8_gemm is set: off by default, since e4m3 activations move each product by up to
 * 2^-4 (dsv3-tiny's 300-token prefill logits: 6.4e-2 from the CPU reference, against 7e-3 with
 * bf16 activations). */
int dsv3_cuda_gemm_fp8(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w, int accumulate);
int dsv3_cuda_gemm_fp8_ok(const dsv3_wmat *w, const void *x, int64_t ntok);
extern int dsv3_cuda_fp8_gemm; /* 0 (default); DSV3_CUDA_FP8_GEMM=1 at context creation */
/* act_quant alone: q [ntok, K] e4m3, s[kb * lds + t] (K % 128 == 0, x 16-byte aligned). */
int dsv3_cuda_act_quant(uint8_t *q, float *s, const float *x, int64_t ntok, int64_t K, int64_t lds, cudaStream_t st);
/* W (FP8 + scales, BF16, F16 or F32) -> bf16 [rows, cols] (FP8: bf16(e4m3 * scale)). */
int dsv3_cuda_dequant(uint16_t *out, const dsv3_wmat *w, cudaStream_t st);
/* f32 -> bf16 (round to nearest even) and back. */
int dsv3_cuda_f32_to_bf16(uint16_t *out, const float *x, int64_t n, cudaStream_t st);
int dsv3_cuda_bf16_to_f32(float *out, const uint16_t *x, int64_t n, cudaStream_t st);

/* ---------------------------------------------------------------- elementwise (norm.cu) */
/* out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w; w has `dim` elements of dtype wdt (BF16, F16
 * or F32).  out may equal x. */
int dsv3_cuda_rmsnorm(float *out, const float *x, const void *w, dsv3_dtype wdt, int64_t ntok, int64_t dim, float eps,
                      cudaStream_t st);
/* Fused residual add + norm: x[t] += y[t]; out[t] = rmsnorm(x[t]) * w. */
int dsv3_cuda_add_rmsnorm(float *out, float *x, const float *y, const void *w, dsv3_dtype wdt, int64_t ntok,
                          int64_t dim, float eps, cudaStream_t st);
/* Either of the two (y NULL: dsv3_cuda_rmsnorm, else dsv3_cuda_add_rmsnorm), with outb (NULL
 * or [ntok, dim] bf16) receiving out rounded to bf16 as well: the input of the GEMMs that
 * read it (dsv3_cuda_linear_xb), written in the same pass.  out NULL: outb alone, where
 * dsv3_cuda_rmsnorm_bf16_only_ok (dim % 4 == 0 up to 8192, aligned pointers; an error else). */
int dsv3_cuda_rmsnorm_bf16(float *out, uint16_t *outb, float *x, const float *y, const void *w, dsv3_dtype wdt,
                           int64_t ntok, int64_t dim, float eps, cudaStream_t st);
int dsv3_cuda_rmsnorm_bf16_only_ok(const float *x, const float *y, const void *w, dsv3_dtype wdt, int64_t dim);
/* out[t] = E[ids[t]] as float32 (E: [vocab, dim] of dtype edt); an id outside [0, vocab)
 * gives a row of NaN (the host validates ids; NaN makes a stray one visible). */
int dsv3_cuda_embed(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt, int64_t vocab,
                    int64_t dim, cudaStream_t st);
/* Vocab-parallel part: rows [v0, v0 + vocab) of the whole table are in E; other ids give zeros. */
int dsv3_cuda_embed_part(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt, int64_t v0,
                         int64_t vocab, int64_t dim, cudaStream_t st);
/* RoPE on interleaved pairs: for t < ntok and v < nvec, rotate the rope_dim values at
 * x + t*tok_stride + v*vec_stride by the tables' row pos[t] (cos/sin: [max_pos, rope_dim/2],
 * from dsv3_rope_tables). */
int dsv3_cuda_rope(float *x, int64_t ntok, int64_t nvec, int64_t tok_stride, int64_t vec_stride, int64_t rope_dim,
                   const float *cos_t, const float *sin_t, const int32_t *pos, cudaStream_t st);
/* The same for tokens at consecutive positions pos0 + t. */
int dsv3_cuda_rope_seq(float *x, int64_t ntok, int64_t nvec, int64_t tok_stride, int64_t vec_stride, int64_t rope_dim,
                       const float *cos_t, const float *sin_t, int64_t pos0, cudaStream_t st);
/* out[i] = silu(g[i]) * u[i] */
int dsv3_cuda_silu_mul(float *out, const float *g, const float *u, int64_t n, cudaStream_t st);
/* The same with outb (NULL or n bf16) receiving out rounded to bf16 as well (out NULL: outb alone). */
int dsv3_cuda_silu_mul_bf16(float *out, uint16_t *outb, const float *g, const float *u, int64_t n, cudaStream_t st);
/* y[i] += x[i] */
int dsv3_cuda_add(float *y, const float *x, int64_t n, cudaStream_t st);

/* ---------------------------------------------------------------- MLA (mla.cu) */
/* Latent cache: kv [nseq, max_seq, C] and pe [nseq, max_seq, R], bf16.
 * Cache write for ntok new tokens: kva [ntok, C + R] is the wkv_a output; kv_norm (C values of
 * dtype ndt) is applied to its first C values, RoPE at pos[t] to the last R, and both are
 * stored (bf16) at cache row (seq[t], pos[t]). */
int dsv3_cuda_mla_cache_write(uint16_t *kv_cache, uint16_t *pe_cache, const float *kva, int64_t ntok, const void *kv_norm,
                              dsv3_dtype ndt, float eps, const float *cos_t, const float *sin_t, const int32_t *seq,
                              const int32_t *pos, int64_t C, int64_t R, int64_t max_seq, cudaStream_t st);
/* Absorb q: ql[t, h, c] = sum_{d < nope} q[t, h, d] * Wkvb[h * (nope + V) + d, c], with q
 * [ntok, H, nope + R] (the wq_b output) and Wkvb the bf16 kv_b_proj [H * (nope + V), C]. */
int dsv3_cuda_mla_absorb_q(float *ql, const float *q, const uint16_t *wkvb, int64_t ntok, int64_t H, int64_t nope,
                           int64_t R, int64_t V, int64_t C, cudaStream_t st);
/* One decode token's q path in one launch: q = q_b(rmsnorm(qa) * q_norm) [H, nope + R] (the
 * rope part rotated at pos[0], as dsv3_cuda_rope; q_b through the packed-f16 GEMV's arithmetic)
 * and ql = absorb_q(q), as rmsnorm + dsv3_cuda_linear + dsv3_cuda_rope +
 * dsv3_cuda_mla_absorb_q would give (up to summation order).  qa: [q_lora_rank] = wq_b->cols,
 * float32, 16-byte aligned; cos_t / sin_t: [max_pos, R / 2].  _ok: whether the shapes are
 * covered (FP8 q_b with scales, q_lora_rank % 16 == 0 and <= 8192, nope + R <= 256, C % 8 ==
 * 0 with C / 8 dividing 512). */
int dsv3_cuda_mla_q_fused_ok(const dsv3_wmat *wq_b, const void *qa, int64_t H, int64_t nope, int64_t R, int64_t C);
int dsv3_cuda_mla_q_fused(float *ql, float *q, const float *qa, const void *q_norm, dsv3_dtype ndt, float eps,
                          const dsv3_wmat *wq_b, const uint16_t *wkvb, const float *cos_t, const float *sin_t,
                          const int32_t *pos, int64_t H, int64_t nope, int64_t R, int64_t V, int64_t C, cudaStream_t st);
/* Attention of nq queries over the latent cache.  Query i (token i of a decode batch, or
 * position i of a prefill) belongs to sequence seq[i] and sees cache rows [0, len[i]) (causal
 * prefill: len = pos + 1).  ql: [nq, H, C] (absorbed), q_pe: the rope part of q, at
 * q_pe + i * pe_tok_stride + h * pe_head_stride (R values; e.g. q + nope with strides H*(nope+R)
 * and nope+R).  ol: [nq, H, C] = softmax(scale * (ql.kv + q_pe.pe)) . kv.
 * max_len bounds every len[i] (it sets the sequence split; use max_seq for a graph); split
 * partials live in ctx scratch. */
int dsv3_cuda_mla_attention(dsv3_cuda_ctx *ctx, float *ol, const float *ql, const float *q_pe, int64_t pe_tok_stride,
                            int64_t pe_head_stride, const uint16_t *kv_cache, const uint16_t *pe_cache,
                            const int32_t *seq, const int32_t *len, int64_t nq, int64_t H, int64_t C, int64_t R,
                            int64_t max_seq, int64_t max_len, float scale);
/* Causal prefill of one sequence on tensor cores (cuBLAS), in the non-absorbed form: nq queries
 * of sequence `seq` at positions pos0 .. pos0 + nq - 1 (host values; cache rows [0, pos0 + nq)
 * already written), query i sees rows [0, pos0 + i + 1).  q: [nq, H, nope + R] (the wq_b
 * output), its rope part rotated already (cos_t = sin_t = NULL) or rotated here by the tables
 * (dsv3_rope_tables) at position pos0 + i: folded into the wgmma kernel's q loads, else in q
 * itself (dsv3_cuda_rope_seq); ob: NULL, or o rounded to bf16 as well (o_proj's GEMM input);
 * Wkvb: the bf16 kv_b_proj [H * (nope + V), C]; writes o [nq, H, V]
 * (the o_proj input: no absorb step).  The keys and values are materialised in bf16
 * (kv_b of the cache rows, as the official attn_impl="naive"), queries and probabilities
 * rounded to bf16, accumulation and softmax in fp32: relative error ~3e-3 against float64.
 * Scores are computed for chunks of query tokens whose fp32 scores + bf16 probabilities fit in
 * dsv3_cuda_mla_prefill_score_bytes (default 512 MB) of ctx scratch, plus the bf16 keys and
 * values (L x H x (nope + V) x 2 bytes) and queries (allocated on first use: not capturable). */
int dsv3_cuda_mla_prefill(dsv3_cuda_ctx *ctx, float *o, float *q, const uint16_t *wkvb, const uint16_t *kv_cache,
                          const uint16_t *pe_cache, int64_t seq, int64_t pos0, int64_t nq, int64_t H, int64_t nope, int64_t R,
                          int64_t V, int64_t C, int64_t max_seq, float scale, const float *cos_t, const float *sin_t,
                          uint16_t *ob);
extern size_t dsv3_cuda_mla_prefill_score_bytes;
/* 1 (default): for the head sizes it is built for (DeepSeek-V3's nope + rope = 192 with v 128,
 * dsv3-tiny's 64 with 32), one fused flash-style kernel instead of the scores in scratch (same
 * roundings; scratch: the keys, values and queries only); 0 (or DSV3_MLA_FUSED=0 in the
 * environment): the score-matrix path always. */
extern int dsv3_cuda_mla_fused;
/* 1 (default): DeepSeek-V3's heads (128 + 64, 128) on an sm_90 device take the fused kernel on
 * warpgroup MMA (wgmma); 0 (or DSV3_MLA_WG=0): the mma.sync one. */
extern int dsv3_cuda_mla_wg;
/* 1 (default): that wgmma kernel warp-specialised (a TMA producer warp, the two warpgroups
 * taking turns at the tensor cores); 0 (or DSV3_MLA_WS=0): the one whose warpgroups move in
 * step.  Both give the same results. */
extern int dsv3_cuda_mla_ws;
/* Absorb o: o[t, h, v] = sum_c ol[t, h, c] * Wkvb[h * (nope + V) + nope + v, c]; o: [ntok, H, V]. */
int dsv3_cuda_mla_absorb_o(float *o, const float *ol, const uint16_t *wkvb, int64_t ntok, int64_t H, int64_t nope,
                           int64_t V, int64_t C, cudaStream_t st);

/* ---------------------------------------------------------------- MoE (moe.cu) */
/* Routing of ntok tokens, exactly dsv3_route (ops.h) per token: logits [ntok, n_experts],
 * bias [n_experts] float32 or NULL; writes idx [ntok, topk] and weight [ntok, topk].
 * n_experts <= 1024, topk <= 32. */
int dsv3_cuda_route(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx, float *weight,
                    int64_t ntok, cudaStream_t st);
/* The same with `nshared` more slots a token: idx [ntok, topk + nshared] and weight likewise,
 * slot topk + j naming expert n_experts + j with weight 1 (shared experts placed at the end of
 * the expert table, so that dsv3_cuda_moe_decode runs them in the routed experts' launches). */
int dsv3_cuda_route_shared(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx,
                           float *weight, int64_t ntok, int64_t nshared, cudaStream_t st);
/* Routed experts: a device table of n_experts entries (data and scale pointers are device
 * pointers; scale NULL for BF16).  All experts share dtype (FP8 or BF16) and shape:
 * w1, w3 [inter, dim], w2 [dim, inter].  An entry with w1 NULL is an expert held by another rank
 * (expert parallelism): pairs routed to it contribute zero here. */
typedef struct {
  const void *w1, *w2, *w3;
  const float *s1, *s2, *s3;
} dsv3_cuda_expert;
/* Decode: y[t] (+)= sum_k weight[t, k] * W2_e (silu(W1_e x[t]) * W3_e x[t]), e = idx[t, k]; one
 * fused gate/up GEMV and one down GEMV over the chosen experts only (ctx scratch:
 * ntok * topk * (inter + dim) floats). */
int dsv3_cuda_moe_decode(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                         const float *weight, int64_t topk, const dsv3_cuda_expert *experts, dsv3_dtype wdt,
                         int64_t dim, int64_t inter, int accumulate);
/* Prefill: tokens grouped by expert (the routing is copied to the host: synchronises), one
 * GEMM per expert through dsv3_cuda_linear; `experts_host` is a host array of the same
 * table.  Allocates scratch as needed (not capturable). */
int dsv3_cuda_moe_prefill(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                          const float *weight, int64_t topk, const dsv3_cuda_expert *experts_host, int64_t n_experts,
                          dsv3_dtype wdt, int64_t dim, int64_t inter, int accumulate);
/* Prefill on the tensor cores: all experts in one launch per projection, grouped on the device
 * (nothing copied to the host, no synchronisation; scratch from ctx).  `experts` is the device
 * table (NULL weights: another rank's expert, which contributes zero; a pair whose index is
 * outside [0, n_experts) contributes zero too); x is rounded to bf16 and the gate/up products
 * to bf16 before the down projection, as dsv3_cuda_gemm, and the experts' outputs to bf16
 * before the weighted sum (dsv3_cuda_moe_ys_bf16).  Needs FP8 or BF16 experts with dim
 * and inter multiples of 16 (dsv3_cuda_moe_grouped_ok). */
int dsv3_cuda_moe_grouped_ok(dsv3_dtype wdt, int64_t dim, int64_t inter);
/* 1 (default): FP8 experts on sm_90 run the grouped GEMM on wgmma (moe.cu, grouped_wg_kernel);
 * 0 (DSV3_MOE_WGMMA=0 at context creation): the mma.sync kernel. */
extern int dsv3_cuda_moe_wgmma;
/* the bytes of each weight row a stage of the wgmma kernel loads: 128 (default; 3 stages; where K % 128 == 0,
 * else 64) or 64 (DSV3_MOE_WG_KS=64: 6 stages) */
extern int dsv3_cuda_moe_wg_ks;
int dsv3_cuda_moe_grouped(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                          const float *weight, int64_t topk, const dsv3_cuda_expert *experts, int64_t n_experts,
                          dsv3_dtype wdt, int64_t dim, int64_t inter, int accumulate);
/* The wgmma kernel loads FP8 expert weights by TMA where dim and inter are multiples of 128:
 * the tensor maps are built on the first call with a table and kept in ctx, keyed by the
 * table's address.  After freeing or rewriting a table that ctx has seen, call
 * dsv3_cuda_moe_forget_tables.  dsv3_cuda_moe_tma = 0 (or DSV3_MOE_TMA=0): cp.async loads. */
extern int dsv3_cuda_moe_tma;
/* 1 (default): the grouped path's expert outputs (W2 products) are rounded to bf16 before the
 * weighted sum, as the official bf16 experts return them (half the bytes written and read);
 * 0 (or DSV3_MOE_YS_BF16=0 at context creation): float32. */
extern int dsv3_cuda_moe_ys_bf16;
void dsv3_cuda_moe_forget_tables(dsv3_cuda_ctx *ctx);
/* A dense MLP (also the shared experts): y (+)= W2 (silu(W1 x) * W3 x).  Decode sizes use a
 * fused gate/up GEMV (graph-capturable); prefill sizes go through dsv3_cuda_linear (W1 and W3
 * reading dsv3_cuda_mlp_xb's xb, where given, instead of converting x each). */
int dsv3_cuda_mlp(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w1,
                  const dsv3_wmat *w2, const dsv3_wmat *w3, int accumulate);
int dsv3_cuda_mlp_xb(dsv3_cuda_ctx *ctx, float *y, const float *x, const uint16_t *xb, int64_t ntok, const dsv3_wmat *w1,
                     const dsv3_wmat *w2, const dsv3_wmat *w3, int accumulate);

/* ---------------------------------------------------------------- sampling (sample.cu) */
/* out[r] = argmax of logits[r, :V] (the first on ties). */
int dsv3_cuda_argmax(int32_t *out, const float *logits, int64_t nrows, int64_t V, cudaStream_t st);
/* The official sampler on the device: p = softmax(logits / temperature); with top_p < 1 only
 * the nucleus (the largest p whose sum reaches top_p) is kept; out = argmax(p / Exp(1)) with
 * the exponential noise drawn from (seed, r, pos[r], i), so a graph replay at a new
 * position draws new noise.  temperature <= 0: argmax. */
int dsv3_cuda_sample(int32_t *out, const float *logits, int64_t nrows, int64_t V, float temperature, float top_p,
                     uint64_t seed, const int32_t *pos, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
