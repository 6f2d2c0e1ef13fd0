/* In-memory FP8 -> BF16 dequantisation rate per core (the cast's compute floor): one 7168 x
 * 2048 expert matrix, dequantised repeatedly on one thread, against a memcpy of the same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "util.h"

int main(void) {
  const int64_t M = 2048, N = 7168;
  uint8_t *w = malloc((size_t)(M * N));
  float *s = malloc((size_t)(dsv3_ceil_div(M, 128) * dsv3_ceil_div(N, 128)) * 4);
  uint16_t *out = malloc((size_t)(M * N) * 2);
  for (int64_t i = 0; i < M * N; i++) w[i] = (uint8_t)(i * 2654435761u >> 13) & 0x7e;
  for (int64_t i = 0; i < dsv3_ceil_div(M, 128) * dsv3_ceil_div(N, 128); i++) s[i] = 1e-3f * (float)(1 + i % 7);
  dsv3_fp8_dequant_rows(w, s, M, N, 0, M, DSV3_BF16, out); /* warm up */
  int reps = 20;
  double t0 = dsv3_now();
  for (int r = 0; r < reps; r++) dsv3_fp8_dequant_rows(w, s, M, N, 0, M, DSV3_BF16, out);
  double t = (dsv3_now() - t0) / reps;
  double t1 = dsv3_now();
  for (int r = 0; r < reps; r++) memcpy(out, w, (size_t)(M * N)), memcpy((uint8_t *)out + M * N, w, (size_t)(M * N));
  double tc = (dsv3_now() - t1) / reps;
  printf("  fp8 dequant, 1 core: %.2f GB/s of FP8 input (%.2f GB/s written); memcpy of the same bytes %.2f GB/s; ratio %.2f\n",
         (double)(M * N) / t / 1e9, (double)(M * N) * 2 / t / 1e9, (double)(M * N) * 3 / tc / 1e9, tc / t);
  free(w);
  free(s);
  free(out);
  return 0;
}
