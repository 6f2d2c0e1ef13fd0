/* tokenizer.c - Hugging Face tokenizer.json byte-level BPE (see tokenizer.h and docs/tokenizer.md).
 *
 * The pipeline is `tokenizers` 0.2x's, step for step, because "identical ids on any input" only
 * holds if the corner cases are the same too:
 *   1. input bytes -> valid UTF-8 (U+FFFD per maximal invalid subpart, as CPython decodes);
 *   2. added tokens with normalized=false are cut out of the raw text (leftmost-longest, as the
 *      Aho-Corasick automaton of AddedVocabulary, with single_word / lstrip / rstrip);
 *   3. each remaining piece is normalized, then added tokens with normalized=true are cut out;
 *   4. each remaining piece goes through the pre-tokenizers (Split with Oniguruma - the engine
 *      `tokenizers` is built with - iterating matches like the onig crate's find_iter, then the
 *      Isolated/Removed/Merged.../Contiguous behaviours and invert; ByteLevel; ...);
 *   5. each pre-token is split into characters and merged by BPE rank with a priority queue, as
 *      models/bpe/word.rs does (same tie-breaking and same stale-entry test).
 * Tokens ids of added tokens are assigned as AddedVocabulary::add_tokens does (model vocab first),
 * not taken blindly from the JSON. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <oniguruma.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_IDS (1 << 24) /* a vocabulary beyond 16M ids is a hostile file, not a tokenizer */

/* ---------------------------------------------------------------- small containers ---- */

typedef struct {
  char *k;
  uint32_t n;
  int32_t v;
} sent;
typedef struct {
  sent *e;
  size_t cap, used;
} strmap; /* open addressing, byte string -> int32 */

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}
static void sm_grow(strmap *m);
static void sm_init(strmap *m, size_t n) {
  m->cap = 16;
  while (m->cap < n * 2) m->cap <<= 1;
  m->e = dsv3_xcalloc(m->cap, sizeof(sent));
  m->used = 0;
}
static sent *sm_slot(const strmap *m, const char *k, size_t n) {
  size_t h = (size_t)fnv(k, n) & (m->cap - 1);
  while (m->e[h].k && !(m->e[h].n == n && !memcmp(m->e[h].k, k, n))) h = (h + 1) & (m->cap - 1);
  return &m->e[h];
}
static void sm_put(strmap *m, const char *k, size_t n, int32_t v) {
  if ((m->used + 1) * 2 > m->cap) sm_grow(m);
  sent *e = sm_slot(m, k, n);
  if (!e->k) {
    e->k = dsv3_xmalloc(n + 1);
    memcpy(e->k, k, n);
    e->k[n] = 0;
    e->n = (uint32_t)n;
    m->used++;
  }
  e->v = v;
}
static void sm_grow(strmap *m) {
  strmap o = *m;
  m->cap = o.cap * 2;
  m->e = dsv3_xcalloc(m->cap, sizeof(sent));
  for (size_t i = 0; i < o.cap; i++)
    if (o.e[i].k) *sm_slot(m, o.e[i].k, o.e[i].n) = o.e[i];
  free(o.e);
}
static int32_t sm_get(const strmap *m, const char *k, size_t n) {
  if (!m->e) return -1;
  const sent *e = sm_slot(m, k, n);
  return e->k ? e->v : -1;
}
static void sm_free(strmap *m) {
  for (size_t i = 0; m->e && i < m->cap; i++) free(m->e[i].k);
  free(m->e);
  m->e = NULL;
}

typedef struct {
  uint64_t key; /* (a << 32) | b */
  int32_t rank, nid;
} pent;
typedef struct {
  pent *e;
  size_t cap;
} pairmap; /* merges: (id a, id b) -> (rank, merged id); rank -1 = empty slot */

static size_t ph(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17); }
static pent *pm_slot(const pairmap *m, uint64_t k) {
  size_t h = ph(k) & (m->cap - 1);
  while (m->e[h].rank >= 0 && m->e[h].key != k) h = (h + 1) & (m->cap - 1);
  return &m->e[h];
}
static const pent *pm_get(const pairmap *m, int32_t a, int32_t b) {
  const pent *e = pm_slot(m, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
  return e->rank >= 0 ? e : NULL;
}

typedef struct {
  char *p;
  size_t n, cap;
} sbuf;
static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 64;
    b->p = dsv3_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

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

/* -------------------------------------------------------------------------- UTF-8 ---- */

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
/* Length of the character starting at s (s is valid UTF-8). */
static size_t clen(unsigned char c) { return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4; }
static uint32_t cdecode(const unsigned char *s, size_t *l) {
  *l = clen(s[0]);
  switch (*l) {
  case 1: return s[0];
  case 2: return ((s[0] & 0x1fu) << 6) | (s[1] & 0x3fu);
  case 3: return ((s[0] & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
  default: return ((s[0] & 0x07u) << 18) | ((s[1] & 0x3fu) << 12) | ((s[2] & 0x3fu) << 6) | (s[3] & 0x3fu);
  }
}

/* One valid UTF-8 sequence at s: its length, or 0 and *bad = bytes of the maximal invalid
 * subpart (Unicode 3.9 "substitution of maximal subparts", which CPython follows). */
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

/* Rust's char::is_whitespace and regex `\s` (Unicode White_Space). */
static int is_ws(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* ------------------------------------------------------------------------ patterns ---- */

/* A regex as `tokenizers` compiles it (onig crate: Regex::new = default syntax, no options). */
typedef struct {
  regex_t *rx;
} pattern;

static pthread_once_t onig_once = PTHREAD_ONCE_INIT;
static void onig_init_once(void) {
  OnigEncoding enc = ONIG_ENCODING_UTF8;
  onig_initialize(&enc, 1);
}

static int pat_compile(pattern *p, const char *re, size_t n, const char *path, const char *what) {
  OnigErrorInfo ei;
  pthread_once(&onig_once, onig_init_once);
  int r = onig_new(&p->rx, (const UChar *)re, (const UChar *)re + n, ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                   ONIG_SYNTAX_DEFAULT, &ei);
  if (r != ONIG_NORMAL) {
    UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, r, &ei);
    p->rx = NULL;
    dsv3_error_set("%s: %s: regex /%.80s/: %s", path, what, re, (char *)msg);
    return -1;
  }
  return 0;
}
/* {"String": s} is compiled as regex::escape(s), {"Regex": r} as is. */
static int pat_from_json(pattern *p, const cJSON *j, const char *path, const char *what) {
  const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "String"));
  const char *r = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Regex"));
  if (r) return pat_compile(p, r, strlen(r), path, what);
  if (!s) {
    dsv3_error_set("%s: %s: pattern is neither {\"String\": ...} nor {\"Regex\": ...}", path, what);
    return -1;
  }
  sbuf b = {0};
  sb_add(&b, "", 0);
  for (const char *c = s; *c; c++) {
    if (strchr("\\.+*?()|[]{}^$#&-~", *c)) sb_add(&b, "\\", 1);
    sb_add(&b, c, 1);
  }
  int rc = pat_compile(p, b.p, b.n, path, what);
  free(b.p);
  return rc;
}

typedef struct {
  size_t b, e;
  int flag; /* is_match, then "remove" after the behaviour */
} seg;
typedef struct {
  seg *v;
  size_t n, cap;
} segs;
static void seg_push(segs *s, size_t b, size_t e, int f) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 16;
    s->v = dsv3_xrealloc(s->v, s->cap * sizeof(seg));
  }
  s->v[s->n++] = (seg){b, e, f};
}

