/* test_cuda_sample - argmax (first index on ties) and the device sampler: greedy limits, the
 * distribution of softmax(logits / T), the top-p nucleus, a row split over several blocks. */
#include "cuda_test.h"

static int32_t ref_argmax(const float *x, int64_t V) {
  int64_t b = 0;
  for (int64_t i = 1; i < V; i++)
    if (x[i] > x[b]) b = i;
  return (int32_t)b;
}

static void test_argmax(int64_t rows, int64_t V) {
  float *lg = t_xmalloc((size_t)(rows * V) * 4);
  t_fill(lg, (size_t)(rows * V), 3.0f);
  if (rows > 1 && V > 10) { /* a tie: the first wins */
    int32_t m = ref_argmax(lg + V, V);
    lg[V + V - 1] = lg[V + m];
    lg[V + 3] = lg[V + m];
  }
  int32_t *ref = t_xmalloc((size_t)rows * 4), *got = t_xmalloc((size_t)rows * 4), *pos = t_xmalloc((size_t)rows * 4);
  for (int64_t r = 0; r < rows; r++) ref[r] = ref_argmax(lg + r * V, V), pos[r] = (int32_t)r;
  float *dlg = t_dev(lg, (size_t)(rows * V) * 4);
  int32_t *dout = t_poison((size_t)rows * 4), *dpos = t_dev(pos, (size_t)rows * 4);
  OK(dsv3_cuda_argmax(dout, dlg, rows, V, 0));
  t_host(got, dout, (size_t)rows * 4);
  CHECK(memcmp(got, ref, (size_t)rows * 4) == 0, "argmax rows=%lld V=%lld differs", (long long)rows, (long long)V);
  /* temperature 0 and a tiny nucleus are both greedy */
  CU(cudaMemset(dout, 0xff, (size_t)rows * 4));
  OK(dsv3_cuda_sample(dout, dlg, rows, V, 0.f, 1.f, 1, dpos, 0));
  t_host(got, dout, (size_t)rows * 4);
  CHECK(memcmp(got, ref, (size_t)rows * 4) == 0, "sample T=0 rows=%lld V=%lld is not argmax", (long long)rows, (long long)V);
  CU(cudaMemset(dout, 0xff, (size_t)rows * 4));
  OK(dsv3_cuda_sample(dout, dlg, rows, V, 1.f, 1e-6f, 7, dpos, 0));
  t_host(got, dout, (size_t)rows * 4);
  for (int64_t r = 0; r < rows; r++) /* row 1 has a planted tie: the nucleus holds all of it */
    if (!(r == 1 && V > 10)) CHECK(got[r] == ref[r], "sample top_p=1e-6 row %lld V=%lld: %d, argmax %d", (long long)r,
                                   (long long)V, got[r], ref[r]);
  cudaFree(dlg), cudaFree(dout), cudaFree(dpos);
  free(lg), free(ref), free(got), free(pos);
}

/* Many rows of the same logits, each with its own noise: the frequencies must follow the
 * (nucleus-renormalised) softmax within 5 standard deviations; tokens outside never appear. */
