/* mla.cu - Multi-head Latent Attention with the absorbed kv_b projection (the official
 * attn_impl="absorb"): the cache holds kv_norm(latent) [C] and rope(k_pe) [R] per position in
 * bf16, every head attends over the same rows, and scores/values are taken in latent space.
 *
 * Decode attention is split along the sequence (flash-decoding): blocks of (query, heads,
 * split) each run an online softmax over their share of the query's positions, a combine pass
 * merges the splits.  Two kernels: on the tensor cores (mla_attn_tc_kernel, 16 heads a block,
 * for DeepSeek-V3's shapes), and on CUDA cores for the rest (a warp owns HW heads; a lane holds
 * 8 consecutive latent values per 256-wide slice, so a cache row is read with 16-byte loads
 * once per warp and reused for HW heads).  Prefill chunks take the non-absorbed form on
 * cuBLAS (dsv3_cuda_mla_prefill, below). */
#include <cublas_v2.h>
#include <cuda.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "gemv.cuh"
#include "wgmma.cuh"

#define MLA_MAXJ 3 /* (C + R) <= 32 lanes * 8 values * 3 = 768 */
#define MLA_P 2    /* positions per step */
#define MLA_TILE 32 /* cache rows staged in shared memory per block step (32 x 768 x 2 B <= 48 KB) */

/* ---------------------------------------------------------------- cache write */
__global__ void __launch_bounds__(256) mla_cache_write_kernel(uint16_t *kvc, uint16_t *pec, const float *kva, const void *nw,
                                                              dsv3_dtype ndt, float eps, const float *cos_t,
                                                              const float *sin_t, const int32_t *seq, const int32_t *pos,
                                                              int64_t C, int64_t R, int64_t max_seq) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const float *src = kva + t * (C + R);
  const int64_t row = (int64_t)seq[t] * max_seq + pos[t];
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss = fmaf(src[i], src[i], ss);
  ss = block_sum(ss);
  const float r = rsqrtf(ss / (float)C + eps);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) kvc[row * C + i] = f2bf16(src[i] * r * load_vec(nw, ndt, i));
  const int64_t half = R / 2, p = pos[t];
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float a = src[C + 2 * i], b = src[C + 2 * i + 1], c = cos_t[p * half + i], s = sin_t[p * half + i];
    pec[row * R + 2 * i] = f2bf16(a * c - b * s);
    pec[row * R + 2 * i + 1] = f2bf16(a * s + b * c);
  }
}

extern "C" int dsv3_cuda_mla_cache_write(uint16_t *kv_cache, uint16_t *pe_cache, const float *kva, int64_t ntok,
                                         const void *kv_norm, dsv3_dtype ndt, float eps, const float *cos_t,
                                         const float *sin_t, const int32_t *seq, const int32_t *pos, int64_t C, int64_t R,
                                         int64_t max_seq, cudaStream_t st) {
  CU_ARG("mla cache write", C > 0 && R > 0 && R % 2 == 0 && (ndt == DSV3_BF16 || ndt == DSV3_F16 || ndt == DSV3_F32),
         "bad shape or norm dtype (C %lld, R %lld)", (long long)C, (long long)R);
  if (ntok <= 0) return 0;
  launch_pdl(mla_cache_write_kernel, (unsigned)ntok, 256, 0, st, kv_cache, pe_cache, kva, kv_norm, ndt, eps, cos_t,
             sin_t, seq, pos, C, R, max_seq);
  CU_LAUNCHED("mla cache write");
  return 0;
}

/* ---------------------------------------------------------------- absorb q / o */
/* ql[t, h, c] = sum_d q[t, h, d] W[h*(nope+V) + d, c] for 4 tokens (T is 1 in decode): a block
 * per (128-column slice, head, 4 tokens); 16 groups of 16 threads take every 16th row d of the
 * head, a thread 8 columns (16-byte loads, 4 rows in flight), the groups' partial sums added
 * through shared memory by all threads.  512-column slices made 128 blocks for DeepSeek-V3's
 * 128 heads, fewer than the SMs (H200: 12.1 us a layer, 1.4 TB/s).  C % 8 == 0. */
