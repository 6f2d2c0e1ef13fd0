/* bench_cast_dequant - the in-memory rates of dsv3-cast's kernels on one core (its compute
 * floor): FP8 -> BF16/F16/F32 dequantisation and BF16 -> FP8 block quantisation of
 * 671B-sized matrices ([2048, 7168] expert gate/up, [7168, 2048] down, [24576, 1536] q_b),
 * in the 128-row block-row chunks the cast uses, next to memcpy of the same bytes (read the
 * input, write the output).  Goal: >= 2 GB/s of FP8 input per core.
 *   bench_cast_dequant [SECONDS_PER_CASE]  (default 0.5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "util.h"

static double min_time;

/* Seconds per call of fn, best of several timed batches lasting >= min_time in all. */
typedef void (*fn_t)(void *ctx);
static double time_it(fn_t fn, void *ctx) {
  fn(ctx); /* warm */
  double best = 1e30, total = 0;
  while (total < min_time) {
    double t0 = dsv3_now();
    fn(ctx);
    double t = dsv3_now() - t0;
    total += t;
    if (t < best) best = t;
  }
  return best;
}

typedef struct {
  int64_t M, N, chunk_rows;
  uint8_t *w, *q;
  float *s, *s2;
  void *out;
  dsv3_dtype dt;
  size_t cpy_in, cpy_out;
  uint8_t *cpy_src, *cpy_dst;
} ctx_t;

static void run_dequant(void *v) {
  ctx_t *c = v;
  size_t es = dsv3_dtype_size(c->dt);
  for (int64_t r = 0; r < c->M; r += c->chunk_rows) {
    int64_t n = r + c->chunk_rows <= c->M ? c->chunk_rows : c->M - r;
    dsv3_fp8_dequant_rows(c->w, c->s, c->M, c->N, r, n, c->dt, (uint8_t *)c->out + (size_t)(r * c->N) * es);
  }
}

static void run_quant(void *v) {
  ctx_t *c = v;
  int64_t nb = dsv3_ceil_div(c->N, 128);
  for (int64_t r = 0; r < c->M; r += c->chunk_rows) {
    int64_t n = r + c->chunk_rows <= c->M ? c->chunk_rows : c->M - r;
    dsv3_fp8_quant_rows(c->out, DSV3_BF16, c->M, c->N, r, n, 0, c->q + (size_t)(r * c->N), c->s2 + (r / 128) * nb);
  }
}

/* The floor: memcpy of the larger side's bytes (reads and writes at least what the kernel
 * reads and writes). */
static void run_memcpy(void *v) {
  ctx_t *c = v;
  memcpy(c->cpy_dst, c->cpy_src, c->cpy_in > c->cpy_out ? c->cpy_in : c->cpy_out);
}

int main(int argc, char **argv) {
  min_time = argc > 1 ? atof(argv[1]) : 0.5;
  if (min_time <= 0) min_time = 0.5;
  static const int64_t shapes[][2] = {{2048, 7168}, {7168, 2048}, {24576, 1536}};
  printf("dsv3-cast kernels, 1 core (in-memory; chunks of 512 rows as the cast makes them)\n");
  printf("  %-14s %-10s %9s %9s %11s  (memcpy: of the larger side's bytes, same buffers' sizes)\n", "shape", "kind",
         "GB/s in", "GB/s out", "vs memcpy");
  double worst = 1e30;
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    ctx_t c = {.M = shapes[k][0], .N = shapes[k][1], .chunk_rows = 512};
    size_t n = (size_t)(c.M * c.N), ns = (size_t)(dsv3_ceil_div(c.M, 128) * dsv3_ceil_div(c.N, 128));
    c.w = dsv3_xmalloc(n);
    c.q = dsv3_xmalloc(n);
    c.s = dsv3_xmalloc(ns * 4);
    c.s2 = dsv3_xmalloc(ns * 4);
    c.out = dsv3_xmalloc(n * 4);
    c.cpy_src = dsv3_xcalloc(n * 4, 1);
    c.cpy_dst = dsv3_xcalloc(n * 4, 1);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) { /* e4m3 codes spread over the whole range, no NaN */
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c.w[i] = (uint8_t)(x >> 32);
      if ((c.w[i] & 0x7f) == 0x7f) c.w[i] ^= 1;
    }
    for (size_t i = 0; i < ns; i++) c.s[i] = 1e-3f * (float)(1 + i % 13);
    static const dsv3_dtype dts[] = {DSV3_BF16, DSV3_F16, DSV3_F32};
    char shp[32];
    snprintf(shp, sizeof shp, "[%lld, %lld]", (long long)c.M, (long long)c.N);
    for (int d = 0; d < 3; d++) {
      c.dt = dts[d];
      size_t es = dsv3_dtype_size(c.dt);
      double t = time_it(run_dequant, &c);
      c.cpy_in = n;
      c.cpy_out = n * es;
      double tm = time_it(run_memcpy, &c);
      printf("  %-14s %-10s %9.2f %9.2f %10.0f%%\n", shp, d == 0 ? "fp8->bf16" : d == 1 ? "fp8->f16" : "fp8->f32",
             (double)n / t / 1e9, (double)(n * es) / t / 1e9, 100 * tm / t);
      if (d == 0 && (double)n / t / 1e9 < worst) worst = (double)n / t / 1e9;
    }
    c.dt = DSV3_BF16;
    run_dequant(&c); /* bf16 input for the quantiser */
    double t = time_it(run_quant, &c);
    c.cpy_in = n * 2;
    c.cpy_out = n;
    double tm = time_it(run_memcpy, &c);
    printf("  %-14s %-10s %9.2f %9.2f %10.0f%%\n", shp, "bf16->fp8", (double)(n * 2) / t / 1e9, (double)n / t / 1e9,
           100 * tm / t);
    free(c.w);
    free(c.q);
    free(c.s);
    free(c.s2);
    free(c.out);
    free(c.cpy_src);
    free(c.cpy_dst);
  }
  printf("  FP8 -> BF16 per core: %.2f GB/s of FP8 input (slowest shape); goal 2.00: %s\n", worst,
         worst >= 2.0 ? "met" : "NOT met");
  return 0;
}
