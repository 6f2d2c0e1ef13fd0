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
  const float *s1, *s3, *x;
  int nt, t0, yrow_moe; /* tokens of the tile and the first; MoE: the pair's output row */
};

/* The block's GemvSrc, for row block rb of nrows output rows.  false: the pair's expert lives on
 * another rank (its down-projection rows are zeroed here): the block has nothing more to do. */
template <int TT, int MODE>
__device__ __forceinline__ bool gemv_src(const GemvArgs &a, int rb, int nrows, GemvSrc &g) {
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  g.w1 = a.w, g.w3 = a.w3, g.s1 = a.s, g.s3 = a.s3, g.x = a.x, g.t0 = 0, g.yrow_moe = 0;
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
      g.x += (int64_t)(pair / a.topk) * a.ldx;
    } else {
      g.w1 = (const uint8_t *)ex.w2, g.s1 = ex.s2;
      g.x += (int64_t)pair * a.ldx;
    }
    g.yrow_moe = pair;
    g.nt = 1;
  } else {
    g.t0 = blockIdx.y * TT;
    g.x += (int64_t)g.t0 * a.ldx;
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
  const int rb = MOE && a.order ? blockIdx.y : blockIdx.x; /* row block */
  const int orow0 = rb * (WR * RO) + wr * RO;              /* first output row of this warp */
  pdl_wait(); /* launched with launch_pdl: the kernel before may still be running */
  pdl_trigger();
  GemvSrc g;
  if (!gemv_src<TT, MODE>(a, rb, WR * RO, g)) return;
  const float *x = g.x;
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

  float acc[TT][R];
#pragma unroll
  for (int t = 0; t < TT; t++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[t][r] = 0.f;

  const int kstride = WK * 32;
#pragma unroll 2
  for (int c = wkk * 32 + lane; c < nc; c += kstride) {
    uint4 wv[R];
#pragma unroll
    for (int r = 0; r < R; r++) wv[r] = wrow[r] ? ld_stream(wrow[r] + (int64_t)c * 16) : make_uint4(0, 0, 0, 0);
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
  }

  __shared__ float red[8][TT * R];
  gemv_store<TT, R, MODE>(a, acc, red, rb, WR, WK, g);
}

/* ---------------------------------------------------------------- ring variant (opt-in)
 * The same sums for up to 2 tokens, with the weight chunks brought in by cp.async (L2 only)
 * through a per-thread ring of GEMV_RING_STAGES(R) stages in shared memory: while a thread
 * dequantises chunk i, chunks i + 1 .. i + S - 1 of its rows are in flight whatever the
 * registers and the dequantisation cost, and R can be 8 rows a warp (each x chunk, loaded once,
 * serves 8 rows: half the x traffic from L2 of R = 4).  Each thread reads only the slots it
 * filled, so cp.async.wait_group is the only synchronisation.  Per row, the products are summed
 * in the same order as gemv_kernel: the two give the same bits.  Off by default until measured
 * (DSV3_CUDA_GEMV_RING=1, dsv3_cuda_gemv_ring). */
#ifndef DSV3_GEMV_RING_STAGES
#define GEMV_RING_STAGES(R) ((R) >= 8 ? 2 : (R) == 4 ? 3 : 12 / (R))
#else
#define GEMV_RING_STAGES(R) (DSV3_GEMV_RING_STAGES)
#endif
/* the ring's shared memory: 64 KB at R = 8 (past the 48 KB default: the launch opts in), 48 KB
 * below */
static inline size_t gemv_ring_smem(int R) { return (size_t)GEMV_RING_STAGES(R) * R * 256 * 16; }

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

template <int TT, int R, bool FP8, int MODE>
__global__ void __launch_bounds__(256) gemv_ring_kernel(GemvArgs a) {
  static_assert(TT <= 2, "the ring variant keeps every token's x chunk in registers: up to 2 tokens");
  constexpr int EPC = FP8 ? 16 : 8;
  constexpr int RO = (MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP) ? R / 2 : R;
  constexpr int S = GEMV_RING_STAGES(R);
  static_assert(128 % RO == 0 && S >= 2, "a warp's rows of one matrix share their scale row");
  constexpr bool MOE = MODE == GEMV_MOE_GATEUP || MODE == GEMV_MOE_DOWN;
  const int WK = a.wk, WR = 8 / WK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wr = warp / WK, wkk = warp % WK;
  const int K = a.K, nbk = (K + 127) >> 7, nc = K / EPC;
  const int rb = MOE && a.order ? blockIdx.y : blockIdx.x;
  const int orow0 = rb * (WR * RO) + wr * RO; /* a multiple of RO: rows orow0 .. + RO - 1 share a scale row */
  pdl_wait();
  pdl_trigger();
  GemvSrc g;
  if (!gemv_src<TT, MODE>(a, rb, WR * RO, g)) return;

  /* warp rows r < RO: W1 row orow0 + r; r >= RO (GATEUP): W3 row orow0 + r - RO */
  const int64_t rowb = (int64_t)K * (FP8 ? 1 : 2);
  const int nvalid = min(RO, a.N - orow0); /* rows of each matrix that exist (<= 0: none) */
  const uint8_t *b1 = g.w1 + (int64_t)orow0 * rowb, *b3 = RO != R ? g.w3 + (int64_t)orow0 * rowb : nullptr;
  const float *sc1 = FP8 ? g.s1 + (int64_t)(orow0 >> 7) * nbk : nullptr;
  const float *sc3 = FP8 && RO != R ? g.s3 + (int64_t)(orow0 >> 7) * nbk : nullptr;

  /* stage st, row r of this thread at ring[(st * R + r) * 256]: consecutive threads, consecutive
   * 16 bytes (no bank conflicts) */
  extern __shared__ uint4 gemv_ring[];
  uint4 *ring = gemv_ring + threadIdx.x;
  const int kstride = WK * 32, c0 = wkk * 32 + lane;
  const int niter = c0 < nc && nvalid > 0 ? (nc - 1 - c0) / kstride + 1 : 0;
  auto issue = [&](int it) { /* chunk it of each row into stage it % S; one group either way */
    if (it < niter) {
      const int64_t off = (int64_t)(c0 + it * kstride) * 16;
      uint4 *d = ring + (it % S) * (R * 256);
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r % RO < nvalid) cp_async16(d + r * 256, (r < RO ? b1 : b3) + (r % RO) * rowb + off, 16);
    }
    cp_async_commit();
  };

  float acc[TT][R];
#pragma unroll
  for (int t = 0; t < TT; t++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[t][r] = 0.f;
#pragma unroll
  for (int st = 0; st < S - 1; st++) issue(st);
  for (int it = 0; it < niter; it++) {
    issue(it + S - 1); /* refills the stage read in the previous iteration */
    const int c = c0 + it * kstride;
    float xv[TT][EPC];
#pragma unroll
    for (int t = 0; t < TT; t++) {
      const float4 *xp = reinterpret_cast<const float4 *>(g.x + t * a.ldx + (int64_t)c * EPC);
#pragma unroll
      for (int q = 0; q < EPC / 4; q++) {
        const float4 v = t < g.nt ? __ldg(xp + q) : make_float4(0.f, 0.f, 0.f, 0.f);
        xv[t][4 * q] = v.x, xv[t][4 * q + 1] = v.y, xv[t][4 * q + 2] = v.z, xv[t][4 * q + 3] = v.w;
      }
    }
    const float s1 = FP8 ? __ldg(sc1 + ((c * EPC) >> 7)) : 0.f;
    const float s3 = FP8 && RO != R ? __ldg(sc3 + ((c * EPC) >> 7)) : 0.f;
    cp_async_wait<S - 1>(); /* this thread's chunk it has landed */
    const uint4 *src = ring + (it % S) * (R * 256);
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r % RO >= nvalid) continue;
      float w[EPC];
      if (FP8) deq16(src[r * 256], r < RO ? s1 : s3, w);
      else deq8(src[r * 256], w);
#pragma unroll
      for (int t = 0; t < TT; t++)
#pragma unroll
        for (int e = 0; e < EPC; e++) acc[t][r] = fmaf(w[e], xv[t][e], acc[t][r]);
    }
  }
  /* the ring's memory holds the cross-warp sums once every thread is done reading it (no copy
   * is in flight: chunks past niter are never issued) */
  static_assert(8 * TT * R * 4 <= S * R * 256 * 16, "ring too small for the partial sums");
  __syncthreads();
  gemv_store<TT, R, MODE>(a, acc, reinterpret_cast<float(*)[TT * R]>(gemv_ring), rb, WR, WK, g);
}

