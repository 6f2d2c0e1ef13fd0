/* tarball.h - checkpoints inside .tar, .tar.zst, .tar.gz (libarchive): read without unpacking
 * to disk (members are held in memory, so the archive must fit in RAM), and pack a finished
 * output directory into a zstd-compressed tar with multi-threaded compression.
 * Hostile archives: members with "..", absolute paths, links or devices are rejected with
 * the member's name; a corrupted member is reported by name. */
#ifndef DSV3_TARBALL_H
#define DSV3_TARBALL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char *name; /* path inside the archive, common top directory stripped */
  uint8_t *data;
  size_t size;
} dsv3_member;

typedef struct {
  char *path;
  dsv3_member *m;
  size_t n;
} dsv3_archive;

/* 1 if PATH names an archive by its suffix (.tar, .tar.zst, .tzst, .tar.gz, .tgz, .tar.xz). */
int dsv3_archive_is(const char *path);
int dsv3_archive_read(const char *path, dsv3_archive *a);
void dsv3_archive_free(dsv3_archive *a);
const dsv3_member *dsv3_archive_find(const dsv3_archive *a, const char *name);

/* Pack files `names` of directory `dir` into out_path (format from its suffix; .tar.zst by
 * default), written to a temporary name and renamed when complete. zstd uses `threads`. */
int dsv3_archive_pack(const char *dir, const char *const *names, size_t n, const char *out_path, int threads,
                      int level);

/* Pack every regular file of `dir` (sorted by name; `only` may restrict to names for which it
 * returns 1) into out_path, then, when remove_dir, delete those files and the directory. */
int dsv3_pack_dir(const char *dir, const char *out_path, int threads, int (*only)(const char *name, void *ctx),
                  void *ctx, int remove_dir);

#ifdef __cplusplus
}
#endif
#endif
