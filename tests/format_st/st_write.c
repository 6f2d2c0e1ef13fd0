/* st-write: build a safetensors file with the libdsv3 streaming writer from a JSON spec, for
 * byte-for-byte comparison with the Python safetensors library.
 *
 *   st-write SPEC.json OUT [--threads N] [--chunk BYTES]
 *
 * SPEC: {"metadata": [[KEY, VALUE], ...] or absent, "tensors": [{"name": N, "dtype": "F8_E4M3",
 * "shape": [..], "file": RAWDATA}, ...]} (relative files are taken from SPEC's directory).
 * Tensors are declared in spec order; the data is then written with dsv3_stw_pwrite in chunks
 * of --chunk bytes (default 4093) from --threads threads (default 4), chunks taken in a
 * scrambled order, so the file only comes out right if offsets and concurrent pwrites are. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "util.h"

typedef struct {
  int idx;
  uint64_t off;
  size_t n;
  const uint8_t *src;
} chunk;

typedef struct {
  dsv3_stw *w;
  chunk *c;
  size_t nc;
} ctx;

static int write_chunk(void *vc, size_t i, int thread) {
  (void)thread;
  ctx *x = vc;
  const chunk *c = &x->c[(i * 7919) % x->nc]; /* 7919 is prime: a permutation unless nc is a multiple */
  return dsv3_stw_pwrite(x->w, c->idx, c->off, c->src + c->off, c->n);
}

int main(int argc, char **argv) {
  int threads = 4;
  uint64_t chunk_size = 4093;
  if (argc < 3) {
    fprintf(stderr, "usage: st-write SPEC.json OUT [--threads N] [--chunk BYTES]\n");
    return 2;
  }
  for (int a = 3; a + 1 < argc; a += 2) {
    if (!strcmp(argv[a], "--threads")) threads = atoi(argv[a + 1]);
    else if (!strcmp(argv[a], "--chunk") && dsv3_parse_size(argv[a + 1], &chunk_size) == 0 && chunk_size) {}
    else dsv3_die("st-write", 2, "bad option %s", argv[a]);
  }
  char *text;
  size_t len;
  if (dsv3_read_file(argv[1], &text, &len, 1 << 26) != 0) dsv3_die("st-write", 1, "%s", dsv3_error());
  cJSON *spec = cJSON_Parse(text);
  free(text);
  if (!spec) dsv3_die("st-write", 1, "%s: not JSON", argv[1]);
  char *dir = dsv3_xstrdup(argv[1]);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0; else strcpy(dir, ".");

  dsv3_stw *w = dsv3_stw_new();
  const cJSON *meta = cJSON_GetObjectItem(spec, "metadata"), *m;
  cJSON_ArrayForEach(m, meta) {
    if (dsv3_stw_set_meta(w, cJSON_GetArrayItem(m, 0)->valuestring, cJSON_GetArrayItem(m, 1)->valuestring) != 0)
      dsv3_die("st-write", 1, "%s", dsv3_error());
  }
  const cJSON *ts = cJSON_GetObjectItem(spec, "tensors"), *t;
  size_t n = (size_t)cJSON_GetArraySize(ts), k = 0;
  uint8_t **data = dsv3_xcalloc(n ? n : 1, sizeof *data);
  int *idx = dsv3_xcalloc(n ? n : 1, sizeof *idx);
  cJSON_ArrayForEach(t, ts) {
    int64_t shape[DSV3_MAX_DIMS];
    int nd = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "shape")) {
      if (nd < DSV3_MAX_DIMS) shape[nd] = (int64_t)d->valuedouble;
      nd++;
    }
    dsv3_dtype dt = dsv3_dtype_from_name(cJSON_GetObjectItem(t, "dtype")->valuestring);
    idx[k] = dsv3_stw_add(w, cJSON_GetObjectItem(t, "name")->valuestring, dt, nd, shape);
    if (idx[k] < 0) dsv3_die("st-write", 1, "%s", dsv3_error());
    const char *f = cJSON_GetObjectItem(t, "file")->valuestring;
    char *path = f[0] == '/' ? dsv3_xstrdup(f) : dsv3_path_join(dir, f);
    size_t got;
    if (dsv3_read_file(path, (char **)&data[k], &got, (size_t)1 << 31) != 0) dsv3_die("st-write", 1, "%s", dsv3_error());
    if (got != dsv3_stw_nbytes(w, idx[k]))
      dsv3_die("st-write", 1, "%s: %zu bytes, the tensor needs %llu", path, got,
               (unsigned long long)dsv3_stw_nbytes(w, idx[k]));
    free(path);
    k++;
  }
  if (dsv3_stw_layout(w) != 0 || dsv3_stw_open(w, argv[2]) != 0) dsv3_die("st-write", 1, "%s", dsv3_error());
  ctx x = {w, NULL, 0};
  size_t cap = 0;
  for (size_t i = 0; i < n; i++)
    for (uint64_t off = 0; off < dsv3_stw_nbytes(w, idx[i]); off += chunk_size) {
      if (x.nc == cap) {
        cap = cap ? cap * 2 : 256;
        x.c = dsv3_xrealloc(x.c, cap * sizeof *x.c);
      }
      uint64_t rest = dsv3_stw_nbytes(w, idx[i]) - off;
      x.c[x.nc++] = (chunk){idx[i], off, (size_t)(rest < chunk_size ? rest : chunk_size), data[i]};
    }
  if (x.nc % 7919 == 0 && x.nc) dsv3_die("st-write", 2, "chunk count %zu: pick another --chunk", x.nc);
  if (dsv3_parallel_for(x.nc, threads, write_chunk, &x) != 0 || dsv3_stw_commit(w) != 0) {
    dsv3_error_print("st-write");
    dsv3_stw_free(w); /* removes the temporary file */
    return 1;
  }
  dsv3_stw_free(w);
  for (size_t i = 0; i < n; i++) free(data[i]);
  free(data);
  free(idx);
  free(x.c);
  free(dir);
  cJSON_Delete(spec);
  return 0;
}
