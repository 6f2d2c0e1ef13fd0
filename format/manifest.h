/* manifest.h - dsv3-manifest.json: what dsv3-cast and dsv3-convert wrote, so corruption is
 * impossible to miss.  Per output file its size and SHA-256 (OpenSSL); per tensor its dtype,
 * shape and XXH3-128; the tool, version and arguments; the SHA-256 of each input file.
 * Output hashes are computed in the writing pass (format/plan.c), not by reading back. */
#ifndef DSV3_MANIFEST_H
#define DSV3_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV3_MANIFEST_NAME "dsv3-manifest.json"

typedef struct {
  char *name;
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[8];
  uint8_t xxh3[16]; /* XXH3-128, canonical (big-endian) bytes */
} dsv3_manifest_tensor;

typedef struct {
  char *name; /* file name relative to the checkpoint directory */
  uint64_t size;
  uint8_t sha256[32];
  size_t ntensors;
  dsv3_manifest_tensor *t;
} dsv3_manifest_file;

typedef struct dsv3_manifest {
  char *tool, *version, *args;
  size_t nfiles, ninputs;
  dsv3_manifest_file *files;
  dsv3_manifest_file *inputs; /* name, size, sha256 only */
} dsv3_manifest;

void dsv3_manifest_free(dsv3_manifest *m);
int dsv3_manifest_write(const dsv3_manifest *m, const char *path); /* atomic */
int dsv3_manifest_load(const char *path, dsv3_manifest *m);
/* Add a file entry (copies strings); returns it. */
dsv3_manifest_file *dsv3_manifest_add_file(dsv3_manifest *m, const char *name, int input);

/* Hex helpers */
void dsv3_hex(const uint8_t *b, size_t n, char *out); /* out: 2n+1 */
int dsv3_unhex(const char *s, uint8_t *b, size_t n);

/* SHA-256 of a whole file (streamed; progress may be NULL) */
struct dsv3_progress;
int dsv3_sha256_file(const char *path, uint8_t out[32], struct dsv3_progress *pg);
/* XXH3-128 of a buffer in canonical bytes */
void dsv3_xxh3_128(const void *p, size_t n, uint8_t out[16]);

#ifdef __cplusplus
}
#endif
#endif
