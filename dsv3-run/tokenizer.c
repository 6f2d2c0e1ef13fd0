/* tokenizer.c - Hugging Face tokenizer.json byte-level BPE (see tokenizer.h).
 *
 * Pipeline, as `tokenizers` runs it: added tokens are cut out first (leftmost-longest); the
 * text between them is pre-tokenized by the Sequence of Split(Isolated) regexes (Oniguruma,
 * the engine `tokenizers` uses) and ByteLevel (bytes -> GPT-2 unicode alphabet); each piece
 * is merged by BPE rank; symbols map to ids through the vocabulary. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <oniguruma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
  char *key;
  int32_t val;
} kv;

typedef struct {
  kv *e;
  size_t cap;
} strmap; /* open addressing string -> int */

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}
static void sm_init(strmap *m, size_t n) {
  m->cap = 16;
  while (m->cap < n * 2) m->cap <<= 1;
  m->e = dsv3_xcalloc(m->cap, sizeof(kv));
}
static void sm_put(strmap *m, const char *k, size_t n, int32_t v) {
  size_t h = (size_t)fnv(k, n) & (m->cap - 1);
  while (m->e[h].key) {
    if (strlen(m->e[h].key) == n && !memcmp(m->e[h].key, k, n)) {
      m->e[h].val = v;
      return;
    }
    h = (h + 1) & (m->cap - 1);
  }
  m->e[h].key = strndup(k, n);
  m->e[h].val = v;
}
static int32_t sm_get(const strmap *m, const char *k, size_t n) {
  size_t h = (size_t)fnv(k, n) & (m->cap - 1);
  while (m->e[h].key) {
    if (!strncmp(m->e[h].key, k, n) && m->e[h].key[n] == 0) return m->e[h].val;
    h = (h + 1) & (m->cap - 1);
  }
  return -1;
}
static void sm_free(strmap *m) {
  for (size_t i = 0; i < m->cap; i++) free(m->e[i].key);
  free(m->e);
}

typedef struct {
  char *content;
  size_t len;
  int32_t id;
  int special;
} added_tok;

struct dsv3_tokenizer {
  strmap vocab;  /* byte-level string -> id */
  strmap merges; /* "a b" -> rank */
  char **id2tok; /* id -> string (byte-level, or the added token's content) */
  size_t *id2len;
  int64_t nvocab;
  added_tok *added;
  size_t nadded;
  char *is_special; /* per id */
  regex_t **splits;
  size_t nsplits;
  char byte2u[256][4]; /* GPT-2 byte -> unicode (UTF-8) */
  int u2byte[512];     /* code point -> byte, -1 */
  int32_t bos, eos;
};

static int utf8_encode(uint32_t cp, char *o) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Length of one valid UTF-8 sequence at s (maximal-subpart rules: 0 if invalid, and *bad
 * gets the number of bytes that form the invalid maximal subpart, as CPython replaces them). */
static int utf8_valid(const unsigned char *s, size_t n, size_t *bad) {
  unsigned c = s[0];
  int need;
  unsigned lo = 0x80, hi = 0xbf;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) need = 1;
  else if (c == 0xe0) { need = 2; lo = 0xa0; }
  else if (c >= 0xe1 && c <= 0xec) need = 2;
  else if (c == 0xed) { need = 2; hi = 0x9f; }
  else if (c >= 0xee && c <= 0xef) need = 2;
  else if (c == 0xf0) { need = 3; lo = 0x90; }
  else if (c >= 0xf1 && c <= 0xf3) need = 3;
  else if (c == 0xf4) { need = 3; hi = 0x8f; }
  else { *bad = 1; return 0; }
  size_t i = 1;
  for (int k = 0; k < need; k++, i++) {
    unsigned l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xbf;
    if (i >= n || s[i] < l || s[i] > h) {
      *bad = i;
      return 0;
    }
  }
  return (int)i;
}

/* Valid UTF-8 copy of the input, invalid subparts replaced by U+FFFD. */
static char *sanitize(const char *in, size_t n, size_t *out_n) {
  char *o = dsv3_xmalloc(n * 3 + 1);
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    size_t bad = 0;
    int l = utf8_valid((const unsigned char *)in + i, n - i, &bad);
    if (l > 0) {
      memcpy(o + k, in + i, (size_t)l);
      k += (size_t)l;
      i += (size_t)l;
    } else {
      memcpy(o + k, "\xef\xbf\xbd", 3);
      k += 3;
      i += bad;
    }
  }
  o[k] = 0;
  *out_n = k;
  return o;
}

