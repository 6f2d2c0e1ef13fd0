/* test_cuda_norm - RMSNorm (and the fused residual add), embedding, RoPE with YaRN tables,
 * SiLU-and-multiply and residual add against the CPU reference ops. */
#include "cuda_test.h"

static void test_rmsnorm(int64_t T, int64_t D, dsv3_dtype wdt) {
  size_t n = (size_t)(T * D);
  float *x = t_xmalloc(n * 4), *y = t_xmalloc(n * 4), *ref = t_xmalloc(n * 4), *out = t_xmalloc(n * 4);
  float *xs = t_xmalloc(n * 4), *xg = t_xmalloc(n * 4);
  void *w;
  if (wdt == DSV3_BF16) {
    w = t_xmalloc((size_t)D * 2);
    t_bf16(w, (size_t)D, 1.0f);
  } else {
    w = t_xmalloc((size_t)D * 4);
    t_fill(w, (size_t)D, 1.0f);
  }
  size_t wb = (size_t)D * (wdt == DSV3_BF16 ? 2 : 4);
  t_fill(x, n, 2.0f);
  t_fill(y, n, 1.0f);
  void *dw = t_dev(w, wb);
  float *dx = t_dev(x, n * 4), *dy = t_dev(y, n * 4), *dout = t_poison(n * 4);
  /* plain */
  dsv3_rmsnorm(ref, x, w, wdt, T, D, 1e-6f);
  OK(dsv3_cuda_rmsnorm(dout, dx, dw, wdt, T, D, 1e-6f, 0));
  t_host(out, dout, n * 4);
  double e = t_rel(out, ref, n);
  CHECK(e < 1e-6, "rmsnorm T=%lld D=%lld: rel err %.3g", (long long)T, (long long)D, e);
  /* in place */
  OK(dsv3_cuda_rmsnorm(dx, dx, dw, wdt, T, D, 1e-6f, 0));
  t_host(out, dx, n * 4);
  e = t_rel(out, ref, n);
  CHECK(e < 1e-6, "rmsnorm in place T=%lld D=%lld: rel err %.3g", (long long)T, (long long)D, e);
  /* fused residual add */
  CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
  CU(cudaMemset(dout, 0xff, n * 4));
  for (size_t i = 0; i < n; i++) xs[i] = x[i] + y[i];
  dsv3_rmsnorm(ref, xs, w, wdt, T, D, 1e-6f);
  OK(dsv3_cuda_add_rmsnorm(dout, dx, dy, dw, wdt, T, D, 1e-6f, 0));
  t_host(out, dout, n * 4);
  t_host(xg, dx, n * 4);
  e = t_rel(out, ref, n);
  CHECK(e < 1e-6, "add_rmsnorm T=%lld D=%lld: rel err %.3g", (long long)T, (long long)D, e);
  CHECK(t_rel(xg, xs, n) == 0, "add_rmsnorm T=%lld D=%lld: residual sum differs", (long long)T, (long long)D);
  /* the same with the bf16 copy (plain and fused): out's bits unchanged, outb = bf16(out) */
  for (int add = 0; add < 2; add++) {
    uint16_t *dob = NULL, *ob = t_xmalloc(n * 2);
    float *o2 = t_xmalloc(n * 4);
    CU(cudaMalloc((void **)&dob, n * 2));
    CU(cudaMemset(dob, 0xff, n * 2));
    CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    if (add) OK(dsv3_cuda_add_rmsnorm(dout, dx, dy, dw, wdt, T, D, 1e-6f, 0));
    else OK(dsv3_cuda_rmsnorm(dout, dx, dw, wdt, T, D, 1e-6f, 0));
    t_host(out, dout, n * 4);
    CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(dout, 0xff, n * 4));
    OK(dsv3_cuda_rmsnorm_bf16(dout, dob, dx, add ? dy : NULL, dw, wdt, T, D, 1e-6f, 0));
    t_host(o2, dout, n * 4);
    t_host(ob, dob, n * 2);
    CHECK(memcmp(out, o2, n * 4) == 0, "rmsnorm_bf16 add %d T=%lld D=%lld: out differs", add, (long long)T, (long long)D);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += ob[i] != dsv3_f32_to_bf16(o2[i]);
    CHECK(bad == 0, "rmsnorm_bf16 add %d T=%lld D=%lld: %zu bf16 values differ from bf16(out)", add, (long long)T, (long long)D, bad);
    /* the bf16 copy alone (out NULL): the same bits, where the 16-byte kernel covers the shape;
     * refused otherwise */
    CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(dob, 0xff, n * 2));
    if (dsv3_cuda_rmsnorm_bf16(NULL, dob, dx, add ? dy : NULL, dw, wdt, T, D, 1e-6f, 0) == 0) {
      CU(cudaDeviceSynchronize());
      uint16_t *ob2 = t_xmalloc(n * 2);
      t_host(ob2, dob, n * 2);
      CHECK(memcmp(ob, ob2, n * 2) == 0, "rmsnorm_bf16 add %d T=%lld D=%lld: the bf16 rows alone differ", add, (long long)T,
            (long long)D);
      free(ob2);
    } else {
      CHECK(D % 4 != 0 || D > 8192, "rmsnorm_bf16 add %d T=%lld D=%lld: bf16 rows alone refused: %s", add, (long long)T,
            (long long)D, dsv3_error());
    }
    cudaFree(dob);
    free(ob), free(o2);
  }
  /* plain add, silu_mul */
  CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
  OK(dsv3_cuda_add(dx, dy, (int64_t)n, 0));
  t_host(xg, dx, n * 4);
  CHECK(t_rel(xg, xs, n) == 0, "add n=%zu differs", n);
  dsv3_silu_mul(ref, x, y, (int64_t)n);
  CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
  CU(cudaMemset(dout, 0xff, n * 4));
  OK(dsv3_cuda_silu_mul(dout, dx, dy, (int64_t)n, 0));
  t_host(out, dout, n * 4);
  e = t_rel(out, ref, n);
  CHECK(e < 1e-5, "silu_mul n=%zu: rel err %.3g", n, e);
  cudaFree(dw), cudaFree(dx), cudaFree(dy), cudaFree(dout);
  free(w), free(x), free(y), free(ref), free(out), free(xs), free(xg);
}

