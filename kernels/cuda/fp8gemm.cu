/* fp8gemm.cu - prefill linear layers on the FP8 tensor cores: the official fp8_gemm semantics
 * (inference/kernel.py: act_quant then fp8_gemm) through cuBLASLt's block scaling (sm_90,
 * cuBLAS 12.9+).
 *
 * act_quant: per token and 128 columns, s = max(amax, 1e-4) / 448 and q = e4m3(x / s) (IEEE
 * division, round to nearest even; |x / s| <= 448 by construction).  The GEMM then multiplies
 * the e4m3 codes of x and W on the tensor cores and applies s and the weight's block scale per
 * 128-wide K block, accumulating in float32: y[t, n] = sum_kb s_x[t, kb] s_w[n / 128, kb]
 * sum_{k in kb} q_x[t, k] q_w[n, k].  cuBLASLt takes the activations' scales 128-column-block
 * major with the tokens contiguous (VEC128_32F, [K / 128][T]) and the weights' as stored in the
 * checkpoint ([ceil(N / 128)][K / 128], BLK128x128_32F); y [T, N] float32 is the column-major
 * D = W x^T of cuBLAS (A = W transposed, B = x), so no transpose is needed.
 *
 * Covered shapes (dsv3_cuda_gemm_fp8_ok): FP8 weights with K % 512 == 0 (the weights' scale
 * rows, K / 128 floats, must be 16-byte aligned), N % 16 == 0, 16-byte aligned data, ntok >= 1
 * (padded to a multiple of 4 below).  Anything else, or a cuBLASLt without a kernel for it,
 * takes the dequantise + BF16 path.  dsv3_cuda_linear calls it only with dsv3_cuda_fp8_gemm
 * set (DSV3_CUDA_FP8_GEMM=1): e4m3 activations are further from the reference's float32 ones
 * than the default path's bf16 (dsv3_cuda.h). */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

int dsv3_cuda_fp8_gemm = 0;

/* one warp per (token, 128-column block): 4 values a lane */
__global__ void act_quant_kernel(uint8_t *q, float *s, const float *x, int64_t ntok, int K, int64_t lds) {
  const int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31, nkb = K >> 7;
  if (wid >= ntok * nkb) return;
  const int64_t t = wid / nkb;
  const int kb = (int)(wid % nkb);
  const float4 v = *reinterpret_cast<const float4 *>(x + t * K + kb * 128 + lane * 4);
  float m = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  m = warp_max(m);
  const float sc = __fdiv_rn(fmaxf(m, 1e-4f), 448.f);
  const float f[4] = {v.x, v.y, v.z, v.w};
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; i++)
    packed |= (uint32_t)__nv_cvt_float_to_fp8(__fdiv_rn(f[i], sc), __NV_SATFINITE, __NV_E4M3) << (8 * i);
  *reinterpret_cast<uint32_t *>(q + t * K + kb * 128 + lane * 4) = packed;
  if (lane == 0) s[(int64_t)kb * lds + t] = sc;
}

extern "C" int dsv3_cuda_act_quant(uint8_t *q, float *s, const float *x, int64_t ntok, int64_t K, int64_t lds,
                                   cudaStream_t st) {
  CU_ARG("act quant", K > 0 && K % 128 == 0 && K < (1ll << 31) && ntok >= 0 && lds >= ntok,
         "K must be a positive multiple of 128 (%lld), lds >= ntok", (long long)K);
  CU_ARG("act quant", ((uintptr_t)x & 15) == 0 && ((uintptr_t)q & 3) == 0, "x must be 16-byte aligned");
  if (ntok == 0) return 0;
  const int64_t warps = ntok * (K / 128);
  CU_ARG("act quant", warps < (1ll << 40), "too many values");
  act_quant_kernel<<<(unsigned)cdiv(warps, 8), 256, 0, st>>>(q, s, x, ntok, (int)K, lds);
  CU_LAUNCHED("act quant");
  return 0;
}

