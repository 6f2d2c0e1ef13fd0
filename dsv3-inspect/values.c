/* values.c - tensor values as numbers: chunked statistics and whole (logical) tensors.
 *
 * Statistics of FP8 weights never materialise the dequantised matrix: a 128x128 block has one
 * scale, so its values are table[byte] * scale; we count the 256 byte values per block
 * (a histogram) and fold the counts with the block's scale.  BF16/F16 chunks are histogrammed
 * over their 65536 bit patterns the same way.  Both give exactly the float32 values the
 * dequantisation produces, at a fraction of the cost of converting every element. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "fp8.h"
#include "inspect.h"

#define HIST_WORDS 65536        /* uint32 counters */
#define FBUF 65536              /* floats */
#define SCRATCH_BYTES (HIST_WORDS * 4 + FBUF * 4 + FBUF * 8)

void *dsv3i_scratch_new(void) { return dsv3_xmalloc(SCRATCH_BYTES); }

void dsv3i_acc_merge(dsv3i_acc *a, const dsv3i_acc *b) {
  a->nan += b->nan;
  a->inf += b->inf;
  if (b->n == 0) return;
  if (a->n == 0) {
    uint64_t nan = a->nan, inf = a->inf;
    *a = *b;
    a->nan = nan;
    a->inf = inf;
    return;
  }
  double na = (double)a->n, nb = (double)b->n, n = na + nb;
  double d = b->mean - a->mean;
  a->mean += d * nb / n;
  a->m2 += b->m2 + d * d * na * nb / n;
  a->n += b->n;
  if (b->min < a->min) a->min = b->min;
  if (b->max > a->max) a->max = b->max;
  if (b->absmax > a->absmax) a->absmax = b->absmax;
}

/* Statistics of a float buffer (two passes: exact mean, then squared deviations). */
static void acc_floats(dsv3i_acc *acc, const float *v, size_t n) {
  dsv3i_acc b = {0};
  double sum = 0, mn = INFINITY, mx = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    float x = v[i];
    if (isnan(x)) {
      b.nan++;
    } else if (isinf(x)) {
      b.inf++;
    } else {
      b.n++;
      sum += x;
      if (x < mn) mn = x;
      if (x > mx) mx = x;
    }
  }
  if (b.n) {
    b.mean = sum / (double)b.n;
    double m2 = 0;
    for (size_t i = 0; i < n; i++) {
      float x = v[i];
      if (isfinite(x)) m2 += ((double)x - b.mean) * ((double)x - b.mean);
    }
    b.m2 = m2;
    b.min = mn;
    b.max = mx;
    b.absmax = fabs(mn) > fabs(mx) ? fabs(mn) : fabs(mx);
  }
  dsv3i_acc_merge(acc, &b);
}

/* Fold a histogram of `nv` patterns whose values are val[k] (float32) into acc. */
static void acc_hist(dsv3i_acc *acc, const uint32_t *cnt, size_t nv, const float *val) {
  dsv3i_acc b = {0};
  double sum = 0, mn = INFINITY, mx = -INFINITY;
  for (size_t k = 0; k < nv; k++) {
    if (!cnt[k]) continue;
    float x = val[k];
    if (isnan(x)) b.nan += cnt[k];
    else if (isinf(x)) b.inf += cnt[k];
    else {
      b.n += cnt[k];
      sum += (double)x * cnt[k];
      if (x < mn) mn = x;
      if (x > mx) mx = x;
    }
  }
  if (b.n) {
    b.mean = sum / (double)b.n;
    double m2 = 0;
    for (size_t k = 0; k < nv; k++) {
      if (!cnt[k] || !isfinite(val[k])) continue;
      double d = (double)val[k] - b.mean;
      m2 += d * d * cnt[k];
    }
    b.m2 = m2;
    b.min = mn;
    b.max = mx;
    b.absmax = fabs(mn) > fabs(mx) ? fabs(mn) : fabs(mx);
  }
  dsv3i_acc_merge(acc, &b);
}

