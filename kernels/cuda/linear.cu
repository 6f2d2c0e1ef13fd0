/* linear.cu - context, block-scaled FP8 / BF16 linear layers (GEMV for decode, dequantise +
 * cuBLAS for prefill), dense MLP, dtype conversions. */
#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>

#include "gemv.cuh"

/* the GEMV (float32 x) up to 2 tokens, the tensor-core skinny GEMM (x rounded to bf16) from 3:
 * H200, 671B-width slice, decode step at batch 2 / 4 / 8: GEMV 2.09 / 3.21 / 6.03 ms, skinny mma
 * 2.20 / 3.00 / 4.68 ms (the GEMV re-reads x and does 8 FMAs per weight at 8 tokens) */
int dsv3_cuda_gemv_max_tokens = 2;
int dsv3_cuda_mma_max_tokens = 64;
int dsv3_cuda_pdl = 1;
int dsv3_cuda_gemv_tc = 1;
int dsv3_cuda_gemv_h2 = 1;
int dsv3_cuda_h2_rbig = 16;

/* ---------------------------------------------------------------- context */
extern "C" int dsv3_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

extern "C" int dsv3_cuda_ctx_new(cudaStream_t stream, dsv3_cuda_ctx **out) {
  dsv3_cuda_ctx *c = (dsv3_cuda_ctx *)calloc(1, sizeof *c);
  if (!c) {
    dsv3_error_set("cuda: context: out of host memory");
    return -1;
  }
  c->stream = stream;
  const char *mma = getenv("DSV3_CUDA_MMA");
  if (mma && !strcmp(mma, "0")) dsv3_cuda_mma_max_tokens = 0;
  const char *pdl = getenv("DSV3_CUDA_PDL");
  if (pdl && !strcmp(pdl, "0")) dsv3_cuda_pdl = 0;
  const char *gm = getenv("DSV3_CUDA_GEMV_MAX"); /* the GEMV's token limit, 1..8 */
  if (gm && atoi(gm) >= 1 && atoi(gm) <= 8) dsv3_cuda_gemv_max_tokens = atoi(gm);
  const char *f8 = getenv("DSV3_CUDA_FP8_GEMM"); /* prefill GEMMs on FP8 activations (fp8gemm.cu): 0, 1 */
  if (f8 && (!strcmp(f8, "0") || !strcmp(f8, "1"))) dsv3_cuda_fp8_gemm = atoi(f8);
  const char *wg = getenv("DSV3_MOE_WGMMA"); /* the grouped MoE prefill on wgmma (moe.cu): 0, 1 */
  if (wg && (!strcmp(wg, "0") || !strcmp(wg, "1"))) dsv3_cuda_moe_wgmma = atoi(wg);
  const char *yb = getenv("DSV3_MOE_YS_BF16"); /* the grouped MoE's expert outputs in bf16: 0, 1 */
  if (yb && (!strcmp(yb, "0") || !strcmp(yb, "1"))) dsv3_cuda_moe_ys_bf16 = atoi(yb);
  const char *wk = getenv("DSV3_MOE_WG_KS"); /* its slices of each weight row, bytes: 64, 128 */
  if (wk && (!strcmp(wk, "64") || !strcmp(wk, "128"))) dsv3_cuda_moe_wg_ks = atoi(wk);
  const char *tc = getenv("DSV3_CUDA_GEMV_TC"); /* the tensor-core GEMV (gemv.cuh): 0, 1, 2 */
  if (tc && (!strcmp(tc, "0") || !strcmp(tc, "1") || !strcmp(tc, "2"))) dsv3_cuda_gemv_tc = atoi(tc);
  const char *h2 = getenv("DSV3_CUDA_GEMV_H2"); /* the packed-f16 GEMV at one token (gemv.cuh): 0, 1 */
  if (h2 && (!strcmp(h2, "0") || !strcmp(h2, "1"))) dsv3_cuda_gemv_h2 = atoi(h2);
  const char *hr = getenv("DSV3_CUDA_H2_ROWS"); /* its most rows a warp: 4, 16 */
  if (hr && (!strcmp(hr, "4") || !strcmp(hr, "16"))) dsv3_cuda_h2_rbig = atoi(hr);
  int dev = 0;
  cublasHandle_t h = NULL;
  int major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    dsv3_error_set("cuda: context: no usable device (%s)", cudaGetErrorString(cudaGetLastError()));
    free(c);
    return -1;
  }
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    dsv3_error_set("cuda: context: cublasCreate failed");
    free(c);
    return -1;
  }
  c->cublas = h;
  c->sm90 = major == 9;
  c->workspace_bytes = 32u << 20;
  if (cudaMalloc(&c->workspace, c->workspace_bytes) != cudaSuccess) {
    dsv3_error_set("cuda: context: cannot allocate the %zu MB cuBLAS workspace", c->workspace_bytes >> 20);
    cublasDestroy(h);
    free(c);
    return -1;
  }
  /* a fixed workspace keeps cuBLAS from allocating inside a graph capture */
  if (cublasSetStream(h, stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(h, c->workspace, c->workspace_bytes) != CUBLAS_STATUS_SUCCESS) {
    dsv3_error_set("cuda: context: cublasSetStream/SetWorkspace failed");
    dsv3_cuda_ctx_free(c);
    return -1;
  }
  *out = c;
  return 0;
}

