/* cuda_bench - kernels/cuda at DeepSeek-V3 671B widths, each figure next to its floor measured
 * in the same program: a device-to-device copy (bytes read + written per second) for
 * memory-bound kernels, a cuBLAS BF16 GEMM (8192^3) for matrix-bound ones.
 *
 *   cuda_bench [--quick] [--filter SUBSTRING]
 *
 * The "read" rows (cuda_read.cu) are a second floor for the decode GEMVs: a kernel that only
 * streams the same number of bytes, one launch of each size, so launch, ramp-up and drain are
 * in it too (14.7 MB, an expert's gate, cannot take its copy-bandwidth time of 3.4 us: 5.3 us on
 * an H200).  "--filter pattern" and "--filter ringcopy" add the experiments behind the GEMV's
 * design: the weights' access pattern alone, and a cp.async ring's copies alone.
 *
 * Timing: warm-up, then 7 trials of N back-to-back calls between CUDA events; the median
 * trial / N is reported.  Weights are rotated among copies totalling >= 4x the L2 size, so
 * memory-bound figures come from HBM, not the cache.  Inputs are random, never zeros. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv3_cuda.h"
#include "util.h"

#define CU(call)                                                                               \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      fprintf(stderr, "cuda_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)
#define OK(call)                                                                               \
  do {                                                                                         \
    if ((call) != 0) {                                                                         \
      fprintf(stderr, "cuda_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, dsv3_error()); \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static dsv3_cuda_ctx *ctx;
static cudaStream_t st;
static double copy_bw, gemm_peak; /* bytes/s (read + write), FLOP/s */
static size_t l2_bytes;
static int quick;
static const char *filter;

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next64(void) {
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* random device bytes: generated on the host in one 64 MB block, replicated */
static void *dev_random(size_t n, int kind /* 0 bytes (e4m3, no NaN), 1 f32 N(0,1)-ish, 2 bf16, 3 scales */) {
  void *d;
  CU(cudaMalloc(&d, n ? n : 1));
  size_t blk = n < (64u << 20) ? n : (64u << 20);
  uint8_t *h = malloc(blk ? blk : 1);
  for (size_t i = 0; i < blk;) {
    if (kind == 0) {
      uint8_t b = (uint8_t)next64();
      h[i++] = (b & 0x7f) == 0x7f ? 0x3c : b;
    } else if (kind == 2) {
      float f = (float)((int64_t)(next64() >> 40) - (1 << 23)) / (float)(1 << 23) * 0.05f;
      uint32_t u;
      memcpy(&u, &f, 4);
      uint16_t b = (uint16_t)(u >> 16);
      if (i + 2 <= blk) memcpy(h + i, &b, 2);
      i += 2;
    } else {
      float f = kind == 3 ? (float)(1e-3 * pow(10.0, (double)(next64() >> 11) / 9007199254740992.0))
                          : (float)((int64_t)(next64() >> 40) - (1 << 23)) / (float)(1 << 23);
      if (i + 4 <= blk) memcpy(h + i, &f, 4);
      i += 4;
    }
  }
  for (size_t off = 0; off < n; off += blk) CU(cudaMemcpy((uint8_t *)d + off, h, n - off < blk ? n - off : blk, cudaMemcpyHostToDevice));
  free(h);
  return d;
}

typedef void (*bench_fn)(void *arg, int it);
static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
/* median seconds per call */
static double timeit(bench_fn fn, void *arg, int reps) {
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) fn(arg, i);
  CU(cudaStreamSynchronize(st));
  double t[7];
  int it = 0;
  for (int k = 0; k < 7; k++) {
    CU(cudaEventRecord(a, st));
    for (int i = 0; i < reps; i++) fn(arg, it++);
    CU(cudaEventRecord(b, st));
    CU(cudaEventSynchronize(b));
    float ms;
    CU(cudaEventElapsedTime(&ms, a, b));
    t[k] = ms * 1e-3 / reps;
  }
  CU(cudaGetLastError());
  qsort(t, 7, sizeof *t, cmp_d);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return t[3];
}

static int want(const char *name) { return !filter || strstr(name, filter); }
static void row_bw(const char *name, const char *shape, double sec, double bytes) {
  double bw = bytes / sec;
  printf("%-22s %-34s %10.2f us %9.1f GB/s  floor %7.2f us  %5.2fx floor (%3.0f%% of copy BW)\n", name, shape, sec * 1e6,
         bw / 1e9, bytes / copy_bw * 1e6, sec / (bytes / copy_bw), 100 * bw / copy_bw);
  fflush(stdout);
}
/* against the measured cuBLAS BF16 peak, or (fp8) twice it: Hopper's FP8 tensor-core rate */
static void row_fl_at(const char *name, const char *shape, double sec, double flops, int fp8) {
  double r = flops / sec, pk = fp8 ? 2 * gemm_peak : gemm_peak;
  printf("%-22s %-34s %10.2f us %9.1f TFLOP/s floor %7.2f us  %5.2fx floor (%3.0f%% of %s)\n", name, shape, sec * 1e6,
         r / 1e12, flops / pk * 1e6, sec / (flops / pk), 100 * r / pk, fp8 ? "2x cuBLAS BF16 peak" : "cuBLAS peak");
  fflush(stdout);
}
static void row_fl(const char *name, const char *shape, double sec, double flops) { row_fl_at(name, shape, sec, flops, 0); }