/* Pattern::find_matches for a SysRegex: the onig crate's find_iter (an empty match right where
 * the previous match ended is skipped by one character), gaps reported as non-matches. */
static int find_matches(const pattern *p, OnigRegion *reg, const char *s, size_t n, segs *out) {
  out->n = 0;
  if (!n) {
    seg_push(out, 0, 0, 0);
    return 0;
  }
  const UChar *str = (const UChar *)s, *end = str + n;
  size_t last_end = 0, prev = 0, last_match_end = 0;
  int have_last = 0;
  while (last_end <= n) {
    onig_region_clear(reg);
    int r = onig_search(p->rx, str, end, str + last_end, end, reg, ONIG_OPTION_NONE);
    if (r == ONIG_MISMATCH) break;
    if (r < 0) {
      UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(msg, r);
      dsv3_error_set("regex search failed: %s", (char *)msg);
      return -1;
    }
    size_t b = (size_t)reg->beg[0], e = (size_t)reg->end[0];
    if (e == b && have_last && last_match_end == e) {
      last_end += last_end < n ? clen(str[last_end]) : 1;
      continue;
    }
    last_end = last_match_end = e;
    have_last = 1;
    if (prev != b) seg_push(out, prev, b, 0);
    seg_push(out, b, e, 1);
    prev = e;
  }
  if (prev != n) seg_push(out, prev, n, 0);
  return 0;
}

enum { B_ISOLATED, B_REMOVED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };

/* NormalizedString::split: turn (offsets, is_match) into (offsets, remove). */
static void apply_behavior(segs *m, int behavior, int invert, segs *out) {
  out->n = 0;
  if (invert)
    for (size_t i = 0; i < m->n; i++) m->v[i].flag = !m->v[i].flag;
  int prevm = 0;
  switch (behavior) {
  case B_ISOLATED:
    for (size_t i = 0; i < m->n; i++) seg_push(out, m->v[i].b, m->v[i].e, 0);
    break;
  case B_REMOVED:
    for (size_t i = 0; i < m->n; i++) seg_push(out, m->v[i].b, m->v[i].e, m->v[i].flag);
    break;
  case B_CONTIGUOUS:
    for (size_t i = 0; i < m->n; i++) {
      if (m->v[i].flag == prevm && out->n) out->v[out->n - 1].e = m->v[i].e;
      else seg_push(out, m->v[i].b, m->v[i].e, 0);
      prevm = m->v[i].flag;
    }
    break;
  case B_MERGED_PREV:
    for (size_t i = 0; i < m->n; i++) {
      if (m->v[i].flag && !prevm && out->n) out->v[out->n - 1].e = m->v[i].e;
      else seg_push(out, m->v[i].b, m->v[i].e, 0);
      prevm = m->v[i].flag;
    }
    break;
  case B_MERGED_NEXT:
    for (size_t i = m->n; i-- > 0;) {
      if (m->v[i].flag && !prevm && out->n) out->v[out->n - 1].b = m->v[i].b;
      else seg_push(out, m->v[i].b, m->v[i].e, 0);
      prevm = m->v[i].flag;
    }
    for (size_t i = 0; i < out->n / 2; i++) {
      seg t = out->v[i];
      out->v[i] = out->v[out->n - 1 - i];
      out->v[out->n - 1 - i] = t;
    }
    break;
  }
}

/* ---------------------------------------------------------------------- the model ---- */

enum { PT_SPLIT, PT_BYTELEVEL };
typedef struct {
  int type;
  pattern pat; /* PT_SPLIT; PT_BYTELEVEL with use_regex: the GPT-2 regex */
  int behavior, invert;
  int add_prefix_space, use_regex;
} pretok_step;

enum { N_REPLACE, N_PREPEND, N_STRIP };
typedef struct {
  int type;
  pattern pat;
  char *str; /* replacement / prefix */
  int left, right;
} norm_step;

typedef struct {
  char *content;
  size_t len;
  char *pattern; /* what is matched: content, or its normalized form */
  size_t plen;
  int32_t id;
  int special, single_word, lstrip, rstrip, normalized;
} added_tok;

typedef struct {
  int32_t child, sibling, tok; /* tok: index into added, -1 */
  unsigned char byte;
} tnode;
typedef struct {
  tnode *v;
  size_t n, cap;
  int32_t root[256];
  int any;
} trie;

enum { DEC_BYTELEVEL, DEC_NONE, DEC_OTHER };

struct dsv3_tokenizer {
  char *path;
  strmap vocab; /* model vocabulary: token string -> id */
  pairmap merges;
  char **vocab_r; /* id -> model token string (NULL if none) */
  uint32_t *vocab_rlen;
  int64_t nvocab; /* max id + 1 over model and added tokens */
  size_t model_vocab_len;
  /* BPE options */
  int32_t unk_id; /* -1 if none */
  char *prefix, *suffix;
  int fuse_unk, byte_fallback, ignore_merges;
  /* added vocabulary */
  added_tok *added;
  size_t nadded;
  strmap added_map;  /* content -> id */
  int32_t *added_r;  /* id -> index into added, -1 */
  strmap special_set; /* contents of special tokens */
  trie trie_raw, trie_norm;
  /* normalizer, pre-tokenizer, decoder */
  norm_step *norms;
  size_t nnorms;
  pretok_step *steps;
  size_t nsteps;
  int decoder;
  pattern word_start; /* Rust regex \w at a position, for single_word */
  char byte2u[256][3];
  unsigned char byte2ulen[256];
  int16_t u2byte[324]; /* code point -> byte; the alphabet lies below 324 */
  int32_t bos, eos;
  char *bos_str, *eos_str;
};

static void pat_free(pattern *p) {
  if (p->rx) onig_free(p->rx);
  p->rx = NULL;
}

