/* config.c - DeepSeek-V3 config.json (HF) and the official demo's ModelArgs JSON. */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define DSV3_CONFIG_FP8_BLOCK 128 /* = DSV3_FP8_BLOCK (fp8.h) */

typedef struct {
  const char *label;
  const cJSON *root;
  int err;
  const char *prefix; /* "" or "rope_scaling." / "quantization_config." for error lines */
} rd;

static const cJSON *item(rd *r, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(r->root, key);
}
static const char *pfx(const rd *r) { return r->prefix ? r->prefix : ""; }

/* An integral JSON number small enough to convert to int64_t exactly. */
static int is_int(const cJSON *v) {
  return cJSON_IsNumber(v) && floor(v->valuedouble) == v->valuedouble && fabs(v->valuedouble) <= 9e15;
}

static void get_i64(rd *r, const char *key, int64_t *dst) {
  const cJSON *v = item(r, key);
  if (!v || cJSON_IsNull(v)) return;
  if (!is_int(v)) {
    if (!r->err) dsv3_error_set("%s: field \"%s%s\" must be an integer", r->label, pfx(r), key);
    r->err = 1;
    return;
  }
  *dst = (int64_t)v->valuedouble;
}
static void get_f64(rd *r, const char *key, double *dst) {
  const cJSON *v = item(r, key);
  if (!v || cJSON_IsNull(v)) return;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) { /* 1e999 parses as inf */
    if (!r->err) dsv3_error_set("%s: field \"%s%s\" must be a finite number", r->label, pfx(r), key);
    r->err = 1;
    return;
  }
  *dst = v->valuedouble;
}
static void get_bool(rd *r, const char *key, int *dst) {
  const cJSON *v = item(r, key);
  if (!v || cJSON_IsNull(v)) return;
  if (!cJSON_IsBool(v)) {
    if (!r->err) dsv3_error_set("%s: field \"%s%s\" must be true or false", r->label, pfx(r), key);
    r->err = 1;
    return;
  }
  *dst = cJSON_IsTrue(v);
}
static void get_str(rd *r, const cJSON *obj, const char *key, char *dst, size_t cap) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v || cJSON_IsNull(v)) return;
  if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap) {
    if (!r->err)
      dsv3_error_set("%s: field \"%s%s\" must be a string of at most %zu characters", r->label, pfx(r), key, cap - 1);
    r->err = 1;
    return;
  }
  snprintf(dst, cap, "%s", v->valuestring);
}

/* Defaults: Hugging Face DeepseekV3Config. */
static void hf_defaults(dsv3_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->model_type, sizeof c->model_type, "deepseek_v3");
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
  c->vocab_size = 129280;
  c->hidden_size = 7168;
  c->intermediate_size = 18432;
  c->moe_intermediate_size = 2048;
  c->num_hidden_layers = 61;
  c->num_nextn_predict_layers = 1;
  c->num_attention_heads = 128;
  c->num_key_value_heads = 128;
  c->n_shared_experts = 1;
  c->n_routed_experts = 256;
  c->routed_scaling_factor = 2.5;
  c->kv_lora_rank = 512;
  c->q_lora_rank = 1536;
  c->qk_rope_head_dim = 64;
  c->v_head_dim = 128;
  c->qk_nope_head_dim = 128;
  snprintf(c->topk_method, sizeof c->topk_method, "noaux_tc");
  c->n_group = 8;
  c->topk_group = 4;
  c->num_experts_per_tok = 8;
  c->moe_layer_freq = 1;
  c->first_k_dense_replace = 3;
  c->norm_topk_prob = 1;
  snprintf(c->scoring_func, sizeof c->scoring_func, "sigmoid");
  snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
  c->max_position_embeddings = 4096;
  c->rms_norm_eps = 1e-6;
  c->bos_token_id = 0;
  c->eos_token_id = 1;
  c->rope_theta = 10000;
}

