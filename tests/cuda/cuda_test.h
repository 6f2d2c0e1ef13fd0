/* cuda_test.h - shared helpers of the kernels/cuda unit tests: skip without a GPU, random
 * inputs (fresh each run; the seed is printed and DSV3_SEED repeats it), device copies, poisoned
 * outputs, relative L2 error against a reference. */
#ifndef DSV3_CUDA_TEST_H
#define DSV3_CUDA_TEST_H

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "dsv3_cuda.h"
#include "dtype.h"
#include "ops.h"
#include "util.h"

#define CU(call)                                                                                  \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));     \
      exit(1);                                                                                    \
    }                                                                                             \
  } while (0)
/* a dsv3_cuda_* call that must succeed, then the stream must complete without error */
#define OK(call)                                                                                  \
  do {                                                                                            \
    if ((call) != 0) {                                                                            \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, dsv3_error());     \
      exit(1);                                                                                    \
    }                                                                                             \
    CU(cudaDeviceSynchronize());                                                                  \
  } while (0)

static uint64_t t_rng;
static inline uint64_t t_next(void) {
  uint64_t z = (t_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline double t_unit(void) { return ((double)(t_next() >> 11) + 0.5) / 9007199254740992.0; }
static inline float t_normal(void) { return (float)(sqrt(-2 * log(t_unit())) * cos(6.283185307179586 * t_unit())); }
static inline void t_fill(float *x, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) x[i] = scale * t_normal();
}

/* Skip (77) without a usable GPU; seed the generator. */
static inline void t_init(const char *name) {
  if (dsv3_cuda_device_count() == 0) {
    printf("%s: no CUDA device: skipped\n", name);
    exit(77);
  }
  const char *s = getenv("DSV3_SEED");
  t_rng = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
  printf("%s: seed %llu (DSV3_SEED repeats it)\n", name, (unsigned long long)t_rng);
}

static inline void *t_dev(const void *h, size_t n) {
  void *d;
  CU(cudaMalloc(&d, n ? n : 1));
  if (h && n) CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
  return d;
}
/* device buffer filled with 0xff bytes: NaN as float32, so an unwritten element shows */
static inline void *t_poison(size_t n) {
  void *d = t_dev(NULL, n);
  CU(cudaMemset(d, 0xff, n ? n : 1));
  return d;
}
static inline void t_host(void *h, const void *d, size_t n) {
  if (n) CU(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}
static inline void *t_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) exit(1);
  return p;
}

/* ||a - ref|| / ||ref||; infinity when a holds a NaN or ref is zero with a != ref */
static inline double t_rel(const float *a, const float *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) || isinf(a[i])) return INFINITY;
    double d = (double)a[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return sqrt(num / den);
}
static inline double t_rel_d(const float *a, const double *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) || isinf(a[i])) return INFINITY;
    double d = (double)a[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return sqrt(num / den);
}

/* Random e4m3 bytes (no NaN codes) and log-uniform scales in [1e-3, 1e-2]: a block-quantised
 * weight as the checkpoints hold them. */
static inline void t_fp8(uint8_t *w, float *s, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows * cols; i++) {
    uint8_t b;
    do b = (uint8_t)t_next();
    while ((b & 0x7f) == 0x7f);
    w[i] = b;
  }
  int64_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
  for (int64_t i = 0; i < ns; i++) s[i] = (float)(1e-3 * pow(10.0, t_unit()));
}
static inline void t_bf16(uint16_t *w, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) w[i] = dsv3_f32_to_bf16(scale * t_normal());
}
#endif
