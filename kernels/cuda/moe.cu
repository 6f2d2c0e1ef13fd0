/* moe.cu - Mixture-of-Experts on the device: routing (bit-compatible with dsv3_route), a fused
 * decode path that reads only the chosen experts (gate/up GEMV with silu*mul, then down GEMV,
 * then the weighted sum), and two prefill paths that group tokens by expert: a grouped
 * tensor-core GEMM over all experts in one launch per projection, and a loop of
 * per-expert GEMMs for shapes it does not cover. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdlib.h>
#include <string.h>

#include "gemv.cuh"
#include "wgmma.cuh"

/* ---------------------------------------------------------------- routing */
struct RouteArgs {
  const float *logits, *bias;
  int32_t *idx;
  float *weight;
  int E, topk, G, topk_groups, sigmoid, bf16;
  float route_scale;
  int nshared; /* slots after the topk: experts E, E + 1, ... with weight 1 */
};

/* the rank of v[i] among v[0, n): the larger first, the lower index on ties (the reference's
 * scan picks in that order) */
__device__ __forceinline__ int rank_of(const float *v, int n, int i) {
  int rank = 0;
  for (int j = 0; j < n; j++) rank += v[j] > v[i] || (v[j] == v[i] && j < i);
  return rank;
}

/* One block (256 threads) per token.  The arithmetic that decides ties and rounding is done in
 * the same order and precision as the C reference: correctly rounded exp through double,
 * explicit round-to-nearest float operations (the build uses --use_fast_math), the serial
 * sums on one thread. */
__global__ void __launch_bounds__(256) route_kernel(RouteArgs a) {
  pdl_wait();
  pdl_trigger();
  __shared__ float orig[1024], sel[1024], gsc[1024];
  __shared__ double dsum;
  __shared__ float wsel[32];
  __shared__ int isel[32];
  __shared__ unsigned char gkeep[1024];
  const int t = blockIdx.x, E = a.E, G = a.G, per = E / G;
  const float *lg = a.logits + (int64_t)t * E;
  if (a.sigmoid) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      float ex = (float)exp(-(double)lg[e]);
      float o = __fdiv_rn(1.0f, __fadd_rn(1.0f, ex));
      orig[e] = a.bf16 ? round_bf16(o) : o;
    }
  } else {
    float m = -INFINITY;
    for (int e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, lg[e]);
    m = block_max(m);
    for (int e = threadIdx.x; e < E; e += blockDim.x) orig[e] = (float)exp((double)__fsub_rn(lg[e], m));
    __syncthreads();
    if (threadIdx.x == 0) {
      double s = 0;
      for (int e = 0; e < E; e++) s = __dadd_rn(s, (double)orig[e]);
      dsum = s;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) orig[e] = (float)__ddiv_rn((double)orig[e], dsum);
  }
  __syncthreads();
  /* the selection scores; NaN ranks as -inf, so the ranks below are a permutation and every
   * slot gets an expert */
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const float v = a.bias ? __fadd_rn(orig[e], a.bias[e]) : orig[e];
    sel[e] = isnan(v) ? -INFINITY : v;
  }
  __syncthreads();
  if (G > 1) {
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
      float x = -INFINITY, y = -INFINITY;
      for (int e = g * per; e < (g + 1) * per; e++) {
        float v = sel[e];
        if (v > x) y = x, x = v;
        else if (v > y) y = v;
      }
      const float sc = a.bias ? __fadd_rn(x, per > 1 ? y : 0.f) : x;
      gsc[g] = isnan(sc) ? -INFINITY : sc;
    }
    __syncthreads();
    /* keep the topk_groups best groups: a group's rank among all (the larger first, the lower
     * index on ties: the reference's scan) */
    for (int g = threadIdx.x; g < G; g += blockDim.x) gkeep[g] = rank_of(gsc, G, g) < a.topk_groups;
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
      if (!gkeep[e / per]) sel[e] = -INFINITY;
    __syncthreads();
  }
  /* top-k the same way: each expert's rank among all is its slot (the reference picks the
   * largest first, the lower index on ties); ranks in parallel instead of topk rounds of a
   * warp-wide arg-max (H200: the route kernel 11.4 us under ncu before) */
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const int rank = rank_of(sel, E, e);
    if (rank < a.topk) isel[rank] = e, wsel[rank] = orig[e];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t *idx = a.idx + (int64_t)t * (a.topk + a.nshared);
    float *w = a.weight + (int64_t)t * (a.topk + a.nshared);
    for (int j = 0; j < a.nshared; j++) idx[a.topk + j] = E + j, w[a.topk + j] = 1.f;
    if (a.bf16) {
      float s = 0.f;
      for (int k = 0; k < a.topk; k++) s = round_bf16(__fadd_rn(s, wsel[k]));
      for (int k = 0; k < a.topk; k++) {
        float v = wsel[k];
        if (a.sigmoid) v = round_bf16(__fdiv_rn(v, s));
        w[k] = round_bf16(__fmul_rn(v, a.route_scale));
        idx[k] = isel[k];
      }
    } else {
      double s = 0;
      for (int k = 0; k < a.topk; k++) s = __dadd_rn(s, (double)wsel[k]);
      for (int k = 0; k < a.topk; k++) {
        float v = wsel[k];
        if (a.sigmoid) v = (float)__ddiv_rn((double)v, s);
        w[k] = __fmul_rn(v, a.route_scale);
        idx[k] = isel[k];
      }
    }
  }
}

extern "C" int dsv3_cuda_route(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx,
                               float *weight, int64_t ntok, cudaStream_t st) {
  return dsv3_cuda_route_shared(p, logits, bias, idx, weight, ntok, 0, st);
}

extern "C" int dsv3_cuda_route_shared(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx,
                                      float *weight, int64_t ntok, int64_t nshared, cudaStream_t st) {
  CU_ARG("route", nshared >= 0 && nshared <= 32, "%lld shared slots", (long long)nshared);
  int64_t G = p->n_groups > 0 ? p->n_groups : 1;
  CU_ARG("route", p->n_experts > 0 && p->n_experts <= 1024 && p->topk > 0 && p->topk <= 32 && p->topk <= p->n_experts &&
                      p->n_experts % G == 0 && (G == 1 || (p->topk_groups > 0 && p->topk_groups <= G)),
         "unsupported routing (experts %lld, topk %lld, groups %lld/%lld)", (long long)p->n_experts, (long long)p->topk,
         (long long)p->topk_groups, (long long)G);
  CU_ARG("route", G == 1 || p->topk <= p->topk_groups * (p->n_experts / G), "topk exceeds the experts of the kept groups");
  if (ntok <= 0) return 0;
  RouteArgs a = {logits, bias, idx, weight, (int)p->n_experts, (int)p->topk, (int)G, (int)p->topk_groups, p->sigmoid,
                 p->bf16, p->route_scale, (int)nshared};
  launch_pdl(route_kernel, (unsigned)ntok, 256, 0, st, a);
  CU_LAUNCHED("route");
  return 0;
}

/* ---------------------------------------------------------------- weighted sum */
/* y[t, d] (+)= sum_k w[t, k] * part[row(t*topk + k), d]; row = perm-inverse or identity; part
 * float32 or bf16 (the grouped path's expert outputs) */
__device__ __forceinline__ float part_at(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float part_at(const uint16_t *p, int64_t i) { return bf16f(p[i]); }
__device__ __forceinline__ float4 part4_at(const float *p, int64_t i) { return reinterpret_cast<const float4 *>(p)[i]; }
__device__ __forceinline__ float4 part4_at(const uint16_t *p, int64_t i) {
  const uint2 u = reinterpret_cast<const uint2 *>(p)[i];
  return make_float4(bf16_lo(u.x), bf16_hi(u.x), bf16_lo(u.y), bf16_hi(u.y));
}
template <class P>
__global__ void moe_combine_kernel(float *y, const P *part, const float *w, const int32_t *inv, int64_t ntok, int topk,
                                   int64_t D, int accumulate) {
  pdl_wait();
  pdl_trigger();
  int64_t n = ntok * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i / D, d = i % D;
    float acc = 0.f;
    for (int k = 0; k < topk; k++) {
      int64_t pr = t * topk + k, row = inv ? inv[pr] : pr;
      if (row >= 0) acc = fmaf(w[pr], part_at(part, row * D + d), acc); /* row < 0: expert index out of range */
    }
    y[i] = accumulate ? y[i] + acc : acc;
  }
}