void dsv3_tok_free(dsv3_tokenizer *t) {
  if (!t) return;
  sm_free(&t->vocab);
  sm_free(&t->merges);
  for (int64_t i = 0; i < t->nvocab; i++) free(t->id2tok[i]);
  free(t->id2tok);
  free(t->id2len);
  for (size_t i = 0; i < t->nadded; i++) free(t->added[i].content);
  free(t->added);
  free(t->is_special);
  for (size_t i = 0; i < t->nsplits; i++) onig_free(t->splits[i]);
  free(t->splits);
  free(t);
}

static void byte_map(dsv3_tokenizer *t) {
  /* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n */
  int n = 0;
  for (int i = 0; i < 512; i++) t->u2byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    uint32_t cp = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    memset(t->byte2u[b], 0, 4);
    utf8_encode(cp, t->byte2u[b]);
    t->u2byte[cp] = b;
  }
}

int dsv3_tok_load(const char *path, dsv3_tokenizer **out) {
  char *buf;
  size_t n;
  if (dsv3_read_file(path, &buf, &n, 256u << 20) != 0) return -1;
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  dsv3_tokenizer *t = dsv3_xcalloc(1, sizeof *t);
  t->bos = t->eos = -1;
  byte_map(t);
  static int onig_ready = 0;
  if (!onig_ready) {
    OnigEncoding enc = ONIG_ENCODING_UTF8;
    onig_initialize(&enc, 1);
    onig_ready = 1;
  }
  const cJSON *model = j ? cJSON_GetObjectItem(j, "model") : NULL;
  const cJSON *vocab = model ? cJSON_GetObjectItem(model, "vocab") : NULL;
  const cJSON *merges = model ? cJSON_GetObjectItem(model, "merges") : NULL;
  const cJSON *type = model ? cJSON_GetObjectItem(model, "type") : NULL;
  if (!j || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges) || !cJSON_IsString(type) || strcmp(type->valuestring, "BPE")) {
    dsv3_error_set("%s: not a BPE tokenizer.json (model.type, model.vocab, model.merges)", path);
    goto fail;
  }
  int64_t maxid = -1;
  for (const cJSON *v = vocab->child; v; v = v->next) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e7) {
      dsv3_error_set("%s: vocab entry %.60s has no valid id", path, v->string);
      goto fail;
    }
    if ((int64_t)v->valuedouble > maxid) maxid = (int64_t)v->valuedouble;
  }
  const cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
  for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
    const cJSON *id = cJSON_GetObjectItem(a, "id");
    if (cJSON_IsNumber(id) && id->valuedouble > (double)maxid && id->valuedouble < 1e7) maxid = (int64_t)id->valuedouble;
  }
  t->nvocab = maxid + 1;
  t->id2tok = dsv3_xcalloc((size_t)t->nvocab, sizeof(char *));
  t->id2len = dsv3_xcalloc((size_t)t->nvocab, sizeof(size_t));
  t->is_special = dsv3_xcalloc((size_t)t->nvocab, 1);
  sm_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab) + 16);
  for (const cJSON *v = vocab->child; v; v = v->next) {
    int32_t id = (int32_t)v->valuedouble;
    sm_put(&t->vocab, v->string, strlen(v->string), id);
    free(t->id2tok[id]);
    t->id2tok[id] = dsv3_xstrdup(v->string);
    t->id2len[id] = strlen(v->string);
  }
  sm_init(&t->merges, (size_t)cJSON_GetArraySize(merges) + 16);
  int32_t rank = 0;
  for (const cJSON *m = merges->child; m; m = m->next, rank++) {
    char key[1024];
    if (cJSON_IsString(m)) {
      snprintf(key, sizeof key, "%s", m->valuestring);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
      snprintf(key, sizeof key, "%s %s", m->child->valuestring, m->child->next->valuestring);
    } else {
      dsv3_error_set("%s: merge %d is neither \"a b\" nor [a, b]", path, rank);
      goto fail;
    }
    if (!strchr(key, ' ')) continue;
    sm_put(&t->merges, key, strlen(key), rank);
  }
  for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
    const cJSON *id = cJSON_GetObjectItem(a, "id"), *content = cJSON_GetObjectItem(a, "content");
    if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || !content->valuestring[0]) continue;
    t->added = dsv3_xrealloc(t->added, (t->nadded + 1) * sizeof *t->added);
    added_tok *at = &t->added[t->nadded++];
    at->content = dsv3_xstrdup(content->valuestring);
    at->len = strlen(at->content);
    at->id = (int32_t)id->valuedouble;
    at->special = cJSON_IsTrue(cJSON_GetObjectItem(a, "special"));
    t->is_special[at->id] = (char)at->special;
    free(t->id2tok[at->id]);
    t->id2tok[at->id] = dsv3_xstrdup(at->content);
    t->id2len[at->id] = at->len;
    if (!strcmp(at->content, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>")) t->bos = at->id;
    if (!strcmp(at->content, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>")) t->eos = at->id;
  }
  /* pre-tokenizer: Sequence of Split (Isolated) + ByteLevel(use_regex false), or one of them */
  const cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
  const cJSON *list = pre && cJSON_IsString(cJSON_GetObjectItem(pre, "type")) &&
                              !strcmp(cJSON_GetObjectItem(pre, "type")->valuestring, "Sequence")
                          ? cJSON_GetObjectItem(pre, "pretokenizers")
                          : NULL;
  const cJSON *one = list ? list->child : pre;
  for (const cJSON *p = one; p; p = list ? p->next : NULL) {
    const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(p, "type"));
    if (!ty) break;
    if (!strcmp(ty, "Split")) {
      const cJSON *pat = cJSON_GetObjectItem(p, "pattern");
      const char *re = cJSON_GetStringValue(cJSON_GetObjectItem(pat, "Regex"));
      const char *beh = cJSON_GetStringValue(cJSON_GetObjectItem(p, "behavior"));
      if (!re || !beh || strcmp(beh, "Isolated") || cJSON_IsTrue(cJSON_GetObjectItem(p, "invert"))) {
        dsv3_error_set("%s: pre_tokenizer Split: only Regex patterns with behavior Isolated are supported", path);
        goto fail;
      }
      regex_t *rx;
      OnigErrorInfo ei;
      int r = onig_new(&rx, (const UChar *)re, (const UChar *)re + strlen(re), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                       ONIG_SYNTAX_RUBY, &ei);
      if (r != ONIG_NORMAL) {
        UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &ei);
        dsv3_error_set("%s: pre_tokenizer regex: %s", path, (char *)msg);
        goto fail;
      }
      t->splits = dsv3_xrealloc(t->splits, (t->nsplits + 1) * sizeof *t->splits);
      t->splits[t->nsplits++] = rx;
    } else if (!strcmp(ty, "ByteLevel")) {
      if (cJSON_IsTrue(cJSON_GetObjectItem(p, "use_regex")) || cJSON_IsTrue(cJSON_GetObjectItem(p, "add_prefix_space"))) {
        dsv3_error_set("%s: pre_tokenizer ByteLevel with use_regex or add_prefix_space is not supported", path);
        goto fail;
      }
    } else {
      dsv3_error_set("%s: pre_tokenizer %s is not supported", path, ty);
      goto fail;
    }
  }
  const cJSON *norm = cJSON_GetObjectItem(j, "normalizer");
  if (norm && !cJSON_IsNull(norm)) {
    dsv3_error_set("%s: normalizers are not supported", path);
    goto fail;
  }
  cJSON_Delete(j);
  *out = t;
  return 0;
fail:
  cJSON_Delete(j);
  dsv3_tok_free(t);
  return -1;
}

