/* safetensors.c - validated zero-copy reader and streaming writer: see safetensors.h.
 *
 * The reader trusts nothing in the file: every check the reference implementation makes is
 * made here, before a single tensor is exposed, and each failure names the file and tensor. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

struct dsv3_st {
  char *path;
  const uint8_t *base; /* whole file image (NULL for header-only) */
  size_t map_len;      /* > 0 when we own an mmap */
  uint64_t file_size, data_off;
  size_t n;
  dsv3_tensor *t; /* sorted by begin */
  size_t *ht;     /* open addressing: index+1, 0 = empty */
  size_t ht_cap;
  size_t nmeta;
  char **mkey, **mval;
};

/* FNV-1a */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static int cmp_begin(const void *a, const void *b) {
  const dsv3_tensor *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

void dsv3_st_close(dsv3_st *st) {
  if (!st) return;
  for (size_t i = 0; i < st->n; i++) free((char *)st->t[i].name);
  /* nmeta is counted before the key/value arrays exist: a header rejected in between (a
   * non-string metadata value, found by the fuzzer) has nmeta > 0 and no arrays */
  for (size_t i = 0; st->mkey && st->mval && i < st->nmeta; i++) {
    free(st->mkey[i]);
    free(st->mval[i]);
  }
  free(st->mkey);
  free(st->mval);
  free(st->t);
  free(st->ht);
  if (st->map_len) munmap((void *)st->base, st->map_len);
  free(st->path);
  free(st);
}

/* Integer JSON number in [0, 2^53]: doubles are exact there. */
static int json_u64(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  /* Past 2^53 a double no longer holds every integer: refuse rather than guess. */
  if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
  *out = (uint64_t)d;
  return 0;
}

static int parse_entry(dsv3_st *st, const cJSON *e, dsv3_tensor *t, uint64_t data_len) {
  const char *P = st->path, *N = e->string;
  if (!cJSON_IsObject(e)) {
    dsv3_error_set("%s: tensor %s: entry is not a JSON object", P, N);
    return -1;
  }
  int nkeys = 0;
  for (const cJSON *k = e->child; k; k = k->next) {
    nkeys++;
    if (strcmp(k->string, "dtype") && strcmp(k->string, "shape") && strcmp(k->string, "data_offsets")) {
      dsv3_error_set("%s: tensor %s: unknown field \"%s\"", P, N, k->string);
      return -1;
    }
  }
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || nkeys != 3) {
    dsv3_error_set("%s: tensor %s: needs exactly \"dtype\" (string), \"shape\" (array), "
                   "\"data_offsets\" (array)", P, N);
    return -1;
  }
  t->dtype = dsv3_dtype_from_name(dt->valuestring);
  if (t->dtype == DSV3_DT_INVALID) {
    dsv3_error_set("%s: tensor %s: unknown dtype \"%.40s\"", P, N, dt->valuestring);
    return -1;
  }
  int nd = cJSON_GetArraySize(sh);
  if (nd > DSV3_MAX_DIMS) {
    dsv3_error_set("%s: tensor %s: %d dimensions, more than the %d supported", P, N, nd, DSV3_MAX_DIMS);
    return -1;
  }
  t->ndim = nd;
  uint64_t numel = 1;
  int i = 0;
  for (const cJSON *d = sh->child; d; d = d->next, i++) {
    uint64_t v;
    if (json_u64(d, &v) != 0) {
      dsv3_error_set("%s: tensor %s: shape[%d] is not a non-negative integer (at most 2^53)", P, N, i);
      return -1;
    }
    t->shape[i] = (int64_t)v;
    if (dsv3_mul_u64(numel, v, &numel) != 0) {
      dsv3_error_set("%s: tensor %s: shape overflows 64 bits", P, N);
      return -1;
    }
  }
  t->numel = numel;
  uint64_t nbytes;
  if (dsv3_mul_u64(numel, dsv3_dtype_size(t->dtype), &nbytes) != 0) {
    dsv3_error_set("%s: tensor %s: byte size of shape overflows 64 bits", P, N);
    return -1;
  }
  uint64_t b, en;
  if (cJSON_GetArraySize(off) != 2 || json_u64(off->child, &b) != 0 ||
      json_u64(off->child->next, &en) != 0) {
    dsv3_error_set("%s: tensor %s: data_offsets must be two non-negative integers (at most 2^53)", P, N);
    return -1;
  }
  if (en < b) {
    dsv3_error_set("%s: tensor %s: data_offsets [%llu, %llu] end before they begin", P, N,
                   (unsigned long long)b, (unsigned long long)en);
    return -1;
  }
  if (en > data_len) {
    dsv3_error_set("%s: tensor %s: data_offsets [%llu, %llu] run past the data section (%llu bytes)",
                   P, N, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
    return -1;
  }
  if (en - b != nbytes) {
    dsv3_error_set("%s: tensor %s: shape and dtype %s need %llu bytes but data_offsets span %llu",
                   P, N, dsv3_dtype_name(t->dtype), (unsigned long long)nbytes,
                   (unsigned long long)(en - b));
    return -1;
  }
  t->begin = b;
  t->nbytes = nbytes;
  return 0;
}

static int ht_insert(dsv3_st *st, size_t idx) {
  size_t mask = st->ht_cap - 1, h = (size_t)hash_str(st->t[idx].name) & mask;
  while (st->ht[h]) {
    if (strcmp(st->t[st->ht[h] - 1].name, st->t[idx].name) == 0) return -1;
    h = (h + 1) & mask;
  }
  st->ht[h] = idx + 1;
  return 0;
}

/* What cJSON does not check but the reference (serde_json over a Rust &str) does: the header
 * is UTF-8, strings hold no raw control characters, and shape/offset numbers are integer
 * tokens ("4", never "4.0" or "4e0").  Also refused: "\u0000" in a string, which the reference
 * accepts but a C string cannot carry.  `key` tracks the top-level key being parsed so that the
 * error names the tensor. */
static int scan_header(const char *P, const uint8_t *j, size_t n) {
  int depth = 0, in_str = 0, want_key = 0, str_is_key = 0;
  const uint8_t *key = NULL, *ks = NULL;
  size_t klen = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = j[i];
    if (c >= 0x80) { /* strict UTF-8: no overlongs, no surrogates, <= U+10FFFF */
      int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
      uint32_t cp = len == 4 ? c & 7u : len == 3 ? c & 15u : c & 31u;
      if (!len || c > 0xf4 || i + (size_t)len > n) goto bad_utf8;
      for (int k = 1; k < len; k++) {
        if ((j[i + k] & 0xc0) != 0x80) goto bad_utf8;
        cp = (cp << 6) | (j[i + k] & 0x3fu);
      }
      if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
          cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        goto bad_utf8;
      i += (size_t)len - 1;
      continue;
    bad_utf8:
      dsv3_error_set("%s: header is not valid UTF-8 (at byte %zu)", P, i + 8);
      return -1;
    }
    if (in_str) {
      if (c < 0x20) {
        dsv3_error_set("%s: header has a raw control character in a string (at byte %zu)", P, i + 8);
        return -1;
      }
      if (c == '\\' && i + 1 < n) {
        if (j[i + 1] == 'u' && i + 5 < n && !memcmp(j + i + 2, "0000", 4)) {
          dsv3_error_set("%s: header has a NUL character (\\u0000) in a string (at byte %zu)", P, i + 8);
          return -1;
        }
        i++;
      } else if (c == '"') {
        in_str = 0;
        if (str_is_key) {
          key = ks;
          klen = (size_t)(j + i - ks);
        }
      }
      continue;
    }
    if (c == '"') {
      in_str = 1;
      str_is_key = depth == 1 && want_key;
      want_key = 0;
      ks = j + i + 1;
    } else if (c == '{' || c == '[') {
      depth++;
      want_key = depth == 1;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ',') {
      want_key = depth == 1;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t b = i;
      int frac = 0;
      while (i < n && (j[i] == '-' || j[i] == '+' || j[i] == '.' || j[i] == 'e' || j[i] == 'E' ||
                       (j[i] >= '0' && j[i] <= '9'))) {
        frac |= j[i] == '.' || j[i] == 'e' || j[i] == 'E';
        i++;
      }
      int is_meta = key && klen == 12 && !memcmp(key, "__metadata__", 12);
      if (frac && !is_meta) { /* a number in __metadata__ gets its own message later */
        dsv3_error_set("%s: tensor %.*s: number %.*s is not a non-negative integer", P, (int)(klen > 200 ? 200 : klen),
                       key ? (const char *)key : "?", (int)(i - b > 40 ? 40 : i - b), (const char *)j + b);
        return -1;
      }
      i--;
    }
  }
  return 0;
}