/* the same sums, 4 columns a thread (D % 4 == 0, 16-byte aligned rows) and 32-bit index math
 * (ntok * D / 4 < 2^31): 218 -> ~120 us for 2048 tokens of 7168 at top-8 on an H200, the bytes
 * of the pairs' rows taking ~110 */
template <class P>
__global__ void moe_combine4_kernel(float4 *y, const P *part, const float *w, const int32_t *inv, int n4, int topk, int D4,
                                    int accumulate) {
  pdl_wait();
  pdl_trigger();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
    const int t = i / D4, d = i - t * D4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < topk; k++) {
      const int64_t pr = (int64_t)t * topk + k, row = inv ? inv[pr] : pr;
      if (row >= 0) { /* row < 0: expert index out of range */
        const float4 v = part4_at(part, row * D4 + d);
        const float wk = w[pr];
        acc.x = fmaf(wk, v.x, acc.x), acc.y = fmaf(wk, v.y, acc.y);
        acc.z = fmaf(wk, v.z, acc.z), acc.w = fmaf(wk, v.w, acc.w);
      }
    }
    if (accumulate) {
      const float4 o = y[i];
      acc.x += o.x, acc.y += o.y, acc.z += o.z, acc.w += o.w;
    }
    y[i] = acc;
  }
}

template <class P>
static int combine(cudaStream_t st, float *y, const P *part, const float *w, const int32_t *inv, int64_t ntok, int64_t topk,
                   int64_t D, int accumulate) {
  int64_t n = ntok * D;
  /* prefill sizes only: a decode step's few rows ran slower on a quarter of the threads (batch 1
   * 1.30 -> 1.31-1.33 ms a step) */
  if (ntok > 64 && D % 4 == 0 && n / 4 < (1ll << 31) - 65536 * 256 && ((uintptr_t)y & 15) == 0 &&
      ((uintptr_t)part & (4 * sizeof(P) - 1)) == 0) {
    launch_pdl(moe_combine4_kernel<P>, grid_for(n / 4), 256, 0, st, (float4 *)y, part, w, inv, (int)(n / 4), (int)topk,
               (int)(D / 4), accumulate);
    CU_LAUNCHED("moe combine");
    return 0;
  }
  launch_pdl(moe_combine_kernel<P>, grid_for(n), 256, 0, st, y, part, w, inv, ntok, (int)topk, D, accumulate);
  CU_LAUNCHED("moe combine");
  return 0;
}

/* ---------------------------------------------------------------- decode */
/* order[np]: the pairs sorted by (expert, pair), one block, each pair ranked by comparing it
 * with all others (np <= SORT_MAX: a decode step's pairs) */
enum { SORT_MAX = 2048 };
__global__ void __launch_bounds__(256) moe_sort_kernel(int32_t *order, const int32_t *idx, int np) {
  pdl_wait();
  pdl_trigger();
  __shared__ int32_t sidx[SORT_MAX];
  for (int p = threadIdx.x; p < np; p += blockDim.x) sidx[p] = idx[p];
  __syncthreads();
  for (int p = threadIdx.x; p < np; p += blockDim.x) {
    const int e = sidx[p];
    int rank = 0;
    for (int q = 0; q < np; q++) rank += sidx[q] < e || (sidx[q] == e && q < p);
    order[rank] = p;
  }
}

template <int R, bool FP8, int MODE>
static void moe_launch(const GemvArgs &a, dim3 grid, cudaStream_t st) {
  launch_pdl(gemv_kernel<1, R, FP8, MODE>, grid, dim3(256), 0, st, a);
}

extern "C" int dsv3_cuda_moe_decode(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                                    const float *weight, int64_t topk, const dsv3_cuda_expert *experts, dsv3_dtype wdt,
                                    int64_t dim, int64_t inter, int accumulate) {
  const bool fp8 = wdt == DSV3_F8_E4M3;
  const int epc = fp8 ? 16 : 8;
  CU_ARG("moe decode", (fp8 || wdt == DSV3_BF16) && dim % epc == 0 && inter % epc == 0 && dim < (1 << 30) &&
                           inter < (1 << 30) && topk > 0,
         "experts must be FP8 or BF16 with dim and inter multiples of %d (dim %lld, inter %lld)", epc, (long long)dim,
         (long long)inter);
  CU_ARG("moe decode", ((uintptr_t)x & 15) == 0, "x must be 16-byte aligned");
  if (ntok <= 0) return 0;
  const int64_t np = ntok * topk;
  CU_ARG("moe decode", np < 65536, "%lld (token, expert) pairs: use dsv3_cuda_moe_prefill", (long long)np);
  /* several tokens: pairs that share an expert run side by side (their weights read from HBM
   * about once; DSV3_MOE_SORT=0: in pair order) */
  const char *se = getenv("DSV3_MOE_SORT");
  const bool sorted = ntok > 1 && np <= SORT_MAX && !(se && !strcmp(se, "0"));
  const size_t hb = (size_t)(np * (inter + dim)) * sizeof(float);
  float *h = (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_MOE2, hb + (sorted ? (size_t)np * 4 : 0));
  if (!h) return -1;
  float *part = h + np * inter;
  int32_t *order = sorted ? (int32_t *)((char *)h + hb) : NULL;
  cudaStream_t st = ctx->stream;
  if (sorted) {
    launch_pdl(moe_sort_kernel, 1, 256, 0, st, order, idx, (int)np);
    CU_LAUNCHED("moe sort");
  }

  GemvArgs a = {};
  a.y = h, a.x = x, a.experts = experts, a.idx = idx, a.order = order, a.ldx = dim, a.ldy = inter;
  a.N = (int)inter, a.K = (int)dim, a.ntok = 1, a.topk = (int)topk;
  GemvArgs b = {};
  b.y = part, b.x = h, b.experts = experts, b.idx = idx, b.order = order, b.ldx = inter, b.ldy = dim;
  b.N = (int)dim, b.K = (int)inter, b.ntok = 1, b.topk = (int)topk;
  if (dsv3_cuda_tc_tokens(ntok, INT64_MAX) && fp8 && dim % 64 == 0 && inter % 64 == 0) { /* the tensor-core variant (gemv.cuh) */
    if (dsv3_gemv_tc_run(ctx, a, GEMV_MOE_GATEUP, ntok, np, sorted, "moe gate/up") ||
        dsv3_gemv_tc_run(ctx, b, GEMV_MOE_DOWN, np, np, sorted, "moe down"))
      return -1;
    return combine(st, y, part, weight, NULL, ntok, topk, dim, accumulate);
  }
  /* the packed-f16 GEMV (gemv.cuh) for FP8: as many rows a warp as the grid allows */
  const bool h2 = fp8 && dsv3_cuda_gemv_h2;
  int R, WK;
  if (h2) gemv_h2_shape(a.N, a.K, np, ctx->sms, 2, &R, &WK);
  else gemv_shape(a.N, a.K, epc, np, ctx->sms, 4, 2, 2, &R, &WK);
  a.wk = WK;
  const unsigned rb1 = (unsigned)cdiv(a.N, (int64_t)(8 / WK) * (R / 2));
  const dim3 g1 = sorted ? dim3((unsigned)np, rb1) : dim3(rb1, (unsigned)np);
  if (h2) gemv_h2_launch<GEMV_MOE_GATEUP>(a, R, g1, st);
  else if (fp8) R == 4 ? moe_launch<4, true, GEMV_MOE_GATEUP>(a, g1, st) : moe_launch<2, true, GEMV_MOE_GATEUP>(a, g1, st);
  else R == 4 ? moe_launch<4, false, GEMV_MOE_GATEUP>(a, g1, st) : moe_launch<2, false, GEMV_MOE_GATEUP>(a, g1, st);
  CU_LAUNCHED("moe gate/up");

  if (h2) gemv_h2_shape(b.N, b.K, np, ctx->sms, 1, &R, &WK);
  else gemv_shape(b.N, b.K, epc, np, ctx->sms, 4, 1, 1, &R, &WK);
  b.wk = WK;
  const unsigned rb2 = (unsigned)cdiv(b.N, (int64_t)(8 / WK) * R);
  const dim3 g2 = sorted ? dim3((unsigned)np, rb2) : dim3(rb2, (unsigned)np);
  if (h2) gemv_h2_launch<GEMV_MOE_DOWN>(b, R, g2, st);
  else if (fp8) R == 4 ? moe_launch<4, true, GEMV_MOE_DOWN>(b, g2, st) : moe_launch<1, true, GEMV_MOE_DOWN>(b, g2, st);
  else R == 4 ? moe_launch<4, false, GEMV_MOE_DOWN>(b, g2, st) : moe_launch<1, false, GEMV_MOE_DOWN>(b, g2, st);
  CU_LAUNCHED("moe down");
  return combine(st, y, part, weight, NULL, ntok, topk, dim, accumulate);
}