/* ---- encoding ---- */
typedef struct {
  int32_t *v;
  size_t n, cap;
} ids_t;
static void push(ids_t *o, int32_t id) {
  if (o->n == o->cap) {
    o->cap = o->cap ? o->cap * 2 : 256;
    o->v = dsv3_xrealloc(o->v, o->cap * sizeof(int32_t));
  }
  o->v[o->n++] = id;
}

/* BPE over one pre-token (raw bytes). */
static void bpe(const dsv3_tokenizer *t, const char *s, size_t n, ids_t *out) {
  if (!n) return;
  /* symbols: byte-level strings, one per byte to start */
  size_t ns = n;
  char **sym = dsv3_xmalloc(ns * sizeof(char *));
  size_t *len = dsv3_xmalloc(ns * sizeof(size_t));
  char *store = dsv3_xmalloc(n * 4 * 2 + 16);
  /* whole byte-level string once; symbols point into a growing arena of concatenations */
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *u = t->byte2u[(unsigned char)s[i]];
    size_t l = strlen(u);
    memcpy(store + k, u, l);
    sym[i] = store + k;
    len[i] = l;
    k += l;
  }
  /* symbols stay contiguous in `store`, so a merge just extends the left symbol */
  char key[2048];
  for (;;) {
    int32_t best = -1;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
      if (len[i] + len[i + 1] + 2 > sizeof key) continue;
      memcpy(key, sym[i], len[i]);
      key[len[i]] = ' ';
      memcpy(key + len[i] + 1, sym[i + 1], len[i + 1]);
      int32_t r = sm_get(&t->merges, key, len[i] + 1 + len[i + 1]);
      if (r >= 0 && (best < 0 || r < best)) {
        best = r;
        bi = i;
      }
    }
    if (best < 0) break;
    len[bi] += len[bi + 1];
    memmove(sym + bi + 1, sym + bi + 2, (ns - bi - 2) * sizeof(char *));
    memmove(len + bi + 1, len + bi + 2, (ns - bi - 2) * sizeof(size_t));
    ns--;
  }
  for (size_t i = 0; i < ns; i++) {
    int32_t id = sm_get(&t->vocab, sym[i], len[i]);
    if (id >= 0) {
      push(out, id);
    } else { /* not in the vocabulary: fall back to its single characters */
      for (size_t j = 0; j < len[i];) {
        size_t cl = 1;
        unsigned char c = (unsigned char)sym[i][j];
        if (c >= 0xc0) cl = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        int32_t cid = sm_get(&t->vocab, sym[i] + j, cl);
        if (cid >= 0) push(out, cid);
        j += cl;
      }
    }
  }
  free(sym);
  free(len);
  free(store);
}