void dsv3_tok_free(dsv3_tokenizer *t) {
  if (!t) return;
  sm_free(&t->vocab);
  free(t->merges.e);
  for (int64_t i = 0; t->vocab_r && i < t->nvocab; i++) free(t->vocab_r[i]);
  free(t->vocab_r);
  free(t->vocab_rlen);
  free(t->prefix);
  free(t->suffix);
  for (size_t i = 0; i < t->nadded; i++) {
    if (t->added[i].pattern != t->added[i].content) free(t->added[i].pattern);
    free(t->added[i].content);
  }
  free(t->added);
  sm_free(&t->added_map);
  sm_free(&t->special_set);
  free(t->added_r);
  free(t->trie_raw.v);
  free(t->trie_norm.v);
  for (size_t i = 0; i < t->nnorms; i++) {
    pat_free(&t->norms[i].pat);
    free(t->norms[i].str);
  }
  free(t->norms);
  for (size_t i = 0; i < t->nsteps; i++) pat_free(&t->steps[i].pat);
  free(t->steps);
  pat_free(&t->word_start);
  free(t->bos_str);
  free(t->eos_str);
  free(t->path);
  free(t);
}

static void byte_map(dsv3_tokenizer *t) {
  /* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256 + n */
  int n = 0;
  for (size_t i = 0; i < sizeof t->u2byte / sizeof t->u2byte[0]; i++) t->u2byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    uint32_t cp = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    t->byte2ulen[b] = (unsigned char)utf8_encode(cp, t->byte2u[b]);
    t->u2byte[cp] = (int16_t)b;
  }
}

static int32_t trie_node(trie *tr, unsigned char c, int32_t sibling) {
  if (tr->n == tr->cap) {
    tr->cap = tr->cap ? tr->cap * 2 : 64;
    tr->v = dsv3_xrealloc(tr->v, tr->cap * sizeof(tnode));
  }
  tr->v[tr->n] = (tnode){-1, sibling, -1, c};
  return (int32_t)tr->n++;
}
static void trie_add(trie *tr, const char *s, size_t n, int32_t tok) {
  if (!n) return;
  unsigned char c0 = (unsigned char)s[0];
  if (tr->root[c0] < 0) tr->root[c0] = trie_node(tr, c0, -1);
  int32_t cur = tr->root[c0];
  for (size_t i = 1; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int32_t x = tr->v[cur].child;
    while (x >= 0 && tr->v[x].byte != c) x = tr->v[x].sibling;
    if (x < 0) {
      x = trie_node(tr, c, tr->v[cur].child);
      tr->v[cur].child = x;
    }
    cur = x;
  }
  if (tr->v[cur].tok < 0) tr->v[cur].tok = tok; /* a duplicate pattern keeps the first */
  tr->any = 1;
}
static void trie_init(trie *tr) {
  memset(tr, 0, sizeof *tr);
  for (int i = 0; i < 256; i++) tr->root[i] = -1;
}
/* Longest pattern starting at s: its token index, *len its length; -1 if none. */
static int32_t trie_longest(const trie *tr, const char *s, size_t n, size_t *len) {
  int32_t best = -1, x = tr->root[(unsigned char)s[0]];
  for (size_t i = 0; x >= 0;) {
    if (tr->v[x].tok >= 0) {
      best = tr->v[x].tok;
      *len = i + 1;
    }
    if (++i >= n) break;
    unsigned char c = (unsigned char)s[i];
    x = tr->v[x].child;
    while (x >= 0 && tr->v[x].byte != c) x = tr->v[x].sibling;
  }
  return best;
}

/* ------------------------------------------------------------------------- loading ---- */

static const char *jstr(const cJSON *o, const char *k) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}
static int jtrue(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

static int behavior_of(const char *s) {
  static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
  for (int i = 0; s && i < 5; i++)
    if (!strcmp(s, names[i])) return i;
  return -1;
}

static int add_split(dsv3_tokenizer *t, const char *re, int behavior, int invert) {
  t->steps = dsv3_xrealloc(t->steps, (t->nsteps + 1) * sizeof *t->steps);
  pretok_step *st = &t->steps[t->nsteps];
  memset(st, 0, sizeof *st);
  st->type = PT_SPLIT;
  st->behavior = behavior;
  st->invert = invert;
  if (pat_compile(&st->pat, re, strlen(re), t->path, "pre_tokenizer") != 0) return -1;
  t->nsteps++;
  return 0;
}

/* The Rust-regex / char-class pre-tokenizers as equivalent one-character or run regexes. */
#define RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
#define RUST_S "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static int parse_pretok(dsv3_tokenizer *t, const cJSON *p) {
  if (!p || cJSON_IsNull(p)) return 0;
  const char *ty = jstr(p, "type");
  if (!ty) {
    dsv3_error_set("%s: pre_tokenizer without a type", t->path);
    return -1;
  }
  if (!strcmp(ty, "Sequence")) {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    if (!cJSON_IsArray(l)) {
      dsv3_error_set("%s: pre_tokenizer Sequence without pretokenizers", t->path);
      return -1;
    }
    for (const cJSON *c = l->child; c; c = c->next)
      if (parse_pretok(t, c) != 0) return -1;
    return 0;
  }
  if (!strcmp(ty, "Split")) {
    int beh = behavior_of(jstr(p, "behavior"));
    if (beh < 0) {
      dsv3_error_set("%s: pre_tokenizer Split: unknown behavior", t->path);
      return -1;
    }
    t->steps = dsv3_xrealloc(t->steps, (t->nsteps + 1) * sizeof *t->steps);
    pretok_step *st = &t->steps[t->nsteps];
    memset(st, 0, sizeof *st);
    st->type = PT_SPLIT;
    st->behavior = beh;
    st->invert = jtrue(p, "invert");
    if (pat_from_json(&st->pat, cJSON_GetObjectItemCaseSensitive(p, "pattern"), t->path, "pre_tokenizer Split") != 0)
      return -1;
    t->nsteps++;
    return 0;
  }
  if (!strcmp(ty, "ByteLevel")) {
    t->steps = dsv3_xrealloc(t->steps, (t->nsteps + 1) * sizeof *t->steps);
    pretok_step *st = &t->steps[t->nsteps];
    memset(st, 0, sizeof *st);
    st->type = PT_BYTELEVEL;
    st->add_prefix_space = jtrue(p, "add_prefix_space");
    const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
    st->use_regex = !ur || cJSON_IsTrue(ur); /* serde default: true */
    if (st->use_regex) {
      static const char *gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
      if (pat_compile(&st->pat, gpt2, strlen(gpt2), t->path, "pre_tokenizer ByteLevel") != 0) return -1;
    }
    t->nsteps++;
    return 0;
  }
  /* Whitespace uses the Rust `regex` crate: \w and \s spelled out as its Unicode classes */
  if (!strcmp(ty, "Whitespace")) return add_split(t, "[" RUST_W "]+|[^" RUST_W RUST_S "]+", B_REMOVED, 1);
  if (!strcmp(ty, "WhitespaceSplit")) return add_split(t, "[" RUST_S "]", B_REMOVED, 0);
  if (!strcmp(ty, "Digits")) return add_split(t, "\\p{N}", jtrue(p, "individual_digits") ? B_ISOLATED : B_CONTIGUOUS, 0);
  if (!strcmp(ty, "Punctuation")) {
    const char *b = jstr(p, "behavior");
    int beh = b ? behavior_of(b) : B_ISOLATED;
    if (beh < 0) {
      dsv3_error_set("%s: pre_tokenizer Punctuation: unknown behavior", t->path);
      return -1;
    }
    return add_split(t, "[\\p{P}!-/:-@\\[-`{-~]", beh, 0);
  }
  dsv3_error_set("%s: pre_tokenizer %s is not supported (Split, ByteLevel, Whitespace, WhitespaceSplit, Digits, "
                 "Punctuation and Sequence are)", t->path, ty);
  return -1;
}

