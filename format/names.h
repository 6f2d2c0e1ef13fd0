/* names.h - tensor names: Hugging Face <-> runtime (the official convert.py mapping).
 *
 * convert.py: strip "model.", self_attn->attn, mlp->ffn, weight_scale_inv->scale,
 * e_score_correction_bias->bias, then map the second-to-last component:
 *   embed_tokens->embed (dim 0)   input_layernorm->attn_norm   post_attention_layernorm->ffn_norm
 *   q_proj->wq (0)  q_a_proj->wq_a  q_a_layernorm->q_norm  q_b_proj->wq_b (0)
 *   kv_a_proj_with_mqa->wkv_a  kv_a_layernorm->kv_norm  kv_b_proj->wkv_b (0)  o_proj->wo (1)
 *   gate->gate  gate_proj->w1 (0)  down_proj->w2 (1)  up_proj->w3 (0)  norm->norm
 *   lm_head->head (0)
 * Routed experts ("experts.N." but not "shared_experts") are distributed whole. */
#ifndef DSV3_NAMES_H
#define DSV3_NAMES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DSV3_SPLIT_NONE = -1, /* replicated */
  DSV3_SPLIT_DIM0 = 0,
  DSV3_SPLIT_DIM1 = 1,
  DSV3_SPLIT_EXPERT = 2 /* routed expert: whole tensor on the rank owning the expert */
} dsv3_split;

/* HF name -> runtime name.  Returns 0 and writes `out`; -1 (error set) if the name's key is
 * not in the mapping (convert.py asserts).  *split gets how convert.py splits it. */
int dsv3_name_hf_to_rt(const char *hf, char *out, size_t cap, dsv3_split *split);
/* Runtime name -> HF name (inverse mapping). */
int dsv3_name_rt_to_hf(const char *rt, char *out, size_t cap);
/* Split rule for a runtime name. */
dsv3_split dsv3_name_rt_split(const char *rt);

typedef struct {
  int64_t layer;    /* -1 if not in a layer */
  int64_t expert;   /* routed expert index or -1 */
  int is_shared_expert;
  int is_scale;     /* *_scale_inv (HF) or *.scale (runtime) */
  int is_fp8_weight_kind; /* a linear weight stored FP8 in the official release */
  const char *leaf; /* pointer into the name: "q_a_proj.weight", ... (last two components) */
} dsv3_name_info;
/* Parse either naming scheme. */
void dsv3_name_parse(const char *name, dsv3_name_info *info);

/* For an HF weight name "X.weight", write "X.weight_scale_inv". */
int dsv3_name_scale_of(const char *weight, char *out, size_t cap);
/* 1 if an HF name is a linear weight that the official release stores as FP8 with a scale:
 * attention q_a/q_b/q/kv_a/kv_b/o projections, MLP and expert gate/up/down projections
 * (not the router `mlp.gate.weight`, not eh_proj, shared_head, embeddings, norms, lm_head). */
int dsv3_name_is_fp8_kind(const char *hf_name);

#ifdef __cplusplus
}
#endif
#endif
