/* plan.c - execute output plans (see plan.h): bounded-memory, multi-threaded, zero-copy where
 * the bytes are unchanged. */
#include "plan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fp8.h"
#include "util.h"

#define B DSV3_FP8_BLOCK

static size_t out_esize(const dsv3_piece *p) {
  switch (p->kind) {
  case DSV3_PIECE_COPY: return dsv3_dtype_size(p->src->dtype);
  case DSV3_PIECE_DEQUANT: return dsv3_dtype_size(p->out_dt);
  case DSV3_PIECE_QUANT: return 1;
  }
  return 0;
}

void dsv3_plan_add(dsv3_plan_file *f, dsv3_piece proto, int64_t r0, int64_t nrows, int64_t c0,
                   int64_t ncols, uint64_t out_off, uint64_t chunk) {
  /* memory per source row: the wider of its input bytes and its (full-row) output buffer */
  size_t ies = dsv3_dtype_size(proto.src->dtype), oes = out_esize(&proto);
  uint64_t row_bytes = (uint64_t)proto.cols * (ies > oes ? ies : oes);
  int64_t per = row_bytes ? (int64_t)(chunk / row_bytes) : nrows;
  if (per < 1) per = 1;
  if (proto.kind != DSV3_PIECE_COPY) { /* whole 128-row blocks: one scale row per block */
    per = (per / B) * B;
    if (per < B) per = B;
  }
  for (int64_t r = r0; r < r0 + nrows; r += per) {
    if (f->np == f->cap) {
      f->cap = f->cap ? f->cap * 2 : 256;
      f->p = dsv3_xrealloc(f->p, f->cap * sizeof *f->p);
    }
    dsv3_piece *p = &f->p[f->np++];
    *p = proto;
    p->r0 = r;
    p->nrows = r + per <= r0 + nrows ? per : r0 + nrows - r;
    p->c0 = c0;
    p->ncols = ncols;
    uint64_t ow = (uint64_t)(proto.out_cols > 0 ? proto.out_cols : ncols) * out_esize(&proto);
    p->out_off = out_off + (uint64_t)(r - r0) * ow;
    uint64_t in = (uint64_t)p->nrows * (uint64_t)ncols * dsv3_dtype_size(proto.src->dtype);
    f->in_bytes += in;
  }
}