static int parse_norm(dsv3_tokenizer *t, const cJSON *p) {
  if (!p || cJSON_IsNull(p)) return 0;
  const char *ty = jstr(p, "type");
  if (!ty) {
    dsv3_error_set("%s: normalizer without a type", t->path);
    return -1;
  }
  if (!strcmp(ty, "Sequence")) {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(p, "normalizers");
    if (!cJSON_IsArray(l)) {
      dsv3_error_set("%s: normalizer Sequence without normalizers", t->path);
      return -1;
    }
    for (const cJSON *c = l->child; c; c = c->next)
      if (parse_norm(t, c) != 0) return -1;
    return 0;
  }
  norm_step ns = {0};
  if (!strcmp(ty, "Replace")) {
    const char *c = jstr(p, "content");
    if (!c) {
      dsv3_error_set("%s: normalizer Replace without content", t->path);
      return -1;
    }
    ns.type = N_REPLACE;
    if (pat_from_json(&ns.pat, cJSON_GetObjectItemCaseSensitive(p, "pattern"), t->path, "normalizer Replace") != 0)
      return -1;
    ns.str = dsv3_xstrdup(c);
  } else if (!strcmp(ty, "Prepend")) {
    const char *c = jstr(p, "prepend");
    if (!c) {
      dsv3_error_set("%s: normalizer Prepend without prepend", t->path);
      return -1;
    }
    ns.type = N_PREPEND;
    ns.str = dsv3_xstrdup(c);
  } else if (!strcmp(ty, "Strip")) {
    ns.type = N_STRIP;
    ns.left = jtrue(p, "strip_left");
    ns.right = jtrue(p, "strip_right");
  } else {
    dsv3_error_set("%s: normalizer %s is not supported (Replace, Prepend, Strip and Sequence are)", t->path, ty);
    return -1;
  }
  t->norms = dsv3_xrealloc(t->norms, (t->nnorms + 1) * sizeof *t->norms);
  t->norms[t->nnorms++] = ns;
  return 0;
}

/* A normalizer may make a text of n bytes at most 16 n + 4096 bytes long: real ones grow it a
 * few times at most (Replace " " by a 3-byte character); a hostile chain of Replace steps with
 * an empty pattern would grow it geometrically, to gigabytes from a line.  0 (error set, without
 * the file: the caller names it) when `len` bytes would pass that. */
static int norm_fits(size_t len, size_t n) {
  if (len <= 16 * n + 4096) return 1;
  dsv3_error_set("the normalizer makes a %zu-byte text longer than %zu bytes", n, 16 * n + 4096);
  return 0;
}

/* Apply the normalizer to [s, s+n): a malloc'd string, or NULL when there is no normalizer.
 * *err = 1 (error set, without the file) when a regex search fails or the text outgrows
 * norm_fits. */
static char *normalize(const dsv3_tokenizer *t, const char *s, size_t n, size_t *out_n, OnigRegion *reg, int *err) {
  if (!t->nnorms) return NULL;
  sbuf cur = {0};
  sb_add(&cur, s, n);
  segs m = {0};
  for (size_t k = 0; k < t->nnorms; k++) {
    const norm_step *ns = &t->norms[k];
    sbuf nx = {0};
    sb_add(&nx, "", 0);
    if (ns->type == N_REPLACE) {
      if (find_matches(&ns->pat, reg, cur.p, cur.n, &m) != 0) *err = 1;
      const size_t rl = strlen(ns->str);
      for (size_t i = 0; i < m.n && !*err; i++) {
        const size_t add = m.v[i].flag ? rl : m.v[i].e - m.v[i].b;
        if (!norm_fits(nx.n + add, n)) *err = 1;
        else sb_add(&nx, m.v[i].flag ? ns->str : cur.p + m.v[i].b, add);
      }
      if (*err) {
        free(nx.p);
        break;
      }
    } else if (ns->type == N_PREPEND) {
      const size_t pl = cur.n ? strlen(ns->str) : 0;
      if (!norm_fits(cur.n + pl, n)) {
        *err = 1;
        free(nx.p);
        break;
      }
      sb_add(&nx, ns->str, pl);
      sb_add(&nx, cur.p, cur.n);
    } else {
      size_t b = 0, e = cur.n, l;
      while (ns->left && b < e && is_ws(cdecode((const unsigned char *)cur.p + b, &l))) b += l;
      while (ns->right && e > b) {
        size_t q = e - 1;
        while (q > b && ((unsigned char)cur.p[q] & 0xc0) == 0x80) q--;
        if (!is_ws(cdecode((const unsigned char *)cur.p + q, &l))) break;
        e = q;
      }
      sb_add(&nx, cur.p + b, e - b);
    }
    free(cur.p);
    cur = nx;
  }
  free(m.v);
  *out_n = cur.n;
  return cur.p;
}

static int load_config(dsv3_tokenizer *t, const char *json_path) {
  /* bos/eos names from tokenizer_config.json beside tokenizer.json; DeepSeek-V3's otherwise */
  const char *slash = strrchr(json_path, '/');
  size_t dl = slash ? (size_t)(slash - json_path + 1) : 0;
  char *cp = dsv3_xmalloc(dl + 32);
  memcpy(cp, json_path, dl);
  strcpy(cp + dl, "tokenizer_config.json");
  if (dsv3_file_exists(cp)) {
    char *buf;
    size_t n;
    if (dsv3_read_file(cp, &buf, &n, 64u << 20) != 0) {
      free(cp);
      return -1;
    }
    cJSON *j = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!cJSON_IsObject(j)) {
      dsv3_error_set("%s: not a JSON object", cp);
      cJSON_Delete(j);
      free(cp);
      return -1;
    }
    const char *keys[2] = {"bos_token", "eos_token"};
    char **dst[2] = {&t->bos_str, &t->eos_str};
    for (int i = 0; i < 2; i++) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
      const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content"); /* string or AddedToken */
      if (s) *dst[i] = dsv3_xstrdup(s);
    }
    cJSON_Delete(j);
  }
  free(cp);
  if (!t->bos_str) t->bos_str = dsv3_xstrdup("<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
  if (!t->eos_str) t->eos_str = dsv3_xstrdup("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
  t->bos = dsv3_tok_id(t, t->bos_str);
  t->eos = dsv3_tok_id(t, t->eos_str);
  return 0;
}

static int id_of_json(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= MAX_IDS || v->valuedouble != (double)(int64_t)v->valuedouble)
    return -1;
  *out = (int64_t)v->valuedouble;
  return 0;
}