enum { AQ_T = 4, AQ_CW = 128, AQ_G = 256 / (AQ_CW / 8) };
__global__ void __launch_bounds__(256) absorb_q_kernel(float *ql, const float *q, const uint16_t *W, int ntok, int H, int nope,
                                                       int R, int V, int C) {
  pdl_wait();
  pdl_trigger();
  __shared__ float qs[AQ_T][128];
  __shared__ float red[AQ_G][AQ_T][AQ_CW];
  const int grp = threadIdx.x / (AQ_CW / 8), col = (threadIdx.x % (AQ_CW / 8)) * 8, c = blockIdx.x * AQ_CW + col;
  const int h = blockIdx.y, t0 = blockIdx.z * AQ_T;
  const int nt = min(AQ_T, ntok - t0), qk = nope + R;
  float acc[AQ_T][8];
#pragma unroll
  for (int t = 0; t < AQ_T; t++)
#pragma unroll
    for (int i = 0; i < 8; i++) acc[t][i] = 0.f;
  for (int d0 = 0; d0 < nope; d0 += 128) {
    const int nd = min(128, nope - d0);
    __syncthreads();
    for (int i = threadIdx.x; i < AQ_T * 128; i += 256) {
      const int t = i / 128, d = i % 128;
      qs[t][d] = (t < nt && d < nd) ? q[((int64_t)(t0 + t) * H + h) * qk + d0 + d] : 0.f;
    }
    __syncthreads();
    if (c < C) {
      const uint16_t *wr = W + ((int64_t)h * (nope + V) + d0) * C + c;
#pragma unroll 4
      for (int d = grp; d < nd; d += AQ_G) {
        float wf[8];
        deq8(*reinterpret_cast<const uint4 *>(wr + (int64_t)d * C), wf);
#pragma unroll
        for (int t = 0; t < AQ_T; t++)
#pragma unroll
          for (int i = 0; i < 8; i++) acc[t][i] = fmaf(qs[t][d], wf[i], acc[t][i]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < AQ_T; t++)
#pragma unroll
    for (int i = 0; i < 8; i++) red[grp][t][col + i] = acc[t][i];
  __syncthreads();
  for (int i = threadIdx.x; i < AQ_T * AQ_CW; i += 256) {
    const int t = i / AQ_CW, cc = i % AQ_CW;
    if (t >= nt || blockIdx.x * AQ_CW + cc >= C) continue;
    float v = 0.f;
#pragma unroll
    for (int g = 0; g < AQ_G; g++) v += red[g][t][cc];
    ql[((int64_t)(t0 + t) * H + h) * C + blockIdx.x * AQ_CW + cc] = v;
  }
}

/* o[t, h, v] = sum_c ol[t, h, c] W[h*(nope+V) + nope + v, c] for 8 tokens: a warp owns 4 rows
 * (h, v) .. (h, v + 3) (each with its own head's ol), a lane 8 columns of each per step (the
 * 4 rows' 16-byte loads in flight together).  C % 8 == 0. */
__global__ void __launch_bounds__(256) absorb_o_kernel(float *o, const float *ol, const uint16_t *W, int ntok, int H, int nope,
                                                       int V, int C) {
  const int lane = threadIdx.x & 31, hv0 = (blockIdx.x * 8 + (threadIdx.x >> 5)) * 4, t0 = blockIdx.y * 8;
  if (hv0 >= H * V) {
    pdl_wait(), pdl_trigger();
    return;
  }
  const int nt = min(8, ntok - t0);
  const uint16_t *w[4];
  int hh[4];
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const int hv = min(hv0 + r, H * V - 1); /* past the end: row H*V - 1 again, never stored */
    hh[r] = hv / V;
    w[r] = W + ((int64_t)hh[r] * (nope + V) + nope + hv % V) * C;
  }
  float acc[8][4];
#pragma unroll
  for (int t = 0; t < 8; t++)
#pragma unroll
    for (int r = 0; r < 4; r++) acc[t][r] = 0.f;
  /* the weights are constant: the first step's loads go out before the grid-dependency wait,
   * while the attention's combine (a short kernel) still runs */
  uint4 w0[4];
#pragma unroll
  for (int r = 0; r < 4; r++)
    w0[r] = lane * 8 < C ? __ldg(reinterpret_cast<const uint4 *>(w[r] + lane * 8)) : make_uint4(0, 0, 0, 0);
  pdl_wait();
  pdl_trigger();
  for (int c = lane * 8; c < C; c += 256) {
    float wf[4][8];
#pragma unroll
    for (int r = 0; r < 4; r++) deq8(c == lane * 8 ? w0[r] : __ldg(reinterpret_cast<const uint4 *>(w[r] + c)), wf[r]);
#pragma unroll
    for (int t = 0; t < 8; t++) {
      if (t < nt) {
        const float *xt = ol + (int64_t)(t0 + t) * H * C + c;
        float4 a = *reinterpret_cast<const float4 *>(xt + (int64_t)hh[0] * C), b = *reinterpret_cast<const float4 *>(xt + (int64_t)hh[0] * C + 4);
#pragma unroll
        for (int r = 0; r < 4; r++) {
          if (r && hh[r] != hh[r - 1]) { /* warp-uniform: a new head within the warp's rows */
            a = *reinterpret_cast<const float4 *>(xt + (int64_t)hh[r] * C);
            b = *reinterpret_cast<const float4 *>(xt + (int64_t)hh[r] * C + 4);
          }
          acc[t][r] += wf[r][0] * a.x + wf[r][1] * a.y + wf[r][2] * a.z + wf[r][3] * a.w + wf[r][4] * b.x + wf[r][5] * b.y +
                       wf[r][6] * b.z + wf[r][7] * b.w;
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < 8; t++) {
    if (t >= nt) break;
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const float sum = warp_sum(acc[t][r]);
      const int hv = hv0 + r;
      if (lane == 0 && hv < H * V) o[((int64_t)(t0 + t) * H + hv / V) * V + hv % V] = sum;
    }
  }
}

extern "C" int dsv3_cuda_mla_absorb_q(float *ql, const float *q, const uint16_t *wkvb, int64_t ntok, int64_t H,
                                      int64_t nope, int64_t R, int64_t V, int64_t C, cudaStream_t st) {
  CU_ARG("mla absorb q", C % 8 == 0 && H > 0 && H < 65536 && nope > 0 && V > 0 && ((uintptr_t)wkvb & 15) == 0,
         "kv_lora_rank %lld must be a multiple of 8 and kv_b 16-byte aligned", (long long)C);
  if (ntok <= 0) return 0;
  CU_ARG("mla absorb q", ntok < 65536 * AQ_T, "too many tokens");
  launch_pdl(absorb_q_kernel, dim3((unsigned)cdiv(C, AQ_CW), (unsigned)H, (unsigned)cdiv(ntok, AQ_T)), 256, 0, st, ql,
             q, wkvb, (int)ntok, (int)H, (int)nope, (int)R, (int)V, (int)C);
  CU_LAUNCHED("mla absorb q");
  return 0;
}

extern "C" int dsv3_cuda_mla_absorb_o(float *o, const float *ol, const uint16_t *wkvb, int64_t ntok, int64_t H,
                                      int64_t nope, int64_t V, int64_t C, cudaStream_t st) {
  CU_ARG("mla absorb o", C % 8 == 0 && H > 0 && V > 0 && ((uintptr_t)wkvb & 15) == 0 && ((uintptr_t)ol & 15) == 0,
         "kv_lora_rank %lld must be a multiple of 8 and pointers 16-byte aligned", (long long)C);
  if (ntok <= 0) return 0;
  CU_ARG("mla absorb o", ntok < 65536 * 8 && H * V < (1ll << 30), "too many tokens or rows");
  launch_pdl(absorb_o_kernel, dim3((unsigned)cdiv(H * V, 32), (unsigned)cdiv(ntok, 8)), 256, 0, st, o, ol, wkvb,
             (int)ntok, (int)H, (int)nope, (int)V, (int)C);
  CU_LAUNCHED("mla absorb o");
  return 0;
}

/* ---------------------------------------------------------------- fused q path (decode)
 * One token's q_norm, q_b, RoPE and absorb q in one launch, a block per head: the block's rows
 * of q_b (nope + R of them) and its head's kv_b rows (nope x C, bf16) are all it needs, so the
 * four kernels' launches, three round trips of q through memory and the rmsnorm's and RoPE's
 * single-block latency go away (H200, 671B widths: rmsnorm + q_b + rope + absorb q ~32 us a
 * layer; the bytes, 54 MB, take 12.7 us at the copy floor).
 *   0. the first q_b weight chunks are loaded before the grid-dependency wait (constant);
 *      then rmsnorm(qa) (the rmsnorm kernel's (x * r) * w), converted once per 16-wide chunk
 *      to f16 pairs into shared memory as in gemv_h2_kernel;
 *   1. q_b for the head's rows: gemv_h2_kernel's arithmetic, a warp 8 rows a pass, a lane
 *      every 32nd chunk, summed over the warp -> q in shared memory;
 *   2. q written out (nope as is, the rope part rotated as rope_kernel does);
 *   3. ql[h, c] = sum_d q[d] kv_b[h, d, c]: a thread 8 columns of every RG-th row (16-byte
 *      loads), the RG row groups' sums added through shared memory in order.
 * Needs FP8 q_b with scales, K % 16 == 0 and K <= 8192, nope + R <= 256, C % 8 == 0 and C / 8
 * dividing 512 (dsv3_cuda_mla_q_fused_ok). */
enum { QF_THREADS = 512, QF_PR = 8, QF_MAXQK = 256, QF_MAXK = 8192 };
struct MlaQArgs {
  float *ql, *q;
  const float *qa;
  const void *nw;
  const uint8_t *wq;
  const float *sq;
  const uint16_t *wkvb;
  const float *cos_t, *sin_t;
  const int32_t *pos;
  dsv3_dtype ndt;
  float eps;
  int nope, R, V, C, K;
};

__global__ void __launch_bounds__(QF_THREADS) mla_q_fused_kernel(MlaQArgs a) {
  __shared__ uint4 xs[QF_MAXK / 16][2]; /* x chunk c: 8 f16 pairs */
  __shared__ float xis[QF_MAXK / 16];   /* its 2^-e */
  __shared__ float qs[QF_MAXQK];
  __shared__ float red[4096]; /* [RG][C], RG * C = 4096 */
  const int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tid = threadIdx.x;
  const int qk = a.nope + a.R, K = a.K, nch = K >> 4, nbk = (K + 127) >> 7;
  const uint8_t *wh = a.wq + (int64_t)h * qk * K;
  /* pass p: rows p * 128 + warp + 16 i (i < QF_PR) */
  auto wload = [&](int p, int c, uint4(&wv)[QF_PR]) {
#pragma unroll
    for (int i = 0; i < QF_PR; i++) {
      const int row = p * 128 + warp + 16 * i;
      wv[i] = row < qk && c < nch ? ld_stream(wh + (int64_t)row * K + (int64_t)c * 16) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 w0[QF_PR], w1[QF_PR];
  wload(0, lane, w0);
  wload(0, 32 + lane, w1);
  /* the head's kv_b rows (phase 3) and its q_b rows of the second pass into L2 meanwhile:
   * their loads then wait on L2, not on memory */
  const uint16_t *wk0 = a.wkvb + (int64_t)h * (a.nope + a.V) * a.C;
  const int64_t kvb_bytes = (int64_t)a.nope * a.C * 2, qb0 = qk > 128 ? 128 * (int64_t)K : 0,
                qb_bytes = qk > 128 ? (int64_t)(qk - 128) * K : 0;
  for (int64_t off = (int64_t)tid * 128; off < kvb_bytes; off += (int64_t)QF_THREADS * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)wk0 + off));
  for (int64_t off = (int64_t)tid * 128; off < qb_bytes; off += (int64_t)QF_THREADS * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)wh + qb0 + off));
  pdl_wait();
  pdl_trigger();

  /* 0: rmsnorm(qa) -> f16 pairs a chunk */
  float ss = 0.f;
  for (int i = tid; i < K; i += QF_THREADS) ss = fmaf(a.qa[i], a.qa[i], ss);
  ss = block_sum(ss);
  const float r = rsqrtf(ss / (float)K + a.eps);
  for (int c = tid; c < nch; c += QF_THREADS) {
    float4 v[4];
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int k = 16 * c + 4 * q;
      v[q] = reinterpret_cast<const float4 *>(a.qa)[4 * c + q];
      v[q].x = v[q].x * r * load_vec(a.nw, a.ndt, k), v[q].y = v[q].y * r * load_vec(a.nw, a.ndt, k + 1);
      v[q].z = v[q].z * r * load_vec(a.nw, a.ndt, k + 2), v[q].w = v[q].w * r * load_vec(a.nw, a.ndt, k + 3);
    }
    uint32_t xh[8];
    xis[c] = f16x2_pack16(v, xh);
    xs[c][0] = make_uint4(xh[0], xh[1], xh[2], xh[3]);
    xs[c][1] = make_uint4(xh[4], xh[5], xh[6], xh[7]);
  }
  __syncthreads();

  /* 1: q = W_qb[head rows] x */
  for (int p = 0; p * 128 < qk; p++) {
    float acc[QF_PR];
#pragma unroll
    for (int i = 0; i < QF_PR; i++) acc[i] = 0.f;
    for (int cb = 0; cb < nch; cb += 64) {
      if (p || cb) wload(p, cb + lane, w0), wload(p, cb + 32 + lane, w1);
#pragma unroll
      for (int u = 0; u < 2; u++) {
        const int c = cb + 32 * u + lane;
        if (c >= nch) continue;
        const uint4 x0 = xs[c][0], x1 = xs[c][1];
        const uint32_t xh[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const float xi = xis[c];
#pragma unroll
        for (int i = 0; i < QF_PR; i++) {
          const int row = p * 128 + warp + 16 * i;
          if (row >= qk) continue;
          const float sc = __ldg(a.sq + (int64_t)((h * qk + row) >> 7) * nbk + (c >> 3));
          acc[i] = fmaf(dot16_f16x2(u ? w1[i] : w0[i], xh), sc * xi, acc[i]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < QF_PR; i++) {
      const float v = warp_sum(acc[i]);
      const int row = p * 128 + warp + 16 * i;
      if (lane == 0 && row < qk) qs[row] = v;
    }
  }
  __syncthreads();

  /* 2: q out, the rope part rotated */
  const int half = a.R / 2;
  const int64_t pr = (int64_t)a.pos[0] * half;
  float *qo = a.q + (int64_t)h * qk;
  for (int i = tid; i < a.nope; i += QF_THREADS) qo[i] = qs[i];
  for (int i = tid; i < half; i += QF_THREADS) {
    const float x0 = qs[a.nope + 2 * i], x1 = qs[a.nope + 2 * i + 1], c = a.cos_t[pr + i], sn = a.sin_t[pr + i];
    qo[a.nope + 2 * i] = x0 * c - x1 * sn;
    qo[a.nope + 2 * i + 1] = x0 * sn + x1 * c;
  }

  /* 3: absorb */
  const int cg = a.C >> 3, RG = QF_THREADS / cg, g = tid % cg, rg = tid / cg;
  if (rg < RG) {
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0.f;
    const uint16_t *wk = wk0 + g * 8;
#pragma unroll 8
    for (int d = rg; d < a.nope; d += RG) {
      float wf[8];
      deq8(__ldg(reinterpret_cast<const uint4 *>(wk + (int64_t)d * a.C)), wf);
      const float qd = qs[d];
#pragma unroll
      for (int i = 0; i < 8; i++) acc[i] = fmaf(qd, wf[i], acc[i]);
    }
#pragma unroll
    for (int i = 0; i < 8; i++) red[rg * a.C + g * 8 + i] = acc[i];
  }
  __syncthreads();
  for (int c = tid; c < a.C; c += QF_THREADS) {
    float v = 0.f;
    for (int k = 0; k < RG; k++) v += red[k * a.C + c];
    a.ql[(int64_t)h * a.C + c] = v;
  }
}

extern "C" int dsv3_cuda_mla_q_fused_ok(const dsv3_wmat *wq_b, const void *qa, int64_t H, int64_t nope, int64_t R,
                                        int64_t C) {
  const int64_t K = wq_b ? wq_b->cols : 0;
  return wq_b && wq_b->dtype == DSV3_F8_E4M3 && wq_b->scale && ((uintptr_t)wq_b->data & 15) == 0 &&
         ((uintptr_t)qa & 15) == 0 && K % 16 == 0 && K > 0 && K <= QF_MAXK && nope > 0 && R >= 0 && R % 2 == 0 &&
         nope + R <= QF_MAXQK && wq_b->rows == H * (nope + R) && C % 8 == 0 && C > 0 && C <= 4096 &&
         QF_THREADS % (C / 8) == 0 && H > 0 && H < 65536;
}

extern "C" int dsv3_cuda_mla_q_fused(float *ql, float *q, const float *qa, const void *q_norm, dsv3_dtype ndt, float eps,
                                     const dsv3_wmat *wq_b, const uint16_t *wkvb, const float *cos_t, const float *sin_t,
                                     const int32_t *pos, int64_t H, int64_t nope, int64_t R, int64_t V, int64_t C,
                                     cudaStream_t st) {
  CU_ARG("mla q fused", dsv3_cuda_mla_q_fused_ok(wq_b, qa, H, nope, R, C) && ((uintptr_t)wkvb & 15) == 0 && V > 0 &&
                            (ndt == DSV3_BF16 || ndt == DSV3_F16 || ndt == DSV3_F32),
         "shape not covered (q_b %lld x %lld, H %lld, nope %lld, rope %lld, C %lld)", wq_b ? (long long)wq_b->rows : 0ll,
         wq_b ? (long long)wq_b->cols : 0ll, (long long)H, (long long)nope, (long long)R, (long long)C);
  MlaQArgs a;
  a.ql = ql, a.q = q, a.qa = qa, a.nw = q_norm, a.wq = (const uint8_t *)wq_b->data, a.sq = wq_b->scale, a.wkvb = wkvb;
  a.cos_t = cos_t, a.sin_t = sin_t, a.pos = pos, a.ndt = ndt, a.eps = eps;
  a.nope = (int)nope, a.R = (int)R, a.V = (int)V, a.C = (int)C, a.K = (int)wq_b->cols;
  launch_pdl(mla_q_fused_kernel, dim3((unsigned)H), dim3(QF_THREADS), 0, st, a);
  CU_LAUNCHED("mla q fused");
  return 0;
}

/* ---------------------------------------------------------------- attention */
__device__ __forceinline__ void unpack8(const uint4 u, float *f) {
  f[0] = bf16_lo(u.x), f[1] = bf16_hi(u.x), f[2] = bf16_lo(u.y), f[3] = bf16_hi(u.y);
  f[4] = bf16_lo(u.z), f[5] = bf16_hi(u.z), f[6] = bf16_lo(u.w), f[7] = bf16_hi(u.w);
}

template <int HW>
__global__ void __launch_bounds__(256) mla_attn_kernel(float *po, float *pml, const float *ql, const float *qpe, int64_t pts,
                                                       int64_t phs, const uint16_t *kvc, const uint16_t *pec,
                                                       const int32_t *seq, const int32_t *len, int H, int C, int R,
                                                       int64_t max_seq, int nsplit, float scale_log2) {
  pdl_wait();
  pdl_trigger();
  const int q = blockIdx.x, hb = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, D = C + R;
  /* the splits share this query's length, not max_len: a graph captured for --max-seq-len
   * keeps every split busy at short contexts (H200, H = 128, 256 cached rows, 33 splits: the
   * rows in 2 splits took 41 us a layer, spread over 32 28 us) */
  const int L = len[q], chunk = (int)cdiv(cdiv(L, nsplit), MLA_P) * MLA_P;
  const int s0 = split * chunk, s1 = min(L, s0 + chunk);
  const uint16_t *kvb = kvc + (int64_t)seq[q] * max_seq * C, *peb = pec + (int64_t)seq[q] * max_seq * R;
  int hh[HW];
  bool hv[HW];
#pragma unroll
  for (int i = 0; i < HW; i++) hh[i] = (hb * 8 + warp) * HW + i, hv[i] = hh[i] < H;
  const bool active = hv[0]; /* a warp without heads still helps stage the tiles */

  float qv[HW][MLA_MAXJ][8], o[HW][MLA_MAXJ][8], m[HW], l[HW];
#pragma unroll
  for (int i = 0; i < HW; i++) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < MLA_MAXJ; j++) {
      const int e = (j * 32 + lane) * 8;
#pragma unroll
      for (int k = 0; k < 8; k++) {
        float v = 0.f;
        if (hv[i] && e < C) v = ql[((int64_t)q * H + hh[i]) * C + e + k];
        else if (hv[i] && e < D) v = qpe[(int64_t)q * pts + (int64_t)hh[i] * phs + (e - C) + k];
        qv[i][j][k] = v * scale_log2;
        o[i][j][k] = 0.f;
      }
    }
  }

  /* The block's 8 warps share the query's sequence and split: the block stages MLA_TILE cache
   * rows ([kv | pe], D bf16 each) in shared memory with one round of loads, then every warp
   * reads them from there, instead of each warp loading its own rows from global memory with
   * a memory latency every 2 positions (H200, H = 128: 1461 -> 1030 us at 32768 positions,
   * 196 -> 180 us at 4096; what remains is the warps' own dependent chains, docs/cuda.md). */
  extern __shared__ uint4 tile[]; /* [MLA_TILE][D / 8] */
  const int rv = D >> 3, ckv = C >> 3;
  for (int t0 = s0; t0 < s1; t0 += MLA_TILE) {
    const int nt = min(MLA_TILE, s1 - t0);
    __syncthreads(); /* the previous tile is consumed */
    for (int i = threadIdx.x; i < nt * rv; i += blockDim.x) {
      const int p = i / rv, c = i - p * rv, sp = t0 + p;
      tile[i] = c < ckv ? __ldg(reinterpret_cast<const uint4 *>(kvb + (int64_t)sp * C) + c)
                        : __ldg(reinterpret_cast<const uint4 *>(peb + (int64_t)sp * R) + (c - ckv));
    }
    __syncthreads();
    if (!active) continue;
    for (int s = 0; s < nt; s += MLA_P) {
      uint4 kv[MLA_P][MLA_MAXJ];
#pragma unroll
      for (int p = 0; p < MLA_P; p++)
#pragma unroll
        for (int j = 0; j < MLA_MAXJ; j++) {
          const int e = (j * 32 + lane) * 8, sp = s + p;
          kv[p][j] = sp < nt && e < D ? tile[sp * rv + (e >> 3)] : make_uint4(0, 0, 0, 0);
        }
      float sc[HW][MLA_P];
#pragma unroll
      for (int i = 0; i < HW; i++)
#pragma unroll
        for (int p = 0; p < MLA_P; p++) sc[i][p] = 0.f;
#pragma unroll
      for (int p = 0; p < MLA_P; p++)
#pragma unroll
        for (int j = 0; j < MLA_MAXJ; j++) {
          float f[8];
          unpack8(kv[p][j], f);
#pragma unroll
          for (int i = 0; i < HW; i++)
#pragma unroll
            for (int k = 0; k < 8; k++) sc[i][p] = fmaf(qv[i][j][k], f[k], sc[i][p]);
        }
#pragma unroll
      for (int i = 0; i < HW; i++) {
        float mx = m[i];
#pragma unroll
        for (int p = 0; p < MLA_P; p++) {
          sc[i][p] = warp_sum(sc[i][p]);
          if (s + p >= nt) sc[i][p] = -INFINITY;
          mx = fmaxf(mx, sc[i][p]);
        }
        const float corr = exp2f(m[i] - mx); /* m = -inf at first: corr = 0 */
        float pp[MLA_P], psum = 0.f;
#pragma unroll
        for (int p = 0; p < MLA_P; p++) pp[p] = exp2f(sc[i][p] - mx), psum += pp[p];
        l[i] = l[i] * corr + psum;
        m[i] = mx;
#pragma unroll
        for (int j = 0; j < MLA_MAXJ; j++) {
          if ((j * 32 + lane) * 8 >= C) continue;
#pragma unroll
          for (int p = 0; p < MLA_P; p++) {
            float f[8];
            unpack8(kv[p][j], f);
#pragma unroll
            for (int k = 0; k < 8; k++) o[i][j][k] = (p == 0 ? o[i][j][k] * corr : o[i][j][k]) + pp[p] * f[k];
          }
        }
      }
    }
  }
  if (!active) return;

#pragma unroll
  for (int i = 0; i < HW; i++) {
    if (!hv[i]) continue;
    const int64_t qh = (int64_t)q * H + hh[i];
    if (nsplit == 1) { /* final output straight away */
      const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
#pragma unroll
      for (int j = 0; j < MLA_MAXJ; j++) {
        const int e = (j * 32 + lane) * 8;
        if (e < C)
#pragma unroll
          for (int k = 0; k < 8; k++) po[qh * C + e + k] = o[i][j][k] * inv;
      }
    } else {
      const int64_t slot = qh * nsplit + split;
      if (lane == 0) pml[slot * 2] = m[i], pml[slot * 2 + 1] = l[i];
      if (l[i] > 0.f)
#pragma unroll
        for (int j = 0; j < MLA_MAXJ; j++) {
          const int e = (j * 32 + lane) * 8;
          if (e < C)
#pragma unroll
            for (int k = 0; k < 8; k++) po[slot * C + e + k] = o[i][j][k];
        }
    }
  }
}

/* Merge the splits of a (query, head): every warp finds the max and the sum from the splits'
 * (m, l) pairs, the weights go to shared memory, a thread takes 4 columns (float4) over all
 * splits.  Splits that saw no positions (l = 0) wrote no partial output and are skipped. */
__global__ void mla_combine_kernel(float *ol, const float *po, const float *pml, int C, int nsplit) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ float wsplit[]; /* [nsplit] */
  const int64_t qh = blockIdx.x;
  const float *ml = pml + qh * nsplit * 2;
  const int lane = threadIdx.x & 31;
  float M = -INFINITY;
  for (int s = lane; s < nsplit; s += 32)
    if (ml[2 * s + 1] > 0.f) M = fmaxf(M, ml[2 * s]);
  M = warp_max(M);
  float L = 0.f;
  for (int s = lane; s < nsplit; s += 32)
    if (ml[2 * s + 1] > 0.f) L += exp2f(ml[2 * s] - M) * ml[2 * s + 1];
  L = warp_sum(L);
  /* nsplit rounded up to 4: the unrolled loop below reads the weights 16 bytes at a time
   * (compute-sanitizer: reads past nsplit floats), the padding zero */
  for (int s = threadIdx.x; s < ((nsplit + 3) & ~3); s += blockDim.x)
    wsplit[s] = s < nsplit && ml[2 * s + 1] > 0.f ? exp2f(ml[2 * s] - M) : 0.f;
  __syncthreads();
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int c = threadIdx.x * 4; c < C; c += blockDim.x * 4) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = 0; s < nsplit; s++) {
      const float w = wsplit[s];
      if (w == 0.f) continue; /* the same for the whole block */
      const float4 v = *reinterpret_cast<const float4 *>(po + (qh * nsplit + s) * C + c);
      acc.x = fmaf(w, v.x, acc.x), acc.y = fmaf(w, v.y, acc.y);
      acc.z = fmaf(w, v.z, acc.z), acc.w = fmaf(w, v.w, acc.w);
    }
    *reinterpret_cast<float4 *>(ol + qh * C + c) = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}

