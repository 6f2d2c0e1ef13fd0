/* gemv.cuh - the memory-bound skinny GEMM behind decode: y[t, n] = sum_k x[t, k] * W[n, k] for
 * a few tokens, reading each weight byte once.
 *
 * Layout: a block is 8 warps; WK warps split K, 8/WK warp-rows each own R weight rows.  A
 * thread walks 16-byte chunks of its rows (16 FP8 or 8 BF16 values: coalesced 512-byte warp
 * loads, streamed past L1), dequantises them in registers to bf16(e4m3 * scale) (the CPU
 * reference's values, exactly), and multiplies them with TT tokens of x (float32, from
 * L1/L2).  Partial sums: warp shuffles, then shared memory across the WK warps.
 *
 * Modes: PLAIN (one weight, tokens tiled by TT), GATEUP (rows r < R/2 of W1 and the same rows
 * of W3, writing silu(g) * u), and the MoE variants where grid.y walks (token, k) pairs and the
 * weights come from the expert table. */
#ifndef DSV3_CUDA_GEMV_CUH
#define DSV3_CUDA_GEMV_CUH

#include "common.cuh"

enum { GEMV_PLAIN = 0, GEMV_GATEUP = 1, GEMV_MOE_GATEUP = 2, GEMV_MOE_DOWN = 3 };

struct GemvArgs {
  float *y;            /* PLAIN/GATEUP: [ntok, ldy]; MOE_*: [npairs, ldy] */
  const float *x;      /* [ntok, ldx] (MOE_GATEUP: token = pair / topk; MOE_DOWN: row = pair) */
  const uint8_t *w, *w3; /* weights (GATEUP: w = W1, w3 = W3) */
  const float *s, *s3;   /* FP8 block scales */
  const dsv3_cuda_expert *experts;
  const int32_t *idx; /* MoE: expert of each pair */
  const int32_t *order; /* MoE, optional: the pairs sorted by expert; then blockIdx.x walks them and
                           blockIdx.y the row blocks, so the pairs of one expert run side by side
                           and the second reads the weights the first brought into L2 */
  const __half *xh;   /* tensor-core variant: x as f16 [rows, K] times 1 / xinv[row] */
  const float *xinv;
  int64_t ldx, ldy;
  int N, K, ntok, topk, wk;
  int accumulate;
};

__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/* chunk c (16 bytes) of each of R weight rows; a NULL row or c >= nc gives zeros */
template <int R>
__device__ __forceinline__ void load_chunk(const uint8_t *const (&wrow)[R], int c, int nc, uint4 (&wv)[R]) {
#pragma unroll
  for (int r = 0; r < R; r++) wv[r] = wrow[r] && c < nc ? ld_stream(wrow[r] + (int64_t)c * 16) : make_uint4(0, 0, 0, 0);
}

/* 16 e4m3 values -> bf16(v * s) as float */
__device__ __forceinline__ void deq16(const uint4 v, float s, float *w) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((u[i] >> (16 * h)) & 0xffffu), __NV_E4M3);
      float2 f = __half22float2(*reinterpret_cast<__half2 *>(&hr));
      __nv_bfloat162 b = __floats2bfloat162_rn(f.x * s, f.y * s);
      uint32_t bb = *reinterpret_cast<uint32_t *>(&b);
      w[4 * i + 2 * h] = bf16_lo(bb);
      w[4 * i + 2 * h + 1] = bf16_hi(bb);
    }
  }
}
/* 4 e4m3 values -> 2 bf16x2 pairs of bf16(v * s) (the same values as deq16, packed) */
__device__ __forceinline__ void deq4_bf16x2(uint32_t u, float s, uint32_t *p) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((u >> (16 * h)) & 0xffffu), __NV_E4M3);
    float2 f = __half22float2(*reinterpret_cast<__half2 *>(&hr));
    __nv_bfloat162 b = __floats2bfloat162_rn(f.x * s, f.y * s);
    p[h] = *reinterpret_cast<uint32_t *>(&b);
  }
}
/* 16 e4m3 values -> 8 bf16x2 pairs */
__device__ __forceinline__ void deq16_bf16x2(const uint4 v, float s, uint32_t *p) {
  deq4_bf16x2(v.x, s, p), deq4_bf16x2(v.y, s, p + 2), deq4_bf16x2(v.z, s, p + 4), deq4_bf16x2(v.w, s, p + 6);
}

__device__ __forceinline__ float silu_f(float g) { return g / (1.0f + __expf(-g)); }