/* ---------------------------------------------------------------- cuBLASLt plans */
/* One plan per (N, K, ntok, accumulate): descriptors and the heuristic's algorithm, kept for
 * the context's life (a prefill runs the same few shapes in every layer). */
struct Fp8Plan {
  int64_t N, K, T;
  int acc, ok;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
};
struct dsv3_fp8_state {
  cublasLtHandle_t lt;
  Fp8Plan plan[32];
  int nplan, next;
};

static void plan_free(Fp8Plan *p) {
  if (p->op) cublasLtMatmulDescDestroy(p->op);
  if (p->a) cublasLtMatrixLayoutDestroy(p->a);
  if (p->b) cublasLtMatrixLayoutDestroy(p->b);
  if (p->c) cublasLtMatrixLayoutDestroy(p->c);
  memset(p, 0, sizeof *p);
}

void dsv3_fp8_state_free(dsv3_fp8_state *s) {
  if (!s) return;
  for (int i = 0; i < s->nplan; i++) plan_free(&s->plan[i]);
  if (s->lt) cublasLtDestroy(s->lt);
  free(s);
}

/* builds p for its (N, K, T, acc); p->ok = 0 when cuBLASLt has no kernel for it */
static int plan_make(dsv3_cuda_ctx *ctx, Fp8Plan *p) {
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const cublasLtMatmulMatrixScale_t ma = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                                    mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  cublasStatus_t s = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb);
  /* A = W stored [N][K] (column-major K x N, transposed), B = x [T][K] (column-major K x T),
   * C = D = y [T][N] (column-major N x T) */
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, (uint64_t)p->K, (uint64_t)p->N, p->K);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, (uint64_t)p->K, (uint64_t)p->T, p->K);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)p->N, (uint64_t)p->T, p->N);
  if (s != CUBLAS_STATUS_SUCCESS) {
    dsv3_error_set("cuda: fp8 gemm: cuBLASLt descriptors (status %d)", (int)s);
    return -1;
  }
  cublasLtMatmulPreference_t pref = NULL;
  size_t ws = ctx->workspace_bytes;
  cublasLtMatmulHeuristicResult_t res;
  memset(&res, 0, sizeof res);
  int n = 0;
  /* the heuristic reads the scale pointers' presence, not their values: any non-null address */
  const void *dummy = ctx->workspace;
  cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy);
  cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy);
  if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) ==
          CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulAlgoGetHeuristic(ctx->fp8->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &n) ==
          CUBLAS_STATUS_SUCCESS &&
      n > 0) {
    p->algo = res.algo;
    p->ok = 1;
  }
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  return 0;
}

static Fp8Plan *plan_get(dsv3_cuda_ctx *ctx, int64_t N, int64_t K, int64_t T, int acc) {
  if (!ctx->fp8) {
    dsv3_fp8_state *s = (dsv3_fp8_state *)calloc(1, sizeof *s);
    if (!s) {
      dsv3_error_set("cuda: fp8 gemm: out of host memory");
      return NULL;
    }
    if (cublasLtCreate(&s->lt) != CUBLAS_STATUS_SUCCESS) {
      free(s);
      dsv3_error_set("cuda: fp8 gemm: cublasLtCreate failed");
      return NULL;
    }
    ctx->fp8 = s;
  }
  dsv3_fp8_state *s = ctx->fp8;
  for (int i = 0; i < s->nplan; i++) {
    Fp8Plan *p = &s->plan[i];
    if (p->N == N && p->K == K && p->T == T && p->acc == acc) return p;
  }
  Fp8Plan *p;
  if (s->nplan < 32) {
    p = &s->plan[s->nplan++];
  } else { /* round robin: a prefill's shapes are few, the chunk sizes vary at most at the end */
    p = &s->plan[s->next];
    s->next = (s->next + 1) % 32;
    plan_free(p);
  }
  p->N = N, p->K = K, p->T = T, p->acc = acc;
  if (plan_make(ctx, p)) {
    plan_free(p);
    return NULL;
  }
  return p;
}