extern "C" void dsv3_cuda_ctx_free(dsv3_cuda_ctx *c) {
  if (!c) return;
  for (int i = 0; i < DSV3_SCR_N; i++) cudaFree(c->scr[i]);
  dsv3_fp8_state_free(c->fp8);
  dsv3_moe_tmaps_free(c->tmaps);
  dsv3_cuda_weight_cache(c, 0);
  if (c->cublas) cublasDestroy((cublasHandle_t)c->cublas);
  cudaFree(c->workspace);
  free(c);
}

extern "C" cudaStream_t dsv3_cuda_ctx_stream(const dsv3_cuda_ctx *c) { return c->stream; }
extern "C" int dsv3_cuda_ctx_sms(const dsv3_cuda_ctx *c) { return c->sms; }
extern "C" uint64_t dsv3_cuda_ctx_scratch_moves(const dsv3_cuda_ctx *c) { return c->scr_moves; }
extern "C" size_t dsv3_cuda_ctx_scratch_bytes(const dsv3_cuda_ctx *c) {
  size_t b = 0;
  for (int i = 0; i < DSV3_SCR_N; i++) b += c->scr_bytes[i];
  return b;
}

void *dsv3_cuda_scratch(dsv3_cuda_ctx *c, int slot, size_t bytes) {
  if (bytes <= c->scr_bytes[slot]) return c->scr[slot];
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(c->stream, &cs);
  if (cs != cudaStreamCaptureStatusNone) {
    dsv3_error_set("cuda: scratch: %zu bytes needed while capturing a graph (run the step once before capture)", bytes);
    return NULL;
  }
  size_t nb = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
  if (cudaStreamSynchronize(c->stream) != cudaSuccess) {
    dsv3_error_set("cuda: scratch: %s", cudaGetErrorString(cudaGetLastError()));
    return NULL;
  }
  cudaFree(c->scr[slot]);
  c->scr[slot] = NULL;
  c->scr_bytes[slot] = 0;
  if (cudaMalloc(&c->scr[slot], nb) != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    dsv3_error_set("cuda: out of device memory: scratch of %.1f MB needed, %.1f MB free of %.1f MB", nb / 1048576.0,
                   fr / 1048576.0, tot / 1048576.0);
    return NULL;
  }
  c->scr_bytes[slot] = nb;
  c->scr_moves++;
  return c->scr[slot];
}

/* ---------------------------------------------------------------- conversions */
__global__ void f32_to_bf16_kernel(uint16_t *out, const float *x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = f2bf16(x[i]);
}
__global__ void bf16_to_f32_kernel(float *out, const uint16_t *x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = bf16f(x[i]);
}

