/* safetensors reader/writer: hostile headers rejected with one line naming the file and
 * tensor; the reference layout reproduced byte for byte (the tiny model's shards were written
 * by the Python safetensors library: re-writing their tensors with our writer must give the
 * same files); atomic output. */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "util.h"

static char tmpdir[] = "/tmp/dsv3-st-XXXXXX";

/* Write a file: 8-byte length, header text, then `data_len` bytes of data. */
static char *craft(const char *name, const char *hdr, uint64_t hlen_override, size_t data_len) {
  char *p = dsv3_path_join(tmpdir, name);
  FILE *f = fopen(p, "wb");
  uint64_t hl = hlen_override ? hlen_override : strlen(hdr);
  for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
  fputs(hdr, f);
  for (size_t i = 0; i < data_len; i++) fputc((int)(i * 7 + 1), f);
  fclose(f);
  return p;
}

/* Expect dsv3_st_open to fail with a one-line message naming the file and containing `want`. */
static void bad(const char *name, const char *hdr, uint64_t hlo, size_t data_len, const char *want) {
  char *p = craft(name, hdr, hlo, data_len);
  dsv3_st *st = NULL;
  int rc = dsv3_st_open(p, &st);
  CHECK(rc == -1 && st == NULL, "%s: accepted", name);
  const char *e = dsv3_error();
  CHECK(strstr(e, p) != NULL, "%s: error does not name the file: %s", name, e);
  CHECK(strchr(e, '\n') == NULL, "%s: error is not one line", name);
  CHECK(strstr(e, want) != NULL, "%s: error \"%s\" lacks \"%s\"", name, e, want);
  if (st) dsv3_st_close(st);
  free(p);
}

static int read_all(const char *p, uint8_t **buf, size_t *n) {
  char *b;
  if (dsv3_read_file(p, &b, n, 1u << 30) != 0) return -1;
  *buf = (uint8_t *)b;
  return 0;
}