/* where a block's weights, tokens and output rows come from */
struct GemvSrc {
  const uint8_t *w1, *w3; /* GATEUP: W1 and W3 */
  const float *s1, *s3;
  int64_t xrow; /* the row of x (of xh) of its first token */
  int nt, t0, yrow_moe; /* tokens of the tile and the first; MoE: the pair's output row */
};

/* The block's GemvSrc, for row block rb of nrows output rows.  false: the pair's expert lives on
 * another rank (its down-projection rows are zeroed here): the block has nothing more to do. */
template <int TT, int MODE>
__device__ __forceinline__ bool gemv_src(const GemvArgs &a, int rb, int nrows, GemvSrc &g) {
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  g.w1 = a.w, g.w3 = a.w3, g.s1 = a.s, g.s3 = a.s3, g.xrow = 0, g.t0 = 0, g.yrow_moe = 0;
  if (MOE) {
    const int pair = a.order ? a.order[blockIdx.x] : blockIdx.y;
    const dsv3_cuda_expert ex = a.experts[a.idx[pair]];
    if (ex.w1 == nullptr) { /* an expert of another rank: contributes nothing here */
      if (MODE == GEMV_MOE_DOWN)
        for (int i = threadIdx.x; i < nrows; i += blockDim.x) {
          int orow = rb * nrows + i;
          if (orow < a.N) a.y[(int64_t)pair * a.ldy + orow] = 0.f;
        }
      return false;
    }
    if (MODE == GEMV_MOE_GATEUP) {
      g.w1 = (const uint8_t *)ex.w1, g.w3 = (const uint8_t *)ex.w3, g.s1 = ex.s1, g.s3 = ex.s3;
      g.xrow = pair / a.topk;
    } else {
      g.w1 = (const uint8_t *)ex.w2, g.s1 = ex.s2;
      g.xrow = pair;
    }
    g.yrow_moe = pair;
    g.nt = 1;
  } else {
    g.t0 = blockIdx.y * TT;
    g.xrow = g.t0;
    g.nt = min(TT, a.ntok - g.t0);
  }
  return true;
}

/* Sums each warp's partial sums (acc) over the WK warps of its warp-row through red (8 x TT*R
 * floats of shared memory) and writes y (or adds to it); GATEUP: silu(g) * u. */
template <int TT, int R, int MODE>
__device__ __forceinline__ void gemv_store(const GemvArgs &a, const float (&acc)[TT][R], float (*red)[TT * R], int rb,
                                           int WR, int WK, const GemvSrc &g) {
  constexpr int RO = (MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP) ? R / 2 : R;
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int t = 0; t < TT; t++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = warp_sum(acc[t][r]);
      if (lane == 0) red[warp][t * R + r] = v;
    }
  __syncthreads();
  for (int i = threadIdx.x; i < WR * TT * RO; i += blockDim.x) {
    int gi = i / (TT * RO), rem = i % (TT * RO), t = rem / RO, r = rem % RO;
    int orow = rb * (WR * RO) + gi * RO + r;
    if (orow >= a.N || t >= g.nt) continue;
    float v = 0.f, u = 0.f;
    for (int k = 0; k < WK; k++) {
      v += red[gi * WK + k][t * R + r];
      if (RO != R) u += red[gi * WK + k][t * R + r + RO];
    }
    if (RO != R) v = silu_f(v) * u;
    int64_t yrow = MOE ? g.yrow_moe : g.t0 + t;
    float *yp = a.y + yrow * a.ldy + orow;
    *yp = a.accumulate ? *yp + v : v;
  }
}