/* ---------------------------------------------------------------- prefill */
__global__ void moe_gather_kernel(float *xs, const float *x, const int32_t *perm, int topk, int64_t np, int64_t D) {
  int64_t n = np * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t j = i / D, d = i % D;
    xs[i] = x[(int64_t)(perm[j] / topk) * D + d];
  }
}

extern "C" int dsv3_cuda_moe_prefill(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                                     const float *weight, int64_t topk, const dsv3_cuda_expert *experts_host,
                                     int64_t n_experts, dsv3_dtype wdt, int64_t dim, int64_t inter, int accumulate) {
  CU_ARG("moe prefill", n_experts > 0 && topk > 0 && dim > 0 && inter > 0, "bad shape");
  if (ntok <= 0) return 0;
  const int64_t np = ntok * topk;
  cudaStream_t st = ctx->stream;
  int32_t *hidx = (int32_t *)malloc((size_t)np * sizeof(int32_t) * 3);
  int64_t *cnt = (int64_t *)calloc((size_t)n_experts + 1, sizeof(int64_t));
  if (!hidx || !cnt) {
    free(hidx);
    free(cnt);
    dsv3_error_set("cuda: moe prefill: out of host memory");
    return -1;
  }
  int32_t *perm = hidx + np, *inv = perm + np;
  int rc = -1;
  if (cudaMemcpyAsync(hidx, idx, (size_t)np * sizeof(int32_t), cudaMemcpyDeviceToHost, st) != cudaSuccess ||
      cudaStreamSynchronize(st) != cudaSuccess) {
    dsv3_error_set("cuda: moe prefill: reading the routing: %s", cudaGetErrorString(cudaGetLastError()));
    goto out;
  }
  for (int64_t p = 0; p < np; p++) {
    if (hidx[p] < 0 || hidx[p] >= n_experts) {
      dsv3_error_set("cuda: moe prefill: expert index %d out of range", hidx[p]);
      goto out;
    }
    cnt[hidx[p] + 1]++;
  }
  for (int64_t e = 0; e < n_experts; e++) cnt[e + 1] += cnt[e];
  {
    int64_t *fill = (int64_t *)malloc((size_t)n_experts * sizeof(int64_t));
    if (!fill) {
      dsv3_error_set("cuda: moe prefill: out of host memory");
      goto out;
    }
    memcpy(fill, cnt, (size_t)n_experts * sizeof(int64_t));
    for (int64_t p = 0; p < np; p++) { /* stable: pairs of one expert in token order */
      int64_t j = fill[hidx[p]]++;
      perm[j] = (int32_t)p;
      inv[p] = (int32_t)j;
    }
    free(fill);
  }
  {
    size_t nb = (size_t)(2 * np * dim) * sizeof(float) + (size_t)(2 * np) * sizeof(int32_t);
    float *xs = (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_MOE, nb);
    if (!xs) goto out;
    float *ys = xs + np * dim;
    int32_t *dperm = (int32_t *)(ys + np * dim), *dinv = dperm + np;
    if (cudaMemcpy(dperm, perm, (size_t)(2 * np) * sizeof(int32_t), cudaMemcpyHostToDevice) != cudaSuccess) {
      dsv3_error_set("cuda: moe prefill: %s", cudaGetErrorString(cudaGetLastError()));
      goto out;
    }
    int64_t n = np * dim;
    moe_gather_kernel<<<grid_for(n), 256, 0, st>>>(xs, x, dperm, (int)topk, np, dim);
    if (cudaGetLastError() != cudaSuccess) {
      dsv3_error_set("cuda: moe gather: launch failed");
      goto out;
    }
    for (int64_t e = 0; e < n_experts; e++) {
      int64_t c0 = cnt[e], c = cnt[e + 1] - c0;
      if (!c) continue;
      const dsv3_cuda_expert *ex = &experts_host[e];
      if (!ex->w1) { /* another rank's expert: zero rows, summed across ranks afterwards */
        if (cudaMemsetAsync(ys + c0 * dim, 0, (size_t)(c * dim) * sizeof(float), st) != cudaSuccess) {
          dsv3_error_set("cuda: moe prefill: %s", cudaGetErrorString(cudaGetLastError()));
          goto out;
        }
        continue;
      }
      dsv3_wmat w1 = {wdt, ex->w1, ex->s1, inter, dim}, w2 = {wdt, ex->w2, ex->s2, dim, inter},
                w3 = {wdt, ex->w3, ex->s3, inter, dim};
      if (dsv3_cuda_mlp(ctx, ys + c0 * dim, xs + c0 * dim, c, &w1, &w2, &w3, 0)) goto out;
    }
    if (combine(st, y, ys, weight, dinv, ntok, topk, dim, accumulate)) goto out;
  }
  rc = 0;
out:
  free(hidx);
  free(cnt);
  return rc;
}

/* ---------------------------------------------------------------- grouped prefill
 * All experts in one launch per projection, nothing copied to the host:
 *   count pairs per expert -> offsets and a table of tiles (expert, first row, tokens <= GB_N;
 *   GW_N for the wgmma kernel)
 *   -> each pair's row in expert order (atomics: the order inside an expert is arbitrary, the
 *   values are not, since every output row depends on its own input row only) -> x gathered
 *   (FP8 experts: f16 rows times a power of two, x_f16_kernel; BF16: bf16) -> W1 and W3 (one
 *   launch, grid.z) -> silu(g) * u (f16 rows likewise, or bf16) -> W2 -> weighted sum.
 * A block computes 256 weight rows x 64 tokens of one tile: 8 warps of 32 rows x 64 tokens
 * (each weight converted once), a 4-stage cp.async pipeline of 64-wide K slices (weights as
 * stored), FP8 weights converted from shared memory to f16x2 pairs of f16(e4m3 * scale * 2^ew)
 * (one scale per warp and slice: 32 rows x 64 columns sit in one scale block; 2^ew per warp,
 * divided out at the end) and fed to mma.sync.m16n8k16 (f16; BF16 weights: bf16) with the k
 * order permuted alike for both operands, as skinny.cu.  Shared memory rows of 128 bytes (x,
 * BF16 weights) swap their 16-byte halves on odd rows so a quarter-warp's two rows never share
 * banks.  256 rows of x per block halve the x re-reads of 128 (x is 16-bit, twice the bytes of
 * an FP8 weight). */
enum { GB_M = 256, GB_N = 64, GB_K = 64, GB_ST = 4, GB_THREADS = 256 };

struct GroupedArgs {
  float *y, *y3;          /* [np, N] in expert order (y3: the W3 product of the gate/up launch) */
  const uint16_t *x;      /* [np, K] in expert order: bf16 (BF16 weights), f16 times 1 / xinv (FP8) */
  const float *xinv;      /* FP8: [np] */
  const dsv3_cuda_expert *experts;
  const int4 *tiles;      /* (expert, first row, rows, 0) */
  const int *ntiles;
  int mat;                /* 1: W1 (grid.z = 2 adds W3), 2: W2 */
  int N, K;
  const int32_t *xrow;    /* wgmma kernel, W1 and W3: x holds one row a token, xrow[j] the token of pair row j (NULL:
                             x holds one row a pair row) */
  const uint8_t *tmaps;   /* wgmma kernel, NULL or 128-byte CUtensorMaps [expert][W1, W2, W3] (moe_tmaps) */
  uint16_t *yb;           /* W2: NULL, or y's rows in bf16 instead (the combine reads half the bytes) */
};

/* FP8: the weights enter the mma as f16(e4m3 * scale * 2^ew), 2^ew putting the warp's largest
 * possible weight (448 times the largest scale of its scale row Sw) in [2^13, 2^14): 11
 * significant bits, no overflow; divided out with x's power of two at the end */
