/* util: errors, checked arithmetic, sizes, globs, paths, atomic output files (a file that is
 * not committed never appears under its final name, not even when the writer dies), the thread
 * pool (every index once, dynamic, first error carried to the caller), the progress bar (on a
 * pseudo-terminal only) and peak RSS. */
#include <dirent.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "util.h"

static char tmpdir[] = "/tmp/dsv3-st-util-XXXXXX";

static int count_entries(const char *dir, const char *needle) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d)))
    if (strstr(de->d_name, needle)) n++;
  closedir(d);
  return n;
}

static char *slurp(const char *p) {
  char *b = NULL;
  size_t n;
  if (dsv3_read_file(p, &b, &n, 1 << 20) != 0) return NULL;
  return b;
}

/* ---- parallel_for tasks ---- */
typedef struct {
  atomic_int *hits;
  atomic_int done;
  atomic_int max_thread;
  int fail_at;
  int sleep_us;
  unsigned long thread_mask;
} pf_ctx;

static int pf_task(void *vctx, size_t i, int thread) {
  pf_ctx *c = vctx;
  atomic_fetch_add(&c->hits[i], 1);
  atomic_fetch_add(&c->done, 1);
  int m = atomic_load(&c->max_thread);
  while (thread > m && !atomic_compare_exchange_weak(&c->max_thread, &m, thread)) {}
  if (thread < 64) __atomic_fetch_or(&c->thread_mask, 1ul << thread, __ATOMIC_RELAXED);
  if (c->sleep_us) usleep((useconds_t)(c->sleep_us * (int)(i % 3 + 1))); /* uneven tasks */
  if ((int)i == c->fail_at) {
    dsv3_error_set("task %zu failed", i);
    return 7;
  }
  return 0;
}

static int err_task(void *ctx, size_t i, int thread) {
  (void)ctx;
  (void)thread;
  dsv3_error_set("worker message %zu", i); /* thread-local: must not leak into the caller */
  return 0;
}

typedef struct {
  dsv3_progress *p;
} prog_ctx;
static int prog_task(void *vctx, size_t i, int thread) {
  (void)i;
  (void)thread;
  dsv3_progress_add(((prog_ctx *)vctx)->p, 1024);
  return 0;
}