static int load_model(dsv3_tokenizer *t, const cJSON *model) {
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  const char *type = jstr(model, "type");
  if (!cJSON_IsObject(model) || (type && strcmp(type, "BPE")) || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
    dsv3_error_set("%s: model is not BPE (model.type \"BPE\", model.vocab, model.merges)", t->path);
    return -1;
  }
  const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
  if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0) {
    dsv3_error_set("%s: model.dropout %g: BPE dropout is random, not supported", t->path, dropout->valuedouble);
    return -1;
  }
  int64_t maxid = -1;
  size_t nv = 0;
  for (const cJSON *v = vocab->child; v; v = v->next, nv++) {
    int64_t id;
    if (id_of_json(v, &id) != 0) {
      dsv3_error_set("%s: model.vocab: token %.60s has no valid id", t->path, v->string);
      return -1;
    }
    if (id > maxid) maxid = id;
  }
  sm_init(&t->vocab, nv + 16);
  for (const cJSON *v = vocab->child; v; v = v->next) sm_put(&t->vocab, v->string, strlen(v->string), (int32_t)v->valuedouble);
  t->model_vocab_len = t->vocab.used; /* BPE::get_vocab_size: distinct strings */
  t->nvocab = maxid + 1;
  const char *s;
  if ((s = jstr(model, "continuing_subword_prefix"))) t->prefix = dsv3_xstrdup(s);
  if ((s = jstr(model, "end_of_word_suffix"))) t->suffix = dsv3_xstrdup(s);
  t->fuse_unk = jtrue(model, "fuse_unk");
  t->byte_fallback = jtrue(model, "byte_fallback");
  t->ignore_merges = jtrue(model, "ignore_merges");
  t->unk_id = -1;
  if ((s = jstr(model, "unk_token"))) {
    t->unk_id = sm_get(&t->vocab, s, strlen(s));
    if (t->unk_id < 0) {
      dsv3_error_set("%s: model.unk_token %.60s is not in the vocabulary", t->path, s);
      return -1;
    }
  }
  size_t nm = (size_t)cJSON_GetArraySize(merges);
  t->merges.cap = 16;
  while (t->merges.cap < nm * 2) t->merges.cap <<= 1;
  t->merges.e = dsv3_xmalloc(t->merges.cap * sizeof(pent));
  for (size_t i = 0; i < t->merges.cap; i++) t->merges.e[i].rank = -1;
  size_t plen = t->prefix ? strlen(t->prefix) : 0;
  int32_t rank = 0;
  sbuf key = {0};
  for (const cJSON *m = merges->child; m; m = m->next) {
    const char *a, *b;
    size_t al, bl;
    if (cJSON_IsString(m)) {
      const char *str = m->valuestring;
      if (!strncmp(str, "#version", 8)) continue; /* legacy merges.txt header */
      const char *sp = strchr(str, ' ');
      if (!sp || strchr(sp + 1, ' ')) {
        dsv3_error_set("%s: model.merges[%d] \"%.60s\" is not \"a b\"", t->path, rank, str);
        goto fail;
      }
      a = str, al = (size_t)(sp - str), b = sp + 1, bl = strlen(b);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {
      a = m->child->valuestring, al = strlen(a), b = m->child->next->valuestring, bl = strlen(b);
    } else {
      dsv3_error_set("%s: model.merges[%d] is neither \"a b\" nor [a, b]", t->path, rank);
      goto fail;
    }
    int32_t ia = sm_get(&t->vocab, a, al), ib = sm_get(&t->vocab, b, bl);
    key.n = 0;
    sb_add(&key, a, al);
    if (bl >= plen) sb_add(&key, b + plen, bl - plen);
    int32_t in = sm_get(&t->vocab, key.p, key.n);
    if (ia < 0 || ib < 0 || in < 0 || bl < plen) {
      dsv3_error_set("%s: model.merges[%d]: %.60s is not in the vocabulary", t->path, rank,
                     ia < 0 ? a : ib < 0 ? b : key.p);
      goto fail;
    }
    pent *e = pm_slot(&t->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib);
    e->key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    e->rank = rank++; /* a repeated pair takes its last rank, as collecting into a HashMap does */
    e->nid = in;
  }
  free(key.p);
  return 0;
fail:
  free(key.p);
  return -1;
}