static void parse_hf(rd *r, dsv3_config *c) {
  get_str(r, r->root, "model_type", c->model_type, sizeof c->model_type);
  get_str(r, r->root, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype);
  get_i64(r, "vocab_size", &c->vocab_size);
  get_i64(r, "hidden_size", &c->hidden_size);
  get_i64(r, "intermediate_size", &c->intermediate_size);
  get_i64(r, "moe_intermediate_size", &c->moe_intermediate_size);
  get_i64(r, "num_hidden_layers", &c->num_hidden_layers);
  get_i64(r, "num_nextn_predict_layers", &c->num_nextn_predict_layers);
  get_i64(r, "num_attention_heads", &c->num_attention_heads);
  get_i64(r, "num_key_value_heads", &c->num_key_value_heads);
  get_i64(r, "n_shared_experts", &c->n_shared_experts);
  get_i64(r, "n_routed_experts", &c->n_routed_experts);
  get_f64(r, "routed_scaling_factor", &c->routed_scaling_factor);
  get_i64(r, "kv_lora_rank", &c->kv_lora_rank);
  get_i64(r, "q_lora_rank", &c->q_lora_rank); /* null: no q LoRA (stays 0 after reset below) */
  if (cJSON_IsNull(item(r, "q_lora_rank"))) c->q_lora_rank = 0;
  get_i64(r, "qk_rope_head_dim", &c->qk_rope_head_dim);
  get_i64(r, "qk_nope_head_dim", &c->qk_nope_head_dim);
  get_i64(r, "v_head_dim", &c->v_head_dim);
  get_str(r, r->root, "topk_method", c->topk_method, sizeof c->topk_method);
  get_i64(r, "n_group", &c->n_group);
  get_i64(r, "topk_group", &c->topk_group);
  get_i64(r, "num_experts_per_tok", &c->num_experts_per_tok);
  get_i64(r, "moe_layer_freq", &c->moe_layer_freq);
  get_i64(r, "first_k_dense_replace", &c->first_k_dense_replace);
  get_bool(r, "norm_topk_prob", &c->norm_topk_prob);
  get_str(r, r->root, "scoring_func", c->scoring_func, sizeof c->scoring_func);
  get_str(r, r->root, "hidden_act", c->hidden_act, sizeof c->hidden_act);
  get_i64(r, "max_position_embeddings", &c->max_position_embeddings);
  get_f64(r, "rms_norm_eps", &c->rms_norm_eps);
  get_i64(r, "bos_token_id", &c->bos_token_id);
  get_i64(r, "eos_token_id", &c->eos_token_id);
  get_bool(r, "tie_word_embeddings", &c->tie_word_embeddings);
  get_f64(r, "rope_theta", &c->rope_theta);
  const cJSON *rs = item(r, "rope_scaling");
  if (cJSON_IsObject(rs)) {
    rd sub = {r->label, rs, 0, "rope_scaling."};
    dsv3_rope_scaling *s = &c->rope_scaling;
    s->factor = 1;
    s->beta_fast = 32;
    s->beta_slow = 1;
    s->mscale = 1;
    s->mscale_all_dim = 0;
    s->original_max_position_embeddings = 4096;
    get_str(&sub, rs, "type", s->type, sizeof s->type);
    if (!s->type[0]) get_str(&sub, rs, "rope_type", s->type, sizeof s->type);
    get_f64(&sub, "factor", &s->factor);
    get_i64(&sub, "original_max_position_embeddings", &s->original_max_position_embeddings);
    get_f64(&sub, "beta_fast", &s->beta_fast);
    get_f64(&sub, "beta_slow", &s->beta_slow);
    get_f64(&sub, "mscale", &s->mscale);
    get_f64(&sub, "mscale_all_dim", &s->mscale_all_dim);
    if (sub.err) r->err = 1;
  } else if (rs && !cJSON_IsNull(rs)) {
    if (!r->err) dsv3_error_set("%s: field \"rope_scaling\" must be an object or null", r->label);
    r->err = 1;
  }
  const cJSON *q = item(r, "quantization_config");
  if (cJSON_IsObject(q)) {
    rd sub = {r->label, q, 0, "quantization_config."};
    dsv3_quant_config *qc = &c->quant;
    qc->present = 1;
    qc->weight_block_size[0] = qc->weight_block_size[1] = 128;
    get_str(&sub, q, "quant_method", qc->quant_method, sizeof qc->quant_method);
    get_str(&sub, q, "fmt", qc->fmt, sizeof qc->fmt);
    get_str(&sub, q, "activation_scheme", qc->activation_scheme, sizeof qc->activation_scheme);
    get_str(&sub, q, "scale_fmt", qc->scale_fmt, sizeof qc->scale_fmt);
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (bs && !cJSON_IsNull(bs)) {
      const cJSON *b0 = cJSON_IsArray(bs) ? bs->child : NULL, *b1 = b0 ? b0->next : NULL;
      if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 || !is_int(b0) || !is_int(b1)) {
        if (!sub.err)
          dsv3_error_set("%s: field \"quantization_config.weight_block_size\" must be [rows, cols] (integers)",
                         r->label);
        sub.err = 1;
      } else {
        qc->weight_block_size[0] = (int64_t)b0->valuedouble;
        qc->weight_block_size[1] = (int64_t)b1->valuedouble;
      }
    }
    if (sub.err) r->err = 1;
  } else if (q && !cJSON_IsNull(q)) {
    if (!r->err) dsv3_error_set("%s: field \"quantization_config\" must be an object or null", r->label);
    r->err = 1;
  }
}