/* ---------------------------------------------------------------- floors */
typedef struct {
  void *a, *b;
  size_t n;
} copy_arg;
static void f_copy(void *v, int it) {
  (void)it;
  copy_arg *c = v;
  CU(cudaMemcpyAsync(c->b, c->a, c->n, cudaMemcpyDeviceToDevice, st));
}
typedef struct {
  uint16_t *a, *b;
  float *c;
  int n;
} gemm_arg;
static void f_gemm(void *v, int it) {
  (void)it;
  gemm_arg *g = v;
  OK(dsv3_cuda_gemm_bf16(ctx, g->c, g->a, g->n, g->b, g->n, g->n, 0));
}
static void floors(void) {
  copy_arg c = {NULL, NULL, (size_t)1 << 30};
  c.a = dev_random(c.n, 1);
  CU(cudaMalloc(&c.b, c.n));
  copy_bw = 2.0 * c.n / timeit(f_copy, &c, 10);
  cudaFree(c.a);
  cudaFree(c.b);
  gemm_arg g = {NULL, NULL, NULL, 8192};
  size_t n2 = (size_t)g.n * g.n;
  g.a = dev_random(n2 * 2, 2);
  g.b = dev_random(n2 * 2, 2);
  CU(cudaMalloc((void **)&g.c, n2 * 4));
  gemm_peak = 2.0 * g.n * g.n * (double)g.n / timeit(f_gemm, &g, 10);
  cudaFree(g.a), cudaFree(g.b), cudaFree(g.c);
  printf("floors: device-to-device copy %.1f GB/s (read + write), cuBLAS BF16 GEMM 8192^3 %.1f TFLOP/s\n", copy_bw / 1e9,
         gemm_peak / 1e12);
}

/* copies of n random bytes totalling >= 4x the L2 size (at most 64) into buf: rotated through,
 * they are read from HBM, not the cache */
static int dev_copies(void **buf, size_t n) {
  int c = (int)((4 * l2_bytes + n - 1) / n);
  if (c > 64) c = 64;
  for (int i = 0; i < c; i++) buf[i] = dev_random(n, 0);
  return c;
}
static void free_copies(void **buf, int c) {
  for (int i = 0; i < c; i++) cudaFree(buf[i]);
}
/* mb megabytes, rounded up to whole 16-byte loads */
static size_t mb16(double mb) { return ((size_t)(mb * 1e6) + 15) & ~(size_t)15; }

/* ---------------------------------------------------------------- read-only floor (cuda_read.cu) */
int cuda_read_launch(const void *p, size_t n, int mode, int sms, int blocks_per_sm, int pdl, unsigned *sink,
                     cudaStream_t st);
typedef struct {
  void *buf[64];
  size_t n[64];
  int ncopy, mode, bpsm, pdl, seq; /* seq: every buffer once per call (a layer's GEMVs), else one */
  unsigned *sink;
} read_arg;
static int n_sms;
static void f_read(void *v, int it) {
  read_arg *r = v;
  for (int i = r->seq ? 0 : it % r->ncopy; i < (r->seq ? r->ncopy : it % r->ncopy + 1); i++)
    if (cuda_read_launch(r->buf[i], r->n[i], r->mode, n_sms, r->bpsm, r->pdl, r->sink, st)) CU(cudaGetLastError());
}
/* A kernel that only streams its bytes, at the decode GEMVs' sizes (one launch each; copies
 * rotated past the L2) and as one MoE layer's sequence of them back to back: what a perfect
 * GEMV of that size would take, launch, ramp-up and drain included. */
static void bench_read(void) {
  if (!want("read")) return;
  read_arg r;
  memset(&r, 0, sizeof r);
  CU(cudaMalloc((void **)&r.sink, 4));
  const double mb[] = {4.13, 11.0, 14.7, 37.7, 117.4, 264.2, 1853.0};
  for (int s = 0; s < 7; s++) {
    const size_t n = mb16(mb[s]);
    r.ncopy = dev_copies(r.buf, n);
    for (int i = 0; i < r.ncopy; i++) r.n[i] = n;
    for (int cfg = 0; cfg < 4; cfg++) {
      r.mode = cfg & 1, r.bpsm = cfg & 2 ? 2 : 4, r.pdl = 1;
      char shape[64], nm[64];
      snprintf(shape, sizeof shape, "%.1f MB", n / 1e6);
      snprintf(nm, sizeof nm, "read(%s,%dx512)", r.mode ? "contig" : "stride", r.bpsm);
      row_bw(nm, shape, timeit(f_read, &r, quick ? 5 : 20), (double)n);
    }
    free_copies(r.buf, r.ncopy);
  }
  /* one MoE layer's FP8 GEMVs at batch 1: q_a, kv_a, q_b, o_proj, gate (bf16), experts gate/up
   * (9 x 2 x 2048 x 7168), experts down */
  const double lay[] = {11.06, 4.16, 37.94, 117.9, 3.67, 265.4, 132.7};
  r.seq = 1, r.ncopy = 7;
  double tot = 0;
  for (int i = 0; i < 7; i++) {
    r.n[i] = mb16(lay[i]);
    r.buf[i] = dev_random(r.n[i], 0);
    tot += (double)r.n[i];
  }
  for (int pdl = 0; pdl < 2; pdl++) {
    r.mode = 0, r.bpsm = 4, r.pdl = pdl;
    row_bw(pdl ? "read(layer seq, pdl)" : "read(layer seq)", "7 launches, one MoE layer's GEMVs", timeit(f_read, &r, 10),
           tot);
  }
  free_copies(r.buf, 7);
  cudaFree(r.sink);
}

