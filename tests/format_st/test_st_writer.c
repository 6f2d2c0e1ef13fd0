/* safetensors streaming writer: declaration errors, the reference layout (order, offsets, header
 * padding) read back by our own reader, data pwritten from many threads, misuse reported, the
 * final name appearing only at commit (free without commit, a killed writer, an existing file
 * replaced only at commit), layout reentrant across threads, dsv3_st_write_file.  The
 * byte-for-byte comparison with the Python library is writer_interop.py (st_writer_python). */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "util.h"

static char tmpdir[] = "/tmp/dsv3-st-writer-XXXXXX";

static int temps(void) {
  DIR *d = opendir(tmpdir);
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d)))
    if (strstr(de->d_name, ".tmp.")) n++;
  closedir(d);
  return n;
}

/* A deterministic set of tensors: every dtype, assorted shapes. */
#define NT 48
static char tname[NT][32];
static dsv3_dtype tdt[NT];
static int tnd[NT];
static int64_t tshape[NT][DSV3_MAX_DIMS];
static uint8_t *tdata[NT];
static uint64_t tbytes[NT];

static void make_tensors(void) {
  static const int64_t shapes[][4] = {{0}, {7, 0}, {1, 0}, {3, 5, 0}, {2, 0, 0}, {1000, 33, 0}, {0, 4, 0}, {129, 0}};
  static const int nds[] = {0, 1, 1, 2, 2, 2, 2, 1};
  for (int i = 0; i < NT; i++) {
    snprintf(tname[i], sizeof tname[i], "layer.%d.%s", (i * 17) % NT, i % 2 ? "w" : "b");
    tdt[i] = (dsv3_dtype)(1 + i % (DSV3_DT_COUNT - 1));
    tnd[i] = nds[i % 8];
    uint64_t n = dsv3_dtype_size(tdt[i]);
    for (int d = 0; d < tnd[i]; d++) {
      tshape[i][d] = shapes[i % 8][d];
      n *= (uint64_t)tshape[i][d];
    }
    tbytes[i] = n;
    tdata[i] = dsv3_xmalloc(n ? n : 1);
    for (uint64_t k = 0; k < n; k++) tdata[i][k] = (uint8_t)(k * 31 + (uint64_t)i * 7 + 3);
  }
}

typedef struct {
  dsv3_stw *w;
  int *idx;
} wctx;
/* task i: one 1000-byte chunk of some tensor, in a scrambled order */
static size_t nchunks;
static int chunk_tensor[100000];
static uint64_t chunk_off[100000];
static int write_task(void *vc, size_t i, int thread) {
  (void)thread;
  wctx *c = vc;
  size_t j = (i * 7919) % nchunks;
  int t = chunk_tensor[j];
  uint64_t off = chunk_off[j], n = tbytes[t] - off < 1000 ? tbytes[t] - off : 1000;
  return dsv3_stw_pwrite(c->w, c->idx[t], off, tdata[t] + off, (size_t)n);
}

static dsv3_stw *declare(int *idx) {
  dsv3_stw *w = dsv3_stw_new();
  dsv3_stw_set_meta(w, "format", "pt");
  for (int i = 0; i < NT; i++) idx[i] = dsv3_stw_add(w, tname[i], tdt[i], tnd[i], tshape[i]);
  return w;
}

static char *ref_header;
static size_t ref_header_len;
static int layout_task(void *ctx, size_t i, int thread) {
  (void)ctx;
  (void)i;
  (void)thread;
  int idx[NT];
  dsv3_stw *w = declare(idx);
  dsv3_stw_layout(w);
  size_t n;
  const void *h = dsv3_stw_header(w, &n);
  int same = n == ref_header_len && !memcmp(h, ref_header, n);
  dsv3_stw_free(w);
  if (!same) dsv3_error_set("layout differs in a thread");
  return same ? 0 : 1;
}

