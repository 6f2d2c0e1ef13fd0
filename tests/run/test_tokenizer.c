/* The C tokenizer against Hugging Face `tokenizers` on a varied corpus: code, prose, whitespace
 * runs, CJK, emoji, numbers, special tokens inside text, invalid UTF-8.
 * Expected ids: scripts/ref/ref_tokenizer.py models/dsv3-tiny/tokenizer.json
 *   tests/data/tokenizer_corpus.txt tests/data/tokenizer_ids.txt  (tokenizers 0.23, run on the GPU
 *   machine by scripts/ref/gpu-reference.sh; corpus from tests/tokenizer_corpus_gen.py). */
#include <openssl/evp.h>
#include <unistd.h>
#include <string.h>

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

int main(void) {
  const char *tiny = check_env("DSV3_TINY"), *data = check_env("DSV3_TESTDATA");
  char p[4096];
  snprintf(p, sizeof p, "%s/tokenizer.json", tiny);
  dsv3_tokenizer *t;
  CHECK(dsv3_tok_load(p, &t) == 0, "%s", dsv3_error());
  if (!t) return check_done("tokenizer");
  CHECK(dsv3_tok_bos(t) == 0 && dsv3_tok_eos(t) == 1 && dsv3_tok_is_special(t, 0), "bos/eos");
  snprintf(p, sizeof p, "%s/tokenizer_corpus.txt", data);
  FILE *fc = fopen(p, "r");
  snprintf(p, sizeof p, "%s/tokenizer_ids.txt", data);
  FILE *fi = fopen(p, "r");
  CHECK(fc && fi, "corpus files");
  if (!fc || !fi) return check_done("tokenizer");
  char *cl = NULL, *il = NULL;
  size_t cc = 0, ic = 0;
  int cases = 0, roundtrips = 0;
  while (getline(&cl, &cc, fc) > 0) {
    size_t bl = strcspn(cl, "\r\n");
    cl[bl] = 0;
    if (!bl) continue;
    unsigned char *raw = malloc(bl + 4);
    int n = EVP_DecodeBlock(raw, (unsigned char *)cl, (int)bl);
    while (bl >= 1 && cl[bl - 1] == '=') n--, bl--; /* DecodeBlock counts padding as bytes */
    CHECK(getline(&il, &ic, fi) > 0, "ids file too short");
    int32_t *ids;
    int64_t k = dsv3_tok_encode(t, (char *)raw, (size_t)n, &ids);
    char *s = il, *end;
    int64_t j = 0;
    int same = 1;
    for (;; j++) {
      long v = strtol(s, &end, 10);
      if (end == s) break;
      if (j >= k || ids[j] != v) same = 0;
      s = end;
    }
    CHECK(same && j == k, "case %d: %d bytes: ids differ from tokenizers (%lld vs %lld ids)", cases, n, (long long)k, (long long)j);
    if (valid_utf8(raw, (size_t)n)) {
      size_t dl;
      char *d = dsv3_tok_decode(t, ids, (size_t)k, 0, &dl);
      CHECK(dl == (size_t)n && !memcmp(d, raw, dl), "case %d: decode(encode(x)) != x", cases);
      roundtrips++;
      free(d);
    }
    free(ids);
    free(raw);
    cases++;
  }
  CHECK(cases > 200 && roundtrips > 150, "%d cases, %d round trips", cases, roundtrips);
  /* chat template, two turns */
  CHECK(getline(&il, &ic, fi) > 0 && !strncmp(il, "#chat ", 6), "chat line");
  dsv3_chat_msg msgs[3] = {{"user", "Write a function that adds two numbers."},
                           {"assistant", "def add(a, b):\n    return a + b"},
                           {"user", "Now subtract them."}};
  int32_t *ids;
  int64_t k = dsv3_tok_chat(t, msgs, 3, 1, &ids);
  char *s = il + 6, *end;
  int64_t j = 0;
  int same = 1;
  for (;; j++) {
    long v = strtol(s, &end, 10);
    if (end == s) break;
    if (j >= k || ids[j] != v) same = 0;
    s = end;
  }
  CHECK(same && j == k, "chat template ids differ");
  size_t dl;
  char *d = dsv3_tok_decode(t, ids, (size_t)k, 1, &dl);
  CHECK(strstr(d, "<\xef\xbd\x9c") == NULL && strstr(d, "Now subtract them."), "skip_special decode: %s", d);
  free(d);
  free(ids);
  free(cl);
  free(il);
  fclose(fc);
  fclose(fi);
  dsv3_tok_free(t);
  /* hostile tokenizer files */
  char tmp[] = "/tmp/dsv3-tok-XXXXXX";
  if (mkdtemp(tmp)) {
    snprintf(p, sizeof p, "%s/tokenizer.json", tmp);
    const char *bad[] = {"{", "{\"model\": {\"type\": \"Unigram\"}}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
                         "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}"};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
      dsv3_write_file_atomic(p, bad[b], strlen(bad[b]));
      dsv3_tokenizer *x = NULL;
      CHECK(dsv3_tok_load(p, &x) == -1 && strstr(dsv3_error(), p), "bad tokenizer %zu accepted: %s", b, dsv3_error());
    }
    unlink(p);
    rmdir(tmp);
  }
  return check_done("tokenizer");
}