int cuda_pattern_launch(const void *w, int N, int K, int wk, int variant, unsigned *sink, cudaStream_t st);
typedef struct {
  void *buf[64];
  int ncopy, N, K, wk, variant;
  unsigned *sink;
} pat_arg;
/* the experiments' matrices: o_proj, an expert's gate, q_b */
static const int exp_shapes[3][2] = {{7168, 16384}, {2048, 7168}, {24576, 1536}};
static void f_pat(void *v, int it) {
  pat_arg *a = v;
  if (cuda_pattern_launch(a->buf[it % a->ncopy], a->N, a->K, a->wk, a->variant, a->sink, st)) CU(cudaGetLastError());
}
/* the decode GEMVs' weight access pattern alone (cuda_read.cu): rows K bytes apart, 128 or 512
 * bytes a row a step, 1-4 steps in flight, or the same bytes tile-contiguous */
static void bench_pattern(void) {
  if (!filter || !want("pattern")) return; /* an experiment: only when asked for by name */
  pat_arg a;
  memset(&a, 0, sizeof a);
  CU(cudaMalloc((void **)&a.sink, 4));
  for (int s = 0; s < 3; s++) {
    a.N = exp_shapes[s][0], a.K = exp_shapes[s][1];
    size_t n = (size_t)a.N * a.K;
    a.ncopy = dev_copies(a.buf, n);
    const int vars[] = {0, 2, 4, 8, 10};
    for (int tiled = 0; tiled < 2; tiled++)
      for (int vi = 0; vi < 5; vi++)
        for (a.wk = 1; a.wk <= 8; a.wk *= 2) {
          a.variant = vars[vi] | tiled;
          if (a.K / ((a.variant & 8) ? 512 : 128) < a.wk) continue;
          char shape[64], nm[64];
          snprintf(shape, sizeof shape, "%dx%d wk=%d", a.N, a.K, a.wk);
          snprintf(nm, sizeof nm, "pattern(%s,%d,D%d)", tiled ? "tiled" : "rows", (a.variant & 8) ? 512 : 128,
                   1 << ((a.variant >> 1) & 3));
          row_bw(nm, shape, timeit(f_pat, &a, quick ? 5 : 20), (double)n);
        }
    free_copies(a.buf, a.ncopy);
  }
  cudaFree(a.sink);
}

int cuda_ringcopy_launch(const void *w, int N, int K, int variant, int sms, unsigned *sink, cudaStream_t st);
static void f_ringcopy(void *v, int it) {
  pat_arg *a = v;
  if (cuda_ringcopy_launch(a->buf[it % a->ncopy], a->N, a->K, a->variant, n_sms, a->sink, st)) CU(cudaGetLastError());
}
/* a cp.async ring's copies alone (cuda_read.cu), by unit shape */
static void bench_ringcopy(void) {
  if (!filter || !want("ringcopy")) return; /* an experiment: only when asked for by name */
  pat_arg a;
  memset(&a, 0, sizeof a);
  CU(cudaMalloc((void **)&a.sink, 4));
  const char *vn[] = {"16x128 ns4", "4x512 ns4", "16x512 ns3", "2x1024 ns4", "8x256 ns4", "16x128 ns8", "8x512 ns4"};
  for (int s = 0; s < 3; s++) {
    a.N = exp_shapes[s][0], a.K = exp_shapes[s][1];
    size_t n = (size_t)a.N * a.K;
    a.ncopy = dev_copies(a.buf, n);
    for (a.variant = 0; a.variant < 7; a.variant++) {
      if (a.K % (a.variant == 3 ? 1024 : 512)) continue;
      char shape[64], nm[64];
      snprintf(shape, sizeof shape, "%dx%d", a.N, a.K);
      snprintf(nm, sizeof nm, "ringcopy(%s)", vn[a.variant]);
      row_bw(nm, shape, timeit(f_ringcopy, &a, quick ? 5 : 20), (double)n);
    }
    free_copies(a.buf, a.ncopy);
  }
  cudaFree(a.sink);
}

