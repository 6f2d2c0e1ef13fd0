/* manifest.c - dsv3-manifest.json read/write and the hash helpers (see manifest.h). */
#include "manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "util.h"

void dsv3_hex(const uint8_t *b, size_t n, char *out) {
  static const char *H = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = H[b[i] >> 4];
    out[2 * i + 1] = H[b[i] & 15];
  }
  out[2 * n] = 0;
}

int dsv3_unhex(const char *s, uint8_t *b, size_t n) {
  if (!s || strlen(s) != 2 * n) return -1;
  for (size_t i = 0; i < n; i++) {
    int v = 0;
    for (int k = 0; k < 2; k++) {
      char c = s[2 * i + k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    b[i] = (uint8_t)v;
  }
  return 0;
}

void dsv3_xxh3_128(const void *p, size_t n, uint8_t out[16]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
  memcpy(out, c.digest, 16);
}

int dsv3_sha256_file(const char *path, uint8_t out[32], struct dsv3_progress *pg) {
  int fd = dsv3_open_regular(path, NULL);
  if (fd < 0) return -1;
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  size_t cap = 4u << 20;
  uint8_t *buf = dsv3_xmalloc(cap);
  int rc = 0;
  for (;;) {
    ssize_t r = read(fd, buf, cap);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      dsv3_error_set("%s: read failed: %s", path, strerror(errno));
      rc = -1;
      break;
    }
    if (r == 0) break;
    EVP_DigestUpdate(ctx, buf, (size_t)r);
    dsv3_progress_add(pg, (uint64_t)r);
  }
  unsigned int len = 32;
  EVP_DigestFinal_ex(ctx, out, &len);
  EVP_MD_CTX_free(ctx);
  free(buf);
  close(fd);
  return rc;
}

static void free_file(dsv3_manifest_file *f) {
  free(f->name);
  for (size_t i = 0; i < f->ntensors; i++) free(f->t[i].name);
  free(f->t);
}

void dsv3_manifest_free(dsv3_manifest *m) {
  for (size_t i = 0; i < m->nfiles; i++) free_file(&m->files[i]);
  for (size_t i = 0; i < m->ninputs; i++) free_file(&m->inputs[i]);
  free(m->files);
  free(m->inputs);
  free(m->tool);
  free(m->version);
  free(m->args);
  memset(m, 0, sizeof *m);
}

dsv3_manifest_file *dsv3_manifest_add_file(dsv3_manifest *m, const char *name, int input) {
  dsv3_manifest_file **arr = input ? &m->inputs : &m->files;
  size_t *n = input ? &m->ninputs : &m->nfiles;
  *arr = dsv3_xrealloc(*arr, (*n + 1) * sizeof **arr);
  dsv3_manifest_file *f = &(*arr)[(*n)++];
  memset(f, 0, sizeof *f);
  f->name = dsv3_xstrdup(name);
  return f;
}

int dsv3_manifest_write(const dsv3_manifest *m, const char *path) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "format", "dsv3-manifest/1");
  cJSON_AddStringToObject(j, "tool", m->tool ? m->tool : "");
  cJSON_AddStringToObject(j, "version", m->version ? m->version : "");
  cJSON_AddStringToObject(j, "arguments", m->args ? m->args : "");
  char hex[65];
  for (int pass = 0; pass < 2; pass++) {
    const dsv3_manifest_file *arr = pass ? m->inputs : m->files;
    size_t n = pass ? m->ninputs : m->nfiles;
    cJSON *fa = cJSON_AddObjectToObject(j, pass ? "inputs" : "files");
    for (size_t i = 0; i < n; i++) {
      const dsv3_manifest_file *f = &arr[i];
      cJSON *fo = cJSON_AddObjectToObject(fa, f->name);
      cJSON_AddNumberToObject(fo, "size", (double)f->size);
      dsv3_hex(f->sha256, 32, hex);
      cJSON_AddStringToObject(fo, "sha256", hex);
      if (pass) continue;
      cJSON *to = cJSON_AddObjectToObject(fo, "tensors");
      for (size_t k = 0; k < f->ntensors; k++) {
        const dsv3_manifest_tensor *t = &f->t[k];
        cJSON *e = cJSON_AddObjectToObject(to, t->name);
        cJSON_AddStringToObject(e, "dtype", dsv3_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        dsv3_hex(t->xxh3, 16, hex);
        cJSON_AddStringToObject(e, "xxh3_128", hex);
      }
    }
  }
  char *s = cJSON_Print(j);
  cJSON_Delete(j);
  int rc = dsv3_write_file_atomic(path, s, strlen(s));
  free(s);
  return rc;
}