__device__ __forceinline__ int grouped_ew(const float *Sw, int K, int lane) {
  float sm = 0.f;
  for (int i = lane; i < (K + 127) >> 7; i += 32) sm = fmaxf(sm, fabsf(__ldg(Sw + i)));
  sm = warp_max(sm) * 448.f;
  int ew = 0;
  if (sm > 0.f && sm <= 3.4e38f) {
    (void)frexpf(sm, &ew); /* sm < 2^ew */
    ew = min(max(14 - ew, -100), 100);
  }
  return ew;
}
/* 4 e4m3 codes of each of two rows (u0, u1) -> h: f16x2 pairs (codes 0-1 and 2-3 of u0, then
 * of u1), the exact e4m3 -> f16 conversion times sc2 */
__device__ __forceinline__ void grouped_cvt(uint32_t u0, uint32_t u1, __half2 sc2, uint32_t (&h)[4]) {
  h[0] = e4m3x2_f16x2(u0), h[1] = e4m3x2_f16x2(u0 >> 16), h[2] = e4m3x2_f16x2(u1), h[3] = e4m3x2_f16x2(u1 >> 16);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    __half2 v = __hmul2(*reinterpret_cast<__half2 *>(&h[i]), sc2);
    h[i] = *reinterpret_cast<uint32_t *>(&v);
  }
}

/* The pipeline of one block for tiles of up to 8 * NT tokens: NT is a template parameter so
 * the mma loops have no data-dependent exits, and the k16 step is the outer loop so the 2 * NT
 * accumulators of a warp are independent between two dependent mma. */
template <bool FP8, int NT>
__device__ __forceinline__ void grouped_main(uint8_t *sw, uint16_t *sx, const uint8_t *W, const float *Sw, const uint16_t *X,
                                             const float *Xinv, float *Y, uint16_t *Yb, int N, int K, int row0, int cnt) {
  constexpr int WROW = FP8 ? GB_K : 2 * GB_K; /* bytes of a weight row per stage */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int nk = (K + GB_K - 1) / GB_K;
  auto load = [&](int st, int kt) {
    const int k0 = kt * GB_K;
    constexpr int WC = WROW / 16; /* 16-byte chunks per weight row */
    for (int i = threadIdx.x; i < GB_M * WC; i += GB_THREADS) {
      const int r = i / WC, c = i % WC, kk = k0 + c * (FP8 ? 16 : 8);
      const bool ok = row0 + r < N && kk < K;
      const uint8_t *src = ok ? W + ((int64_t)(row0 + r) * K + kk) * (FP8 ? 1 : 2) : W;
      cp_async16(sw + (st * GB_M + r) * WROW + (FP8 ? c : c ^ (r & 1)) * 16, src, ok ? 16 : 0);
    }
    for (int i = threadIdx.x; i < NT * 8 * 8; i += GB_THREADS) { /* the rows the mma read */
      const int t = i >> 3, c = i & 7, kk = k0 + c * 8;
      const bool ok = t < cnt && kk < K;
      cp_async16(sx + (st * GB_N + t) * GB_K + (c ^ (t & 1)) * 8, ok ? X + (int64_t)t * K + kk : X, ok ? 16 : 0);
    }
  };
  float acc[2][NT][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
  const int ew = FP8 ? grouped_ew(Sw, K, lane) : 0;
#pragma unroll
  for (int s = 0; s < GB_ST - 1; s++) {
    if (s < nk) load(s, s);
    asm volatile("cp.async.commit_group;");
  }
  for (int kt = 0; kt < nk; kt++) {
    asm volatile("cp.async.wait_group %0;" ::"n"(GB_ST - 2));
    __syncthreads();
    if (kt + GB_ST - 1 < nk) load((kt + GB_ST - 1) % GB_ST, kt + GB_ST - 1);
    asm volatile("cp.async.commit_group;");
    const int st = kt % GB_ST;
    const __half2 sc2 = __float2half2_rn(FP8 ? ldexpf(__ldg(Sw + ((kt * GB_K) >> 7)), ew) : 1.f);
    /* A operands of rows g and g + 8 of each m tile, k = 16q .. 16q + 15: FP8 kept as loaded
     * (4 registers a row) and converted 4 values per k16 step, BF16 as 8 bf16 pairs */
    uint32_t pa[2][2][FP8 ? 4 : 8];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = warp * 32 + mt * 16 + h * 8 + g;
        const uint8_t *rp = sw + (st * GB_M + r) * WROW;
        if (FP8) {
          const uint4 u = *reinterpret_cast<const uint4 *>(rp + q * 16);
          pa[mt][h][0] = u.x, pa[mt][h][1] = u.y, pa[mt][h][2] = u.z, pa[mt][h][3] = u.w;
        } else {
          const uint4 u = *reinterpret_cast<const uint4 *>(rp + ((2 * q) ^ (r & 1)) * 16);
          const uint4 v = *reinterpret_cast<const uint4 *>(rp + ((2 * q + 1) ^ (r & 1)) * 16);
          pa[mt][h][0] = u.x, pa[mt][h][1] = u.y, pa[mt][h][2] = u.z, pa[mt][h][3] = u.w;
          pa[mt][h][FP8 ? 0 : 4] = v.x, pa[mt][h][FP8 ? 1 : 5] = v.y, pa[mt][h][FP8 ? 2 : 6] = v.z,
                                  pa[mt][h][FP8 ? 3 : 7] = v.w;
        }
      }
#pragma unroll
    for (int s = 0; s < 4; s++) {
      uint32_t af[2][4]; /* bf16 pairs 2s, 2s + 1 of rows g, g + 8 in mma order */
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        uint32_t p0[2], p1[2];
        if (FP8) { /* e4m3 -> f16 exactly, times the scale in f16 */
          uint32_t h[4];
          grouped_cvt(pa[mt][0][s], pa[mt][1][s], sc2, h);
          p0[0] = h[0], p0[1] = h[1], p1[0] = h[2], p1[1] = h[3];
        } else {
          p0[0] = pa[mt][0][2 * s], p0[1] = pa[mt][0][2 * s + 1], p1[0] = pa[mt][1][2 * s], p1[1] = pa[mt][1][2 * s + 1];
        }
        af[mt][0] = p0[0], af[mt][1] = p1[0], af[mt][2] = p0[1], af[mt][3] = p1[1];
      }
      /* token nt * 8 + g: bf16 pairs 2s, 2s + 1 of its k = 16q .. 16q + 15 (8 bytes); the row
       * parity (the swizzle) is g's, so one address serves every n tile */
      const uint16_t *xs = sx + (st * GB_N + g) * GB_K + ((2 * q + (s >> 1)) ^ (g & 1)) * 8 + (s & 1) * 4;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const uint2 b = *reinterpret_cast<const uint2 *>(xs + nt * 8 * GB_K);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          if (FP8) mma16816_f16(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], b.x, b.y);
          else mma16816(acc[mt][nt], af[mt], b.x, b.y);
        }
      }
    }
  }
  asm volatile("cp.async.wait_group 0;");
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int row = row0 + warp * 32 + mt * 16 + g + (c >= 2 ? 8 : 0), t = nt * 8 + 2 * q + (c & 1);
        if (row >= N || t >= cnt) continue;
        const float v = FP8 ? ldexpf(acc[mt][nt][c] * Xinv[t], -ew) : acc[mt][nt][c];
        if (Yb) Yb[(int64_t)t * N + row] = f2bf16(v);
        else Y[(int64_t)t * N + row] = v;
      }
}

/* A block's tile: its expert's matrix (W1, W3 or W2 by mat and grid.z), scales, input and
 * output rows and tokens.  false: nothing to compute (past the tile table's end, or another
 * rank's expert, whose rows count as zero in the sum across ranks: written here for W2) */