/* The official demo's ModelArgs (inference/model.py) and its defaults. */
static void parse_demo(rd *r, dsv3_config *c) {
  memset(c, 0, sizeof *c);
  c->from_demo_format = 1;
  snprintf(c->model_type, sizeof c->model_type, "deepseek_v3");
  c->vocab_size = 102400;
  c->hidden_size = 2048;
  c->intermediate_size = 10944;
  c->moe_intermediate_size = 1408;
  c->num_hidden_layers = 27;
  c->first_k_dense_replace = 1;
  c->num_attention_heads = 16;
  c->n_routed_experts = 64;
  c->n_shared_experts = 2;
  c->num_experts_per_tok = 6;
  c->n_group = 1;
  c->topk_group = 1;
  snprintf(c->scoring_func, sizeof c->scoring_func, "softmax");
  c->routed_scaling_factor = 1;
  c->q_lora_rank = 0;
  c->kv_lora_rank = 512;
  c->qk_nope_head_dim = 128;
  c->qk_rope_head_dim = 64;
  c->v_head_dim = 128;
  c->rope_theta = 10000;
  int64_t orig = 4096;
  double factor = 40, beta_fast = 32, beta_slow = 1, mscale = 1;
  char dtype[16] = "bf16";
  get_i64(r, "vocab_size", &c->vocab_size);
  get_i64(r, "dim", &c->hidden_size);
  get_i64(r, "inter_dim", &c->intermediate_size);
  get_i64(r, "moe_inter_dim", &c->moe_intermediate_size);
  get_i64(r, "n_layers", &c->num_hidden_layers);
  get_i64(r, "n_dense_layers", &c->first_k_dense_replace);
  get_i64(r, "n_heads", &c->num_attention_heads);
  get_i64(r, "n_routed_experts", &c->n_routed_experts);
  get_i64(r, "n_shared_experts", &c->n_shared_experts);
  get_i64(r, "n_activated_experts", &c->num_experts_per_tok);
  get_i64(r, "n_expert_groups", &c->n_group);
  get_i64(r, "n_limited_groups", &c->topk_group);
  get_str(r, r->root, "score_func", c->scoring_func, sizeof c->scoring_func);
  get_f64(r, "route_scale", &c->routed_scaling_factor);
  get_i64(r, "q_lora_rank", &c->q_lora_rank);
  get_i64(r, "kv_lora_rank", &c->kv_lora_rank);
  get_i64(r, "qk_nope_head_dim", &c->qk_nope_head_dim);
  get_i64(r, "qk_rope_head_dim", &c->qk_rope_head_dim);
  get_i64(r, "v_head_dim", &c->v_head_dim);
  get_i64(r, "original_seq_len", &orig);
  get_f64(r, "rope_theta", &c->rope_theta);
  get_f64(r, "rope_factor", &factor);
  get_f64(r, "beta_fast", &beta_fast);
  get_f64(r, "beta_slow", &beta_slow);
  get_f64(r, "mscale", &mscale);
  get_str(r, r->root, "dtype", dtype, sizeof dtype);
  c->num_key_value_heads = c->num_attention_heads;
  c->moe_layer_freq = 1;
  c->norm_topk_prob = 1;
  c->num_nextn_predict_layers = 0;
  /* model.py's Gate has the correction bias only when dim == 7168 (DeepSeek-V3); without
   * it, groups are scored by their best expert (V2's group-limited greedy) */
  snprintf(c->topk_method, sizeof c->topk_method, "%s",
           c->hidden_size == 7168 ? "noaux_tc" : c->n_group > 1 ? "group_limited_greedy" : "greedy");
  snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
  c->max_position_embeddings = 4096 * 4; /* ModelArgs.max_seq_len */
  get_i64(r, "max_seq_len", &c->max_position_embeddings);
  c->rms_norm_eps = 1e-6;
  c->bos_token_id = 0;
  c->eos_token_id = 1;
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
  dsv3_rope_scaling *s = &c->rope_scaling;
  snprintf(s->type, sizeof s->type, "yarn");
  s->factor = factor;
  s->original_max_position_embeddings = orig;
  s->beta_fast = beta_fast;
  s->beta_slow = beta_slow;
  s->mscale = mscale;
  s->mscale_all_dim = mscale;
  if (strcmp(dtype, "fp8") == 0) {
    c->quant.present = 1;
    snprintf(c->quant.quant_method, sizeof c->quant.quant_method, "fp8");
    snprintf(c->quant.fmt, sizeof c->quant.fmt, "e4m3");
    snprintf(c->quant.activation_scheme, sizeof c->quant.activation_scheme, "dynamic");
    c->quant.weight_block_size[0] = c->quant.weight_block_size[1] = 128;
  } else if (strcmp(dtype, "bf16") != 0) {
    if (!r->err) dsv3_error_set("%s: field \"dtype\" must be \"bf16\" or \"fp8\" (got \"%s\")", r->label, dtype);
    r->err = 1;
  }
  /* ModelArgs.scale_fmt: None or "ue8m0" (DeepSeek-V3.1); kept even for dtype bf16, where
   * the demo uses it for activation quantisation only */
  get_str(r, r->root, "scale_fmt", c->quant.scale_fmt, sizeof c->quant.scale_fmt);
}

