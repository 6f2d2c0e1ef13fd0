/* check.c - `--check`: the checkpoint's structure against its config.json.
 *
 * HF layout (and a single file with HF names): every tensor expect.c derives from the config
 * is present with its shape and dtype, nothing else is there, every FP8 weight has a float32
 * scale of shape [ceil(M/128), ceil(N/128)], every scale has its FP8 weight, and the index
 * agrees with the files (dsv3_ckpt_check_index).
 * Runtime layout (model{r}-mp{n}.safetensors): the same list under convert.py's names with
 * per-rank shapes: dim-0/dim-1 splits divided by mp, routed experts only on the rank that owns
 * them (expert e on rank e / (n_routed_experts / mp)), everything else on every rank.  MTP
 * layers are optional there (convert.py drops them unless --keep-mtp), checked when present. */
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "fp8.h"
#include "inspect.h"

typedef struct {
  int n;
  cJSON *arr;
} probs_t;

static void problem_cb(void *ctx, const char *line) {
  probs_t *p = ctx;
  p->n++;
  if (p->arr) cJSON_AddItemToArray(p->arr, cJSON_CreateString(line));
  else printf("%s\n", line);
}

static void problem(probs_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(probs_t *p, const char *fmt, ...) {
  char line[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  problem_cb(p, line);
}

/* One expected stored tensor (runtime: per rank). */
typedef struct {
  char name[200];
  int rank; /* -1: HF layout */
  dsv3_dtype dtype, alt;
  int ndim;
  int64_t shape[2];
  int found;
} want_t;

typedef struct {
  want_t *w;
  size_t n, cap;
} wants_t;

static want_t *want_add(wants_t *x) {
  if (x->n == x->cap) {
    x->cap = x->cap ? 2 * x->cap : 1024;
    x->w = dsv3_xrealloc(x->w, x->cap * sizeof *x->w);
  }
  want_t *w = &x->w[x->n++];
  memset(w, 0, sizeof *w);
  return w;
}

static int cmp_want(const void *a, const void *b) {
  const want_t *x = a, *y = b;
  if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
  return strcmp(x->name, y->name);
}

static want_t *want_find(wants_t *x, const char *name, int rank) {
  want_t key;
  snprintf(key.name, sizeof key.name, "%s", name);
  key.rank = rank;
  return bsearch(&key, x->w, x->n, sizeof *x->w, cmp_want);
}

static void fmt_shape(int ndim, const int64_t *s, char *buf, size_t cap) {
  if (ndim == 2) snprintf(buf, cap, "[%lld, %lld]", (long long)s[0], (long long)s[1]);
  else snprintf(buf, cap, "[%lld]", (long long)s[0]);
}

/* Expected tensors with their scales, HF names (rank -1) or per-rank runtime names. */
static void build_wants(const dsv3_config *c, int runtime, int mp, int with_mtp, wants_t *W, probs_t *P) {
  dsv3i_expects X = {0};
  dsv3i_expect_build(c, &X);
  int64_t B0 = c->quant.present ? c->quant.weight_block_size[0] : DSV3_FP8_BLOCK;
  int64_t B1 = c->quant.present ? c->quant.weight_block_size[1] : DSV3_FP8_BLOCK;
  if (B0 <= 0 || B1 <= 0) B0 = B1 = DSV3_FP8_BLOCK;
  for (size_t i = 0; i < X.n; i++) {
    const dsv3i_expect *e = &X.e[i];
    if (runtime && !with_mtp && e->layer >= c->num_hidden_layers) continue;
    for (int sc = 0; sc <= e->fp8; sc++) {
      char hf[200];
      snprintf(hf, sizeof hf, sc ? "%s_scale_inv" : "%s", e->name);
      int64_t shape[2] = {e->shape[0], e->shape[1]};
      if (sc) {
        shape[0] = dsv3_ceil_div(e->shape[0], B0);
        shape[1] = dsv3_ceil_div(e->shape[1], B1);
      }
      dsv3_dtype dt = sc ? DSV3_F32 : e->dtype, alt = sc ? DSV3_DT_INVALID : e->alt;
      if (!runtime) {
        want_t *w = want_add(W);
        snprintf(w->name, sizeof w->name, "%s", hf);
        w->rank = -1;
        w->dtype = dt;
        w->alt = alt;
        w->ndim = e->ndim;
        memcpy(w->shape, shape, sizeof shape);
        continue;
      }
      char rt[200];
      dsv3_split split;
      if (dsv3_name_hf_to_rt(hf, rt, sizeof rt, &split) != 0) {
        problem(P, "tensor %s: no runtime name (%s)", hf, dsv3_error());
        continue;
      }
      int dim = split == DSV3_SPLIT_DIM0 ? 0 : split == DSV3_SPLIT_DIM1 ? 1 : -1;
      if (dim >= 0 && mp > 1) {
        if (dim >= e->ndim || shape[dim] % mp) {
          problem(P, "tensor %s: dimension %d (%lld) is not divisible by model parallel %d", rt, dim,
                  (long long)shape[dim], mp);
          continue;
        }
        shape[dim] /= mp;
      }
      int owner = -1;
      if (split == DSV3_SPLIT_EXPERT && mp > 1) {
        if (c->n_routed_experts % mp) {
          if (e->expert == 0 && !sc)
            problem(P, "layer %lld: %lld routed experts cannot be spread over %d ranks", (long long)e->layer,
                    (long long)c->n_routed_experts, mp);
          continue;
        }
        owner = (int)(e->expert / (c->n_routed_experts / mp));
      }
      for (int r = 0; r < mp; r++) {
        if (owner >= 0 && r != owner) continue;
        want_t *w = want_add(W);
        snprintf(w->name, sizeof w->name, "%s", rt);
        w->rank = r;
        w->dtype = dt;
        w->alt = alt;
        w->ndim = e->ndim;
        memcpy(w->shape, shape, sizeof shape);
      }
    }
  }
  dsv3i_expects_free(&X);
  qsort(W->w, W->n, sizeof *W->w, cmp_want);
}

/* Scale values: finite and > 0 (a zero, negative or NaN scale silently destroys a block),
 * powers of two when the config says ue8m0.  Scales are ~1/4096 of the weight bytes. */
static void check_scale_values(const char *fn, const dsv3_tensor *s, int ue8m0, probs_t *P) {
  const uint8_t *p = s->data;
  for (uint64_t i = 0; i < s->numel; i++) {
    float v;
    memcpy(&v, p + i * 4, 4);
    int e;
    if (!(v > 0) || !isfinite(v)) {
      problem(P, "%s: tensor %s: scale %llu is %g (must be finite and > 0)", fn, s->name, (unsigned long long)i, (double)v);
      return;
    }
    if (ue8m0 && frexpf(v, &e) != 0.5f) {
      problem(P, "%s: tensor %s: scale %llu is %g, not a power of two (scale_fmt ue8m0)", fn, s->name,
              (unsigned long long)i, (double)v);
      return;
    }
  }
}

static void check_scales(dsv3_ckpt *ck, probs_t *P) {
  size_t n = dsv3_ckpt_count(ck);
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    const char *fn = dsv3_ckpt_file_name(ck, f);
    int rank = dsv3_ckpt_file_rank(ck, f);
    if (t->dtype == DSV3_F8_E4M3) {
      size_t sf = f;
      const dsv3_tensor *s = dsv3i_scale_of(ck, t->name, rank, &sf);
      if (!s) {
        problem(P, "%s: tensor %s: FP8 weight without a scale", fn, t->name);
      } else if (dsv3i_scale_fits(t, s)) {
        const dsv3_config *c = dsv3_ckpt_config(ck);
        check_scale_values(dsv3_ckpt_file_name(ck, sf), s, c && strcmp(c->quant.scale_fmt, "ue8m0") == 0, P);
      } else {
        char a[96], b[96];
        dsv3i_shape_str(t, a, sizeof a);
        dsv3i_shape_str(s, b, sizeof b);
        if (t->ndim == 2)
          problem(P, "%s: tensor %s: scale %s %s does not fit weight %s (expected F32 [%lld, %lld])", fn, t->name,
                  dsv3_dtype_name(s->dtype), b, a, (long long)dsv3_ceil_div(t->shape[0], DSV3_FP8_BLOCK),
                  (long long)dsv3_ceil_div(t->shape[1], DSV3_FP8_BLOCK));
        else
          problem(P, "%s: tensor %s: FP8 weight of shape %s is not a matrix", fn, t->name, a);
      }
    } else if (dsv3i_is_scale_name(t->name)) {
      char w[1100];
      size_t l = strlen(t->name);
      if (l > 17 && strcmp(t->name + l - 17, ".weight_scale_inv") == 0) snprintf(w, sizeof w, "%.*s", (int)(l - 10), t->name);
      else snprintf(w, sizeof w, "%.*s.weight", (int)(l - 6), t->name);
      const dsv3_tensor *wt = dsv3_ckpt_find(ck, w, rank, NULL);
      if (!wt) problem(P, "%s: tensor %s: scale without a weight %s", fn, t->name, w);
      else if (wt->dtype != DSV3_F8_E4M3)
        problem(P, "%s: tensor %s: scale of %s, which is %s, not F8_E4M3", fn, t->name, w, dsv3_dtype_name(wt->dtype));
    }
  }
}

int dsv3i_check(dsv3_ckpt *ck, const dsv3i_opts *o) {
  probs_t P = {0, o->json ? cJSON_CreateArray() : NULL};
  const dsv3_config *c = dsv3_ckpt_config(ck);
  size_t n = dsv3_ckpt_count(ck), nwant = 0;
  int runtime = dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME, mp = dsv3_ckpt_mp(ck);
  dsv3_ckpt_check_index(ck, problem_cb, &P);
  check_scales(ck, &P);
  if (!c) {
    problem(&P, "%s: no config.json: the structure cannot be checked", dsv3_ckpt_path(ck));
  } else {
    int with_mtp = 0;
    size_t n_fp8 = 0;
    for (size_t i = 0; i < n; i++) {
      const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, NULL);
      if (!with_mtp) with_mtp = dsv3i_is_mtp(c, t->name);
      n_fp8 += t->dtype == DSV3_F8_E4M3;
    }
    /* A config that disagrees with the tensors about quantisation (e.g. a BF16 checkpoint
     * with the FP8 config left in place) is one problem; the structure is then checked as the
     * tensors are stored, so the other lines are real. */
    dsv3_config cq = *c;
    if (c->quant.present && n_fp8 == 0 && n > 0) {
      problem(&P, "%s: config.json has a quantization_config (fp8) but no tensor is F8_E4M3; checking as unquantised",
              dsv3_ckpt_path(ck));
      cq.quant.present = 0;
    } else if (!c->quant.present && n_fp8 > 0) {
      problem(&P, "%s: %zu F8_E4M3 tensors but config.json has no quantization_config; checking as FP8",
              dsv3_ckpt_path(ck), n_fp8);
      cq.quant.present = 1;
      cq.quant.weight_block_size[0] = cq.quant.weight_block_size[1] = DSV3_FP8_BLOCK;
    }
    wants_t W = {0};
    build_wants(&cq, runtime, mp, with_mtp, &W, &P);
    nwant = W.n;
    /* every stored tensor is expected, with its shape and dtype */
    for (size_t i = 0; i < n; i++) {
      size_t f;
      const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
      const char *fn = dsv3_ckpt_file_name(ck, f);
      want_t *w = want_find(&W, t->name, runtime ? dsv3_ckpt_file_rank(ck, f) : -1);
      if (!w) {
        /* orphan scales are reported by check_scales already */
        if (!dsv3i_is_scale_name(t->name)) problem(&P, "%s: tensor %s: not expected by config.json", fn, t->name);
        continue;
      }
      if (w->found++) continue; /* a duplicate across shards: check_index reports it */
      char a[96], b[96];
      int shape_ok = t->ndim == w->ndim && t->shape[0] == w->shape[0] && (w->ndim < 2 || t->shape[1] == w->shape[1]);
      if (!shape_ok) {
        dsv3i_shape_str(t, a, sizeof a);
        fmt_shape(w->ndim, w->shape, b, sizeof b);
        problem(&P, "%s: tensor %s: shape %s, expected %s", fn, t->name, a, b);
      }
      if (t->dtype != w->dtype && t->dtype != w->alt) {
        if (w->alt != DSV3_DT_INVALID)
          problem(&P, "%s: tensor %s: dtype %s, expected %s or %s", fn, t->name, dsv3_dtype_name(t->dtype),
                  dsv3_dtype_name(w->dtype), dsv3_dtype_name(w->alt));
        else
          problem(&P, "%s: tensor %s: dtype %s, expected %s", fn, t->name, dsv3_dtype_name(t->dtype),
                  dsv3_dtype_name(w->dtype));
      }
    }
    /* every expected tensor is stored */
    for (size_t k = 0; k < W.n; k++) {
      want_t *w = &W.w[k];
      if (w->found) continue;
      char b[96];
      fmt_shape(w->ndim, w->shape, b, sizeof b);
      if (runtime)
        problem(&P, "model%d-mp%d.safetensors: tensor %s: missing (expected %s %s)", w->rank, mp, w->name,
                dsv3_dtype_name(w->dtype), b);
      else
        problem(&P, "tensor %s: missing (expected %s %s)", w->name, dsv3_dtype_name(w->dtype), b);
    }
    free(W.w);
  }
  if (P.arr) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", P.n == 0);
    cJSON_AddNumberToObject(j, "tensors", (double)n);
    cJSON_AddNumberToObject(j, "expected", (double)nwant);
    cJSON_AddItemToObject(j, "problems", P.arr);
    dsv3i_print_json(j);
  } else if (P.n == 0) {
    printf("ok: %zu tensors match config.json%s, every FP8 weight has its scale, index consistent\n", n,
           runtime ? " (runtime layout, per-rank shapes)" : "");
  } else {
    fprintf(stderr, "%s: check failed: %d problem%s\n", DSV3I_PROG, P.n, P.n == 1 ? "" : "s");
  }
  return P.n ? 1 : 0;
}