struct GroupedTile {
  const uint8_t *W;
  const float *S;
  const uint16_t *X;
  const float *Xinv;   /* FP8 only */
  const int32_t *Xrow; /* NULL, or the tile's rows' tokens: their rows of X and Xinv */
  float *Y;
  uint16_t *Yb; /* NULL, or the output in bf16 instead of Y */
  const void *tmap; /* NULL, or the weight matrix's tensor map (the wgmma kernel's TMA loads) */
  int row0, cnt;
};
__device__ __forceinline__ bool grouped_tile(const GroupedArgs &a, GroupedTile &t, int bm) {
  if ((int)blockIdx.y >= *a.ntiles) return false;
  const int4 tl = a.tiles[blockIdx.y];
  const dsv3_cuda_expert ex = a.experts[tl.x];
  const int m = a.mat == 2 ? 2 : blockIdx.z ? 3 : 1;
  t.W = (const uint8_t *)(m == 1 ? ex.w1 : m == 2 ? ex.w2 : ex.w3);
  t.S = m == 1 ? ex.s1 : m == 2 ? ex.s2 : ex.s3;
  t.Xrow = a.xrow ? a.xrow + tl.y : nullptr;
  t.X = a.xrow ? a.x : a.x + (int64_t)tl.y * a.K;
  t.Xinv = a.xinv ? (a.xrow ? a.xinv : a.xinv + tl.y) : nullptr;
  t.Y = (m == 3 ? a.y3 : a.y) + (int64_t)tl.y * a.N;
  t.Yb = m == 2 && a.yb ? a.yb + (int64_t)tl.y * a.N : nullptr;
  t.row0 = blockIdx.x * bm, t.cnt = tl.z;
  t.tmap = a.tmaps ? a.tmaps + ((int64_t)tl.x * 3 + m - 1) * 128 : nullptr;
  if (!t.W) {
    if (m == 2)
      for (int i = threadIdx.x; i < t.cnt * bm; i += blockDim.x)
        if (t.row0 + i % bm < a.N) {
          const int64_t o = (int64_t)(i / bm) * a.N + t.row0 + i % bm;
          if (t.Yb) t.Yb[o] = 0;
          else t.Y[o] = 0.f;
        }
    return false;
  }
  return true;
}

template <bool FP8>
__global__ void __launch_bounds__(GB_THREADS, FP8 ? 2 : 1) grouped_kernel(GroupedArgs a) {
  extern __shared__ __align__(16) uint8_t gsm[];
  GroupedTile tl;
  if (!grouped_tile(a, tl, GB_M)) return;
  const int N = a.N, K = a.K;
  uint8_t *sw = gsm;                                                              /* [GB_ST][GB_M][WROW] */
  uint16_t *sx = (uint16_t *)(gsm + GB_ST * GB_M * (FP8 ? GB_K : 2 * GB_K)); /* [GB_ST][GB_N][GB_K] */
  /* this warp's scale row (clamped: a warp past the last row computes zeros it never stores) */
  const float *Sw = FP8 ? tl.S + (int64_t)(min(tl.row0 + (int)(threadIdx.x >> 5) * 32, N - 1) >> 7) * ((K + 127) >> 7) : tl.S;
  if (tl.cnt <= 8) grouped_main<FP8, 1>(sw, sx, tl.W, Sw, tl.X, tl.Xinv, tl.Y, tl.Yb, N, K, tl.row0, tl.cnt);
  else if (tl.cnt <= 16) grouped_main<FP8, 2>(sw, sx, tl.W, Sw, tl.X, tl.Xinv, tl.Y, tl.Yb, N, K, tl.row0, tl.cnt);
  else if (tl.cnt <= 32) grouped_main<FP8, 4>(sw, sx, tl.W, Sw, tl.X, tl.Xinv, tl.Y, tl.Yb, N, K, tl.row0, tl.cnt);
  else grouped_main<FP8, 8>(sw, sx, tl.W, Sw, tl.X, tl.Xinv, tl.Y, tl.Yb, N, K, tl.row0, tl.cnt);
}

/* ---------------------------------------------------------------- grouped prefill, wgmma
 * The FP8 experts' grouped GEMM on sm_90a's warpgroup MMA (DSV3_MOE_WGMMA=0: the mma.sync kernel
 * above).  The same weight conversion as grouped_main (larger blocks, tiles and K slices:
 * below, at WgCfg), but the x tile is the B operand of wgmma.mma_async read straight from
 * shared memory (no per-warp fragment loads: the
 * mma.sync kernel read each x stage 8 times, once a warp) and one instruction covers 64 rows of
 * a warpgroup instead of 16.  A = the weights, converted per warp into registers exactly as
 * grouped_main does (rows 16i + g, + 8 of each 64-row tile for warp i of the warpgroup: the
 * wgmma A-fragment layout), so the e4m3 codes stay in the k order they are loaded in; x is
 * written in the matching order (row_to_f16's perm: within each 64-column block, logical k
 * 16s + 2q + e holds physical 16q + 4s + e, + 8 for e >= 2), and x's shared-memory rows (128
 * bytes: 64 values) use the 128-byte swizzle the descriptor names (wgmma.cuh: the descriptor,
 * fences and the Wg<N> instructions). */

/* A block of the wgmma kernel: 256 weight rows (4 warpgroups of 64: one m64 tile each; 512
 * threads, one block an SM) x up to 128 tokens of one tile (GW_N: a typical expert's tokens at a
 * 2K prompt, so its weights are converted once, where 64-token tiles converted them twice for
 * most experts), NT = tokens / 8 rounded up to 1, 2, 4, 8, 12 or 16 (the wgmma's N).  x (f16) is
 * twice the bytes of an FP8 weight: 256 rows a block keep its reads from L2 at the weights'
 * bytes (128 rows: ncu showed L2 at 73% of its peak).  Two k16 steps' A fragments are in flight
 * (four measured no faster: RESULTS, sixth session).
 * A block shape: M weight rows (M / 64 warpgroups, 2 M threads), K slices of KS (64: 64-byte
 * pieces of each weight row a stage; 128: 128-byte pieces), ST stages, loads PD stages ahead
 * (ST - 2: a load overwrites the stage two back, which the previous stage's wgmma waits already
 * retired, so no stage boundary drains the tensor cores; ST - 1: the previous stage's wgmmas
 * retire first). */
enum { GW_N = 128 }; /* the most tokens a tile */
template <int M_, int KS_, int ST_, int PD_> struct WgCfg {
  static constexpr int M = M_, KS = KS_, ST = ST_, PD = PD_, T = 2 * M_, XC = KS_ / 64, CW = KS_ / 16;
  static constexpr int smem = ST * (M * KS + GW_N * KS * 2) + 1024; /* + the 1024-byte alignment */
  static_assert(PD == ST - 1 || PD == ST - 2, "prefetch distance");
};
/* 128-byte slices where K % 128 == 0 (the default, dsv3_cuda_moe_wg_ks): DRAM serves each weight
 * row in 128-byte pieces rather than 64 (ncu: DRAM 51 -> 59% of its peak; H200, cuda_bench
 * --quick: 1393 -> 1162-1175 us; the 2048-token prefill 0.030-0.031 -> 0.027-0.028 s), even
 * though only 3 stages fit and each stage waits for the previous one's wgmmas.  Measured and
 * not kept: 128 rows x 128-byte slices with 4 stages (1461 us), 96-token tiles with 4 stages
 * (1149 us: the same as 3 stages, and experts past 96 tokens would take two tiles), 3 stages
 * loaded one ahead without the wait (1217 us). */
