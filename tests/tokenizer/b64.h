/* b64.h - base64 decoding for the tokenizer tests (corpus lines are base64 so that any bytes,
 * invalid UTF-8 included, fit on a line).  Returns malloc'd bytes, NULL if not base64. */
#ifndef DSV3_TEST_B64_H
#define DSV3_TEST_B64_H
#include <stdlib.h>

static inline unsigned char *b64_decode(const char *s, size_t n, size_t *out_n) {
  unsigned char *o = malloc(n / 4 * 3 + 4);
  size_t k = 0;
  unsigned acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < n && s[i] != '='; i++) {
    char c = s[i];
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (v < 0) {
      free(o);
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[k++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  for (; i < n; i++)
    if (s[i] != '=') {
      free(o);
      return NULL;
    }
  *out_n = k;
  return o;
}
#endif