static const float *half_table(dsv3_dtype dt) {
  /* value of every 16-bit pattern; built once per dtype (racing builders write equal values) */
  static float *tab[2];
  int k = dt == DSV3_BF16 ? 0 : 1;
  float *t = __atomic_load_n(&tab[k], __ATOMIC_ACQUIRE);
  if (t) return t;
  float *nt = dsv3_xmalloc(65536 * sizeof(float));
  for (uint32_t h = 0; h < 65536; h++) nt[h] = dt == DSV3_BF16 ? dsv3_bf16_to_f32((uint16_t)h) : dsv3_f16_to_f32((uint16_t)h);
  float *expected = NULL;
  if (__atomic_compare_exchange_n(&tab[k], &expected, nt, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return nt;
  free(nt);
  return expected;
}

static void stats_fp8(const dsv3_tensor *t, const dsv3_tensor *s, int64_t r0, int64_t nr, dsv3i_acc *acc,
                      uint32_t *hist) {
  const int64_t B = DSV3_FP8_BLOCK, M = t->shape[0], N = t->shape[1];
  const int64_t nbc = dsv3_ceil_div(N, B), group = HIST_WORDS / 512;
  const uint8_t *w = t->data;
  const uint8_t *sp = s->data;
  const float *e4 = dsv3_e4m3_table();
  float val[256];
  int64_t end = r0 + nr < M ? r0 + nr : M;
  for (int64_t br0 = r0; br0 < end; br0 += B) {
    int64_t br1 = br0 + B < end ? br0 + B : end, br = br0 / B;
    for (int64_t g0 = 0; g0 < nbc; g0 += group) {
      int64_t g1 = g0 + group < nbc ? g0 + group : nbc;
      /* two histograms per block (even and odd bytes of each 8-byte word) so consecutive
       * increments rarely hit the same counter */
      memset(hist, 0, (size_t)(g1 - g0) * 512 * sizeof(uint32_t));
      for (int64_t r = br0; r < br1; r++) {
        const uint8_t *row = w + r * N;
        for (int64_t cb = g0; cb < g1; cb++) {
          uint32_t *h0 = hist + (cb - g0) * 512, *h1 = h0 + 256;
          int64_t c = cb * B, c1 = (cb + 1) * B < N ? (cb + 1) * B : N;
          for (; c + 8 <= c1; c += 8) {
            uint64_t x;
            memcpy(&x, row + c, 8);
            h0[x & 0xff]++;
            h1[(x >> 8) & 0xff]++;
            h0[(x >> 16) & 0xff]++;
            h1[(x >> 24) & 0xff]++;
            h0[(x >> 32) & 0xff]++;
            h1[(x >> 40) & 0xff]++;
            h0[(x >> 48) & 0xff]++;
            h1[x >> 56]++;
          }
          for (; c < c1; c++) h0[row[c]]++;
        }
      }
      for (int64_t cb = g0; cb < g1; cb++) {
        uint32_t *h0 = hist + (cb - g0) * 512, *h1 = h0 + 256;
        for (int v = 0; v < 256; v++) h0[v] += h1[v];
        float sc;
        memcpy(&sc, sp + (size_t)(br * nbc + cb) * 4, 4); /* scales may sit unaligned */
        for (int v = 0; v < 256; v++) val[v] = e4[v] * sc; /* the float32 product, as dequant */
        acc_hist(acc, h0, 256, val);
      }
    }
  }
}

void dsv3i_stats_chunk(const dsv3_tensor *t, const dsv3_tensor *scale, int64_t r0, int64_t nr,
                       dsv3i_acc *acc, void *scratch) {
  uint32_t *hist = scratch;
  float *fb = (float *)((char *)scratch + HIST_WORDS * 4);
  void *bounce = (char *)scratch + HIST_WORDS * 4 + FBUF * 4;
  if (t->dtype == DSV3_F8_E4M3 && dsv3i_scale_fits(t, scale)) {
    stats_fp8(t, scale, r0, nr, acc, hist);
    return;
  }
  const uint8_t *p = t->data;
  size_t esz = dsv3_dtype_size(t->dtype);
  uint64_t i0 = (uint64_t)r0, i1 = (uint64_t)(r0 + nr);
  if ((t->dtype == DSV3_BF16 || t->dtype == DSV3_F16) && nr >= 65536) {
    memset(hist, 0, HIST_WORDS * 4);
    for (uint64_t i = i0; i < i1; i++) hist[p[2 * i] | (p[2 * i + 1] << 8)]++;
    acc_hist(acc, hist, 65536, half_table(t->dtype));
    return;
  }
  for (uint64_t i = i0; i < i1; i += FBUF) {
    size_t k = i1 - i < FBUF ? (size_t)(i1 - i) : FBUF;
    memcpy(bounce, p + i * esz, k * esz); /* dsv3_to_f32 reads aligned elements */
    dsv3_to_f32(t->dtype, bounce, fb, k);
    acc_floats(acc, fb, k);
  }
}

/* ------------------------------------------------------------------ logical tensors */
typedef struct {
  char *hf;
  const dsv3_tensor *t;
  int rank;
} lent;

static int cmp_lent(const void *a, const void *b) {
  const lent *x = a, *y = b;
  int c = strcmp(x->hf, y->hf);
  return c ? c : (x->rank > y->rank) - (x->rank < y->rank);
}

static void rows_cols(const dsv3_tensor *t, int64_t *rows, int64_t *cols) {
  if (t->ndim == 0) {
    *rows = *cols = 1;
    return;
  }
  int64_t c = 1;
  for (int i = 1; i < t->ndim; i++) c *= t->shape[i];
  *rows = t->shape[0];
  *cols = c;
}

static char *fmt_problem(const char *fmt, const char *a) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, a);
  return dsv3_xstrdup(buf);
}

