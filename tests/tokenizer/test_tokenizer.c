/* The C tokenizer against Hugging Face `tokenizers` on the committed corpus, plus the library's
 * own contract: decode(encode(x)) == x, streaming bytes == decode, chat template ids, the empty
 * string, invalid UTF-8, thread safety, speed, and one-line errors on hostile tokenizer files.
 *
 * Expected ids (tests/data/tokenizer_ids.txt) are produced by
 *   python3 scripts/ref/ref_tokenizer.py models/dsv3-tiny/tokenizer.json \
 *     tests/data/tokenizer_corpus.txt tests/data/tokenizer_ids.txt
 * (tokenizers 0.23.3; the corpus and tests/data/tokenizer_corpus.chat.json come from
 * tests/tokenizer/gen_corpus.py).  Corpus lines are base64 of raw bytes; ids lines are
 * space-separated; then `#chat`, `#chat1`... lines for the conversations of the .chat.json. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "b64.h"
#include "check.h"
#include "tokenizer.h"
#include "util.h"

static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!l || i + l > n || (c >= 0xc0 && c < 0xc2) || c > 0xf4) return 0;
    for (size_t k = 1; k < l; k++)
      if ((s[i + k] & 0xc0) != 0x80) return 0;
    if (l == 3 && c == 0xed && s[i + 1] >= 0xa0) return 0;
    if (l == 3 && c == 0xe0 && s[i + 1] < 0xa0) return 0;
    if (l == 4 && c == 0xf0 && s[i + 1] < 0x90) return 0;
    if (l == 4 && c == 0xf4 && s[i + 1] >= 0x90) return 0;
    i += l;
  }
  return 1;
}

/* Parse "1 2 3" into ids; returns count. */
static int64_t parse_ids(const char *s, int32_t **out) {
  size_t cap = 64, n = 0;
  int32_t *v = malloc(cap * sizeof *v);
  char *end;
  for (;;) {
    long x = strtol(s, &end, 10);
    if (end == s) break;
    if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
    v[n++] = (int32_t)x;
    s = end;
  }
  *out = v;
  return (int64_t)n;
}

