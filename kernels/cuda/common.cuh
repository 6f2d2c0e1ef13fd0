/* common.cuh - helpers shared by the CUDA sources of kernels/cuda (not part of the C API). */
#ifndef DSV3_CUDA_COMMON_CUH
#define DSV3_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "dsv3_cuda.h"
#include "util.h"

/* Report a launch or API error as one line and return -1 from the calling function. */
#define CU_TRY(op, call)                                                                 \
  do {                                                                                   \
    cudaError_t e_ = (call);                                                             \
    if (e_ != cudaSuccess) {                                                             \
      dsv3_error_set("cuda: %s: %s", op, cudaGetErrorString(e_));                        \
      return -1;                                                                         \
    }                                                                                    \
  } while (0)
#define CU_LAUNCHED(op) CU_TRY(op, cudaGetLastError())
#define CU_ARG(op, cond, ...)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      dsv3_error_set("cuda: " op ": " __VA_ARGS__);                                      \
      return -1;                                                                         \
    }                                                                                    \
  } while (0)

/* The same with the op name in a variable. */
#define CU_ARGV(op, cond, fmt, ...)                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      dsv3_error_set("cuda: %s: " fmt, op, ##__VA_ARGS__);                               \
      return -1;                                                                         \
    }                                                                                    \
  } while (0)

/* Scratch slots of a context: every op that needs temporaries owns one, so nested calls
 * (mlp -> linear -> gemm) never share memory. */
enum {
  DSV3_SCR_GEMM_W,
  DSV3_SCR_GEMM_X,
  DSV3_SCR_MLP,
  DSV3_SCR_MOE,
  DSV3_SCR_MOE2,
  DSV3_SCR_MLA,
  DSV3_SCR_MLA_PREFILL, /* its own slot: decode graphs hold DSV3_SCR_MLA, prefill growth must not move it */
  DSV3_SCR_XH,          /* the tensor-core GEMV's f16 copy of x (used and done within one GEMV) */
  DSV3_SCR_N
};
struct dsv3_fp8_state; /* fp8gemm.cu: the cuBLASLt handle and plans, made on first use */
void dsv3_fp8_state_free(struct dsv3_fp8_state *s);
struct dsv3_cuda_ctx {
  cudaStream_t stream;
  void *cublas;    /* cublasHandle_t */
  void *workspace; /* cuBLAS and cuBLASLt workspace (one stream: never used by both at once) */
  struct dsv3_fp8_state *fp8;
  size_t workspace_bytes;
  void *scr[DSV3_SCR_N];
  size_t scr_bytes[DSV3_SCR_N];
  uint64_t scr_moves; /* scratch reallocations so far (dsv3_cuda_ctx_scratch_moves) */
  int sms;
  int sm90; /* compute capability 9.x: the sm_90a SASS (wgmma) runs */
  struct dsv3_tmap_set *tmaps; /* the MoE experts' TMA tensor maps, one set an expert table (moe.cu) */
  struct dsv3_wcache_ent *wc;  /* BF16 copies of FP8 weights for the GEMMs (dsv3_cuda_weight_cache) */
  int wc_n, wc_cap;
  size_t wc_budget, wc_used;
};
void dsv3_moe_tmaps_free(struct dsv3_tmap_set *s);
/* A 2-D TMA tensor map (a CUtensorMap, 128 bytes, 64-byte aligned, at map) of rows x cols
 * elements of esize bytes (1: uint8, 2: bf16) at base, rows row_bytes apart, with a box of
 * box_cols x box_rows and the 128-byte swizzle (box_cols * esize == 128); elements past the
 * matrix read as zero.  0, or -1 where the driver has no cuTensorMapEncodeTiled or refuses the
 * shape (the caller falls back to its cp.async path). */
int dsv3_tmap_2d(void *map, int esize, const void *base, uint64_t cols, uint64_t rows, uint64_t row_bytes,
                 uint32_t box_cols, uint32_t box_rows);
/* Scratch slot `slot` of at least `bytes` bytes (NULL after dsv3_error_set on failure). */
void *dsv3_cuda_scratch(dsv3_cuda_ctx *ctx, int slot, size_t bytes);

/* Programmatic dependent launch (sm_90).  The decode-path kernels (GEMVs, norms, RoPE, MLA,
 * routing, MoE, sampling) are launched with launch_pdl: a kernel's blocks may be scheduled
 * while the kernel before it on the stream still runs; they wait (pdl_wait, before touching
 * any memory) for that kernel to finish and its writes to be visible, then let the next
 * launch begin (pdl_trigger).  Launch and block start-up overlap the previous kernel's tail
 * (H200, batch-1 decode of the 671B-width slice: 1.65 -> 1.61-1.63 ms a step).  Kernels
 * launched normally (cuBLAS, NCCL, the skinny GEMM) serialise as usual.  Prefetching a GEMV's
 * weight rows into L2 before its wait was tried and lost (16 KB a block: no change; 64 KB:
 * +0.06 ms; whole rows: +0.15 ms).  DSV3_CUDA_PDL=0 launches everything normally. */
extern int dsv3_cuda_pdl;
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
template <typename... P, typename... A>
static inline cudaError_t launch_pdl(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args) {
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
  cfg.attrs = at, cfg.numAttrs = dsv3_cuda_pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, k, args...);
}

static __host__ __device__ inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
/* blocks of 256 threads for a grid-stride loop over n items (1 to 65536) */
static inline unsigned grid_for(int64_t n) { return (unsigned)(cdiv(n, 256) < 65536 ? (cdiv(n, 256) > 0 ? cdiv(n, 256) : 1) : 65536); }

/* bf16 bits <-> float without the intrinsics' type wrappers */
__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float bf16f(uint16_t v) { return __uint_as_float((uint32_t)v << 16); }
__device__ __forceinline__ uint16_t f2bf16(float f) {
  __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<uint16_t *>(&b);
}
__device__ __forceinline__ float round_bf16(float f) { return bf16f(f2bf16(f)); }
/* two floats as a bf16 pair, lo in the low half (round to nearest) */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&b);
}

/* 8 bf16 values -> float */
__device__ __forceinline__ void deq8(const uint4 v, float *w) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    w[2 * i] = bf16_lo(u[i]);
    w[2 * i + 1] = bf16_hi(u[i]);
  }
}

/* A vector (norm weight) element of dtype dt as float. */
__device__ __forceinline__ float load_vec(const void *p, dsv3_dtype dt, int64_t i) {
  if (dt == DSV3_BF16) return bf16f(((const uint16_t *)p)[i]);
  if (dt == DSV3_F16) return __half2float(((const __half *)p)[i]);
  return ((const float *)p)[i];
}

/* c += a (16x16, row) * b (16x8, col), bf16 in, f32 accumulate */
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* four 8x8 bf16 matrices from shared memory (lane i gives the address of row i % 8 of matrix
 * i / 8); _t: transposed */
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"((unsigned)__cvta_generic_to_shared(p)));
}
/* 16 bytes global -> shared, asynchronously; bytes < 16 zero-fills the rest */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src),
               "r"(bytes));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
/* Block-wide sum (blockDim.x a multiple of 32, <= 1024); every thread gets the result. */
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float sh[32];
  v = warp_sum(v);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (l == 0) sh[w] = v;
  __syncthreads();
  v = l < nw ? sh[l] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float sh[32];
  v = warp_max(v);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (l == 0) sh[w] = v;
  __syncthreads();
  v = l < nw ? sh[l] : -INFINITY;
  return warp_max(v);
}

#endif