void dsv3i_lview_build(const dsv3_ckpt *ck, dsv3i_lview *v) {
  size_t n = dsv3_ckpt_count(ck), k = 0;
  lent *e = dsv3_xmalloc((n ? n : 1) * sizeof *e);
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (dsv3i_is_scale_name(t->name)) continue;
    char hf[1024];
    dsv3i_hf_name(ck, t->name, hf, sizeof hf);
    e[k].hf = dsv3_xstrdup(hf);
    e[k].t = t;
    e[k].rank = dsv3_ckpt_file_rank(ck, f);
    k++;
  }
  qsort(e, k, sizeof *e, cmp_lent);
  int mp = dsv3_ckpt_mp(ck);
  int runtime = dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME && mp > 1;
  v->t = dsv3_xcalloc(k ? k : 1, sizeof *v->t);
  v->n = 0;
  for (size_t i = 0; i < k;) {
    size_t j = i + 1;
    while (j < k && strcmp(e[j].hf, e[i].hf) == 0) j++;
    dsv3i_ltensor *lt = &v->t[v->n++];
    const dsv3_tensor *t0 = e[i].t;
    lt->name = e[i].hf;
    for (size_t q = i + 1; q < j; q++) free(e[q].hf);
    lt->dtype = t0->dtype;
    lt->ndim = t0->ndim;
    memcpy(lt->shape, t0->shape, sizeof lt->shape);
    dsv3_split sp = runtime ? dsv3_name_rt_split(t0->name) : DSV3_SPLIT_NONE;
    int dim = sp == DSV3_SPLIT_DIM0 ? 0 : sp == DSV3_SPLIT_DIM1 ? 1 : -1;
    if (dim >= 0) {
      int ok = (int)(j - i) == mp && t0->ndim > dim;
      for (size_t q = i; ok && q < j; q++) {
        const dsv3_tensor *u = e[q].t;
        ok = e[q].rank == (int)(q - i) && u->dtype == t0->dtype && u->ndim == t0->ndim &&
             memcmp(u->shape, t0->shape, sizeof(int64_t) * (size_t)t0->ndim) == 0;
      }
      if (dim == 1 && t0->ndim != 2) ok = 0;
      if (!ok) {
        lt->problem = fmt_problem("slices of %s on the ranks are missing or disagree in dtype or shape", lt->name);
        i = j;
        continue;
      }
      lt->shape[dim] *= mp;
      lt->np = mp;
    } else {
      lt->np = 1;
      /* a replicated tensor must be the same on every rank: compare the copies' bytes */
      for (size_t q = i + 1; q < j && !lt->problem; q++) {
        const dsv3_tensor *u = e[q].t;
        if (u->dtype != t0->dtype || u->nbytes != t0->nbytes ||
            (t0->nbytes && memcmp(u->data, t0->data, t0->nbytes) != 0))
          lt->problem = fmt_problem("the copies of %s on the ranks differ", lt->name);
      }
    }
    lt->p = dsv3_xcalloc((size_t)lt->np, sizeof *lt->p);
    for (int q = 0; q < lt->np; q++) {
      dsv3i_part *p = &lt->p[q];
      const dsv3_tensor *u = e[i + (size_t)q].t;
      p->t = u;
      rows_cols(u, &p->rows, &p->cols);
      if (dim == 0) p->r0 = q * p->rows;
      if (dim == 1) p->c0 = q * p->cols;
      lt->nbytes += u->nbytes;
      if (u->dtype == DSV3_F8_E4M3) {
        const dsv3_tensor *s = dsv3i_scale_of(ck, u->name, e[i + (size_t)q].rank, NULL);
        if (dsv3i_scale_fits(u, s)) p->scale = s;
        else if (!lt->problem) lt->problem = fmt_problem("FP8 weight %s has no scale of the right shape", u->name);
      }
    }
    dsv3_tensor tmp = {.ndim = lt->ndim};
    memcpy(tmp.shape, lt->shape, sizeof tmp.shape);
    rows_cols(&tmp, &lt->rows, &lt->cols);
    i = j;
  }
  free(e);
}

