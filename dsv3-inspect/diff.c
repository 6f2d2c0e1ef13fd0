/* diff.c - `--diff OTHER`: compare two checkpoints tensor by tensor, whatever their layout or
 * dtype.  Both sides are read as whole logical tensors under their HF names (values.c): FP8
 * weights dequantised with their scales to float32, runtime names mapped back with names.h,
 * and rank slices of a model-parallel runtime checkpoint concatenated along their split
 * dimension (replicated tensors must be byte-identical on every rank).  Per tensor: the largest
 * absolute difference, the largest relative difference |a-b| / max(|a|, |b|), and how many
 * elements differ; NaN equals NaN.  A tensor differs when an element's relative difference
 * exceeds --tolerance (default 0: any difference) or NaN/non-NaN disagree. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "inspect.h"

#define CHUNK_ELEMS (1u << 20)

typedef struct {
  const dsv3i_ltensor *a, *b;
  double maxabs, maxrel;
  uint64_t ndiff, nanmis;
  const char *status;
} pair_t;

typedef struct {
  size_t pair;
  int64_t r0, nr;
} chunk_t;

typedef struct {
  double maxabs, maxrel;
  uint64_t ndiff, nanmis;
} res_t;

typedef struct {
  float *buf[4];
  size_t cap;
} tbuf_t;

typedef struct {
  pair_t *pairs;
  chunk_t *ch;
  res_t *res;
  tbuf_t *tb;
  double tol;
  dsv3_progress *pg;
} ctx_t;

static int task(void *vctx, size_t i, int thread) {
  ctx_t *c = vctx;
  const chunk_t *k = &c->ch[i];
  const pair_t *p = &c->pairs[k->pair];
  size_t need = (size_t)k->nr * (size_t)p->a->cols;
  tbuf_t *tb = &c->tb[thread];
  if (tb->cap < need) {
    for (int q = 0; q < 4; q++) {
      free(tb->buf[q]);
      tb->buf[q] = dsv3_xmalloc(need * sizeof(float));
    }
    tb->cap = need;
  }
  float *va = tb->buf[0], *vb = tb->buf[1];
  dsv3i_ltensor_rows(p->a, k->r0, k->nr, va, tb->buf[2]);
  dsv3i_ltensor_rows(p->b, k->r0, k->nr, vb, tb->buf[3]);
  res_t r = {0};
  for (size_t e = 0; e < need; e++) {
    float x = va[e], y = vb[e];
    if (x == y) continue; /* also +-0 and equal infinities */
    int nx = isnan(x), ny = isnan(y);
    if (nx || ny) {
      if (nx != ny) {
        r.nanmis++;
        r.ndiff++;
      }
      continue;
    }
    double d = fabs((double)x - (double)y);
    double den = fabs((double)x) > fabs((double)y) ? fabs((double)x) : fabs((double)y);
    double rel = isinf(d) ? INFINITY : d / den;
    if (isnan(rel)) rel = INFINITY; /* inf - inf of opposite signs */
    if (d > r.maxabs || isnan(d)) r.maxabs = isnan(d) ? INFINITY : d;
    if (rel > r.maxrel) r.maxrel = rel;
    if (rel > c->tol) r.ndiff++;
  }
  c->res[i] = r;
  dsv3_progress_add(c->pg, (p->a->nbytes + p->b->nbytes) * (uint64_t)k->nr / (uint64_t)(p->a->rows ? p->a->rows : 1));
  return 0;
}