/* a JSON number that is a whole count in [0, max] (a double outside the integer range would
 * make the conversion undefined) */
static int json_count(const cJSON *v, double max, uint64_t *out) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= max) ||
      v->valuedouble != (double)(uint64_t)v->valuedouble)
    return -1;
  *out = (uint64_t)v->valuedouble;
  return 0;
}

int dsv3_manifest_load(const char *path, dsv3_manifest *m) {
  memset(m, 0, sizeof *m);
  char *buf;
  size_t n;
  if (dsv3_read_file(path, &buf, &n, 1u << 30) != 0) return -1;
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  const cJSON *files = j ? cJSON_GetObjectItem(j, "files") : NULL;
  if (!j || !cJSON_IsObject(files)) {
    dsv3_error_set("%s: not a dsv3 manifest (no \"files\" object)", path);
    cJSON_Delete(j);
    return -1;
  }
  const char *s;
  if ((s = cJSON_GetStringValue(cJSON_GetObjectItem(j, "tool")))) m->tool = dsv3_xstrdup(s);
  if ((s = cJSON_GetStringValue(cJSON_GetObjectItem(j, "version")))) m->version = dsv3_xstrdup(s);
  if ((s = cJSON_GetStringValue(cJSON_GetObjectItem(j, "arguments")))) m->args = dsv3_xstrdup(s);
  for (int pass = 0; pass < 2; pass++) {
    const cJSON *arr = cJSON_GetObjectItem(j, pass ? "inputs" : "files");
    if (arr && !cJSON_IsObject(arr)) {
      dsv3_error_set("%s: \"%s\" must be an object of files", path, pass ? "inputs" : "files");
      goto fail;
    }
    for (const cJSON *fo = arr ? arr->child : NULL; fo; fo = fo->next) {
      dsv3_manifest_file *f = dsv3_manifest_add_file(m, fo->string, pass);
      uint64_t size;
      if (!cJSON_IsObject(fo) || json_count(cJSON_GetObjectItem(fo, "size"), 0x1p62, &size) != 0 ||
          dsv3_unhex(cJSON_GetStringValue(cJSON_GetObjectItem(fo, "sha256")), f->sha256, 32) != 0 ||
          strchr(fo->string, '/') || !fo->string[0]) {
        dsv3_error_set("%s: file %.200s: needs a plain name, a size and a 64-digit sha256", path, fo->string);
        goto fail;
      }
      f->size = size;
      const cJSON *to = cJSON_GetObjectItem(fo, "tensors");
      if (to && !cJSON_IsObject(to)) {
        dsv3_error_set("%s: file %.200s: \"tensors\" must be an object", path, fo->string);
        goto fail;
      }
      for (const cJSON *e = to ? to->child : NULL; e; e = e->next) {
        f->t = dsv3_xrealloc(f->t, (f->ntensors + 1) * sizeof *f->t);
        dsv3_manifest_tensor *t = &f->t[f->ntensors++];
        memset(t, 0, sizeof *t);
        t->name = dsv3_xstrdup(e->string);
        t->dtype = dsv3_dtype_from_name(cJSON_GetStringValue(cJSON_GetObjectItem(e, "dtype")));
        const cJSON *sh = cJSON_GetObjectItem(e, "shape");
        int bad = !cJSON_IsObject(e) || (sh && !cJSON_IsArray(sh)) || cJSON_GetArraySize(sh) > 8;
        for (const cJSON *d = sh ? sh->child : NULL; d && !bad && t->ndim < 8; d = d->next) {
          uint64_t dim = 0;
          bad = json_count(d, 0x1p62, &dim) != 0;
          t->shape[t->ndim++] = (int64_t)dim;
        }
        if (bad || dsv3_unhex(cJSON_GetStringValue(cJSON_GetObjectItem(e, "xxh3_128")), t->xxh3, 16) != 0) {
          dsv3_error_set("%s: tensor %.200s: needs a dtype, a shape of up to 8 whole dimensions and a 32-digit xxh3_128",
                         path, e->string);
          goto fail;
        }
      }
    }
  }
  cJSON_Delete(j);
  return 0;
fail:
  cJSON_Delete(j);
  dsv3_manifest_free(m);
  return -1;
}