/* ---------------------------------------------------------------- linear */
typedef struct {
  dsv3_wmat w[64];
  int ncopy;
  float *x, *y;
  int64_t T;
  int path; /* 0 gemv, 1 gemm (dequant + cuBLAS), 2 gemm_bf16 on pre-dequantised weights, 3 gemv_mma, 4 the
               tensor-core GEMV (gemv_tcore), 5 the FP8 GEMM (act_quant + cuBLASLt block scaling) */
  uint16_t *wb, *xb;
} lin_arg;
static void f_lin(void *v, int it) {
  lin_arg *a = v;
  const dsv3_wmat *w = &a->w[it % a->ncopy];
  if (a->path == 0 || a->path == 6) OK(dsv3_cuda_gemv(ctx, a->y, a->x, a->T, w, 0));
  else if (a->path == 4) OK(dsv3_cuda_gemv_tcore(ctx, a->y, a->x, a->T, w, 0));
  else if (a->path == 1) OK(dsv3_cuda_gemm(ctx, a->y, a->x, a->T, w, 0));
  else if (a->path == 3) OK(dsv3_cuda_gemv_mma(ctx, a->y, a->x, a->T, w, 0));
  else if (a->path == 5) OK(dsv3_cuda_gemm_fp8(ctx, a->y, a->x, a->T, w, 0));
  else OK(dsv3_cuda_gemm_bf16(ctx, a->y, a->xb, a->T, a->wb, w->rows, w->cols, 0));
}
static void make_weights(lin_arg *a, dsv3_dtype dt, int64_t N, int64_t K, size_t min_total) {
  size_t wbytes = (size_t)(N * K) * (dt == DSV3_BF16 ? 2 : 1);
  a->ncopy = (int)((min_total + wbytes - 1) / wbytes);
  if (a->ncopy < 1) a->ncopy = 1;
  if (a->ncopy > 64) a->ncopy = 64;
  for (int i = 0; i < a->ncopy; i++) {
    a->w[i] = (dsv3_wmat){dt, NULL, NULL, N, K};
    a->w[i].data = dev_random(wbytes, dt == DSV3_BF16 ? 2 : 0);
    if (dt == DSV3_F8_E4M3) a->w[i].scale = dev_random((size_t)(((N + 127) / 128) * ((K + 127) / 128)) * 4, 3);
  }
}
static void free_weights(lin_arg *a) {
  for (int i = 0; i < a->ncopy; i++) cudaFree((void *)a->w[i].data), cudaFree((void *)a->w[i].scale);
}
static double wbytes_of(const dsv3_wmat *w) {
  double b = (double)w->rows * w->cols * (w->dtype == DSV3_BF16 ? 2 : 1);
  if (w->scale) b += (double)((w->rows + 127) / 128) * ((w->cols + 127) / 128) * 4;
  return b;
}

static void bench_gemv(const char *name, dsv3_dtype dt, int64_t N, int64_t K) {
  if (!want(name)) return;
  lin_arg a;
  memset(&a, 0, sizeof a);
  make_weights(&a, dt, N, K, 4 * l2_bytes);
  const int64_t toks[] = {1, 2, 8, 16, 32, 64};
  for (int i = 0; i < 6; i++) {
    a.T = toks[i];
    a.x = dev_random((size_t)(a.T * K) * 4, 1);
    CU(cudaMalloc((void **)&a.y, (size_t)(a.T * N) * 4));
    /* path 6: the one-token FP8 GEMV without the packed-f16 variant (dsv3_cuda_gemv_h2 0) */
    for (int path = 0; path <= 6; path++) {
      if (path == 1 || path == 2 || path == 5 || (path == 0 && a.T > 32) || (path == 3 && a.T < 8) ||
          (path == 4 && (a.T > 8 || dt != DSV3_F8_E4M3)) || (path == 6 && (a.T > 1 || dt != DSV3_F8_E4M3)))
        continue;
      a.path = path;
      const int keep_h2 = dsv3_cuda_gemv_h2;
      if (path == 6) dsv3_cuda_gemv_h2 = 0;
      double s = timeit(f_lin, &a, quick ? 5 : 20);
      dsv3_cuda_gemv_h2 = keep_h2;
      char shape[64], nm[64];
      snprintf(shape, sizeof shape, "%s %lldx%lld T=%lld", dt == DSV3_BF16 ? "bf16" : "fp8", (long long)N, (long long)K,
               (long long)a.T);
      snprintf(nm, sizeof nm, "%s%s", name, path == 3 ? "(mma)" : path == 4 ? "(tc)" : path == 6 ? "(f32)" : "");
      row_bw(nm, shape, s, wbytes_of(&a.w[0]) + (double)a.T * (K + N) * 4);
    }
    cudaFree(a.x), cudaFree(a.y);
  }
  free_weights(&a);
}

static void bench_gemm(const char *name, int64_t N, int64_t K, int64_t T) {
  if (!want(name)) return;
  lin_arg a;
  memset(&a, 0, sizeof a);
  make_weights(&a, DSV3_F8_E4M3, N, K, 0);
  a.T = T;
  a.x = dev_random((size_t)(T * K) * 4, 1);
  CU(cudaMalloc((void **)&a.y, (size_t)(T * N) * 4));
  CU(cudaMalloc((void **)&a.wb, (size_t)(N * K) * 2));
  CU(cudaMalloc((void **)&a.xb, (size_t)(T * K) * 2));
  OK(dsv3_cuda_dequant(a.wb, &a.w[0], st));
  OK(dsv3_cuda_f32_to_bf16(a.xb, a.x, T * K, st));
  char shape[64];
  snprintf(shape, sizeof shape, "fp8 %lldx%lld T=%lld", (long long)N, (long long)K, (long long)T);
  double fl = 2.0 * N * K * T;
  a.path = 1;
  row_fl(name, shape, timeit(f_lin, &a, quick ? 3 : 10), fl);
  char n2[64];
  if (dsv3_cuda_gemm_fp8_ok(&a.w[0], a.x, T)) {
    a.path = 5;
    snprintf(n2, sizeof n2, "%s(fp8)", name);
    row_fl_at(n2, shape, timeit(f_lin, &a, quick ? 3 : 10), fl, 1);
  }
  a.path = 2;
  snprintf(n2, sizeof n2, "%s(bf16 only)", name);
  row_fl(n2, shape, timeit(f_lin, &a, quick ? 3 : 10), fl);
  if (T <= 64) {
    a.path = 0;
    snprintf(n2, sizeof n2, "%s(gemv)", name);
    row_fl(n2, shape, timeit(f_lin, &a, quick ? 3 : 10), fl);
  }
  cudaFree(a.x), cudaFree(a.y), cudaFree(a.wb), cudaFree(a.xb);
  free_weights(&a);
}

