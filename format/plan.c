/* plan.c - execute output plans (see plan.h): bounded-memory, multi-threaded, zero-copy where
 * the bytes are unchanged. */
#include "plan.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <xxhash.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fp8.h"
#include "checkpoint.h"
#include "manifest.h"
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
  /* ordered hashing */
  int hashing;
  size_t next;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  EVP_MD_CTX *sha;
  XXH3_state_t **xs;
} run_ctx;

/* Hash piece i's output bytes once every earlier piece is hashed (file order). */
static void hash_in_order(run_ctx *c, size_t i, const dsv3_piece *p, const uint8_t *bytes, size_t n) {
  if (!c->hashing) return;
  pthread_mutex_lock(&c->mu);
  while (c->next != i) pthread_cond_wait(&c->cv, &c->mu);
  EVP_DigestUpdate(c->sha, bytes, n);
  XXH3_128bits_update(c->xs[p->out], bytes, n);
  c->next++;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

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
      hash_in_order(c, i, p, rows, in_bytes);
    } else {
      size_t rb = (size_t)p->ncols * ies;
      uint8_t *buf = dsv3_xmalloc((size_t)p->nrows * rb);
      for (int64_t r = 0; r < p->nrows; r++)
        memcpy(buf + (size_t)r * rb, rows + ((uint64_t)r * (uint64_t)p->cols + (uint64_t)p->c0) * ies, rb);
      rc = write_rows(f, p, buf, rb, ies);
      hash_in_order(c, i, p, buf, (size_t)p->nrows * rb);
      free(buf);
    }
  } else if (p->kind == DSV3_PIECE_DEQUANT) {
    size_t oes = dsv3_dtype_size(p->out_dt);
    size_t full = (size_t)p->nrows * (size_t)p->cols * oes;
    uint8_t *buf = dsv3_xmalloc(full);
    dsv3_fp8_dequant_rows(src, (const float *)p->src_scale->data, p->rows, p->cols, p->r0, p->nrows, p->out_dt, buf);
    if (p->c0 == 0 && p->ncols == p->cols) {
      rc = write_rows(f, p, buf, (size_t)p->cols * oes, oes);
      hash_in_order(c, i, p, buf, full);
    } else {
      size_t rb = (size_t)p->ncols * oes;
      for (int64_t r = 0; r < p->nrows; r++)
        memmove(buf + (size_t)r * rb, buf + ((size_t)r * (size_t)p->cols + (size_t)p->c0) * oes, rb);
      rc = write_rows(f, p, buf, rb, oes);
      hash_in_order(c, i, p, buf, (size_t)p->nrows * rb);
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

static uint64_t piece_abs(const dsv3_plan_file *f, const dsv3_piece *p) {
  return dsv3_stw_offset(f->w, p->out) + p->out_off;
}
static const dsv3_plan_file *sort_f;
static int cmp_piece(const void *a, const void *b) {
  uint64_t x = piece_abs(sort_f, a), y = piece_abs(sort_f, b);
  return x < y ? -1 : x > y;
}

/* Do the (sorted) pieces tile the data section exactly, one contiguous range each? */
static int pieces_tile(const dsv3_plan_file *f) {
  size_t hl;
  dsv3_stw_header(f->w, &hl);
  uint64_t pos = hl;
  for (size_t i = 0; i < f->np; i++) {
    const dsv3_piece *p = &f->p[i];
    if (p->kind == DSV3_PIECE_QUANT || (p->out_cols > 0 && p->out_cols != p->ncols)) return 0;
    uint64_t n = (uint64_t)p->nrows * (uint64_t)p->ncols * out_esize(p);
    if (piece_abs(f, p) != pos) {
      /* a gap may only be zero-size tensors, which have no pieces */
      return 0;
    }
    pos += n;
  }
  return pos == dsv3_stw_file_size(f->w);
}

static void finish_xxh(dsv3_plan_file *f, XXH3_state_t **xs) {
  size_t nt = dsv3_stw_count(f->w);
  f->xxh3 = dsv3_xcalloc(nt ? nt : 1, 16);
  for (size_t t = 0; t < nt; t++) {
    XXH128_canonical_t cn;
    XXH128_canonicalFromHash(&cn, XXH3_128bits_digest(xs[t]));
    memcpy(f->xxh3[t], cn.digest, 16);
    XXH3_freeState(xs[t]);
  }
  free(xs);
}

/* Fallback: hash the committed file by reading it back once. */
static int hash_by_reading(dsv3_plan_file *f) {
  dsv3_st *st;
  if (dsv3_st_open(f->path, &st) != 0) return -1;
  size_t nt = dsv3_stw_count(f->w);
  XXH3_state_t **xs = dsv3_xcalloc(nt ? nt : 1, sizeof *xs);
  for (size_t t = 0; t < nt; t++) {
    xs[t] = XXH3_createState();
    XXH3_128bits_reset(xs[t]);
  }
  for (size_t i = 0; i < dsv3_st_count(st); i++) {
    const dsv3_tensor *t = dsv3_st_tensor(st, i);
    int k = dsv3_stw_find(f->w, t->name);
    if (k >= 0) XXH3_128bits_update(xs[k], t->data, t->nbytes);
  }
  dsv3_st_close(st);
  finish_xxh(f, xs);
  f->hashed_by_reading = 1;
  return dsv3_sha256_file(f->path, f->sha256, NULL);
}

/* Open f's writer, order its pieces by file offset, set up ordered hashing. */
static int run_prepare(dsv3_plan_file *f, run_ctx *c, struct dsv3_progress *pg, int dontneed) {
  memset(c, 0, sizeof *c);
  c->f = f;
  c->pg = pg;
  c->dontneed = dontneed;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (dsv3_stw_open(f->w, f->path) != 0) return -1;
  sort_f = f; /* single-threaded here */
  if (f->np) qsort(f->p, f->np, sizeof *f->p, cmp_piece); /* file order: sequential writes, ordered hashing */
  sort_f = NULL;
  size_t nt = dsv3_stw_count(f->w);
  if (f->hash && pieces_tile(f)) {
    c->hashing = 1;
    c->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL);
    size_t hl;
    const void *h = dsv3_stw_header(f->w, &hl);
    EVP_DigestUpdate(c->sha, h, hl);
    c->xs = dsv3_xcalloc(nt ? nt : 1, sizeof *c->xs);
    for (size_t t = 0; t < nt; t++) {
      c->xs[t] = XXH3_createState();
      XXH3_128bits_reset(c->xs[t]);
    }
  }
  return 0;
}

static void run_finish_hash(run_ctx *c) {
  if (c->hashing) {
    unsigned int len = 32;
    EVP_DigestFinal_ex(c->sha, c->f->sha256, &len);
    EVP_MD_CTX_free(c->sha);
    finish_xxh(c->f, c->xs);
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

typedef struct {
  run_ctx *cs;
  uint32_t *file;
  size_t *piece;
} many_ctx;

static int many_task(void *v, size_t k, int thread) {
  many_ctx *m = v;
  return run_piece(&m->cs[m->file[k]], m->piece[k], thread);
}

static int commit_task(void *v, size_t j, int thread) {
  (void)thread;
  run_ctx *c = &((run_ctx *)v)[j];
  if (dsv3_stw_commit(c->f->w) != 0) return -1;
  if (c->f->hash && !c->hashing) return hash_by_reading(c->f);
  return 0;
}

int dsv3_plan_run_many(dsv3_plan_file **fs, size_t n, size_t window, int threads, struct dsv3_progress *pg,
                       int dontneed) {
  if (window < 1) window = 1;
  for (size_t g = 0; g < n; g += window) {
    size_t gn = n - g < window ? n - g : window, total = 0, maxp = 0;
    run_ctx *cs = dsv3_xcalloc(gn, sizeof *cs);
    int rc = 0;
    size_t opened = 0;
    for (; opened < gn && !rc; opened++) rc = run_prepare(fs[g + opened], &cs[opened], pg, dontneed);
    if (rc) opened--; /* the failed one opened nothing */
    for (size_t j = 0; j < gn; j++) {
      total += fs[g + j]->np;
      if (fs[g + j]->np > maxp) maxp = fs[g + j]->np;
    }
    if (!rc) {
      /* pieces of the files interleaved: each file's hash chain advances in parallel with the
       * others', and each file's pieces still run in their own (file) order */
      many_ctx m = {cs, dsv3_xmalloc((total ? total : 1) * sizeof(uint32_t)), dsv3_xmalloc((total ? total : 1) * sizeof(size_t))};
      size_t k = 0;
      for (size_t r = 0; r < maxp; r++)
        for (size_t j = 0; j < gn; j++)
          if (r < fs[g + j]->np) {
            m.file[k] = (uint32_t)j;
            m.piece[k++] = r;
          }
      rc = dsv3_parallel_for(total, threads, many_task, &m);
      free(m.file);
      free(m.piece);
    }
    for (size_t j = 0; j < opened; j++) run_finish_hash(&cs[j]);
    if (!rc) rc = dsv3_parallel_for(gn, (int)gn, commit_task, cs); /* fsyncs overlap */
    free(cs);
    if (rc) return -1; /* uncommitted writers remove their temp files when freed */
  }
  return 0;
}

int dsv3_plan_run_all(dsv3_plan_file **fs, size_t n, int threads, struct dsv3_progress *pg, int dontneed,
                      void (*after)(void *), void *ctx, const char *prog) {
  const char *stop = getenv("DSV3_TEST_STOP_AFTER_FILES"); /* test hook: stop as a kill would */
  if (threads <= 0) threads = dsv3_num_cpus();
  size_t window = stop ? 1 : (size_t)(threads < 16 ? (threads > 1 ? threads : 2) : 16);
  for (size_t i = 0; i < n; i += window) {
    size_t k = n - i < window ? n - i : window;
    if (dsv3_plan_run_many(fs + i, k, k, threads, pg, dontneed) != 0) return -1;
    if (after) after(ctx);
    if (stop && (size_t)atoi(stop) == i + 1) {
      fprintf(stderr, "%s: stopping after %zu files (DSV3_TEST_STOP_AFTER_FILES)\n", prog, i + 1);
      _Exit(3);
    }
  }
  return 0;
}

int dsv3_plan_run(dsv3_plan_file *f, int threads, struct dsv3_progress *pg, int dontneed) {
  return dsv3_plan_run_many(&f, 1, 1, threads, pg, dontneed);
}

void dsv3_plan_file_free(dsv3_plan_file *f) {
  if (!f) return;
  free(f->xxh3);
  f->xxh3 = NULL;
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

int dsv3_plan_manifest_add(dsv3_plan_file *f, struct dsv3_manifest *m, const char *name) {
  if (!f->xxh3 && hash_by_reading(f) != 0) return -1; /* e.g. a file skipped by --resume */
  size_t hl;
  const void *h = dsv3_stw_header(f->w, &hl);
  dsv3_st *view;
  if (dsv3_st_open_header(h, hl, dsv3_stw_file_size(f->w), name, &view) != 0) return -1;
  dsv3_manifest_file *mf = dsv3_manifest_add_file(m, name, 0);
  mf->size = dsv3_stw_file_size(f->w);
  memcpy(mf->sha256, f->sha256, 32);
  mf->ntensors = dsv3_st_count(view);
  mf->t = dsv3_xcalloc(mf->ntensors ? mf->ntensors : 1, sizeof *mf->t);
  for (size_t i = 0; i < mf->ntensors; i++) {
    const dsv3_tensor *t = dsv3_st_tensor(view, i);
    dsv3_manifest_tensor *mt = &mf->t[i];
    mt->name = dsv3_xstrdup(t->name);
    mt->dtype = t->dtype;
    mt->ndim = t->ndim;
    memcpy(mt->shape, t->shape, sizeof mt->shape);
    memcpy(mt->xxh3, f->xxh3[dsv3_stw_find(f->w, t->name)], 16);
  }
  dsv3_st_close(view);
  return 0;
}

typedef struct {
  dsv3_manifest *m;
  char **paths;
  const dsv3_ckpt *ck;
} inhash_ctx;

static int inhash_task(void *vctx, size_t i, int thread) {
  (void)thread;
  inhash_ctx *c = vctx;
  uint64_t n;
  /* files are read (page cache, no RSS growth); archive members are hashed in memory */
  const void *img = c->ck && dsv3_ckpt_in_memory(c->ck) ? dsv3_st_image(dsv3_ckpt_file(c->ck, i), &n) : NULL;
  if (!img) return dsv3_sha256_file(c->paths[i], c->m->inputs[i].sha256, NULL);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  EVP_DigestUpdate(ctx, img, (size_t)n);
  unsigned int len = 32;
  EVP_DigestFinal_ex(ctx, c->m->inputs[i].sha256, &len);
  EVP_MD_CTX_free(ctx);
  c->m->inputs[i].size = n;
  return 0;
}

static int hash_inputs(struct dsv3_manifest *m, char **paths, const char **names, size_t n, int threads,
                       const dsv3_ckpt *ck) {
  for (size_t i = 0; i < n; i++) {
    dsv3_manifest_file *f = dsv3_manifest_add_file(m, names[i], 1);
    struct stat st;
    if (stat(paths[i], &st) == 0) f->size = (uint64_t)st.st_size;
  }
  inhash_ctx c = {m, paths, ck};
  return dsv3_parallel_for(n, threads, inhash_task, &c);
}

int dsv3_manifest_hash_inputs(struct dsv3_manifest *m, char **paths, const char **names, size_t n, int threads) {
  return hash_inputs(m, paths, names, n, threads, NULL);
}

/* Input hashing in the background, while the outputs are written (the inputs are being read
 * anyway, so the hasher mostly reads the page cache). */
struct dsv3_input_hasher {
  pthread_t tid;
  dsv3_manifest m;
  char **paths;
  const char **names;
  size_t n;
  const dsv3_ckpt *ck;
  int rc;
  char err[1024];
};

static void *input_hasher_main(void *arg) {
  dsv3_input_hasher *h = arg;
  h->rc = hash_inputs(&h->m, h->paths, h->names, h->n, 1, h->ck);
  if (h->rc) snprintf(h->err, sizeof h->err, "%s", dsv3_error());
  return NULL;
}

dsv3_input_hasher *dsv3_input_hasher_start(const dsv3_ckpt *in) {
  dsv3_input_hasher *h = dsv3_xcalloc(1, sizeof *h);
  h->ck = in;
  h->n = dsv3_ckpt_nfiles(in);
  h->paths = dsv3_xcalloc(h->n ? h->n : 1, sizeof(char *));
  h->names = dsv3_xcalloc(h->n ? h->n : 1, sizeof(char *));
  for (size_t i = 0; i < h->n; i++) {
    h->paths[i] = (char *)dsv3_st_path(dsv3_ckpt_file(in, i));
    h->names[i] = dsv3_ckpt_file_name(in, i);
  }
  if (pthread_create(&h->tid, NULL, input_hasher_main, h) != 0) input_hasher_main(h), h->tid = 0;
  return h;
}

static int input_hasher_finish(dsv3_input_hasher *h, dsv3_manifest *into) {
  if (h->tid) pthread_join(h->tid, NULL);
  int rc = h->rc;
  if (rc) dsv3_error_set("%s", h->err);
  into->inputs = h->m.inputs;
  into->ninputs = h->m.ninputs;
  h->m.inputs = NULL;
  h->m.ninputs = 0;
  dsv3_manifest_free(&h->m);
  free(h->paths);
  free(h->names);
  free(h);
  return rc;
}

void dsv3_input_hasher_cancel(dsv3_input_hasher *h) {
  if (!h) return;
  dsv3_manifest m = {0};
  input_hasher_finish(h, &m);
  dsv3_manifest_free(&m);
}

int dsv3_plan_write_manifest(dsv3_plan_file *pf, size_t n, const dsv3_ckpt *in, dsv3_input_hasher *ih,
                             const char *tool, int argc, char **argv, const char *out_dir, int threads) {
  dsv3_manifest m = {0};
  m.tool = dsv3_xstrdup(tool);
  m.version = dsv3_xstrdup(DSV3_VERSION);
  size_t al = 1;
  for (int i = 0; i < argc; i++) al += strlen(argv[i]) + 1;
  m.args = dsv3_xcalloc(al, 1);
  for (int i = 0; i < argc; i++) {
    if (i) strcat(m.args, " ");
    strcat(m.args, argv[i]);
  }
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const char *b = strrchr(pf[i].path, '/');
    rc = dsv3_plan_manifest_add(&pf[i], &m, b ? b + 1 : pf[i].path);
  }
  if (!ih) ih = dsv3_input_hasher_start(in);
  int ihrc = input_hasher_finish(ih, &m);
  if (!rc) rc = ihrc;
  (void)threads;
  if (!rc) {
    char *mp = dsv3_path_join(out_dir, DSV3_MANIFEST_NAME);
    rc = dsv3_manifest_write(&m, mp);
    free(mp);
  }
  dsv3_manifest_free(&m);
  return rc;
}
