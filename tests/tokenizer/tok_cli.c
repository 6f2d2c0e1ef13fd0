/* tok_cli - the tokenizer library from the command line, for tests and for comparing with
 * Hugging Face `tokenizers` (tests/tokenizer/diff_hf.py).
 *
 *   tok_cli TOKENIZER_JSON            stdin (raw bytes) -> ids, space-separated, one line
 *   tok_cli TOKENIZER_JSON --lines    every stdin line is base64 of one text -> one line of ids
 *   tok_cli TOKENIZER_JSON --decode [--skip-special]   stdin ids -> bytes on stdout
 *   tok_cli TOKENIZER_JSON --time N   encode stdin N times, print ids/s and MB/s to stderr
 * Exit 1 with one error line when the tokenizer cannot be loaded, 2 on usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b64.h"
#include "tokenizer.h"
#include "util.h"

static char *slurp(FILE *f, size_t *n) {
  size_t cap = 1 << 16;
  char *b = malloc(cap);
  *n = 0;
  size_t r;
  while ((r = fread(b + *n, 1, cap - *n, f)) > 0) {
    *n += r;
    if (*n == cap) b = realloc(b, cap *= 2);
  }
  return b;
}

static void print_ids(const int32_t *ids, int64_t k) {
  for (int64_t i = 0; i < k; i++) printf("%s%d", i ? " " : "", ids[i]);
  putchar('\n');
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: tok_cli TOKENIZER_JSON [--lines | --decode [--skip-special] | --time N]\n");
    return 2;
  }
  const char *mode = argc > 2 ? argv[2] : "";
  dsv3_tokenizer *t;
  if (dsv3_tok_load(argv[1], &t) != 0) {
    fprintf(stderr, "tok_cli: error: %s\n", dsv3_error());
    return 1;
  }
  int rc = 0;
  if (!strcmp(mode, "--lines")) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t l;
    while ((l = getline(&line, &cap, stdin)) >= 0) {
      size_t bl = strcspn(line, "\r\n"), n;
      unsigned char *raw = b64_decode(line, bl, &n);
      if (!raw) {
        fprintf(stderr, "tok_cli: error: stdin: a line is not base64\n");
        rc = 1;
        break;
      }
      int32_t *ids;
      int64_t k = dsv3_tok_encode(t, (char *)raw, n, &ids);
      if (k < 0) {
        fprintf(stderr, "tok_cli: error: %s\n", dsv3_error());
        rc = 1;
      } else {
        print_ids(ids, k);
      }
      free(ids);
      free(raw);
    }
    free(line);
  } else if (!strcmp(mode, "--decode")) {
    size_t n, cap = 1024, k = 0;
    char *in = slurp(stdin, &n), *p = in, *end;
    in = realloc(in, n + 1);
    in[n] = 0;
    p = in;
    int32_t *ids = malloc(cap * sizeof *ids);
    for (;;) {
      long v = strtol(p, &end, 10);
      if (end == p) break;
      if (k == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
      ids[k++] = (int32_t)v;
      p = end;
    }
    size_t ol;
    char *o = dsv3_tok_decode(t, ids, k, argc > 3 && !strcmp(argv[3], "--skip-special"), &ol);
    fwrite(o, 1, ol, stdout);
    free(o);
    free(ids);
    free(in);
  } else if (!strcmp(mode, "--time")) {
    int reps = argc > 3 ? atoi(argv[3]) : 1;
    size_t n;
    char *in = slurp(stdin, &n);
    struct timespec a, b;
    int64_t k = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < reps; r++) {
      int32_t *ids;
      k = dsv3_tok_encode(t, in, n, &ids);
      free(ids);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    fprintf(stderr, "%zu bytes -> %lld ids, %.4f s per encode, %.2f MB/s\n", n, (long long)k, s / reps,
            (double)n * reps / s / 1e6);
    free(in);
  } else if (!*mode) {
    size_t n;
    char *in = slurp(stdin, &n);
    int32_t *ids;
    int64_t k = dsv3_tok_encode(t, in, n, &ids);
    if (k < 0) {
      fprintf(stderr, "tok_cli: error: %s\n", dsv3_error());
      rc = 1;
    } else {
      print_ids(ids, k);
    }
    free(ids);
    free(in);
  } else {
    fprintf(stderr, "tok_cli: unknown option %s\n", mode);
    rc = 2;
  }
  dsv3_tok_free(t);
  return rc;
}