/* Blocks of gemv_ring_kernel<TT, R, FP8, MODE> that fit an SM at once (its shared memory and
 * registers), after opting into its shared memory.  Both are done outside a graph capture only:
 * a capture follows an eager run of the same step on the same device, which has done them. */
template <int TT, int R, bool FP8, int MODE>
static int gemv_ring_resident(cudaStream_t st) {
  static int resident = 0;
  const size_t smem = gemv_ring_smem(R);
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(st, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusNone) {
    /* per device, so every time; a failure shows as the launch's */
    if (smem > 48 * 1024 && cudaFuncSetAttribute(gemv_ring_kernel<TT, R, FP8, MODE>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
      (void)cudaGetLastError();
    int n = 0;
    if (!resident) {
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_ring_kernel<TT, R, FP8, MODE>, 256, smem) == cudaSuccess)
        resident = n;
      else
        (void)cudaGetLastError();
    }
  }
  return resident > 0 ? resident : 1;
}

/* The ring variant's split of K over the warps (WK), for `rows` warp-rows of work a tile and yb
 * tiles, blocks of 8 / WK warp-rows, `slots` blocks resident on the GPU at once.  The blocks of
 * a wave take about as long each, so a last wave a quarter full costs about a whole one (the
 * register kernel's o_proj on an H200: 448 blocks, 2-3 waves, 46.9 us; 1792 blocks 40.6 us).
 * The smallest WK (fewest, largest blocks) whose waves end at least 85% full, else the fullest;
 * WK > 1 keeps two 16-byte chunks a thread at least.  A guess until measured. */
