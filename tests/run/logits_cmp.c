/* logits_cmp - compare two `dsv3-run --dump-logits` files (logits F32 [n, vocab], ids I32 [n])
 * from the same prompt: the prompt and at least MIN generated ids must agree, and over the
 * positions where the ids agree every row's max |a - b| must stay within TOL times that row's
 * max |a|.  Prints the agreeing length and the worst relative difference.
 *   logits_cmp A B PROMPT_LEN MIN TOL            exit 0 ok, 1 differs, 2 bad input */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "safetensors.h"
#include "util.h"

static int get(const char *path, dsv3_st **st, const float **lg, const int32_t **ids, int64_t *n, int64_t *V) {
  if (dsv3_st_open(path, st)) return -1;
  const dsv3_tensor *l = dsv3_st_find(*st, "logits"), *i = dsv3_st_find(*st, "ids");
  if (!l || !i || l->dtype != DSV3_F32 || l->ndim != 2 || i->dtype != DSV3_I32 || i->ndim != 1 || i->shape[0] != l->shape[0]) {
    dsv3_error_set("%s: not a dsv3-run logits dump", path);
    return -1;
  }
  *lg = l->data, *ids = i->data, *n = l->shape[0], *V = l->shape[1];
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: logits_cmp A B PROMPT_LEN MIN_AGREE TOL\n");
    return 2;
  }
  dsv3_st *sa, *sb;
  const float *a, *b;
  const int32_t *ia, *ib;
  int64_t na, nb, va, vb;
  if (get(argv[1], &sa, &a, &ia, &na, &va) || get(argv[2], &sb, &b, &ib, &nb, &vb)) {
    dsv3_error_print("logits_cmp");
    return 2;
  }
  int64_t np = atoll(argv[3]), min = atoll(argv[4]);
  double tol = atof(argv[5]);
  if (va != vb) {
    fprintf(stderr, "logits_cmp: vocabularies differ (%lld, %lld)\n", (long long)va, (long long)vb);
    return 1;
  }
  int64_t n = na < nb ? na : nb, agree = 0;
  while (agree < n && ia[agree] == ib[agree]) agree++;
  /* row r holds the logits after ids[0..r]; rows up to the first differing id compare */
  int64_t rows = agree < n ? agree : n;
  double worst = 0;
  int64_t wrow = 0;
  for (int64_t r = 0; r < rows; r++) {
    double mx = 0, d = 0;
    for (int64_t v = 0; v < va; v++) {
      double x = a[r * va + v], y = b[r * va + v];
      if (!isfinite(x) || !isfinite(y)) d = INFINITY;
      if (fabs(x) > mx) mx = fabs(x);
      if (fabs(x - y) > d) d = fabs(x - y);
    }
    double rel = mx > 0 ? d / mx : d;
    if (!(rel <= worst)) worst = rel, wrow = r;
  }
  printf("ids agree on %lld of %lld positions (prompt %lld); worst row max|a-b|/max|a| = %.3g at row %lld (tolerance %g)\n",
         (long long)agree, (long long)n, (long long)np, worst, (long long)wrow, tol);
  int bad = agree < np + min || !(worst <= tol);
  dsv3_st_close(sa);
  dsv3_st_close(sb);
  return bad;
}
