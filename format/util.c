/* util.c - errors, memory, files, threads, progress: see util.h. */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---- */
static _Thread_local char err_buf[2048];

void dsv3_error_set(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_buf, sizeof err_buf, fmt, ap);
  va_end(ap);
  /* One line: newlines in a message (from a hostile name, say) would break the contract. */
  for (char *p = err_buf; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
}

void dsv3_error_prefix(const char *fmt, ...) {
  char pre[1024], old[sizeof err_buf];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, err_buf, sizeof old);
  snprintf(err_buf, sizeof err_buf, "%.1000s: %.1000s", pre, old);
}

const char *dsv3_error(void) { return err_buf[0] ? err_buf : "unknown error"; }

void dsv3_error_print(const char *prog) { fprintf(stderr, "%s: error: %s\n", prog, dsv3_error()); }

void dsv3_die(const char *prog, int code, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: error: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(code);
}

void dsv3_die_badopt(const char *prog, int argc, char *const argv[]) {
  dsv3_die(prog, 2, "unknown option or missing value: %s (see --help)", argv[optind - 1 < argc ? optind - 1 : argc - 1]);
}

/* ---- memory ---- */
static void oom(size_t n) {
  fprintf(stderr, "dsv3: out of memory allocating %zu bytes\n", n);
  abort();
}
void *dsv3_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}
void *dsv3_xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) oom(n * sz);
  return p;
}
void *dsv3_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}
char *dsv3_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = dsv3_xmalloc(n);
  memcpy(p, s, n);
  return p;
}
int dsv3_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
int dsv3_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
  return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* ---- files ---- */
int dsv3_open_regular(const char *path, struct stat *st) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    dsv3_error_set("%s: %s", path, strerror(errno));
    return -1;
  }
  struct stat s;
  if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode)) {
    dsv3_error_set("%s: not a regular file", path);
    close(fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  if (st) *st = s;
  return fd;
}

int dsv3_read_file(const char *path, char **out, size_t *len, size_t max_len) {
  struct stat st;
  int fd = dsv3_open_regular(path, &st);
  if (fd < 0) return -1;
  if ((uint64_t)st.st_size > max_len) {
    dsv3_error_set("%s: file is %lld bytes, more than the %zu allowed", path, (long long)st.st_size,
                   max_len);
    close(fd);
    return -1;
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *buf = dsv3_xmalloc(n + 1);
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      dsv3_error_set("%s: read failed: %s", path, r < 0 ? strerror(errno) : "unexpected end of file");
      free(buf);
      close(fd);
      return -1;
    }
    got += (size_t)r;
  }
  close(fd);
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return 0;
}

char *dsv3_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = dsv3_xmalloc(a + b + 2);
  memcpy(p, dir, a);
  size_t k = a;
  if (a && dir[a - 1] != '/') p[k++] = '/';
  memcpy(p + k, name, b + 1);
  return p;
}

int dsv3_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
int dsv3_file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

int dsv3_mkdirs(const char *path) {
  char *p = dsv3_xstrdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      dsv3_error_set("%s: cannot create directory: %s", p, strerror(errno));
      free(p);
      return -1;
    }
    *s = '/';
  }
  if (mkdir(p, 0777) != 0 && errno != EEXIST) {
    dsv3_error_set("%s: cannot create directory: %s", p, strerror(errno));
    free(p);
    return -1;
  }
  free(p);
  if (!dsv3_is_dir(path)) {
    dsv3_error_set("%s: exists and is not a directory", path);
    return -1;
  }
  return 0;
}