/* The same attention on the tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate): a
 * block of MT_W = 8 warps takes 16 heads of one (query, split) and walks its positions in tiles
 * of MT_P cache rows, staged in shared memory by cp.async one tile ahead.  Per tile:
 *   S [16 heads, MT_P] = Q [16, C + R] . rows^T, the C + R dims split among the warps (each
 *     keeps its share of Q in registers as A fragments), the partial S summed in shared
 *     memory;
 *   an online softmax per head (a warp takes 2 heads, a lane a position);
 *   O [16, C] += P [16, MT_P] . rows[:, :C], a warp owning C / 8 output columns.
 * At batch 1 and short contexts a block has a tile or two and the SM no other work, so the
 * kernel is a chain of latencies: 8 warps halve each warp's share (4 warps: ncu, H200, 24.5 us
 * a layer at 300 positions, one warp a scheduler issuing every 10 cycles).
 * Queries and probabilities enter as bf16 pairs hi + lo (v = hi + lo to ~2^-17), so the
 * products carry float accuracy like the CUDA-core kernel's; the cache rows are bf16 already.
 * Needs C % 64 == 0, C <= 512, (C + R) % 16 == 0, C + R <= 640 (DeepSeek-V3: 512 + 64). */
enum {
  MT_W = 8,  /* warps a block */
  MT_P = 32, /* positions a tile */
  MT_KW = 5, /* k-steps of S a warp at most: (C + R) / 16 / MT_W */
  MT_NT = 8  /* n-tiles of O a warp at most: C / MT_W / 8 */
};
struct MlaTcArgs {
  float *po, *pml;
  const float *ql, *qpe;
  int64_t pts, phs, max_seq;
  const uint16_t *kvc, *pec;
  const int32_t *seq, *len;
  int H, C, R, nsplit;
  float scale_log2;
};
static size_t mla_tc_smem(int C, int R) {
  const int ds = C + R + 8;
  return (size_t)2 * MT_P * ds * 2 + (size_t)MT_W * 16 * MT_P * 4 + (size_t)2 * 16 * (MT_P + 8) * 2 + 3 * 16 * 4;
}
__global__ void __launch_bounds__(MT_W * 32) mla_attn_tc_kernel(MlaTcArgs a) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ uint4 smem_u4[];
  const int C = a.C, D = a.C + a.R, DS = D + 8; /* row stride: +16 bytes keeps ldmatrix rows on distinct banks */
  uint16_t *tile = reinterpret_cast<uint16_t *>(smem_u4);          /* [2][MT_P][DS] */
  float *sp = reinterpret_cast<float *>(tile + 2 * MT_P * DS);        /* [MT_W][16][MT_P] partial scores */
  uint16_t *ph = reinterpret_cast<uint16_t *>(sp + MT_W * 16 * MT_P); /* [16][MT_P + 8] probabilities, hi */
  uint16_t *pl = ph + 16 * (MT_P + 8);                             /* lo */
  float *cr = reinterpret_cast<float *>(pl + 16 * (MT_P + 8));     /* [16] rescale of O this tile */
  float *msh = cr + 16, *lsh = msh + 16;                           /* [16] final max and sum */
  const int q = blockIdx.x, h0 = blockIdx.y * 16, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int L = a.len[q], chunk = (int)cdiv(cdiv(L, a.nsplit), MT_P) * MT_P;
  const int s0 = split * chunk, s1 = min(L, s0 + chunk);
  const uint16_t *kvb = a.kvc + (int64_t)a.seq[q] * a.max_seq * C, *peb = a.pec + (int64_t)a.seq[q] * a.max_seq * a.R;

  /* this warp's k-steps of S and their Q fragments (hi, lo) */
  const int ks = D / 16, k0 = ks * warp / MT_W, nk = ks * (warp + 1) / MT_W - k0;
  uint32_t qh[MT_KW][4], qlo[MT_KW][4];