template <int TT, int R, bool FP8, int MODE>
__global__ void __launch_bounds__(256) gemv_kernel(GemvArgs a) {
  constexpr int EPC = FP8 ? 16 : 8; /* elements per 16-byte chunk */
  constexpr int RO = (MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP) ? R / 2 : R; /* output rows per warp */
  const int WK = a.wk, WR = 8 / WK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wr = warp / WK, wkk = warp % WK;
  const int K = a.K, nbk = (K + 127) >> 7, nc = K / EPC;
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  /* one token with constant weights (the head, the router): the first chunk's weight loads go
   * out before the grid-dependency wait, in the shadow of the kernel that writes x */
  constexpr bool PRE = !MOE && TT == 1;
  const int rb = MOE && a.order ? blockIdx.y : blockIdx.x; /* row block */
  const int orow0 = rb * (WR * RO) + wr * RO;              /* first output row of this warp */
  if (!PRE) pdl_wait(), pdl_trigger(); /* launched with launch_pdl: the kernel before may still be running */
  GemvSrc g;
  if (!gemv_src<TT, MODE>(a, rb, WR * RO, g)) return;
  const int nt = g.nt;

  const uint8_t *wrow[R];
  const float *srow[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    int orow = orow0 + (r % RO);
    const uint8_t *W = (RO != R && r >= RO) ? g.w3 : g.w1;
    const float *S = (RO != R && r >= RO) ? g.s3 : g.s1;
    wrow[r] = orow < a.N ? W + (int64_t)orow * K * (FP8 ? 1 : 2) : nullptr;
    srow[r] = FP8 && orow < a.N ? S + (int64_t)(orow >> 7) * nbk : nullptr;
  }
  auto wload = [&](int c, uint4(&wv)[R]) { load_chunk(wrow, c, nc, wv); };
  const int c0 = wkk * 32 + lane, kstride = WK * 32;
  uint4 w0[R];
  if (PRE) {
    wload(c0, w0);
    pdl_wait(), pdl_trigger();
  }
  const float *x = a.x + g.xrow * a.ldx;

  float acc[TT][R];
#pragma unroll
  for (int t = 0; t < TT; t++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[t][r] = 0.f;

  auto step = [&](int c, const uint4(&wv)[R]) {
    float w[R][EPC];
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (FP8) deq16(wv[r], srow[r] ? __ldg(srow[r] + ((c * EPC) >> 7)) : 0.f, w[r]);
      else deq8(wv[r], w[r]);
    }
#pragma unroll
    for (int t = 0; t < TT; t++) {
      if (t < nt) {
        const float4 *xp = reinterpret_cast<const float4 *>(x + t * a.ldx + (int64_t)c * EPC);
#pragma unroll
        for (int q = 0; q < EPC / 4; q++) {
          float4 xv = __ldg(xp + q);
#pragma unroll
          for (int r = 0; r < R; r++) {
            acc[t][r] = fmaf(w[r][4 * q], xv.x, acc[t][r]);
            acc[t][r] = fmaf(w[r][4 * q + 1], xv.y, acc[t][r]);
            acc[t][r] = fmaf(w[r][4 * q + 2], xv.z, acc[t][r]);
            acc[t][r] = fmaf(w[r][4 * q + 3], xv.w, acc[t][r]);
          }
        }
      }
    }
  };
  int c = c0;
  if (PRE && c < nc) step(c, w0), c += kstride;
#pragma unroll 2
  for (; c < nc; c += kstride) {
    uint4 wv[R];
    wload(c, wv);
    step(c, wv);
  }

  __shared__ float red[8][TT * R];
  gemv_store<TT, R, MODE>(a, acc, red, rb, WR, WK, g);
}

/* ---------------------------------------------------------------- packed-f16 variant
 * One token, FP8 weights, with about a third of the register GEMV's instructions: the GEMV above
 * spends five per weight (e4m3 -> f16 -> f32, the scale, the bf16 rounding, the FMA) and is
 * bound by instruction issue at one token (o_proj 39.8 us where a kernel that only reads the
 * same bytes takes 28.0).  Here, per 16-byte chunk (16 weights of one 128-wide K block):
 *   - x: the thread's 16 values of x times 2^e, e chosen from the chunk's largest magnitude so
 *     that it lies in [16, 32), packed to 8 f16 pairs (shared by the R rows of the thread);
 *   - each row: the e4m3 codes converted exactly to f16 pairs (one instruction per two) and
 *     multiplied into two f16-pair sums of four products each (HFMA2): at most 4 x 448 x 32 =
 *     57344 < 65504, so nothing overflows; the four lanes are added in float32 and multiplied by
 *     the block scale times 2^-e into the float32 sum.
 * The official fp8_gemm's order (codes dotted per block, then the scale), like the tensor-core
 * variant.  Against the reference's bf16-rounded weights a product differs by up to 2^-9
 * relative (that rounding), x's f16 rounding 2^-11, and each four-term f16 sum adds a rounding
 * of 2^-11 of its magnitude (tests: 3e-3 of |W| |x|). */