/* realpath of the longest existing prefix, with the rest appended. */
static char *resolve(const char *path) {
  char *p = dsv3_xstrdup(path), *rest = NULL;
  char buf[PATH_MAX];
  for (;;) {
    if (realpath(p[0] ? p : ".", buf)) break;
    char *slash = strrchr(p, '/');
    if (!slash) {
      free(rest);
      rest = dsv3_xstrdup(p);
      strcpy(p, ".");
      if (!realpath(".", buf)) buf[0] = 0;
      break;
    }
    char *tail = dsv3_xstrdup(slash + 1);
    if (rest) {
      char *j = dsv3_path_join(tail, rest);
      free(tail);
      free(rest);
      rest = j;
    } else {
      rest = tail;
    }
    *slash = 0;
  }
  char *r = rest ? dsv3_path_join(buf, rest) : dsv3_xstrdup(buf);
  free(p);
  free(rest);
  return r;
}

int dsv3_path_inside(const char *inner, const char *outer) {
  char *a = resolve(inner), *b = resolve(outer);
  size_t n = strlen(b);
  int r = strncmp(a, b, n) == 0 && (a[n] == 0 || a[n] == '/' || (n == 1 && b[0] == '/'));
  free(a);
  free(b);
  return r;
}

int dsv3_remove_flat_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    char *p = dsv3_path_join(dir, de->d_name);
    unlink(p);
    free(p);
  }
  closedir(d);
  return rmdir(dir);
}

int64_t dsv3_free_disk(const char *path) {
  char *p = resolve(path);
  struct statvfs vs;
  for (;;) {
    if (statvfs(p, &vs) == 0) {
      free(p);
      return (int64_t)vs.f_bavail * (int64_t)vs.f_frsize;
    }
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) break;
    *slash = 0;
  }
  free(p);
  return -1;
}

static char *dirname_of(const char *path) {
  const char *s = strrchr(path, '/');
  if (!s) return dsv3_xstrdup(".");
  if (s == path) return dsv3_xstrdup("/");
  size_t n = (size_t)(s - path);
  char *d = dsv3_xmalloc(n + 1);
  memcpy(d, path, n);
  d[n] = 0;
  return d;
}

int dsv3_outfile_open(dsv3_outfile *f, const char *final_path) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  char *dir = dirname_of(final_path);
  const char *base = strrchr(final_path, '/');
  base = base ? base + 1 : final_path;
  size_t n = strlen(dir) + strlen(base) + 48;
  f->tmp_path = dsv3_xmalloc(n);
  snprintf(f->tmp_path, n, "%s/.%s.tmp.%ld", dir, base, (long)getpid());
  free(dir);
  f->final_path = dsv3_xstrdup(final_path);
  f->fd = open(f->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    dsv3_error_set("%s: cannot create temporary file %s: %s", final_path, f->tmp_path, strerror(errno));
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
    return -1;
  }
  return 0;
}

int dsv3_outfile_pwrite(dsv3_outfile *f, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n) {
    ssize_t w = pwrite(f->fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      dsv3_error_set("%s: write failed: %s", f->final_path, w < 0 ? strerror(errno) : "short write");
      return -1;
    }
    p += w;
    off += (uint64_t)w;
    n -= (size_t)w;
  }
  return 0;
}