/* 8 values a thread: two 16-byte loads, one 16-byte store (the scalar kernel ran at half the
 * copy bandwidth: 40 us for a 2048 x 7168 prefill activation on an H200) */
__global__ void f32_to_bf16_v8_kernel(uint4 *out, const float4 *x, int64_t n8) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
    const float4 a = x[2 * i], b = x[2 * i + 1];
    out[i] = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
  }
}

extern "C" int dsv3_cuda_f32_to_bf16(uint16_t *out, const float *x, int64_t n, cudaStream_t st) {
  if (n <= 0) return 0;
  if (n % 8 == 0 && ((uintptr_t)out & 15) == 0 && ((uintptr_t)x & 15) == 0)
    f32_to_bf16_v8_kernel<<<grid_for(n / 8), 256, 0, st>>>((uint4 *)out, (const float4 *)x, n / 8);
  else
    f32_to_bf16_kernel<<<grid_for(n), 256, 0, st>>>(out, x, n);
  CU_LAUNCHED("f32_to_bf16");
  return 0;
}
extern "C" int dsv3_cuda_bf16_to_f32(float *out, const uint16_t *x, int64_t n, cudaStream_t st) {
  if (n <= 0) return 0;
  bf16_to_f32_kernel<<<grid_for(n), 256, 0, st>>>(out, x, n);
  CU_LAUNCHED("bf16_to_f32");
  return 0;
}

/* FP8 [rows, cols] -> bf16: 16 values per thread when rows are 16-byte aligned */
__global__ void dequant_fp8_vec(uint16_t *out, const uint8_t *w, const float *s, int64_t rows, int64_t cols) {
  int64_t nchunk = rows * cols / 16, nbk = (cols + 127) >> 7;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nchunk; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t e = i * 16, r = e / cols, c = e % cols;
    float f[16];
    deq16(ld_stream(w + e), __ldg(s + (r >> 7) * nbk + (c >> 7)), f);
    uint32_t o[8];
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = (__float_as_uint(f[2 * j]) >> 16) | (__float_as_uint(f[2 * j + 1]) & 0xffff0000u);
    uint4 *op = reinterpret_cast<uint4 *>(out + e);
    op[0] = make_uint4(o[0], o[1], o[2], o[3]);
    op[1] = make_uint4(o[4], o[5], o[6], o[7]);
  }
}
__global__ void dequant_any(uint16_t *out, const void *w, const float *s, dsv3_dtype dt, int64_t rows, int64_t cols) {
  int64_t n = rows * cols, nbk = (cols + 127) >> 7;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v;
    if (dt == DSV3_F8_E4M3) {
      int64_t r = i / cols, c = i % cols;
      __half_raw hr = __nv_cvt_fp8_to_halfraw(((const uint8_t *)w)[i], __NV_E4M3);
      v = __half2float(*reinterpret_cast<__half *>(&hr)) * s[(r >> 7) * nbk + (c >> 7)];
    } else {
      v = load_vec(w, dt, i);
    }
    out[i] = f2bf16(v);
  }
}

static int check_w(const char *op, const dsv3_wmat *w) {
  CU_ARGV(op, w && w->data && w->rows > 0 && w->cols > 0 && w->rows < (1ll << 31) && w->cols < (1ll << 31),
         "bad weight matrix (%lld x %lld)", w ? (long long)w->rows : 0ll, w ? (long long)w->cols : 0ll);
  CU_ARGV(op, w->dtype == DSV3_F8_E4M3 || w->dtype == DSV3_BF16 || w->dtype == DSV3_F16 || w->dtype == DSV3_F32,
         "weight dtype %d not supported", (int)w->dtype);
  CU_ARGV(op, w->dtype != DSV3_F8_E4M3 || w->scale, "FP8 weight without a scale");
  return 0;
}

