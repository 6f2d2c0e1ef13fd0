/* runstate.c - --resume state and stale temp files (see runstate.h). */
#include "runstate.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "util.h"

static void add(char **s, size_t *n, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(char **s, size_t *n, size_t *cap, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(*s + *n, *cap - *n, fmt, ap);
    va_end(ap);
    if (k >= 0 && (size_t)k < *cap - *n) {
      *n += (size_t)k;
      return;
    }
    *cap = *cap * 2 + (size_t)(k > 0 ? k : 0);
    *s = dsv3_xrealloc(*s, *cap);
  }
}

static void add_ckpt(char **s, size_t *n, size_t *cap, const char *tag, const dsv3_ckpt *ck) {
  struct stat sb;
  const char *p = dsv3_ckpt_path(ck);
  char *rp = realpath(p, NULL);
  add(s, n, cap, "%s %s\n", tag, rp ? rp : p);
  free(rp);
  if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) /* an archive: its members live in it */
    add(s, n, cap, "archive %lld %lld.%09ld %llu\n", (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
        sb.st_mtim.tv_nsec, (unsigned long long)sb.st_ino);
  for (size_t i = 0; i < dsv3_ckpt_nfiles(ck); i++) {
    const char *fp = dsv3_st_path(dsv3_ckpt_file(ck, i));
    if (stat(fp, &sb) == 0)
      add(s, n, cap, "file %s %lld %lld.%09ld %llu\n", dsv3_ckpt_file_name(ck, i), (long long)sb.st_size,
          (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, (unsigned long long)sb.st_ino);
    else
      add(s, n, cap, "file %s %llu\n", dsv3_ckpt_file_name(ck, i),
          (unsigned long long)dsv3_st_file_size(dsv3_ckpt_file(ck, i)));
  }
}

char *dsv3_runstate_text(const char *tool, const char *options, const dsv3_ckpt *in, const char *extra_tag,
                         const dsv3_ckpt *extra) {
  size_t n = 0, cap = 4096;
  char *s = dsv3_xmalloc(cap);
  s[0] = 0;
  add(&s, &n, &cap, "%s resume state 1\noptions %s\n", tool, options);
  add_ckpt(&s, &n, &cap, "input", in);
  if (extra) add_ckpt(&s, &n, &cap, extra_tag, extra);
  return s;
}

static char *state_path(const char *out_dir, const char *tool) {
  char name[256];
  snprintf(name, sizeof name, ".%s.state", tool);
  return dsv3_path_join(out_dir, name);
}

int dsv3_runstate_matches(const char *out_dir, const char *tool, const char *text) {
  char *p = state_path(out_dir, tool), *buf = NULL;
  size_t n = 0;
  int ok = 0;
  if (dsv3_file_exists(p) && dsv3_read_file(p, &buf, &n, 64u << 20) == 0)
    ok = n == strlen(text) && memcmp(buf, text, n) == 0;
  free(buf);
  free(p);
  return ok;
}

int dsv3_runstate_write(const char *out_dir, const char *tool, const char *text) {
  char *p = state_path(out_dir, tool);
  int rc = dsv3_write_file_atomic(p, text, strlen(text));
  free(p);
  return rc;
}

void dsv3_runstate_remove(const char *out_dir, const char *tool) {
  char *p = state_path(out_dir, tool);
  unlink(p);
  free(p);
}

int dsv3_clean_stale_temps(const char *out_dir) {
  DIR *d = opendir(out_dir);
  if (!d) return 0;
  struct dirent *de;
  int removed = 0;
  while ((de = readdir(d))) {
    const char *nm = de->d_name, *t;
    if (nm[0] != '.' || !(t = strstr(nm, ".tmp."))) continue;
    while (strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
    const char *digits = t + 5;
    if (!*digits || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 9) continue;
    long pid = atol(digits);
    if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
    char *p = dsv3_path_join(out_dir, nm);
    struct stat sb;
    if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(p) == 0) removed++;
    free(p);
  }
  closedir(d);
  return removed;
}
