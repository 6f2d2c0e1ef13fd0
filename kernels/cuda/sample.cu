/* sample.cu - next-token choice on the device: argmax, and the official sampler
 * (softmax(logits / T), argmax(p / Exp(1))) with an optional top-p nucleus.  One block per row,
 * but greedy rows and rows without a nucleus split over up to 32 blocks. */
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

/* This thread's best of slice b of nb of a row of V logits: 16-byte loads, several in flight,
 * where the row allows (one scalar load at a time took 58 us for DeepSeek-V3's 129280 logits on
 * an H200), then the slices are whole float4s */
__device__ __forceinline__ void argmax_slice(const float *lg, int64_t V, int b, int nb, float &bv, int &bi) {
  if ((V & 3) == 0 && ((uintptr_t)lg & 15) == 0) {
    const float4 *l4 = reinterpret_cast<const float4 *>(lg);
    const int64_t q0 = (V >> 2) * b / nb, q1 = (V >> 2) * (b + 1) / nb;
#pragma unroll 8
    for (int64_t i = q0 + threadIdx.x; i < q1; i += blockDim.x) {
      const float4 v = l4[i];
      arg_better(bv, bi, v.x, (int)(4 * i)), arg_better(bv, bi, v.y, (int)(4 * i + 1));
      arg_better(bv, bi, v.z, (int)(4 * i + 2)), arg_better(bv, bi, v.w, (int)(4 * i + 3));
    }
  } else {
    for (int64_t i = V * b / nb + threadIdx.x; i < V * (b + 1) / nb; i += blockDim.x) arg_better(bv, bi, lg[i], (int)i);
  }
}

__global__ void __launch_bounds__(1024) argmax_kernel(int32_t *out, const float *logits, int64_t V) {
  pdl_wait();
  pdl_trigger();
  const float *lg = logits + blockIdx.x * V;
  float bv = 0.f;
  int bi = -1;
  argmax_slice(lg, V, 0, 1, bv, bi);
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) out[blockIdx.x] = bi;
}

static int argmax_split(int32_t *out, const float *logits, int64_t nrows, int64_t V, cudaStream_t st);
extern "C" int dsv3_cuda_argmax(int32_t *out, const float *logits, int64_t nrows, int64_t V, cudaStream_t st) {
  CU_ARG("argmax", V > 0 && V < (1ll << 31) && nrows < (1ll << 31), "bad shape");
  if (nrows <= 0) return 0;
  if (argmax_split(out, logits, nrows, V, st) == 0) return 0;
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
/* log(E), E ~ Exp(1), the noise of token i of a row (base: from seed, row, position):
 * E = -log1p(-v) with v uniform in [2^-24, 1 - 2^-24] from 23 hash bits, so E is never 0.  (The
 * first version took v from 24 bits in double and rounded it to float: the largest value became
 * exactly 1, E = -log(1) = 0, and that token's key +inf whatever its logit; with fast-math
 * logs v near 1 could do the same: at a 129280 vocabulary about one sampled token in 130 was
 * drawn uniformly at random.  log1pf has no fast-math substitute.) */
__device__ __forceinline__ float log_exp1(uint64_t base, int64_t i) {
  const uint64_t h = mix64(base + (uint64_t)i * 0xd1b54a32d192ed03ull);
  const float v = ((float)(h >> 41) + 0.5f) * (1.0f / 8388608.0f);
  return __logf(-log1pf(-v));
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
    arg_better(bv, bi, lp - log_exp1(base, i), (int)i);
  }
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) out[row] = bi;
}

/* Without a nucleus (top_p = 1, the CLI's default) the row splits over SP_B blocks: each draws
 * its slice's best key l / T - log(E) (the same noise as above), a second kernel takes the best
 * of the slices (ties: the lower index).  No row max is subtracted (the argmax does not need
 * it, a max would need a pass of its own): at temperatures near 0 the keys grow to l / T and
 * the noise is rounded to their float resolution (T = 1e-5, logits ~30: steps of 0.25), which
 * only decides between tokens of equal logits, there near-greedily.
 * One block a row took ~65 us on an H200 for DeepSeek-V3's 129280 logits.  The partial
 * results live in a device array of SP_ROWS x SP_B slots: rows go SP_ROWS at a time, and one
 * stream per device may sample at once (dsv3-run has one). */
