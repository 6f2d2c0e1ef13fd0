/* plan.h - output plans shared by dsv3-cast and dsv3-convert: which bytes of which input
 * tensor land where in which output file, executed by many threads straight from the mmapped
 * inputs into the output files with pwrite, in bounded memory.
 *
 * An output file is a safetensors writer plus a list of "pieces".  A piece produces a range of
 * one output tensor from one input tensor: a plain byte copy (a contiguous range, or a
 * row-strided slice for dim-1 splits), an FP8 -> BF16/F16/F32 dequantisation of whole rows, or
 * a BF16/F16/F32 -> FP8 quantisation of whole 128-row blocks (which also writes the scale rows). */
#ifndef DSV3_PLAN_H
#define DSV3_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DSV3_PIECE_COPY = 0,    /* copy rows [r0, r0+nrows) of src columns [c0, c0+ncols) */
  DSV3_PIECE_DEQUANT = 1, /* FP8 src rows [r0, r0+nrows) with src_scale -> out dtype */
  DSV3_PIECE_QUANT = 2,   /* src rows -> FP8 into out tensor, scales into out_scale */
} dsv3_piece_kind;

typedef struct {
  dsv3_piece_kind kind;
  int out;                    /* output tensor index in the file's writer */
  int out_scale;              /* QUANT: index of the scale output tensor */
  const dsv3_tensor *src;     /* input tensor (2-D view: rows x cols of elem bytes) */
  const dsv3_tensor *src_scale; /* DEQUANT: its scale; QUANT: given scales or NULL */
  int64_t rows, cols;         /* src viewed as [rows, cols] elements */
  int64_t r0, nrows;          /* source rows */
  int64_t c0, ncols;          /* source columns (COPY slices); whole rows otherwise */
  uint64_t out_off;           /* byte offset within the output tensor */
  int64_t out_cols, out_c0;   /* out_cols > 0: the output rows are out_cols wide and this piece
                                 fills columns [out_c0, out_c0 + ncols) of each (reshards that
                                 join column slices); out_off is then the offset of its first row */
  dsv3_dtype out_dt;          /* DEQUANT: BF16, F16 or F32 */
  int ue8m0;                  /* QUANT: power-of-two scales */
  const struct dsv3_st *src_file; /* for madvise after use */
} dsv3_piece;

typedef struct {
  char *path;       /* final path */
  dsv3_stw *w;
  dsv3_piece *p;
  size_t np, cap;
  uint64_t in_bytes; /* input bytes these pieces read (progress) */
  /* Hashing in the writing pass (manifest): set `hash` before dsv3_plan_run; afterwards
   * sha256 is the file's SHA-256 and xxh3[i] the XXH3-128 of writer tensor i.  Pieces are run
   * in file order and hashed in that order as they are written; plans whose pieces do not tile
   * the file contiguously (column joins, FP8 quantisation) are hashed by reading the file back
   * once after the commit, and say so in hashed_by_reading. */
  int hash, hashed_by_reading;
  uint8_t sha256[32];
  uint8_t (*xxh3)[16];
} dsv3_plan_file;

/* Append pieces that cover src rows [r0, r0+nrows) x cols [c0, c0+ncols), split in chunks of
 * about `chunk` bytes (whole rows; multiples of 128 rows for FP8 kinds), writing into output
 * tensor `out` starting at byte `out_off`. */
void dsv3_plan_add(dsv3_plan_file *f, dsv3_piece proto, int64_t r0, int64_t nrows, int64_t c0,
                   int64_t ncols, uint64_t out_off, uint64_t chunk);
/* Execute: open the writer (temp file), run every piece on `threads` threads, commit.
 * Progress is added to `pg` (may be NULL).  Drops consumed input pages when `dontneed`. */
struct dsv3_progress;
int dsv3_plan_run(dsv3_plan_file *f, int threads, struct dsv3_progress *pg, int dontneed);
/* Run n files, `window` at a time, their pieces interleaved so that the files' ordered hash
 * chains advance in parallel; each group is committed (fsync, rename) in parallel. */
int dsv3_plan_run_many(dsv3_plan_file **fs, size_t n, size_t window, int threads, struct dsv3_progress *pg,
                       int dontneed);
/* All of a tool's files: a window of several at a time (one per thread, at most 16), calling
 * after(ctx) after each window.  Under DSV3_TEST_STOP_AFTER_FILES=N (tests of --resume) files
 * run one at a time and the process exits with status 3 after N of them, as a kill would. */
int dsv3_plan_run_all(dsv3_plan_file **fs, size_t n, int threads, struct dsv3_progress *pg, int dontneed,
                      void (*after)(void *), void *ctx, const char *prog);
void dsv3_plan_file_free(dsv3_plan_file *f);

/* Record a run (or resumed) file in a manifest under `name` (its hashes, its tensors). */
struct dsv3_manifest;
int dsv3_plan_manifest_add(dsv3_plan_file *f, struct dsv3_manifest *m, const char *name);
/* SHA-256 of the input files, in parallel, as the manifest's "inputs". */
int dsv3_manifest_hash_inputs(struct dsv3_manifest *m, char **paths, const char **names, size_t n, int threads);

/* SHA-256 of every input file, computed by a background thread while the outputs are written. */
struct dsv3_ckpt;
typedef struct dsv3_input_hasher dsv3_input_hasher;
dsv3_input_hasher *dsv3_input_hasher_start(const struct dsv3_ckpt *in);
void dsv3_input_hasher_cancel(dsv3_input_hasher *h);
/* Write OUT_DIR/dsv3-manifest.json for the n files of a run (hashes made while writing;
 * resumed files are read back), with the input hashes of `ih` (consumed; NULL: hash now). */
int dsv3_plan_write_manifest(dsv3_plan_file *pf, size_t n, const struct dsv3_ckpt *in, dsv3_input_hasher *ih,
                             const char *tool, int argc, char **argv, const char *out_dir, int threads);

/* For --resume: 1 if `path` exists, has the planned size and begins with the planned header. */
int dsv3_plan_output_complete(const dsv3_plan_file *f);

#ifdef __cplusplus
}
#endif
#endif