static int same_ids(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
  return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

typedef struct {
  const dsv3_tokenizer *t;
  const char *text;
  size_t n;
  int64_t want_n;
  const int32_t *want;
  int ok;
} thr_arg;
static void *thr(void *p) {
  thr_arg *a = p;
  a->ok = 1;
  for (int r = 0; r < 20; r++) {
    int32_t *ids;
    int64_t k = dsv3_tok_encode(a->t, a->text, a->n, &ids);
    if (!same_ids(ids, k, a->want, a->want_n)) a->ok = 0;
    free(ids);
  }
  return NULL;
}

static void hostile(void) {
  char tmp[] = "/tmp/dsv3-tok-XXXXXX", p[256];
  if (!mkdtemp(tmp)) return;
  snprintf(p, sizeof p, "%s/tokenizer.json", tmp);
#define MODEL(V, M) "{\"model\": {\"type\": \"BPE\", \"vocab\": " V ", \"merges\": " M "}"
  const char *bad[] = {
      "", "{", "[]", "{\"model\": {\"type\": \"Unigram\"}}", "{\"version\": \"2.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
      MODEL("{\"a\": -1}", "[]") "}", MODEL("{\"a\": 1.5}", "[]") "}", MODEL("{\"a\": 4000000000}", "[]") "}",
      MODEL("{\"a\": \"x\"}", "[]") "}", MODEL("{\"a\": 0, \"b\": 1}", "[\"a c\"]") "}",
      MODEL("{\"a\": 0, \"b\": 1}", "[\"a b\"]") "}", /* "ab" is not in the vocabulary */
      MODEL("{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b c\"]") "}", MODEL("{\"a\": 0}", "[[\"a\"]]") "}",
      MODEL("{\"a\": 0}", "[7]") "}", MODEL("{}", "{}") "}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\", \"invert\": false}}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Sideways\"}}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {}, \"behavior\": \"Isolated\"}}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"type\": \"Metaspace\"}}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"type\": \"Sequence\"}}",
      MODEL("{}", "[]") ", \"pre_tokenizer\": {\"pattern\": 1}}",
      MODEL("{}", "[]") ", \"normalizer\": {\"type\": \"NFKC\"}}",
      MODEL("{}", "[]") ", \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"[\"}, \"content\": \"\"}}",
      MODEL("{}", "[]") ", \"added_tokens\": {}}", MODEL("{}", "[]") ", \"added_tokens\": [{\"id\": 0}]}",
      MODEL("{}", "[]") ", \"added_tokens\": [{\"id\": -3, \"content\": \"x\"}]}",
      "{\"model\": {\"type\": \"BPE\", \"dropout\": 0.5, \"vocab\": {}, \"merges\": []}}",
      "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {}, \"merges\": []}}",
  };
  for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
    dsv3_write_file_atomic(p, bad[b], strlen(bad[b]));
    dsv3_tokenizer *x = (dsv3_tokenizer *)&x;
    int rc = dsv3_tok_load(p, &x);
    CHECK(rc == -1 && x == NULL && strstr(dsv3_error(), p) && !strchr(dsv3_error(), '\n'),
          "hostile tokenizer %zu accepted or bad message: %s", b, dsv3_error());
    if (rc == 0) dsv3_tok_free(x);
  }
  /* a missing file, and a broken tokenizer_config.json beside a good tokenizer.json */
  snprintf(p, sizeof p, "%s/absent.json", tmp);
  dsv3_tokenizer *x = NULL;
  CHECK(dsv3_tok_load(p, &x) == -1 && strstr(dsv3_error(), "absent.json"), "missing file: %s", dsv3_error());
  snprintf(p, sizeof p, "%s/tokenizer.json", tmp);
  const char *good = MODEL("{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"a\", \"b\"]]") "}";
  dsv3_write_file_atomic(p, good, strlen(good));
  CHECK(dsv3_tok_load(p, &x) == 0, "minimal tokenizer: %s", dsv3_error());
  if (x) {
    int32_t *ids;
    int64_t k = dsv3_tok_encode(x, "abba", 4, &ids); /* no pre-tokenizer: one word, ab b a */
    CHECK(k == 3 && ids[0] == 2 && ids[1] == 1 && ids[2] == 0, "minimal tokenizer encode: %lld ids", (long long)k);
    free(ids);
    CHECK(dsv3_tok_bos(x) == -1 && dsv3_tok_eos(x) == -1, "no bos/eos in a tokenizer without them");
    dsv3_tok_free(x);
  }
  char cp[256];
  snprintf(cp, sizeof cp, "%s/tokenizer_config.json", tmp);
  dsv3_write_file_atomic(cp, "{\"bos_token\": ", 14);
  CHECK(dsv3_tok_load(p, &x) == -1 && strstr(dsv3_error(), "tokenizer_config.json"), "broken config: %s", dsv3_error());
  const char *cfg = "{\"bos_token\": {\"content\": \"ab\"}, \"eos_token\": \"b\"}";
  dsv3_write_file_atomic(cp, cfg, strlen(cfg));
  CHECK(dsv3_tok_load(p, &x) == 0, "config with AddedToken bos: %s", dsv3_error());
  if (x) {
    CHECK(dsv3_tok_bos(x) == 2 && dsv3_tok_eos(x) == 1, "bos/eos from tokenizer_config.json");
    dsv3_tok_free(x);
  }
  unlink(cp);
  unlink(p);
  rmdir(tmp);
#undef MODEL
}

int main(void) {
  const char *tiny = check_env("DSV3_TINY"), *data = check_env("DSV3_TESTDATA");
  char p[4096];
  snprintf(p, sizeof p, "%s/tokenizer.json", tiny);
  dsv3_tokenizer *t;
  CHECK(dsv3_tok_load(p, &t) == 0, "%s", dsv3_error());
  if (!t) return check_done("test_tokenizer");

  /* the vocabulary and the special tokens */
  CHECK(dsv3_tok_vocab_size(t) == 2048, "vocab size %lld", (long long)dsv3_tok_vocab_size(t));
  CHECK(dsv3_tok_bos(t) == 0 && dsv3_tok_eos(t) == 1, "bos %d eos %d", dsv3_tok_bos(t), dsv3_tok_eos(t));
  CHECK(dsv3_tok_id(t, "<\xef\xbd\x9cUser\xef\xbd\x9c>") == 3 && dsv3_tok_id(t, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>") == 4,
        "User/Assistant ids");
  CHECK(dsv3_tok_id(t, "no such token") == -1 && dsv3_tok_id(t, "!") == 5, "token ids");
  for (int32_t i = 0; i < 5; i++) CHECK(dsv3_tok_is_special(t, i), "id %d special", i);
  CHECK(!dsv3_tok_is_special(t, 5) && !dsv3_tok_is_special(t, -1) && !dsv3_tok_is_special(t, 1 << 30), "not special");
  char tb[8];
  CHECK(dsv3_tok_token_bytes(t, -1, tb, sizeof tb) == 0 && dsv3_tok_token_bytes(t, 99999, tb, sizeof tb) == 0, "bad id");
  CHECK(dsv3_tok_token_bytes(t, 0, tb, 4) == 4 && !memcmp(tb, "<\xef\xbd\x9c", 4), "token_bytes truncates to cap");

  /* the empty string */
  int32_t *ids;
  CHECK(dsv3_tok_encode(t, "", 0, &ids) == 0 && ids, "empty string");
  free(ids);
  CHECK(dsv3_tok_encode(t, NULL, 0, &ids) == 0, "NULL text");
  free(ids);
  size_t dl;
  char *d = dsv3_tok_decode(t, NULL, 0, 0, &dl);
  CHECK(d && dl == 0 && d[0] == 0, "decode of nothing");
  free(d);

  /* the corpus */
  snprintf(p, sizeof p, "%s/tokenizer_corpus.txt", data);
  FILE *fc = fopen(p, "r");
  snprintf(p, sizeof p, "%s/tokenizer_ids.txt", data);
  FILE *fi = fopen(p, "r");
  CHECK(fc && fi, "corpus files");
  if (!fc || !fi) return check_done("test_tokenizer");
  char *cl = NULL, *il = NULL, *longest = NULL;
  size_t cc = 0, ic = 0, longest_n = 0;
  int cases = 0, roundtrips = 0, invalid = 0;
  while (getline(&cl, &cc, fc) > 0) {
    size_t bl = strcspn(cl, "\r\n"), n;
    if (!bl) continue;
    unsigned char *raw = b64_decode(cl, bl, &n);
    CHECK(raw != NULL, "corpus line %d is not base64", cases);
    CHECK(getline(&il, &ic, fi) > 0 && il[0] != '#', "ids file too short at case %d", cases);
    if (!raw) break;
    int32_t *want;
    int64_t wn = parse_ids(il, &want);
    int64_t k = dsv3_tok_encode(t, (char *)raw, n, &ids);
    int64_t first = 0;
    while (first < k && first < wn && ids[first] == want[first]) first++;
    CHECK(same_ids(ids, k, want, wn), "case %d (%zu bytes): %lld ids, tokenizers %lld; first difference at %lld", cases,
          n, (long long)k, (long long)wn, (long long)first);
    d = dsv3_tok_decode(t, ids, (size_t)k, 0, &dl);
    /* streaming: the bytes of each token, concatenated, are the decoded text */
    char *st = malloc(dl + 1), buf[512];
    size_t sl = 0;
    for (int64_t i = 0; i < k; i++) {
      size_t l = dsv3_tok_token_bytes(t, ids[i], buf, sizeof buf);
      if (sl + l <= dl) memcpy(st + sl, buf, l);
      sl += l;
    }
    CHECK(sl == dl && !memcmp(st, d, dl), "case %d: token bytes != decode", cases);
    free(st);
    if (valid_utf8(raw, n)) {
      CHECK(dl == n && !memcmp(d, raw, dl), "case %d: decode(encode(x)) != x", cases);
      roundtrips++;
    } else { /* decode gives the U+FFFD-replaced text, which encodes to the same ids */
      int32_t *again;
      int64_t k2 = dsv3_tok_encode(t, d, dl, &again);
      CHECK(valid_utf8((unsigned char *)d, dl) && same_ids(again, k2, ids, k), "case %d: invalid UTF-8 not replaced", cases);
      free(again);
      invalid++;
    }
    if (n > longest_n) {
      free(longest);
      longest = malloc(n);
      memcpy(longest, raw, n);
      longest_n = n;
    }
    free(d);
    free(want);
    free(ids);
    free(raw);
    cases++;
  }
  fclose(fc);
  CHECK(cases >= 400 && roundtrips >= 300 && invalid >= 40, "%d cases, %d round trips, %d invalid", cases, roundtrips, invalid);

  /* the chat template, against tokenizers on the rendered template */
  snprintf(p, sizeof p, "%s/tokenizer_corpus.chat.json", data);
  char *js;
  size_t jn;
  CHECK(dsv3_read_file(p, &js, &jn, 1 << 20) == 0, "%s", dsv3_error());
  cJSON *convs = js ? cJSON_Parse(js) : NULL;
  free(js);
  int nchat = 0;
  for (const cJSON *cv = convs ? convs->child : NULL; cv; cv = cv->next, nchat++) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(cv, "messages");
    size_t nm = (size_t)cJSON_GetArraySize(ms), i = 0;
    dsv3_chat_msg *msgs = calloc(nm + 1, sizeof *msgs);
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
      msgs[i].role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
      msgs[i].content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
    }
    CHECK(getline(&il, &ic, fi) > 0 && !strncmp(il, "#chat", 5), "chat line %d", nchat);
    int32_t *want;
    int64_t wn = parse_ids(strchr(il, ' ') ? strchr(il, ' ') : "", &want);
    int64_t k = dsv3_tok_chat(t, msgs, nm, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cv, "add_generation_prompt")), &ids);
    CHECK(same_ids(ids, k, want, wn), "chat %d: %lld ids, tokenizers %lld", nchat, (long long)k, (long long)wn);
    CHECK(k > 0 && ids[0] == dsv3_tok_bos(t), "chat %d starts with BOS", nchat);
    d = dsv3_tok_decode(t, ids, (size_t)k, 1, &dl);
    CHECK(!strstr(d, "<\xef\xbd\x9c" "begin") && !strstr(d, "<\xef\xbd\x9cUser"), "chat %d: special tokens not skipped", nchat);
    for (i = 0; i < nm; i++)
      CHECK(strstr(d, msgs[i].content) != NULL || strstr(msgs[i].content, "<\xef\xbd\x9c"), "chat %d: message %zu lost",
            nchat, i);
    free(d);
    free(ids);
    free(want);
    free(msgs);
  }
  cJSON_Delete(convs);
  CHECK(nchat >= 3, "%d conversations", nchat);
  CHECK(getline(&il, &ic, fi) <= 0, "ids file longer than corpus + chats");
  fclose(fi);
  dsv3_chat_msg badrole = {"tool", "x"};
  CHECK(dsv3_tok_chat(t, &badrole, 1, 1, &ids) == -1 && strstr(dsv3_error(), "tool"), "unknown role: %s", dsv3_error());

  /* a long text: fast, and the same from several threads at once */
  if (longest) {
    size_t big_n = 100000;
    char *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++) big[i] = longest[i % longest_n];
    double t0 = dsv3_now();
    int64_t k = dsv3_tok_encode(t, big, big_n, &ids);
    double dt = dsv3_now() - t0;
    printf("100 KB encoded to %lld ids in %.3f s\n", (long long)k, dt);
    /* Not a benchmark (bench/ is for those): a bound generous enough for sanitizer builds on a
     * loaded 2-core machine that still catches a quadratic merge loop (minutes at 100 KB). */
    CHECK(k > 10000 && dt < 30.0, "100 KB took %.3f s", dt);
    thr_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
      a[i] = (thr_arg){t, big, big_n / 4, 0, NULL, 0};
      int32_t *w;
      a[i].want_n = dsv3_tok_encode(t, big, big_n / 4, &w);
      a[i].want = w;
      pthread_create(&th[i], NULL, thr, &a[i]);
    }
    for (int i = 0; i < 3; i++) {
      pthread_join(th[i], NULL);
      CHECK(a[i].ok, "thread %d got other ids", i);
      free((void *)a[i].want);
    }
    free(ids);
    free(big);
  }
  free(longest);
  free(cl);
  free(il);
  dsv3_tok_free(t);
  hostile();
  return check_done("test_tokenizer");
}