#pragma unroll
  for (int kk = 0; kk < MT_KW; kk++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int h = h0 + g + (r & 1) * 8, d = (k0 + kk) * 16 + (r >> 1) * 8 + 2 * t4;
      float v0 = 0.f, v1 = 0.f;
      if (kk < nk && h < a.H) {
        const float *src = d < C ? a.ql + ((int64_t)q * a.H + h) * C + d
                                 : a.qpe + (int64_t)q * a.pts + (int64_t)h * a.phs + (d - C);
        v0 = src[0] * a.scale_log2, v1 = src[1] * a.scale_log2;
      }
      const uint32_t hi = pack_bf16(v0, v1);
      qh[kk][r] = hi, qlo[kk][r] = pack_bf16(v0 - bf16_lo(hi), v1 - bf16_hi(hi));
    }

  float o[MT_NT][4];
#pragma unroll
  for (int n = 0; n < MT_NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  constexpr int HPW = 16 / MT_W; /* heads a warp in the softmax */
  float m[HPW], l[HPW];
#pragma unroll
  for (int i = 0; i < HPW; i++) m[i] = -INFINITY, l[i] = 0.f;
  /* this warp's output columns (C / MT_W: an odd count of 8-wide n-tiles computes one more,
   * inside the row, never stored) */
  const int cw = C / MT_W, nnt = cw / 8, c0 = warp * cw;

  const int rv = D / 8, ckv = C / 8; /* 16-byte chunks a row; of them in the latent part */
  /* a thread stages chunks i = p * rv + c, i += 128: (p, c) stepped without dividing */
  const int p_0 = threadIdx.x / rv, c_0 = threadIdx.x % rv, dp = MT_W * 32 / rv, dc = MT_W * 32 % rv;
  auto stage = [&](int buf, int t0) {
    const int nt = min(MT_P, s1 - t0);
    uint16_t *dst = tile + buf * MT_P * DS;
    for (int p = p_0, c = c_0; p < MT_P; p += dp, c += dc) {
      if (c >= rv) c -= rv, p++;
      if (p >= MT_P) break;
      const bool ok = p < nt; /* rows past the split: zeros (their probabilities are 0, 0 * NaN is not) */
      const uint16_t *src = c < ckv ? kvb + (int64_t)(t0 + (ok ? p : 0)) * C + c * 8
                                    : peb + (int64_t)(t0 + (ok ? p : 0)) * a.R + (c - ckv) * 8;
      cp_async16(dst + p * DS + c * 8, src, ok ? 16 : 0);
    }
    asm volatile("cp.async.commit_group;");
  };
  if (s0 < s1) stage(0, s0);
  for (int t0 = s0, it = 0; t0 < s1; t0 += MT_P, it++) {
    const int nt = min(MT_P, s1 - t0);
    if (t0 + MT_P < s1) {
      stage((it + 1) & 1, t0 + MT_P);
      asm volatile("cp.async.wait_group 1;");
    } else {
      asm volatile("cp.async.wait_group 0;");
    }
    __syncthreads();
    const uint16_t *tb = tile + (it & 1) * MT_P * DS;
    /* partial scores over this warp's k-steps: 4 n-tiles of 8 positions */
    float s[4][4];
#pragma unroll
    for (int n = 0; n < 4; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < MT_KW; kk++) {
      if (kk >= nk) break;
#pragma unroll
      for (int n = 0; n < 4; n += 2) {
        uint32_t b[4];
        ldsm_x4(b, tb + (8 * (n + (lane >> 4)) + (lane & 7)) * DS + (k0 + kk) * 16 + ((lane >> 3) & 1) * 8);
        mma16816(s[n], qh[kk], b[0], b[1]);
        mma16816(s[n], qlo[kk], b[0], b[1]);
        mma16816(s[n + 1], qh[kk], b[2], b[3]);
        mma16816(s[n + 1], qlo[kk], b[2], b[3]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; n++) {
      float *r0 = sp + (warp * 16 + g) * MT_P + 8 * n + 2 * t4, *r1 = r0 + 8 * MT_P;
      r0[0] = s[n][0], r0[1] = s[n][1], r1[0] = s[n][2], r1[1] = s[n][3];
    }
    __syncthreads();
    /* online softmax: warp w takes heads HPW w .. HPW w + HPW - 1, lane = position */
#pragma unroll
    for (int i = 0; i < HPW; i++) {
      const int hr = warp * HPW + i;
      float v = -INFINITY;
      if (lane < nt) {
        v = 0.f;
#pragma unroll
        for (int w = 0; w < MT_W; w++) v += sp[(w * 16 + hr) * MT_P + lane];
      }
      const float mn = fmaxf(m[i], warp_max(v));
      const float e = lane < nt ? exp2f(v - mn) : 0.f;
      const float corr = exp2f(m[i] - mn); /* m = -inf at first: 0 */
      l[i] = l[i] * corr + warp_sum(e);
      m[i] = mn;
      const uint16_t eh = f2bf16(e);
      ph[hr * (MT_P + 8) + lane] = eh;
      pl[hr * (MT_P + 8) + lane] = f2bf16(e - bf16f(eh));
      if (lane == 0) cr[hr] = corr;
    }
    __syncthreads();
    /* O = O * corr + P . V over this warp's columns */
    const float cg = cr[g], cg8 = cr[g + 8];
#pragma unroll
    for (int n = 0; n < MT_NT; n++) o[n][0] *= cg, o[n][1] *= cg, o[n][2] *= cg8, o[n][3] *= cg8;
#pragma unroll
    for (int kk = 0; kk < MT_P / 16; kk++) {
      uint32_t pa[4], pb[4];
      const int prow = (lane & 7) + ((lane >> 3) & 1) * 8, pcol = kk * 16 + (lane >> 4) * 8;
      ldsm_x4(pa, ph + prow * (MT_P + 8) + pcol);
      ldsm_x4(pb, pl + prow * (MT_P + 8) + pcol);
#pragma unroll
      for (int n = 0; n < MT_NT; n += 2) {
        if (n >= nnt) break;
        uint32_t b[4];
        ldsm_x4_t(b, tb + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * DS + c0 + (n + (lane >> 4)) * 8);
        mma16816(o[n], pa, b[0], b[1]);
        mma16816(o[n], pb, b[0], b[1]);
        mma16816(o[n + 1], pa, b[2], b[3]);
        mma16816(o[n + 1], pb, b[2], b[3]);
      }
    }
    __syncthreads(); /* the tile buffer, scores and probabilities are reused */
  }
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < HPW; i++) msh[warp * HPW + i] = m[i], lsh[warp * HPW + i] = l[i];
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int hr = g + 8 * r, h = h0 + hr;
    if (h >= a.H) continue;
    const int64_t qh_ = (int64_t)q * a.H + h;
    const float lv = lsh[hr];
    float *dst;
    float mul = 1.f;
    if (a.nsplit == 1) {
      dst = a.po + qh_ * C;
      mul = lv > 0.f ? 1.f / lv : 0.f;
    } else {
      const int64_t slot = qh_ * a.nsplit + split;
      dst = lv > 0.f ? a.po + slot * C : nullptr;
    }
    if (dst)
#pragma unroll
      for (int n = 0; n < MT_NT; n++) {
        if (n >= nnt) break;
        float2 v = make_float2(o[n][2 * r] * mul, o[n][2 * r + 1] * mul);
        *reinterpret_cast<float2 *>(dst + c0 + 8 * n + 2 * t4) = v;
      }
  }
  if (a.nsplit > 1 && threadIdx.x < 16 && h0 + threadIdx.x < a.H) {
    const int64_t slot = ((int64_t)q * a.H + h0 + threadIdx.x) * a.nsplit + split;
    a.pml[slot * 2] = msh[threadIdx.x], a.pml[slot * 2 + 1] = lsh[threadIdx.x];
  }
}

