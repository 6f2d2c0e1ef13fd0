/* config.h - DeepSeek-V3 model configuration.
 *
 * Reads the Hugging Face `config.json` (DeepseekV3ForCausalLM) and also the official demo's
 * `config_671B.json` format (ModelArgs field names: dim, inter_dim, n_layers, ...).  Absent
 * fields take the Hugging Face defaults for deepseek_v3.  Field names follow the HF config. */
#ifndef DSV3_CONFIG_H
#define DSV3_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char type[16];                 /* "yarn", "linear", "" (none) */
  double factor;
  int64_t original_max_position_embeddings;
  double beta_fast, beta_slow;
  double mscale, mscale_all_dim;
} dsv3_rope_scaling;

typedef struct {
  int present;                   /* quantization_config present */
  char quant_method[16];         /* "fp8" */
  char fmt[16];                  /* "e4m3" */
  char activation_scheme[16];    /* "dynamic" */
  char scale_fmt[16];            /* "" or "ue8m0" (DeepSeek-V3.1) */
  int64_t weight_block_size[2];  /* 128, 128 */
} dsv3_quant_config;

typedef struct {
  int from_demo_format;          /* parsed from the official demo's ModelArgs JSON */
  char model_type[32];
  char torch_dtype[16];
  int64_t vocab_size;
  int64_t hidden_size;           /* dim */
  int64_t intermediate_size;     /* inter_dim (dense MLP) */
  int64_t moe_intermediate_size; /* moe_inter_dim */
  int64_t num_hidden_layers;     /* n_layers (main layers, excluding MTP) */
  int64_t num_nextn_predict_layers; /* MTP layers: model.layers.{num_hidden_layers + k} */
  int64_t num_attention_heads;
  int64_t num_key_value_heads;
  int64_t n_shared_experts;
  int64_t n_routed_experts;
  double routed_scaling_factor;  /* route_scale */
  int64_t kv_lora_rank;
  int64_t q_lora_rank;           /* 0: no q LoRA (wq) */
  int64_t qk_rope_head_dim;
  int64_t qk_nope_head_dim;
  int64_t v_head_dim;
  char topk_method[24];          /* "noaux_tc", "greedy", "group_limited_greedy" */
  int64_t n_group;               /* n_expert_groups */
  int64_t topk_group;            /* n_limited_groups */
  int64_t num_experts_per_tok;   /* n_activated_experts */
  int64_t moe_layer_freq;
  int64_t first_k_dense_replace; /* n_dense_layers */
  int norm_topk_prob;
  char scoring_func[16];         /* "sigmoid" | "softmax" */
  char hidden_act[16];
  int64_t max_position_embeddings;
  double rms_norm_eps;
  int64_t bos_token_id, eos_token_id;
  int tie_word_embeddings;
  double rope_theta;
  dsv3_rope_scaling rope_scaling;
  dsv3_quant_config quant;
} dsv3_config;

/* Parse from JSON text; `label` names the source in errors.  Validates that dimensions are
 * positive and consistent (e.g. n_routed_experts % n_group == 0). */
int dsv3_config_parse(const char *json, size_t len, const char *label, dsv3_config *cfg);
int dsv3_config_load(const char *path, dsv3_config *cfg);
/* Derived values */
static inline int64_t dsv3_config_qk_head_dim(const dsv3_config *c) {
  return c->qk_nope_head_dim + c->qk_rope_head_dim;
}
/* 1 if layer `l` (0-based, including MTP layers) uses MoE. */
int dsv3_config_layer_is_moe(const dsv3_config *c, int64_t l);
/* Total layers present in an HF checkpoint: main + MTP. */
static inline int64_t dsv3_config_total_layers(const dsv3_config *c) {
  return c->num_hidden_layers + c->num_nextn_predict_layers;
}

#ifdef __cplusplus
}
#endif
#endif