#define NEED(cond, ...)                                 \
  do {                                                  \
    if (!(cond)) {                                      \
      dsv3_error_set(__VA_ARGS__);                      \
      return -1;                                        \
    }                                                   \
  } while (0)

/* The name of a field as the file spells it: HF names, or ModelArgs names for the demo format. */
static const char *F(const dsv3_config *c, const char *hf) {
  static const char *const demo[][2] = {
      {"hidden_size", "dim"}, {"intermediate_size", "inter_dim"}, {"moe_intermediate_size", "moe_inter_dim"},
      {"num_hidden_layers", "n_layers"}, {"first_k_dense_replace", "n_dense_layers"},
      {"num_attention_heads", "n_heads"}, {"num_experts_per_tok", "n_activated_experts"},
      {"n_group", "n_expert_groups"}, {"topk_group", "n_limited_groups"}, {"scoring_func", "score_func"},
      {"routed_scaling_factor", "route_scale"}, {"rope_scaling.factor", "rope_factor"},
      {"rope_scaling.original_max_position_embeddings", "original_seq_len"},
      {"quantization_config.scale_fmt", "scale_fmt"}};
  if (c->from_demo_format)
    for (size_t i = 0; i < sizeof demo / sizeof demo[0]; i++)
      if (strcmp(demo[i][0], hf) == 0) return demo[i][1];
  return hf;
}