extern "C" int dsv3_cuda_gemm_fp8_ok(const dsv3_wmat *w, const void *x, int64_t ntok) {
  return w && w->dtype == DSV3_F8_E4M3 && w->scale && w->cols % 512 == 0 && w->rows % 16 == 0 && w->rows > 0 &&
         w->rows < (1ll << 31) && w->cols < (1ll << 31) && ntok > 0 && ntok < (1ll << 31) &&
         ((uintptr_t)w->data & 15) == 0 && ((uintptr_t)w->scale & 15) == 0 && ((uintptr_t)x & 15) == 0;
}

extern "C" int dsv3_cuda_gemm_fp8(dsv3_cuda_ctx *ctx, float *y, const float *x, int64_t ntok, const dsv3_wmat *w,
                                  int accumulate) {
  if (ntok <= 0) return 0;
  if (!dsv3_cuda_gemm_fp8_ok(w, x, ntok)) return dsv3_cuda_gemm(ctx, y, x, ntok, w, accumulate);
  const int64_t N = w->rows, K = w->cols;
  /* the activation scales' rows ([K / 128][T4]) 16-byte aligned: with T not a multiple of 4,
   * cuBLASLt's kernels misread them (measured on an H200: odd T gave errors of 2% of a row's
   * |terms|, T % 4 == 0 4e-5), so T pads to T4 with zero rows and D goes to scratch */
  const int64_t T4 = (ntok + 3) & ~(int64_t)3;
  const bool pad = T4 != ntok;
  Fp8Plan *p = plan_get(ctx, N, K, T4, accumulate && !pad ? 1 : 0);
  if (!p) return -1;
  if (!p->ok) return dsv3_cuda_gemm(ctx, y, x, ntok, w, accumulate);
  /* scratch: q [T4][K] e4m3, then the scales [K / 128][T4]; padded: D [T4][N] in the slot the
   * BF16 path keeps its weights in */
  const size_t qb = ((size_t)(T4 * K) + 255) & ~(size_t)255, sb = (size_t)(K / 128 * T4) * 4;
  uint8_t *q = (uint8_t *)dsv3_cuda_scratch(ctx, DSV3_SCR_GEMM_X, qb + sb);
  float *d = pad ? (float *)dsv3_cuda_scratch(ctx, DSV3_SCR_GEMM_W, (size_t)(T4 * N) * 4) : y;
  if (!q || !d) return -1;
  float *sx = (float *)(q + qb);
  if (pad) {
    CU_TRY("fp8 gemm", cudaMemsetAsync(q + ntok * K, 0, (size_t)((T4 - ntok) * K), ctx->stream));
    CU_TRY("fp8 gemm", cudaMemsetAsync(sx, 0, sb, ctx->stream));
  }
  if (dsv3_cuda_act_quant(q, sx, x, ntok, K, T4, ctx->stream)) return -1;
  const void *sa = w->scale, *sbp = sx;
  cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
  cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sbp, sizeof sbp);
  const float alpha = 1.f, beta = p->acc ? 1.f : 0.f;
  cublasStatus_t s = cublasLtMatmul(ctx->fp8->lt, p->op, &alpha, w->data, p->a, q, p->b, &beta, d, p->c, d, p->c,
                                    &p->algo, ctx->workspace, ctx->workspace_bytes, ctx->stream);
  CU_ARG("fp8 gemm", s == CUBLAS_STATUS_SUCCESS, "cublasLtMatmul %lld x %lld x %lld failed (status %d)", (long long)N,
         (long long)ntok, (long long)K, (int)s);
  if (pad) {
    if (accumulate) return dsv3_cuda_add(y, d, ntok * N, ctx->stream);
    CU_TRY("fp8 gemm", cudaMemcpyAsync(y, d, (size_t)(ntok * N) * 4, cudaMemcpyDeviceToDevice, ctx->stream));
  }
  return 0;
}
