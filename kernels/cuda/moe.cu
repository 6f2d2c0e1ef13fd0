/* moe.cu - Mixture-of-Experts on the device: routing (bit-compatible with dsv3_route), a fused
 * decode path that reads only the chosen experts (gate/up GEMV with silu*mul, then down GEMV,
 * then the weighted sum), and a prefill path that groups tokens by expert for GEMMs. */
#include <stdlib.h>
#include <string.h>

#include "gemv.cuh"

/* ---------------------------------------------------------------- routing */
struct RouteArgs {
  const float *logits, *bias;
  int32_t *idx;
  float *weight;
  int E, topk, G, topk_groups, sigmoid, bf16;
  float route_scale;
};

/* One block (256 threads) per token.  The arithmetic that decides ties and rounding is done in
 * the same order and precision as the C reference: correctly rounded exp through double,
 * explicit round-to-nearest float operations (the build uses --use_fast_math), the serial
 * sums on one thread. */
__global__ void __launch_bounds__(256) route_kernel(RouteArgs a) {
  __shared__ float orig[1024], sel[1024], gsc[1024];
  __shared__ double dsum;
  __shared__ float wsel[32];
  __shared__ int isel[32];
  __shared__ unsigned char used[1024];
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
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    sel[e] = a.bias ? __fadd_rn(orig[e], a.bias[e]) : orig[e];
    used[e] = 0;
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
      gsc[g] = a.bias ? __fadd_rn(x, per > 1 ? y : 0.f) : x;
    }
    __syncthreads();
    if (threadIdx.x == 0) { /* keep the top groups: gsc[g] becomes a keep flag (1 / 0) */
      unsigned long long keep[16] = {0};
      for (int k = 0; k < a.topk_groups; k++) {
        int best = -1;
        for (int g = 0; g < G; g++)
          if (!(keep[g >> 6] >> (g & 63) & 1) && (best < 0 || gsc[g] > gsc[best])) best = g;
        keep[best >> 6] |= 1ull << (best & 63);
      }
      for (int g = 0; g < G; g++) gsc[g] = (keep[g >> 6] >> (g & 63) & 1) ? 1.f : 0.f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
      if (gsc[e / per] == 0.f) sel[e] = -INFINITY;
    __syncthreads();
  }
  /* top-k by one warp: the largest, the lowest index on ties, as the reference's scan */
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    for (int k = 0; k < a.topk; k++) {
      float bv = -INFINITY;
      int bi = 0x7fffffff;
      for (int e = lane; e < E; e += 32) {
        if (used[e]) continue;
        float v = sel[e];
        if (bi == 0x7fffffff || v > bv) bv = v, bi = e; /* e ascends: ties keep the lower */
      }
#pragma unroll
      for (int o = 16; o; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        bool take = oi != 0x7fffffff && (bi == 0x7fffffff || ov > bv || (ov == bv && oi < bi));
        if (take) bv = ov, bi = oi;
      }
      if (lane == 0) isel[k] = bi, wsel[k] = orig[bi], used[bi] = 1;
      __syncwarp();
    }
    if (lane == 0) {
      int32_t *idx = a.idx + (int64_t)t * a.topk;
      float *w = a.weight + (int64_t)t * a.topk;
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
}

extern "C" int dsv3_cuda_route(const dsv3_route_params *p, const float *logits, const float *bias, int32_t *idx,
                               float *weight, int64_t ntok, cudaStream_t st) {
  int64_t G = p->n_groups > 0 ? p->n_groups : 1;
  CU_ARG("route", p->n_experts > 0 && p->n_experts <= 1024 && p->topk > 0 && p->topk <= 32 && p->topk <= p->n_experts &&
                      p->n_experts % G == 0 && (G == 1 || (p->topk_groups > 0 && p->topk_groups <= G)),
         "unsupported routing (experts %lld, topk %lld, groups %lld/%lld)", (long long)p->n_experts, (long long)p->topk,
         (long long)p->topk_groups, (long long)G);
  CU_ARG("route", G == 1 || p->topk <= p->topk_groups * (p->n_experts / G), "topk exceeds the experts of the kept groups");
  if (ntok <= 0) return 0;
  RouteArgs a = {logits, bias, idx, weight, (int)p->n_experts, (int)p->topk, (int)G, (int)p->topk_groups, p->sigmoid,
                 p->bf16, p->route_scale};
  route_kernel<<<(unsigned)ntok, 256, 0, st>>>(a);
  CU_LAUNCHED("route");
  return 0;
}