extern "C" int dsv3_cuda_dequant(uint16_t *out, const dsv3_wmat *w, cudaStream_t st) {
  if (check_w("dequant", w)) return -1;
  int64_t n = w->rows * w->cols;
  if (w->dtype == DSV3_BF16) {
    CU_TRY("dequant", cudaMemcpyAsync(out, w->data, (size_t)n * 2, cudaMemcpyDeviceToDevice, st));
    return 0;
  }
  if (w->dtype == DSV3_F8_E4M3 && w->cols % 16 == 0 && ((uintptr_t)w->data & 15) == 0 && ((uintptr_t)out & 15) == 0)
    dequant_fp8_vec<<<grid_for(n / 16), 256, 0, st>>>(out, (const uint8_t *)w->data, w->scale, w->rows, w->cols);
  else
    dequant_any<<<grid_for(n), 256, 0, st>>>(out, w->data, w->scale, w->dtype, w->rows, w->cols);
  CU_LAUNCHED("dequant");
  return 0;
}

/* ---------------------------------------------------------------- GEMV */
/* Any shape and alignment: a warp per row, all tokens of the tile (slow path). */
__global__ void gemv_scalar(float *y, const float *x, int ntok, const void *w, const float *s, dsv3_dtype dt, int N,
                            int K, int accumulate) {
  int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= N) return;
  int nbk = (K + 127) >> 7;
  for (int t = 0; t < ntok; t++) {
    float acc = 0.f;
    for (int k = lane; k < K; k += 32) {
      float v;
      int64_t i = (int64_t)row * K + k;
      if (dt == DSV3_F8_E4M3) {
        __half_raw hr = __nv_cvt_fp8_to_halfraw(((const uint8_t *)w)[i], __NV_E4M3);
        v = round_bf16(__half2float(*reinterpret_cast<__half *>(&hr)) * s[(row >> 7) * nbk + (k >> 7)]);
      } else {
        v = load_vec(w, dt, i);
      }
      acc = fmaf(v, x[(int64_t)t * K + k], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      float *yp = y + (int64_t)t * N + row;
      *yp = accumulate ? *yp + acc : acc;
    }
  }
}

template <int TT, int R, bool FP8, int MODE>
static void launch_tt(const GemvArgs &a, dim3 grid, cudaStream_t st) {
  launch_pdl(gemv_kernel<TT, R, FP8, MODE>, grid, dim3(256), 0, st, a);
}
template <int R, bool FP8, int MODE>
static void launch_r(const GemvArgs &a, int tt, dim3 grid, cudaStream_t st) {
  switch (tt) {
  case 1: launch_tt<1, R, FP8, MODE>(a, grid, st); break;
  case 2: launch_tt<2, R, FP8, MODE>(a, grid, st); break;
  case 4: launch_tt<4, R, FP8, MODE>(a, grid, st); break;
  default: launch_tt<8, R, FP8, MODE>(a, grid, st); break;
  }
}
/* PLAIN or GATEUP over a token-tiled grid; the caller has checked shapes and alignment. */
static int gemv_launch(dsv3_cuda_ctx *ctx, GemvArgs a, bool fp8, int mode, const char *op) {
  int tt = a.ntok <= 1 ? 1 : a.ntok <= 2 ? 2 : a.ntok <= 4 ? 4 : 8;
  int64_t yb = cdiv(a.ntok, tt);
  const bool h2 = fp8 && tt == 1 && dsv3_cuda_gemv_h2;
  int R, WK, rodiv = mode == GEMV_GATEUP ? 2 : 1;
  if (h2) gemv_h2_shape(a.N, a.K, yb, ctx->sms, rodiv, &R, &WK);
  else gemv_shape(a.N, a.K, fp8 ? 16 : 8, yb, ctx->sms, 4, mode == GEMV_GATEUP ? 2 : 1, rodiv, &R, &WK);
  cudaStream_t st = ctx->stream;
  a.wk = WK;
  dim3 grid((unsigned)cdiv(a.N, (int64_t)(8 / WK) * (R / rodiv)), (unsigned)yb);
  if (h2) {
    if (mode == GEMV_PLAIN) gemv_h2_launch<GEMV_PLAIN>(a, R, grid, st);
    else gemv_h2_launch<GEMV_GATEUP>(a, R, grid, st);
    CU_LAUNCHED(op);
    return 0;
  }
  if (mode == GEMV_PLAIN) {
    if (fp8) R == 4 ? launch_r<4, true, GEMV_PLAIN>(a, tt, grid, st) : launch_r<1, true, GEMV_PLAIN>(a, tt, grid, st);
    else R == 4 ? launch_r<4, false, GEMV_PLAIN>(a, tt, grid, st) : launch_r<1, false, GEMV_PLAIN>(a, tt, grid, st);
  } else {
    if (fp8) R == 4 ? launch_r<4, true, GEMV_GATEUP>(a, tt, grid, st) : launch_r<2, true, GEMV_GATEUP>(a, tt, grid, st);
    else R == 4 ? launch_r<4, false, GEMV_GATEUP>(a, tt, grid, st) : launch_r<2, false, GEMV_GATEUP>(a, tt, grid, st);
  }
  CU_LAUNCHED(op);
  return 0;
}

