/* expect.h - the tensors a DeepSeek-V3 checkpoint in the Hugging Face layout holds, derived
 * from its config.json (what modeling_deepseek.py / the official release contain).  Used by
 * `dsv3-inspect --check` and by the random checkpoint generator (bench/gen), so both agree;
 * the list is validated against the real names of models/dsv3-tiny by the tests. */
#ifndef DSV3_INSPECT_EXPECT_H
#define DSV3_INSPECT_EXPECT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"

typedef enum {
  DSV3I_K_EMBED = 0, /* embed_tokens (also in MTP layers) */
  DSV3I_K_NORM,      /* RMSNorm weights */
  DSV3I_K_LINEAR,    /* attention / MLP / expert projections: FP8 with a scale when quantised */
  DSV3I_K_ROUTER,    /* mlp.gate.weight */
  DSV3I_K_BIAS,      /* mlp.gate.e_score_correction_bias (F32) */
  DSV3I_K_HEAD,      /* lm_head, shared_head.head */
  DSV3I_K_EH_PROJ,   /* MTP eh_proj */
} dsv3i_kind;

typedef struct {
  char name[160];
  dsv3i_kind kind;
  dsv3_dtype dtype; /* as in the official release for this config */
  dsv3_dtype alt;   /* also accepted (torch_dtype after a cast), or DSV3_DT_INVALID */
  int ndim;
  int64_t shape[2];
  int fp8;        /* quantised: a "<name>_scale_inv" F32 [ceil(M/B0), ceil(N/B1)] goes with it */
  int64_t layer;  /* -1: not in a layer */
  int64_t expert; /* routed expert or -1 */
  int found;      /* for the checker */
} dsv3i_expect;

typedef struct {
  dsv3i_expect *e;
  size_t n, cap;
} dsv3i_expects;

/* Order: embed, main layers, final norm, lm_head, then the MTP layers (as the official shards). */
void dsv3i_expect_build(const dsv3_config *c, dsv3i_expects *x);
void dsv3i_expects_free(dsv3i_expects *x);
/* Float dtype named by torch_dtype ("bfloat16" -> BF16, "float16", "float32"); BF16 default. */
dsv3_dtype dsv3i_torch_dtype(const dsv3_config *c);

#endif