extern "C" int dsv3_cuda_mla_attention(dsv3_cuda_ctx *ctx, float *ol, const float *ql, const float *q_pe,
                                       int64_t pe_tok_stride, int64_t pe_head_stride, const uint16_t *kv_cache,
                                       const uint16_t *pe_cache, const int32_t *seq, const int32_t *len, int64_t nq,
                                       int64_t H, int64_t C, int64_t R, int64_t max_seq, int64_t max_len, float scale) {
  CU_ARG("mla attention", C % 8 == 0 && R % 8 == 0 && C + R <= 32 * 8 * MLA_MAXJ && H > 0 && H < (1 << 20),
         "kv_lora_rank %lld and rope dim %lld must be multiples of 8 with a sum <= %d", (long long)C, (long long)R,
         32 * 8 * MLA_MAXJ);
  CU_ARG("mla attention", max_len > 0 && max_len <= max_seq, "max_len %lld outside [1, %lld]", (long long)max_len,
         (long long)max_seq);
  CU_ARG("mla attention",
         ((uintptr_t)kv_cache & 15) == 0 && ((uintptr_t)pe_cache & 15) == 0 && ((uintptr_t)ol & 15) == 0,
         "caches and output must be 16-byte aligned");
  if (nq <= 0) return 0;
  CU_ARG("mla attention", nq < (1ll << 31), "too many queries");
  /* the tensor-core kernel where its shapes fit (DSV3_MLA_TC=0: the CUDA-core one always) */
  const char *tc_env = getenv("DSV3_MLA_TC");
  const bool tc_off = tc_env && !strcmp(tc_env, "0");
  const bool tc = !tc_off && C % 64 == 0 && C <= 512 && (C + R) % 16 == 0 && C + R <= 16 * MT_W * MT_KW;
  const int HW = H >= 64 ? 2 : 1, heads = tc ? 16 : 8 * HW, P = tc ? MT_P : MLA_P; /* heads a block, position step */
  const int64_t hblocks = cdiv(H, heads), base = nq * hblocks;
  int64_t nsplit = 1;
  if (base < 2 * ctx->sms) {
    nsplit = cdiv(2 * ctx->sms, base);
    int64_t maxs = cdiv(max_len, 64);
    if (nsplit > maxs) nsplit = maxs;
    if (nsplit < 1) nsplit = 1;
  }
  /* the kernels size the splits from each query's length (at most this many splits) */
  nsplit = cdiv(max_len, cdiv(cdiv(max_len, nsplit), P) * P);
  CU_ARG("mla attention", nsplit < 65536 && hblocks < 65536, "grid too large");
  float *po = ol, *pml = NULL;
  if (nsplit > 1) {
    size_t nb = (size_t)(nq * H * nsplit) * (size_t)(C + 2) * sizeof(float);
    float *scr = (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_MLA, nb);
    if (!scr) return -1;
    po = scr;
    pml = scr + nq * H * nsplit * C;
  }
  const float sl2 = scale * 1.4426950408889634f;
  dim3 grid((unsigned)nq, (unsigned)hblocks, (unsigned)nsplit);
  if (tc) {
    const size_t smem = mla_tc_smem((int)C, (int)R);
    CU_TRY("mla attention",
           cudaFuncSetAttribute(mla_attn_tc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    MlaTcArgs ta = {po, pml, ql, q_pe, pe_tok_stride, pe_head_stride, max_seq, kv_cache, pe_cache, seq, len,
                    (int)H, (int)C, (int)R, (int)nsplit, sl2};
    launch_pdl(mla_attn_tc_kernel, grid, MT_W * 32, smem, ctx->stream, ta);
  } else if (HW == 2) {
    const size_t smem = (size_t)MLA_TILE * (size_t)((C + R) / 8) * 16;
    launch_pdl(mla_attn_kernel<2>, grid, 256, smem, ctx->stream, po, pml, ql, q_pe, pe_tok_stride, pe_head_stride,
               kv_cache, pe_cache, seq, len, (int)H, (int)C, (int)R, max_seq, (int)nsplit, sl2);
  } else {
    const size_t smem = (size_t)MLA_TILE * (size_t)((C + R) / 8) * 16;
    launch_pdl(mla_attn_kernel<1>, grid, 256, smem, ctx->stream, po, pml, ql, q_pe, pe_tok_stride, pe_head_stride,
               kv_cache, pe_cache, seq, len, (int)H, (int)C, (int)R, max_seq, (int)nsplit, sl2);
  }
  CU_LAUNCHED("mla attention");
  if (nsplit > 1) {
    launch_pdl(mla_combine_kernel, (unsigned)(nq * H), 128, (size_t)((nsplit + 3) & ~3) * sizeof(float), ctx->stream, ol,
               po, pml, (int)C, (int)nsplit);
    CU_LAUNCHED("mla combine");
  }
  return 0;
}

/* ---------------------------------------------------------------- prefill on tensor cores */
/* One sequence, queries at consecutive positions, in the official "naive" form (the same
 * attention as the absorbed one, 3.4x fewer FLOPs at DeepSeek-V3's sizes: a (query, key) pair
 * costs 2 (qk_head_dim + v_head_dim) per head instead of 2 (2 kv_lora_rank + rope)):
 *   KV [L, H, nope + V] = bf16(kv_b(kv rows 0 .. L-1 of the sequence)), L = pos0 + nq (one GEMM)
 *   per chunk of query tokens [t0, t1), rows (t, h) -> r = t*H + h, over the N = pos0 + t1
 *   cache rows any query of the chunk sees (strided batched GEMMs over the heads, fp32 out):
 *     S_h = q_nope_h . k_nope_h^T + q_pe_h . pe^T (pe shared by the heads)
 *     P = softmax(scale * S) with the causal mask (query t sees rows < pos0 + t + 1), bf16
 *     o_h = P_h . v_h
 * Query chunks bound the scores (S + P <= dsv3_cuda_mla_prefill_score_bytes) and skip the
 * masked rows beyond the chunk's last position. */
size_t dsv3_cuda_mla_prefill_score_bytes = (size_t)512 << 20;

/* Row j (block j) of S [rows, ld] holds the scores of query token j / H of the chunk, which
 * sees the first v = first + j / H columns: P[j, c] = softmax(scale * S[j, :v])[c] for c < v,
 * 0 for v <= c < ld (P . v runs over all ld columns).  ld % 8 == 0 (16-byte aligned rows). */
__global__ void __launch_bounds__(256) mla_prefill_softmax_kernel(uint16_t *P, const float *S, int64_t ld, int H,
                                                                  int64_t first, float scale_log2) {
  const int64_t j = blockIdx.x;
  const int v = (int)(first + j / H);
  const float4 *s4 = reinterpret_cast<const float4 *>(S + j * ld);
  float m = -INFINITY, l = 0.f; /* this thread's online max and sum of exp2(x - m) */
  for (int g = threadIdx.x; 4 * g < v; g += blockDim.x) {
    const float4 q = s4[g];
    const float x[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      if (4 * g + k >= v) break;
      const float y = x[k] * scale_log2;
      if (y > m) l = l * exp2f(m - y) + 1.f, m = y; /* m = -inf at first: l = 1 */
      else l += exp2f(y - m);
    }
  }
  const float M = block_max(m); /* v >= 1: finite */
  l *= exp2f(m - M);            /* a thread without columns: exp2(-inf) = 0 */
  const float inv = 1.f / block_sum(l);
  uint2 *p2 = reinterpret_cast<uint2 *>(P + j * ld);
  for (int64_t g = threadIdx.x; 4 * g < ld; g += blockDim.x) {
    float p[4] = {0.f, 0.f, 0.f, 0.f};
    if (4 * g < v) {
      const float4 q = s4[g];
      const float x[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int k = 0; k < 4; k++)
        if (4 * g + k < v) p[k] = exp2f(x[k] * scale_log2 - M) * inv;
    }
    p2[g] = make_uint2(pack_bf16(p[0], p[1]), pack_bf16(p[2], p[3]));
  }
}

/* Fused causal attention for a prompt chunk (flash-attention style, the non-absorbed form):
 * a block of 4 warps takes 64 queries of one head, a warp 16 of them, and walks the keys the
 * chunk's last query sees in tiles of 64, staged in shared memory by cp.async one tile ahead
 * (rows of QK + 8 and VD + 8 bf16: ldmatrix rows on distinct banks).  Per tile:
 *   S [16, 64] = Q [16, QK] . K^T (Q as A fragments in registers for the whole walk, K by
 *   ldmatrix; k = [nope | rope]: the nope part from KV, the rope part from the shared pe rows),
 *   the causal mask, an online softmax in the log2 domain (a row's max and sum across the 4
 *   lanes that hold it), and O [16, VD] = O * corr + P . V, P going from the S accumulators
 *   straight into A fragments as bf16 (V by ldmatrix.trans).
 * The same roundings as the unfused path (bf16 Q, K, V, P; float32 scores, sums and O), with
 * the scores never written: that path moved ~6 bytes a (query, key, head) through HBM. */
/* The causal mask and the online softmax (log2 domain) of one key tile, for a thread's two
 * query rows g and g + 8 at positions qpos0 and qpos0 + 8 (the mma.sync and wgmma accumulator
 * layout): s[4n + 2r + e] is row r's score of key k0 + 8n + 2 t4 + e (scaled, masked and
 * turned into exp2(x - max) here), o[4n + 2r + e] its output accumulators (rescaled), m and l
 * its running max and this lane's share of the sum (the row's 4 lanes are summed at the end).
 * edge: the tile has keys past some row's position. */
template <int NS, int NO>
__device__ __forceinline__ void mla_softmax_tile(float *s, float *o, float (&m)[2], float (&l)[2], float scale_log2, bool edge,
                                                 int k0, int qpos0, int t4) {
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int qp = qpos0 + 8 * r;
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NS; n++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        float v = s[4 * n + 2 * r + e] * scale_log2;
        if (edge && k0 + 8 * n + 2 * t4 + e > qp) v = -INFINITY;
        s[4 * n + 2 * r + e] = v;
        mx = fmaxf(mx, v);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m[r], mx); /* key 0 is always visible: finite from the first tile */
    const float corr = exp2f(m[r] - mn);
    m[r] = mn;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < NS; n++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const float p = exp2f(s[4 * n + 2 * r + e] - mn);
        s[4 * n + 2 * r + e] = p;
        sum += p;
      }
    l[r] = l[r] * corr + sum;
#pragma unroll
    for (int n = 0; n < NO; n++) o[4 * n + 2 * r] *= corr, o[4 * n + 2 * r + 1] *= corr;
  }
}