static void test_embed(int64_t vocab, int64_t D, int64_t T) {
  uint16_t *E = t_xmalloc((size_t)(vocab * D) * 2);
  t_bf16(E, (size_t)(vocab * D), 1.0f);
  int32_t *ids = t_xmalloc((size_t)T * 4);
  for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)(t_next() % (uint64_t)vocab);
  ids[0] = (int32_t)(vocab - 1);
  float *ref = t_xmalloc((size_t)(T * D) * 4), *out = t_xmalloc((size_t)(T * D) * 4);
  dsv3_embed(ref, ids, T, E, DSV3_BF16, D);
  void *dE = t_dev(E, (size_t)(vocab * D) * 2);
  int32_t *dids = t_dev(ids, (size_t)T * 4);
  float *dout = t_poison((size_t)(T * D) * 4);
  OK(dsv3_cuda_embed(dout, dids, T, dE, DSV3_BF16, vocab, D, 0));
  t_host(out, dout, (size_t)(T * D) * 4);
  CHECK(memcmp(out, ref, (size_t)(T * D) * 4) == 0, "embed vocab=%lld D=%lld T=%lld differs", (long long)vocab, (long long)D,
        (long long)T);
  /* an id out of range gives NaN, not a stray read */
  int32_t badid = (int32_t)vocab;
  CU(cudaMemcpy(dids, &badid, 4, cudaMemcpyHostToDevice));
  OK(dsv3_cuda_embed(dout, dids, 1, dE, DSV3_BF16, vocab, D, 0));
  t_host(out, dout, (size_t)D * 4);
  CHECK(isnan(out[0]) && isnan(out[D - 1]), "embed: an id out of range must give NaN");
  cudaFree(dE), cudaFree(dids), cudaFree(dout);
  free(E), free(ids), free(ref), free(out);
}

static void test_rope(int64_t R, int64_t T, int64_t H, int64_t stride, double factor) {
  dsv3_rope_params p = {R, 4096, 10000.0, factor, 256, 32, 1};
  int64_t half = R / 2, max_pos = p.max_seq_len;
  float *cs = t_xmalloc((size_t)(max_pos * half) * 4), *sn = t_xmalloc((size_t)(max_pos * half) * 4);
  dsv3_rope_tables(&p, cs, sn);
  /* x: [T, H, stride] with the rope part at offset stride - R (as q = [nope | rope]) */
  size_t n = (size_t)(T * H * stride);
  float *x = t_xmalloc(n * 4), *ref = t_xmalloc(n * 4), *out = t_xmalloc(n * 4);
  int32_t *pos = t_xmalloc((size_t)T * 4);
  t_fill(x, n, 1.0f);
  memcpy(ref, x, n * 4);
  for (int64_t t = 0; t < T; t++) {
    pos[t] = (int32_t)(t_next() % (uint64_t)max_pos);
    for (int64_t h = 0; h < H; h++) dsv3_rope_apply(ref + (t * H + h) * stride + stride - R, R, cs, sn, pos[t]);
  }
  float *dcs = t_dev(cs, (size_t)(max_pos * half) * 4), *dsn = t_dev(sn, (size_t)(max_pos * half) * 4);
  float *dx = t_dev(x, n * 4);
  int32_t *dpos = t_dev(pos, (size_t)T * 4);
  OK(dsv3_cuda_rope(dx + stride - R, T, H, H * stride, stride, R, dcs, dsn, dpos, 0));
  t_host(out, dx, n * 4);
  double e = t_rel(out, ref, n);
  CHECK(e < 1e-6, "rope R=%lld T=%lld H=%lld factor=%g: rel err %.3g", (long long)R, (long long)T, (long long)H, factor, e);
  cudaFree(dcs), cudaFree(dsn), cudaFree(dx), cudaFree(dpos);
  free(cs), free(sn), free(x), free(ref), free(out), free(pos);
}

int main(void) {
  t_init("test_cuda_norm");
  const int64_t shapes[][2] = {{1, 7}, {3, 512}, {17, 1536}, {2, 7168}, {1, 8192}, {5, 10000}, {1, 32}};
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    test_rmsnorm(shapes[i][0], shapes[i][1], DSV3_BF16);
    test_rmsnorm(shapes[i][0], shapes[i][1], DSV3_F32);
  }
  test_embed(2048, 512, 9);
  test_embed(1000, 7168, 3);
  test_embed(17, 6, 40);
  test_rope(64, 5, 128, 192, 40.0);
  test_rope(32, 9, 16, 64, 4.0);
  test_rope(16, 3, 1, 16, 1.0);
  return check_done("test_cuda_norm");
}