/* Apply split regex `level` to [s, s+n), recursing to the next level on every piece. */
static void pretok(const dsv3_tokenizer *t, size_t level, const char *s, size_t n, ids_t *out) {
  if (level == t->nsplits) {
    bpe(t, s, n, out);
    return;
  }
  regex_t *rx = t->splits[level];
  OnigRegion *reg = onig_region_new();
  const UChar *str = (const UChar *)s, *end = str + n;
  size_t pos = 0, last = 0;
  while (pos <= n) {
    int r = onig_search(rx, str, end, str + pos, end, reg, ONIG_OPTION_NONE);
    if (r < 0) break;
    size_t b = (size_t)reg->beg[0], e = (size_t)reg->end[0];
    if (e == b) { /* empty match: step one character */
      size_t step = 1;
      while (b + step < n && (str[b + step] & 0xc0) == 0x80) step++;
      pos = b + step;
      continue;
    }
    if (b > last) pretok(t, level + 1, s + last, b - last, out);
    pretok(t, level + 1, s + b, e - b, out);
    last = pos = e;
  }
  if (last < n) pretok(t, level + 1, s + last, n - last, out);
  onig_region_free(reg, 1);
}

int64_t dsv3_tok_encode(const dsv3_tokenizer *t, const char *text, size_t len, int32_t **ids) {
  size_t n;
  char *s = sanitize(text, len, &n);
  ids_t out = {0};
  size_t last = 0;
  for (size_t i = 0; i < n;) {
    /* leftmost-longest added token at i */
    const added_tok *best = NULL;
    for (size_t a = 0; a < t->nadded; a++)
      if (t->added[a].len <= n - i && !memcmp(s + i, t->added[a].content, t->added[a].len) &&
          (!best || t->added[a].len > best->len))
        best = &t->added[a];
    if (!best) {
      i++;
      continue;
    }
    if (i > last) pretok(t, 0, s + last, i - last, &out);
    push(&out, best->id);
    i += best->len;
    last = i;
  }
  if (last < n) pretok(t, 0, s + last, n - last, &out);
  free(s);
  *ids = out.v ? out.v : dsv3_xmalloc(sizeof(int32_t));
  return (int64_t)out.n;
}