/* 16 floats -> 8 f16 pairs times 2^e (largest magnitude in [16, 32)); returns 2^-e */
__device__ __forceinline__ float f16x2_pack16(const float4 (&v)[4], uint32_t (&xh)[8]) {
  float m = 0.f;
#pragma unroll
  for (int q = 0; q < 4; q++) m = fmaxf(m, fmaxf(fmaxf(fabsf(v[q].x), fabsf(v[q].y)), fmaxf(fabsf(v[q].z), fabsf(v[q].w))));
  /* m < 2^(E - 126) for a biased exponent E: m * 2^(131 - E) < 32, >= 16 when m is normal;
   * e <= 126 keeps 2^-e a normal float (m under 2^-121: the chunk is negligible anyway) */
  const int E = (int)((__float_as_uint(m) >> 23) & 0xffu);
  const int e = min(131 - E, 126);
  const float sc = __uint_as_float((uint32_t)(e + 127) << 23);
#pragma unroll
  for (int q = 0; q < 4; q++) {
    __half2 a = __floats2half2_rn(v[q].x * sc, v[q].y * sc), b = __floats2half2_rn(v[q].z * sc, v[q].w * sc);
    xh[2 * q] = *reinterpret_cast<uint32_t *>(&a);
    xh[2 * q + 1] = *reinterpret_cast<uint32_t *>(&b);
  }
  return __uint_as_float((uint32_t)(127 - e) << 23);
}
/* the same for 16 floats of x in global memory (16-byte aligned) */
__device__ __forceinline__ float x16_f16x2(const float *xp, uint32_t (&xh)[8]) {
  float4 v[4];
#pragma unroll
  for (int q = 0; q < 4; q++) v[q] = __ldg(reinterpret_cast<const float4 *>(xp) + q);
  return f16x2_pack16(v, xh);
}

/* the 16 e4m3 codes of w dotted with the 16 f16 values of xh: two f16-pair chains of four
 * products a lane, added in float32 */
__device__ __forceinline__ float dot16_f16x2(const uint4 w, const uint32_t (&xh)[8]) {
  const uint32_t u[4] = {w.x, w.y, w.z, w.w};
  __half2 h[2] = {__float2half2_rn(0.f), __float2half2_rn(0.f)};
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) {
      __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((u[i] >> (16 * j)) & 0xffffu), __NV_E4M3);
      h[i >> 1] = __hfma2(*reinterpret_cast<__half2 *>(&r), *reinterpret_cast<const __half2 *>(&xh[2 * i + j]), h[i >> 1]);
    }
  const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
  return (a.x + a.y) + (b.x + b.y);
}

/* gemv_kernel's layout at one token (TT = 1), FP8 only, with the packed-f16 arithmetic.  A
 * warp's R rows (R divides 128) share one 128-row scale block: one scale load a chunk (GATEUP:
 * one for W1, one for W3).  UNROLL: chunks whose loads are issued together. */
