/* norm.cu - RMSNorm (with the residual add fused), embedding gather, RoPE, SiLU-and-multiply,
 * residual add.  Memory-bound one-pass kernels over float32 activations. */
#include "common.cuh"

/* One block per token; a thread keeps its elements in registers between the two passes
 * (dim <= 256 * 32 = 8192 in registers, larger dims re-read x).  Every load of a pass is
 * issued before its first store: out may alias x (in place) and the compiler must otherwise
 * keep each load behind the previous store, a chain of 2 x 28 memory round trips at dim 7168
 * (~12 us per call, 9 calls per decode step at 671B widths). */
template <bool ADD>
__global__ void __launch_bounds__(256) rmsnorm_kernel(float *out, float *x, const float *y, const void *w,
                                                      dsv3_dtype wdt, int64_t dim, float eps) {
  pdl_wait();
  pdl_trigger();
  constexpr int PT = 32;
  const int64_t t = blockIdx.x;
  float *xr = x + t * dim;
  const float *yr = ADD ? y + t * dim : nullptr;
  float v[PT], u[PT];
#pragma unroll
  for (int j = 0; j < PT; j++) { /* loads only */
    int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
    v[j] = i < dim ? xr[i] : 0.f;
    u[j] = ADD && i < dim ? yr[i] : 0.f;
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PT; j++) {
    int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
    if (ADD) {
      v[j] += u[j];
      if (i < dim) xr[i] = v[j];
    }
    ss = fmaf(v[j], v[j], ss);
  }
  for (int64_t i = threadIdx.x + (int64_t)PT * blockDim.x; i < dim; i += blockDim.x) {
    float a = xr[i];
    if (ADD) {
      a += yr[i];
      xr[i] = a;
    }
    ss = fmaf(a, a, ss);
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / (float)dim + eps);
  float *o = out + t * dim;
#pragma unroll
  for (int j = 0; j < PT; j++) { /* the weights first: o may not alias them, but the compiler cannot know */
    int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
    u[j] = i < dim ? load_vec(w, wdt, i) : 0.f;
  }
#pragma unroll
  for (int j = 0; j < PT; j++) {
    int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
    if (i < dim) o[i] = v[j] * r * u[j];
  }
  for (int64_t i = threadIdx.x + (int64_t)PT * blockDim.x; i < dim; i += blockDim.x) o[i] = xr[i] * r * load_vec(w, wdt, i);
}

/* The same with 1024 threads and 16-byte accesses, for dim % 4 == 0 up to 8192 (aligned
 * pointers): a thread's two float4 of x (and y) are one round trip, and the weights, constant,
 * are loaded before the grid-dependency wait, in the shadow of the kernel before.  At one token
 * the kernel is a chain of latencies on one multiprocessor (DeepSeek-V3: 9 a decode step, ~7 us
 * each under ncu with the 256-thread kernel). */