enum { MF_Q = 64, MF_K = 64 };
struct MlaFusedArgs {
  float *o;                /* [nq, H, VD] */
  const float *Q;          /* [nq, H, QK]: rounded to bf16 as the fragments are built */
  const uint16_t *KV;      /* bf16 [keys, HW]: head h at h * (nope + VD): nope k values, then VD v values */
  const uint16_t *pe;      /* bf16 [keys, QK - nope] (the sequence's first cache row) */
  int64_t HW;
  int H, nope, nq, pos0;
  float scale_log2;
};
template <int QK, int VD>
static size_t mla_fused_smem() {
  return (size_t)2 * MF_K * ((QK + 8) + (VD + 8)) * 2;
}
template <int QK, int VD>
__global__ void __launch_bounds__(128) mla_prefill_fused_kernel(MlaFusedArgs a) {
  extern __shared__ uint4 smem_u4[];
  constexpr int KS = QK + 8, VS = VD + 8;
  uint16_t *kt_s = reinterpret_cast<uint16_t *>(smem_u4); /* [2][MF_K][KS] */
  uint16_t *vt_s = kt_s + 2 * MF_K * KS;                  /* [2][MF_K][VS] */
  const int qt = gridDim.x - 1 - blockIdx.x;               /* the longest rows first */
  const int h = blockIdx.y, q0 = qt * MF_Q;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int R = QK - a.nope, nope = a.nope;
  const int kend = a.pos0 + min(q0 + MF_Q, a.nq); /* keys the block's last query sees */
  const int ntile = (kend + MF_K - 1) / MF_K;
  const int64_t hoff = (int64_t)h * (nope + VD);

  /* Q fragments: rows g, g + 8 of this warp, k-steps of 16 */
  uint32_t qf[QK / 16][4];
#pragma unroll
  for (int ks = 0; ks < QK / 16; ks++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int qi = q0 + warp * 16 + g + (r & 1) * 8, k = ks * 16 + (r >> 1) * 8 + 2 * t4;
      const float2 v = qi < a.nq ? *reinterpret_cast<const float2 *>(a.Q + ((int64_t)qi * a.H + h) * QK + k)
                                 : make_float2(0.f, 0.f);
      qf[ks][r] = pack_bf16(v.x, v.y);
    }
  float o[VD / 8][4];
#pragma unroll
  for (int n = 0; n < VD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int qpos0 = a.pos0 + q0 + warp * 16 + g; /* row g's position; row g + 8: + 8 */

  constexpr int KC = QK / 8, VC = VD / 8; /* 16-byte chunks a row */
  /* a thread stages chunks c8, c8 + 8, ... of rows tid / 8 + 16 j: the same columns every tile,
   * so the loops have fixed trip counts and no division (before: a flat loop over
   * (row, chunk) pairs, i / 40 and i % 40 per chunk, ~300 instructions a tile) */
  const int c8 = threadIdx.x & 7, r16 = threadIdx.x >> 3;
  auto stage = [&](int buf, int k0) {
    uint16_t *kd = kt_s + buf * MF_K * KS, *vd = vt_s + buf * MF_K * VS;
#pragma unroll
    for (int j = 0; j < MF_K / 16; j++) {
      const int row = r16 + 16 * j, key = k0 + row;
      const bool ok = key < kend;
      const int kk = ok ? key : 0;
      const uint16_t *kvr = a.KV + (int64_t)kk * a.HW + hoff, *per = a.pe + (int64_t)kk * R;
#pragma unroll
      for (int c = c8; c < (KC + 7) / 8 * 8; c += 8)
        if (KC % 8 == 0 || c < KC) {
          const int d = c * 8;
          cp_async16(kd + row * KS + d, d < nope ? kvr + d : per + (d - nope), ok ? 16 : 0);
        }
#pragma unroll
      for (int c = c8; c < (VC + 7) / 8 * 8; c += 8)
        if (VC % 8 == 0 || c < VC) cp_async16(vd + row * VS + c * 8, kvr + nope + c * 8, ok ? 16 : 0);
    }
    asm volatile("cp.async.commit_group;");
  };
  stage(0, 0);
  for (int it = 0; it < ntile; it++) {
    const int k0 = it * MF_K;
    if (it + 1 < ntile) {
      stage((it + 1) & 1, k0 + MF_K);
      asm volatile("cp.async.wait_group 1;");
    } else {
      asm volatile("cp.async.wait_group 0;");
    }
    __syncthreads();
    const uint16_t *kb = kt_s + (it & 1) * MF_K * KS, *vb = vt_s + (it & 1) * MF_K * VS;
    float s[MF_K / 8][4];
#pragma unroll
    for (int n = 0; n < MF_K / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < QK / 16; ks++)
#pragma unroll
      for (int n = 0; n < MF_K / 8; n += 2) {
        uint32_t b[4];
        ldsm_x4(b, kb + (8 * (n + (lane >> 4)) + (lane & 7)) * KS + ks * 16 + ((lane >> 3) & 1) * 8);
        mma16816(s[n], qf[ks], b[0], b[1]);
        mma16816(s[n + 1], qf[ks], b[2], b[3]);
      }
    /* mask (keys past a row's position; rows past nq see keys < kend only) and online softmax */
    mla_softmax_tile<MF_K / 8, VD / 8>(&s[0][0], &o[0][0], m, l, a.scale_log2, k0 + MF_K - 1 > qpos0, k0, qpos0, t4);
    /* O += P . V, P from the score accumulators as bf16 A fragments */
#pragma unroll
    for (int kk = 0; kk < MF_K / 16; kk++) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < VD / 8; n += 2) {
        uint32_t b[4];
        ldsm_x4_t(b, vb + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * VS + (n + (lane >> 4)) * 8);
        mma16816(o[n], pa, b[0], b[1]);
        mma16816(o[n + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads(); /* the buffer is staged again two tiles on */
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int qi = q0 + warp * 16 + g + 8 * r;
    if (qi >= a.nq) continue;
    const float inv = 1.f / lr;
    float *dst = a.o + ((int64_t)qi * a.H + h) * VD + 2 * t4;
#pragma unroll
    for (int n = 0; n < VD / 8; n++)
      *reinterpret_cast<float2 *>(dst + 8 * n) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
  }
}

/* Fused causal attention on sm_90a's warpgroup MMA, for DeepSeek-V3's heads (nope 128, rope 64,
 * v 128): a block of 2 warpgroups takes 128 queries of one head (64 a warpgroup, 16 a warp as in
 * the mma.sync kernel above) and walks the keys in tiles of 64, staged by cp.async two tiles
 * ahead into 3 buffers.  Per tile and warpgroup:
 *   S [64, 64] = Q . K^T: 12 wgmma m64n64k16, Q the A operand from registers (as above), K the
 *   B operand from shared memory: the tile's [64 keys][192] as 3 K-major blocks of 64 columns
 *   (the 128-byte swizzle of wgmma.cuh);
 *   the causal mask and the online softmax of the kernel above (the accumulators have the
 *   mma.sync layout, 16 rows a warp);
 *   O [64, 128] += P . V: 4 wgmma m64n128k16, P from the S accumulators as bf16 A fragments, V
 *   the B operand K-major: the tile of V^T [128][64 keys], which the caller writes transposed
 *   ([H][128][ldL]: keys contiguous) so both operands take the one descriptor form.
 * A warpgroup skips the tiles that lie wholly past its last query (the diagonal's second tile
 * for the first warpgroup).  The same roundings as the kernels above (bf16 Q, K, V, P; float32
 * scores, sums and O). */
enum { MW_Q = 128, MW_K = 64, MW_ST = 3, MW_NOPE = 128, MW_R = 64, MW_V = 128, MW_QK = MW_NOPE + MW_R };
struct MlaWgArgs {
  float *o;           /* [nq, H, V] */
  const float *Q;     /* [nq, H, QK] */
  const uint16_t *K;  /* bf16 [keys, H, nope] */
  const uint16_t *VT; /* bf16 [H, V, ldL]: key-contiguous rows, keys past the sequence zero */
  const uint16_t *pe; /* bf16 [keys, R] (the sequence's first cache row) */
  const float *cos_t, *sin_t; /* NULL, or RoPE tables: q's rope part rotated here at pos0 + i */
  uint16_t *ob;               /* NULL, or o in bf16 as well [nq, H, V] */
  int64_t ldL;
  int H, nq, pos0;
  float scale_log2;
};
enum { MW_STAGE = (MW_K * MW_QK + MW_V * MW_K) * 2, MW_SMEM = MW_ST * MW_STAGE + 1024 }; /* 40 KB a stage, + alignment */
/* o / l of query rows q (g) and q + 8 of head h (a row's sum spread over its 4 lanes) into
 * a.o, and in bf16 into a.ob where set; rows past nq not stored */
__device__ __forceinline__ void mla_wg_store(const MlaWgArgs &a, const float (&o)[MW_V / 2], const float (&l)[2], int q, int h,
                                             int t4) {
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int qi = q + 8 * r;
    if (qi >= a.nq) continue;
    const float inv = 1.f / lr;
    const int64_t off = ((int64_t)qi * a.H + h) * MW_V + 2 * t4;
#pragma unroll
    for (int n = 0; n < MW_V / 8; n++) {
      const float v0 = o[4 * n + 2 * r] * inv, v1 = o[4 * n + 2 * r + 1] * inv;
      *reinterpret_cast<float2 *>(a.o + off + 8 * n) = make_float2(v0, v1);
      if (a.ob) *reinterpret_cast<uint32_t *>(a.ob + off + 8 * n) = pack_bf16(v0, v1);
    }
  }
}
/* a tile's probabilities (the S accumulators after the softmax) as the bf16 A fragments of P . V */
__device__ __forceinline__ void mla_pack_p(uint32_t (&pa)[MW_K / 16][4], const float (&s)[MW_K / 2]) {
#pragma unroll
  for (int kk = 0; kk < MW_K / 16; kk++) {
    pa[kk][0] = pack_bf16(s[8 * kk], s[8 * kk + 1]), pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
    pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]), pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
  }
}
/* the wgmma A fragments of q (bf16) for query rows q (g) and q + 8 of head h; a rope pair (k,
 * k + 1) rotated as dsv3_cuda_rope where a.cos_t is set; rows past nq zeros (their positions
 * may lie past the tables) */
__device__ __forceinline__ void mla_q_frags(uint32_t (&qf)[MW_QK / 16][4], const MlaWgArgs &a, int q, int h, int t4) {
#pragma unroll
  for (int ks = 0; ks < MW_QK / 16; ks++)
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int qi = q + (r & 1) * 8, k = ks * 16 + (r >> 1) * 8 + 2 * t4;
      float2 v = qi < a.nq ? *reinterpret_cast<const float2 *>(a.Q + ((int64_t)qi * a.H + h) * MW_QK + k) : make_float2(0.f, 0.f);
      if (k >= MW_NOPE && a.cos_t && qi < a.nq) {
        const int64_t row = (int64_t)(a.pos0 + qi) * (MW_R / 2) + (k - MW_NOPE) / 2;
        const float c = a.cos_t[row], s = a.sin_t[row], x0 = v.x, x1 = v.y;
        v.x = x0 * c - x1 * s, v.y = x0 * s + x1 * c;
      }
      qf[ks][r] = pack_bf16(v.x, v.y);
    }
}
__global__ void __launch_bounds__(256, 1) mla_prefill_wg_kernel(MlaWgArgs a) {
#if !(defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  __trap(); /* the compute_90 PTX has no wgmma: the host launches this kernel on sm_90 only */
#else
  extern __shared__ __align__(16) uint8_t mw_smem_raw[];
  uint8_t *sm = mw_smem_raw + ((1024 - ((unsigned)__cvta_generic_to_shared(mw_smem_raw) & 1023)) & 1023);
  const int qt = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
  const int h = blockIdx.y, q0 = qt * MW_Q;
  const int tid = threadIdx.x, wg = tid >> 7, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int H = a.H;
  const int kend = a.pos0 + min(q0 + MW_Q, a.nq); /* keys the block's last query sees */
  const int ntile = (kend + MW_K - 1) / MW_K;
  const int wlast = a.pos0 + q0 + wg * 64 + 63; /* the warpgroup's last query position */

  uint32_t qf[MW_QK / 16][4];
  mla_q_frags(qf, a, q0 + wg * 64 + wi * 16 + g, h, t4);
  float o[MW_V / 2]; /* O accumulators: [n tile j][4] */
#pragma unroll
  for (int i = 0; i < MW_V / 2; i++) o[i] = 0.f;
  float s[MW_K / 2]; /* S accumulators */
  uint32_t pa[MW_K / 16][4];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int qpos0 = a.pos0 + q0 + wg * 64 + wi * 16 + g; /* row g's position; row g + 8: + 8 */

  /* staging: thread tid copies 16-byte chunk c8 = tid % 8 of K rows r32 + 32 j in each 64-column
   * block and of V^T rows r32 + 32 j (keys c8 * 8 .. + 7 of the tile), chunk c8 ^ (row & 7) */
  const int c8 = tid & 7, r32 = tid >> 3;
  const uint16_t *vsrc = a.VT + ((int64_t)h * MW_V + r32) * a.ldL + c8 * 8;
  auto stage = [&](int it) {
    if (it < ntile) {
      uint16_t *ks = reinterpret_cast<uint16_t *>(sm + (it % MW_ST) * MW_STAGE);
      uint16_t *vs = ks + MW_K * MW_QK;
      const int k0 = it * MW_K;
#pragma unroll
      for (int j = 0; j < MW_K / 32; j++) {
        const int row = r32 + 32 * j, key = k0 + row;
        const bool ok = key < kend;
        const int kk = ok ? key : 0;
#pragma unroll
        for (int hb = 0; hb < MW_QK / 64; hb++) {
          const int d = hb * 64 + c8 * 8;
          const uint16_t *src = d < MW_NOPE ? a.K + ((int64_t)kk * H + h) * MW_NOPE + d : a.pe + (int64_t)kk * MW_R + (d - MW_NOPE);
          cp_async16(ks + hb * MW_K * 64 + row * 64 + ((c8 ^ (row & 7)) * 8), src, ok ? 16 : 0);
        }
      }
      const bool vok = k0 + c8 * 8 < kend; /* the chunk's keys past kend are masked (or the zero padding) */
#pragma unroll
      for (int j = 0; j < MW_V / 32; j++) {
        const int row = r32 + 32 * j;
        cp_async16(vs + row * 64 + ((c8 ^ (row & 7)) * 8), vok ? vsrc + (int64_t)32 * j * a.ldL + k0 : a.VT, vok ? 16 : 0);
      }
    }
    asm volatile("cp.async.commit_group;");
  };
  stage(0);
  stage(1);
  for (int it = 0; it < ntile; it++) {
    const int k0 = it * MW_K;
    asm volatile("cp.async.wait_group 1;");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); /* cp.async writes before wgmma reads */
    __syncthreads(); /* the tile is in; every warpgroup is done with tile it - 1, whose buffer is staged next */
    stage(it + 2);
    if (k0 > wlast) continue; /* wholly masked for this warpgroup */
    const uint16_t *ks = reinterpret_cast<const uint16_t *>(sm + (it % MW_ST) * MW_STAGE);
    const uint16_t *vs = ks + MW_K * MW_QK;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < MW_QK / 16; kk++)
      Wg<MW_K / 8, true>::mma(s, qf[kk], wg_desc(ks + (kk >> 2) * MW_K * 64) + (uint64_t)(((kk & 3) * 32) >> 4), kk);
    wg_commit();
    wg_wait<0>();
    wg_hold(s);
    /* mask (keys past a row's position; rows past nq see keys < kend only) and online softmax */
    mla_softmax_tile<MW_K / 8, MW_V / 8>(s, o, m, l, a.scale_log2, k0 + MW_K - 1 > qpos0, k0, qpos0, t4);
    /* O += P . V */
    mla_pack_p(pa, s);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < MW_K / 16; kk++) Wg<MW_V / 8, true>::mma(o, pa[kk], wg_desc(vs) + (uint64_t)((kk * 32) >> 4), 1);
    wg_commit();
    wg_wait<0>();
    wg_hold(o);