/* The tensor-core variant (gemv_tc_kernel): x converted to f16 into scratch (xrows rows of a.K),
 * then the GEMV over yb token tiles of 8 (MoE: pairs; pair_major: the expert-sorted grid). */
int dsv3_gemv_tc_run(dsv3_cuda_ctx *ctx, GemvArgs a, int mode, int64_t xrows, int64_t yb, bool pair_major, const char *op) {
  const size_t xb = ((size_t)(xrows * a.K) * 2 + 15) & ~(size_t)15;
  char *buf = (char *)dsv3_cuda_scratch(ctx, DSV3_SCR_XH, xb + (size_t)xrows * 4);
  if (!buf) return -1;
  __half *xh = (__half *)buf;
  float *xinv = (float *)(buf + xb);
  switch (mode) {
  case GEMV_PLAIN: gemv_tc_launch<GEMV_PLAIN>(a, xrows, xh, xinv, yb, pair_major, ctx->sms, ctx->stream); break;
  case GEMV_GATEUP: gemv_tc_launch<GEMV_GATEUP>(a, xrows, xh, xinv, yb, pair_major, ctx->sms, ctx->stream); break;
  case GEMV_MOE_GATEUP: gemv_tc_launch<GEMV_MOE_GATEUP>(a, xrows, xh, xinv, yb, pair_major, ctx->sms, ctx->stream); break;
  default: gemv_tc_launch<GEMV_MOE_DOWN>(a, xrows, xh, xinv, yb, pair_major, ctx->sms, ctx->stream); break;
  }
  CU_LAUNCHED(op);
  return 0;
}

/* shapes the tensor-core variant covers: FP8 with scales, K a multiple of 64, 16-byte aligned */
static bool tc_ok(const dsv3_wmat *w, const void *x) {
  return w->dtype == DSV3_F8_E4M3 && w->scale && w->cols % 64 == 0 && ((uintptr_t)w->data & 15) == 0 &&
         ((uintptr_t)x & 15) == 0;
}

static bool vec_ok(const dsv3_wmat *w, const void *x) {
  if (w->dtype != DSV3_F8_E4M3 && w->dtype != DSV3_BF16) return false;
  int epc = w->dtype == DSV3_F8_E4M3 ? 16 : 8;
  return w->cols % epc == 0 && ((uintptr_t)w->data & 15) == 0 && ((uintptr_t)x & 15) == 0;
}

extern "C" int dsv3_cuda_gemv(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                              int accumulate) {
  if (check_w("gemv", w)) return -1;
  if (ntok <= 0) return 0;
  CU_ARG("gemv", ntok < 65536 * 8, "too many tokens (%lld)", (long long)ntok);
  if (!vec_ok(w, x)) {
    gemv_scalar<<<(unsigned)cdiv(w->rows, 8), 256, 0, ctx->stream>>>(y, x, (int)ntok, w->data, w->scale, w->dtype,
                                                                      (int)w->rows, (int)w->cols, accumulate);
    CU_LAUNCHED("gemv");
    return 0;
  }
  GemvArgs a = {};
  a.y = y, a.x = x, a.w = (const uint8_t *)w->data, a.s = w->scale, a.ldx = w->cols, a.ldy = w->rows;
  a.N = (int)w->rows, a.K = (int)w->cols, a.ntok = (int)ntok, a.accumulate = accumulate;
  return gemv_launch(ctx, a, w->dtype == DSV3_F8_E4M3, GEMV_PLAIN, "gemv");
}

