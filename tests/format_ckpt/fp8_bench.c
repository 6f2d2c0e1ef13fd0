/* fp8_bench - in-memory FP8 dequant/quant rate on one core (not run by ctest).
 * Rates are per core: thread CPU time, best of the repetitions.
 * usage: fp8_bench [M N reps]   default 7168 x 2048 (a 671B expert w2-sized matrix), 10 reps */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <time.h>

#include "fp8.h"
#include "util.h"

/* CPU time of this thread: the build machine is shared, wall time is not the core's rate */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  int64_t M = argc > 2 ? atoll(argv[1]) : 7168, N = argc > 2 ? atoll(argv[2]) : 2048;
  int reps = argc > 3 ? atoi(argv[3]) : 10;
  int64_t sb = dsv3_ceil_div(M, 128) * dsv3_ceil_div(N, 128);
  uint8_t *w = malloc((size_t)(M * N));
  float *s = malloc((size_t)sb * 4);
  uint64_t x = 88172645463325252ull;
  for (int64_t i = 0; i < M * N; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint8_t v = (uint8_t)x;
    w[i] = (v & 0x7f) == 0x7f ? 0 : v; /* no NaN codes */
  }
  for (int64_t i = 0; i < sb; i++) s[i] = 1e-4f * (float)(1 + i % 13);
  void *out = malloc((size_t)(M * N) * 4);
  static const dsv3_dtype dts[] = {DSV3_BF16, DSV3_F16, DSV3_F32};
  static const char *names[] = {"bf16", "f16", "f32"};
  for (int d = 0; d < 3; d++) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      double t0 = cpu_now();
      dsv3_fp8_dequant_rows(w, s, M, N, 0, M, dts[d], out);
      double t = cpu_now() - t0;
      if (t < best) best = t;
    }
    printf("dequant fp8->%s  %lldx%lld: %.2f GB/s of FP8 input (goal 2.00, ratio %.2f)\n", names[d],
           (long long)M, (long long)N, (double)(M * N) / best / 1e9, (double)(M * N) / best / 1e9 / 2.0);
    /* row-at-a-time calls (how a streaming caller may slice) */
    best = 1e30;
    for (int r = 0; r < reps; r++) {
      double t0 = cpu_now();
      for (int64_t i = 0; i < M; i += 16)
        dsv3_fp8_dequant_rows(w, s, M, N, i, 16, dts[d], (char *)out + i * N * dsv3_dtype_size(dts[d]));
      double t = cpu_now() - t0;
      if (t < best) best = t;
    }
    printf("dequant fp8->%s  16-row calls: %.2f GB/s\n", names[d], (double)(M * N) / best / 1e9);
  }
  uint8_t *q = malloc((size_t)(M * N));
  float *s2 = malloc((size_t)sb * 4);
  dsv3_fp8_dequant_rows(w, s, M, N, 0, M, DSV3_BF16, out);
  double best = 1e30;
  for (int r = 0; r < (reps + 1) / 2; r++) {
    double t0 = cpu_now();
    dsv3_fp8_quant_rows(out, DSV3_BF16, M, N, 0, M, 0, q, s2);
    double t = cpu_now() - t0;
    if (t < best) best = t;
  }
  printf("quant bf16->fp8: %.2f GB/s of FP8 output\n", (double)(M * N) / best / 1e9);
  free(w), free(s), free(out), free(q), free(s2);
  return 0;
}
