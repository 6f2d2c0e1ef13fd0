/* libFuzzer target: the tokenizer (dsv3-run/tokenizer.c) on arbitrary bytes, two ways chosen by
 * the input's first byte.
 *
 * Even: the rest is text for DeepSeek-V3's tokenizer (models/dsv3-tiny/tokenizer.json, path in
 * FUZZ_TOKENIZER, loaded once).  Checked on every input:
 *  - no crash, leak, overflow or UB (ASan + UBSan), whatever the bytes;
 *  - every id is in the vocabulary;
 *  - the concatenated dsv3_tok_token_bytes of the ids equal dsv3_tok_decode's bytes (streaming
 *    output prints the same text);
 *  - decoding gives the text back byte for byte when it is valid UTF-8 (no normalizer: byte-level
 *    BPE loses nothing; special-token text comes back as itself), and valid UTF-8 otherwise
 *    (invalid sequences were read as U+FFFD).
 * Odd: the rest is a tokenizer.json (hostile: any JSON, any regex).  Checked: loading either
 * succeeds or fails with one line naming the file; a loaded tokenizer encodes and decodes a fixed
 * text without crashing, every id in its vocabulary. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"
#include "util.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static dsv3_tokenizer *tok;
static char json_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *p = getenv("FUZZ_TOKENIZER");
  if (!p || dsv3_tok_load(p, &tok) != 0) {
    fprintf(stderr, "fuzz_tokenizer: set FUZZ_TOKENIZER to a tokenizer.json (%s)\n", p ? dsv3_error() : "unset");
    exit(1);
  }
  /* the hostile tokenizer.json goes to a file of its own directory (no tokenizer_config.json) */
  char dir[] = "/tmp/fuzz_tokXXXXXX";
  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(json_path, sizeof json_path, "%s/tokenizer.json", dir);
  return 0;
}

/* strict UTF-8, as Python's decoder: no overlongs, no surrogates, nothing past U+10FFFF */
static int valid_utf8(const uint8_t *s, size_t n) {
  static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) k = 0, cp = c;
    else if ((c & 0xe0) == 0xc0) k = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) k = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) k = 3, cp = c & 0x07;
    else return 0;
    if (n - i <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + j] & 0x3f);
    }
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += k + 1;
  }
  return 1;
}

/* encode, check the ids, decode (stream: also token by token, which equals decode with the
 * ByteLevel decoder, DeepSeek-V3's; without a decoder tokens are joined by spaces); returns the
 * decoded bytes (malloc'd) */
static char *round_trip(const dsv3_tokenizer *t, const char *text, size_t n, int stream, size_t *out_len) {
  int32_t *ids = NULL;
  int64_t k = dsv3_tok_encode(t, text, n, &ids);
  if (k < 0) { /* only when Oniguruma fails a search (a hostile regex past its limits) */
    REQUIRE(ids == NULL);
    *out_len = 0;
    return NULL;
  }
  const int64_t V = dsv3_tok_vocab_size(t);
  for (int64_t i = 0; i < k; i++) REQUIRE(ids[i] >= 0 && ids[i] < V);
  size_t dn = 0;
  char *dec = dsv3_tok_decode(t, ids, (size_t)k, 0, &dn);
  REQUIRE(dec != NULL && dec[dn] == 0);
  /* streaming: the tokens' bytes one by one make the same bytes */
  size_t pos = 0;
  char buf[4096];
  for (int64_t i = 0; i < k && stream; i++) {
    size_t b = dsv3_tok_token_bytes(t, ids[i], buf, sizeof buf);
    REQUIRE(pos + b <= dn && memcmp(dec + pos, buf, b) == 0);
    pos += b;
  }
  REQUIRE(!stream || pos == dn);
  free(ids);
  *out_len = dn;
  return dec;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *text = (const char *)data + 1;
  const size_t n = size - 1;
  if (!(data[0] & 1)) {
    size_t dn;
    char *dec = round_trip(tok, text, n, 1, &dn);
    REQUIRE(dec != NULL); /* DeepSeek-V3's regexes never fail a search */
    if (valid_utf8(data + 1, n)) REQUIRE(dn == n && memcmp(dec, text, n) == 0);
    else REQUIRE(valid_utf8((const uint8_t *)dec, dn));
    free(dec);
    return 0;
  }
  FILE *f = fopen(json_path, "wb");
  REQUIRE(f != NULL && fwrite(text, 1, n, f) == n && fclose(f) == 0);
  dsv3_tokenizer *t = NULL;
  if (dsv3_tok_load(json_path, &t) != 0) {
    const char *e = dsv3_error();
    REQUIRE(t == NULL && strncmp(e, json_path, strlen(json_path)) == 0 && strchr(e, '\n') == NULL);
    return 0;
  }
  static const char sample[] = "def f(x):\n    return x + 12345  # \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80\n";
  size_t dn;
  free(round_trip(t, sample, sizeof sample - 1, 0, &dn));
  dsv3_tok_free(t);
  return 0;
}