/* Run a progress bar with stderr on a pseudo-terminal; return what it drew. */
static char *progress_on_pty(int quiet) {
  int master, slave;
  if (openpty(&master, &slave, NULL, NULL, NULL) != 0) return NULL;
  fflush(stderr);
  int saved = dup(2);
  dup2(slave, 2);
  dsv3_progress *p = dsv3_progress_new("writing", 1024 * 1024, quiet);
  prog_ctx c = {p};
  dsv3_parallel_for(1024, 8, prog_task, &c); /* 1024 x 1 KiB from 8 threads */
  usleep(250000);
  dsv3_progress_add(p, 0); /* after the throttle interval: a redraw */
  dsv3_progress_done(p);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(slave);
  static char buf[65536];
  size_t n = 0;
  fcntl(master, F_SETFL, O_NONBLOCK);
  for (;;) {
    ssize_t r = read(master, buf + n, sizeof buf - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(master);
  buf[n] = 0;
  return buf;
}

int main(void) {
  if (!mkdtemp(tmpdir)) return 77;

  /* ---- errors ---- */
  dsv3_error_set("%s: tensor %s: bad\nsecond line\r", "f.safetensors", "w");
  CHECK(!strcmp(dsv3_error(), "f.safetensors: tensor w: bad second line "), "newlines flattened: %s", dsv3_error());
  dsv3_error_set("inner");
  dsv3_error_prefix("%s", "outer");
  CHECK(!strcmp(dsv3_error(), "outer: inner"), "prefix: %s", dsv3_error());
  dsv3_error_set("caller");
  dsv3_parallel_for(64, 4, err_task, NULL);
  CHECK(!strcmp(dsv3_error(), "caller") || !strncmp(dsv3_error(), "worker message", 14),
        "message after a successful pool: %s", dsv3_error());
  {
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    dsv3_error_set("%s", big);
    CHECK(strlen(dsv3_error()) > 1000 && strlen(dsv3_error()) < 5000, "long message truncated, not overflowed");
    dsv3_error_prefix("%s", big);
    CHECK(strlen(dsv3_error()) < 5000, "long prefix truncated");
  }

  /* ---- checked arithmetic ---- */
  uint64_t r;
  CHECK(dsv3_mul_u64(1ull << 32, 1ull << 31, &r) == 0 && r == 1ull << 63, "mul");
  CHECK(dsv3_mul_u64(1ull << 32, 1ull << 32, &r) == -1, "mul overflow");
  CHECK(dsv3_mul_u64(UINT64_MAX, 0, &r) == 0 && r == 0, "mul by 0");
  CHECK(dsv3_add_u64(UINT64_MAX - 1, 1, &r) == 0 && r == UINT64_MAX, "add");
  CHECK(dsv3_add_u64(UINT64_MAX, 1, &r) == -1, "add overflow");

  /* ---- sizes, bytes, globs ---- */
  struct { const char *s; uint64_t v; } good[] = {
      {"0", 0}, {"1024", 1024}, {"512M", 512ull << 20}, {"4G", 4ull << 30}, {"4g", 4ull << 30}, {"1.5G", 3ull << 29},
      {"2K", 2048}, {"3T", 3ull << 40}, {"8GiB", 8ull << 30}, {"8GB", 8ull << 30}, {"100B", 100}, {"0.5K", 512}};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    uint64_t v = 1;
    CHECK(dsv3_parse_size(good[i].s, &v) == 0 && v == good[i].v, "parse_size(%s) = %llu", good[i].s, (unsigned long long)v);
  }
  const char *badsz[] = {"", "G", "-1", "+4G", " 4G", "4 G", "4X", "4GG", "1e3", "0x10", "nan", "inf", "4Gx",
                         "99999999999999999999", "20000000T", ".", "4i"};
  for (size_t i = 0; i < sizeof badsz / sizeof *badsz; i++) {
    uint64_t v;
    CHECK(dsv3_parse_size(badsz[i], &v) == -1, "parse_size(\"%s\") accepted", badsz[i]);
  }
  char hb[32];
  CHECK(!strcmp(dsv3_human_bytes(0, hb, sizeof hb), "0 B"), "%s", hb);
  CHECK(!strcmp(dsv3_human_bytes(1023, hb, sizeof hb), "1023 B"), "%s", hb);
  CHECK(!strcmp(dsv3_human_bytes(1536, hb, sizeof hb), "1.50 KiB"), "%s", hb);
  CHECK(!strcmp(dsv3_human_bytes(5ull << 30, hb, sizeof hb), "5.00 GiB"), "%s", hb);
  CHECK(!strcmp(dsv3_human_bytes(UINT64_MAX, hb, sizeof hb), "16384.00 PiB"), "%s", hb);
  CHECK(dsv3_glob_match("model.layers.*.mlp.experts.*", "model.layers.3.mlp.experts.7.w1.weight"), "glob *");
  CHECK(!dsv3_glob_match("*.weight", "a.weight_scale_inv"), "glob anchored");
  CHECK(dsv3_glob_match("layers.?.[ab]", "layers.4.b") && !dsv3_glob_match("layers.?.[ab]", "layers.10.b"), "glob ? []");
  CHECK(dsv3_glob_match("*", "") && dsv3_glob_match("exact", "exact") && !dsv3_glob_match("exact", "exactly"), "glob misc");

  /* ---- paths and files ---- */
  char *p = dsv3_path_join("a", "b");
  CHECK(!strcmp(p, "a/b"), "join %s", p);
  free(p);
  p = dsv3_path_join("a/", "b");
  CHECK(!strcmp(p, "a/b"), "join %s", p);
  free(p);
  char *deep = dsv3_path_join(tmpdir, "x/y/z");
  CHECK(dsv3_mkdirs(deep) == 0 && dsv3_is_dir(deep), "mkdirs: %s", dsv3_error());
  CHECK(dsv3_mkdirs(deep) == 0, "mkdirs twice");
  CHECK(dsv3_path_inside(deep, tmpdir) && !dsv3_path_inside(tmpdir, deep), "path_inside");
  {
    char *missing = dsv3_path_join(deep, "not/yet/there");
    CHECK(dsv3_path_inside(missing, tmpdir), "path_inside with a missing tail");
    char *dotdot = dsv3_path_join(deep, "../../../..");
    CHECK(!dsv3_path_inside(dotdot, tmpdir), "path_inside resolves ..");
    free(missing);
    free(dotdot);
  }
  CHECK(dsv3_free_disk(deep) > 0, "free disk");
  char *small = dsv3_path_join(tmpdir, "small.txt");
  CHECK(dsv3_write_file_atomic(small, "hello", 5) == 0, "write_file_atomic: %s", dsv3_error());
  {
    char *b;
    size_t n;
    CHECK(dsv3_read_file(small, &b, &n, 5) == 0 && n == 5 && !strcmp(b, "hello"), "read_file");
    free(b);
    CHECK(dsv3_read_file(small, &b, &n, 4) == -1 && strstr(dsv3_error(), small), "read_file limit: %s", dsv3_error());
    CHECK(dsv3_read_file(tmpdir, &b, &n, 100) == -1, "read_file of a directory");
    CHECK(dsv3_read_file("/nonexistent/dsv3", &b, &n, 100) == -1 && strstr(dsv3_error(), "/nonexistent/dsv3"),
          "read_file missing: %s", dsv3_error());
    char *copy = dsv3_path_join(tmpdir, "copy.txt");
    CHECK(dsv3_copy_file(small, copy) == 0, "copy");
    char *c = slurp(copy);
    CHECK(c && !strcmp(c, "hello"), "copied content");
    free(c);
    free(copy);
  }
  CHECK(dsv3_file_exists(small) && !dsv3_file_exists("/nonexistent/dsv3"), "file_exists");

  /* ---- outfile: temp name, atomic commit, abort, death before commit ---- */
  {
    char *fin = dsv3_path_join(tmpdir, "out.bin");
    dsv3_write_file_atomic(fin, "OLD", 3);
    dsv3_outfile f;
    CHECK(dsv3_outfile_open(&f, fin) == 0, "outfile_open: %s", dsv3_error());
    char want_tmp[4200];
    snprintf(want_tmp, sizeof want_tmp, "%s/.out.bin.tmp.%ld", tmpdir, (long)getpid());
    CHECK(f.tmp_path && !strcmp(f.tmp_path, want_tmp), "temp name %s", f.tmp_path ? f.tmp_path : "(null)");
    CHECK(dsv3_file_exists(want_tmp), "temp exists");
    CHECK(dsv3_outfile_pwrite(&f, "world", 5, 5) == 0 && dsv3_outfile_pwrite(&f, "hello", 5, 0) == 0, "pwrite");
    char *c = slurp(fin);
    CHECK(c && !strcmp(c, "OLD"), "the old file is untouched until commit");
    free(c);
    CHECK(dsv3_outfile_commit(&f) == 0, "commit: %s", dsv3_error());
    c = slurp(fin);
    CHECK(c && !strcmp(c, "helloworld"), "committed content");
    free(c);
    CHECK(!dsv3_file_exists(want_tmp), "temp gone after commit");
    dsv3_outfile_abort(&f); /* after commit: harmless */
    CHECK(dsv3_file_exists(fin), "abort after commit keeps the file");

    char *never = dsv3_path_join(tmpdir, "never.bin");
    CHECK(dsv3_outfile_open(&f, never) == 0, "open");
    dsv3_outfile_pwrite(&f, "x", 1, 0);
    dsv3_outfile_abort(&f);
    dsv3_outfile_abort(&f); /* twice: safe */
    CHECK(!dsv3_file_exists(never) && count_entries(tmpdir, "never") == 0, "abort leaves nothing");
    CHECK(dsv3_outfile_commit(&f) == -1, "commit after abort fails");

    /* a writer killed before commit: the final name never appears */
    pid_t pid = fork();
    if (pid == 0) {
      dsv3_outfile g;
      if (dsv3_outfile_open(&g, never) != 0) _exit(3);
      dsv3_outfile_pwrite(&g, "partial", 7, 0);
      raise(SIGKILL);
      _exit(4);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st), "child was killed");
    CHECK(!dsv3_file_exists(never), "a killed writer's output appeared under its final name");
    char stale[4200];
    snprintf(stale, sizeof stale, "%s/.never.bin.tmp.%ld", tmpdir, (long)pid);
    CHECK(dsv3_file_exists(stale), "the killed writer's temp is where documented");
    unlink(stale);

    char *nodir = dsv3_path_join(tmpdir, "no/such/dir/f.bin");
    CHECK(dsv3_outfile_open(&f, nodir) == -1 && strstr(dsv3_error(), nodir), "open in a missing dir: %s", dsv3_error());
    free(nodir);
    free(never);
    free(fin);
  }

  /* ---- parallel_for ---- */
  {
    enum { N = 20000 };
    static atomic_int hits[N];
    int threads[] = {1, 2, 3, 8, 0, 64};
    for (size_t k = 0; k < sizeof threads / sizeof *threads; k++) {
      for (int i = 0; i < N; i++) atomic_init(&hits[i], 0);
      pf_ctx c = {.hits = hits, .fail_at = -1};
      int rc = dsv3_parallel_for(N, threads[k], pf_task, &c);
      int once = 1;
      for (int i = 0; i < N; i++) once &= atomic_load(&hits[i]) == 1;
      CHECK(rc == 0 && once, "threads=%d: every index exactly once", threads[k]);
      int lim = threads[k] > 0 ? threads[k] : dsv3_num_cpus();
      CHECK(atomic_load(&c.max_thread) < lim, "threads=%d: thread id %d out of range", threads[k], atomic_load(&c.max_thread));
    }
    CHECK(dsv3_parallel_for(0, 4, pf_task, NULL) == 0, "n = 0");
    /* dynamic scheduling: uneven sleeping tasks are shared by several threads */
    for (int i = 0; i < 64; i++) atomic_init(&hits[i], 0);
    pf_ctx c = {.hits = hits, .fail_at = -1, .sleep_us = 2000};
    dsv3_parallel_for(64, 4, pf_task, &c);
    CHECK(__builtin_popcountl(c.thread_mask) >= 2, "only %d threads took work", __builtin_popcountl(c.thread_mask));
    /* the first failure's code and message reach the caller; the pool stops early */
    for (int i = 0; i < N; i++) atomic_init(&hits[i], 0);
    pf_ctx e = {.hits = hits, .fail_at = 500, .sleep_us = 0};
    dsv3_error_set("before");
    int rc = dsv3_parallel_for(N, 4, pf_task, &e);
    CHECK(rc == 7 && !strcmp(dsv3_error(), "task 500 failed"), "error carried: rc %d, \"%s\"", rc, dsv3_error());
    CHECK(atomic_load(&e.done) < N, "pool kept going after a failure (%d tasks)", atomic_load(&e.done));
    pf_ctx e1 = {.hits = hits, .fail_at = 3};
    CHECK(dsv3_parallel_for(10, 1, pf_task, &e1) == 7 && !strcmp(dsv3_error(), "task 3 failed"), "single-threaded error");
    setenv("DSV3_THREADS", "3", 1);
    CHECK(dsv3_num_cpus() == 3, "DSV3_THREADS");
    unsetenv("DSV3_THREADS");
    CHECK(dsv3_num_cpus() >= 1, "num_cpus");
  }

  /* ---- progress ---- */
  {
    /* not a terminal: nothing at all on stderr */
    char *log = dsv3_path_join(tmpdir, "stderr.txt");
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    dsv3_progress *pr = dsv3_progress_new("quiet", 100, 0);
    dsv3_progress_add(pr, 50);
    dsv3_progress_add(pr, 50);
    dsv3_progress_done(pr);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat sb;
    CHECK(stat(log, &sb) == 0 && sb.st_size == 0, "progress wrote %lld bytes to a non-terminal", (long long)sb.st_size);
    free(log);
    dsv3_progress_add(NULL, 5); /* NULL is a no-op */
    dsv3_progress_done(NULL);
    char *out = progress_on_pty(0);
    if (out) {
      CHECK(strstr(out, "writing") && strstr(out, "100.0%") && strstr(out, "1.00 MiB/1.00 MiB") && strstr(out, "/s") &&
                strstr(out, "ETA") && strstr(out, " in "),
            "progress on a terminal: \"%s\"", out);
      out = progress_on_pty(1);
      CHECK(out && out[0] == 0, "quiet progress drew \"%s\"", out ? out : "");
    } else {
      fprintf(stderr, "no pseudo-terminal: progress drawing not tested\n");
    }
  }

  /* ---- peak RSS ---- */
  {
    uint64_t before = dsv3_peak_rss();
    size_t n = 96u << 20;
    volatile char *big = malloc(n);
    for (size_t i = 0; i < n; i += 4096) big[i] = 1;
    uint64_t after = dsv3_peak_rss();
    free((void *)big);
    CHECK(before > (1u << 20) && after >= before + (64u << 20), "peak RSS %llu -> %llu", (unsigned long long)before,
          (unsigned long long)after);
    double t0 = dsv3_now();
    usleep(10000);
    CHECK(dsv3_now() - t0 >= 0.009, "monotonic clock");
  }

  free(deep);
  free(small);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) {}
  return check_done("st_util");
}