using WgA = WgCfg<256, 64, 6, 4>;
using WgB = WgCfg<256, 128, 3, 2>;
template <int NT, class C>
__device__ __forceinline__ void grouped_main_wg(uint8_t *sw, uint16_t *sx, const GroupedTile &tl, const float *Sw, int N,
                                                int K, uint64_t *full) {
  constexpr int M = C::M, KS = C::KS, ST = C::ST, T = C::T, XC = C::XC, CW = C::CW;
  const uint8_t *W = tl.W;
  const uint16_t *X = tl.X;
  const float *Xinv = tl.Xinv;
  float *Y = tl.Y;
  const int row0 = tl.row0, cnt = tl.cnt;
  constexpr int NB = 2; /* A-fragment buffers: k16 steps in flight */
  constexpr int PD = C::PD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int wg = warp >> 2, wi = warp & 3, nk = K / KS; /* K % KS == 0 here */
  /* each thread copies the same chunks every stage: weight rows tid / CW + (T / CW) j (16 bytes
   * at chunk tid % CW; with 128-byte rows the chunk index XOR the row's low 3 bits, so the
   * A-fragment reads of 8 rows hit distinct banks), x rows (tokens) xt + XR j, 16 bytes at chunk
   * xc of 64-column block xb (swizzled as the descriptor's 128-byte mode) */
  constexpr int WR = T / CW, XR = T / (8 * XC); /* rows a pass */
  const int tr = threadIdx.x / CW, tc = threadIdx.x % CW;
  const int xc = threadIdx.x & 7, xb = (threadIdx.x >> 3) % XC, xt = threadIdx.x / (8 * XC);
  const uint8_t *wsrc = W + (int64_t)(row0 + tr) * K + tc * 16;
  const int wdoff = tr * KS + (CW == 8 ? tc ^ (tr & 7) : tc) * 16;
  /* x rows: the tile's rows, or (Xrow) their tokens' rows of the per-token x */
  constexpr int XP = (GW_N + XR - 1) / XR;
  const uint16_t *xsrc[XP];
#pragma unroll
  for (int j = 0; j < XP; j++) {
    const int t = xt + XR * j;
    xsrc[j] = X + (int64_t)(tl.Xrow ? (t < cnt ? tl.Xrow[t] : 0) : t) * K + xb * 64 + xc * 8;
  }
  const int xoff = xb * GW_N * 64 + xt * 64 + (xc ^ (xt & 7)) * 8;
  /* the weight tile: one TMA box of M rows x KS bytes (tl.tmap: its 128-byte swizzle is the
   * layout below, rows past N zero) completing on full[st], or cp.async by every thread */
  auto load = [&](int st, int kt) {
    const int k0 = kt * KS;
    uint8_t *wd = sw + st * M * KS + wdoff;
    if (tl.tmap) {
      if (threadIdx.x == 0) {
        /* the stage's previous reads (generic proxy) before the TMA's writes (async proxy) */
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        mbar_expect_tx(full + st, M * KS);
        tma_load_2d(sw + st * M * KS, tl.tmap, k0, row0, full + st);
      }
    } else {
#pragma unroll
      for (int j = 0; j < CW * M / T; j++) {
        const bool ok = row0 + tr + WR * j < N;
        cp_async16(wd + j * WR * KS, ok ? wsrc + (int64_t)j * WR * K + k0 : W, ok ? 16 : 0);
      }
    }
#pragma unroll
    for (int j = 0; j < (NT * 8 + XR - 1) / XR; j++)
      if (NT * 8 >= XR * (j + 1) || xt + XR * j < NT * 8) {
        const bool ok = xt + XR * j < cnt;
        cp_async16(sx + st * GW_N * KS + xoff + j * XR * 64, ok ? xsrc[j] + k0 : X, ok ? 16 : 0);
      }
  };
  float acc[NT * 4]; /* set by the first wgmma (scale-d 0): no other instruction writes them */
  const int ew = grouped_ew(Sw, K, lane);
#pragma unroll
  for (int s = 0; s < PD; s++) {
    if (s < nk) load(s, s);
    asm volatile("cp.async.commit_group;");
  }
  uint32_t af[NB][4]; /* [buffer]: the A fragments of a k16 step, NB steps in flight */
  /* the next stage's scale loaded a stage ahead, off the stage's critical path (measured no
   * faster: the long-scoreboard waits ncu shows are the stages' cp.async data) */
  float scn = __ldg(Sw);
  for (int kt = 0; kt < nk; kt++) {
    const float sck = scn;
    if (kt + 1 < nk) scn = __ldg(Sw + (((kt + 1) * KS) >> 7));
    asm volatile("cp.async.wait_group %0;" ::"n"(PD - 1));
    if (tl.tmap) mbar_wait(full + kt % ST, (kt / ST) & 1);
    /* the cp.async writes (generic proxy) before wgmma's reads (async proxy) */
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    /* PD = ST - 2: the stage the next load overwrites, two back, was last read by a step that the
     * wait_group NB - 1 of the previous stage's last step retired; PD = ST - 1: it is the
     * previous stage, whose wgmmas retire here */
    if (PD == ST - 1) {
      wg_wait<0>();
#pragma unroll
      for (int b = 0; b < NB; b++) wg_hold(af[b]);
    }
    __syncthreads();
    if (kt + PD < nk) load((kt + PD) % ST, kt + PD);
    asm volatile("cp.async.commit_group;");
    const int st = kt % ST;
    const __half2 sc2 = __float2half2_rn(ldexpf(sck, ew));
#pragma unroll
    for (int hb = 0; hb < XC; hb++) {
      uint32_t pa[2][4]; /* rows 16 wi + g (+ 8) of the warpgroup's 64: bytes 16q .. 16q + 15 of block hb */
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = wg * 64 + wi * 16 + h * 8 + g, c = hb * 4 + q;
        const uint4 u = *reinterpret_cast<const uint4 *>(sw + (st * M + r) * KS + (CW == 8 ? c ^ (r & 7) : c) * 16);
        pa[h][0] = u.x, pa[h][1] = u.y, pa[h][2] = u.z, pa[h][3] = u.w;
      }
      const uint64_t d0 = wg_desc(sx + st * GW_N * KS + hb * GW_N * 64);
#pragma unroll
      for (int s = 0; s < 4; s++) {
        uint32_t(&a)[4] = af[(hb * 4 + s) % NB];
        wg_wait<NB - 1>(); /* the step that last used this buffer is done */
        wg_hold(a);
        uint32_t h[4];
        grouped_cvt(pa[0][s], pa[1][s], sc2, h);
        a[0] = h[0], a[1] = h[2], a[2] = h[1], a[3] = h[3];
        wg_fence();
        Wg<NT>::mma(acc, a, d0 + (uint64_t)((s * 32) >> 4), kt | hb | s);
        wg_commit();
      }
    }
  }
  asm volatile("cp.async.wait_group 0;");
  wg_wait<0>();
  wg_hold(acc);
#pragma unroll
  for (int b = 0; b < NB; b++) wg_hold(af[b]);
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int row = row0 + wg * 64 + wi * 16 + g + (c >= 2 ? 8 : 0), t = j * 8 + 2 * q + (c & 1);
      if (row >= N || t >= cnt) continue;
      const float v = ldexpf(acc[j * 4 + c] * Xinv[tl.Xrow ? tl.Xrow[t] : t], -ew);
      if (tl.Yb) tl.Yb[(int64_t)t * N + row] = f2bf16(v);
      else Y[(int64_t)t * N + row] = v;
    }
}

template <class C>
__global__ void __launch_bounds__(C::T, 1) grouped_wg_kernel(GroupedArgs a) {
  extern __shared__ __align__(16) uint8_t gsm[];
  GroupedTile tl;
  if (!grouped_tile(a, tl, C::M)) return;
  const int N = a.N, K = a.K;
#if !(defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  __trap(); /* the compute_90 PTX has no wgmma: the host launches this kernel on sm_90 only */
#endif
  /* the 128-byte swizzle repeats every 1024 bytes: x's stages start on such a boundary */
  uint8_t *sw = gsm + ((1024 - ((unsigned)__cvta_generic_to_shared(gsm) & 1023)) & 1023); /* [ST][M][KS] */
  uint16_t *sx = (uint16_t *)(sw + C::ST * C::M * C::KS); /* [ST][XC][GW_N][64] f16 */
  /* the warpgroup's 64 rows sit in one scale row (clamped: rows past N compute unused zeros) */
  const float *Sw = tl.S + (int64_t)(min(tl.row0 + (int)(threadIdx.x >> 7) * 64, N - 1) >> 7) * ((K + 127) >> 7);
  __shared__ uint64_t full[C::ST]; /* TMA: a stage's weights are in */
  if (tl.tmap) {
    if (threadIdx.x == 0) {
      for (int s = 0; s < C::ST; s++) mbar_init(full + s, 1);
      mbar_init_fence();
    }
    __syncthreads();
  }
  if (tl.cnt <= 8) grouped_main_wg<1, C>(sw, sx, tl, Sw, N, K, full);
  else if (tl.cnt <= 16) grouped_main_wg<2, C>(sw, sx, tl, Sw, N, K, full);
  else if (tl.cnt <= 32) grouped_main_wg<4, C>(sw, sx, tl, Sw, N, K, full);
  else if (tl.cnt <= 64) grouped_main_wg<8, C>(sw, sx, tl, Sw, N, K, full);
  else if (tl.cnt <= 96) grouped_main_wg<12, C>(sw, sx, tl, Sw, N, K, full);
  else grouped_main_wg<16, C>(sw, sx, tl, Sw, N, K, full);
}
int dsv3_cuda_moe_wgmma = 1;
int dsv3_cuda_moe_ys_bf16 = 1;

__global__ void grouped_count_kernel(int *cnt, const int32_t *idx, int64_t np, int E) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < np; p += (int64_t)gridDim.x * blockDim.x)
    if (idx[p] >= 0 && idx[p] < E) atomicAdd(&cnt[idx[p]], 1);
}
/* offsets (into fill, which the scatter then advances) and the tile table: a thread per run of
 * ceil(E / 1024) experts, their rows' and tiles' offsets by an exclusive scan over the block
 * (one thread doing all 256 experts took 37 us a layer) */
