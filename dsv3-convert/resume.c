/* resume.c - what dsv3-convert --resume trusts, and cleaning up after an interrupted run.
 *
 * A run writes OUT/.dsv3-convert.state before its first shard and removes it when everything
 * is written.  The state names the options that change the output (degree, dtype, MTP,
 * experts) and every input file by path, size, modification time and inode.  --resume skips
 * an output shard only when
 *   1. the state file is there and equal to this run's: OUT is what an interrupted run of this
 *      very conversion left, on inputs unchanged since, and
 *   2. the shard has exactly the planned size and begins with exactly the planned header.
 * Shards appear under their final name only by rename after a complete write (dsv3_outfile),
 * so (1) + (2) mean complete and from these inputs, without reading the bytes again.  Anything
 * else (a finished OUT, another model of the same shapes, changed options) is redone.
 *
 * Interruptions: temp files (".NAME.tmp.PID") of a run killed with SIGKILL are removed by the
 * next run when PID is gone; SIGINT/SIGTERM/SIGHUP/SIGXFSZ remove this run's own temps before
 * dying of the signal. */
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
#include "convert.h"
#include "util.h"

#define STATE_NAME ".dsv3-convert.state"

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

char *dsv3_convert_state_text(const dsv3_ckpt *in, const char *options) {
  size_t n = 0, cap = 4096;
  char *s = dsv3_xmalloc(cap);
  s[0] = 0;
  add(&s, &n, &cap, "dsv3-convert resume state 1\noptions %s\n", options);
  struct stat sb;
  const char *p = dsv3_ckpt_path(in);
  char *rp = realpath(p, NULL);
  add(&s, &n, &cap, "input %s\n", rp ? rp : p);
  free(rp);
  if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) /* an archive: its members live in it */
    add(&s, &n, &cap, "archive %lld %lld.%09ld %llu\n", (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
        sb.st_mtim.tv_nsec, (unsigned long long)sb.st_ino);
  for (size_t i = 0; i < dsv3_ckpt_nfiles(in); i++) {
    const char *fp = dsv3_st_path(dsv3_ckpt_file(in, i));
    if (stat(fp, &sb) == 0)
      add(&s, &n, &cap, "file %s %lld %lld.%09ld %llu\n", dsv3_ckpt_file_name(in, i), (long long)sb.st_size,
          (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, (unsigned long long)sb.st_ino);
    else
      add(&s, &n, &cap, "file %s %llu\n", dsv3_ckpt_file_name(in, i),
          (unsigned long long)dsv3_st_file_size(dsv3_ckpt_file(in, i)));
  }
  return s;
}

int dsv3_convert_state_matches(const char *out_dir, const char *text) {
  char *p = dsv3_path_join(out_dir, STATE_NAME), *buf = NULL;
  size_t n = 0;
  int ok = 0;
  if (dsv3_file_exists(p) && dsv3_read_file(p, &buf, &n, 64u << 20) == 0)
    ok = n == strlen(text) && memcmp(buf, text, n) == 0;
  free(buf);
  free(p);
  return ok;
}

int dsv3_convert_state_write(const char *out_dir, const char *text) {
  char *p = dsv3_path_join(out_dir, STATE_NAME);
  int rc = dsv3_write_file_atomic(p, text, strlen(text));
  free(p);
  return rc;
}

void dsv3_convert_state_remove(const char *out_dir) {
  char *p = dsv3_path_join(out_dir, STATE_NAME);
  unlink(p);
  free(p);
}

int dsv3_convert_clean_stale_temps(const char *out_dir) {
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
    if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue; /* alive, or not ours to judge */
    char *p = dsv3_path_join(out_dir, nm);
    struct stat sb;
    if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(p) == 0) removed++;
    free(p);
  }
  closedir(d);
  return removed;
}

/* This run's temp names, fixed before the handler is installed (unlink is async-signal-safe). */
static char **g_temps;
static size_t g_ntemps;

static void on_signal(int sig) {
  for (size_t i = 0; i < g_ntemps; i++) unlink(g_temps[i]);
  signal(sig, SIG_DFL);
  raise(sig);
}

void dsv3_convert_remove_temps_on_signal(const char *out_dir, char **final_names, size_t n) {
  g_temps = dsv3_xcalloc(n ? n : 1, sizeof *g_temps);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(out_dir) + strlen(final_names[i]) + 32;
    g_temps[i] = dsv3_xmalloc(l);
    snprintf(g_temps[i], l, "%s/.%s.tmp.%ld", out_dir, final_names[i], (long)getpid());
  }
  g_ntemps = n;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGXFSZ, &sa, NULL); /* a file-size limit: die as the default would, without the temp */
}

void dsv3_convert_temps_free(void) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGXFSZ, SIG_DFL);
  for (size_t i = 0; i < g_ntemps; i++) free(g_temps[i]);
  free(g_temps);
  g_temps = NULL;
  g_ntemps = 0;
}