static void test_distribution(float temp, float top_p) {
  const int64_t V = 12, rows = 40000;
  float base[12];
  for (int i = 0; i < V; i++) base[i] = (float)(0.8 * t_normal());
  float *lg = t_xmalloc((size_t)(rows * V) * 4);
  int32_t *pos = t_xmalloc((size_t)rows * 4), *got = t_xmalloc((size_t)rows * 4);
  for (int64_t r = 0; r < rows; r++) {
    memcpy(lg + r * V, base, sizeof base);
    pos[r] = (int32_t)(r * 7);
  }
  double p[12], sum = 0, mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = fmax(mx, base[i] / temp);
  for (int i = 0; i < V; i++) sum += (p[i] = exp(base[i] / temp - mx));
  for (int i = 0; i < V; i++) p[i] /= sum;
  /* the nucleus as the reference defines it */
  double s[12], cut;
  memcpy(s, p, sizeof s);
  for (int i = 0; i < V; i++)
    for (int j = i + 1; j < V; j++)
      if (s[j] > s[i]) {
        double t = s[i];
        s[i] = s[j], s[j] = t;
      }
  double cum = 0;
  cut = s[0];
  for (int i = 0; i < V; i++) {
    cum += s[i];
    cut = s[i];
    if (cum >= top_p) break;
  }
  /* a cut too close to a value is ambiguous in float: skip such draws */
  for (int i = 0; i < V; i++)
    if (p[i] != cut && fabs(p[i] - cut) < 1e-5 * cut) return;
  double kept = 0;
  for (int i = 0; i < V; i++) kept += p[i] >= cut ? p[i] : 0;
  float *dlg = t_dev(lg, (size_t)(rows * V) * 4);
  int32_t *dpos = t_dev(pos, (size_t)rows * 4), *dout = t_poison((size_t)rows * 4);
  OK(dsv3_cuda_sample(dout, dlg, rows, V, temp, top_p, 12345, dpos, 0));
  t_host(got, dout, (size_t)rows * 4);
  int64_t cnt[12] = {0}, bad = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (got[r] < 0 || got[r] >= V) bad++;
    else cnt[got[r]]++;
  }
  CHECK(bad == 0, "sample: %lld tokens out of range", (long long)bad);
  for (int i = 0; i < V; i++) {
    double q = p[i] >= cut ? p[i] / kept : 0, expect = q * rows, sd = sqrt(rows * q * (1 - q));
    if (q == 0) CHECK(cnt[i] == 0, "sample T=%g top_p=%g: token %d outside the nucleus drawn %lld times", temp, top_p, i,
                      (long long)cnt[i]);
    else CHECK(fabs(cnt[i] - expect) <= 5 * sd + 1, "sample T=%g top_p=%g: token %d drawn %lld times, expected %.0f +- %.0f",
               temp, top_p, i, (long long)cnt[i], expect, sd);
  }
  /* a new position draws new noise; the same position the same token */
  int32_t *again = t_xmalloc((size_t)rows * 4);
  OK(dsv3_cuda_sample(dout, dlg, rows, V, temp, top_p, 12345, dpos, 0));
  t_host(again, dout, (size_t)rows * 4);
  CHECK(memcmp(again, got, (size_t)rows * 4) == 0, "sample: not deterministic for the same seed and positions");
  cudaFree(dlg), cudaFree(dpos), cudaFree(dout);
  free(lg), free(pos), free(got), free(again);
}

/* A wide row splits over several blocks (V = 16384: 4): two equal best logits in different
 * blocks, every other token 30 below (together under 1e-8 of the mass): over 2000 rows each of
 * the two is drawn half the time (5 sd), nothing else. */
static void test_wide(void) {
  const int64_t V = 16384, rows = 2000, a = 5, b = 16000;
  float *lg = t_xmalloc((size_t)(rows * V) * 4);
  int32_t *pos = t_xmalloc((size_t)rows * 4), *got = t_xmalloc((size_t)rows * 4);
  for (int64_t i = 0; i < rows * V; i++) lg[i] = -30.f;
  for (int64_t r = 0; r < rows; r++) lg[r * V + a] = lg[r * V + b] = 0.f, pos[r] = (int32_t)r;
  float *dlg = t_dev(lg, (size_t)(rows * V) * 4);
  int32_t *dpos = t_dev(pos, (size_t)rows * 4), *dout = t_poison((size_t)rows * 4);
  OK(dsv3_cuda_sample(dout, dlg, rows, V, 1.f, 1.f, 99, dpos, 0));
  t_host(got, dout, (size_t)rows * 4);
  int64_t na = 0, nbb = 0, other = 0;
  for (int64_t r = 0; r < rows; r++) na += got[r] == a, nbb += got[r] == b, other += got[r] != a && got[r] != b;
  const double sd = sqrt(rows * 0.25);
  CHECK(other == 0 && fabs(na - rows / 2.0) <= 5 * sd,
        "sample over 4 blocks: %lld x token %lld, %lld x token %lld, %lld others", (long long)na, (long long)a,
        (long long)nbb, (long long)b, (long long)other);
  cudaFree(dlg), cudaFree(dpos), cudaFree(dout);
  free(lg), free(pos), free(got);
}

int main(void) {
  t_init("test_cuda_sample");
  test_argmax(1, 129280);
  test_argmax(3, 129280); /* split over 32 blocks; the tie at 3 and V - 1 lies across slices */
  test_argmax(70, 9001);  /* an odd width (scalar loads) and more rows than one launch takes */
  test_argmax(5, 1000);
  test_argmax(3, 7);
  test_argmax(2, 2048);
  test_distribution(1.0f, 1.0f);
  test_distribution(0.7f, 1.0f);
  test_distribution(1.0f, 0.6f);
  test_distribution(0.5f, 0.9f);
  test_wide();
  return check_done("test_cuda_sample");
}