static int same_shape(const dsv3i_ltensor *a, const dsv3i_ltensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static void lshape(const dsv3i_ltensor *t, char *buf, size_t cap) {
  dsv3_tensor tmp = {.ndim = t->ndim};
  memcpy(tmp.shape, t->shape, sizeof tmp.shape);
  dsv3i_shape_str(&tmp, buf, cap);
}

static int selected(const dsv3i_opts *o, const dsv3_config *ca, const dsv3_config *cb, const char *name) {
  if (o->filter && !dsv3_glob_match(o->filter, name)) return 0;
  if (o->ignore_mtp && (dsv3i_is_mtp(ca, name) || dsv3i_is_mtp(cb, name))) return 0;
  return 1;
}

int dsv3i_diff(dsv3_ckpt *A, dsv3_ckpt *B, const dsv3i_opts *o) {
  dsv3i_lview va, vb;
  dsv3i_lview_build(A, &va);
  dsv3i_lview_build(B, &vb);
  const dsv3_config *ca = dsv3_ckpt_config(A), *cb = dsv3_ckpt_config(B);
  size_t np = 0, nc = 0, capc = 1024, only_a = 0, only_b = 0;
  pair_t *pairs = dsv3_xcalloc(va.n + vb.n + 1, sizeof *pairs);
  chunk_t *ch = dsv3_xmalloc(capc * sizeof *ch);
  uint64_t total = 0;
  size_t i = 0, j = 0;
  while (i < va.n || j < vb.n) {
    int c = i == va.n ? 1 : j == vb.n ? -1 : strcmp(va.t[i].name, vb.t[j].name);
    pair_t *p = &pairs[np];
    memset(p, 0, sizeof *p);
    if (c < 0) {
      p->a = &va.t[i++];
      if (!selected(o, ca, cb, p->a->name)) continue;
      p->status = "only in first";
      only_a++;
    } else if (c > 0) {
      p->b = &vb.t[j++];
      if (!selected(o, ca, cb, p->b->name)) continue;
      p->status = "only in second";
      only_b++;
    } else {
      p->a = &va.t[i++];
      p->b = &vb.t[j++];
      if (!selected(o, ca, cb, p->a->name)) continue;
      if (p->a->problem || p->b->problem) {
        p->status = "unreadable";
      } else if (!same_shape(p->a, p->b)) {
        p->status = "shape differs";
      } else {
        p->status = NULL; /* compared below */
        int64_t step = p->a->cols > 0 && p->a->cols < (int64_t)CHUNK_ELEMS ? (int64_t)CHUNK_ELEMS / p->a->cols : 1;
        for (int64_t r = 0; r < p->a->rows; r += step) {
          if (nc == capc) ch = dsv3_xrealloc(ch, (capc *= 2) * sizeof *ch);
          ch[nc++] = (chunk_t){np, r, p->a->rows - r < step ? p->a->rows - r : step};
        }
        total += p->a->nbytes + p->b->nbytes;
      }
    }
    np++;
  }
  int threads = o->threads > 0 ? o->threads : dsv3_num_cpus();
  ctx_t cx = {pairs, ch, dsv3_xcalloc(nc ? nc : 1, sizeof(res_t)), dsv3_xcalloc((size_t)threads, sizeof(tbuf_t)),
              o->tolerance, dsv3_progress_new("diff", total, o->quiet || o->json)};
  dsv3_parallel_for(nc, threads, task, &cx);
  dsv3_progress_done(cx.pg);
  for (size_t k = 0; k < nc; k++) {
    pair_t *p = &pairs[ch[k].pair];
    res_t *r = &cx.res[k];
    if (r->maxabs > p->maxabs) p->maxabs = r->maxabs;
    if (r->maxrel > p->maxrel) p->maxrel = r->maxrel;
    p->ndiff += r->ndiff;
    p->nanmis += r->nanmis;
  }
  size_t compared = 0, ndiffer = 0, nother = 0;
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  for (size_t k = 0; k < np; k++) {
    pair_t *p = &pairs[k];
    const dsv3i_ltensor *t = p->a ? p->a : p->b;
    if (!p->status) {
      compared++;
      p->status = p->ndiff ? "differs" : "equal";
      if (p->ndiff) ndiffer++;
    } else if (p->a && p->b) {
      nother++;
    }
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", t->name);
      cJSON_AddStringToObject(e, "status", p->status);
      if (p->a) cJSON_AddStringToObject(e, "dtype_first", dsv3_dtype_name(p->a->dtype));
      if (p->b) cJSON_AddStringToObject(e, "dtype_second", dsv3_dtype_name(p->b->dtype));
      if (!strcmp(p->status, "equal") || !strcmp(p->status, "differs")) {
        cJSON_AddNumberToObject(e, "max_abs", isfinite(p->maxabs) ? p->maxabs : 1e308);
        cJSON_AddNumberToObject(e, "max_rel", isfinite(p->maxrel) ? p->maxrel : 1e308);
        cJSON_AddNumberToObject(e, "elements_differing", (double)p->ndiff);
        cJSON_AddNumberToObject(e, "nan_mismatches", (double)p->nanmis);
      }
      const char *why = p->a && p->a->problem ? p->a->problem : p->b && p->b->problem ? p->b->problem : NULL;
      if (why && !strcmp(p->status, "unreadable")) cJSON_AddStringToObject(e, "reason", why);
      cJSON_AddItemToArray(arr, e);
      continue;
    }
    if (!strcmp(p->status, "equal")) continue;
    if (!strcmp(p->status, "differs")) {
      printf("%-60s differs  max_abs %.6g  max_rel %.6g  %llu of %llu elements", t->name, p->maxabs, p->maxrel,
             (unsigned long long)p->ndiff, (unsigned long long)(p->a->rows * p->a->cols));
      if (p->nanmis) printf(" (%llu NaN mismatches)", (unsigned long long)p->nanmis);
      if (p->a->dtype != p->b->dtype) printf("  [%s vs %s]", dsv3_dtype_name(p->a->dtype), dsv3_dtype_name(p->b->dtype));
      printf("\n");
    } else if (!strcmp(p->status, "shape differs")) {
      char x[128], y[128];
      lshape(p->a, x, sizeof x);
      lshape(p->b, y, sizeof y);
      printf("%-60s shape differs  %s vs %s\n", t->name, x, y);
    } else if (!strcmp(p->status, "unreadable")) {
      printf("%-60s unreadable  %s\n", t->name, p->a->problem ? p->a->problem : p->b->problem);
    } else {
      printf("%-60s %s (%s)\n", t->name, p->status, dsv3_ckpt_path(p->a ? A : B));
    }
  }
  size_t bad = ndiffer + nother + only_a + only_b;
  if (arr) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "equal", bad == 0);
    cJSON_AddStringToObject(j, "first", dsv3_ckpt_path(A));
    cJSON_AddStringToObject(j, "second", dsv3_ckpt_path(B));
    cJSON_AddNumberToObject(j, "tolerance", o->tolerance);
    cJSON_AddNumberToObject(j, "compared", (double)compared);
    cJSON_AddNumberToObject(j, "differ", (double)ndiffer);
    cJSON_AddNumberToObject(j, "shape_or_unreadable", (double)nother);
    cJSON_AddNumberToObject(j, "only_in_first", (double)only_a);
    cJSON_AddNumberToObject(j, "only_in_second", (double)only_b);
    cJSON_AddItemToObject(j, "tensors", arr);
    dsv3i_print_json(j);
  } else {
    printf("%s: %zu tensors compared, %zu differ, %zu with other shapes or unreadable, %zu only in first, %zu only in second\n",
           bad ? "different" : "equal", compared, ndiffer, nother, only_a, only_b);
  }
  for (int t = 0; t < threads; t++)
    for (int q = 0; q < 4; q++) free(cx.tb[t].buf[q]);
  free(cx.tb);
  free(cx.res);
  free(ch);
  free(pairs);
  dsv3i_lview_free(&va);
  dsv3i_lview_free(&vb);
  return bad ? 1 : 0;
}