extern "C" int dsv3_cuda_gemv_tcore(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                                      int accumulate) {
  if (check_w("gemv tc", w)) return -1;
  if (ntok <= 0) return 0;
  if (!tc_ok(w, x)) return dsv3_cuda_gemv(ctx, y, x, ntok, w, accumulate);
  CU_ARG("gemv tc", ntok < 65536 * 8, "too many tokens (%lld)", (long long)ntok);
  GemvArgs a = {};
  a.y = y, a.x = x, a.w = (const uint8_t *)w->data, a.s = w->scale, a.ldx = w->cols, a.ldy = w->rows;
  a.N = (int)w->rows, a.K = (int)w->cols, a.ntok = (int)ntok, a.accumulate = accumulate;
  return dsv3_gemv_tc_run(ctx, a, GEMV_PLAIN, ntok, cdiv(ntok, 8), false, "gemv tc");
}

/* ---------------------------------------------------------------- GEMM (prefill) */
extern "C" int dsv3_cuda_gemm_bf16(dsv3_cuda_ctx *ctx, float *y, const uint16_t *xb, int64_t ntok, const uint16_t *wb,
                                   int64_t rows, int64_t cols, int accumulate) {
  if (ntok <= 0) return 0;
  CU_ARG("gemm", rows < (1ll << 31) && cols < (1ll << 31) && ntok < (1ll << 31), "shape too large");
  float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  /* column-major view: y^T [rows, ntok] = W [rows, cols] (row-major = col-major^T) * x^T */
  cublasStatus_t s = cublasGemmEx((cublasHandle_t)ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)ntok, (int)cols,
                                  &alpha, wb, CUDA_R_16BF, (int)cols, xb, CUDA_R_16BF, (int)cols, &beta, y, CUDA_R_32F,
                                  (int)rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  CU_ARG("gemm", s == CUBLAS_STATUS_SUCCESS, "cublasGemmEx %lld x %lld x %lld failed (status %d)", (long long)rows,
         (long long)ntok, (long long)cols, (int)s);
  return 0;
}

