/* skinny.cu - tensor-core skinny GEMM for 3..64 tokens (batched decode): y = x W^T with the FP8
 * (or BF16) weight read once for all tokens, dequantised in registers to bf16 and fed to
 * mma.sync.m16n8k16 (bf16 x bf16 -> f32) with the tokens as the n dimension.
 *
 * A warp owns a 16-row tile and walks 64-wide K chunks (the 8 warps of a block split K).  Lane
 * (g = lane / 4, q = lane % 4) loads 16 consecutive weights of rows g and g + 8 at k = 16q
 * (16-byte loads) and 16 consecutive x values of token g of each 8-token tile; the k order
 * inside the chunk is permuted identically for A and B (the sum does not care), so no shuffles
 * or shared memory are needed before the mma.  x is rounded to bf16 (as the prefill GEMM). */
#include "gemv.cuh"

/* 16 weights of one row at k0 as 8 bf16 pairs */
template <bool FP8>
__device__ __forceinline__ void load_row16(uint32_t *p, const uint8_t *W, const float *S, int row, int N, int K, int nbk,
                                           int k0) {
  if (row >= N) {
#pragma unroll
    for (int i = 0; i < 8; i++) p[i] = 0;
    return;
  }
  if (FP8) {
    deq16_bf16x2(ld_stream(W + (int64_t)row * K + k0), __ldg(S + (int64_t)(row >> 7) * nbk + (k0 >> 7)), p);
  } else {
    const uint8_t *src = W + ((int64_t)row * K + k0) * 2;
    uint4 u = ld_stream(src), v = ld_stream(src + 16);
    p[0] = u.x, p[1] = u.y, p[2] = u.z, p[3] = u.w, p[4] = v.x, p[5] = v.y, p[6] = v.z, p[7] = v.w;
  }
}

template <int NT, bool FP8>
__global__ void __launch_bounds__(256) skinny_mma_kernel(float *y, const float *x, int ntok, const uint8_t *W, const float *S,
                                                         int N, int K, int accumulate) {
  __shared__ float red[8][NT][32][4];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int row0 = blockIdx.x * 16, t0 = blockIdx.y * NT * 8, nbk = (K + 127) >> 7, nch = K >> 6;
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  for (int ch = warp; ch < nch; ch += 8) {
    const int k0 = ch * 64 + q * 16;
    uint32_t pa[8], pb[8];
    load_row16<FP8>(pa, W, S, row0 + g, N, K, nbk, k0);
    load_row16<FP8>(pb, W, S, row0 + g + 8, N, K, nbk, k0);
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int t = t0 + j * 8 + g;
      uint32_t px[8];
      if (t < ntok) {
        const float4 *xp = reinterpret_cast<const float4 *>(x + (int64_t)t * K + k0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float4 v = __ldg(xp + i);
          px[2 * i] = pack_bf16(v.x, v.y);
          px[2 * i + 1] = pack_bf16(v.z, v.w);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) px[i] = 0;
      }
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const uint32_t a[4] = {pa[2 * s], pb[2 * s], pa[2 * s + 1], pb[2 * s + 1]};
        mma16816(acc[j], a, px[2 * s], px[2 * s + 1]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int c = 0; c < 4; c++) red[warp][j][lane][c] = acc[j][c];
  __syncthreads();
  for (int i = threadIdx.x; i < NT * 128; i += 256) {
    const int j = i >> 7, l = (i >> 2) & 31, c = i & 3;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < 8; w++) v += red[w][j][l][c];
    const int row = row0 + (l >> 2) + (c >= 2 ? 8 : 0), t = t0 + j * 8 + (l & 3) * 2 + (c & 1);
    if (row < N && t < ntok) {
      float *yp = y + (int64_t)t * N + row;
      *yp = accumulate ? *yp + v : v;
    }
  }
}

extern "C" int dsv3_cuda_gemv_mma(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                                  int accumulate) {
  if (ntok <= 0) return 0;
  const bool fp8 = w->dtype == DSV3_F8_E4M3;
  if (!(fp8 || w->dtype == DSV3_BF16) || w->cols % 64 || ((uintptr_t)w->data & 15) || ((uintptr_t)x & 15) ||
      w->rows >= (1ll << 31) || w->cols >= (1ll << 31) || (fp8 && !w->scale))
    return dsv3_cuda_gemv(ctx, y, x, ntok, w, accumulate); /* shapes the mma tiles do not cover */
  const int NT = ntok <= 16 ? 2 : ntok <= 32 ? 4 : 8;
  const int64_t yb = cdiv(ntok, NT * 8);
  CU_ARG("gemv mma", yb < 65536, "too many tokens (%lld)", (long long)ntok);
  dim3 grid((unsigned)cdiv(w->rows, 16), (unsigned)yb);
  const uint8_t *W = (const uint8_t *)w->data;
  const int N = (int)w->rows, K = (int)w->cols, T = (int)ntok;
  cudaStream_t st = ctx->stream;
  if (fp8) {
    if (NT == 2) skinny_mma_kernel<2, true><<<grid, 256, 0, st>>>(y, x, T, W, w->scale, N, K, accumulate);
    else if (NT == 4) skinny_mma_kernel<4, true><<<grid, 256, 0, st>>>(y, x, T, W, w->scale, N, K, accumulate);
    else skinny_mma_kernel<8, true><<<grid, 256, 0, st>>>(y, x, T, W, w->scale, N, K, accumulate);
  } else {
    if (NT == 2) skinny_mma_kernel<2, false><<<grid, 256, 0, st>>>(y, x, T, W, nullptr, N, K, accumulate);
    else if (NT == 4) skinny_mma_kernel<4, false><<<grid, 256, 0, st>>>(y, x, T, W, nullptr, N, K, accumulate);
    else skinny_mma_kernel<8, false><<<grid, 256, 0, st>>>(y, x, T, W, nullptr, N, K, accumulate);
  }
  CU_LAUNCHED("gemv mma");
  return 0;
}