/* ---------------------------------------------------------------- MLA */
typedef struct {
  float *ol, *ql, *q, *qf, *o;
  uint16_t *kv, *pe, *wkvb;
  int32_t *seq, *len;
  int64_t nq, H, C, R, max_seq, max_len;
  int tc; /* dsv3_cuda_mla_prefill (tensor cores, non-absorbed) instead of dsv3_cuda_mla_attention */
} mla_arg;
static void f_mla(void *v, int it) {
  (void)it;
  mla_arg *a = v;
  if (a->tc)
    OK(dsv3_cuda_mla_prefill(ctx, a->o, a->qf, a->wkvb, a->kv, a->pe, 0, 0, a->nq, a->H, 128, a->R, 128, a->C, a->max_seq,
                             0.07f, NULL, NULL, NULL));
  else
    OK(dsv3_cuda_mla_attention(ctx, a->ol, a->ql, a->q, a->H * a->R, a->R, a->kv, a->pe, a->seq, a->len, a->nq, a->H,
                               a->C, a->R, a->max_seq, a->max_len, 0.07f));
}
/* nseq sequences of length L each; prefill: nq = L causal queries of one sequence (prefill 2:
 * through dsv3_cuda_mla_prefill).  The prefill floor is the causal work, sum over queries of
 * 2 H len (C + R + C) FLOPs in the absorbed form (the CUDA-core kernel), 2 H len (qk + V) with
 * qk = 192, V = 128 in the non-absorbed form of dsv3_cuda_mla_prefill: half the full nq x L
 * score and value products.  mla_prefill computes more than that (whole query chunks against
 * every row the chunk's last query sees, ~57% of the full products at len 2048: 7 chunks of 293
 * queries, plus kv_b over the cache rows) and its softmax is memory-bound. */
