/* safetensors.h - validated, zero-copy safetensors reader and a streaming writer.
 *
 * Reader: the file is mmapped read-only; the JSON header is parsed with cJSON and checked
 * completely before any tensor is exposed: header length <= 100 MB (as the reference
 * implementation), every dtype known, shape product x element size == byte range with no
 * overflow, offsets in range, no overlaps, data section exactly covered, __metadata__ a
 * string->string map, no duplicate names.  On failure, the error line names the file
 * and the tensor.
 *
 * Writer: the caller declares tensors (name, dtype, shape), the writer lays out the header
 * exactly as the reference `safetensors` writer (Python safetensors >= 0.4: tensors ordered
 * by dtype alignment descending, then name; JSON without spaces; __metadata__ first; header
 * padded with spaces to a multiple of 8), then data is written at the returned offsets with
 * pwrite from any number of threads; the file appears under its final name only at commit. */
#ifndef DSV3_SAFETENSORS_H
#define DSV3_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV3_MAX_DIMS 8
#define DSV3_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct {
  const char *name;
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[DSV3_MAX_DIMS];
  uint64_t numel;
  uint64_t begin;  /* offset within the data section */
  uint64_t nbytes; /* end - begin */
  const void *data;/* pointer into the mapping (NULL for header-only parses) */
} dsv3_tensor;

typedef struct dsv3_st dsv3_st;

/* Open and validate a file.  mmap'd read-only; never modified. */
int dsv3_st_open(const char *path, dsv3_st **out);
/* Validate an in-memory file image (not copied; must outlive the handle).  `label` names it
 * in errors.  This is the fuzz entry point. */
int dsv3_st_open_mem(const void *buf, size_t len, const char *label, dsv3_st **out);
/* Parse only the first bytes of a file (8-byte length + header): tensor data pointers are
 * NULL. `file_size` is the full size used for range checks. */
int dsv3_st_open_header(const void *buf, size_t len, uint64_t file_size, const char *label,
                        dsv3_st **out);
void dsv3_st_close(dsv3_st *st);

const char *dsv3_st_path(const dsv3_st *st);
uint64_t dsv3_st_file_size(const dsv3_st *st);
uint64_t dsv3_st_data_offset(const dsv3_st *st); /* 8 + header length */
size_t dsv3_st_count(const dsv3_st *st);
/* Tensors in file order (ascending offset). */
const dsv3_tensor *dsv3_st_tensor(const dsv3_st *st, size_t i);
const dsv3_tensor *dsv3_st_find(const dsv3_st *st, const char *name);
size_t dsv3_st_meta_count(const dsv3_st *st);
void dsv3_st_meta(const dsv3_st *st, size_t i, const char **key, const char **value);
const char *dsv3_st_meta_get(const dsv3_st *st, const char *key);
/* The whole file image (mapping or memory buffer); NULL for header-only handles. */
const void *dsv3_st_image(const dsv3_st *st, uint64_t *size);
/* Advise the kernel about a range of the mapping (MADV_SEQUENTIAL/WILLNEED/DONTNEED). */
void dsv3_st_advise(const dsv3_st *st, const dsv3_tensor *t, int dontneed);

/* ---- writer ---- */
typedef struct dsv3_stw dsv3_stw;
dsv3_stw *dsv3_stw_new(void);
/* Declare a tensor; returns its index (>= 0) or -1 (duplicate name, bad shape). */
int dsv3_stw_add(dsv3_stw *w, const char *name, dsv3_dtype dt, int ndim, const int64_t *shape);
int dsv3_stw_set_meta(dsv3_stw *w, const char *key, const char *value);
/* Fix the layout.  After this, offsets are known and no tensor can be added. */
int dsv3_stw_layout(dsv3_stw *w);
size_t dsv3_stw_count(const dsv3_stw *w);
/* Absolute file offset of tensor `idx` (declaration index) and its byte size. */
uint64_t dsv3_stw_offset(const dsv3_stw *w, int idx);
uint64_t dsv3_stw_nbytes(const dsv3_stw *w, int idx);
int dsv3_stw_find(const dsv3_stw *w, const char *name);
uint64_t dsv3_stw_file_size(const dsv3_stw *w);
/* The header bytes (8-byte length + padded JSON) once laid out. */
const void *dsv3_stw_header(const dsv3_stw *w, size_t *len);
/* Create "DIR/.NAME.tmp.PID", write the header, size the file. */
int dsv3_stw_open(dsv3_stw *w, const char *final_path);
/* Thread-safe: write `n` bytes at byte offset `off` within tensor `idx`. */
int dsv3_stw_pwrite(dsv3_stw *w, int idx, uint64_t off, const void *buf, size_t n);
/* fsync, rename to the final name. */
int dsv3_stw_commit(dsv3_stw *w);
/* Frees; if opened and not committed, the temp file is removed. */
void dsv3_stw_free(dsv3_stw *w);

/* Convenience: write a whole file from in-memory tensors (tests, small outputs). */
typedef struct {
  const char *name;
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[DSV3_MAX_DIMS];
  const void *data;
} dsv3_tensor_src;
int dsv3_st_write_file(const char *path, const dsv3_tensor_src *ts, size_t n,
                       const char *const *meta_kv, size_t n_meta);

#ifdef __cplusplus
}
#endif
#endif