enum { RMS4_THREADS = 1024, RMS4_PV = 2 };
__device__ __forceinline__ float4 load_vec4(const void *p, dsv3_dtype dt, int64_t i) { /* elements i .. i + 3 */
  if (dt == DSV3_F32) return *reinterpret_cast<const float4 *>((const float *)p + i);
  const uint2 u = *reinterpret_cast<const uint2 *>((const uint16_t *)p + i);
  if (dt == DSV3_BF16) return make_float4(bf16_lo(u.x), bf16_hi(u.x), bf16_lo(u.y), bf16_hi(u.y));
  const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&u.x)), b = __half22float2(*reinterpret_cast<const __half2 *>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
/* outb non-NULL: out rounded to bf16 there too (a GEMM's input, no conversion pass) */
template <bool ADD>
__global__ void __launch_bounds__(RMS4_THREADS) rmsnorm4_kernel(float *out, uint16_t *outb, float *x, const float *y,
                                                                const void *w, dsv3_dtype wdt, int dim, float eps) {
  const int n4 = dim >> 2;
  float4 wv[RMS4_PV], v[RMS4_PV];
#pragma unroll
  for (int j = 0; j < RMS4_PV; j++) {
    const int i = threadIdx.x + j * RMS4_THREADS;
    wv[j] = i < n4 ? load_vec4(w, wdt, 4 * (int64_t)i) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  float4 *xr = reinterpret_cast<float4 *>(x + t * dim);
  const float4 *yr = ADD ? reinterpret_cast<const float4 *>(y + t * dim) : nullptr;
  float4 u[RMS4_PV];
#pragma unroll
  for (int j = 0; j < RMS4_PV; j++) { /* loads only: out may alias x */
    const int i = threadIdx.x + j * RMS4_THREADS;
    v[j] = i < n4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    u[j] = ADD && i < n4 ? yr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < RMS4_PV; j++) {
    const int i = threadIdx.x + j * RMS4_THREADS;
    if (ADD) {
      v[j].x += u[j].x, v[j].y += u[j].y, v[j].z += u[j].z, v[j].w += u[j].w;
      if (i < n4) xr[i] = v[j];
    }
    ss = fmaf(v[j].x, v[j].x, ss), ss = fmaf(v[j].y, v[j].y, ss), ss = fmaf(v[j].z, v[j].z, ss), ss = fmaf(v[j].w, v[j].w, ss);
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / (float)dim + eps);
  float4 *o = out ? reinterpret_cast<float4 *>(out + t * dim) : nullptr;
  uint2 *ob = outb ? reinterpret_cast<uint2 *>(outb + t * dim) : nullptr;
#pragma unroll
  for (int j = 0; j < RMS4_PV; j++) {
    const int i = threadIdx.x + j * RMS4_THREADS;
    if (i >= n4) continue;
    const float4 a = make_float4(v[j].x * r * wv[j].x, v[j].y * r * wv[j].y, v[j].z * r * wv[j].z, v[j].w * r * wv[j].w);
    if (o) o[i] = a;
    if (ob) ob[i] = make_uint2(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w));
  }
}
/* whether rmsnorm4_kernel covers the call */
static bool rms4_ok(const void *out, const void *x, const void *y, const void *w, dsv3_dtype wdt, int64_t dim) {
  const uintptr_t m = (uintptr_t)out | (uintptr_t)x | (uintptr_t)y;
  return dim % 4 == 0 && dim <= 4 * RMS4_THREADS * RMS4_PV && (m & 15) == 0 &&
         ((uintptr_t)w & (wdt == DSV3_F32 ? 15 : 7)) == 0;
}

extern "C" int dsv3_cuda_rmsnorm_bf16_only_ok(const float *x, const float *y, const void *w, dsv3_dtype wdt, int64_t dim) {
  return rms4_ok(NULL, x, y, w, wdt, dim);
}

static int check_vec_dt(const char *op, dsv3_dtype dt) {
  CU_ARGV(op, dt == DSV3_BF16 || dt == DSV3_F16 || dt == DSV3_F32, "weight dtype %d not supported", (int)dt);
  return 0;
}

extern "C" int dsv3_cuda_rmsnorm_bf16(float *out, uint16_t *outb, float *x, const float *y, const void *w, dsv3_dtype wdt,
                                      int64_t ntok, int64_t dim, float eps, cudaStream_t st) {
  const char *op = y ? "add_rmsnorm" : "rmsnorm";
  if (check_vec_dt(op, wdt)) return -1;
  if (ntok <= 0 || dim <= 0) return 0;
  CU_ARGV(op, ntok < (1ll << 31), "too many tokens");
  const bool fast = rms4_ok(out, x, y, w, wdt, dim) && ((uintptr_t)outb & 7) == 0;
  CU_ARGV(op, out || (outb && fast), "no float32 output: needs the bf16 one and dim %% 4 == 0 up to %d", 4 * RMS4_THREADS * RMS4_PV);
  if (fast) {
    if (y) launch_pdl(rmsnorm4_kernel<true>, (unsigned)ntok, RMS4_THREADS, 0, st, out, outb, x, y, w, wdt, (int)dim, eps);
    else launch_pdl(rmsnorm4_kernel<false>, (unsigned)ntok, RMS4_THREADS, 0, st, out, outb, x, y, w, wdt, (int)dim, eps);
  } else {
    if (y) launch_pdl(rmsnorm_kernel<true>, (unsigned)ntok, 256, 0, st, out, x, y, w, wdt, dim, eps);
    else launch_pdl(rmsnorm_kernel<false>, (unsigned)ntok, 256, 0, st, out, x, y, w, wdt, dim, eps);
    CU_LAUNCHED(op);
    return outb ? dsv3_cuda_f32_to_bf16(outb, out, ntok * dim, st) : 0;
  }
  CU_LAUNCHED(op);
  return 0;
}
extern "C" int dsv3_cuda_rmsnorm(float *out, const float *x, const void *w, dsv3_dtype wdt, int64_t ntok, int64_t dim,
                                 float eps, cudaStream_t st) {
  return dsv3_cuda_rmsnorm_bf16(out, NULL, (float *)x, NULL, w, wdt, ntok, dim, eps, st);
}
extern "C" int dsv3_cuda_add_rmsnorm(float *out, float *x, const float *y, const void *w, dsv3_dtype wdt, int64_t ntok,
                                     int64_t dim, float eps, cudaStream_t st) {
  return dsv3_cuda_rmsnorm_bf16(out, NULL, x, y, w, wdt, ntok, dim, eps, st);
}

/* rows [v0, v0 + vocab) of the table; ids outside give NaN rows (whole table) or zero rows (a
 * vocab-parallel part, summed across ranks afterwards) */
enum { EMB_SPAN = 2048 }; /* elements of a row a block (a 7168-wide row: 4 blocks, not one) */
__global__ void embed_kernel(float *out, const int32_t *ids, const void *E, dsv3_dtype edt, int64_t v0, int64_t vocab,
                             int64_t dim, int part) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x, i0 = (int64_t)blockIdx.y * EMB_SPAN, i1 = min(dim, i0 + EMB_SPAN);
  const int64_t id = (int64_t)ids[t] - v0;
  float *o = out + t * dim;
  if (id < 0 || id >= vocab) {
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) o[i] = part ? 0.f : __int_as_float(0x7fc00000);
    return;
  }
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) o[i] = load_vec(E, edt, id * dim + i);
}