/* ---------------------------------------------------------------- weighted sum */
/* y[t, d] (+)= sum_k w[t, k] * part[row(t*topk + k), d]; row = perm-inverse or identity */
__global__ void moe_combine_kernel(float *y, const float *part, const float *w, const int32_t *inv, int64_t ntok, int topk,
                                   int64_t D, int accumulate) {
  int64_t n = ntok * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i / D, d = i % D;
    float acc = 0.f;
    for (int k = 0; k < topk; k++) {
      int64_t pr = t * topk + k, row = inv ? inv[pr] : pr;
      acc = fmaf(w[pr], part[row * D + d], acc);
    }
    y[i] = accumulate ? y[i] + acc : acc;
  }
}

static int combine(cudaStream_t st, float *y, const float *part, const float *w, const int32_t *inv, int64_t ntok, int64_t topk,
                   int64_t D, int accumulate) {
  int64_t n = ntok * D;
  moe_combine_kernel<<<(unsigned)(cdiv(n, 256) < 65536 ? cdiv(n, 256) : 65536), 256, 0, st>>>(y, part, w, inv, ntok,
                                                                                               (int)topk, D, accumulate);
  CU_LAUNCHED("moe combine");
  return 0;
}

/* ---------------------------------------------------------------- decode */
template <int R, bool FP8, int MODE>
static void moe_launch(const GemvArgs &a, dim3 grid, cudaStream_t st) {
  gemv_kernel<1, R, FP8, MODE><<<grid, 256, 0, st>>>(a);
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
  float *h = (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_MOE2, (size_t)(np * (inter + dim)) * sizeof(float));
  if (!h) return -1;
  float *part = h + np * inter;
  cudaStream_t st = ctx->stream;

  GemvArgs a = {};
  a.y = h, a.x = x, a.experts = experts, a.idx = idx, a.ldx = dim, a.ldy = inter;
  a.N = (int)inter, a.K = (int)dim, a.ntok = 1, a.topk = (int)topk;
  int R, WK;
  gemv_shape(a.N, a.K, epc, np, ctx->sms, 4, 2, 2, &R, &WK);
  a.wk = WK;
  dim3 g1((unsigned)cdiv(a.N, (int64_t)(8 / WK) * (R / 2)), (unsigned)np);
  if (fp8) R == 4 ? moe_launch<4, true, GEMV_MOE_GATEUP>(a, g1, st) : moe_launch<2, true, GEMV_MOE_GATEUP>(a, g1, st);
  else R == 4 ? moe_launch<4, false, GEMV_MOE_GATEUP>(a, g1, st) : moe_launch<2, false, GEMV_MOE_GATEUP>(a, g1, st);
  CU_LAUNCHED("moe gate/up");

  GemvArgs b = {};
  b.y = part, b.x = h, b.experts = experts, b.idx = idx, b.ldx = inter, b.ldy = dim;
  b.N = (int)dim, b.K = (int)inter, b.ntok = 1, b.topk = (int)topk;
  gemv_shape(b.N, b.K, epc, np, ctx->sms, 4, 1, 1, &R, &WK);
  b.wk = WK;
  dim3 g2((unsigned)cdiv(b.N, (int64_t)(8 / WK) * R), (unsigned)np);
  if (fp8) R == 4 ? moe_launch<4, true, GEMV_MOE_DOWN>(b, g2, st) : moe_launch<1, true, GEMV_MOE_DOWN>(b, g2, st);
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
    moe_gather_kernel<<<(unsigned)(cdiv(n, 256) < 65536 ? cdiv(n, 256) : 65536), 256, 0, st>>>(xs, x, dperm, (int)topk, np,
                                                                                              dim);
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
