/* dsv3-run CPU path: prefill and decode tokens/s against the memory-bandwidth floor (the bytes
 * of weights read per token over this machine's measured read bandwidth).
 * usage: bench_run_cpu CKPT [PROMPT_TOKENS] [DECODE_TOKENS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

typedef struct {
  const double *a;
  size_t per;
  double sum[64];
} bw_ctx;
static int bw_task(void *vc, size_t i, int thread) {
  (void)thread;
  bw_ctx *c = vc;
  double s = 0;
  for (size_t k = i * c->per; k < (i + 1) * c->per; k++) s += c->a[k];
  c->sum[i % 64] += s;
  return 0;
}
/* read bandwidth of all cores: sum a 1 GiB buffer (larger than any cache) */
static double read_bw(void) {
  size_t n = (size_t)1 << 27;
  double *a = malloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) a[i] = (double)i;
  double best = 0;
  bw_ctx c = {a, n / 64, {0}};
  for (int r = 0; r < 3; r++) {
    double t0 = dsv3_now();
    dsv3_parallel_for(64, 0, bw_task, &c);
    double t = dsv3_now() - t0;
    if ((double)(n * 8) / t > best) best = (double)(n * 8) / t;
  }
  if (c.sum[0] == 42) puts("");
  free(a);
  return best;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_run_cpu CKPT [PROMPT_TOKENS] [DECODE_TOKENS]\n");
    return 2;
  }
  int64_t np = argc > 2 ? atoll(argv[2]) : 128, nd = argc > 3 ? atoll(argv[3]) : 64;
  dsv3_model *m;
  if (dsv3_model_load(argv[1], NULL, np + nd + 1, &m) != 0) {
    dsv3_error_print("bench_run_cpu");
    return 1;
  }
  int32_t *ids = malloc((size_t)(np + nd) * sizeof(int32_t));
  for (int64_t i = 0; i < np + nd; i++) ids[i] = (int32_t)((i * 7919 + 13) % m->cfg.vocab_size);
  float *lg = malloc((size_t)m->cfg.vocab_size * sizeof(float));
  dsv3_cache *c = dsv3_cache_new(m, np + nd + 1);
  double t0 = dsv3_now();
  dsv3_forward(m, c, ids, np, 0, lg, 0);
  double tp = dsv3_now() - t0;
  double t1 = dsv3_now();
  for (int64_t i = 0; i < nd; i++) dsv3_forward(m, c, ids + np + i, 1, np + i, lg, 0);
  double td = (dsv3_now() - t1) / (double)nd;
  uint64_t bpt = dsv3_model_bytes_per_token(m);
  double bw = read_bw();
  printf("dsv3-run cpu  %s: %d threads\n", argv[1], dsv3_num_cpus());
  printf("  prefill %lld tokens: %.1f tok/s\n", (long long)np, (double)np / tp);
  printf("  decode: %.2f ms/token (%.1f tok/s); weights read per token %.1f MB; read bandwidth %.1f GB/s;\n"
         "          floor %.2f ms/token; ratio floor/ours %.2f\n",
         td * 1e3, 1 / td, (double)bpt / 1e6, bw / 1e9, (double)bpt / bw * 1e3, (double)bpt / bw / td);
  dsv3_cache_free(m, c);
  dsv3_model_free(m);
  free(ids);
  free(lg);
  return 0;
}