#pragma unroll
    for (int kk = 0; kk < MW_K / 16; kk++) wg_hold(pa[kk]);
  }
  asm volatile("cp.async.wait_group 0;");
  mla_wg_store(a, o, l, q0 + wg * 64 + wi * 16 + g, h, t4);
#endif
}
int dsv3_cuda_mla_wg = 1;

/* The same attention, warp-specialised (the wgmma kernel above waits at a block barrier every
 * tile, so its two warpgroups compute and exponentiate in step and the tensor cores idle
 * through every softmax): a third warpgroup (one thread of it; its registers handed to the
 * other two by setmaxnreg) stages the tiles by TMA (K's two 64-column blocks, the
 * rope keys and V^T, 40 KB a tile, the same swizzled layout) into MS_ST buffers, each with a
 * "full" mbarrier (the TMA's bytes) and an "empty" one (the 8 consumer warps done with it).
 * The two warpgroups take turns at the tensor cores (named barriers 1 and 2, FlashAttention-3's
 * ping-pong): in its turn a warpgroup issues S = Q . K^T of tile it and O += P . V of tile
 * it - 1, hands the turn over, waits for its products and then runs tile it's softmax while the
 * other's products run.  Same roundings and results as mla_prefill_wg_kernel. */
enum { MS_ST = 4, MS_SMEM = MS_ST * MW_STAGE + 1024, MS_T = 384 };
struct MlaTmaps {
  CUtensorMap k, pe, vt; /* K [L][H * 128], pe [L][64], V^T [H * 128][ldL]: bf16, 64 x 64 (V^T: 64 x 128) boxes */
};
__global__ void __launch_bounds__(MS_T, 1) mla_prefill_ws_kernel(MlaWgArgs a, const __grid_constant__ MlaTmaps tm) {
#if !(defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  __trap(); /* the compute_90 PTX has no wgmma: the host launches this kernel on sm_90 only */
#else
  extern __shared__ __align__(16) uint8_t ms_smem_raw[];
  uint8_t *sm = ms_smem_raw + ((1024 - ((unsigned)__cvta_generic_to_shared(ms_smem_raw) & 1023)) & 1023);
  __shared__ uint64_t full[MS_ST], empty[MS_ST];
  const int qt = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
  const int h = blockIdx.y, q0 = qt * MW_Q;
  const int tid = threadIdx.x, wg = tid >> 7, wi = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int kend = a.pos0 + min(q0 + MW_Q, a.nq); /* keys the block's last query sees */
  const int ntile = (kend + MW_K - 1) / MW_K;
  if (tid == 0) {
    for (int s = 0; s < MS_ST; s++) mbar_init(full + s, 1), mbar_init(empty + s, 8);
    mbar_init_fence();
  }
  __syncthreads(); /* the last block-wide barrier */
  if (wg == 2) { /* the producer warpgroup: one thread; its registers go to the consumers */
    WG_ASM("setmaxnreg.dec.sync.aligned.u32 40;");
    if (tid == 256)
      for (int it = 0; it < ntile; it++) {
        const int s = it % MS_ST, k0 = it * MW_K;
        if (it >= MS_ST) mbar_wait(empty + s, (it / MS_ST - 1) & 1); /* tile it - MS_ST released */
        uint8_t *d = sm + s * MW_STAGE;
        mbar_expect_tx(full + s, MW_STAGE);
        tma_load_2d(d, &tm.k, h * MW_NOPE, k0, full + s);
        tma_load_2d(d + MW_K * 64 * 2, &tm.k, h * MW_NOPE + 64, k0, full + s);
        tma_load_2d(d + 2 * MW_K * 64 * 2, &tm.pe, 0, k0, full + s);
        tma_load_2d(d + MW_K * MW_QK * 2, &tm.vt, k0, h * MW_V, full + s);
      }
    return;
  }
  WG_ASM("setmaxnreg.inc.sync.aligned.u32 232;");
  const int wlast = a.pos0 + q0 + wg * 64 + 63; /* the warpgroup's last query position */
  const int nt_w = min(ntile, wlast / MW_K + 1); /* its tiles: a prefix (the rest wholly masked) */
  uint32_t qf[MW_QK / 16][4];
  mla_q_frags(qf, a, q0 + wg * 64 + wi * 16 + g, h, t4);
  float o[MW_V / 2];
#pragma unroll
  for (int i = 0; i < MW_V / 2; i++) o[i] = 0.f;
  float s[MW_K / 2];
  uint32_t pa[MW_K / 16][4]; /* P of the previous tile (bf16 A fragments) */
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int qpos0 = a.pos0 + q0 + wg * 64 + wi * 16 + g;
  /* turns: warpgroup w waits on barrier 1 + w, then passes the turn on barrier 2 - w; warpgroup
   * 0 first (one extra arrival, taken back by its sync after the last turn).  Both take ntile + 1
   * turns: a tile's S (with the previous tile's P . V) in each, the last P . V in the last, and
   * for warpgroup 0 an empty turn where it skips the last tile.  (The wgmmas are not inside
   * branches: ptxas would serialise them.) */
  auto s_mma = [&](const uint8_t *ks) {
#pragma unroll
    for (int kk = 0; kk < MW_QK / 16; kk++)
      Wg<MW_K / 8, true>::mma(s, qf[kk], wg_desc(ks + (kk >> 2) * MW_K * 64 * 2) + (uint64_t)(((kk & 3) * 32) >> 4), kk);
  };
  auto pv_mma = [&](int tile) { /* O += P . V of tile `tile` */
    const uint8_t *vp = sm + (tile % MS_ST) * MW_STAGE + MW_K * MW_QK * 2;
#pragma unroll
    for (int kk = 0; kk < MW_K / 16; kk++) Wg<MW_V / 8, true>::mma(o, pa[kk], wg_desc(vp) + (uint64_t)((kk * 32) >> 4), 1);
  };
  auto softmax = [&](int it) { /* tile it's scores to P (pa), O and the sums rescaled */
    wg_hold(s);
    wg_hold(o);
#pragma unroll
    for (int kk = 0; kk < MW_K / 16; kk++) wg_hold(pa[kk]);
    const int k0 = it * MW_K;
    mla_softmax_tile<MW_K / 8, MW_V / 8>(s, o, m, l, a.scale_log2, k0 + MW_K - 1 > qpos0, k0, qpos0, t4);
    mla_pack_p(pa, s);
  };
  if (wg == 1) named_arrive(1, 256);
  mbar_wait(full, 0);
  named_sync(1 + wg, 256);
  wg_fence();
  s_mma(sm);
  wg_commit();
  named_arrive(2 - wg, 256);
  wg_wait<0>();
  softmax(0);
  for (int it = 1; it < nt_w; it++) {
    const int st = it % MS_ST;
    mbar_wait(full + st, (it / MS_ST) & 1);
    named_sync(1 + wg, 256);
    wg_fence();
    s_mma(sm + st * MW_STAGE);
    pv_mma(it - 1);
    wg_commit();
    named_arrive(2 - wg, 256);
    wg_wait<0>();
    if (lane == 0) mbar_arrive(empty + (it - 1) % MS_ST); /* this warp is done with tile it - 1 */
    softmax(it);
  }
  for (int it = nt_w; it < ntile; it++) named_sync(1 + wg, 256), named_arrive(2 - wg, 256);
  named_sync(1 + wg, 256);
  wg_fence();
  pv_mma(nt_w - 1);
  wg_commit();
  named_arrive(2 - wg, 256);
  wg_wait<0>();
  wg_hold(o);
#pragma unroll
  for (int kk = 0; kk < MW_K / 16; kk++) wg_hold(pa[kk]);
  if (wg == 0) named_sync(1, 256);
  mla_wg_store(a, o, l, q0 + wg * 64 + wi * 16 + g, h, t4);
#endif
}
int dsv3_cuda_mla_ws = 1;