enum { PLAN_T = 1024 };
__global__ void __launch_bounds__(PLAN_T) grouped_plan_kernel(int *fill, int4 *tiles, int *ntiles, const int *cnt, int E,
                                                              int tn) {
  __shared__ int2 part[PLAN_T / 32];
  const int per = (E + PLAN_T - 1) / PLAN_T, e0 = min(E, (int)threadIdx.x * per), e1 = min(E, e0 + per);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int rows = 0, nt = 0;
  for (int e = e0; e < e1; e++) rows += cnt[e], nt += (cnt[e] + tn - 1) / tn;
  int r = rows, t = nt; /* inclusive scan over the warp, then over the warps' totals */
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int ur = __shfl_up_sync(0xffffffffu, r, d), ut = __shfl_up_sync(0xffffffffu, t, d);
    if (lane >= d) r += ur, t += ut;
  }
  if (lane == 31) part[warp] = make_int2(r, t);
  __syncthreads();
  if (warp == 0) {
    int2 v = part[lane];
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int ur = __shfl_up_sync(0xffffffffu, v.x, d), ut = __shfl_up_sync(0xffffffffu, v.y, d);
      if (lane >= d) v.x += ur, v.y += ut;
    }
    part[lane] = v;
  }
  __syncthreads();
  int off = r - rows + (warp ? part[warp - 1].x : 0), n = t - nt + (warp ? part[warp - 1].y : 0);
  for (int e = e0; e < e1; e++) {
    fill[e] = off;
    for (int q = 0; q < cnt[e]; q += tn) tiles[n++] = make_int4(e, off + q, min(tn, cnt[e] - q), 0);
    off += cnt[e];
  }
  if (threadIdx.x == PLAN_T - 1) *ntiles = part[31].y;
}
__global__ void grouped_scatter_kernel(int32_t *inv, int32_t *src, int *fill, const int32_t *idx, int64_t np, int E,
                                       int topk) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < np; p += (int64_t)gridDim.x * blockDim.x) {
    const int e = idx[p];
    if (e < 0 || e >= E) {
      inv[p] = -1;
      continue;
    }
    const int j = atomicAdd(&fill[e], 1);
    inv[p] = j;
    src[j] = (int32_t)(p / topk);
  }
}
/* xs[j] = bf16(x[src[j]]), 8 values per thread (D % 8 == 0) */
__global__ void grouped_gather_kernel(uint16_t *xs, const float *x, const int32_t *src, int64_t rows, int64_t D) {
  const int64_t n = rows * (D / 8);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = i / (D / 8), d = (i % (D / 8)) * 8;
    const float4 *xp = reinterpret_cast<const float4 *>(x + (int64_t)src[j] * D + d);
    const float4 a = xp[0], b = xp[1];
    *reinterpret_cast<uint4 *>(xs + j * D + d) =
        make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
  }
}
/* FP8 experts: row j of silu(g) * u as f16 times a power of two (row_to_f16), one block a row */
__global__ void __launch_bounds__(512) grouped_silu_f16_kernel(__half *out, float *inv, const float *g, const float *u, int I,
                                                               bool perm) {
  const float4 *g4 = reinterpret_cast<const float4 *>(g + (int64_t)blockIdx.x * I);
  const float4 *u4 = reinterpret_cast<const float4 *>(u + (int64_t)blockIdx.x * I);
  row_to_f16(out + (int64_t)blockIdx.x * I, inv + blockIdx.x, I, [&](int i) {
    const float4 a = g4[i], b = u4[i];
    return make_float4(silu_f(a.x) * b.x, silu_f(a.y) * b.y, silu_f(a.z) * b.z, silu_f(a.w) * b.w);
  }, perm);
}
/* out = bf16(silu(g) * u): dsv3_cuda_silu_mul followed by the GEMM's bf16 rounding */
__global__ void grouped_silu_kernel(uint16_t *out, const float *g, const float *u, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    out[i] = f2bf16(silu_f(g[i]) * u[i]);
  }
}

extern "C" int dsv3_cuda_moe_grouped_ok(dsv3_dtype wdt, int64_t dim, int64_t inter) {
  return (wdt == DSV3_F8_E4M3 || wdt == DSV3_BF16) && dim > 0 && inter > 0 && dim % 16 == 0 && inter % 16 == 0 &&
         dim < (1 << 30) && inter < (1 << 30);
}

/* FP8: 2 blocks an SM (128 registers: the compiler spills ~100 bytes, still faster than one
 * block of 196 registers, measured); BF16 weights need 160 KB of shared memory: one block */
