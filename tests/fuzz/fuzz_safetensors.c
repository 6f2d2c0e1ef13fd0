/* libFuzzer target: the safetensors header parser and validator on arbitrary bytes.
 *
 * Properties checked on every input:
 *  - no crash, leak, overflow or UB (ASan + UBSan), whatever the bytes;
 *  - an accepted file exposes only views inside the buffer, tiling its data section in order,
 *    each of shape product x element size bytes, every name found by dsv3_st_find;
 *  - a refusal leaves one line naming the file ("fuzz: ...");
 *  - the header-only parse (dsv3_st_open_header) accepts exactly when the full parse does and
 *    sees the same tensors;
 *  - the writer, given the tensors of an accepted file, lays out a header that the reader
 *    accepts again with the same tensors and metadata (the writer never emits what we refuse). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "util.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dsv3_st *st = NULL, *h = NULL;
  int rc = dsv3_st_open_mem(data, size, "fuzz", &st);
  int rh = dsv3_st_open_header(data, size, size, "fuzz", &h);
  REQUIRE(rc == rh);
  if (rc != 0) {
    const char *e = dsv3_error();
    REQUIRE(strncmp(e, "fuzz: ", 6) == 0 && strchr(e, '\n') == NULL);
    return 0;
  }
  REQUIRE(dsv3_st_count(st) == dsv3_st_count(h) && dsv3_st_meta_count(st) == dsv3_st_meta_count(h));
  uint64_t pos = 0, doff = dsv3_st_data_offset(st);
  volatile uint8_t sink = 0;
  dsv3_stw *w = dsv3_stw_new();
  for (size_t i = 0; i < dsv3_st_meta_count(st); i++) {
    const char *k, *v;
    dsv3_st_meta(st, i, &k, &v);
    REQUIRE(dsv3_stw_set_meta(w, k, v) == 0);
  }
  for (size_t i = 0; i < dsv3_st_count(st); i++) {
    const dsv3_tensor *t = dsv3_st_tensor(st, i), *u = dsv3_st_tensor(h, i);
    const uint8_t *p = t->data;
    REQUIRE(t->begin == pos && p == data + doff + t->begin && doff + t->begin + t->nbytes <= size);
    if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1]; /* ASan catches any view outside the buffer */
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    REQUIRE(n == t->numel && n * dsv3_dtype_size(t->dtype) == t->nbytes);
    REQUIRE(dsv3_st_find(st, t->name) == t);
    REQUIRE(u->data == NULL && !strcmp(u->name, t->name) && u->begin == t->begin && u->nbytes == t->nbytes);
    pos += t->nbytes;
    REQUIRE(dsv3_stw_add(w, t->name, t->dtype, t->ndim, t->shape) >= 0);
  }
  REQUIRE(doff + pos == size);
  /* the writer's layout of the same tensors is accepted by the reader */
  REQUIRE(dsv3_stw_layout(w) == 0);
  size_t hl;
  const void *hdr = dsv3_stw_header(w, &hl);
  dsv3_st *back = NULL;
  REQUIRE(dsv3_st_open_header(hdr, hl, dsv3_stw_file_size(w), "fuzz-rewrite", &back) == 0);
  REQUIRE(dsv3_st_count(back) == dsv3_st_count(st) && dsv3_st_meta_count(back) == dsv3_st_meta_count(st));
  for (size_t i = 0; i < dsv3_st_count(back); i++) {
    const dsv3_tensor *b = dsv3_st_tensor(back, i), *t = dsv3_st_find(st, b->name);
    REQUIRE(t && t->dtype == b->dtype && t->ndim == b->ndim && t->nbytes == b->nbytes &&
            !memcmp(t->shape, b->shape, sizeof(int64_t) * (size_t)t->ndim));
  }
  for (size_t i = 0; i < dsv3_st_meta_count(st); i++) {
    const char *k, *v;
    dsv3_st_meta(st, i, &k, &v);
    const char *v2 = dsv3_st_meta_get(back, k);
    REQUIRE(v2 && !strcmp(v, v2));
  }
  (void)sink;
  dsv3_st_close(back);
  dsv3_stw_free(w);
  dsv3_st_close(st);
  dsv3_st_close(h);
  return 0;
}
