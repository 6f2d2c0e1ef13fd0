/* stats.c - `--stats`: min, max, mean, std, absmax, NaN/Inf counts per tensor, FP8 weights
 * dequantised with their block scales.  Work is split in chunks of ~8 MB (whole 128-row
 * blocks for FP8) spread over all threads, so one huge embedding does not serialise the run;
 * chunk results are merged in order, so the numbers do not depend on --threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "inspect.h"

#define CHUNK_BYTES (8u << 20)

typedef struct {
  const dsv3_tensor *t, *scale;
  size_t file;
} sel_t;

typedef struct {
  size_t sel;
  int64_t r0, nr; /* rows (FP8 with scale) or elements */
  uint64_t bytes;
} chunk_t;

typedef struct {
  const sel_t *sel;
  const chunk_t *ch;
  dsv3i_acc *acc; /* per chunk */
  void **scratch; /* per thread */
  dsv3_progress *pg;
} ctx_t;

static int task(void *vctx, size_t i, int thread) {
  ctx_t *c = vctx;
  const chunk_t *k = &c->ch[i];
  const sel_t *s = &c->sel[k->sel];
  if (!c->scratch[thread]) c->scratch[thread] = dsv3i_scratch_new();
  dsv3i_stats_chunk(s->t, s->scale, k->r0, k->nr, &c->acc[i], c->scratch[thread]);
  dsv3_progress_add(c->pg, k->bytes);
  return 0;
}

static double num(double x) { return isfinite(x) ? x : 0; }

int dsv3i_stats(dsv3_ckpt *ck, const dsv3i_opts *o) {
  size_t n = dsv3_ckpt_count(ck), ns = 0, nc = 0, capc = 1024;
  sel_t *sel = dsv3_xmalloc((n ? n : 1) * sizeof *sel);
  chunk_t *ch = dsv3_xmalloc(capc * sizeof *ch);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (o->filter && !dsv3_glob_match(o->filter, t->name)) continue;
    const dsv3_tensor *s = NULL;
    if (t->dtype == DSV3_F8_E4M3) {
      s = dsv3i_scale_of(ck, t->name, dsv3_ckpt_file_rank(ck, f), NULL);
      if (!dsv3i_scale_fits(t, s)) s = NULL;
    }
    sel[ns] = (sel_t){t, s, f};
    int64_t len, step;
    uint64_t unit;
    if (s) { /* block rows */
      len = t->shape[0];
      unit = (uint64_t)t->shape[1] * DSV3_FP8_BLOCK;
      step = DSV3_FP8_BLOCK * (int64_t)(unit && unit < CHUNK_BYTES ? CHUNK_BYTES / unit : 1);
      unit = (uint64_t)t->shape[1];
    } else {
      len = (int64_t)t->numel;
      unit = dsv3_dtype_size(t->dtype);
      step = (int64_t)(CHUNK_BYTES / unit);
    }
    for (int64_t r = 0; r < len || (r == 0 && len == 0); r += step) {
      if (nc == capc) ch = dsv3_xrealloc(ch, (capc *= 2) * sizeof *ch);
      int64_t nr = len - r < step ? len - r : step;
      ch[nc++] = (chunk_t){ns, r, nr, (uint64_t)nr * unit};
      if (len == 0) break;
    }
    total += t->nbytes;
    ns++;
  }
  int threads = o->threads > 0 ? o->threads : dsv3_num_cpus();
  ctx_t c = {sel, ch, dsv3_xcalloc(nc ? nc : 1, sizeof(dsv3i_acc)), dsv3_xcalloc((size_t)threads, sizeof(void *)),
             dsv3_progress_new("stats", total, o->quiet || o->json)};
  double t0 = dsv3_now();
  dsv3_parallel_for(nc, threads, task, &c);
  double el = dsv3_now() - t0;
  dsv3_progress_done(c.pg);
  dsv3i_acc *per = dsv3_xcalloc(ns ? ns : 1, sizeof *per);
  for (size_t i = 0; i < nc; i++) dsv3i_acc_merge(&per[ch[i].sel], &c.acc[i]);
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  if (!arr)
    printf("%-60s %-8s %12s %12s %12s %12s %12s %8s %8s\n", "name", "dtype", "min", "max", "mean", "std", "absmax",
           "nan", "inf");
  for (size_t i = 0; i < ns; i++) {
    const dsv3i_acc *s = &per[i];
    const dsv3_tensor *t = sel[i].t;
    double sd = s->n ? sqrt(s->m2 / (double)s->n) : 0;
    const char *note = t->dtype == DSV3_F8_E4M3 && !sel[i].scale ? "raw e4m3 values: no scale of the right shape" : NULL;
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", t->name);
      cJSON_AddStringToObject(e, "dtype", dsv3_dtype_name(t->dtype));
      cJSON_AddStringToObject(e, "file", dsv3_ckpt_file_name(ck, sel[i].file));
      if (dsv3_ckpt_file_rank(ck, sel[i].file) >= 0) cJSON_AddNumberToObject(e, "rank", dsv3_ckpt_file_rank(ck, sel[i].file));
      cJSON_AddNumberToObject(e, "count", (double)s->n);
      cJSON_AddNumberToObject(e, "min", num(s->min));
      cJSON_AddNumberToObject(e, "max", num(s->max));
      cJSON_AddNumberToObject(e, "mean", num(s->mean));
      cJSON_AddNumberToObject(e, "std", num(sd));
      cJSON_AddNumberToObject(e, "absmax", num(s->absmax));
      cJSON_AddNumberToObject(e, "nan", (double)s->nan);
      cJSON_AddNumberToObject(e, "inf", (double)s->inf);
      cJSON_AddBoolToObject(e, "dequantized", sel[i].scale != NULL);
      if (note) cJSON_AddStringToObject(e, "note", note);
      cJSON_AddItemToArray(arr, e);
    } else {
      char label[1100];
      int rank = dsv3_ckpt_file_rank(ck, sel[i].file);
      if (dsv3_ckpt_mp(ck) > 1 && rank >= 0) snprintf(label, sizeof label, "%s@rank%d", t->name, rank);
      else snprintf(label, sizeof label, "%s", t->name);
      printf("%-60s %-8s %12.6g %12.6g %12.6g %12.6g %12.6g %8llu %8llu%s%s\n", label, dsv3_dtype_name(t->dtype),
             s->min, s->max, s->mean, sd, s->absmax, (unsigned long long)s->nan, (unsigned long long)s->inf,
             note ? "  " : "", note ? note : "");
    }
  }
  if (arr) {
    dsv3i_print_json(arr);
  } else if (!o->quiet) {
    char hb[32];
    fprintf(stderr, "%zu tensors, %s in %.2f s (%.2f GB/s, %d threads)\n", ns, dsv3_human_bytes(total, hb, sizeof hb),
            el, el > 0 ? (double)total / el / 1e9 : 0, threads);
  }
  for (int i = 0; i < threads; i++) free(c.scratch[i]);
  free(c.scratch);
  free(c.acc);
  free(per);
  free(ch);
  free(sel);
  return 0;
}