int dsv3_tok_load(const char *path, dsv3_tokenizer **out) {
  *out = NULL;
  char *buf;
  size_t n;
  if (dsv3_read_file(path, &buf, &n, 1u << 30) != 0) return -1;
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  dsv3_tokenizer *t = dsv3_xcalloc(1, sizeof *t);
  t->path = dsv3_xstrdup(path);
  t->bos = t->eos = -1;
  byte_map(t);
  trie_init(&t->trie_raw);
  trie_init(&t->trie_norm);
  if (!cJSON_IsObject(j)) {
    dsv3_error_set("%s: not a JSON object", path);
    goto fail;
  }
  const char *ver = jstr(j, "version");
  if (ver && strcmp(ver, "1.0")) {
    dsv3_error_set("%s: unknown tokenizer version '%.20s'", path, ver);
    goto fail;
  }
  if (load_model(t, cJSON_GetObjectItemCaseSensitive(j, "model")) != 0) goto fail;
  if (parse_norm(t, cJSON_GetObjectItemCaseSensitive(j, "normalizer")) != 0) goto fail;
  if (parse_pretok(t, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer")) != 0) goto fail;
  const char *dec = jstr(cJSON_GetObjectItemCaseSensitive(j, "decoder"), "type");
  t->decoder = !dec ? DEC_NONE : !strcmp(dec, "ByteLevel") ? DEC_BYTELEVEL : DEC_OTHER;
  if (pat_compile(&t->word_start, "\\A[" RUST_W "]", strlen("\\A[" RUST_W "]"), path, "internal") != 0) goto fail;

  /* added tokens, ids as AddedVocabulary::add_tokens assigns them */
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
  if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added)) {
    dsv3_error_set("%s: added_tokens is not an array", path);
    goto fail;
  }
  sm_init(&t->added_map, 64);
  sm_init(&t->special_set, 64);
  int64_t next_id = (int64_t)t->model_vocab_len;
  for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
    const char *content = jstr(a, "content");
    int64_t jid;
    if (!content || id_of_json(cJSON_GetObjectItemCaseSensitive(a, "id"), &jid) != 0) {
      dsv3_error_set("%s: added_tokens: entry without content or valid id", path);
      goto fail;
    }
    if (!content[0]) continue;
    added_tok at = {0};
    at.special = jtrue(a, "special");
    at.single_word = jtrue(a, "single_word");
    at.lstrip = jtrue(a, "lstrip");
    at.rstrip = jtrue(a, "rstrip");
    const cJSON *nz = cJSON_GetObjectItemCaseSensitive(a, "normalized");
    at.normalized = nz ? cJSON_IsTrue(nz) : !at.special;
    size_t cl = strlen(content);
    int32_t id = sm_get(&t->added_map, content, cl);
    if (id >= 0) { /* the very same token again (same content and flags) is ignored */
      const added_tok *o = NULL;
      for (size_t q = 0; q < t->nadded; q++)
        if (t->added[q].id == id) o = &t->added[q];
      if (o && o->special == at.special && o->single_word == at.single_word && o->lstrip == at.lstrip &&
          o->rstrip == at.rstrip && o->normalized == at.normalized && !strcmp(o->content, content))
        continue;
    }
    if (id < 0) id = sm_get(&t->vocab, content, cl);
    if (id < 0) {
      if (next_id >= MAX_IDS) {
        dsv3_error_set("%s: added_tokens: too many tokens", path);
        goto fail;
      }
      id = (int32_t)next_id++;
    }
    at.id = id;
    at.content = dsv3_xstrdup(content);
    at.len = cl;
    sm_put(&t->added_map, content, cl, id);
    if (at.special) sm_put(&t->special_set, content, cl, 1);
    /* the later token for the same id replaces the earlier one (added_tokens_map_r.insert) */
    size_t q = 0;
    while (q < t->nadded && t->added[q].id != id) q++;
    if (q < t->nadded) {
      free(t->added[q].content);
      t->added[q] = at;
    } else {
      t->added = dsv3_xrealloc(t->added, (t->nadded + 1) * sizeof *t->added);
      t->added[t->nadded++] = at;
    }
    if (id + 1 > t->nvocab) t->nvocab = id + 1;
  }
  OnigRegion *reg = onig_region_new();
  for (size_t q = 0; q < t->nadded; q++) {
    added_tok *a = &t->added[q];
    a->pattern = a->content;
    a->plen = a->len;
    if (a->normalized) {
      int err = 0;
      size_t nl;
      char *nz = normalize(t, a->content, a->len, &nl, reg, &err);
      if (err) {
        dsv3_error_prefix("%s", path);
        free(nz);
        onig_region_free(reg, 1);
        goto fail;
      }
      if (nz && (nl != a->len || memcmp(nz, a->content, nl))) {
        a->pattern = nz;
        a->plen = nl;
      } else {
        free(nz);
      }
    }
  }
  onig_region_free(reg, 1);
  /* tries in id order, so that a duplicate pattern resolves the same way every time */
  t->vocab_r = dsv3_xcalloc((size_t)t->nvocab, sizeof(char *));
  t->vocab_rlen = dsv3_xcalloc((size_t)t->nvocab, sizeof(uint32_t));
  t->added_r = dsv3_xmalloc((size_t)t->nvocab * sizeof(int32_t));
  for (int64_t i = 0; i < t->nvocab; i++) t->added_r[i] = -1;
  for (size_t q = 0; q < t->nadded; q++) t->added_r[t->added[q].id] = (int32_t)q;
  for (int64_t i = 0; i < t->nvocab; i++) {
    int32_t q = t->added_r[i];
    if (q < 0) continue;
    added_tok *a = &t->added[q];
    trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, a->pattern, a->plen, q);
  }
  for (size_t i = 0; i < t->vocab.cap; i++) {
    const sent *e = &t->vocab.e[i];
    if (!e->k) continue;
    if (!t->vocab_r[e->v] || strcmp(t->vocab_r[e->v], e->k) > 0) { /* two strings, one id: keep one, stably */
      free(t->vocab_r[e->v]);
      t->vocab_r[e->v] = dsv3_xstrdup(e->k);
      t->vocab_rlen[e->v] = e->n;
    }
  }
  if (load_config(t, path) != 0) goto fail;
  cJSON_Delete(j);
  *out = t;
  return 0;
fail:
  cJSON_Delete(j);
  dsv3_tok_free(t);
  return -1;
}

/* ------------------------------------------------------------------------ encoding ---- */

typedef struct {
  int32_t id, prev, next;
  uint32_t len;
} sym;
typedef struct {
  int32_t rank, pos, nid;
} mrg;

typedef struct {
  const dsv3_tokenizer *t;
  ids_t out;
  OnigRegion *reg;
  sym *sy;
  size_t sycap;
  mrg *heap;
  size_t hn, hcap;
  sbuf tmp;
  int err;
} enc_ctx;

static int mrg_less(const mrg *a, const mrg *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }
static void heap_push(enc_ctx *c, mrg m) {
  if (c->hn == c->hcap) {
    c->hcap = c->hcap ? c->hcap * 2 : 64;
    c->heap = dsv3_xrealloc(c->heap, c->hcap * sizeof(mrg));
  }
  size_t i = c->hn++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!mrg_less(&m, &c->heap[p])) break;
    c->heap[i] = c->heap[p];
    i = p;
  }
  c->heap[i] = m;
}
static mrg heap_pop(enc_ctx *c) {
  mrg top = c->heap[0], last = c->heap[--c->hn];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const mrg *mv = &last;
    if (l < c->hn && mrg_less(&c->heap[l], mv)) m = l, mv = &c->heap[l];
    if (r < c->hn && mrg_less(&c->heap[r], mv)) m = r;
    if (m == i) break;
    c->heap[i] = c->heap[m];
    i = m;
  }
  if (c->hn) c->heap[i] = last;
  return top;
}

static void add_sym(enc_ctx *c, size_t ns, int32_t id, uint32_t len) {
  if (ns == c->sycap) {
    c->sycap = c->sycap ? c->sycap * 2 : 256;
    c->sy = dsv3_xrealloc(c->sy, c->sycap * sizeof(sym));
  }
  c->sy[ns] = (sym){id, (int32_t)ns - 1, (int32_t)ns + 1, len};
}
static const char *byte_code(unsigned char b) {
  static const char hex[] = "0123456789ABCDEF";
  static _Thread_local char code[8];
  code[0] = '<', code[1] = '0', code[2] = 'x', code[3] = hex[b >> 4], code[4] = hex[b & 15], code[5] = '>', code[6] = 0;
  return code;
}