int main(void) {
  if (!mkdtemp(tmpdir)) return 77;
  const char *tiny = check_env("DSV3_TINY");

  /* ---- hostile inputs ---- */
  bad("empty_header.st", "", 0, 0, "not a JSON object");
  {
    char *p = dsv3_path_join(tmpdir, "trunc.st");
    FILE *f = fopen(p, "wb");
    fputs("\x10\0\0", f);
    fclose(f);
    dsv3_st *st;
    CHECK(dsv3_st_open(p, &st) == -1 && strstr(dsv3_error(), "too short"), "truncated length: %s", dsv3_error());
    free(p);
  }
  bad("past_eof.st", "{}", 1000, 0, "past the end of the file");
  bad("huge_hdr.st", "{}", 200000000ull, 0, "exceeds the 100000000 byte limit");
  bad("badjson.st", "{\"a\": {\"dtype\": \"F32\", ", 0, 0, "not valid JSON");
  bad("notobj.st", "[1, 2, 3]       ", 0, 0, "not a JSON object");
  bad("dtype.st", "{\"w\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2, "tensor w: unknown dtype \"F7\"");
  bad("overflow.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 0, 4,
      "tensor w: shape overflows");
  bad("negshape.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4, "not a non-negative integer");
  bad("fracshape.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 4, "not a non-negative integer");
  bad("range.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, 8, "run past the data section");
  bad("mismatch.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 0, 16, "need 12 bytes");
  bad("backwards.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 0, 8, "end before they begin");
  bad("overlap.st",
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
      0, 12, "overlap tensor a");
  bad("gap.st",
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
      0, 12, "gap of 4 bytes");
  bad("uncovered.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 10, "cover 4");
  bad("dup.st",
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
      0, 8, "tensor a: name appears twice");
  bad("meta.st", "{\"__metadata__\":{\"format\":3}}", 0, 0, "is not a string");
  /* found by the fuzzer: a metadata value that is not a string after one that is (the close
   * path then saw a metadata count without arrays) */
  bad("meta_late.st", "{\"__metadata__\":{\"format\":\"pt\",\"shape\":[2,2]}}", 0, 0, "is not a string");
  bad("metaobj.st", "{\"__metadata__\":[1]}", 0, 0, "__metadata__ is not a JSON object");
  bad("trailing.st", "{}x", 0, 0, "trailing bytes");
  bad("fields.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 0, 4, "unknown field");

  /* a valid crafted file */
  {
    char *p = craft("ok.st", "{\"__metadata__\":{\"k\":\"v\"},\"b\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[4,8]},"
                             "\"a\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}  ", 0, 8);
    dsv3_st *st;
    CHECK(dsv3_st_open(p, &st) == 0, "valid file rejected: %s", dsv3_error());
    if (st) {
      CHECK(dsv3_st_count(st) == 2, "count");
      CHECK(strcmp(dsv3_st_tensor(st, 0)->name, "a") == 0, "file order by offset");
      const dsv3_tensor *b = dsv3_st_find(st, "b");
      CHECK(b && b->ndim == 2 && b->numel == 4 && ((const uint8_t *)b->data)[0] == (uint8_t)(4 * 7 + 1), "b view");
      CHECK(dsv3_st_meta_get(st, "k") && !strcmp(dsv3_st_meta_get(st, "k"), "v"), "metadata");
      CHECK(dsv3_st_find(st, "zz") == NULL, "absent name");
      dsv3_st_close(st);
    }
    free(p);
  }

  /* ---- writer: reproduces the reference library's files byte for byte ---- */
  for (int i = 1; i <= 3; i++) {
    char name[64];
    snprintf(name, sizeof name, "model-0000%d-of-00003.safetensors", i);
    char *src = dsv3_path_join(tiny, name), *dst = dsv3_path_join(tmpdir, name);
    dsv3_st *st;
    CHECK(dsv3_st_open(src, &st) == 0, "open %s: %s", src, dsv3_error());
    if (!st) continue;
    dsv3_stw *w = dsv3_stw_new();
    const char *k, *v;
    for (size_t m = 0; m < dsv3_st_meta_count(st); m++) {
      dsv3_st_meta(st, m, &k, &v);
      dsv3_stw_set_meta(w, k, v);
    }
    /* declare in reverse file order: the writer must impose the reference order itself */
    int *idx = calloc(dsv3_st_count(st), sizeof(int));
    for (size_t t = dsv3_st_count(st); t-- > 0;) {
      const dsv3_tensor *x = dsv3_st_tensor(st, t);
      idx[t] = dsv3_stw_add(w, x->name, x->dtype, x->ndim, x->shape);
    }
    CHECK(dsv3_stw_open(w, dst) == 0, "writer open: %s", dsv3_error());
    CHECK(!dsv3_file_exists(dst), "final name exists before commit");
    for (size_t t = 0; t < dsv3_st_count(st); t++) {
      const dsv3_tensor *x = dsv3_st_tensor(st, t);
      CHECK(dsv3_stw_pwrite(w, idx[t], 0, x->data, x->nbytes) == 0, "pwrite");
    }
    CHECK(dsv3_stw_commit(w) == 0, "commit: %s", dsv3_error());
    dsv3_stw_free(w);
    free(idx);
    uint8_t *a, *b;
    size_t na, nb;
    CHECK(read_all(src, &a, &na) == 0 && read_all(dst, &b, &nb) == 0, "read back");
    CHECK(na == nb && memcmp(a, b, na) == 0, "%s: our writer's file differs from the reference library's", name);
    free(a);
    free(b);
    dsv3_st_close(st);
    free(src);
    free(dst);
  }
  /* an uncommitted writer leaves nothing behind */
  {
    char *dst = dsv3_path_join(tmpdir, "never.safetensors");
    dsv3_stw *w = dsv3_stw_new();
    int64_t sh[1] = {4};
    dsv3_stw_add(w, "x", DSV3_F32, 1, sh);
    CHECK(dsv3_stw_add(w, "x", DSV3_F32, 1, sh) < 0, "duplicate declaration accepted");
    CHECK(dsv3_stw_open(w, dst) == 0, "open");
    dsv3_stw_free(w);
    CHECK(!dsv3_file_exists(dst), "uncommitted output appeared");
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    int temps = 0;
    while ((de = readdir(d)))
      if (strstr(de->d_name, ".tmp.")) temps++;
    closedir(d);
    CHECK(temps == 0, "%d temp files left", temps);
    free(dst);
  }
  /* in-memory open (the fuzz entry) agrees with the file open */
  {
    char *p = dsv3_path_join(tiny, "model-00003-of-00003.safetensors");
    uint8_t *buf;
    size_t n;
    read_all(p, &buf, &n);
    dsv3_st *a, *b;
    CHECK(dsv3_st_open_mem(buf, n, "mem", &a) == 0 && dsv3_st_open(p, &b) == 0, "open");
    CHECK(dsv3_st_count(a) == dsv3_st_count(b), "counts");
    for (size_t i = 0; i < dsv3_st_count(a); i++)
      CHECK(memcmp(dsv3_st_tensor(a, i)->data, dsv3_st_tensor(b, i)->data, dsv3_st_tensor(a, i)->nbytes) == 0, "data");
    /* every truncation of the file is rejected, never crashes */
    for (size_t cut = 0; cut < n; cut += 997) {
      dsv3_st *c;
      CHECK(dsv3_st_open_mem(buf, cut, "cut", &c) == -1, "truncated at %zu accepted", cut);
    }
    dsv3_st_close(a);
    dsv3_st_close(b);
    free(buf);
    free(p);
  }
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) {}
  return check_done("safetensors");
}
