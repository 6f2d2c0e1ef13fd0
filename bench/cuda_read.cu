/* cuda_read - the read-only floor of cuda_bench: how fast a kernel that does nothing but stream
 * n bytes from HBM can go, at the sizes of the decode GEMVs.  The copy floor (one large
 * cudaMemcpy) says what the memory can do in bulk; these say what one kernel launch of a given
 * size can do, ramp-up and drain included, so a GEMV's distance from its floor splits into
 * what a perfect kernel of its size would also pay and what the GEMV itself adds. */
#include "gemv.cuh" /* ld_stream, cp_async16, pdl_wait, pdl_trigger */

namespace {
/* contiguous: block b reads its own 1/gridDim of the buffer (as a GEMV's row blocks do);
 * otherwise grid-stride.  U loads of 16 bytes in flight a thread. */
template <bool CONTIG>
__global__ void __launch_bounds__(512) read_kernel(const uint4 *p, size_t n16, unsigned *sink) {
  constexpr int U = 4;
  pdl_wait();
  pdl_trigger();
  size_t lo = 0, hi = n16, i = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = gridDim.x * (size_t)blockDim.x;
  if (CONTIG) {
    const size_t per = (n16 + gridDim.x - 1) / gridDim.x;
    lo = blockIdx.x * per, hi = lo + per < n16 ? lo + per : n16;
    i = lo + threadIdx.x, stride = blockDim.x;
  }
  uint32_t acc = 0;
  for (; i + (U - 1) * stride < hi; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = ld_stream(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < hi; i += stride) {
    uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc; /* keeps the loads; practically never taken */
}
} // namespace

/* one launch reading n bytes (n % 16 == 0) at p; mode 0 grid-stride, 1 contiguous per block;
 * blocks_per_sm blocks of 512 threads on each of sms multiprocessors; pdl: launched with
 * programmatic stream serialisation as the decode kernels are */
extern "C" int cuda_read_launch(const void *p, size_t n, int mode, int sms, int blocks_per_sm, int pdl, unsigned *sink,
                                cudaStream_t st) {
  const dim3 grid((unsigned)(sms * blocks_per_sm));
  const uint4 *q = (const uint4 *)p;
  const int keep = dsv3_cuda_pdl;
  dsv3_cuda_pdl = pdl;
  cudaError_t e = mode ? launch_pdl(read_kernel<true>, grid, dim3(512), 0, st, q, n / 16, sink)
                       : launch_pdl(read_kernel<false>, grid, dim3(512), 0, st, q, n / 16, sink);
  dsv3_cuda_pdl = keep;
  return e == cudaSuccess ? 0 : -1;
}

/* ---------------------------------------------------------------- the GEMVs' access pattern
 * A warp owns 16 rows of an N x K byte matrix and walks K in steps of CH bytes a row (the WK
 * warps of a row tile taking every WK-th step), lane (g = lane / 4, t = lane % 4) loading
 * 16 bytes at 16t + 64j of rows g and g + 8; D steps in flight.  tiled: the same bytes as if
 * each 16 x CH tile were stored contiguously (a GEMV-friendly layout), a warp instruction then
 * reading 512 contiguous bytes. */
namespace {
template <int CH, int D, bool TILED>
__global__ void __launch_bounds__(256) pattern_kernel(const uint8_t *w, int N, int K, int wk, unsigned *sink) {
  constexpr int J = CH / 64; /* 16-byte loads a row a step */
  pdl_wait();
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wr = 8 / wk, tile = blockIdx.x * wr + warp / wk, kw = warp % wk;
  if (tile * 16 >= N) return;
  const int nst = K / CH;
  uint32_t acc = 0;
  for (int s0 = kw; s0 < nst; s0 += D * wk) {
    uint4 v[D][2 * J];
#pragma unroll
    for (int d = 0; d < D; d++) {
      const int s = s0 + d * wk;
#pragma unroll
      for (int j = 0; j < 2 * J; j++) {
        const uint8_t *p;
        if (TILED) p = w + ((size_t)tile * nst + s) * 16 * CH + (size_t)j * 512 + lane * 16;
        else p = w + (size_t)(tile * 16 + g + (j & 1) * 8) * K + (size_t)s * CH + 64 * (j >> 1) + 16 * t;
        v[d][j] = s < nst ? ld_stream((const uint4 *)p) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int d = 0; d < D; d++)
#pragma unroll
      for (int j = 0; j < 2 * J; j++) acc ^= v[d][j].x ^ v[d][j].y ^ v[d][j].z ^ v[d][j].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}
template <int CH, int D, bool TILED>
cudaError_t pattern_launch(const void *w, int N, int K, int wk, unsigned *sink, cudaStream_t st) {
  return launch_pdl(pattern_kernel<CH, D, TILED>, dim3((unsigned)((N / 16 + 8 / wk - 1) / (8 / wk))), dim3(256), 0, st,
                    (const uint8_t *)w, N, K, wk, sink);
}
} // namespace

/* variant: bit 0 tiled, bits 1-2 depth (0: 1, 1: 2, 2: 4), bit 3 CH 512 (else 128).  N % 16 == 0,
 * K % CH == 0. */
extern "C" int cuda_pattern_launch(const void *w, int N, int K, int wk, int variant, unsigned *sink, cudaStream_t st) {
  cudaError_t e = cudaErrorInvalidValue;
  const int d = (variant >> 1) & 3;
#define PAT(CH, D)                                                                                   \
  e = (variant & 1) ? pattern_launch<CH, D, true>(w, N, K, wk, sink, st) : pattern_launch<CH, D, false>(w, N, K, wk, sink, st)
  if (variant & 8) {
    if (d == 0) PAT(512, 1);
    else if (d == 1) PAT(512, 2);
  } else {
    if (d == 0) PAT(128, 1);
    else if (d == 1) PAT(128, 2);
    else PAT(128, 4);
  }
#undef PAT
  return e == cudaSuccess ? 0 : -1;
}

/* ---------------------------------------------------------------- a cp.async ring's copies alone
 * Each warp streams units of R rows x C bytes of an N x K byte matrix (units numbered row group
 * major, K fastest, split evenly over the warps) through a ring of NS shared-memory slots and
 * touches one byte of each: the memory side of a ring GEMV with R x C units.  A copy
 * instruction covers C / 16 lanes of one row (C >= 512: a row's 512 contiguous bytes). */
namespace {
template <int R, int C, int NS>
__global__ void __launch_bounds__(128) ringcopy_kernel(const uint8_t *w, int N, int K, int nwarps, unsigned *sink) {
  extern __shared__ __align__(128) uint8_t sm[];
  pdl_wait();
  pdl_trigger();
  constexpr int PER = R * C / 512; /* 16-byte copies a lane a unit */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wid = blockIdx.x * 4 + warp;
  uint8_t *ring = sm + warp * NS * R * C;
  const int nkc = K / C, U = (N / R) * nkc;
  const int u0 = (int)((int64_t)wid * U / nwarps), u1 = wid < nwarps ? (int)((int64_t)(wid + 1) * U / nwarps) : u0;
  auto issue = [&](int u, int slot) {
    const int rg = u / nkc, kc = u - rg * nkc;
#pragma unroll
    for (int i = 0; i < PER; i++) {
      const int c = lane + 32 * i, row = c / (C / 16), col = c % (C / 16);
      cp_async16(ring + slot * R * C + row * C + col * 16, w + (size_t)(rg * R + row) * K + (size_t)kc * C + col * 16, 16);
    }
  };
  for (int i = 0; i < NS - 1; i++) {
    if (u0 + i < u1) issue(u0 + i, i);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
  uint32_t acc = 0;
  for (int u = u0; u < u1; u++) {
    asm volatile("cp.async.wait_group %0;" ::"n"(NS - 2) : "memory");
    __syncwarp();
    if (u + NS - 1 < u1) issue(u + NS - 1, (u - u0 + NS - 1) % NS);
    asm volatile("cp.async.commit_group;" ::: "memory");
    acc += ring[((u - u0) % NS) * R * C + lane * 4];
  }
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  if (acc == 0x9e3779b9u) *sink = acc;
}
template <int R, int C, int NS>
int ringcopy_launch(const void *w, int N, int K, int sms, unsigned *sink, cudaStream_t st) {
  const size_t smem = (size_t)4 * NS * R * C;
  cudaFuncSetAttribute(ringcopy_kernel<R, C, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  int nb = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, ringcopy_kernel<R, C, NS>, 128, smem);
  if (nb < 1) return -1;
  const int U = (N / R) * (K / C);
  int W = nb * 4 * sms;
  if (W > U) W = U;
  return launch_pdl(ringcopy_kernel<R, C, NS>, dim3((unsigned)((W + 3) / 4)), dim3(128), smem, st, (const uint8_t *)w, N, K,
                    W, sink) == cudaSuccess ? 0 : -1;
}
} // namespace

/* variant 0: 16 x 128 (NS 4), 1: 4 x 512 (NS 4), 2: 16 x 512 (NS 3), 3: 2 x 1024 (NS 4), 4: 8 x 256
 * (NS 4), 5: 16 x 128 (NS 8), 6: 8 x 512 (NS 4) */
extern "C" int cuda_ringcopy_launch(const void *w, int N, int K, int variant, int sms, unsigned *sink, cudaStream_t st) {
  switch (variant) {
  case 0: return ringcopy_launch<16, 128, 4>(w, N, K, sms, sink, st);
  case 1: return ringcopy_launch<4, 512, 4>(w, N, K, sms, sink, st);
  case 2: return ringcopy_launch<16, 512, 3>(w, N, K, sms, sink, st);
  case 3: return ringcopy_launch<2, 1024, 4>(w, N, K, sms, sink, st);
  case 4: return ringcopy_launch<8, 256, 4>(w, N, K, sms, sink, st);
  case 5: return ringcopy_launch<16, 128, 8>(w, N, K, sms, sink, st);
  default: return ringcopy_launch<8, 512, 4>(w, N, K, sms, sink, st);
  }
}