int dsv3_cuda_moe_wg_ks = 128;
template <class C>
static int grouped_wg_go(const GroupedArgs &a, int64_t maxt, int z, cudaStream_t st) {
  auto k = grouped_wg_kernel<C>;
  CU_TRY("moe grouped", cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, C::smem));
  dim3 grid((unsigned)cdiv(a.N, C::M), (unsigned)maxt, (unsigned)z);
  k<<<grid, C::T, C::smem, st>>>(a);
  return 0;
}
static int grouped_wg_launch(GroupedArgs a, int64_t maxt, int z, cudaStream_t st) {
  const bool b = dsv3_cuda_moe_wg_ks == 128 && a.K % 128 == 0;
  if (!b) a.tmaps = nullptr; /* the tensor maps' box is WgB's stage */
  if (b ? grouped_wg_go<WgB>(a, maxt, z, st) : grouped_wg_go<WgA>(a, maxt, z, st)) return -1;
  CU_LAUNCHED("moe grouped");
  return 0;
}
template <bool FP8>
static int grouped_launch(const GroupedArgs &a, int64_t maxt, int z, cudaStream_t st) {
  constexpr int smem = GB_ST * (GB_M * (FP8 ? GB_K : 2 * GB_K) + GB_N * GB_K * 2);
  CU_TRY("moe grouped", cudaFuncSetAttribute(grouped_kernel<FP8>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  dim3 grid((unsigned)cdiv(a.N, GB_M), (unsigned)maxt, (unsigned)z);
  grouped_kernel<FP8><<<grid, GB_THREADS, smem, st>>>(a);
  CU_LAUNCHED("moe grouped");
  return 0;
}

/* TMA tensor maps of the experts' FP8 weight matrices, built on the first call with an expert
 * table (its device copy read back once; the table must not change under the same pointer):
 * [expert][W1, W2, W3], each a 2-D uint8 map of [rows, K] with WgB's box (K slices of 128 bytes
 * x 256 rows, the 128-byte swizzle of its weight stage; rows past the matrix read as zero).
 * NULL (the cp.async loads) where the driver has no cuTensorMapEncodeTiled, while a graph is
 * being captured, or with DSV3_MOE_TMA=0. */
struct dsv3_tmap_set {
  const void *key;
  int64_t E, dim, inter;
  void *dev;
  dsv3_tmap_set *next;
};
void dsv3_moe_tmaps_free(dsv3_tmap_set *s) {
  while (s) {
    dsv3_tmap_set *n = s->next;
    cudaFree(s->dev);
    free(s);
    s = n;
  }
}
int dsv3_cuda_moe_tma = 1;
extern "C" void dsv3_cuda_moe_forget_tables(dsv3_cuda_ctx *ctx) {
  dsv3_moe_tmaps_free(ctx->tmaps);
  ctx->tmaps = nullptr;
}
static PFN_cuTensorMapEncodeTiled_v12000 tmap_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static bool tried = false;
  if (!tried) {
    tried = true;
    void *p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
    (void)cudaGetLastError();
  }
  return fn;
}
int dsv3_tmap_2d(void *map, int esize, const void *base, uint64_t cols, uint64_t rows, uint64_t row_bytes,
                 uint32_t box_cols, uint32_t box_rows) {
  PFN_cuTensorMapEncodeTiled_v12000 enc = tmap_encoder();
  if (!enc || ((uintptr_t)base & 15) || (row_bytes & 15) || box_cols * (uint32_t)esize != 128) return -1;
  const cuuint64_t gdim[2] = {cols, rows}, gstride[1] = {row_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows}, estr[2] = {1, 1};
  return enc((CUtensorMap *)map, esize == 1 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
             (void *)base, gdim, gstride, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS
             ? 0
             : -1;
}
static const uint8_t *moe_tmaps(dsv3_cuda_ctx *ctx, const dsv3_cuda_expert *experts, int64_t E, int64_t dim, int64_t inter) {
  for (dsv3_tmap_set *s = ctx->tmaps; s; s = s->next)
    if (s->key == experts && s->E == E && s->dim == dim && s->inter == inter) return (const uint8_t *)s->dev;
  const char *env = getenv("DSV3_MOE_TMA");
  PFN_cuTensorMapEncodeTiled_v12000 enc = tmap_encoder();
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(ctx->stream, &cs);
  if (!dsv3_cuda_moe_tma || (env && !strcmp(env, "0")) || !enc || cs != cudaStreamCaptureStatusNone) return nullptr;
  dsv3_cuda_expert *tab = (dsv3_cuda_expert *)malloc((size_t)E * sizeof *tab);
  CUtensorMap *maps = (CUtensorMap *)calloc((size_t)E * 3, sizeof(CUtensorMap));
  dsv3_tmap_set *set = (dsv3_tmap_set *)calloc(1, sizeof *set);
  bool ok = tab && maps && set &&
            cudaMemcpyAsync(tab, experts, (size_t)E * sizeof *tab, cudaMemcpyDeviceToHost, ctx->stream) == cudaSuccess &&
            cudaStreamSynchronize(ctx->stream) == cudaSuccess;
  for (int64_t e = 0; ok && e < E; e++)
    for (int m = 0; ok && m < 3; m++) {
      const void *w = m == 0 ? tab[e].w1 : m == 1 ? tab[e].w2 : tab[e].w3;
      if (!w) continue; /* another rank's expert: its tiles never load */
      const uint64_t rows = m == 1 ? dim : inter, cols = m == 1 ? inter : dim;
      ok = dsv3_tmap_2d(maps + e * 3 + m, 1, w, cols, rows, cols, WgB::KS, WgB::M) == 0;
    }
  if (ok && cudaMalloc(&set->dev, (size_t)E * 3 * sizeof(CUtensorMap)) == cudaSuccess &&
      cudaMemcpy(set->dev, maps, (size_t)E * 3 * sizeof(CUtensorMap), cudaMemcpyHostToDevice) == cudaSuccess) {
    set->key = experts, set->E = E, set->dim = dim, set->inter = inter, set->next = ctx->tmaps;
    ctx->tmaps = set;
  } else {
    if (set) cudaFree(set->dev);
    free(set);
    set = nullptr;
  }
  (void)cudaGetLastError();
  free(tab);
  free(maps);
  return set ? (const uint8_t *)set->dev : nullptr;
}

extern "C" int dsv3_cuda_moe_grouped(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const int32_t *idx,
                                     const float *weight, int64_t topk, const dsv3_cuda_expert *experts, int64_t n_experts,
                                     dsv3_dtype wdt, int64_t dim, int64_t inter, int accumulate) {
  CU_ARG("moe grouped", dsv3_cuda_moe_grouped_ok(wdt, dim, inter) && n_experts > 0 && n_experts < (1 << 20) && topk > 0,
         "experts must be FP8 or BF16 with dim and inter multiples of 16 (dim %lld, inter %lld)", (long long)dim,
         (long long)inter);
  CU_ARG("moe grouped", ((uintptr_t)x & 15) == 0, "x must be 16-byte aligned");
  if (ntok <= 0) return 0;
  /* wgmma (sm_90a SASS on an sm_90 device; FP8; dim and inter multiples of 64): x and h in perm
   * order, tiles of GW_N tokens */
  const bool fp8 = wdt == DSV3_F8_E4M3;
  const bool wgm = fp8 && dsv3_cuda_moe_wgmma && ctx->sm90 && dim % 64 == 0 && inter % 64 == 0;
  const int tn = wgm ? (int)GW_N : (int)GB_N;
  const int64_t np = ntok * topk, E = n_experts, maxt = np / tn + E; /* sum over experts of ceil(c / tn) */
  CU_ARG("moe grouped", np < (1ll << 31) && maxt < 65536, "too many (token, expert) pairs (%lld)", (long long)np);
  /* scratch: ints | xs (bf16 [np, dim]), later ys (f32 [np, dim]) | g, u (f32 [np, inter]) | hb (bf16 [np, inter]) */
  const size_t toff = ((size_t)(2 * E + 1) * 4 + 15) & ~(size_t)15;
  const size_t ib = (toff + (size_t)maxt * 16 + (size_t)np * 16 + 255) & ~(size_t)255; /* + xinv, hinv (FP8) */
  const size_t xb = (size_t)(np * dim) * 4, gb = (size_t)(np * inter) * 8, hb = (size_t)(np * inter) * 2;
  uint8_t *base = (uint8_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_MOE, ib + xb + gb + hb);
  if (!base) return -1;
  int *cnt = (int *)base, *fill = cnt + E, *ntiles = fill + E;
  int4 *tiles = (int4 *)(base + toff);
  int32_t *inv = (int32_t *)(tiles + maxt), *src = inv + np;
  float *xinv = (float *)(src + np), *hinv = xinv + np;
  uint16_t *xs = (uint16_t *)(base + ib);
  float *ys = (float *)(base + ib), *gg = (float *)(base + ib + xb), *uu = gg + np * inter;
  uint16_t *hs = (uint16_t *)(base + ib + xb + gb);
  cudaStream_t st = ctx->stream;
  CU_TRY("moe grouped", cudaMemsetAsync(cnt, 0, (size_t)E * 4, st));
  /* rows of out-of-range pairs are never placed: their source rows stay 0 (read, never used) */
  CU_TRY("moe grouped", cudaMemsetAsync(src, 0, (size_t)np * 4, st));
  grouped_count_kernel<<<grid_for(np), 256, 0, st>>>(cnt, idx, np, (int)E);
  grouped_plan_kernel<<<1, PLAN_T, 0, st>>>(fill, tiles, ntiles, cnt, (int)E, tn);
  grouped_scatter_kernel<<<grid_for(np), 256, 0, st>>>(inv, src, fill, idx, np, (int)E, (int)topk);
  /* FP8: x as f16 rows with their powers of two (the tensor-core GEMV's x_f16_kernel); rows of
   * out-of-range pairs (never placed) convert row 0: no tile reads them */
  /* wgmma: x converted once a token and read through src (converting a row per pair took 153 us
   * a layer at 2048 tokens, top-8); the mma.sync kernel reads a gathered row per pair */
  if (wgm)
    x_f16_kernel<<<(unsigned)ntok, 512, 0, st>>>((__half *)xs, xinv, x, dim, (int)dim, (const int32_t *)nullptr, true);
  else if (fp8) x_f16_kernel<<<(unsigned)np, 512, 0, st>>>((__half *)xs, xinv, x, dim, (int)dim, src, false);
  else grouped_gather_kernel<<<grid_for(np * dim / 8), 256, 0, st>>>(xs, x, src, np, dim);
  CU_LAUNCHED("moe grouped: planning");
  const uint8_t *tm = wgm && dim % 128 == 0 && inter % 128 == 0 ? moe_tmaps(ctx, experts, E, dim, inter) : nullptr;
  GroupedArgs a = {gg, uu, xs, xinv, experts, tiles, ntiles, 1, (int)inter, (int)dim, wgm ? src : nullptr, tm, nullptr};
  if (wgm ? grouped_wg_launch(a, maxt, 2, st) : fp8 ? grouped_launch<true>(a, maxt, 2, st) : grouped_launch<false>(a, maxt, 2, st))
    return -1;
  if (fp8) grouped_silu_f16_kernel<<<(unsigned)np, 512, 0, st>>>((__half *)hs, hinv, gg, uu, (int)inter, wgm);
  else grouped_silu_kernel<<<grid_for(np * inter), 256, 0, st>>>(hs, gg, uu, np * inter);
  CU_LAUNCHED("moe grouped: silu");
  /* the experts' outputs in bf16 (as the official bf16 experts return them): the down GEMM
   * writes and the combine reads half the bytes */
  uint16_t *ysb = dsv3_cuda_moe_ys_bf16 ? (uint16_t *)ys : nullptr;
  GroupedArgs b = {ys, NULL, hs, hinv, experts, tiles, ntiles, 2, (int)dim, (int)inter, nullptr, tm, ysb};
  if (wgm ? grouped_wg_launch(b, maxt, 1, st) : fp8 ? grouped_launch<true>(b, maxt, 1, st) : grouped_launch<false>(b, maxt, 1, st))
    return -1;
  return ysb ? combine(st, y, (const uint16_t *)ysb, weight, inv, ntok, topk, dim, accumulate)
             : combine(st, y, (const float *)ys, weight, inv, ntok, topk, dim, accumulate);
}
