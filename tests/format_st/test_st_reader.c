/* safetensors reader on models/dsv3-tiny: the 3 shards open, 309 tensors in all, a few tensors'
 * bytes (SHA-256) and values equal what the Python safetensors library reads
 * (tests/format_st/tiny_expected.txt, made by gen_tiny_expected.py); file order, lookups,
 * metadata, zero-copy views inside the mapping; the header-only and in-memory opens agree with
 * the file open; many threads opening at once; crafted valid files and the hostile corners the
 * shell test does not reach (every truncation and every 1-byte length change of a real shard). */
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "safetensors.h"
#include "util.h"

static const char *tiny;
static const char *SHARDS[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                "model-00003-of-00003.safetensors"};

static void sha256_hex(const void *p, size_t n, char out[65]) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* many threads open, look up and close the same shards */
static int open_task(void *ctx, size_t i, int thread) {
  (void)thread;
  atomic_int_fast32_t *bad = ctx;
  char *p = dsv3_path_join(tiny, SHARDS[i % 3]);
  dsv3_st *st;
  if (dsv3_st_open(p, &st) != 0) {
    (*bad)++;
    free(p);
    return 0;
  }
  for (size_t k = 0; k < dsv3_st_count(st); k++)
    if (dsv3_st_find(st, dsv3_st_tensor(st, k)->name) != dsv3_st_tensor(st, k)) (*bad)++;
  dsv3_st_close(st);
  free(p);
  return 0;
}