template <int QK, int VD>
static int mla_fused_launch(const MlaFusedArgs &a, cudaStream_t st) {
  const size_t smem = mla_fused_smem<QK, VD>();
  CU_TRY("mla prefill (fused)",
         cudaFuncSetAttribute(mla_prefill_fused_kernel<QK, VD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  mla_prefill_fused_kernel<QK, VD><<<dim3((unsigned)cdiv(a.nq, MF_Q), (unsigned)a.H), 128, smem, st>>>(a);
  CU_LAUNCHED("mla prefill (fused)");
  return 0;
}
/* the head sizes the fused kernel is built for: DeepSeek-V3 (128 + 64, 128) and dsv3-tiny
 * (32 + 32, 32); 0 where it is not (the score-matrix path then) */
static int mla_fused_fits(int64_t nope, int64_t R, int64_t V) {
  return (nope + R == 192 && V == 128 && nope % 8 == 0) || (nope + R == 64 && V == 32 && nope % 8 == 0);
}
int dsv3_cuda_mla_fused = 1;

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* one strided batched GEMM over the heads, bf16 in, fp32 (or ct) out (column-major, as cuBLAS) */
static int heads_gemm(dsv3_cuda_ctx *ctx, const char *what, cublasOperation_t ta, int64_t m, int64_t n, int64_t k,
                      const uint16_t *A, int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb, float beta,
                      void *C, int64_t ldc, int64_t sc, int64_t H, cudaDataType ct = CUDA_R_32F) {
  const float one = 1.f;
  cublasStatus_t s = cublasGemmStridedBatchedEx((cublasHandle_t)ctx->cublas, ta, CUBLAS_OP_N, (int)m, (int)n, (int)k, &one,
                                                A, CUDA_R_16BF, (int)lda, (long long)sa, B, CUDA_R_16BF, (int)ldb,
                                                (long long)sb, &beta, C, ct, (int)ldc, (long long)sc, (int)H,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  CU_ARG("mla prefill", s == CUBLAS_STATUS_SUCCESS, "%s: cublasGemmStridedBatchedEx %lld heads of %lld x %lld x %lld failed (status %d)",
         what, (long long)H, (long long)m, (long long)n, (long long)k, (int)s);
  return 0;
}

extern "C" int dsv3_cuda_mla_prefill(dsv3_cuda_ctx *ctx, float *o, float *q, const uint16_t *wkvb, const uint16_t *kv_cache,
                                     const uint16_t *pe_cache, int64_t seq, int64_t pos0, int64_t nq, int64_t H, int64_t nope,
                                     int64_t R, int64_t V, int64_t C, int64_t max_seq, float scale, const float *cos_t,
                                     const float *sin_t, uint16_t *ob) {
  CU_ARG("mla prefill", H > 0 && H < (1 << 20) && C > 0 && R >= 0 && nope > 0 && V > 0 && H * (nope + V + R) < (1 << 30),
         "bad shape (heads %lld, kv_lora_rank %lld, nope %lld, rope %lld, v %lld)", (long long)H, (long long)C,
         (long long)nope, (long long)R, (long long)V);
  CU_ARG("mla prefill", seq >= 0 && pos0 >= 0 && nq >= 0 && max_seq > 0 && max_seq < (1ll << 31) - 8,
         "bad sequence %lld, first position %lld, %lld queries or max_seq %lld", (long long)seq, (long long)pos0,
         (long long)nq, (long long)max_seq);
  CU_ARG("mla prefill", pos0 + nq <= max_seq, "positions %lld .. %lld outside the cache of %lld rows", (long long)pos0,
         (long long)(pos0 + nq - 1), (long long)max_seq);
  if (nq <= 0) return 0;
  const int64_t qk = nope + R, HW = H * (nope + V), L = pos0 + nq, ldL = cdiv(L, 8) * 8;
  const char *fe = getenv("DSV3_MLA_FUSED"); /* 0: the score-matrix path always */
  const bool fused = dsv3_cuda_mla_fused && !(fe && !strcmp(fe, "0")) && mla_fused_fits(nope, R, V) &&
                     ((uintptr_t)q & 7) == 0 && nq < (1ll << 31) / 64 && pos0 < (1ll << 30) && H < 65536;
  /* DeepSeek-V3's heads on an sm_90 device: the wgmma kernel (DSV3_MLA_WG=0: the mma.sync one) */
  const char *we = getenv("DSV3_MLA_WG");
  const bool wgk = fused && dsv3_cuda_mla_wg && !(we && !strcmp(we, "0")) && ctx->sm90 && nope == MW_NOPE && R == MW_R &&
                   V == MW_V;
  /* query tokens per chunk: scores (fp32) + probabilities (bf16) within the budget */
  const int64_t per_tok = H * ldL * 6;
  int64_t tq = (int64_t)(dsv3_cuda_mla_prefill_score_bytes / (size_t)per_tok);
  if (tq < 1) tq = 1;
  if (tq > nq) tq = nq;
  const int64_t nchunk = cdiv(nq, tq);
  tq = cdiv(nq, nchunk); /* balanced chunks */
  CU_ARG("mla prefill", tq * H < (1ll << 31) && L * HW < (1ll << 40), "%lld query rows per chunk, %lld cached keys x %lld: too many",
         (long long)(tq * H), (long long)L, (long long)HW);
  /* (wgk: K and V^T in kb, 256-byte aligned apart) */
  const size_t kb = align256((size_t)(ldL * HW) * 2) + (wgk ? 256 : 0), qb = fused ? 0 : align256((size_t)(nq * H * qk) * 2),
               sb = fused ? 0 : align256((size_t)(tq * H * ldL) * 4), pb = fused ? 0 : align256((size_t)(tq * H * ldL) * 2);
  uint8_t *scr = (uint8_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_MLA_PREFILL, kb + qb + sb + pb);
  if (!scr) return -1;
  uint16_t *KV = (uint16_t *)scr, *Q = (uint16_t *)(scr + kb), *P = (uint16_t *)(scr + kb + qb + sb);
  float *S = (float *)(scr + kb + qb);
  const int64_t base = seq * max_seq; /* first cache row of the sequence */
  cudaStream_t st = ctx->stream;
  const float one = 1.f, zero = 0.f, sl2 = scale * 1.4426950408889634f;
  if (wgk) {
    /* K [L, H, nope] = kv . Wk_h^T and V^T [H, V, ldL] = Wv_h . kv^T (keys contiguous), head by
     * head (Wkvb's rows: nope k rows, then V v rows a head); V^T's columns L .. ldL - 1 zero */
    uint16_t *Kb = KV, *VT = (uint16_t *)(scr + align256((size_t)(L * H * nope) * 2));
    if (heads_gemm(ctx, "k", CUBLAS_OP_T, nope, L, C, wkvb, C, (nope + V) * C, kv_cache + base * C, C, 0, 0.f, Kb, H * nope,
                   nope, H, CUDA_R_16BF) ||
        heads_gemm(ctx, "v", CUBLAS_OP_T, L, V, C, kv_cache + base * C, C, 0, wkvb + nope * C, C, (nope + V) * C, 0.f, VT, ldL,
                   V * ldL, H, CUDA_R_16BF))
      return -1;
    if (ldL > L) CU_TRY("mla prefill", cudaMemset2DAsync(VT + L, (size_t)ldL * 2, 0, (size_t)(ldL - L) * 2, (size_t)(H * V), st));
    MlaWgArgs wa = {o, q, Kb, VT, pe_cache + base * R, cos_t, sin_t, ob, ldL, (int)H, (int)nq, (int)pos0, sl2};
    /* the warp-specialised kernel where its TMA maps encode (DSV3_MLA_WS=0: the one above) */
    const char *wse = getenv("DSV3_MLA_WS");
    MlaTmaps tm;
    if (dsv3_cuda_mla_ws && !(wse && !strcmp(wse, "0")) &&
        !dsv3_tmap_2d(&tm.k, 2, Kb, (uint64_t)(H * nope), (uint64_t)L, (uint64_t)(H * nope) * 2, 64, MW_K) &&
        !dsv3_tmap_2d(&tm.pe, 2, pe_cache + base * R, (uint64_t)R, (uint64_t)L, (uint64_t)R * 2, 64, MW_K) &&
        !dsv3_tmap_2d(&tm.vt, 2, VT, (uint64_t)ldL, (uint64_t)(H * V), (uint64_t)ldL * 2, 64, MW_V)) {
      CU_TRY("mla prefill (wgmma, warp-specialised)",
             cudaFuncSetAttribute(mla_prefill_ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, MS_SMEM));
      mla_prefill_ws_kernel<<<dim3((unsigned)cdiv(nq, MW_Q), (unsigned)H), MS_T, MS_SMEM, st>>>(wa, tm);
      CU_LAUNCHED("mla prefill (wgmma, warp-specialised)");
      return 0;
    }
    CU_TRY("mla prefill (wgmma)",
           cudaFuncSetAttribute(mla_prefill_wg_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, MW_SMEM));
    mla_prefill_wg_kernel<<<dim3((unsigned)cdiv(nq, MW_Q), (unsigned)H), 256, MW_SMEM, st>>>(wa);
    CU_LAUNCHED("mla prefill (wgmma)");
    return 0;
  }

  /* KV^T [HW, L] = Wkvb [HW, C] . kv^T [C, L] (row-major [L, C] = column-major [C, L]), bf16 out */
  cublasStatus_t s = cublasGemmEx((cublasHandle_t)ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)HW, (int)L, (int)C, &one, wkvb,
                                  CUDA_R_16BF, (int)C, kv_cache + base * C, CUDA_R_16BF, (int)C, &zero, KV, CUDA_R_16BF,
                                  (int)HW, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  CU_ARG("mla prefill", s == CUBLAS_STATUS_SUCCESS, "kv_b: cublasGemmEx %lld x %lld x %lld failed (status %d)", (long long)HW,
         (long long)L, (long long)C, (int)s);
  /* rows L .. ldL - 1 are zero: the GEMMs below run over multiples of 8 keys (aligned tiles;
   * their scores are never read and their probabilities are 0) */
  if (ldL > L) CU_TRY("mla prefill", cudaMemsetAsync(KV + L * HW, 0, (size_t)((ldL - L) * HW) * 2, st));
  if (cos_t && R > 0 && dsv3_cuda_rope_seq(q + nope, nq, H, H * qk, qk, R, cos_t, sin_t, pos0, st)) return -1;
  if (fused) { /* the kernel rounds q to bf16 itself (a conversion pass: 111 us a layer at 2048 tokens) */
    MlaFusedArgs fa = {o, q, KV, pe_cache + base * R, HW, (int)H, (int)nope, (int)nq, (int)pos0, sl2};
    if (qk == 192 ? mla_fused_launch<192, 128>(fa, st) : mla_fused_launch<64, 32>(fa, st)) return -1;
    return ob ? dsv3_cuda_f32_to_bf16(ob, o, nq * H * V, st) : 0;
  }
  if (dsv3_cuda_f32_to_bf16(Q, q, nq * H * qk, st)) return -1;
  for (int64_t t0 = 0; t0 < nq; t0 += tq) {
    const int64_t t1 = t0 + tq < nq ? t0 + tq : nq, nt = t1 - t0, rows = nt * H, N = pos0 + t1, ld = cdiv(N, 8) * 8;
    const uint16_t *Qc = Q + t0 * H * qk;
    /* per head, column-major S_h [ld, nt] (ld H*ld, rows t*H + h of S) = K_h [ld, d] . Q_h^T [d, nt]
     * (keys N .. ld - 1 are the zero rows) */
    if (heads_gemm(ctx, "scores", CUBLAS_OP_T, ld, nt, nope, KV, HW, nope + V, Qc, H * qk, qk, 0.f, S, H * ld, ld, H))
      return -1;
    /* the rope keys only for the N real rows (rows past them may lie outside the cache) */
    if (R > 0 && heads_gemm(ctx, "rope scores", CUBLAS_OP_T, N, nt, R, pe_cache + base * R, R, 0, Qc + nope, H * qk, qk, 1.f,
                            S, H * ld, ld, H))
      return -1;
    mla_prefill_softmax_kernel<<<(unsigned)rows, 256, 0, st>>>(P, S, ld, (int)H, pos0 + t0 + 1, sl2);
    CU_LAUNCHED("mla prefill (softmax)");
    /* o_h^T [V, nt] (ld H*V) = v_h^T [V, N] (column-major, ld HW) . P_h^T [N, nt] (ld H*ld) */
    if (heads_gemm(ctx, "values", CUBLAS_OP_N, V, nt, ld, KV + nope, HW, nope + V, P, H * ld, ld, 0.f, o + t0 * H * V, H * V, V,
                   H))
      return -1;
  }
  return ob ? dsv3_cuda_f32_to_bf16(ob, o, nq * H * V, st) : 0;
}
