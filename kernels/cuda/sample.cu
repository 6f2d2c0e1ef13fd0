/* sample.cu - next-token choice on the device: argmax, and the official sampler
 * (softmax(logits / T), argmax(p / Exp(1))) with an optional top-p nucleus.  One block per row. */
#include "common.cuh"

/* the larger value; on equal values the lower index */
__device__ __forceinline__ void arg_better(float &bv, int &bi, float v, int i) {
  if (i < 0) return;
  if (bi < 0 || v > bv || (v == bv && i < bi)) bv = v, bi = i;
}
__device__ __forceinline__ int block_argmax(float bv, int bi) {
  __shared__ float sv[32];
  __shared__ int si[32];
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    arg_better(bv, bi, ov, oi);
  }
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (l == 0) sv[w] = bv, si[w] = bi;
  __syncthreads();
  bv = l < nw ? sv[l] : 0.f;
  bi = l < nw ? si[l] : -1;
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    arg_better(bv, bi, ov, oi);
  }
  return bi;
}

__global__ void __launch_bounds__(1024) argmax_kernel(int32_t *out, const float *logits, int64_t V) {
  pdl_wait();
  pdl_trigger();
  const float *lg = logits + blockIdx.x * V;
  float bv = 0.f;
  int bi = -1;
  if ((V & 3) == 0 && ((uintptr_t)lg & 15) == 0) {
    /* 16-byte loads, several in flight (one scalar load at a time took 58 us for DeepSeek-V3's
     * 129280 logits on an H200) */
    const float4 *l4 = reinterpret_cast<const float4 *>(lg);
#pragma unroll 8
    for (int i = threadIdx.x; i < (int)(V >> 2); i += blockDim.x) {
      const float4 v = l4[i];
      arg_better(bv, bi, v.x, 4 * i), arg_better(bv, bi, v.y, 4 * i + 1);
      arg_better(bv, bi, v.z, 4 * i + 2), arg_better(bv, bi, v.w, 4 * i + 3);
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) arg_better(bv, bi, lg[i], (int)i);
  }
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) out[blockIdx.x] = bi;
}

extern "C" int dsv3_cuda_argmax(int32_t *out, const float *logits, int64_t nrows, int64_t V, cudaStream_t st) {
  CU_ARG("argmax", V > 0 && V < (1ll << 31) && nrows < (1ll << 31), "bad shape");
  if (nrows <= 0) return 0;
  launch_pdl(argmax_kernel, (unsigned)nrows, 1024, 0, st, out, logits, V);
  CU_LAUNCHED("argmax");
  return 0;
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Top-p cut by radix selection on the float bits of p (positive floats order as their bits):
 * three histogram passes of the probability mass over 11 + 11 + 9 bits, each time descending
 * into the bin where the mass counted from the top reaches the target.  The result is the
 * exact value of the reference's cut: the p at which the descending cumulative sum first
 * reaches top_p; everything >= it is kept. */
#define NB 2048
__global__ void __launch_bounds__(1024) sample_kernel(int32_t *out, const float *logits, int64_t V, float inv_t, float top_p,
                                                      uint64_t seed, const int32_t *pos) {
  pdl_wait();
  pdl_trigger();
  __shared__ float hist[NB];
  __shared__ unsigned s_prefix;
  __shared__ float s_target;
  const int64_t row = blockIdx.x;
  const float *lg = logits + row * V;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, lg[i]);
  m = block_max(m);
  unsigned cut = 0; /* bits of the smallest p kept */
  if (top_p < 1.f) {
    float z = 0.f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) z += __expf((lg[i] - m) * inv_t);
    z = block_sum(z);
    if (threadIdx.x == 0) s_prefix = 0, s_target = top_p * z;
    const int shifts[3] = {20, 9, 0}, widths[3] = {11, 11, 9};
    unsigned hi_mask = 0; /* bits above the current pass that are fixed */
    for (int pass = 0; pass < 3; pass++) {
      const int sh = shifts[pass], nbins = 1 << widths[pass];
      for (int b = threadIdx.x; b < nbins; b += blockDim.x) hist[b] = 0.f;
      __syncthreads();
      const unsigned prefix = s_prefix;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        float p = __expf((lg[i] - m) * inv_t);
        unsigned u = __float_as_uint(p);
        if ((u & hi_mask) == prefix) atomicAdd(&hist[(u >> sh) & (nbins - 1)], p);
        else if ((u & hi_mask) > prefix) { /* above the bin: already counted */ }
      }
      __syncthreads();
      if (threadIdx.x < 32) { /* find the bin, from the top, where the mass reaches the target */
        const int lane = threadIdx.x, per = nbins / 32;
        float s = 0.f;
        for (int k = 0; k < per; k++) s += hist[nbins - 1 - (lane * per + k)];
        float incl = s;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          float v = __shfl_up_sync(0xffffffffu, incl, o);
          if (lane >= o) incl += v;
        }
        const float target = s_target, excl = incl - s;
        unsigned hit = __ballot_sync(0xffffffffu, incl >= target);
        int ln = hit ? __ffs(hit) - 1 : 31; /* rounding shortfall: take the lowest bins */
        if (lane == ln) {
          float c = excl;
          int bin = 0;
          for (int k = 0; k < per; k++) {
            bin = nbins - 1 - (lane * per + k);
            if (c + hist[bin] >= target || k == per - 1) break;
            c += hist[bin];
          }
          s_prefix = prefix | ((unsigned)bin << sh);
          s_target = target - c;
        }
      }
      __syncthreads();
      hi_mask |= (unsigned)(nbins - 1) << sh;
    }
    cut = s_prefix;
  }
  /* argmax over kept tokens of p / E, E ~ Exp(1): log p - log E */
  const uint64_t base = mix64(seed ^ mix64(((uint64_t)(uint32_t)pos[row] << 32) | (uint64_t)row));
  float bv = 0.f;
  int bi = -1;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    float lp = (lg[i] - m) * inv_t;
    if (top_p < 1.f && __float_as_uint(__expf(lp)) < cut) continue;
    uint64_t h = mix64(base + (uint64_t)i * 0xd1b54a32d192ed03ull);
    float u = (float)(((h >> 40) + 0.5) * (1.0 / 16777216.0)); /* (0, 1) */
    float e = -__logf(u);
    arg_better(bv, bi, lp - __logf(e), (int)i);
  }
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) out[row] = bi;
}

extern "C" int dsv3_cuda_sample(int32_t *out, const float *logits, int64_t nrows, int64_t V, float temperature,
                                float top_p, uint64_t seed, const int32_t *pos, cudaStream_t st) {
  if (temperature <= 0.f) return dsv3_cuda_argmax(out, logits, nrows, V, st);
  CU_ARG("sample", V > 0 && V < (1ll << 31) && nrows < (1ll << 31) && top_p > 0.f && top_p <= 1.f,
         "bad shape or top_p %g", (double)top_p);
  if (nrows <= 0) return 0;
  float t = temperature > 1e-5f ? temperature : 1e-5f;
  launch_pdl(sample_kernel, (unsigned)nrows, 1024, 0, st, out, logits, V, 1.f / t, top_p, seed, pos);
  CU_LAUNCHED("sample");
  return 0;
}