int main(void) {
  tiny = check_env("DSV3_TINY");
  dsv3_st *st[3] = {0};
  size_t total = 0;
  for (int i = 0; i < 3; i++) {
    char *p = dsv3_path_join(tiny, SHARDS[i]);
    CHECK(dsv3_st_open(p, &st[i]) == 0, "open %s: %s", p, dsv3_error());
    if (!st[i]) return check_done("st_reader");
    CHECK(!strcmp(dsv3_st_path(st[i]), p), "path");
    total += dsv3_st_count(st[i]);
    uint64_t size;
    const uint8_t *img = dsv3_st_image(st[i], &size);
    CHECK(img && size == dsv3_st_file_size(st[i]), "image");
    CHECK(dsv3_st_meta_count(st[i]) == 1 && dsv3_st_meta_get(st[i], "format") &&
              !strcmp(dsv3_st_meta_get(st[i], "format"), "pt") && !dsv3_st_meta_get(st[i], "nope"),
          "metadata {format: pt}");
    const char *k, *v;
    dsv3_st_meta(st[i], 0, &k, &v);
    CHECK(!strcmp(k, "format") && !strcmp(v, "pt"), "meta(0)");
    dsv3_st_meta(st[i], 5, &k, &v);
    CHECK(!k && !v, "meta out of range");
    /* file order, views inside the data section, tiling */
    uint64_t pos = 0;
    for (size_t j = 0; j < dsv3_st_count(st[i]); j++) {
      const dsv3_tensor *t = dsv3_st_tensor(st[i], j);
      CHECK(t->begin == pos, "%s: not tiled in order", t->name);
      CHECK((const uint8_t *)t->data == img + dsv3_st_data_offset(st[i]) + t->begin, "%s: view not zero-copy", t->name);
      uint64_t numel = 1;
      for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
      CHECK(numel == t->numel && t->numel * dsv3_dtype_size(t->dtype) == t->nbytes, "%s: numel", t->name);
      CHECK(dsv3_st_find(st[i], t->name) == t, "%s: find", t->name);
      pos += t->nbytes;
      dsv3_st_advise(st[i], t, 0);
    }
    CHECK(dsv3_st_data_offset(st[i]) + pos == dsv3_st_file_size(st[i]), "covers the file");
    CHECK(dsv3_st_tensor(st[i], dsv3_st_count(st[i])) == NULL && dsv3_st_find(st[i], "") == NULL &&
              dsv3_st_find(st[i], "model.layers.0") == NULL,
          "absent");
    /* header-only open of just the header bytes agrees */
    dsv3_st *h;
    CHECK(dsv3_st_open_header(img, (size_t)dsv3_st_data_offset(st[i]), size, "hdr", &h) == 0, "header-only: %s", dsv3_error());
    if (h) {
      CHECK(dsv3_st_count(h) == dsv3_st_count(st[i]) && dsv3_st_image(h, NULL) == NULL, "header-only count");
      for (size_t j = 0; j < dsv3_st_count(h); j++) {
        const dsv3_tensor *a = dsv3_st_tensor(h, j), *b = dsv3_st_tensor(st[i], j);
        CHECK(!strcmp(a->name, b->name) && a->begin == b->begin && a->nbytes == b->nbytes && a->data == NULL,
              "header-only tensor %zu", j);
      }
      dsv3_st_close(h);
    }
    CHECK(dsv3_st_open_header(img, (size_t)dsv3_st_data_offset(st[i]) - 1, size, "short", &h) == -1 &&
              strstr(dsv3_error(), "short: "),
          "header-only with too few bytes: %s", dsv3_error());
    free(p);
  }
  CHECK(total == 309, "%zu tensors in the 3 shards, want 309", total);

  /* expected bytes and values from the Python library */
  char path[4096];
  snprintf(path, sizeof path, "%s/../format_st/tiny_expected.txt", check_env("DSV3_TESTDATA"));
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  int n_exp = 0;
  char line[1024];
  while (f && fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char file[128], name[256], dt[16], shape[64], hash[65];
    int nv, off;
    if (sscanf(line, "%127s %255s %15s %63s %64s %d%n", file, name, dt, shape, hash, &nv, &off) != 6) continue;
    int si = file[10] - '1';
    const dsv3_tensor *t = si >= 0 && si < 3 ? dsv3_st_find(st[si], name) : NULL;
    CHECK(t != NULL, "%s not found in %s", name, file);
    if (!t) continue;
    n_exp++;
    char want_shape[64] = "", *q = want_shape;
    for (int d = 0; d < t->ndim; d++) q += snprintf(q, 16, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    CHECK(!strcmp(dsv3_dtype_name(t->dtype), dt) && !strcmp(want_shape, shape), "%s: %s [%s], want %s [%s]", name,
          dsv3_dtype_name(t->dtype), want_shape, dt, shape);
    char got[65];
    sha256_hex(t->data, t->nbytes, got);
    CHECK(!strcmp(got, hash), "%s: bytes differ from the Python library's", name);
    float *vals = dsv3_xmalloc(t->numel * sizeof(float));
    dsv3_to_f32(t->dtype, t->data, vals, t->numel);
    const char *r = line + off;
    for (int k = 0; k < nv; k++) {
      unsigned want;
      int used;
      if (sscanf(r, "%x%n", &want, &used) != 1) break;
      r += used;
      size_t idx = k < 4 ? (size_t)k : t->numel - (size_t)(nv - k);
      CHECK(bits(vals[idx]) == want, "%s[%zu] = %08x, want %08x", name, idx, bits(vals[idx]), want);
    }
    free(vals);
  }
  if (f) fclose(f);
  CHECK(n_exp == 9, "%d expected tensors checked", n_exp);

  /* in-memory open == file open; every truncation and every length byte change is refused */
  {
    char *p = dsv3_path_join(tiny, SHARDS[2]);
    char *buf;
    size_t n;
    CHECK(dsv3_read_file(p, &buf, &n, 1u << 26) == 0, "read");
    dsv3_st *m;
    CHECK(dsv3_st_open_mem(buf, n, "mem-label", &m) == 0, "open_mem: %s", dsv3_error());
    if (m) {
      CHECK(!strcmp(dsv3_st_path(m), "mem-label") && dsv3_st_count(m) == dsv3_st_count(st[2]), "open_mem count");
      for (size_t j = 0; j < dsv3_st_count(m); j++)
        CHECK((const char *)dsv3_st_tensor(m, j)->data == buf + dsv3_st_data_offset(m) + dsv3_st_tensor(m, j)->begin &&
                  !memcmp(dsv3_st_tensor(m, j)->data, dsv3_st_tensor(st[2], j)->data, dsv3_st_tensor(m, j)->nbytes),
              "open_mem view %zu", j);
      dsv3_st_close(m);
    }
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 9000 ? 1 : 4099)) {
      dsv3_st *c = NULL;
      if (dsv3_st_open_mem(buf, cut, "cut", &c) == 0) accepted++;
      else if (!strstr(dsv3_error(), "cut: ") || strchr(dsv3_error(), '\n')) accepted += 1000;
      dsv3_st_close(c);
    }
    CHECK(accepted == 0, "truncations: %d accepted or badly reported", accepted);
    for (int byte = 0; byte < 8; byte++)
      for (int delta = -1; delta <= 1; delta += 2) {
        char save = buf[byte];
        buf[byte] = (char)(save + delta);
        dsv3_st *c = NULL;
        CHECK(dsv3_st_open_mem(buf, n, "len", &c) == -1, "length byte %d %+d accepted", byte, delta);
        dsv3_st_close(c);
        buf[byte] = save;
      }
    free(buf);
    free(p);
  }

  /* many threads at once */
  {
    atomic_int_fast32_t bad = 0;
    dsv3_parallel_for(48, 8, open_task, &bad);
    CHECK(bad == 0, "concurrent opens: %d problems", (int)bad);
  }

  /* crafted valid files: 0-d, empty, zero-size tensors sharing an offset, escapes, leading space */
  {
    const char *hdr = " {\"__metadata__\":{\"k\\\"\":\"v\\u00e9\",\"e\":\"\"},\"z\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
                      "\"e\\\\\":{\"dtype\":\"BF16\",\"shape\":[0,7],\"data_offsets\":[4,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[4,8]}}\n\t ";
    size_t hl = strlen(hdr);
    uint8_t img[512];
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)(hl >> (8 * i));
    memcpy(img + 8, hdr, hl);
    for (int i = 0; i < 8; i++) img[8 + hl + i] = (uint8_t)(i + 1);
    dsv3_st *c;
    CHECK(dsv3_st_open_mem(img, 16 + hl, "crafted", &c) == 0, "crafted: %s", dsv3_error());
    if (c) {
      const dsv3_tensor *z = dsv3_st_find(c, "z"), *e = dsv3_st_find(c, "e\\"), *b = dsv3_st_find(c, "b");
      CHECK(z && z->ndim == 0 && z->numel == 1 && z->nbytes == 4 && ((const uint8_t *)z->data)[0] == 1, "0-d");
      CHECK(e && e->ndim == 2 && e->numel == 0 && e->nbytes == 0 && e->begin == 4, "empty");
      CHECK(b && b->numel == 4 && ((const uint8_t *)b->data)[3] == 8, "b");
      CHECK(dsv3_st_tensor(c, 0) == z && dsv3_st_tensor(c, 1) == e && dsv3_st_tensor(c, 2) == b, "file order with ties");
      CHECK(dsv3_st_meta_get(c, "k\"") && !strcmp(dsv3_st_meta_get(c, "k\""), "v\xc3\xa9") && dsv3_st_meta_get(c, "e") &&
                !strcmp(dsv3_st_meta_get(c, "e"), ""),
            "metadata escapes");
      dsv3_st_close(c);
    }
    /* many tensors: the name table grows */
    size_t cap = 1 << 20, len = 0;
    char *big = dsv3_xmalloc(cap);
    len += (size_t)snprintf(big + 8, cap - 8, "{");
    for (int i = 0; i < 5000; i++)
      len += (size_t)snprintf(big + 8 + len, cap - 8 - len, "%s\"t%d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                              i ? "," : "", i, i, i + 1);
    len += (size_t)snprintf(big + 8 + len, cap - 8 - len, "}");
    for (int i = 0; i < 8; i++) big[i] = (char)(len >> (8 * i));
    memset(big + 8 + len, 7, 5000);
    CHECK(dsv3_st_open_mem(big, 8 + len + 5000, "many", &c) == 0, "5000 tensors: %s", dsv3_error());
    if (c) {
      int ok = dsv3_st_count(c) == 5000;
      char nm[16];
      for (int i = 0; i < 5000; i++) {
        snprintf(nm, sizeof nm, "t%d", i);
        const dsv3_tensor *t = dsv3_st_find(c, nm);
        ok &= t && t->begin == (uint64_t)i;
      }
      CHECK(ok, "5000 lookups");
      dsv3_st_close(c);
    }
    free(big);
  }
  for (int i = 0; i < 3; i++) dsv3_st_close(st[i]);
  return check_done("st_reader");
}