struct dsv3_wcache_ent {
  const void *data;
  const float *scale;
  int64_t rows, cols;
  uint16_t *bf;
};
extern "C" void dsv3_cuda_weight_cache(dsv3_cuda_ctx *c, size_t budget) {
  if (!budget) {
    for (int i = 0; i < c->wc_n; i++) cudaFree(c->wc[i].bf);
    free(c->wc);
    c->wc = NULL, c->wc_n = c->wc_cap = 0, c->wc_used = 0;
  }
  c->wc_budget = budget;
}
extern "C" size_t dsv3_cuda_weight_cache_used(const dsv3_cuda_ctx *c) { return c->wc_used; }
/* w's BF16 copy from the cache, made now if it fits; NULL: dequantise into scratch */
static const uint16_t *wcache_get(dsv3_cuda_ctx *c, const dsv3_wmat *w) {
  for (int i = 0; i < c->wc_n; i++) {
    const dsv3_wcache_ent &e = c->wc[i];
    if (e.data == w->data && e.scale == w->scale && e.rows == w->rows && e.cols == w->cols) return e.bf;
  }
  const size_t bytes = (size_t)(w->rows * w->cols) * 2;
  if (c->wc_used + bytes > c->wc_budget) return NULL;
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(c->stream, &cs);
  if (cs != cudaStreamCaptureStatusNone) return NULL;
  if (c->wc_n == c->wc_cap) {
    const int cap = c->wc_cap ? 2 * c->wc_cap : 64;
    dsv3_wcache_ent *n = (dsv3_wcache_ent *)realloc(c->wc, (size_t)cap * sizeof *n);
    if (!n) return NULL;
    c->wc = n, c->wc_cap = cap;
  }
  uint16_t *bf = NULL;
  if (cudaMalloc(&bf, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    c->wc_budget = c->wc_used; /* no more tries */
    return NULL;
  }
  if (dsv3_cuda_dequant(bf, w, c->stream)) {
    cudaFree(bf);
    return NULL;
  }
  c->wc[c->wc_n++] = dsv3_wcache_ent{w->data, w->scale, w->rows, w->cols, bf};
  c->wc_used += bytes;
  return bf;
}

/* xb: NULL, or x already in bf16 */
static int gemm_xb(dsv3_cuda_ctx *ctx, float *y, const float *x, const uint16_t *xb, int64_t ntok, const dsv3_wmat *w,
                   int accumulate) {
  if (check_w("gemm", w)) return -1;
  if (ntok <= 0) return 0;
  const uint16_t *wb = (const uint16_t *)w->data;
  if (w->dtype != DSV3_BF16 && !(wb = wcache_get(ctx, w))) {
    uint16_t *s = (uint16_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_GEMM_W, (size_t)(w->rows * w->cols) * 2);
    if (!s || dsv3_cuda_dequant(s, w, ctx->stream)) return -1;
    wb = s;
  }
  if (!xb) {
    uint16_t *s = (uint16_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_GEMM_X, (size_t)(ntok * w->cols) * 2);
    if (!s || dsv3_cuda_f32_to_bf16(s, x, ntok * w->cols, ctx->stream)) return -1;
    xb = s;
  }
  return dsv3_cuda_gemm_bf16(ctx, y, xb, ntok, wb, w->rows, w->cols, accumulate);
}
extern "C" int dsv3_cuda_gemm(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                              int accumulate) {
  return gemm_xb(ctx, y, x, NULL, ntok, w, accumulate);
}

extern "C" int dsv3_cuda_linear(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                                int accumulate) {
  return dsv3_cuda_linear_xb(ctx, y, x, NULL, ntok, w, accumulate);
}
/* the kernel linear_xb takes (x's alignment decides the tensor-core GEMV; NULL counts as aligned) */
enum { LIN_TC, LIN_GEMV, LIN_MMA, LIN_FP8, LIN_GEMM };
static int linear_path(const dsv3_cuda_ctx *ctx, int64_t ntok, const dsv3_wmat *w, const float *x) {
  if (dsv3_cuda_tc_tokens(ntok, 8) && tc_ok(w, x)) return LIN_TC;
  if (ntok <= dsv3_cuda_gemv_max_tokens) return LIN_GEMV;
  /* the mma tiles are 16 rows: narrow matrices would leave SMs idle, the GEMV does better */
  if (ntok <= dsv3_cuda_mma_max_tokens && cdiv(w->rows, 16) >= ctx->sms) return LIN_MMA;
  /* and up to 8 tokens (one GEMV token tile) the GEMV rather than dequantise + cuBLAS, also with
   * the mma path off (DSV3_CUDA_MMA=0) */
  if (ntok <= dsv3_cuda_mma_max_tokens || ntok <= 8) return LIN_GEMV;
  /* dequantise + BF16 (the official gemm_impl = "bf16"), or with dsv3_cuda_fp8_gemm the
   * official fp8_gemm (activations quantised per token and 128 columns) where cuBLASLt's block
   * scaling covers the shape */
  return dsv3_cuda_fp8_gemm ? LIN_FP8 : LIN_GEMM;
}
extern "C" int dsv3_cuda_linear_xb_only(const dsv3_cuda_ctx *ctx, int64_t ntok, const dsv3_wmat *w) {
  return linear_path(ctx, ntok, w, NULL) == LIN_GEMM;
}
extern "C" int dsv3_cuda_linear_xb(dsv3_cuda_ctx *ctx, float *y, const float *x, const uint16_t *xb, int64_t ntok,
                                   const dsv3_wmat *w, int accumulate) {
  switch (linear_path(ctx, ntok, w, x)) {
  case LIN_TC: return dsv3_cuda_gemv_tcore(ctx, y, x, ntok, w, accumulate);
  case LIN_GEMV: return dsv3_cuda_gemv(ctx, y, x, ntok, w, accumulate);
  case LIN_MMA: return dsv3_cuda_gemv_mma(ctx, y, x, ntok, w, accumulate);
  case LIN_FP8: return dsv3_cuda_gemm_fp8(ctx, y, x, ntok, w, accumulate);
  default: return gemm_xb(ctx, y, x, xb, ntok, w, accumulate);
  }
}

/* ---------------------------------------------------------------- dense MLP */
extern "C" int dsv3_cuda_mlp(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w1,
                             const dsv3_wmat *w2, const dsv3_wmat *w3, int accumulate) {
  return dsv3_cuda_mlp_xb(ctx, y, x, NULL, ntok, w1, w2, w3, accumulate);
}
extern "C" int dsv3_cuda_mlp_xb(dsv3_cuda_ctx *ctx, float *y, const float *x, const uint16_t *xb, int64_t ntok,
                                const dsv3_wmat *w1, const dsv3_wmat *w2, const dsv3_wmat *w3, int accumulate) {
  if (check_w("mlp", w1) || check_w("mlp", w2) || check_w("mlp", w3)) return -1;
  if (ntok <= 0) return 0;
  int64_t I = w1->rows, D = w1->cols;
  CU_ARG("mlp", w3->rows == I && w3->cols == D && w2->rows == D && w2->cols == I && w1->dtype == w3->dtype,
         "inconsistent shapes: w1 %lldx%lld w2 %lldx%lld w3 %lldx%lld", (long long)I, (long long)D, (long long)w2->rows,
         (long long)w2->cols, (long long)w3->rows, (long long)w3->cols);
  float *h = (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_MLP, (size_t)(2 * ntok * I) * sizeof(float));
  if (!h) return -1;
  const bool tc = dsv3_cuda_tc_tokens(ntok, 8) && tc_ok(w1, x) && tc_ok(w3, x);
  if (tc || (ntok <= dsv3_cuda_gemv_max_tokens && vec_ok(w1, x) && vec_ok(w3, x) && ((uintptr_t)w3->data & 15) == 0)) {
    GemvArgs a = {};
    a.y = h, a.x = x, a.w = (const uint8_t *)w1->data, a.w3 = (const uint8_t *)w3->data, a.s = w1->scale,
    a.s3 = w3->scale;
    a.ldx = D, a.ldy = I, a.N = (int)I, a.K = (int)D, a.ntok = (int)ntok;
    if (tc ? dsv3_gemv_tc_run(ctx, a, GEMV_GATEUP, ntok, cdiv(ntok, 8), false, "mlp gate/up")
           : gemv_launch(ctx, a, w1->dtype == DSV3_F8_E4M3, GEMV_GATEUP, "mlp gate/up"))
      return -1;
  } else {
    float *u = h + ntok * I;
    if (dsv3_cuda_linear_xb(ctx, h, x, xb, ntok, w1, 0) || dsv3_cuda_linear_xb(ctx, u, x, xb, ntok, w3, 0)) return -1;
    /* the hidden rows in bf16 as well, for W2's BF16 GEMM (in the GEMM's own conversion slot,
     * taken after W1 and W3 are done with it: a larger request may move it) */
    uint16_t *hb = (uint16_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_GEMM_X, (size_t)(ntok * I) * 2);
    /* (the float32 rows only where W2's kernel reads them) */
    if (!hb || dsv3_cuda_silu_mul_bf16(dsv3_cuda_linear_xb_only(ctx, ntok, w2) ? NULL : h, hb, h, u, ntok * I, ctx->stream))
      return -1;
    return dsv3_cuda_linear_xb(ctx, y, h, hb, ntok, w2, accumulate);
  }
  return dsv3_cuda_linear(ctx, y, h, ntok, w2, accumulate);
}