int main(void) {
  if (!mkdtemp(tmpdir)) return 77;
  make_tensors();
  int64_t sh[DSV3_MAX_DIMS + 1] = {2, 3, 4, 1, 1, 1, 1, 1, 1};

  /* ---- declarations ---- */
  {
    dsv3_stw *w = dsv3_stw_new();
    CHECK(dsv3_stw_add(w, "a", DSV3_DT_INVALID, 1, sh) < 0, "invalid dtype");
    CHECK(dsv3_stw_add(w, "a", DSV3_F32, DSV3_MAX_DIMS + 1, sh) < 0, "too many dims");
    int64_t neg[1] = {-1};
    CHECK(dsv3_stw_add(w, "a", DSV3_F32, 1, neg) < 0, "negative dim");
    int64_t huge[3] = {INT64_MAX, INT64_MAX, 2};
    CHECK(dsv3_stw_add(w, "a", DSV3_F32, 3, huge) < 0 && strstr(dsv3_error(), "tensor a"), "byte size overflow: %s", dsv3_error());
    CHECK(dsv3_stw_add(w, "__metadata__", DSV3_F32, 1, sh) < 0, "__metadata__ as a name");
    CHECK(dsv3_stw_add(w, "a", DSV3_F32, 2, sh) == 0 && dsv3_stw_add(w, "b", DSV3_U8, 0, sh) == 1, "valid adds");
    CHECK(dsv3_stw_add(w, "a", DSV3_U8, 1, sh) < 0 && strstr(dsv3_error(), "tensor a: declared twice"), "duplicate: %s", dsv3_error());
    CHECK(dsv3_stw_count(w) == 2 && dsv3_stw_find(w, "b") == 1 && dsv3_stw_find(w, "c") == -1, "count/find");
    CHECK(dsv3_stw_pwrite(w, 0, 0, "x", 1) == -1 && strstr(dsv3_error(), "before open"), "pwrite before open: %s", dsv3_error());
    CHECK(dsv3_stw_commit(w) == -1, "commit before open");
    CHECK(dsv3_stw_layout(w) == 0 && dsv3_stw_layout(w) == 0, "layout twice");
    CHECK(dsv3_stw_add(w, "c", DSV3_U8, 1, sh) < 0 && dsv3_stw_set_meta(w, "k", "v") < 0, "add/meta after layout");
    /* F32 [2,3] (24 bytes) before U8 0-d (1 byte); header padded to a multiple of 8 with spaces */
    size_t hl;
    const uint8_t *h = dsv3_stw_header(w, &hl);
    const char *want = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[24,25]}}";
    size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
    CHECK(hl == 8 + padded && h[0] == (uint8_t)padded && !memcmp(h + 8, want, wl), "header: %.*s", (int)(hl - 8), h + 8);
    int spaces = 1;
    for (size_t i = 8 + wl; i < hl; i++) spaces &= h[i] == ' ';
    CHECK(spaces, "padding is spaces");
    CHECK(dsv3_stw_offset(w, 0) == hl && dsv3_stw_offset(w, 1) == hl + 24 && dsv3_stw_nbytes(w, 1) == 1 &&
              dsv3_stw_file_size(w) == hl + 25,
          "offsets");
    CHECK(dsv3_stw_offset(w, 7) == 0 && dsv3_stw_nbytes(w, -1) == 0, "out-of-range index");
    dsv3_stw_free(w);
    /* no tensors at all: "{}" padded to 8 */
    w = dsv3_stw_new();
    dsv3_stw_layout(w);
    h = dsv3_stw_header(w, &hl);
    CHECK(hl == 16 && !memcmp(h + 8, "{}      ", 8), "empty file header");
    dsv3_stw_free(w);
  }

  /* ---- the layout, read back through our reader ---- */
  int idx[NT];
  dsv3_stw *w = declare(idx);
  CHECK(dsv3_stw_layout(w) == 0, "layout");
  size_t hl;
  const uint8_t *h = dsv3_stw_header(w, &hl);
  ref_header = dsv3_xmalloc(hl);
  memcpy(ref_header, h, hl);
  ref_header_len = hl;
  CHECK((hl - 8) % 8 == 0, "header length %zu not padded", hl);
  {
    dsv3_st *st;
    CHECK(dsv3_st_open_header(h, hl, dsv3_stw_file_size(w), "layout", &st) == 0, "our reader rejects our header: %s",
          dsv3_error());
    if (st) {
      CHECK(dsv3_st_count(st) == NT && dsv3_st_meta_get(st, "format"), "count/meta");
      for (size_t k = 0; k < dsv3_st_count(st); k++) {
        const dsv3_tensor *t = dsv3_st_tensor(st, k);
        int i = dsv3_stw_find(w, t->name);
        CHECK(i >= 0 && dsv3_stw_offset(w, idx[i]) == hl + t->begin && dsv3_stw_nbytes(w, idx[i]) == t->nbytes,
              "%s: offset", t->name);
        if (k) { /* reference order: dtype order descending, then name */
          const dsv3_tensor *p = dsv3_st_tensor(st, k - 1);
          int op = dsv3_dtype_order(p->dtype), ot = dsv3_dtype_order(t->dtype);
          CHECK(op > ot || (op == ot && strcmp(p->name, t->name) < 0), "order: %s before %s", p->name, t->name);
        }
      }
      dsv3_st_close(st);
    }
  }
  /* layout is reentrant: eight writers laid out at once give the same header */
  CHECK(dsv3_parallel_for(64, 8, layout_task, NULL) == 0, "concurrent layouts: %s", dsv3_error());

  /* ---- threaded pwrite, commit, read back ---- */
  char *out = dsv3_path_join(tmpdir, "model.safetensors");
  CHECK(dsv3_write_file_atomic(out, "OLD", 3) == 0, "old file");
  CHECK(dsv3_stw_open(w, out) == 0, "open: %s", dsv3_error());
  CHECK(dsv3_stw_open(w, out) == -1 && strstr(dsv3_error(), "already open"), "open twice: %s", dsv3_error());
  CHECK(temps() == 1, "one temp while writing");
  for (int i = 0; i < NT; i++)
    for (uint64_t off = 0; off < tbytes[i]; off += 1000) {
      chunk_tensor[nchunks] = i;
      chunk_off[nchunks++] = off;
    }
  wctx c = {w, idx};
  CHECK(dsv3_parallel_for(nchunks, 8, write_task, &c) == 0, "pwrite: %s", dsv3_error());
  int big = -1;
  for (int i = 0; i < NT; i++)
    if (tbytes[i] > 100) big = i;
  CHECK(dsv3_stw_pwrite(w, idx[big], tbytes[big] - 10, tdata[big], 11) == -1 && strstr(dsv3_error(), out) &&
            strstr(dsv3_error(), tname[big]) && strstr(dsv3_error(), "out of range"),
        "write past the tensor: %s", dsv3_error());
  CHECK(dsv3_stw_pwrite(w, idx[big], UINT64_MAX, tdata[big], 1) == -1, "write at a huge offset");
  CHECK(dsv3_stw_pwrite(w, NT + 5, 0, "x", 1) == -1 && dsv3_stw_pwrite(w, -1, 0, "x", 1) == -1, "bad index");
  {
    char *o;
    size_t n;
    dsv3_read_file(out, &o, &n, 100);
    CHECK(n == 3 && !memcmp(o, "OLD", 3), "the existing file is untouched until commit");
    free(o);
  }
  CHECK(dsv3_stw_commit(w) == 0, "commit: %s", dsv3_error());
  CHECK(dsv3_stw_pwrite(w, idx[0], 0, "x", 1) == -1, "write after commit");
  dsv3_stw_free(w);
  CHECK(temps() == 0, "temp left after commit");
  {
    dsv3_st *st;
    CHECK(dsv3_st_open(out, &st) == 0, "reopen: %s", dsv3_error());
    if (st) {
      int ok = dsv3_st_count(st) == NT;
      for (int i = 0; i < NT; i++) {
        const dsv3_tensor *t = dsv3_st_find(st, tname[i]);
        ok &= t && t->dtype == tdt[i] && t->ndim == tnd[i] && t->nbytes == tbytes[i] && !memcmp(t->data, tdata[i], tbytes[i]);
      }
      CHECK(ok, "data read back equal");
      dsv3_st_close(st);
    }
  }

  /* ---- uncommitted output never appears ---- */
  char *never = dsv3_path_join(tmpdir, "never.safetensors");
  w = declare(idx);
  CHECK(dsv3_stw_open(w, never) == 0, "open");
  dsv3_stw_pwrite(w, idx[big], 0, tdata[big], 10);
  dsv3_stw_free(w);
  CHECK(!dsv3_file_exists(never) && temps() == 0, "free without commit left something");
  pid_t pid = fork();
  if (pid == 0) {
    dsv3_stw *k = declare(idx);
    if (dsv3_stw_open(k, never) != 0) _exit(3);
    for (int i = 0; i < NT; i++) dsv3_stw_pwrite(k, idx[i], 0, tdata[i], (size_t)tbytes[i]);
    raise(SIGKILL); /* everything written, but no commit */
    _exit(4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status), "child killed");
  CHECK(!dsv3_file_exists(never), "a killed writer's file appeared under its final name");
  CHECK(temps() == 1, "the killed writer's temp stays (for its resume logic to clean)");
  {
    char stale[4200];
    snprintf(stale, sizeof stale, "%s/.never.safetensors.tmp.%ld", tmpdir, (long)pid);
    CHECK(unlink(stale) == 0, "temp named .NAME.tmp.PID");
  }
  char *nodir = dsv3_path_join(tmpdir, "missing/dir/x.safetensors");
  w = declare(idx);
  CHECK(dsv3_stw_open(w, nodir) == -1 && strstr(dsv3_error(), nodir), "open in a missing dir: %s", dsv3_error());
  dsv3_stw_free(w);

  /* ---- dsv3_st_write_file ---- */
  {
    dsv3_tensor_src src[NT];
    for (int i = 0; i < NT; i++) {
      src[i].name = tname[i];
      src[i].dtype = tdt[i];
      src[i].ndim = tnd[i];
      memcpy(src[i].shape, tshape[i], sizeof src[i].shape);
      src[i].data = tdata[i];
    }
    const char *meta[] = {"format", "pt", "note", "x\"y"};
    char *p = dsv3_path_join(tmpdir, "conv.safetensors");
    CHECK(dsv3_st_write_file(p, src, NT, meta, 2) == 0, "write_file: %s", dsv3_error());
    char *a, *b;
    size_t na, nb;
    dsv3_read_file(out, &a, &na, 1 << 26);
    dsv3_read_file(p, &b, &nb, 1 << 26);
    dsv3_st *st;
    CHECK(dsv3_st_open(p, &st) == 0, "reopen");
    if (st) {
      CHECK(dsv3_st_meta_get(st, "note") && !strcmp(dsv3_st_meta_get(st, "note"), "x\"y"), "meta escaped");
      uint64_t d1 = dsv3_st_data_offset(st);
      /* same tensors as the streamed file: the data sections are identical */
      CHECK(nb - d1 == na - (size_t)(ref_header_len) && !memcmp(b + d1, a + ref_header_len, nb - d1), "same data section");
      dsv3_st_close(st);
    }
    free(a);
    free(b);
    src[1].name = src[0].name;
    char *q = dsv3_path_join(tmpdir, "dup.safetensors");
    CHECK(dsv3_st_write_file(q, src, NT, NULL, 0) == -1 && strstr(dsv3_error(), q) && strstr(dsv3_error(), "declared twice"),
          "duplicate: %s", dsv3_error());
    CHECK(!dsv3_file_exists(q) && temps() == 0, "failed write_file left a file");
    free(p);
    free(q);
  }

  for (int i = 0; i < NT; i++) free(tdata[i]);
  free(ref_header);
  free(out);
  free(never);
  free(nodir);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) {}
  return check_done("st_writer");
}
