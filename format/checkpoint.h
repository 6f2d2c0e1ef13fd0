/* checkpoint.h - a checkpoint: a directory in the Hugging Face layout
 * (model.safetensors.index.json + shards), the runtime layout (model{r}-mp{n}.safetensors),
 * a single .safetensors file, a directory with safetensors files and no index, or any of
 * these inside a .tar / .tar.zst / .tar.gz archive (read in memory, see tarball.h).
 * Opening validates every file's header; tensor data stays in the mappings. */
#ifndef DSV3_CHECKPOINT_H
#define DSV3_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DSV3_LAYOUT_HF = 1,      /* HF names, index.json */
  DSV3_LAYOUT_RUNTIME = 2, /* model{r}-mp{n}.safetensors, runtime names */
  DSV3_LAYOUT_SINGLE = 3,  /* one file (or a directory of shards without index) */
} dsv3_layout;

typedef struct dsv3_ckpt dsv3_ckpt;

/* Open PATH (directory or file).  Reads config.json when present (or none). */
int dsv3_ckpt_open(const char *path, dsv3_ckpt **out);
void dsv3_ckpt_close(dsv3_ckpt *ck);

const char *dsv3_ckpt_path(const dsv3_ckpt *ck); /* the directory (or file) opened */
dsv3_layout dsv3_ckpt_layout(const dsv3_ckpt *ck);
const char *dsv3_ckpt_layout_name(dsv3_layout l);
/* NULL when no config.json was found. */
const dsv3_config *dsv3_ckpt_config(const dsv3_ckpt *ck);
/* Runtime layout: model-parallel degree (1 otherwise). */
int dsv3_ckpt_mp(const dsv3_ckpt *ck);

size_t dsv3_ckpt_nfiles(const dsv3_ckpt *ck);
dsv3_st *dsv3_ckpt_file(const dsv3_ckpt *ck, size_t i);
const char *dsv3_ckpt_file_name(const dsv3_ckpt *ck, size_t i); /* basename */
/* Runtime layout: the rank of file i (-1 otherwise). */
int dsv3_ckpt_file_rank(const dsv3_ckpt *ck, size_t i);

/* All tensors, file by file in file order.  For the runtime layout with mp > 1, names repeat
 * across ranks. */
size_t dsv3_ckpt_count(const dsv3_ckpt *ck);
const dsv3_tensor *dsv3_ckpt_tensor(const dsv3_ckpt *ck, size_t i, size_t *file_index);
/* Find by name (HF layout, single: unique; runtime: the copy on rank `rank`, -1 = first). */
const dsv3_tensor *dsv3_ckpt_find(const dsv3_ckpt *ck, const char *name, int rank,
                                  size_t *file_index);
uint64_t dsv3_ckpt_total_bytes(const dsv3_ckpt *ck); /* sum of tensor bytes */

/* Index checks (HF layout): returns the number of problems found, each passed to `cb`
 * (may be NULL) as one line.  Checks: every weight_map entry names an existing file that
 * holds that tensor; every tensor of every shard is in the weight_map; total_size equals
 * the sum of tensor bytes.  A missing shard already fails dsv3_ckpt_open. */
typedef void (*dsv3_problem_fn)(void *ctx, const char *line);
int dsv3_ckpt_check_index(const dsv3_ckpt *ck, dsv3_problem_fn cb, void *ctx);
/* The tools' verdict on the index: 0 when every weight_map entry and every shard tensor agree,
 * else -1 with the first problem in dsv3_error() ("DIR/model.safetensors.index.json: tensor
 * T: ...", and how many more).  A wrong metadata.total_size alone is no error: each such line
 * goes to `warn` (may be NULL). */
int dsv3_ckpt_require_index(const dsv3_ckpt *ck, const char *dir, dsv3_problem_fn warn, void *ctx);
/* The index's metadata.total_size, or -1 if absent. */
int64_t dsv3_ckpt_index_total_size(const dsv3_ckpt *ck);

/* 1 when the tensors live in memory (an archive) rather than in mapped files: their pages
 * must not be dropped with MADV_DONTNEED (that would zero them). */
int dsv3_ckpt_in_memory(const dsv3_ckpt *ck);

/* Files beside the weights (config.json, tokenizer files, README, ...): the regular,
 * non-hidden, non-.safetensors files of the directory or archive.  Names are malloc'd. */
size_t dsv3_ckpt_extra_names(const dsv3_ckpt *ck, char ***names);
int dsv3_ckpt_read_extra(const dsv3_ckpt *ck, const char *name, char **buf, size_t *n);
int dsv3_ckpt_copy_extra(const dsv3_ckpt *ck, const char *name, const char *dst);

#ifdef __cplusplus
}
#endif
#endif