static void fsync_dir_of(const char *path) {
  char *dir = dirname_of(path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(dir);
}

int dsv3_outfile_commit(dsv3_outfile *f) {
  if (f->fd < 0) {
    dsv3_error_set("%s: output file is not open", f->final_path ? f->final_path : "?");
    return -1;
  }
  if (fsync(f->fd) != 0) {
    dsv3_error_set("%s: fsync failed: %s", f->final_path, strerror(errno));
    dsv3_outfile_abort(f);
    return -1;
  }
  close(f->fd);
  f->fd = -1;
  if (rename(f->tmp_path, f->final_path) != 0) {
    dsv3_error_set("%s: rename failed: %s", f->final_path, strerror(errno));
    unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
    return -1;
  }
  fsync_dir_of(f->final_path);
  free(f->tmp_path);
  free(f->final_path);
  f->tmp_path = f->final_path = NULL;
  return 0;
}

void dsv3_outfile_abort(dsv3_outfile *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  if (f->tmp_path) unlink(f->tmp_path);
  free(f->tmp_path);
  free(f->final_path);
  f->tmp_path = f->final_path = NULL;
}

int dsv3_write_file_atomic(const char *path, const void *buf, size_t n) {
  dsv3_outfile f;
  if (dsv3_outfile_open(&f, path) != 0) return -1;
  if (dsv3_outfile_pwrite(&f, buf, n, 0) != 0) {
    dsv3_outfile_abort(&f);
    return -1;
  }
  return dsv3_outfile_commit(&f);
}

int dsv3_copy_file(const char *src, const char *dst) {
  int in = dsv3_open_regular(src, NULL);
  if (in < 0) return -1;
  dsv3_outfile f;
  if (dsv3_outfile_open(&f, dst) != 0) {
    close(in);
    return -1;
  }
  size_t cap = 1 << 20;
  char *buf = dsv3_xmalloc(cap);
  uint64_t off = 0;
  for (;;) {
    ssize_t r = read(in, buf, cap);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      dsv3_error_set("%s: read failed: %s", src, strerror(errno));
      goto fail;
    }
    if (r == 0) break;
    if (dsv3_outfile_pwrite(&f, buf, (size_t)r, off) != 0) goto fail;
    off += (uint64_t)r;
  }
  free(buf);
  close(in);
  return dsv3_outfile_commit(&f);
fail:
  free(buf);
  close(in);
  dsv3_outfile_abort(&f);
  return -1;
}

/* ---- threads ---- */
/* The CPUs this process may run on (taskset, cgroup cpusets), not all the machine has;
 * DSV3_THREADS overrides. */
int dsv3_num_cpus(void) {
  const char *env = getenv("DSV3_THREADS");
  if (env && atoi(env) > 0) return atoi(env);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

typedef struct {
  size_t n;
  atomic_size_t next;
  atomic_int err;
  dsv3_task_fn fn;
  void *ctx;
} pf_state;

typedef struct {
  pf_state *s;
  int id;
  char errmsg[2048];
  int failed;
} pf_worker;

static void *pf_run(void *arg) {
  pf_worker *w = arg;
  pf_state *s = w->s;
  for (;;) {
    if (atomic_load(&s->err)) break;
    size_t i = atomic_fetch_add(&s->next, 1);
    if (i >= s->n) break;
    int r = s->fn(s->ctx, i, w->id);
    if (r) {
      int zero = 0;
      if (atomic_compare_exchange_strong(&s->err, &zero, r)) {
        w->failed = 1;
        snprintf(w->errmsg, sizeof w->errmsg, "%s", dsv3_error());
      }
      break;
    }
  }
  return NULL;
}

/* One-shot threads: the fallback when the pool is busy (a parallel_for from another thread). */
static int pf_spawn(size_t n, int threads, dsv3_task_fn fn, void *ctx) {
  if (threads <= 0) threads = dsv3_num_cpus();
  if ((size_t)threads > n) threads = (int)n;
  pf_state s = {.n = n, .fn = fn, .ctx = ctx};
  atomic_init(&s.next, 0);
  atomic_init(&s.err, 0);
  if (threads <= 1) {
    for (size_t i = 0; i < n; i++) {
      int r = fn(ctx, i, 0);
      if (r) return r;
    }
    return 0;
  }
  pf_worker *ws = dsv3_xcalloc((size_t)threads, sizeof *ws);
  pthread_t *tids = dsv3_xcalloc((size_t)threads, sizeof *tids);
  int started = 1;
  ws[0].s = &s;
  for (int t = 1; t < threads; t++) {
    ws[t].s = &s;
    ws[t].id = t;
    /* Out of threads: the ones running (at least this one) share the work between them. */
    if (pthread_create(&tids[t], NULL, pf_run, &ws[t]) != 0) break;
    started++;
  }
  pf_run(&ws[0]);
  for (int t = 1; t < started; t++) pthread_join(tids[t], NULL);
  int r = atomic_load(&s.err);
  if (r)
    for (int t = 0; t < threads; t++)
      if (ws[t].failed) dsv3_error_set("%s", ws[t].errmsg); /* carry the message to the caller */
  free(ws);
  free(tids);
  return r;
}

/* A persistent pool: starting threads for every call cost more than the work of a small
 * linear layer (52 ms/token for dsv3-tiny on 16 cores).  Workers sleep on a condition variable
 * between jobs; the caller works too.  One job at a time; a concurrent caller falls back to
 * one-shot threads. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv, done;
  int nworkers;
  pf_worker *ws; /* [0] is the caller's */
  unsigned gen;
  pf_state *job;
  int want, active;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0, NULL, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER;

static void *pool_main(void *arg) {
  int id = (int)(intptr_t)arg;
  unsigned seen = 0;
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    while (pool.gen == seen) pthread_cond_wait(&pool.cv, &pool.mu);
    seen = pool.gen;
    pf_state *s = pool.job;
    int part = id <= pool.want;
    pthread_mutex_unlock(&pool.mu);
    if (!part) continue;
    pf_worker *w = &pool.ws[id];
    w->s = s;
    w->id = id;
    w->failed = 0;
    pf_run(w);
    pthread_mutex_lock(&pool.mu);
    if (--pool.active == 0) pthread_cond_signal(&pool.done);
    pthread_mutex_unlock(&pool.mu);
  }
  return NULL;
}