template <int R, int MODE, int UNROLL>
__global__ void __launch_bounds__(256, 2) gemv_h2_kernel(GemvArgs a) {
  constexpr bool GU = MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP;
  constexpr int RO = GU ? R / 2 : R;
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  static_assert(128 % RO == 0, "a warp's rows must lie in one scale block");
  const int WK = a.wk, WR = 8 / WK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wr = warp / WK, wkk = warp % WK;
  const int K = a.K, nbk = (K + 127) >> 7, nc = K / 16;
  const int rb = MOE && a.order ? blockIdx.y : blockIdx.x;
  const int orow0 = rb * (WR * RO) + wr * RO;
  /* the MoE's experts and pairs come from the kernels before: wait first.  Elsewhere the
   * weights are constant: the first chunk's loads go out before the wait, in the shadow of the
   * kernel that writes x. */
  if (MOE) pdl_wait(), pdl_trigger();
  GemvSrc g;
  if (!gemv_src<1, MODE>(a, rb, WR * RO, g)) return; /* MoE only */
  const bool any = orow0 < a.N;
  const float *s1 = any ? g.s1 + (int64_t)(orow0 >> 7) * nbk : nullptr;
  const float *s3 = any && GU ? g.s3 + (int64_t)(orow0 >> 7) * nbk : nullptr;
  const uint8_t *wrow[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int orow = orow0 + (r % RO);
    wrow[r] = orow < a.N ? ((GU && r >= RO) ? g.w3 : g.w1) + (int64_t)orow * K : nullptr;
  }
  auto wload = [&](int c, uint4(&wv)[R]) { load_chunk(wrow, c, nc, wv); };
  const int c0 = wkk * 32 + lane, kstride = WK * 32;
  uint4 w0[R];
  wload(c0, w0);
  if (!MOE) pdl_wait(), pdl_trigger();
  const float *x = a.x + g.xrow * a.ldx;
  float acc[1][R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[0][r] = 0.f;
  auto step = [&](int c, const uint4(&wv)[R]) {
    uint32_t xh[8];
    const float xi = x16_f16x2(x + (int64_t)c * 16, xh);
    const float f1 = any ? __ldg(s1 + (c >> 3)) * xi : 0.f, f3 = GU && any ? __ldg(s3 + (c >> 3)) * xi : 0.f;
#pragma unroll
    for (int r = 0; r < R; r++) acc[0][r] = fmaf(dot16_f16x2(wv[r], xh), GU && r >= RO ? f3 : f1, acc[0][r]);
  };
  if (c0 < nc) step(c0, w0);
#pragma unroll UNROLL
  for (int c = c0 + kstride; c < nc; c += kstride) {
    uint4 wv[R];
    wload(c, wv);
    step(c, wv);
  }

  __shared__ float red[8][R];
  gemv_store<1, R, MODE>(a, acc, red, rb, WR, WK, g);
}

/* launch gemv_h2_kernel for R rows a warp (gemv_h2_shape; 16: one chunk's loads at a time,
 * 4 and 2: two chunks') */
template <int MODE>
static void gemv_h2_launch(const GemvArgs &a, int R, dim3 grid, cudaStream_t st) {
  switch (R) {
  case 16: launch_pdl(gemv_h2_kernel<16, MODE, 1>, grid, dim3(256), 0, st, a); break;
  case 4: launch_pdl(gemv_h2_kernel<4, MODE, 2>, grid, dim3(256), 0, st, a); break;
  default: launch_pdl(gemv_h2_kernel<2, MODE, 2>, grid, dim3(256), 0, st, a); break;
  }
}

/* ---------------------------------------------------------------- tensor-core variant
 * The decode GEMV with the official fp8_gemm's order of operations, on the tensor cores: for each
 * 128-wide K block, the dot product of the raw e4m3 codes (converted exactly to f16, one
 * instruction per two) with x, accumulated in float32 by mma.sync.m16n8k16, then multiplied by
 * the block's scale and added up in float32.  The register GEMV above spends about five
 * instructions per weight (e4m3 -> f16 -> f32, the scale, bf16 rounding, the FMA) and was
 * bound by instruction issue (FP8 GEMVs 3.0-3.2 TB/s where the BF16 head reads 4.6 TB/s); here
 * a weight costs half a conversion and a sixteenth of an mma issue.
 *
 * x: f16, scaled per row by a power of two (x_f16_kernel) so its largest magnitude lies in
 * [2^14, 2^15): no overflow, and 11 significant bits where bf16 keeps 8; the power of two is
 * divided out at the end.  The weights are not rounded to bf16 after scaling, as the official
 * bf16 path (weight_dequant) does: each product differs from it by at most 2^-9 relative, the
 * rounding of a bf16 weight (tests: against |W| |x|).
 *
 * Layout: a warp owns a 16-row tile (GATEUP: 8 output rows, W1 in tile rows 0-7 and W3 in rows
 * 8-15, so the gate and up sums of a row land in the same lane) and walks K in 128-wide blocks,
 * the block's WK warps taking every WK-th.  Lane (g = lane / 4, t = lane % 4) loads the 16 bytes
 * at 16t and at 64 + 16t of rows g and g + 8 (128 contiguous bytes per row and four lanes), and
 * the same 32 positions of x for token g; mma j takes the j-th 4-byte word of each: a K order
 * permuted identically for A and B, so nothing is shuffled.  Up to 8 tokens (the n of the mma);
 * the next block's loads are issued before the current block's mmas. */
struct GemvTcFrag {
  uint4 a0, a1, b0, b1; /* rows g (a) and g + 8 (b): bytes 16t.. and 64 + 16t.. of the K block */
  uint4 x0, x1, x2, x3; /* x of token g at the same positions (f16) */
};

__device__ __forceinline__ uint32_t e4m3x2_f16x2(uint32_t u) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(u & 0xffffu), __NV_E4M3);
  return (uint32_t)h.x | ((uint32_t)h.y << 16);
}
/* c = a (16x16, row) * b (16x8, col), f16 in, f32 accumulate; not volatile: no side effects, the
 * compiler may schedule the next block's loads around it */