static void drop_pages(const void *p, uint64_t n) {
  long pg = sysconf(_SC_PAGESIZE);
  uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
  uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
  if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Write nrows rows of `rb` bytes each from buf: contiguously, or into columns of wider rows. */
static int write_rows(dsv3_plan_file *f, const dsv3_piece *p, const uint8_t *buf, size_t rb, size_t es) {
  if (p->out_cols <= 0 || p->out_cols == p->ncols)
    return dsv3_stw_pwrite(f->w, p->out, p->out_off, buf, (size_t)p->nrows * rb);
  uint64_t ow = (uint64_t)p->out_cols * es;
  for (int64_t r = 0; r < p->nrows; r++)
    if (dsv3_stw_pwrite(f->w, p->out, p->out_off + (uint64_t)r * ow + (uint64_t)p->out_c0 * es, buf + (size_t)r * rb, rb))
      return -1;
  return 0;
}

typedef struct {
  dsv3_plan_file *f;
  dsv3_progress *pg;
  int dontneed;
} run_ctx;

static int run_piece(void *vctx, size_t i, int thread) {
  (void)thread;
  run_ctx *c = vctx;
  dsv3_plan_file *f = c->f;
  const dsv3_piece *p = &f->p[i];
  size_t ies = dsv3_dtype_size(p->src->dtype);
  const uint8_t *src = (const uint8_t *)p->src->data;
  const uint8_t *rows = src + (uint64_t)p->r0 * (uint64_t)p->cols * ies;
  uint64_t in_bytes = (uint64_t)p->nrows * (uint64_t)p->cols * ies;
  int rc = 0;
  if (p->kind == DSV3_PIECE_COPY) {
    if (p->c0 == 0 && p->ncols == p->cols) {
      rc = write_rows(f, p, rows, (size_t)p->cols * ies, ies); /* straight from the map */
    } else {
      size_t rb = (size_t)p->ncols * ies;
      uint8_t *buf = dsv3_xmalloc((size_t)p->nrows * rb);
      for (int64_t r = 0; r < p->nrows; r++)
        memcpy(buf + (size_t)r * rb, rows + ((uint64_t)r * (uint64_t)p->cols + (uint64_t)p->c0) * ies, rb);
      rc = write_rows(f, p, buf, rb, ies);
      free(buf);
    }
  } else if (p->kind == DSV3_PIECE_DEQUANT) {
    size_t oes = dsv3_dtype_size(p->out_dt);
    size_t full = (size_t)p->nrows * (size_t)p->cols * oes;
    uint8_t *buf = dsv3_xmalloc(full);
    dsv3_fp8_dequant_rows(src, (const float *)p->src_scale->data, p->rows, p->cols, p->r0, p->nrows, p->out_dt, buf);
    if (p->c0 == 0 && p->ncols == p->cols) {
      rc = write_rows(f, p, buf, (size_t)p->cols * oes, oes);
    } else {
      size_t rb = (size_t)p->ncols * oes;
      for (int64_t r = 0; r < p->nrows; r++)
        memmove(buf + (size_t)r * rb, buf + ((size_t)r * (size_t)p->cols + (size_t)p->c0) * oes, rb);
      rc = write_rows(f, p, buf, rb, oes);
    }
    (void)full;
    free(buf);
  } else {
    int64_t nb = dsv3_ceil_div(p->cols, B), sb = dsv3_ceil_div(p->nrows, B);
    uint8_t *q = dsv3_xmalloc((size_t)p->nrows * (size_t)p->cols);
    float *s = dsv3_xmalloc((size_t)(sb * nb) * sizeof(float));
    if (p->src_scale) { /* given scales (--scales-from) */
      memcpy(s, (const float *)p->src_scale->data + (p->r0 / B) * nb, (size_t)(sb * nb) * sizeof(float));
      dsv3_fp8_quant_rows_given(src, p->src->dtype, p->rows, p->cols, p->r0, p->nrows, s, q);
    } else {
      dsv3_fp8_quant_rows(src, p->src->dtype, p->rows, p->cols, p->r0, p->nrows, p->ue8m0, q, s);
    }
    rc = dsv3_stw_pwrite(f->w, p->out, p->out_off, q, (size_t)p->nrows * (size_t)p->cols);
    if (!rc)
      rc = dsv3_stw_pwrite(f->w, p->out_scale, (uint64_t)(p->r0 / B) * (uint64_t)nb * 4, s,
                           (size_t)(sb * nb) * sizeof(float));
    free(q);
    free(s);
  }
  if (c->dontneed) drop_pages(rows, in_bytes);
  dsv3_progress_add(c->pg, in_bytes);
  return rc ? -1 : 0;
}

int dsv3_plan_run(dsv3_plan_file *f, int threads, struct dsv3_progress *pg, int dontneed) {
  if (dsv3_stw_open(f->w, f->path) != 0) return -1;
  run_ctx c = {f, pg, dontneed};
  if (dsv3_parallel_for(f->np, threads, run_piece, &c) != 0) return -1; /* writer frees the temp */
  return dsv3_stw_commit(f->w);
}

void dsv3_plan_file_free(dsv3_plan_file *f) {
  if (!f) return;
  dsv3_stw_free(f->w);
  free(f->p);
  free(f->path);
  f->w = NULL;
  f->p = NULL;
  f->path = NULL;
}

int dsv3_plan_output_complete(const dsv3_plan_file *f) {
  struct stat st;
  if (stat(f->path, &st) != 0 || (uint64_t)st.st_size != dsv3_stw_file_size(f->w)) return 0;
  size_t hl;
  const uint8_t *h = dsv3_stw_header(f->w, &hl);
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint8_t *buf = dsv3_xmalloc(hl);
  ssize_t r = pread(fd, buf, hl, 0);
  close(fd);
  int ok = r == (ssize_t)hl && memcmp(buf, h, hl) == 0;
  free(buf);
  return ok;
}
