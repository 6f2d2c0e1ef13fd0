/* check.h - the smallest test harness: CHECK(cond, fmt, ...) counts failures; main returns
 * check_done() (0 pass, 1 fail).  Tests skip with exit 77. */
#ifndef DSV3_CHECK_H
#define DSV3_CHECK_H
#include <stdio.h>
#include <stdlib.h>

static int check_failures, check_count;
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    check_count++;                                                         \
    if (!(cond)) {                                                         \
      check_failures++;                                                    \
      if (check_failures <= 50) {                                          \
        fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond);  \
        fprintf(stderr, __VA_ARGS__);                                      \
        fputc('\n', stderr);                                               \
      }                                                                    \
    }                                                                      \
  } while (0)

static inline int check_done(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}
static inline const char *check_env(const char *k) {
  const char *v = getenv(k);
  if (!v) {
    fprintf(stderr, "%s not set\n", k);
    exit(77);
  }
  return v;
}
#endif