void dsv3i_lview_free(dsv3i_lview *v) {
  for (size_t i = 0; i < v->n; i++) {
    free(v->t[i].name);
    free(v->t[i].p);
    free(v->t[i].problem);
  }
  free(v->t);
  memset(v, 0, sizeof *v);
}

void dsv3i_ltensor_rows(const dsv3i_ltensor *lt, int64_t r0, int64_t nr, float *out, float *tmp) {
  for (int q = 0; q < lt->np; q++) {
    const dsv3i_part *p = &lt->p[q];
    int64_t lo = r0 > p->r0 ? r0 : p->r0;
    int64_t hi = r0 + nr < p->r0 + p->rows ? r0 + nr : p->r0 + p->rows;
    if (lo >= hi) continue;
    int64_t n = hi - lo;
    int direct = p->cols == lt->cols;
    float *dst = direct ? out + (lo - r0) * lt->cols : tmp;
    if (p->scale) {
      dsv3_fp8_dequant_rows(p->t->data, p->scale->data, p->rows, p->cols, lo - p->r0, n, DSV3_F32, dst);
    } else {
      size_t esz = dsv3_dtype_size(p->t->dtype);
      const uint8_t *src = (const uint8_t *)p->t->data + (size_t)((lo - p->r0) * p->cols) * esz;
      size_t cnt = (size_t)(n * p->cols);
      if (esz > 1 && ((uintptr_t)src % esz) != 0) { /* unaligned: go through a copy */
        void *b = dsv3_xmalloc(cnt * esz);
        memcpy(b, src, cnt * esz);
        dsv3_to_f32(p->t->dtype, b, dst, cnt);
        free(b);
      } else {
        dsv3_to_f32(p->t->dtype, src, dst, cnt);
      }
    }
    if (!direct)
      for (int64_t r = 0; r < n; r++)
        memcpy(out + (lo - r0 + r) * lt->cols + p->c0, tmp + r * p->cols, (size_t)p->cols * sizeof(float));
  }
}