enum { SP_B = 32, SP_ROWS = 64, SP_SLICE = 4096 };
__device__ float sp_val[SP_ROWS * SP_B];
__device__ int sp_idx[SP_ROWS * SP_B];
__global__ void __launch_bounds__(256) sample_part_kernel(const float *logits, int64_t V, int nb, float inv_t,
                                                          uint64_t seed, const int32_t *pos, int row0) {
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x, row = row0 + r, b = blockIdx.y;
  const float *lg = logits + (int64_t)row * V;
  const int64_t i0 = V * b / nb, i1 = V * (b + 1) / nb;
  const uint64_t base = mix64(seed ^ mix64(((uint64_t)(uint32_t)pos[row] << 32) | (uint64_t)row));
  float bv = 0.f;
  int bi = -1;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
    arg_better(bv, bi, lg[i] * inv_t - log_exp1(base, i), (int)i);
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) /* the winner's key again, as the thread that found it computed it */
    sp_val[r * SP_B + b] = bi >= 0 ? lg[bi] * inv_t - log_exp1(base, bi) : 0.f, sp_idx[r * SP_B + b] = bi;
}
__global__ void sample_final_kernel(int32_t *out, int nb, int row0) {
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x, lane = threadIdx.x;
  float bv = 0.f;
  int bi = -1;
  for (int b = lane; b < nb; b += 32) arg_better(bv, bi, sp_val[r * SP_B + b], sp_idx[r * SP_B + b]);
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    arg_better(bv, bi, ov, oi);
  }
  if (lane == 0) out[row0 + r] = bi;
}

/* Greedy rows split the same way (one block a row: 21 us under ncu for 129280 logits on an
 * H200, a single multiprocessor's bandwidth): a slice's arg-max a block (argmax_slice), then
 * sample_final_kernel. */
__global__ void __launch_bounds__(256) argmax_part_kernel(const float *logits, int64_t V, int nb, int row0) {
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x, row = row0 + r, b = blockIdx.y;
  const float *lg = logits + (int64_t)row * V;
  float bv = 0.f;
  int bi = -1;
  argmax_slice(lg, V, b, nb, bv, bi);
  bi = block_argmax(bv, bi);
  if (threadIdx.x == 0) sp_val[r * SP_B + b] = bi >= 0 ? lg[bi] : 0.f, sp_idx[r * SP_B + b] = bi;
}

/* rows of V >= 2 SP_SLICE logits over several blocks (argmax_part_kernel); 0, or -1 when not taken */
static int argmax_split(int32_t *out, const float *logits, int64_t nrows, int64_t V, cudaStream_t st) {
  if (V < 2 * (int64_t)SP_SLICE) return -1;
  const int64_t want = cdiv(V, (int64_t)SP_SLICE);
  const int nb = (int)(want < (int64_t)SP_B ? want : (int64_t)SP_B);
  for (int64_t r0 = 0; r0 < nrows; r0 += SP_ROWS) {
    const unsigned nr = (unsigned)(nrows - r0 < (int64_t)SP_ROWS ? nrows - r0 : (int64_t)SP_ROWS);
    launch_pdl(argmax_part_kernel, dim3(nr, (unsigned)nb), 256, 0, st, logits, V, nb, (int)r0);
    launch_pdl(sample_final_kernel, nr, 32, 0, st, out, nb, (int)r0);
    CU_LAUNCHED("argmax");
  }
  return 0;
}

extern "C" int dsv3_cuda_sample(int32_t *out, const float *logits, int64_t nrows, int64_t V, float temperature,
                                float top_p, uint64_t seed, const int32_t *pos, cudaStream_t st) {
  if (temperature <= 0.f) return dsv3_cuda_argmax(out, logits, nrows, V, st);
  CU_ARG("sample", V > 0 && V < (1ll << 31) && nrows < (1ll << 31) && top_p > 0.f && top_p <= 1.f,
         "bad shape or top_p %g", (double)top_p);
  if (nrows <= 0) return 0;
  float t = temperature > 1e-5f ? temperature : 1e-5f;
  if (top_p >= 1.f) {
    const int64_t want = cdiv(V, (int64_t)SP_SLICE);
    const int nb = (int)(want < (int64_t)SP_B ? want : (int64_t)SP_B);
    for (int64_t r0 = 0; r0 < nrows; r0 += SP_ROWS) {
      const unsigned nr = (unsigned)(nrows - r0 < (int64_t)SP_ROWS ? nrows - r0 : (int64_t)SP_ROWS);
      launch_pdl(sample_part_kernel, dim3(nr, (unsigned)nb), 256, 0, st, logits, V, nb, 1.f / t, seed, pos, (int)r0);
      launch_pdl(sample_final_kernel, nr, 32, 0, st, out, nb, (int)r0);
      CU_LAUNCHED("sample");
    }
    return 0;
  }
  launch_pdl(sample_kernel, (unsigned)nrows, 1024, 0, st, out, logits, V, 1.f / t, top_p, seed, pos);
  CU_LAUNCHED("sample");
  return 0;
}