__device__ __forceinline__ void mma16816_f16(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                             uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One row of K values (quads of float4, row(i) for i < K / 4) -> out [K] f16 times 2^e (the
 * row's largest magnitude in [2^14, 2^15), e clamped to [-126, 120]), *inv = 2^-e; by a whole
 * block, loads unrolled so a 16K-wide row takes one round trip a pass.  perm (K % 64 == 0): in
 * the k order of the wgmma grouped MoE kernel (moe.cu, perm_k), else as is. */
template <typename F>
__device__ __forceinline__ void row_to_f16(__half *out, float *inv, int K, F row, bool perm = false) {
  float m = 0.f;
#pragma unroll 8
  for (int i = threadIdx.x; i < K / 4; i += blockDim.x) {
    const float4 v = row(i);
    m = fmaxf(m, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  }
  m = block_max(m);
  int e = 0;
  if (m > 0.f && m <= 3.4e38f) {
    (void)frexpf(m, &e); /* m < 2^e */
    e = min(max(15 - e, -126), 120);
  }
  const float sc = ldexpf(1.f, e);
  __half2 *o = reinterpret_cast<__half2 *>(out);
#pragma unroll 8
  for (int i = threadIdx.x; i < K / 4; i += blockDim.x) {
    const float4 v = row(i);
    /* perm: k = 64b + 16q + 4s + e (e < 4) goes to 64b + 16s + 2q + e (e < 2), + 8 (e >= 2) */
    const int j = perm ? (i & ~15) * 2 + (i & 3) * 8 + ((i >> 2) & 3) : 2 * i, j2 = perm ? j + 4 : j + 1;
    o[j] = __floats2half2_rn(v.x * sc, v.y * sc);
    o[j2] = __floats2half2_rn(v.z * sc, v.w * sc);
  }
  if (threadIdx.x == 0) *inv = ldexpf(1.f, -e);
}

/* x [rows, ldx] float32 -> xh [rows, K] f16 (row_to_f16), one block of 512 a row, row src[r]
 * of x (src NULL: row r).  K % 4 == 0, x 16-byte aligned. */
static __global__ void __launch_bounds__(512) x_f16_kernel(__half *xh, float *inv, const float *x, int64_t ldx, int K,
                                                           const int32_t *src, bool perm = false) {
  pdl_wait();
  pdl_trigger();
  const float4 *xr = reinterpret_cast<const float4 *>(x + (src ? src[blockIdx.x] : blockIdx.x) * ldx);
  row_to_f16(xh + (int64_t)blockIdx.x * K, inv + blockIdx.x, K, [&](int i) { return xr[i]; }, perm);
}

template <int MODE>
__global__ void __launch_bounds__(256) gemv_tc_kernel(GemvArgs a) {
  constexpr bool GU = MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP;
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  constexpr int RO = GU ? 8 : 16; /* output rows per warp */
  const int WK = a.wk, WR = 8 / WK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wr = warp / WK, wkk = warp % WK;
  const int K = a.K, nbk = (K + 127) >> 7;
  const int rb = MOE && a.order ? blockIdx.y : blockIdx.x;
  const int orow0 = rb * (WR * RO) + wr * RO;
  /* the MoE's expert table and pairs come from the kernels before: wait first.  The plain and
   * gate/up weights are constant: the first K block's weight loads go out before the wait, in
   * the shadow of the kernel that writes x (x_f16_kernel). */
  if (MOE) pdl_wait();
  GemvSrc s;
  if (!gemv_src<8, MODE>(a, rb, WR * RO, s)) {
    if (!MOE) pdl_wait();
    pdl_trigger();
    return;
  }
  const int ra = orow0 + g, rbw = GU ? orow0 + g : orow0 + g + 8;
  const bool va = ra < a.N, vb = rbw < a.N;
  const uint8_t *pa = va ? s.w1 + (int64_t)ra * K + 16 * t : nullptr;
  const uint8_t *pb = vb ? (GU ? s.w3 : s.w1) + (int64_t)rbw * K + 16 * t : nullptr;
  const float *sa = va ? s.s1 + (int64_t)(ra >> 7) * nbk : nullptr;
  const float *sb = vb ? (GU ? s.s3 : s.s1) + (int64_t)(rbw >> 7) * nbk : nullptr;
  const uint4 z = make_uint4(0, 0, 0, 0);
  auto wload = [&](int kb, GemvTcFrag &f) {
    const int k0 = kb * 128;
    const bool h2 = k0 + 64 < K; /* the block's second half (K % 128 == 64: not in the last block) */
    f.a0 = va ? ld_stream(pa + k0) : z;
    f.b0 = vb ? ld_stream(pb + k0) : z;
    f.a1 = va && h2 ? ld_stream(pa + k0 + 64) : z;
    f.b1 = vb && h2 ? ld_stream(pb + k0 + 64) : z;
  };
  GemvTcFrag cur, nxt;
  int kb = wkk;
  if (kb < nbk) wload(kb, cur);
  if (!MOE) pdl_wait();
  pdl_trigger();
  const bool vx = g < s.nt;
  const __half *px = vx ? a.xh + (s.xrow + g) * (int64_t)K + 16 * t : nullptr;
  auto xload = [&](int kb, GemvTcFrag &f) {
    const int k0 = kb * 128;
    const bool h2 = k0 + 64 < K;
    const uint4 *xp = reinterpret_cast<const uint4 *>(px + k0);
    f.x0 = vx ? __ldg(xp) : z;
    f.x1 = vx ? __ldg(xp + 1) : z;
    f.x2 = vx && h2 ? __ldg(xp + 8) : z;
    f.x3 = vx && h2 ? __ldg(xp + 9) : z;
  };
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (kb < nbk) xload(kb, cur);
  for (; kb < nbk; kb += WK) {
    if (kb + WK < nbk) wload(kb + WK, nxt), xload(kb + WK, nxt);
    const uint32_t wa[8] = {cur.a0.x, cur.a0.y, cur.a0.z, cur.a0.w, cur.a1.x, cur.a1.y, cur.a1.z, cur.a1.w};
    const uint32_t wb[8] = {cur.b0.x, cur.b0.y, cur.b0.z, cur.b0.w, cur.b1.x, cur.b1.y, cur.b1.z, cur.b1.w};
    const uint32_t xv[16] = {cur.x0.x, cur.x0.y, cur.x0.z, cur.x0.w, cur.x1.x, cur.x1.y, cur.x1.z, cur.x1.w,
                             cur.x2.x, cur.x2.y, cur.x2.z, cur.x2.w, cur.x3.x, cur.x3.y, cur.x3.z, cur.x3.w};
    float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f}; /* two chains: half the mma latency */
#pragma unroll
    for (int j = 0; j < 8; j++)
      mma16816_f16(j & 1 ? c1 : c0, e4m3x2_f16x2(wa[j]), e4m3x2_f16x2(wb[j]), e4m3x2_f16x2(wa[j] >> 16),
                   e4m3x2_f16x2(wb[j] >> 16), xv[2 * j], xv[2 * j + 1]);
    const float ska = va ? __ldg(sa + kb) : 0.f, skb = vb ? __ldg(sb + kb) : 0.f;
    acc[0] = fmaf(c0[0] + c1[0], ska, acc[0]);
    acc[1] = fmaf(c0[1] + c1[1], ska, acc[1]);
    acc[2] = fmaf(c0[2] + c1[2], skb, acc[2]);
    acc[3] = fmaf(c0[3] + c1[3], skb, acc[3]);
    cur = nxt;
  }

  /* lane (g, t) holds rows g (acc 0, 1) and g + 8 (acc 2, 3) for tokens 2t and 2t + 1 */
  __shared__ float red[8][4][32];
#pragma unroll
  for (int c = 0; c < 4; c++) red[warp][c][lane] = acc[c];
  __syncthreads();
  for (int i = threadIdx.x; i < WR * RO * 8; i += blockDim.x) {
    const int w = i / (RO * 8), r = (i / 8) % RO, tok = i % 8;
    const int orow = rb * (WR * RO) + w * RO + r;
    if (orow >= a.N || tok >= s.nt) continue;
    const int l = (r & 7) * 4 + tok / 2, c = (r >= 8 ? 2 : 0) + (tok & 1);
    float v = 0.f, u = 0.f;
    for (int k = 0; k < WK; k++) {
      v += red[w * WK + k][c][l];
      if (GU) u += red[w * WK + k][c + 2][l];
    }
    const float xi = a.xinv[s.xrow + tok];
    v *= xi;
    if (GU) v = silu_f(v) * (u * xi);
    const int64_t yrow = MOE ? s.yrow_moe : s.t0 + tok;
    float *yp = a.y + yrow * a.ldy + orow;
    *yp = a.accumulate ? *yp + v : v;
  }
}

/* K split of the tensor-core variant: the fewest warps per tile (1, 2, 4, 8) that give the
 * grid 4 blocks a multiprocessor, keeping 2 K blocks a warp */
static inline int gemv_tc_wk(int64_t tiles, int K, int64_t yblocks, int sms) {
  const int nbk = (K + 127) / 128;
  int wk = 1;
  while (wk < 8 && cdiv(tiles, 8 / wk) * yblocks < 4 * (int64_t)sms && nbk >= 4 * wk) wk *= 2;
  return wk;
}

/* Convert a.x rows [0, xrows) (leading dimension a.ldx, K = a.K) into xh / xinv and launch
 * gemv_tc_kernel<MODE> over yb token tiles or pairs (pair_major: the MoE's expert-sorted grid). */
template <int MODE>
static void gemv_tc_launch(GemvArgs a, int64_t xrows, __half *xh, float *xinv, int64_t yb, bool pair_major, int sms,
                           cudaStream_t st) {
  launch_pdl(x_f16_kernel, dim3((unsigned)xrows), dim3(512), 0, st, xh, xinv, a.x, a.ldx, a.K, (const int32_t *)nullptr, false);
  a.xh = xh, a.xinv = xinv;
  const int RO = MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP ? 8 : 16;
  const int64_t tiles = cdiv(a.N, RO);
  a.wk = gemv_tc_wk(tiles, a.K, yb, sms);
  const unsigned nrb = (unsigned)cdiv(tiles, 8 / a.wk);
  const dim3 grid = pair_major ? dim3((unsigned)yb, nrb) : dim3(nrb, (unsigned)yb);
  launch_pdl(gemv_tc_kernel<MODE>, grid, dim3(256), 0, st, a);
}

/* whether ntok tokens (up to most) take the tensor-core variant (dsv3_cuda_gemv_tc: 1 from 2
 * tokens, 2 from 1) */
static inline bool dsv3_cuda_tc_tokens(int64_t ntok, int64_t most) {
  return ntok <= most && (dsv3_cuda_gemv_tc == 2 || (dsv3_cuda_gemv_tc == 1 && ntok >= 2));
}

/* linear.cu: x into scratch as f16, then gemv_tc_kernel<mode> (mode: GEMV_*) */
int dsv3_gemv_tc_run(dsv3_cuda_ctx *ctx, GemvArgs a, int mode, int64_t xrows, int64_t yb, bool pair_major, const char *op);

/* Pick the split of K across warps (WK) and weight rows per warp (R: rbig or rsmall; a warp
 * writes R / rodiv output rows) so that the grid has at least two blocks per multiprocessor
 * (eight where splitting K allows), keeping at least two chunks per thread where possible. */
static inline void gemv_shape(int N, int K, int epc, int64_t yblocks, int sms, int rbig, int rsmall, int rodiv, int *R,
                              int *WK) {
  int nc = K / epc;
  /* rbig rows a warp, K split further (up to 8 warps) while a one-tile grid is under 8 blocks
   * an SM: 2-3 waves leave a partial last wave idle (o_proj 7168 x 16384 at T=1 on an H200:
   * 448 blocks 46.9 us, 1792 blocks 40.6 us).  Grids of several token tiles keep 2 (at batch
   * 32 the deeper split cost 0.8 ms a step). */
  const int64_t target = (yblocks == 1 ? 8 : 2) * (int64_t)sms;
  int best = 0;
  int64_t bnb = 0;
  for (int wk = 1; wk <= 8; wk *= 2) {
    if (wk > 1 && nc < 64 * wk) break;
    best = wk, bnb = cdiv(N, (int64_t)(8 / wk) * (rbig / rodiv)) * yblocks;
    if (bnb >= target) break;
  }
  if (bnb >= 2 * sms) {
    *R = rbig, *WK = best;
    return;
  }
  for (int wk = 1; wk <= 8; wk *= 2) { /* rsmall rows a warp: more warps for narrow matrices */
    if (wk > 1 && nc < 64 * wk) break;
    if (cdiv(N, (int64_t)(8 / wk) * (rsmall / rodiv)) * yblocks >= 2 * sms) {
      *R = rsmall, *WK = wk;
      return;
    }
  }
  *R = rsmall;
  int wk = 1;
  while (wk < 8 && nc >= 64 * wk * 2) wk *= 2;
  *WK = wk;
}

/* The packed-f16 variant's shape: the most rows a warp (16, else 4, else 2; at most
 * dsv3_cuda_h2_rbig) whose grid fills the multiprocessors twice, with K split over the fewest
 * warps (1, 2, 4, 8; at least a chunk a lane, two with 16 rows) that make 8 blocks a
 * multiprocessor, else the most.  H200, one token (us, 16 / 8 / 4 rows): o_proj 32.7 / 42.1 /
 * 36.4, dense down 35.8 / 50.5 / 42.3 (16 rows: 128 registers, 2 blocks an SM, a chunk's x
 * conversion shared by 16 rows; 8: 74 registers, 3 blocks; 4: 60, 4 blocks).  The MoE's 9
 * one-token pairs took K unsplit before (288 blocks for 264 slots: a second wave of 24;
 * gate/up 90 us under ncu). */
static inline void gemv_h2_shape(int N, int K, int64_t yblocks, int sms, int rodiv, int *R, int *WK) {
  const int rs[3] = {16, 4, 2}, nc = K / 16;
  *R = 2, *WK = 1;
  for (int i = 0; i < 3; i++) {
    if (rs[i] > dsv3_cuda_h2_rbig && rs[i] > 2) continue;
    int64_t nb = 0;
    int wk = 1;
    for (int w = 1; w <= 8; w *= 2) {
      if (w > 1 && nc < (rs[i] >= 16 ? 64 : 32) * w) break; /* 16 rows: two chunks a lane at least */
      wk = w, nb = cdiv(N, (int64_t)(8 / w) * (rs[i] / rodiv)) * yblocks;
      if (nb >= 8 * (int64_t)sms) break;
    }
    *R = rs[i], *WK = wk;
    if (nb >= 2 * (int64_t)sms) return;
  }
}

#endif