static int parse_header(dsv3_st *st, const uint8_t *buf, size_t len) {
  const char *P = st->path;
  if (len < 8) {
    dsv3_error_set("%s: file is %zu bytes, too short for a safetensors header", P, len);
    return -1;
  }
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | buf[i];
  if (hl > DSV3_ST_MAX_HEADER) {
    dsv3_error_set("%s: header length %llu exceeds the %u byte limit", P, (unsigned long long)hl,
                   DSV3_ST_MAX_HEADER);
    return -1;
  }
  if (hl + 8 > st->file_size) {
    dsv3_error_set("%s: header length %llu runs past the end of the file (%llu bytes)", P,
                   (unsigned long long)hl, (unsigned long long)st->file_size);
    return -1;
  }
  if (hl + 8 > len) {
    dsv3_error_set("%s: header length %llu is beyond the %zu bytes read", P, (unsigned long long)hl, len);
    return -1;
  }
  if (hl == 0) {
    dsv3_error_set("%s: header is empty (length 0): not a JSON object", P);
    return -1;
  }
  st->data_off = 8 + hl;
  uint64_t data_len = st->file_size - st->data_off;
  const char *json = (const char *)buf + 8;
  if (scan_header(P, buf + 8, (size_t)hl) != 0) return -1;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hl, &end, 0);
  if (root && end) /* only JSON whitespace may follow (the reference pads with spaces) */
    for (const char *p = end; p < json + hl; p++)
      if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
        cJSON_Delete(root);
        dsv3_error_set("%s: header has trailing bytes after the JSON object (at byte %lld)", P,
                       (long long)(p - json) + 8);
        return -1;
      }
  if (!root) {
    /* `end` holds the error position on failure; cJSON_GetErrorPtr() is a global, racy when
     * several threads open files at once. */
    dsv3_error_set("%s: header is not valid JSON (at byte %lld)", P,
                   end && end >= json ? (long long)(end - json) + 8 : -1LL);
    return -1;
  }
  if (!cJSON_IsObject(root)) {
    dsv3_error_set("%s: header is not a JSON object", P);
    cJSON_Delete(root);
    return -1;
  }
  size_t n = 0;
  int have_meta = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) {
      if (have_meta++) {
        dsv3_error_set("%s: __metadata__ appears twice", P);
        goto fail;
      }
      if (cJSON_IsNull(e)) continue; /* the reference reads null as "no metadata" */
      if (!cJSON_IsObject(e)) {
        dsv3_error_set("%s: __metadata__ is not a JSON object", P);
        goto fail;
      }
      for (const cJSON *m = e->child; m; m = m->next) {
        if (!cJSON_IsString(m)) {
          dsv3_error_set("%s: __metadata__ value of \"%.60s\" is not a string", P, m->string);
          goto fail;
        }
        st->nmeta++;
      }
    } else {
      n++;
    }
  }
  st->t = dsv3_xcalloc(n ? n : 1, sizeof *st->t);
  st->mkey = dsv3_xcalloc(st->nmeta ? st->nmeta : 1, sizeof(char *));
  st->mval = dsv3_xcalloc(st->nmeta ? st->nmeta : 1, sizeof(char *));
  st->nmeta = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) {
      for (const cJSON *m = e->child; m; m = m->next) {
        for (size_t j = 0; j < st->nmeta; j++)
          if (strcmp(st->mkey[j], m->string) == 0) {
            dsv3_error_set("%s: __metadata__ key \"%.60s\" appears twice", P, m->string);
            goto fail;
          }
        st->mkey[st->nmeta] = dsv3_xstrdup(m->string);
        st->mval[st->nmeta++] = dsv3_xstrdup(m->valuestring);
      }
      continue;
    }
    dsv3_tensor *t = &st->t[st->n];
    if (parse_entry(st, e, t, data_len) != 0) goto fail;
    t->name = dsv3_xstrdup(e->string);
    st->n++;
  }
  cJSON_Delete(root);
  root = NULL;

  st->ht_cap = 16;
  while (st->ht_cap < st->n * 2) st->ht_cap <<= 1;
  st->ht = dsv3_xcalloc(st->ht_cap, sizeof *st->ht);
  for (size_t i = 0; i < st->n; i++)
    if (ht_insert(st, i) != 0) {
      dsv3_error_set("%s: tensor %s: name appears twice in the header", P, st->t[i].name);
      return -1;
    }
  qsort(st->t, st->n, sizeof *st->t, cmp_begin);
  memset(st->ht, 0, st->ht_cap * sizeof *st->ht);
  for (size_t i = 0; i < st->n; i++) ht_insert(st, i);
  /* Offsets must tile the data section exactly: no overlap, no gap, nothing after. */
  uint64_t pos = 0;
  for (size_t i = 0; i < st->n; i++) {
    const dsv3_tensor *t = &st->t[i];
    if (t->begin < pos) {
      dsv3_error_set("%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s", P, t->name,
                     (unsigned long long)t->begin, (unsigned long long)(t->begin + t->nbytes),
                     st->t[i - 1].name);
      return -1;
    }
    if (t->begin > pos) {
      dsv3_error_set("%s: tensor %s: gap of %llu bytes before its data_offsets [%llu, %llu]", P,
                     t->name, (unsigned long long)(t->begin - pos), (unsigned long long)t->begin,
                     (unsigned long long)(t->begin + t->nbytes));
      return -1;
    }
    pos = t->begin + t->nbytes;
  }
  if (pos != data_len) {
    dsv3_error_set("%s: data section is %llu bytes but the tensors cover %llu", P,
                   (unsigned long long)data_len, (unsigned long long)pos);
    return -1;
  }
  if (st->base)
    for (size_t i = 0; i < st->n; i++) st->t[i].data = st->base + st->data_off + st->t[i].begin;
  return 0;