size_t dsv3_tok_token_bytes(const dsv3_tokenizer *t, int32_t id, char *buf, size_t cap) {
  if (id < 0 || id >= t->nvocab || !t->id2tok[id]) return 0;
  const char *s = t->id2tok[id];
  size_t n = t->id2len[id], k = 0;
  int is_added = 0;
  for (size_t a = 0; a < t->nadded; a++) is_added |= t->added[a].id == id;
  if (is_added) {
    if (n > cap) n = cap;
    memcpy(buf, s, n);
    return n;
  }
  for (size_t i = 0; i < n;) {
    /* decode one UTF-8 char of the byte-level alphabet */
    unsigned char c = (unsigned char)s[i];
    uint32_t cp;
    size_t l;
    if (c < 0x80) { cp = c; l = 1; }
    else if (c < 0xe0 && i + 1 < n) { cp = ((c & 0x1fu) << 6) | (s[i + 1] & 0x3fu); l = 2; }
    else { cp = 0xffffffff; l = 1; }
    int b = cp < 512 ? t->u2byte[cp] : -1;
    if (b >= 0 && k < cap) buf[k++] = (char)b;
    i += l;
  }
  return k;
}

char *dsv3_tok_decode(const dsv3_tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *out_len) {
  size_t cap = 64, k = 0;
  char *o = dsv3_xmalloc(cap);
  char tmp[4096];
  for (size_t i = 0; i < n; i++) {
    if (skip_special && dsv3_tok_is_special(t, ids[i])) continue;
    size_t l = dsv3_tok_token_bytes(t, ids[i], tmp, sizeof tmp);
    if (k + l + 1 > cap) {
      while (k + l + 1 > cap) cap *= 2;
      o = dsv3_xrealloc(o, cap);
    }
    memcpy(o + k, tmp, l);
    k += l;
  }
  o[k] = 0;
  if (out_len) *out_len = k;
  return o;
}

int32_t dsv3_tok_id(const dsv3_tokenizer *t, const char *token) {
  for (size_t a = 0; a < t->nadded; a++)
    if (!strcmp(t->added[a].content, token)) return t->added[a].id;
  return sm_get(&t->vocab, token, strlen(token));
}
int dsv3_tok_is_special(const dsv3_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->nvocab && t->is_special[id];
}
int64_t dsv3_tok_vocab_size(const dsv3_tokenizer *t) { return t->nvocab; }
int32_t dsv3_tok_bos(const dsv3_tokenizer *t) { return t->bos; }
int32_t dsv3_tok_eos(const dsv3_tokenizer *t) { return t->eos; }

int64_t dsv3_tok_chat(const dsv3_tokenizer *t, const dsv3_chat_msg *msgs, size_t n, int add_generation_prompt, int32_t **ids) {
  static const char *BOS = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
  static const char *EOS = "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
  static const char *USER = "<\xef\xbd\x9c" "User\xef\xbd\x9c>";
  static const char *ASSISTANT = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";
  size_t cap = 256;
  for (size_t i = 0; i < n; i++) cap += strlen(msgs[i].content) + 64;
  char *s = dsv3_xmalloc(cap);
  size_t k = (size_t)snprintf(s, cap, "%s", BOS);
  for (size_t i = 0; i < n; i++) {
    const char *r = msgs[i].role;
    if (!strcmp(r, "system")) k += (size_t)snprintf(s + k, cap - k, "%s", msgs[i].content);
    else if (!strcmp(r, "user")) k += (size_t)snprintf(s + k, cap - k, "%s%s", USER, msgs[i].content);
    else if (!strcmp(r, "assistant")) k += (size_t)snprintf(s + k, cap - k, "%s%s%s", ASSISTANT, msgs[i].content, EOS);
  }
  if (add_generation_prompt) k += (size_t)snprintf(s + k, cap - k, "%s", ASSISTANT);
  int64_t r = dsv3_tok_encode(t, s, k, ids);
  free(s);
  return r;
}
