/* wgmma.cuh - sm_90a warpgroup MMA helpers shared by the kernels that use it (moe.cu: the
 * grouped expert GEMM; mla.cu: the prefill attention).  Not part of the C API. */
#ifndef DSV3_CUDA_WGMMA_CUH
#define DSV3_CUDA_WGMMA_CUH

#include <stdint.h>

/* The descriptor of a K-major operand in shared memory with the 128-byte swizzle: rows of 64
 * 16-bit values (128 bytes; 16-byte chunk c of row r stored at chunk c ^ (r & 7)), 8-row groups
 * 1024 bytes apart, the operand 1024-byte aligned.  The next k16 step along the row is 32 bytes
 * on (+ 2 to the descriptor). */
static __device__ __forceinline__ uint64_t wg_desc(const void *smem) {
  const uint64_t a = (uint64_t)__cvta_generic_to_shared(smem);
  /* start >> 4, leading offset 1 (unused by swizzled K-major), stride 1024 B between 8-row
   * groups, 128-byte swizzle */
  return ((a & 0x3ffff) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}
/* wgmma exists in the sm_90a SASS only; the compute_90 PTX gets empty bodies (and a trap) */
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ASM(...) asm volatile(__VA_ARGS__)
#else
#define WG_ASM(...) (void)0
#endif
static __device__ __forceinline__ void wg_fence() { WG_ASM("wgmma.fence.sync.aligned;" ::: "memory"); }
static __device__ __forceinline__ void wg_commit() { WG_ASM("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void wg_wait() {
  WG_ASM("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/* keeps the compiler from moving or reusing registers an asynchronous wgmma reads or writes */
template <int R>
static __device__ __forceinline__ void wg_hold(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
static __device__ __forceinline__ void wg_hold(uint32_t (&a)[4]) {
  asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3])::"memory");
}

/* mbarriers and TMA (cp.async.bulk.tensor) for a CTA's own shared memory */
static __device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
static __device__ __forceinline__ void mbar_init(uint64_t *b, int count) {
  WG_ASM("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
/* the inits visible to the async proxy (TMA) before any use */
static __device__ __forceinline__ void mbar_init_fence() { WG_ASM("fence.mbarrier_init.release.cluster;" ::: "memory"); }
static __device__ __forceinline__ void mbar_expect_tx(uint64_t *b, int bytes) {
  WG_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void mbar_wait(uint64_t *b, int parity) {
  WG_ASM("{\n.reg .pred p;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra WAIT;\n}" ::"r"(smem_u32(b)),
         "r"(parity)
         : "memory");
}
static __device__ __forceinline__ void mbar_arrive(uint64_t *b) {
  WG_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory");
}
/* named barrier id of n threads: wait for all n (bar.sync), or count this warp in and go on
 * (bar.arrive) */
static __device__ __forceinline__ void named_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}
static __device__ __forceinline__ void named_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory");
}
/* the box of a 2-D tensor map (a CUtensorMap in global memory) at (c0 innermost, c1) into dst,
 * completing on b (its bytes announced by mbar_expect_tx) */
static __device__ __forceinline__ void tma_load_2d(void *dst, const void *tmap, int c0, int c1, uint64_t *b) {
  WG_ASM("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
             smem_u32(dst)),
         "l"(tmap), "r"(c0), "r"(c1), "r"(smem_u32(b))
         : "memory");
}

/* d (+)= A (64 x 16, registers) * B (16 x 8NT, shared memory, K-major, descriptor), f32
 * accumulators, f16 (BF = false) or bf16 (BF = true) operands; acc = 0: d = A * B.  Warp w of
 * the warpgroup holds rows 16 w + g and 16 w + g + 8 (g = lane / 4, q = lane % 4): a = those rows
 * at k = 2q, 2q + 1, then at k + 8 (the mma.sync m16n8k16 A layout); d[4 j + c] = row g (+ 8 for
 * c >= 2), column 8 j + 2q + (c & 1). */
template <int NT, bool BF = false> struct Wg;
/* one specialisation per N = 8 NT and type: the accumulators' operand list in groups of 4, the
 * asm text (its %-numbered operands written out: d's 4 NT, then a's 4, b and acc) given per N */
#define WG_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_D8(i) WG_D4(i), WG_D4(i + 4)
#define WG_D16(i) WG_D8(i), WG_D8(i + 8)
#define WG_TEXT_1(T) \
  "{.reg .pred p; setp.ne.b32 p, %9, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n8k16.f32." T "." T " {%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, " \
  "p, 1, 1, 0;}"
#define WG_DLIST_1 WG_D4(0)
#define WG_TEXT_2(T) \
  "{.reg .pred p; setp.ne.b32 p, %13, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n16k16.f32." T "." T " {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, " \
  "%9, %10, %11}, %12, p, 1, 1, 0;}"
#define WG_DLIST_2 WG_D8(0)
#define WG_TEXT_4(T) \
  "{.reg .pred p; setp.ne.b32 p, %21, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n32k16.f32." T "." T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " \
  "%10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;}"
#define WG_DLIST_4 WG_D16(0)
#define WG_TEXT_8(T) \
  "{.reg .pred p; setp.ne.b32 p, %37, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." T "." T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " \
  "%10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, " \
  "%28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;}"
#define WG_DLIST_8 WG_D16(0), WG_D16(16)
#define WG_TEXT_12(T) \
  "{.reg .pred p; setp.ne.b32 p, %53, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n96k16.f32." T "." T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " \
  "%10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, " \
  "%29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, " \
  "{%48, %49, %50, %51}, %52, p, 1, 1, 0;}"
#define WG_DLIST_12 WG_D16(0), WG_D16(16), WG_D16(32)
#define WG_TEXT_16(T) \
  "{.reg .pred p; setp.ne.b32 p, %69, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." T "." T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " \
  "%10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, " \
  "%29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, " \
  "%66, %67}, %68, p, 1, 1, 0;}"
#define WG_DLIST_16 WG_D16(0), WG_D16(16), WG_D16(32), WG_D16(48)
#define WG_MMA(NT, BF, T)                                                                                           \
  template <> struct Wg<NT, BF> {                                                                                 \
    static __device__ __forceinline__ void mma(float (&d)[4 * NT], const uint32_t (&a)[4], uint64_t b, int acc) { \
      WG_ASM(WG_TEXT_##NT(T) : WG_DLIST_##NT : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));     \
    }                                                                                                             \
  };
WG_MMA(1, false, "f16")
WG_MMA(1, true, "bf16")
WG_MMA(2, false, "f16")
WG_MMA(2, true, "bf16")
WG_MMA(4, false, "f16")
WG_MMA(4, true, "bf16")
WG_MMA(8, false, "f16")
WG_MMA(8, true, "bf16")
WG_MMA(12, false, "f16")
WG_MMA(12, true, "bf16")
WG_MMA(16, false, "f16")
WG_MMA(16, true, "bf16")
#undef WG_MMA
#undef WG_TEXT_1
#undef WG_DLIST_1
#undef WG_TEXT_2
#undef WG_DLIST_2
#undef WG_TEXT_4
#undef WG_DLIST_4
#undef WG_TEXT_8
#undef WG_DLIST_8
#undef WG_TEXT_12
#undef WG_DLIST_12
#undef WG_TEXT_16
#undef WG_DLIST_16
#undef WG_D16
#undef WG_D8
#undef WG_D4

#endif
