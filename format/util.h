/* util.h - errors, threads, progress, output files: the plumbing every dsv3 tool shares.
 *
 * Error convention: a libdsv3 function that can fail returns 0 on success and -1 on
 * failure, after recording ONE line (no trailing newline) with dsv3_error_set().  The
 * line names the file and, where there is one, the tensor: "FILE: tensor NAME: what".
 * Tools print it as "dsv3-TOOL: error: LINE" and exit 1.  The message is thread-local. */
#ifndef DSV3_UTIL_H
#define DSV3_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSV3_VERSION "0.1.0"

#if defined(__GNUC__)
#define DSV3_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DSV3_PRINTF(a, b)
#endif

/* ---- errors ---- */
void dsv3_error_set(const char *fmt, ...) DSV3_PRINTF(1, 2);
/* Prefix the current message: "PREFIX: old message" (used to add a file name on the way up). */
void dsv3_error_prefix(const char *fmt, ...) DSV3_PRINTF(1, 2);
const char *dsv3_error(void);
/* Print "PROG: error: MSG" to stderr. */
void dsv3_error_print(const char *prog);
/* Print "PROG: error: <formatted>" and exit(code). */
void dsv3_die(const char *prog, int code, const char *fmt, ...) DSV3_PRINTF(3, 4) __attribute__((noreturn));
/* getopt_long returned '?' (run with opterr = 0): one line naming the argument, exit 2 */
void dsv3_die_badopt(const char *prog, int argc, char *const argv[]) __attribute__((noreturn));

/* ---- memory (abort with a message on OOM: allocation failure is not an input error) ---- */
void *dsv3_xmalloc(size_t n);
void *dsv3_xcalloc(size_t n, size_t sz);
void *dsv3_xrealloc(void *p, size_t n);
char *dsv3_xstrdup(const char *s);
/* Checked arithmetic: return -1 on overflow. */
int dsv3_mul_u64(uint64_t a, uint64_t b, uint64_t *out);
int dsv3_add_u64(uint64_t a, uint64_t b, uint64_t *out);

/* ---- files ---- */
/* Read a whole (small) file into a NUL-terminated buffer; *len excludes the NUL. */
/* Open PATH read-only if it is a regular file: a FIFO or device is refused without blocking
 * (open() on a FIFO waits for a writer); st may be NULL.  -1 with dsv3_error set otherwise. */
struct stat;
int dsv3_open_regular(const char *path, struct stat *st);
int dsv3_read_file(const char *path, char **out, size_t *len, size_t max_len);
/* Join a directory and a name into a malloc'd path. */
char *dsv3_path_join(const char *dir, const char *name);
int dsv3_is_dir(const char *path);
int dsv3_file_exists(const char *path);
/* mkdir -p */
int dsv3_mkdirs(const char *path);
/* 1 if `inner` is `outer` or lies inside it (after realpath of the existing prefix). */
int dsv3_path_inside(const char *inner, const char *outer);
/* Remove the regular files of a directory (no recursion) and the directory itself. */
int dsv3_remove_flat_dir(const char *dir);
/* Free bytes on the file system holding `path` (or its nearest existing parent); -1 unknown. */
int64_t dsv3_free_disk(const char *path);

/* Output file written under "DIR/.NAME.tmp.PID" and renamed to its final name only when
 * complete (fsync first).  A dsv3_outfile that is closed without commit is unlinked. */
typedef struct dsv3_outfile {
  char *final_path;
  char *tmp_path;
  int fd;
} dsv3_outfile;
int dsv3_outfile_open(dsv3_outfile *f, const char *final_path);
int dsv3_outfile_pwrite(dsv3_outfile *f, const void *buf, size_t n, uint64_t off);
int dsv3_outfile_commit(dsv3_outfile *f);  /* fsync, rename, fsync dir */
void dsv3_outfile_abort(dsv3_outfile *f);  /* close + unlink temp; safe to call twice */
/* Write a whole small file atomically (temp + rename). */
int dsv3_write_file_atomic(const char *path, const void *buf, size_t n);
/* Copy a file atomically. */
int dsv3_copy_file(const char *src, const char *dst);

/* ---- threads ---- */
int dsv3_num_cpus(void);
/* Run fn(ctx, i) for i in [0, n) on `threads` threads (0: all cpus), dynamic scheduling.
 * Returns the first non-zero return value of fn (in index order of failure seen), else 0. */
typedef int (*dsv3_task_fn)(void *ctx, size_t i, int thread);
int dsv3_parallel_for(size_t n, int threads, dsv3_task_fn fn, void *ctx);

/* ---- progress bar on stderr: shown only when stderr is a terminal and not quiet ---- */
typedef struct dsv3_progress dsv3_progress;
dsv3_progress *dsv3_progress_new(const char *label, uint64_t total_bytes, int quiet);
void dsv3_progress_add(dsv3_progress *p, uint64_t bytes); /* thread-safe */
void dsv3_progress_done(dsv3_progress *p);               /* prints the final line, frees */

/* ---- misc ---- */
double dsv3_now(void); /* monotonic seconds */
/* "1.23 GiB" style into buf */
const char *dsv3_human_bytes(uint64_t n, char *buf, size_t cap);
/* Parse "512M", "4G", "1024" into bytes. -1 on error. */
int dsv3_parse_size(const char *s, uint64_t *out);
/* fnmatch-style glob ('*', '?', '[...]'); 1 if match. */
int dsv3_glob_match(const char *pattern, const char *s);
/* Peak RSS of this process in bytes (from getrusage). */
uint64_t dsv3_peak_rss(void);

#ifdef __cplusplus
}
#endif
#endif