/* BPE::tokenize for one pre-token (UTF-8 text in the model's alphabet). */
static void bpe(enc_ctx *c, const char *s, size_t n) {
  const dsv3_tokenizer *t = c->t;
  if (!n) return;
  if (t->ignore_merges) {
    int32_t id = sm_get(&t->vocab, s, n);
    if (id >= 0) {
      push(&c->out, id);
      return;
    }
  }
  size_t ns = 0;
  int32_t unk = -1;
  uint32_t unk_len = 0;
  size_t plen = t->prefix ? strlen(t->prefix) : 0, slen = t->suffix ? strlen(t->suffix) : 0;
#define ADD(ID, LEN) (add_sym(c, ns, (ID), (LEN)), ns++)
  for (size_t i = 0; i < n;) {
    size_t l = clen((unsigned char)s[i]);
    if (i + l > n) l = n - i;
    int first = i == 0, last = i + l == n;
    const char *key = s + i;
    size_t kl = l;
    if ((!first && plen) || (last && slen)) {
      c->tmp.n = 0;
      if (!first && plen) sb_add(&c->tmp, t->prefix, plen);
      sb_add(&c->tmp, s + i, l);
      if (last && slen) sb_add(&c->tmp, t->suffix, slen);
      key = c->tmp.p, kl = c->tmp.n;
    }
    int32_t id = sm_get(&t->vocab, key, kl);
    if (id >= 0) {
      if (unk >= 0) {
        ADD(unk, unk_len);
        unk = -1;
      }
      ADD(id, (uint32_t)l);
      i += l;
      continue;
    }
    if (t->byte_fallback) { /* <0xXX> for every byte, if all of them exist (pending unk stays pending) */
      int ok = 1;
      for (size_t k = 0; k < kl && ok; k++) ok = sm_get(&t->vocab, byte_code((unsigned char)key[k]), 6) >= 0;
      if (ok) {
        for (size_t k = 0; k < kl; k++) ADD(sm_get(&t->vocab, byte_code((unsigned char)key[k]), 6), 1);
        i += l;
        continue;
      }
    }
    if (t->unk_id >= 0) {
      if (unk >= 0 && t->fuse_unk) {
        unk_len += (uint32_t)l;
      } else {
        if (unk >= 0) ADD(unk, unk_len);
        unk = t->unk_id;
        unk_len = (uint32_t)l;
      }
    }
    i += l;
  }
  if (unk >= 0) ADD(unk, unk_len);
#undef ADD
  if (!ns) return;
  c->sy[ns - 1].next = -1;
  /* Word::merge_all */
  c->hn = 0;
  for (size_t i = 0; i + 1 < ns; i++) {
    const pent *m = pm_get(&t->merges, c->sy[i].id, c->sy[i + 1].id);
    if (m) heap_push(c, (mrg){m->rank, (int32_t)i, m->nid});
  }
  while (c->hn) {
    mrg top = heap_pop(c);
    sym *cur = &c->sy[top.pos];
    if (cur->len == 0 || cur->next == -1) continue;
    sym right = c->sy[cur->next];
    const pent *m = pm_get(&t->merges, cur->id, right.id);
    if (!m || m->nid != top.nid) continue; /* stale entry */
    c->sy[cur->next].len = 0;
    cur->id = top.nid;
    cur->len += right.len;
    cur->next = right.next;
    if (right.next >= 0) c->sy[right.next].prev = top.pos;
    if (cur->prev >= 0) {
      const pent *pm = pm_get(&t->merges, c->sy[cur->prev].id, cur->id);
      if (pm) heap_push(c, (mrg){pm->rank, cur->prev, pm->nid});
    }
    if (cur->next >= 0) {
      const pent *nm = pm_get(&t->merges, cur->id, c->sy[cur->next].id);
      if (nm) heap_push(c, (mrg){nm->rank, top.pos, nm->nid});
    }
  }
  for (size_t i = 0; i < ns; i++)
    if (c->sy[i].len) push(&c->out, c->sy[i].id);
}

static void pretok(enc_ctx *c, size_t step, const char *s, size_t n);

static void pretok_bytelevel(enc_ctx *c, size_t step, const char *s, size_t n) {
  const dsv3_tokenizer *t = c->t;
  /* map to the byte-level alphabet, then go on with the next step */
  char *m = dsv3_xmalloc(n * 2 + 1);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    memcpy(m + k, t->byte2u[b], t->byte2ulen[b]);
    k += t->byte2ulen[b];
  }
  pretok(c, step + 1, m, k);
  free(m);
}

static void pretok(enc_ctx *c, size_t step, const char *s, size_t n) {
  const dsv3_tokenizer *t = c->t;
  if (!n || c->err) return; /* empty splits are dropped (PreTokenizedString::split) */
  if (step == t->nsteps) {
    bpe(c, s, n);
    return;
  }
  const pretok_step *st = &t->steps[step];
  char *own = NULL;
  if (st->type == PT_BYTELEVEL && st->add_prefix_space && s[0] != ' ') {
    own = dsv3_xmalloc(n + 1);
    own[0] = ' ';
    memcpy(own + 1, s, n);
    s = own, n++;
  }
  if (st->type == PT_BYTELEVEL && !st->use_regex) {
    pretok_bytelevel(c, step, s, n);
    free(own);
    return;
  }
  segs m = {0}, sp = {0};
  if (find_matches(&st->pat, c->reg, s, n, &m) != 0) {
    c->err = 1;
  } else {
    apply_behavior(&m, st->type == PT_BYTELEVEL ? B_ISOLATED : st->behavior, st->type == PT_SPLIT && st->invert, &sp);
    for (size_t i = 0; i < sp.n && !c->err; i++) {
      if (sp.v[i].flag || sp.v[i].e == sp.v[i].b) continue;
      if (st->type == PT_BYTELEVEL) pretok_bytelevel(c, step, s + sp.v[i].b, sp.v[i].e - sp.v[i].b);
      else pretok(c, step + 1, s + sp.v[i].b, sp.v[i].e - sp.v[i].b);
    }
  }
  free(m.v);
  free(sp.v);
  free(own);
}

/* AddedVocabulary::find_matches over [s, s+n): calls `text` for the pieces between tokens. */
static void split_added(enc_ctx *c, const trie *tr, const char *s, size_t n, void (*text)(enc_ctx *, const char *, size_t)) {
  const dsv3_tokenizer *t = c->t;
  if (!n) return;
  if (!tr->any) {
    text(c, s, n);
    return;
  }
  size_t start_offset = 0, pos = 0;
  while (pos < n && !c->err) {
    size_t start = pos, len = 0;
    int32_t q = -1;
    for (; start < n; start++)
      if (tr->root[(unsigned char)s[start]] >= 0 && (q = trie_longest(tr, s + start, n - start, &len)) >= 0) break;
    if (q < 0) break;
    size_t stop = start + len;
    pos = stop; /* the automaton goes on after this match, kept or not */
    const added_tok *a = &t->added[q];
    if (a->single_word) {
      int start_space = 1, stop_space = 1;
      if (start > 0) {
        size_t p = start - 1;
        while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80) p--;
        start_space = onig_match(t->word_start.rx, (const UChar *)s + p, (const UChar *)s + start, (const UChar *)s + p,
                                 NULL, ONIG_OPTION_NONE) < 0;
      }
      if (stop < n)
        stop_space = onig_match(t->word_start.rx, (const UChar *)s + stop, (const UChar *)s + n, (const UChar *)s + stop,
                                NULL, ONIG_OPTION_NONE) < 0;
      if (!start_space || !stop_space) continue;
    }
    if (a->lstrip) {
      size_t ns = start, l;
      while (ns > 0) {
        size_t p = ns - 1;
        while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80) p--;
        if (!is_ws(cdecode((const unsigned char *)s + p, &l))) break;
        ns = p;
      }
      start = ns > start_offset ? ns : start_offset;
    }
    if (a->rstrip) {
      size_t l;
      while (stop < n && is_ws(cdecode((const unsigned char *)s + stop, &l))) stop += l;
    }
    if (start_offset < start) text(c, s + start_offset, start - start_offset);
    push(&c->out, a->id);
    start_offset = stop;
  }
  if (start_offset < n && !c->err) text(c, s + start_offset, n - start_offset);
}