static inline int gemv_ring_wk(int64_t rows, int nc, int64_t yb, int64_t slots) {
  int best = 1;
  double bestq = 1e30;
  for (int wk = 1; wk <= 8; wk *= 2) {
    if (wk > 1 && nc < 64 * wk) break;
    const double w = (double)(cdiv(rows, 8 / wk) * yb) / (double)slots; /* waves of work */
    const double q = ceil(w) / w;                                        /* waves of time per wave of work */
    if (q <= 1.0 / 0.85) return wk;
    if (q < bestq) best = wk, bestq = q;
  }
  return best;
}

/* Launch the ring variant for a.N rows (R / 2 per matrix and warp in the gate/up modes) and yb
 * token tiles or MoE pairs (pair_major: grid.x walks the pairs, as with a.order). */
template <int TT, int R, bool FP8, int MODE>
static void gemv_ring_launch(GemvArgs a, int64_t yb, bool pair_major, int sms, cudaStream_t st) {
  constexpr int RO = (MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP) ? R / 2 : R;
  const int64_t slots = (int64_t)gemv_ring_resident<TT, R, FP8, MODE>(st) * sms;
  const int64_t warps_rows = cdiv(a.N, RO); /* warp-rows of work a tile */
  a.wk = gemv_ring_wk(warps_rows, a.K / (FP8 ? 16 : 8), yb, slots);
  const unsigned rb = (unsigned)cdiv(a.N, (int64_t)(8 / a.wk) * RO);
  const dim3 grid = pair_major ? dim3((unsigned)yb, rb) : dim3(rb, (unsigned)yb);
  launch_pdl(gemv_ring_kernel<TT, R, FP8, MODE>, grid, dim3(256), gemv_ring_smem(R), st, a);
}

/* The ring variant with R = 8 rows a warp, or the narrow matrices' 1 (2 in the gate/up modes) */
template <int TT, bool FP8, int MODE>
static void gemv_ring_go(const GemvArgs &a, int R, int64_t yb, bool pair_major, int sms, cudaStream_t st) {
  constexpr int RS = (MODE == GEMV_GATEUP || MODE == GEMV_MOE_GATEUP) ? 2 : 1;
  if (R == 8) gemv_ring_launch<TT, 8, FP8, MODE>(a, yb, pair_major, sms, st);
  else gemv_ring_launch<TT, RS, FP8, MODE>(a, yb, pair_major, sms, st);
}

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

#endif