static void pool_init(void) {
  int n = dsv3_num_cpus() - 1;
  if (n > 255) n = 255;
  if (n < 0) n = 0;
  pool.ws = dsv3_xcalloc((size_t)n + 1, sizeof *pool.ws);
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  for (int i = 1; i <= n; i++) {
    pthread_t t;
    if (pthread_create(&t, &at, pool_main, (void *)(intptr_t)i) != 0) break;
    pool.nworkers = i;
  }
  pthread_attr_destroy(&at);
}

int dsv3_parallel_for(size_t n, int threads, dsv3_task_fn fn, void *ctx) {
  if (threads <= 0) threads = dsv3_num_cpus();
  if ((size_t)threads > n) threads = (int)n;
  if (threads <= 1) {
    for (size_t i = 0; i < n; i++) {
      int r = fn(ctx, i, 0);
      if (r) return r;
    }
    return 0;
  }
  pthread_once(&pool_once, pool_init);
  if (pool.nworkers == 0 || pthread_mutex_trylock(&pool_busy) != 0) return pf_spawn(n, threads, fn, ctx);
  pf_state s = {.n = n, .fn = fn, .ctx = ctx};
  atomic_init(&s.next, 0);
  atomic_init(&s.err, 0);
  int want = threads - 1 < pool.nworkers ? threads - 1 : pool.nworkers;
  pthread_mutex_lock(&pool.mu);
  pool.job = &s;
  pool.want = want;
  pool.active = want;
  pool.gen++;
  pthread_cond_broadcast(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  pf_worker *w0 = &pool.ws[0];
  memset(w0, 0, sizeof *w0);
  w0->s = &s;
  pf_run(w0);
  pthread_mutex_lock(&pool.mu);
  while (pool.active > 0) pthread_cond_wait(&pool.done, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
  int r = atomic_load(&s.err);
  if (r)
    for (int t = 0; t <= want; t++)
      if (pool.ws[t].failed) dsv3_error_set("%s", pool.ws[t].errmsg); /* carry the message to the caller */
  pthread_mutex_unlock(&pool_busy);
  return r;
}

/* ---- progress ---- */
struct dsv3_progress {
  char label[64];
  uint64_t total;
  atomic_uint_fast64_t done;
  double start;
  atomic_uint_fast64_t last_draw_ms;
  int show;
  pthread_mutex_t mu;
};

dsv3_progress *dsv3_progress_new(const char *label, uint64_t total_bytes, int quiet) {
  dsv3_progress *p = dsv3_xcalloc(1, sizeof *p);
  snprintf(p->label, sizeof p->label, "%s", label);
  p->total = total_bytes;
  p->start = dsv3_now();
  p->show = !quiet && isatty(2);
  pthread_mutex_init(&p->mu, NULL);
  return p;
}

static void progress_draw(dsv3_progress *p, int final) {
  uint64_t done = atomic_load(&p->done);
  double el = dsv3_now() - p->start, rate = el > 0 ? (double)done / el : 0;
  double frac = p->total ? (double)done / (double)p->total : 1.0;
  if (frac > 1) frac = 1;
  char a[32], b[32], r[32], bar[31];
  int fill = (int)(frac * 30);
  for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = 0;
  double eta = rate > 0 && p->total > done ? (double)(p->total - done) / rate : 0;
  fprintf(stderr, "\r%s [%s] %5.1f%% %s/%s %s/s %s %.0fs ", p->label, bar, frac * 100,
          dsv3_human_bytes(done, a, sizeof a), dsv3_human_bytes(p->total, b, sizeof b),
          dsv3_human_bytes((uint64_t)rate, r, sizeof r), final ? "in" : "ETA", final ? el : eta);
  if (final) fputc('\n', stderr);
  fflush(stderr);
}

void dsv3_progress_add(dsv3_progress *p, uint64_t bytes) {
  if (!p) return;
  atomic_fetch_add(&p->done, bytes);
  if (!p->show) return;
  uint64_t now = (uint64_t)(dsv3_now() * 1000);
  uint64_t last = atomic_load(&p->last_draw_ms);
  if (now - last < 200) return;
  if (!atomic_compare_exchange_strong(&p->last_draw_ms, &last, now)) return;
  pthread_mutex_lock(&p->mu);
  progress_draw(p, 0);
  pthread_mutex_unlock(&p->mu);
}

void dsv3_progress_done(dsv3_progress *p) {
  if (!p) return;
  if (p->show) progress_draw(p, 1);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

/* ---- misc ---- */
double dsv3_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *dsv3_human_bytes(uint64_t n, char *buf, size_t cap) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)n;
  int i = 0;
  while (v >= 1024 && i < 5) {
    v /= 1024;
    i++;
  }
  if (i == 0)
    snprintf(buf, cap, "%llu B", (unsigned long long)n);
  else
    snprintf(buf, cap, "%.2f %s", v, u[i]);
  return buf;
}

/* Digits with an optional fraction, then an optional K/M/G/T (powers of 1024), an optional
 * 'i' and an optional 'B': "512M", "4G", "1.5GiB", "1024".  Nothing else (no signs, spaces,
 * exponents, hex, inf or nan, which strtod alone would let through). */
int dsv3_parse_size(const char *s, uint64_t *out) {
  if (!s) return -1;
  const char *p = s;
  uint64_t ip = 0;
  double frac = 0, scale = 1;
  int digits = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++)
    if (dsv3_mul_u64(ip, 10, &ip) != 0 || dsv3_add_u64(ip, (uint64_t)(*p - '0'), &ip) != 0) return -1;
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++, digits++) frac += (*p - '0') * (scale /= 10);
  if (!digits) return -1;
  int sh = 0;
  switch (*p) {
  case 'k': case 'K': sh = 10; p++; break;
  case 'm': case 'M': sh = 20; p++; break;
  case 'g': case 'G': sh = 30; p++; break;
  case 't': case 'T': sh = 40; p++; break;
  default: break;
  }
  if (sh && (*p == 'i' || *p == 'I')) p++;
  if (*p == 'b' || *p == 'B') p++;
  if (*p) return -1;
  uint64_t r;
  if (dsv3_mul_u64(ip, 1ull << sh, &r) != 0 ||
      dsv3_add_u64(r, (uint64_t)(frac * (double)(1ull << sh)), &r) != 0)
    return -1;
  *out = r;
  return 0;
}

int dsv3_glob_match(const char *pattern, const char *s) { return fnmatch(pattern, s, 0) == 0; }

uint64_t dsv3_peak_rss(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (uint64_t)ru.ru_maxrss * 1024;
}
