/* test_cpu_ops - the FP8 row decoding and linear of kernels/cpu/ops.c: the AVX2 + F16C path
 * gives the table path's values bit for bit (every e4m3 code incl. subnormals, zeros and NaN
 * codes; partial 128-blocks and row ends not a multiple of 8; zero, negative, denormal, huge,
 * infinite and NaN scales, scales whose products tie between two bf16 values), and dsv3_wmat_row / dsv3_linear equal dsv3_wmat_get (the
 * definition: bf16(e4m3 * scale)) and each other between the two paths; BF16 weights give
 * the same linear either way. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "ops.h"
#include "util.h"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
  return (uint32_t)(rs >> 16);
}
static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static int have_simd(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
  return 0;
#endif
}

static void test_shape(int64_t rows, int64_t cols, int simd) {
  int64_t nbr = (rows + 127) / 128, nbc = (cols + 127) / 128;
  uint8_t *q = malloc((size_t)(rows * cols));
  float *s = malloc((size_t)(nbr * nbc) * 4);
  for (int64_t i = 0; i < rows * cols; i++) q[i] = (uint8_t)(i < 256 ? i : rnd()); /* every code first */
  /* 1 + 2^-8 and kin: products that fall exactly halfway between two bf16 values (ties to even) */
  const float special[] = {0x1.01p0f, -0x1.03p-5f, 0x1.0101p-3f, 0.f, -1.5e-3f, 1e-40f /* denormal */, 0x1p99f, 0x1p100f, 0x1p110f, 3e38f,
                           INFINITY, -INFINITY, NAN, 1.0f, 2.3e-5f};
  for (int64_t i = 0; i < nbr * nbc; i++)
    s[i] = i < (int64_t)(sizeof special / sizeof *special) ? special[i] : (float)(rnd() % 100000) * 1e-7f + 1e-9f;
  dsv3_wmat w = {DSV3_F8_E4M3, q, s, rows, cols};
  float *row = malloc((size_t)cols * 4);
  int64_t bad = 0;
  dsv3_ops_simd = simd;
  for (int64_t r = 0; r < rows; r++) {
    dsv3_wmat_row(&w, r, row);
    for (int64_t c = 0; c < cols; c++) {
      float ref = dsv3_wmat_get(&w, r, c);
      if (bits(row[c]) != bits(ref) && !(isnan(ref) && isnan(row[c]))) {
        if (bad++ < 3)
          fprintf(stderr, "row %lld col %lld code 0x%02x scale %g: %a, expected %a\n", (long long)r, (long long)c,
                  q[r * cols + c], s[(r / 128) * nbc + c / 128], row[c], ref);
      }
    }
  }
  CHECK(bad == 0, "%s rows %lldx%lld: %lld values differ from bf16(e4m3 * scale)", simd ? "AVX2" : "table",
        (long long)rows, (long long)cols, (long long)bad);
  /* dsv3_linear: the same bits either way (finite scales only: a NaN row stays NaN anyway) */
  for (int64_t i = 0; i < nbr * nbc; i++)
    if (!isfinite(s[i]) || fabsf(s[i]) > 1e30f) s[i] = 1e-3f;
  for (int64_t i = 0; i < rows * cols; i++)
    if ((q[i] & 0x7f) == 0x7f) q[i] = 0x42;
  const int64_t toks[] = {1, 3, 9};
  for (int ti = 0; ti < 3; ti++) {
    int64_t T = toks[ti];
    float *x = malloc((size_t)(T * cols) * 4), *y0 = malloc((size_t)(T * rows) * 4), *y1 = malloc((size_t)(T * rows) * 4);
    for (int64_t i = 0; i < T * cols; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    dsv3_ops_simd = 0;
    dsv3_linear(y0, x, T, &w);
    dsv3_ops_simd = simd;
    dsv3_linear(y1, x, T, &w);
    CHECK(memcmp(y0, y1, (size_t)(T * rows) * 4) == 0, "linear %lldx%lld T=%lld: %s differs from the table path",
          (long long)rows, (long long)cols, (long long)T, simd ? "AVX2" : "table");
    free(x), free(y0), free(y1);
  }
  free(q), free(s), free(row);
}

/* BF16 weights: the AVX2 dot straight from the bf16 row equals widening the row then dot() */
static void test_bf16(int64_t rows, int64_t cols) {
  uint16_t *w = malloc((size_t)(rows * cols) * 2);
  for (int64_t i = 0; i < rows * cols; i++) w[i] = (uint16_t)(0x3000 + rnd() % 0x1800) | (uint16_t)(rnd() & 0x8000);
  dsv3_wmat m = {DSV3_BF16, w, NULL, rows, cols};
  for (int64_t T = 1; T <= 5; T += 4) {
    float *x = malloc((size_t)(T * cols) * 4), *y0 = malloc((size_t)(T * rows) * 4), *y1 = malloc((size_t)(T * rows) * 4);
    for (int64_t i = 0; i < T * cols; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    dsv3_ops_simd = 0;
    dsv3_linear(y0, x, T, &m);
    dsv3_ops_simd = 1;
    dsv3_linear(y1, x, T, &m);
    CHECK(memcmp(y0, y1, (size_t)(T * rows) * 4) == 0, "bf16 linear %lldx%lld T=%lld: AVX2 differs", (long long)rows,
          (long long)cols, (long long)T);
    free(x), free(y0), free(y1);
  }
  free(w);
}

int main(void) {
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {2, 8}, {5, 9}, {130, 127}, {129, 128}, {2, 256}, {257, 300}, {64, 1031}, {130, 1600}};
  int simd = have_simd();
  if (!simd) printf("no AVX2/F16C here: only the table path is checked\n");
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    test_shape(shapes[i][0], shapes[i][1], 0);
    if (simd) test_shape(shapes[i][0], shapes[i][1], 1);
    if (simd) test_bf16(shapes[i][0], shapes[i][1]);
  }
  dsv3_ops_simd = -1;
  return check_done("test_cpu_ops");
}