static int validate(const char *L, const dsv3_config *c) {
  const struct { const char *name; int64_t v; } pos[] = {
      {"vocab_size", c->vocab_size}, {"hidden_size", c->hidden_size},
      {"intermediate_size", c->intermediate_size}, {"moe_intermediate_size", c->moe_intermediate_size},
      {"num_hidden_layers", c->num_hidden_layers}, {"num_attention_heads", c->num_attention_heads},
      {"num_key_value_heads", c->num_key_value_heads},
      {"kv_lora_rank", c->kv_lora_rank}, {"qk_rope_head_dim", c->qk_rope_head_dim},
      {"qk_nope_head_dim", c->qk_nope_head_dim}, {"v_head_dim", c->v_head_dim},
      {"n_group", c->n_group}, {"topk_group", c->topk_group}, {"moe_layer_freq", c->moe_layer_freq},
      {"max_position_embeddings", c->max_position_embeddings},
  };
  for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
    NEED(pos[i].v > 0 && pos[i].v < (INT64_C(1) << 40), "%s: field \"%s\" must be positive%s (got %lld)", L,
         F(c, pos[i].name), pos[i].v > 0 ? " and below 2^40" : "", (long long)pos[i].v);
  NEED(c->num_nextn_predict_layers >= 0 && c->num_nextn_predict_layers < 1000,
       "%s: field \"num_nextn_predict_layers\" must be in [0, 1000) (got %lld)", L,
       (long long)c->num_nextn_predict_layers);
  NEED(c->q_lora_rank >= 0, "%s: field \"q_lora_rank\" must not be negative", L);
  NEED(c->n_routed_experts >= 0 && c->n_routed_experts < (INT64_C(1) << 30),
       "%s: field \"n_routed_experts\" must not be negative", L);
  NEED(c->n_shared_experts >= 0 && c->n_shared_experts < (INT64_C(1) << 30),
       "%s: field \"n_shared_experts\" must not be negative", L);
  NEED(c->first_k_dense_replace >= 0, "%s: field \"%s\" must not be negative", L, F(c, "first_k_dense_replace"));
  NEED(c->qk_rope_head_dim % 2 == 0, "%s: field \"qk_rope_head_dim\" must be even (got %lld)", L,
       (long long)c->qk_rope_head_dim);
  if (c->n_routed_experts > 0) {
    NEED(c->n_routed_experts % c->n_group == 0,
         "%s: field \"n_routed_experts\" %lld is not divisible by \"%s\" %lld", L, (long long)c->n_routed_experts,
         F(c, "n_group"), (long long)c->n_group);
    NEED(c->topk_group <= c->n_group, "%s: field \"%s\" %lld exceeds \"%s\" %lld", L, F(c, "topk_group"),
         (long long)c->topk_group, F(c, "n_group"), (long long)c->n_group);
    NEED(c->num_experts_per_tok > 0 && c->num_experts_per_tok <= c->n_routed_experts,
         "%s: field \"%s\" %lld must be in [1, n_routed_experts]", L, F(c, "num_experts_per_tok"),
         (long long)c->num_experts_per_tok);
    NEED(c->num_experts_per_tok <= c->topk_group * (c->n_routed_experts / c->n_group),
         "%s: field \"%s\" %lld exceeds the experts of \"%s\" groups", L, F(c, "num_experts_per_tok"),
         (long long)c->num_experts_per_tok, F(c, "topk_group"));
  }
  NEED(strcmp(c->scoring_func, "sigmoid") == 0 || strcmp(c->scoring_func, "softmax") == 0,
       "%s: field \"%s\" is \"%s\": only sigmoid or softmax", L, F(c, "scoring_func"), c->scoring_func);
  NEED(c->rms_norm_eps > 0, "%s: field \"rms_norm_eps\" must be positive", L);
  NEED(!c->quant.scale_fmt[0] || strcmp(c->quant.scale_fmt, "ue8m0") == 0,
       "%s: field \"%s\" is \"%s\": only null or \"ue8m0\" are known", L, F(c, "quantization_config.scale_fmt"),
       c->quant.scale_fmt);
  if (c->quant.present) {
    /* every FP8 path (format/fp8.h) works on 128x128 blocks: anything else would be
     * dequantised wrongly, so it is refused here */
    NEED(c->quant.weight_block_size[0] == DSV3_CONFIG_FP8_BLOCK && c->quant.weight_block_size[1] == DSV3_CONFIG_FP8_BLOCK,
         "%s: field \"quantization_config.weight_block_size\" is [%lld, %lld]: only [128, 128] is supported", L,
         (long long)c->quant.weight_block_size[0], (long long)c->quant.weight_block_size[1]);
    NEED(!c->quant.fmt[0] || strcmp(c->quant.fmt, "e4m3") == 0,
         "%s: field \"quantization_config.fmt\" is \"%s\": only e4m3 is supported", L, c->quant.fmt);
    NEED(!c->quant.quant_method[0] || strcmp(c->quant.quant_method, "fp8") == 0,
         "%s: field \"quantization_config.quant_method\" is \"%s\": only fp8 is supported", L,
         c->quant.quant_method);
  }
  if (c->rope_scaling.type[0]) {
    NEED(c->rope_scaling.factor > 0, "%s: field \"%s\" must be positive", L, F(c, "rope_scaling.factor"));
    NEED(c->rope_scaling.original_max_position_embeddings > 0, "%s: field \"%s\" must be positive", L,
         F(c, "rope_scaling.original_max_position_embeddings"));
  }
  NEED(c->rope_theta > 0, "%s: field \"rope_theta\" must be positive", L);
  return 0;
}

int dsv3_config_parse(const char *json, size_t len, const char *label, dsv3_config *cfg) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root) {
    dsv3_error_set("%s: not valid JSON", label);
    return -1;
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    dsv3_error_set("%s: not a JSON object", label);
    return -1;
  }
  rd r = {label, root, 0, NULL};
  /* The demo format has "dim" and no "hidden_size". */
  if (cJSON_GetObjectItemCaseSensitive(root, "dim") && !cJSON_GetObjectItemCaseSensitive(root, "hidden_size")) {
    parse_demo(&r, cfg);
  } else {
    hf_defaults(cfg);
    parse_hf(&r, cfg);
  }
  cJSON_Delete(root);
  if (r.err) return -1;
  return validate(label, cfg);
}

int dsv3_config_load(const char *path, dsv3_config *cfg) {
  char *buf;
  size_t n;
  if (dsv3_read_file(path, &buf, &n, 16u << 20) != 0) return -1;
  int rc = dsv3_config_parse(buf, n, path, cfg);
  free(buf);
  return rc;
}

int dsv3_config_layer_is_moe(const dsv3_config *c, int64_t l) {
  if (c->n_routed_experts <= 0) return 0;
  if (l >= c->num_hidden_layers) return 1; /* MTP layers are MoE in DeepSeek-V3 */
  return l >= c->first_k_dense_replace && (l % c->moe_layer_freq) == 0;
}