static void after_norm(enc_ctx *c, const char *s, size_t n) { pretok(c, 0, s, n); }
static void after_raw(enc_ctx *c, const char *s, size_t n) {
  size_t nl;
  int err = 0;
  char *nz = normalize(c->t, s, n, &nl, c->reg, &err);
  if (err) c->err = 1;
  else if (nz) split_added(c, &c->t->trie_norm, nz, nl, after_norm);
  else split_added(c, &c->t->trie_norm, s, n, after_norm);
  free(nz);
}

int64_t dsv3_tok_encode(const dsv3_tokenizer *t, const char *text, size_t len, int32_t **ids) {
  size_t n;
  *ids = NULL;
  char *s = sanitize(text ? text : "", text ? len : 0, &n);
  enc_ctx c = {.t = t};
  c.reg = onig_region_new();
  split_added(&c, &t->trie_raw, s, n, after_raw);
  onig_region_free(c.reg, 1);
  free(c.sy);
  free(c.heap);
  free(c.tmp.p);
  free(s);
  if (c.err) {
    free(c.out.v);
    dsv3_error_prefix("%s", t->path); /* the regex and normalizer errors leave the file out */
    return -1;
  }
  *ids = c.out.v ? c.out.v : dsv3_xmalloc(sizeof(int32_t));
  return (int64_t)c.out.n;
}

/* ------------------------------------------------------------------------ decoding ---- */

/* The token's text as Tokenizer::decode looks it up: added vocabulary first, then the model. */
static const char *tok_text(const dsv3_tokenizer *t, int32_t id, size_t *n) {
  if (id < 0 || id >= t->nvocab) return NULL;
  if (t->added_r[id] >= 0) {
    const added_tok *a = &t->added[t->added_r[id]];
    *n = a->plen;
    return a->pattern;
  }
  *n = t->vocab_rlen[id];
  return t->vocab_r[id];
}

size_t dsv3_tok_token_bytes(const dsv3_tokenizer *t, int32_t id, char *buf, size_t cap) {
  size_t n;
  const char *s = tok_text(t, id, &n);
  if (!s) return 0;
  if (t->decoder == DEC_BYTELEVEL) {
    /* every character back to its byte; a token with any other character stays as it is */
    size_t k = 0, i = 0;
    while (i < n) {
      size_t l;
      uint32_t cp = cdecode((const unsigned char *)s + i, &l);
      int b = cp < sizeof t->u2byte / sizeof t->u2byte[0] ? t->u2byte[cp] : -1;
      if (b < 0) break;
      if (k < cap) buf[k++] = (char)b;
      i += l;
    }
    if (i >= n) return k;
  }
  if (n > cap) n = cap;
  memcpy(buf, s, n);
  return n;
}

char *dsv3_tok_decode(const dsv3_tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *out_len) {
  sbuf o = {0};
  sb_add(&o, "", 0);
  size_t cap = 256;
  char *tmp = dsv3_xmalloc(cap);
  int first = 1;
  for (size_t i = 0; i < n; i++) {
    size_t tl;
    const char *s = tok_text(t, ids[i], &tl);
    if (!s) continue; /* unknown ids are dropped, as Tokenizer::decode does */
    if (skip_special && sm_get(&t->special_set, s, tl) >= 0) continue;
    if (tl > cap) {
      cap = tl;
      tmp = dsv3_xrealloc(tmp, cap);
    }
    size_t l = dsv3_tok_token_bytes(t, ids[i], tmp, cap);
    if (t->decoder == DEC_NONE && !first) sb_add(&o, " ", 1); /* no decoder: tokens joined by spaces */
    sb_add(&o, tmp, l);
    first = 0;
  }
  free(tmp);
  if (out_len) *out_len = o.n;
  return o.p;
}

int32_t dsv3_tok_id(const dsv3_tokenizer *t, const char *token) {
  size_t n = strlen(token);
  int32_t id = sm_get(&t->added_map, token, n);
  return id >= 0 ? id : sm_get(&t->vocab, token, n);
}
int dsv3_tok_is_special(const dsv3_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->nvocab && t->added_r[id] >= 0 && t->added[t->added_r[id]].special;
}
int64_t dsv3_tok_vocab_size(const dsv3_tokenizer *t) { return t->nvocab; }
int32_t dsv3_tok_bos(const dsv3_tokenizer *t) { return t->bos; }
int32_t dsv3_tok_eos(const dsv3_tokenizer *t) { return t->eos; }

int64_t dsv3_tok_chat(const dsv3_tokenizer *t, const dsv3_chat_msg *msgs, size_t n, int add_generation_prompt,
                      int32_t **ids) {
  static const char *USER = "<\xef\xbd\x9c" "User\xef\xbd\x9c>";
  static const char *ASSISTANT = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";
  sbuf s = {0};
  sb_add(&s, t->bos_str, strlen(t->bos_str));
  for (size_t i = 0; i < n; i++) {
    const char *r = msgs[i].role ? msgs[i].role : "", *c = msgs[i].content ? msgs[i].content : "";
    if (!strcmp(r, "system")) {
      sb_add(&s, c, strlen(c));
    } else if (!strcmp(r, "user")) {
      sb_add(&s, USER, strlen(USER));
      sb_add(&s, c, strlen(c));
    } else if (!strcmp(r, "assistant")) {
      sb_add(&s, ASSISTANT, strlen(ASSISTANT));
      sb_add(&s, c, strlen(c));
      sb_add(&s, t->eos_str, strlen(t->eos_str));
    } else {
      dsv3_error_set("%s: chat message %zu: role '%.40s' is not system, user or assistant", t->path, i, r);
      free(s.p);
      *ids = NULL;
      return -1;
    }
  }
  if (add_generation_prompt) sb_add(&s, ASSISTANT, strlen(ASSISTANT));
  int64_t r = dsv3_tok_encode(t, s.p, s.n, ids);
  free(s.p);
  return r;
}
