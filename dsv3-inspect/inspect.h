/* inspect.h - the modules of dsv3-inspect: one per mode, plus shared helpers.
 *
 * Subcommands: main.c dispatches `dsv3-inspect NAME ...` to a function
 * `int dsv3i_cmd_NAME(int argc, char **argv)` (argv[0] == "NAME").  `verify` is declared
 * weak here: a module defining dsv3i_cmd_verify (issue 5) is picked up by the CMake glob and
 * becomes available without touching main.c. */
#ifndef DSV3_INSPECT_H
#define DSV3_INSPECT_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "names.h"
#include "util.h"

#define DSV3I_PROG "dsv3-inspect"

typedef struct {
  int json, quiet, threads, ignore_mtp;
  const char *filter;
  double tolerance; /* --diff: relative error tolerated */
} dsv3i_opts;

/* modes: 0 ok, 1 problems found / input error (message printed), 2 usage */
int dsv3i_summary(dsv3_ckpt *ck, const dsv3i_opts *o);
int dsv3i_tensors(dsv3_ckpt *ck, const dsv3i_opts *o);
int dsv3i_stats(dsv3_ckpt *ck, const dsv3i_opts *o);
int dsv3i_check(dsv3_ckpt *ck, const dsv3i_opts *o);
int dsv3i_diff(dsv3_ckpt *a, dsv3_ckpt *b, const dsv3i_opts *o);

/* Subcommands provided by other modules (weak: NULL when not linked in). */
int dsv3i_cmd_verify(int argc, char **argv) __attribute__((weak));

/* ---- helpers (common.c) ---- */
void dsv3i_print_json(cJSON *j); /* prints and deletes */
void dsv3i_shape_str(const dsv3_tensor *t, char *buf, size_t cap);
cJSON *dsv3i_shape_json(const dsv3_tensor *t);
/* The FP8 scale of weight `name` (HF "_scale_inv" or runtime ".scale") on `rank`, or NULL. */
const dsv3_tensor *dsv3i_scale_of(const dsv3_ckpt *ck, const char *name, int rank, size_t *file_index);
/* 1 if `s` is usable as the block scale of FP8 weight `t`: F32 [ceil(M/128), ceil(N/128)]. */
int dsv3i_scale_fits(const dsv3_tensor *t, const dsv3_tensor *s);
/* 1 if the name is a scale (either naming scheme). */
int dsv3i_is_scale_name(const char *name);
/* HF name of a tensor of `ck` (runtime names mapped back; others unchanged). */
void dsv3i_hf_name(const dsv3_ckpt *ck, const char *name, char *out, size_t cap);
/* 1 if the tensor lies in an MTP layer (layer >= num_hidden_layers); 0 without config. */
int dsv3i_is_mtp(const dsv3_config *c, const char *name);
int dsv3i_parse_threads(const char *s);

/* ---- numbers (values.c) ---- */
/* Running statistics; merged with Chan's parallel formula so any chunking gives (nearly) the
 * same result and the thread count never changes it (chunks are merged in order). */
typedef struct {
  uint64_t n, nan, inf; /* n counts finite values */
  double mean, m2, min, max, absmax;
} dsv3i_acc;
void dsv3i_acc_merge(dsv3i_acc *a, const dsv3i_acc *b);
/* Statistics of a chunk of a tensor.  FP8 weights with a fitting scale: rows [r0, r0+nr)
 * (r0 multiple of 128), dequantised in float32 exactly as dsv3_fp8_dequant_rows; anything
 * else: elements [r0, r0 + nr) as their own values.  `scratch` is per thread (>= 256 KiB of
 * uint32 plus 64K floats: use dsv3i_scratch_new). */
void dsv3i_stats_chunk(const dsv3_tensor *t, const dsv3_tensor *scale, int64_t r0, int64_t nr,
                       dsv3i_acc *acc, void *scratch);
void *dsv3i_scratch_new(void);

/* A logical (whole, HF-named) tensor assembled from the parts that hold it: one part in the
 * HF and single layouts; in the runtime layout with mp > 1 the rank slices of a split tensor
 * (rows or columns), the single owner of a routed expert, or rank 0's copy of a replicated
 * tensor. */
typedef struct {
  const dsv3_tensor *t, *scale; /* scale: NULL unless FP8 with a fitting scale */
  int64_t r0, c0, rows, cols;   /* where the part sits in the logical [rows, cols] matrix */
} dsv3i_part;
typedef struct {
  char *name; /* HF name */
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[DSV3_MAX_DIMS];
  int64_t rows, cols; /* shape viewed as [shape0, rest] */
  uint64_t nbytes;    /* stored bytes of all parts (no scales) */
  int np;
  dsv3i_part *p;
  char *problem; /* non-NULL: cannot be read as a whole (inconsistent slices, unusable scale) */
} dsv3i_ltensor;
typedef struct {
  dsv3i_ltensor *t;
  size_t n; /* sorted by name */
} dsv3i_lview;
void dsv3i_lview_build(const dsv3_ckpt *ck, dsv3i_lview *v);
void dsv3i_lview_free(dsv3i_lview *v);
/* Rows [r0, r0+nr) of a logical tensor as float32 (FP8 dequantised) into out (nr x cols);
 * tmp: at least nr x cols floats. */
void dsv3i_ltensor_rows(const dsv3i_ltensor *lt, int64_t r0, int64_t nr, float *out, float *tmp);

#endif