static void bench_mla(const char *name, int64_t nseq, int64_t L, int prefill) {
  if (!want(name)) return;
  mla_arg a = {0};
  a.H = 128, a.C = 512, a.R = 64, a.max_seq = L, a.max_len = L;
  a.nq = prefill ? L : nseq;
  /* 2: dsv3_cuda_mla_prefill (fused kernel: wgmma on sm_90), 3: the same with the fused kernel
   * off, 4: the mma.sync fused kernel */
  a.tc = prefill >= 2;
  a.kv = dev_random((size_t)(nseq * L * a.C) * 2, 2);
  a.pe = dev_random((size_t)(nseq * L * a.R) * 2, 2);
  a.ql = dev_random((size_t)(a.nq * a.H * a.C) * 4, 1);
  a.q = dev_random((size_t)(a.nq * a.H * a.R) * 4, 1);
  CU(cudaMalloc((void **)&a.ol, (size_t)(a.nq * a.H * a.C) * 4));
  if (a.tc) {
    a.qf = dev_random((size_t)(a.nq * a.H * (128 + a.R)) * 4, 1);
    a.wkvb = dev_random((size_t)(a.H * 256 * a.C) * 2, 2);
    CU(cudaMalloc((void **)&a.o, (size_t)(a.nq * a.H * 128) * 4));
  }
  int32_t *seq = malloc((size_t)a.nq * 4), *len = malloc((size_t)a.nq * 4);
  double flops = 0;
  for (int64_t i = 0; i < a.nq; i++) {
    seq[i] = prefill ? 0 : (int32_t)i;
    len[i] = prefill ? (int32_t)(i + 1) : (int32_t)L;
    flops += 2.0 * a.H * len[i] * (a.tc ? 128 + a.R + 128 : a.C + a.R + a.C);
  }
  CU(cudaMalloc((void **)&a.seq, (size_t)a.nq * 4));
  CU(cudaMalloc((void **)&a.len, (size_t)a.nq * 4));
  CU(cudaMemcpy(a.seq, seq, (size_t)a.nq * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(a.len, len, (size_t)a.nq * 4, cudaMemcpyHostToDevice));
  const int keep_fused = dsv3_cuda_mla_fused, keep_wg = dsv3_cuda_mla_wg, keep_ws = dsv3_cuda_mla_ws;
  dsv3_cuda_mla_fused = prefill == 3 ? 0 : keep_fused;
  dsv3_cuda_mla_wg = prefill == 4 ? 0 : keep_wg;
  dsv3_cuda_mla_ws = prefill == 5 ? 0 : keep_ws;
  double s = timeit(f_mla, &a, prefill ? 2 : (quick ? 5 : 20));
  dsv3_cuda_mla_fused = keep_fused;
  dsv3_cuda_mla_wg = keep_wg;
  dsv3_cuda_mla_ws = keep_ws;
  char shape[80];
  snprintf(shape, sizeof shape, "H=128 %s=%lld len=%lld%s", prefill ? "prefill" : "batch", (long long)(prefill ? L : nseq),
           (long long)L, prefill ? " causal" : "");
  if (prefill) row_fl(name, shape, s, flops);
  else {
    row_bw(name, shape, s, (double)nseq * L * (a.C + a.R) * 2);
    char n2[64];
    snprintf(n2, sizeof n2, "%s(flops)", name);
    row_fl(n2, shape, s, flops);
  }
  cudaFree(a.kv), cudaFree(a.pe), cudaFree(a.ql), cudaFree(a.q), cudaFree(a.ol), cudaFree(a.seq), cudaFree(a.len);
  cudaFree(a.qf), cudaFree(a.wkvb), cudaFree(a.o);
  free(seq), free(len);
}

/* ---------------------------------------------------------------- MoE */
typedef struct {
  dsv3_cuda_expert *tab, *host;
  float *x, *y, *w, *logits, *bias;
  int32_t *idx;
  int64_t T, K, D, I, E;
  dsv3_route_params rp;
} moe_arg;
static void f_moe(void *v, int it) {
  (void)it;
  moe_arg *a = v;
  OK(dsv3_cuda_moe_decode(ctx, a->y, a->x, a->T, a->idx, a->w, a->K, a->tab, DSV3_F8_E4M3, a->D, a->I, 0));
}
static void f_moe_grouped(void *v, int it) {
  (void)it;
  moe_arg *a = v;
  OK(dsv3_cuda_moe_grouped(ctx, a->y, a->x, a->T, a->idx, a->w, a->K, a->tab, a->E, DSV3_F8_E4M3, a->D, a->I, 0));
}
static void f_moe_loop(void *v, int it) {
  (void)it;
  moe_arg *a = v;
  OK(dsv3_cuda_moe_prefill(ctx, a->y, a->x, a->T, a->idx, a->w, a->K, a->host, a->E, DSV3_F8_E4M3, a->D, a->I, 0));
}
/* K distinct random experts of E per token */
static int32_t *rand_routing(int64_t T, int64_t K, int64_t E, int64_t *distinct) {
  int32_t *idx = malloc((size_t)(T * K) * 4);
  char *used = calloc((size_t)E, 1);
  *distinct = 0;
  for (int64_t t = 0; t < T; t++)
    for (int64_t k = 0; k < K; k++) {
      int32_t e;
      int dup;
      do {
        e = (int32_t)(next64() % (uint64_t)E);
        dup = 0;
        for (int64_t j = 0; j < k; j++) dup |= idx[t * K + j] == e;
      } while (dup);
      idx[t * K + k] = e;
      if (!used[e]) used[e] = 1, (*distinct)++;
    }
  free(used);
  return idx;
}
static dsv3_cuda_expert *dev_experts(int64_t E, int64_t D, int64_t I) {
  dsv3_cuda_expert *h = malloc((size_t)E * sizeof *h);
  const size_t ns = (size_t)(((I + 127) / 128) * ((D + 127) / 128)) * 4;
  for (int64_t e = 0; e < E; e++) {
    h[e].w1 = dev_random((size_t)(I * D), 0), h[e].w3 = dev_random((size_t)(I * D), 0), h[e].w2 = dev_random((size_t)(I * D), 0);
    h[e].s1 = dev_random(ns, 3), h[e].s3 = dev_random(ns, 3), h[e].s2 = dev_random(ns, 3);
  }
  return h;
}
static void free_experts(dsv3_cuda_expert *h, int64_t E) {
  for (int64_t e = 0; e < E; e++) {
    cudaFree((void *)h[e].w1), cudaFree((void *)h[e].w2), cudaFree((void *)h[e].w3);
    cudaFree((void *)h[e].s1), cudaFree((void *)h[e].s2), cudaFree((void *)h[e].s3);
  }
  free(h);
}
/* MoE prefill at 671B widths: 2048 tokens, top-8 of 256 experts (about 64 tokens per expert):
 * the grouped tensor-core kernel against the per-expert loop; floors: every touched expert read
 * once at the copy bandwidth, and its FLOPs at the cuBLAS peak */
static void bench_moe_prefill(void) {
  if (!want("moe")) return;
  const int64_t E = quick ? 64 : 256, T = quick ? 512 : 2048, D = 7168, I = 2048, K = 8;
  moe_arg a = {0};
  a.host = dev_experts(E, D, I);
  CU(cudaMalloc((void **)&a.tab, (size_t)E * sizeof *a.host));
  CU(cudaMemcpy(a.tab, a.host, (size_t)E * sizeof *a.host, cudaMemcpyHostToDevice));
  a.K = K, a.D = D, a.I = I, a.E = E, a.T = T;
  int64_t distinct;
  int32_t *idx = rand_routing(T, K, E, &distinct);
  CU(cudaMalloc((void **)&a.idx, (size_t)(T * K) * 4));
  CU(cudaMemcpy(a.idx, idx, (size_t)(T * K) * 4, cudaMemcpyHostToDevice));
  a.w = dev_random((size_t)(T * K) * 4, 1);
  a.x = dev_random((size_t)(T * D) * 4, 1);
  CU(cudaMalloc((void **)&a.y, (size_t)(T * D) * 4));
  char shape[80];
  snprintf(shape, sizeof shape, "top8 of %lld, %lldx%lld, T=%lld", (long long)E, (long long)I, (long long)D, (long long)T);
  const double bytes = (double)distinct * 3 * (I * D + 16 * 56 * 4), flops = 2.0 * T * K * 3 * I * D;
  double s = timeit(f_moe_grouped, &a, quick ? 3 : 10);
  row_bw("moe prefill grouped", shape, s, bytes);
  row_fl("moe prefill grouped", shape, s, flops);
  dsv3_cuda_moe_tma = 0; /* the wgmma kernel's weights by cp.async */
  s = timeit(f_moe_grouped, &a, quick ? 3 : 10);
  dsv3_cuda_moe_tma = 1;
  row_bw("moe prefill grp(cp.async)", shape, s, bytes);
  dsv3_cuda_moe_wgmma = 0; /* the mma.sync kernel */
  s = timeit(f_moe_grouped, &a, quick ? 3 : 10);
  dsv3_cuda_moe_wgmma = 1;
  row_fl("moe prefill grp(mma.sync)", shape, s, flops);
  s = timeit(f_moe_loop, &a, quick ? 2 : 3);
  row_bw("moe prefill loop", shape, s, bytes);
  cudaFree(a.idx), cudaFree(a.w), cudaFree(a.x), cudaFree(a.y), cudaFree(a.tab);
  free(idx);
  free_experts(a.host, E);
  dsv3_cuda_moe_forget_tables(ctx);
}
static void f_route(void *v, int it) {
  (void)it;
  moe_arg *a = v;
  OK(dsv3_cuda_route(&a->rp, a->logits, a->bias, a->idx, a->w, a->T, st));
}
static void bench_moe(void) {
  if (!want("moe")) return;
  const int64_t E = quick ? 32 : 64, D = 7168, I = 2048, K = 8;
  dsv3_cuda_expert *h = dev_experts(E, D, I);
  moe_arg a = {0};
  CU(cudaMalloc((void **)&a.tab, (size_t)E * sizeof *h));
  CU(cudaMemcpy(a.tab, h, (size_t)E * sizeof *h, cudaMemcpyHostToDevice));
  a.K = K, a.D = D, a.I = I;
  const int64_t toks[] = {1, 8, 32};
  for (int i = 0; i < 3; i++) {
    a.T = toks[i];
    int64_t distinct;
    int32_t *idx = rand_routing(a.T, K, E, &distinct);
    CU(cudaMalloc((void **)&a.idx, (size_t)(a.T * K) * 4));
    CU(cudaMemcpy(a.idx, idx, (size_t)(a.T * K) * 4, cudaMemcpyHostToDevice));
    a.w = dev_random((size_t)(a.T * K) * 4, 1);
    a.x = dev_random((size_t)(a.T * D) * 4, 1);
    CU(cudaMalloc((void **)&a.y, (size_t)(a.T * D) * 4));
    char shape[80];
    snprintf(shape, sizeof shape, "top8 %lldx%lld T=%lld (%lld experts)", (long long)I, (long long)D, (long long)a.T,
             (long long)distinct);
    const int keep_tc = dsv3_cuda_gemv_tc, keep_h2 = dsv3_cuda_gemv_h2;
    for (int v = 0; v < 3; v++) { /* the packed-f16 GEMVs, the float32 GEMVs, the tensor-core GEMVs (from 1 token) */
      dsv3_cuda_gemv_tc = v == 2 ? 2 : 0;
      dsv3_cuda_gemv_h2 = v == 0;
      double s = timeit(f_moe, &a, quick ? 5 : 20);
      dsv3_cuda_gemv_tc = keep_tc, dsv3_cuda_gemv_h2 = keep_h2;
      /* floor: every distinct expert read once (the kernel re-reads shared ones per pair) */
      row_bw(v == 2 ? "moe_decode(tc)" : v ? "moe_decode(f32)" : "moe_decode", shape, s,
             (double)distinct * 3 * (I * D + 16 * 56 * 4));
    }
    cudaFree(a.idx), cudaFree(a.w), cudaFree(a.x), cudaFree(a.y);
    free(idx);
  }
  /* routing: DeepSeek-V3 parameters */
  a.rp = (dsv3_route_params){256, 8, 8, 4, 1, 2.5f, 0};
  const int64_t rt[] = {1, 32, 2048};
  for (int i = 0; i < 3; i++) {
    a.T = rt[i];
    a.logits = dev_random((size_t)(a.T * 256) * 4, 1);
    a.bias = dev_random(256 * 4, 1);
    CU(cudaMalloc((void **)&a.idx, (size_t)(a.T * 8) * 4));
    CU(cudaMalloc((void **)&a.w, (size_t)(a.T * 8) * 4));
    char shape[64];
    snprintf(shape, sizeof shape, "256 experts top8 T=%lld", (long long)a.T);
    row_bw("route", shape, timeit(f_route, &a, 20), (double)a.T * 256 * 4);
    cudaFree(a.logits), cudaFree(a.bias), cudaFree(a.idx), cudaFree(a.w);
  }
  cudaFree(a.tab);
  free_experts(h, E);
}

/* ---------------------------------------------------------------- small ops */
typedef struct {
  float *x, *y, *o, *lg;
  void *w;
  int32_t *out, *pos;
  int64_t T, D, V;
  float top_p;
} small_arg;
static void f_norm(void *v, int it) {
  (void)it;
  small_arg *a = v;
  OK(dsv3_cuda_add_rmsnorm(a->o, a->x, a->y, a->w, DSV3_BF16, a->T, a->D, 1e-6f, st));
}
static void f_argmax(void *v, int it) {
  (void)it;
  small_arg *a = v;
  OK(dsv3_cuda_argmax(a->out, a->lg, a->T, a->V, st));
}
static void f_sample(void *v, int it) {
  (void)it;
  small_arg *a = v;
  OK(dsv3_cuda_sample(a->out, a->lg, a->T, a->V, 0.7f, a->top_p, 1, a->pos, st));
}
static void bench_small(void) {
  small_arg a = {0};
  if (want("add_rmsnorm")) {
    const int64_t toks[] = {1, 32, 2048};
    a.D = 7168;
    a.w = dev_random((size_t)a.D * 2, 2);
    for (int i = 0; i < 3; i++) {
      a.T = toks[i];
      a.x = dev_random((size_t)(a.T * a.D) * 4, 1), a.y = dev_random((size_t)(a.T * a.D) * 4, 1);
      CU(cudaMalloc((void **)&a.o, (size_t)(a.T * a.D) * 4));
      char shape[64];
      snprintf(shape, sizeof shape, "7168 T=%lld", (long long)a.T);
      row_bw("add_rmsnorm", shape, timeit(f_norm, &a, 20), (double)a.T * a.D * 16);
      cudaFree(a.x), cudaFree(a.y), cudaFree(a.o);
    }
    cudaFree(a.w);
  }
  if (want("sample") || want("argmax")) {
    a.V = 129280;
    const int64_t rows[] = {1, 32};
    for (int i = 0; i < 2; i++) {
      a.T = rows[i];
      a.lg = dev_random((size_t)(a.T * a.V) * 4, 1);
      CU(cudaMalloc((void **)&a.out, (size_t)a.T * 4));
      CU(cudaMalloc((void **)&a.pos, (size_t)a.T * 4));
      CU(cudaMemset(a.pos, 0, (size_t)a.T * 4));
      char shape[64];
      snprintf(shape, sizeof shape, "V=129280 rows=%lld", (long long)a.T);
      row_bw("argmax", shape, timeit(f_argmax, &a, 20), (double)a.T * a.V * 4);
      a.top_p = 1.0f;
      row_bw("sample(T=0.7)", shape, timeit(f_sample, &a, 20), (double)a.T * a.V * 4);
      a.top_p = 0.9f;
      row_bw("sample(top_p=0.9)", shape, timeit(f_sample, &a, 20), (double)a.T * a.V * 4);
      cudaFree(a.lg), cudaFree(a.out), cudaFree(a.pos);
    }
  }
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else {
      fprintf(stderr, "usage: cuda_bench [--quick] [--filter SUBSTRING]\n");
      return 2;
    }
  }
  if (dsv3_cuda_device_count() == 0) {
    fprintf(stderr, "cuda_bench: no CUDA device\n");
    return 77;
  }
  struct cudaDeviceProp p;
  CU(cudaGetDeviceProperties(&p, 0));
  l2_bytes = (size_t)p.l2CacheSize;
  printf("device: %s, %d SMs, L2 %.0f MB, %.0f GB\n", p.name, p.multiProcessorCount, l2_bytes / 1048576.0,
         p.totalGlobalMem / 1073741824.0);
  CU(cudaStreamCreate(&st));
  OK(dsv3_cuda_ctx_new(st, &ctx));
  floors();
  n_sms = p.multiProcessorCount;
  bench_read();
  bench_pattern();
  bench_ringcopy();
  /* decode GEMV at the 671B projections (T = tokens per step) */
  bench_gemv("gemv q_a", DSV3_F8_E4M3, 1536, 7168);
  bench_gemv("gemv q_b", DSV3_F8_E4M3, 24576, 1536);
  bench_gemv("gemv kv_a", DSV3_F8_E4M3, 576, 7168);
  bench_gemv("gemv o_proj", DSV3_F8_E4M3, 7168, 16384);
  bench_gemv("gemv dense gate", DSV3_F8_E4M3, 18432, 7168);
  bench_gemv("gemv dense down", DSV3_F8_E4M3, 7168, 18432);
  bench_gemv("gemv expert gate", DSV3_F8_E4M3, 2048, 7168);
  bench_gemv("gemv expert down", DSV3_F8_E4M3, 7168, 2048);
  if (!quick) bench_gemv("gemv lm_head", DSV3_BF16, 129280, 7168);
  /* prefill GEMM, 2048 tokens */
  bench_gemm("gemm dense gate", 18432, 7168, 2048);
  bench_gemm("gemm o_proj", 7168, 16384, 2048);
  bench_gemm("gemm q_b", 24576, 1536, 2048);
  bench_gemm("gemm kv_a", 576, 7168, 2048);
  bench_gemm("gemm expert gate", 2048, 7168, 64);
  /* MLA attention */
  bench_mla("mla decode", 1, 4096, 0);
  bench_mla("mla decode", 1, 32768, 0);
  bench_mla("mla decode", 32, 4096, 0);
  bench_mla("mla prefill", 1, 2048, 1);
  bench_mla("mla prefill(tc)", 1, 2048, 3);
  bench_mla("mla prefill(fused)", 1, 2048, 2);
  bench_mla("mla prefill(mma.sync)", 1, 2048, 4);
  bench_mla("mla prefill(wgmma in step)", 1, 2048, 5);
  bench_moe();
  bench_moe_prefill();
  bench_small();
  dsv3_cuda_ctx_free(ctx);
  CU(cudaStreamDestroy(st));
  return 0;
}