static int embed_launch(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt, int64_t v0,
                        int64_t vocab, int64_t dim, int part, cudaStream_t st) {
  if (check_vec_dt("embed", edt)) return -1;
  if (ntok <= 0 || dim <= 0) return 0;
  CU_ARG("embed", ntok < (1ll << 31) && dim < (1ll << 30), "too many tokens or too wide");
  launch_pdl(embed_kernel, dim3((unsigned)ntok, (unsigned)cdiv(dim, EMB_SPAN)), 256, 0, st, out, ids, E, edt, v0, vocab, dim,
             part);
  CU_LAUNCHED("embed");
  return 0;
}

extern "C" int dsv3_cuda_embed(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt,
                               int64_t vocab, int64_t dim, cudaStream_t st) {
  return embed_launch(out, ids, ntok, E, edt, 0, vocab, dim, 0, st);
}

extern "C" int dsv3_cuda_embed_part(float *out, const int32_t *ids, int64_t ntok, const void *E, dsv3_dtype edt,
                                    int64_t v0, int64_t vocab, int64_t dim, cudaStream_t st) {
  return embed_launch(out, ids, ntok, E, edt, v0, vocab, dim, 1, st);
}

/* one thread per (token, vector, pair) */
/* pos NULL: position pos0 + t */
__global__ void rope_kernel(float *x, int64_t ntok, int64_t nvec, int64_t ts, int64_t vs, int64_t half,
                            const float *cos_t, const float *sin_t, const int32_t *pos, int64_t pos0) {
  pdl_wait();
  pdl_trigger();
  int64_t n = ntok * nvec * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t p = i % half, v = (i / half) % nvec, t = i / (half * nvec);
    float *xp = x + t * ts + v * vs + 2 * p;
    int64_t row = (pos ? (int64_t)pos[t] : pos0 + t) * half + p;
    float c = cos_t[row], s = sin_t[row], a = xp[0], b = xp[1];
    xp[0] = a * c - b * s;
    xp[1] = a * s + b * c;
  }
}

static int rope_launch(float *x, int64_t ntok, int64_t nvec, int64_t tok_stride, int64_t vec_stride, int64_t rope_dim,
                       const float *cos_t, const float *sin_t, const int32_t *pos, int64_t pos0, cudaStream_t st) {
  CU_ARG("rope", rope_dim > 0 && rope_dim % 2 == 0, "rope_dim %lld must be even", (long long)rope_dim);
  int64_t n = ntok * nvec * (rope_dim / 2);
  if (n <= 0) return 0;
  launch_pdl(rope_kernel, grid_for(n), 256, 0, st, x, ntok, nvec, tok_stride, vec_stride, rope_dim / 2, cos_t, sin_t,
             pos, pos0);
  CU_LAUNCHED("rope");
  return 0;
}
extern "C" int dsv3_cuda_rope(float *x, int64_t ntok, int64_t nvec, int64_t tok_stride, int64_t vec_stride,
                              int64_t rope_dim, const float *cos_t, const float *sin_t, const int32_t *pos,
                              cudaStream_t st) {
  return rope_launch(x, ntok, nvec, tok_stride, vec_stride, rope_dim, cos_t, sin_t, pos, 0, st);
}
extern "C" int dsv3_cuda_rope_seq(float *x, int64_t ntok, int64_t nvec, int64_t tok_stride, int64_t vec_stride,
                                  int64_t rope_dim, const float *cos_t, const float *sin_t, int64_t pos0, cudaStream_t st) {
  return rope_launch(x, ntok, nvec, tok_stride, vec_stride, rope_dim, cos_t, sin_t, NULL, pos0, st);
}

/* outb non-NULL: out rounded to bf16 there too (the down projection's GEMM input) */
__global__ void silu_mul_kernel(float *out, uint16_t *outb, const float *g, const float *u, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float a = g[i];
    const float v = a / (1.0f + __expf(-a)) * u[i];
    if (out) out[i] = v;
    if (outb) outb[i] = f2bf16(v);
  }
}
__global__ void add_kernel(float *y, const float *x, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] += x[i];
}

extern "C" int dsv3_cuda_silu_mul_bf16(float *out, uint16_t *outb, const float *g, const float *u, int64_t n,
                                       cudaStream_t st) {
  if (n <= 0) return 0;
  launch_pdl(silu_mul_kernel, grid_for(n), 256, 0, st, out, outb, g, u, n);
  CU_LAUNCHED("silu_mul");
  return 0;
}
extern "C" int dsv3_cuda_silu_mul(float *out, const float *g, const float *u, int64_t n, cudaStream_t st) {
  return dsv3_cuda_silu_mul_bf16(out, NULL, g, u, n, st);
}
extern "C" int dsv3_cuda_add(float *y, const float *x, int64_t n, cudaStream_t st) {
  if (n <= 0) return 0;
  launch_pdl(add_kernel, grid_for(n), 256, 0, st, y, x, n);
  CU_LAUNCHED("add");
  return 0;
}