fail:
  cJSON_Delete(root);
  return -1;
}

static dsv3_st *st_new(const char *label) {
  dsv3_st *st = dsv3_xcalloc(1, sizeof *st);
  st->path = dsv3_xstrdup(label ? label : "<memory>");
  return st;
}

int dsv3_st_open_mem(const void *buf, size_t len, const char *label, dsv3_st **out) {
  dsv3_st *st = st_new(label);
  st->base = buf;
  st->file_size = len;
  if (parse_header(st, buf, len) != 0) {
    dsv3_st_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

int dsv3_st_open_header(const void *buf, size_t len, uint64_t file_size, const char *label,
                        dsv3_st **out) {
  dsv3_st *st = st_new(label);
  st->file_size = file_size;
  if (parse_header(st, buf, len) != 0) {
    dsv3_st_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

int dsv3_st_open(const char *path, dsv3_st **out) {
  struct stat s;
  int fd = dsv3_open_regular(path, &s);
  if (fd < 0) return -1;
  dsv3_st *st = st_new(path);
  st->file_size = (uint64_t)s.st_size;
  if (s.st_size < 8) {
    close(fd);
    dsv3_error_set("%s: file is %lld bytes, too short for a safetensors header", path,
                   (long long)s.st_size);
    dsv3_st_close(st);
    return -1;
  }
  void *m = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    dsv3_error_set("%s: mmap failed: %s", path, strerror(errno));
    dsv3_st_close(st);
    return -1;
  }
  st->base = m;
  st->map_len = (size_t)s.st_size;
  if (parse_header(st, m, (size_t)s.st_size) != 0) {
    dsv3_st_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

const char *dsv3_st_path(const dsv3_st *st) { return st->path; }
const void *dsv3_st_image(const dsv3_st *st, uint64_t *size) {
  if (size) *size = st->file_size;
  return st->base;
}
uint64_t dsv3_st_file_size(const dsv3_st *st) { return st->file_size; }
uint64_t dsv3_st_data_offset(const dsv3_st *st) { return st->data_off; }
size_t dsv3_st_count(const dsv3_st *st) { return st->n; }
const dsv3_tensor *dsv3_st_tensor(const dsv3_st *st, size_t i) { return i < st->n ? &st->t[i] : NULL; }
const dsv3_tensor *dsv3_st_find(const dsv3_st *st, const char *name) {
  if (!st->ht) return NULL;
  size_t mask = st->ht_cap - 1, h = (size_t)hash_str(name) & mask;
  while (st->ht[h]) {
    const dsv3_tensor *t = &st->t[st->ht[h] - 1];
    if (strcmp(t->name, name) == 0) return t;
    h = (h + 1) & mask;
  }
  return NULL;
}
size_t dsv3_st_meta_count(const dsv3_st *st) { return st->nmeta; }
void dsv3_st_meta(const dsv3_st *st, size_t i, const char **key, const char **value) {
  *key = i < st->nmeta ? st->mkey[i] : NULL;
  *value = i < st->nmeta ? st->mval[i] : NULL;
}
const char *dsv3_st_meta_get(const dsv3_st *st, const char *key) {
  for (size_t i = 0; i < st->nmeta; i++)
    if (strcmp(st->mkey[i], key) == 0) return st->mval[i];
  return NULL;
}

void dsv3_st_advise(const dsv3_st *st, const dsv3_tensor *t, int dontneed) {
  if (!st->map_len || !t->data || !t->nbytes) return;
  long pg = sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)t->data, e = a + t->nbytes;
  uintptr_t lo = a & ~(uintptr_t)(pg - 1);
  if (dontneed) {
    /* Only whole pages inside the tensor: neighbours may still be in use. */
    lo = (a + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
    e &= ~(uintptr_t)(pg - 1);
    if (e > lo) madvise((void *)lo, e - lo, MADV_DONTNEED);
  } else {
    madvise((void *)lo, e - lo, MADV_WILLNEED);
  }
}

/* ---------------------------------------------------------------- writer */
typedef struct {
  char *name;
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[DSV3_MAX_DIMS];
  uint64_t nbytes, offset; /* offset: absolute in file */
} wt;

struct dsv3_stw {
  wt *t;
  size_t n, cap;
  char **mk, **mv;
  size_t nmeta;
  int laid_out;
  uint8_t *header;
  size_t header_len;
  uint64_t file_size;
  dsv3_outfile out;
  int opened;
  size_t *ht; /* name -> index + 1, open addressing; the release has 92k tensors a file at mp 1 */
  size_t ht_cap;
};

dsv3_stw *dsv3_stw_new(void) {
  dsv3_stw *w = dsv3_xcalloc(1, sizeof *w);
  w->out.fd = -1;
  return w;
}

int dsv3_stw_find(const dsv3_stw *w, const char *name) {
  if (!w->ht) return -1;
  size_t mask = w->ht_cap - 1, h = (size_t)hash_str(name) & mask;
  while (w->ht[h]) {
    if (strcmp(w->t[w->ht[h] - 1].name, name) == 0) return (int)(w->ht[h] - 1);
    h = (h + 1) & mask;
  }
  return -1;
}

/* Insert index i (its name is not present); grow at half load. */
static void stw_index(dsv3_stw *w, size_t i) {
  if (2 * (w->n + 1) > w->ht_cap) {
    size_t cap = w->ht_cap ? w->ht_cap * 2 : 256;
    while (2 * (w->n + 1) > cap) cap *= 2;
    free(w->ht);
    w->ht = dsv3_xcalloc(cap, sizeof *w->ht);
    w->ht_cap = cap;
    for (size_t k = 0; k < w->n; k++) {
      size_t h = (size_t)hash_str(w->t[k].name) & (cap - 1);
      while (w->ht[h]) h = (h + 1) & (cap - 1);
      w->ht[h] = k + 1;
    }
  }
  size_t h = (size_t)hash_str(w->t[i].name) & (w->ht_cap - 1);
  while (w->ht[h]) h = (h + 1) & (w->ht_cap - 1);
  w->ht[h] = i + 1;
}

int dsv3_stw_add(dsv3_stw *w, const char *name, dsv3_dtype dt, int ndim, const int64_t *shape) {
  if (w->laid_out) {
    dsv3_error_set("tensor %s: declared after the layout was fixed", name);
    return -1;
  }
  /* "" is a valid name (the reference writes and reads it); "__metadata__" is not. */
  if (dsv3_dtype_size(dt) == 0 || ndim < 0 || ndim > DSV3_MAX_DIMS || strcmp(name, "__metadata__") == 0) {
    dsv3_error_set("tensor %s: invalid declaration", name);
    return -1;
  }
  if (dsv3_stw_find(w, name) >= 0) {
    dsv3_error_set("tensor %s: declared twice", name);
    return -1;
  }
  uint64_t nb = dsv3_dtype_size(dt);
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0 || dsv3_mul_u64(nb, (uint64_t)shape[i], &nb) != 0) {
      dsv3_error_set("tensor %s: invalid shape", name);
      return -1;
    }
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 64;
    w->t = dsv3_xrealloc(w->t, w->cap * sizeof *w->t);
  }
  wt *t = &w->t[w->n];
  memset(t, 0, sizeof *t);
  t->name = dsv3_xstrdup(name);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->nbytes = nb;
  stw_index(w, w->n); /* before n grows: a rehash covers the n earlier entries */
  return (int)w->n++;
}

int dsv3_stw_set_meta(dsv3_stw *w, const char *key, const char *value) {
  if (w->laid_out) {
    dsv3_error_set("metadata %s: set after the layout was fixed", key);
    return -1;
  }
  for (size_t i = 0; i < w->nmeta; i++)
    if (strcmp(w->mk[i], key) == 0) {
      free(w->mv[i]);
      w->mv[i] = dsv3_xstrdup(value);
      return 0;
    }
  w->mk = dsv3_xrealloc(w->mk, (w->nmeta + 1) * sizeof(char *));
  w->mv = dsv3_xrealloc(w->mv, (w->nmeta + 1) * sizeof(char *));
  w->mk[w->nmeta] = dsv3_xstrdup(key);
  w->mv[w->nmeta++] = dsv3_xstrdup(value);
  return 0;
}

/* A growable byte buffer for the header. */
typedef struct {
  char *p;
  size_t n, cap;
} sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
    b->p = dsv3_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
/* JSON string as serde_json writes it: ", \ and control characters escaped, the rest raw. */
static void sb_json_str(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char e[8];
    switch (*p) {
    case '"': sb_put(b, "\\\"", 2); break;
    case '\\': sb_put(b, "\\\\", 2); break;
    case '\n': sb_put(b, "\\n", 2); break;
    case '\r': sb_put(b, "\\r", 2); break;
    case '\t': sb_put(b, "\\t", 2); break;
    case '\b': sb_put(b, "\\b", 2); break;
    case '\f': sb_put(b, "\\f", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(e, sizeof e, "\\u%04x", *p);
        sb_puts(b, e);
      } else {
        sb_put(b, (const char *)p, 1);
      }
    }
  }
  sb_put(b, "\"", 1);
}

/* The reference order: dtype descending (its enum order, see dsv3_dtype_order), then name.
 * Sorting pointers keeps layout reentrant: several writers may lay out at once. */
static int cmp_layout(const void *a, const void *b) {
  const wt *x = *(const wt *const *)a, *y = *(const wt *const *)b;
  int ox = dsv3_dtype_order(x->dtype), oy = dsv3_dtype_order(y->dtype);
  if (ox != oy) return oy - ox; /* larger dtype first */
  return strcmp(x->name, y->name);
}

int dsv3_stw_layout(dsv3_stw *w) {
  if (w->laid_out) return 0;
  wt **order = dsv3_xmalloc((w->n ? w->n : 1) * sizeof *order);
  for (size_t i = 0; i < w->n; i++) order[i] = &w->t[i];
  qsort(order, w->n, sizeof *order, cmp_layout);
  sbuf b = {0};
  char num[64];
  sb_puts(&b, "{");
  int first = 1;
  if (w->nmeta) {
    sb_puts(&b, "\"__metadata__\":{");
    for (size_t i = 0; i < w->nmeta; i++) {
      if (i) sb_puts(&b, ",");
      sb_json_str(&b, w->mk[i]);
      sb_puts(&b, ":");
      sb_json_str(&b, w->mv[i]);
    }
    sb_puts(&b, "}");
    first = 0;
  }
  uint64_t off = 0;
  for (size_t k = 0; k < w->n; k++) {
    wt *t = order[k];
    if (!first) sb_puts(&b, ",");
    first = 0;
    sb_json_str(&b, t->name);
    sb_puts(&b, ":{\"dtype\":");
    sb_json_str(&b, dsv3_dtype_name(t->dtype));
    sb_puts(&b, ",\"shape\":[");
    for (int i = 0; i < t->ndim; i++) {
      snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)t->shape[i]);
      sb_puts(&b, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,", (unsigned long long)off);
    sb_puts(&b, num);
    t->offset = off; /* relative for now */
    off += t->nbytes;
    snprintf(num, sizeof num, "%llu]}", (unsigned long long)off);
    sb_puts(&b, num);
  }
  sb_puts(&b, "}");
  while (b.n % 8) sb_puts(&b, " ");
  free(order);
  w->header_len = 8 + b.n;
  w->header = dsv3_xmalloc(w->header_len);
  uint64_t hl = b.n;
  for (int i = 0; i < 8; i++) w->header[i] = (uint8_t)(hl >> (8 * i));
  memcpy(w->header + 8, b.p, b.n);
  free(b.p);
  for (size_t i = 0; i < w->n; i++) w->t[i].offset += w->header_len;
  w->file_size = w->header_len + off;
  w->laid_out = 1;
  return 0;
}

size_t dsv3_stw_count(const dsv3_stw *w) { return w->n; }
uint64_t dsv3_stw_offset(const dsv3_stw *w, int idx) {
  return idx >= 0 && (size_t)idx < w->n ? w->t[idx].offset : 0;
}
uint64_t dsv3_stw_nbytes(const dsv3_stw *w, int idx) {
  return idx >= 0 && (size_t)idx < w->n ? w->t[idx].nbytes : 0;
}
uint64_t dsv3_stw_file_size(const dsv3_stw *w) { return w->file_size; }
const void *dsv3_stw_header(const dsv3_stw *w, size_t *len) {
  if (len) *len = w->header_len;
  return w->header;
}

int dsv3_stw_open(dsv3_stw *w, const char *final_path) {
  if (w->opened) {
    dsv3_error_set("%s: safetensors writer is already open on %s", final_path, w->out.final_path);
    return -1;
  }
  if (!w->laid_out && dsv3_stw_layout(w) != 0) return -1;
  if (dsv3_outfile_open(&w->out, final_path) != 0) return -1;
  w->opened = 1;
  if (ftruncate(w->out.fd, (off_t)w->file_size) != 0) {
    dsv3_error_set("%s: cannot size output to %llu bytes: %s", final_path,
                   (unsigned long long)w->file_size, strerror(errno));
    dsv3_outfile_abort(&w->out);
    w->opened = 0;
    return -1;
  }
  if (dsv3_outfile_pwrite(&w->out, w->header, w->header_len, 0) != 0) {
    dsv3_outfile_abort(&w->out);
    w->opened = 0;
    return -1;
  }
  return 0;
}

int dsv3_stw_pwrite(dsv3_stw *w, int idx, uint64_t off, const void *buf, size_t n) {
  if (!w->opened || idx < 0 || (size_t)idx >= w->n) {
    dsv3_error_set("safetensors writer: write to tensor %d of %zu%s", idx, w->n,
                   w->opened ? "" : " before open (or after commit)");
    return -1;
  }
  const wt *t = &w->t[idx];
  if (off > t->nbytes || n > t->nbytes - off) {
    dsv3_error_set("%s: tensor %s: write of %zu bytes at %llu is out of range", w->out.final_path,
                   t->name, n, (unsigned long long)off);
    return -1;
  }
  return dsv3_outfile_pwrite(&w->out, buf, n, t->offset + off);
}

int dsv3_stw_commit(dsv3_stw *w) {
  if (!w->opened) {
    dsv3_error_set("safetensors writer: commit without open");
    return -1;
  }
  w->opened = 0;
  return dsv3_outfile_commit(&w->out);
}

void dsv3_stw_free(dsv3_stw *w) {
  if (!w) return;
  if (w->opened) dsv3_outfile_abort(&w->out);
  for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
  for (size_t i = 0; i < w->nmeta; i++) {
    free(w->mk[i]);
    free(w->mv[i]);
  }
  free(w->mk);
  free(w->mv);
  free(w->t);
  free(w->ht);
  free(w->header);
  free(w);
}

int dsv3_st_write_file(const char *path, const dsv3_tensor_src *ts, size_t n,
                       const char *const *meta_kv, size_t n_meta) {
  dsv3_stw *w = dsv3_stw_new();
  int rc = -1;
  for (size_t i = 0; i < n_meta; i++)
    if (dsv3_stw_set_meta(w, meta_kv[2 * i], meta_kv[2 * i + 1]) != 0) goto out;
  for (size_t i = 0; i < n; i++)
    if (dsv3_stw_add(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].shape) < 0) {
      dsv3_error_prefix("%s", path);
      goto out;
    }
  if (dsv3_stw_open(w, path) != 0) goto out;
  for (size_t i = 0; i < n; i++)
    if (w->t[i].nbytes && dsv3_stw_pwrite(w, (int)i, 0, ts[i].data, w->t[i].nbytes) != 0) goto out;
  rc = dsv3_stw_commit(w);
out:
  dsv3_stw_free(w);
  return rc;
}
