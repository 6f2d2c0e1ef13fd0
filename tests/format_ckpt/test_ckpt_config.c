/* config.c: models/dsv3-tiny/config.json, the official demo's config_671B.json
 * (tests/data/config_671B_demo.json holds its values), ModelArgs defaults, and one rejected
 * config per validation rule, each error one line naming the file and the field. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "util.h"

/* Parse `json` labelled "bad.json"; expect failure with every `want` substring in the error. */
static void reject(const char *json, const char *want1, const char *want2) {
  dsv3_config c;
  int rc = dsv3_config_parse(json, strlen(json), "bad.json", &c);
  const char *e = dsv3_error();
  CHECK(rc == -1, "accepted: %s", json);
  if (rc != -1) return;
  CHECK(strncmp(e, "bad.json: ", 10) == 0, "error does not start with the file: %s", e);
  CHECK(!strchr(e, '\n'), "error is not one line: %s", e);
  CHECK(strstr(e, want1) != NULL, "error for %s lacks \"%s\": %s", json, want1, e);
  if (want2) CHECK(strstr(e, want2) != NULL, "error for %s lacks \"%s\": %s", json, want2, e);
}

static void accept(const char *json, dsv3_config *c) {
  CHECK(dsv3_config_parse(json, strlen(json), "ok.json", c) == 0, "rejected %s: %s", json, dsv3_error());
}

int main(void) {
  const char *tiny = check_env("DSV3_TINY"), *data = check_env("DSV3_TESTDATA");
  dsv3_config c;
  char path[4096];

  /* ---- the tiny model's HF config.json: every field as written there ---- */
  snprintf(path, sizeof path, "%s/config.json", tiny);
  CHECK(dsv3_config_load(path, &c) == 0, "tiny config: %s", dsv3_error());
  CHECK(!c.from_demo_format && !strcmp(c.model_type, "deepseek_v3") && !strcmp(c.torch_dtype, "bfloat16"), "type");
  CHECK(c.vocab_size == 2048 && c.hidden_size == 512 && c.intermediate_size == 1536 && c.moe_intermediate_size == 256,
        "dims");
  CHECK(c.num_hidden_layers == 4 && c.num_nextn_predict_layers == 1 && dsv3_config_total_layers(&c) == 5, "layers");
  CHECK(c.num_attention_heads == 16 && c.num_key_value_heads == 16, "heads");
  CHECK(c.n_shared_experts == 2 && c.n_routed_experts == 8 && c.routed_scaling_factor == 2.5, "experts");
  CHECK(c.kv_lora_rank == 128 && c.q_lora_rank == 192 && c.qk_rope_head_dim == 32 && c.v_head_dim == 32 &&
            c.qk_nope_head_dim == 32 && dsv3_config_qk_head_dim(&c) == 64, "mla");
  CHECK(!strcmp(c.topk_method, "noaux_tc") && c.n_group == 4 && c.topk_group == 2 && c.num_experts_per_tok == 2 &&
            c.moe_layer_freq == 1 && c.first_k_dense_replace == 1 && c.norm_topk_prob == 1, "routing");
  CHECK(!strcmp(c.scoring_func, "sigmoid") && !strcmp(c.hidden_act, "silu"), "funcs");
  CHECK(c.max_position_embeddings == 1024 && c.rms_norm_eps == 1e-6 && c.bos_token_id == 0 && c.eos_token_id == 1 &&
            c.tie_word_embeddings == 0 && c.rope_theta == 10000, "misc");
  CHECK(!strcmp(c.rope_scaling.type, "yarn") && c.rope_scaling.factor == 4.0 &&
            c.rope_scaling.original_max_position_embeddings == 256 && c.rope_scaling.beta_fast == 32 &&
            c.rope_scaling.beta_slow == 1 && c.rope_scaling.mscale == 1.0 && c.rope_scaling.mscale_all_dim == 1.0,
        "rope_scaling");
  CHECK(c.quant.present && !strcmp(c.quant.quant_method, "fp8") && !strcmp(c.quant.fmt, "e4m3") &&
            !strcmp(c.quant.activation_scheme, "dynamic") && c.quant.scale_fmt[0] == 0 &&
            c.quant.weight_block_size[0] == 128 && c.quant.weight_block_size[1] == 128, "quantization_config");
  /* dense layer 0, MoE 1..3, MTP layer 4 MoE (HF: l >= first_k_dense_replace && l % freq == 0) */
  CHECK(!dsv3_config_layer_is_moe(&c, 0) && dsv3_config_layer_is_moe(&c, 1) && dsv3_config_layer_is_moe(&c, 3) &&
            dsv3_config_layer_is_moe(&c, 4), "moe layers");
  {
    dsv3_config f = c;
    f.moe_layer_freq = 2;
    CHECK(!dsv3_config_layer_is_moe(&f, 1) && dsv3_config_layer_is_moe(&f, 2) && !dsv3_config_layer_is_moe(&f, 3) &&
              dsv3_config_layer_is_moe(&f, 5), "moe_layer_freq 2 (MTP layer 5 MoE whatever the frequency)");
    f.n_routed_experts = 0;
    CHECK(!dsv3_config_layer_is_moe(&f, 2) && !dsv3_config_layer_is_moe(&f, 4), "no routed experts: no MoE layer");
  }

  /* ---- the official demo's config_671B.json ---- */
  snprintf(path, sizeof path, "%s/config_671B_demo.json", data);
  CHECK(dsv3_config_load(path, &c) == 0, "demo config: %s", dsv3_error());
  CHECK(c.from_demo_format, "demo format detected");
  CHECK(c.vocab_size == 129280 && c.hidden_size == 7168 && c.intermediate_size == 18432 &&
            c.moe_intermediate_size == 2048, "demo dims");
  CHECK(c.num_hidden_layers == 61 && c.first_k_dense_replace == 3 && c.num_attention_heads == 128 &&
            c.num_key_value_heads == 128 && c.num_nextn_predict_layers == 0, "demo layers");
  CHECK(c.n_routed_experts == 256 && c.n_shared_experts == 1 && c.num_experts_per_tok == 8 && c.n_group == 8 &&
            c.topk_group == 4 && c.routed_scaling_factor == 2.5 && !strcmp(c.scoring_func, "sigmoid"), "demo moe");
  CHECK(c.q_lora_rank == 1536 && c.kv_lora_rank == 512 && c.qk_nope_head_dim == 128 && c.qk_rope_head_dim == 64 &&
            c.v_head_dim == 128, "demo mla");
  CHECK(c.quant.present && !strcmp(c.quant.fmt, "e4m3") && c.quant.weight_block_size[0] == 128 &&
            c.quant.scale_fmt[0] == 0, "demo dtype fp8");
  /* ModelArgs defaults for what the file leaves out */
  CHECK(c.rope_theta == 10000 && c.rope_scaling.factor == 40 && c.rope_scaling.original_max_position_embeddings == 4096 &&
            c.rope_scaling.beta_fast == 32 && c.rope_scaling.beta_slow == 1 && c.rope_scaling.mscale == 1 &&
            !strcmp(c.rope_scaling.type, "yarn") && c.max_position_embeddings == 16384, "demo yarn defaults");
  CHECK(!strcmp(c.topk_method, "noaux_tc"), "dim 7168: gate with correction bias");
  CHECK(!dsv3_config_layer_is_moe(&c, 2) && dsv3_config_layer_is_moe(&c, 3) && dsv3_config_layer_is_moe(&c, 60),
        "demo moe layers");

  /* an empty ModelArgs: every default of inference/model.py */
  accept("{\"dim\": 2048}", &c);
  CHECK(c.from_demo_format && c.vocab_size == 102400 && c.intermediate_size == 10944 && c.moe_intermediate_size == 1408 &&
            c.num_hidden_layers == 27 && c.first_k_dense_replace == 1 && c.num_attention_heads == 16 &&
            c.n_routed_experts == 64 && c.n_shared_experts == 2 && c.num_experts_per_tok == 6 && c.n_group == 1 &&
            c.topk_group == 1 && !strcmp(c.scoring_func, "softmax") && c.routed_scaling_factor == 1 &&
            c.q_lora_rank == 0 && c.kv_lora_rank == 512 && c.qk_nope_head_dim == 128 && c.qk_rope_head_dim == 64 &&
            c.v_head_dim == 128 && !c.quant.present && !strcmp(c.topk_method, "greedy"),
        "ModelArgs defaults");
  /* every ModelArgs field read */
  accept("{\"dim\": 1024, \"max_seq_len\": 8192, \"dtype\": \"fp8\", \"scale_fmt\": \"ue8m0\", \"original_seq_len\": 2048,"
         " \"rope_theta\": 50000, \"rope_factor\": 8, \"beta_fast\": 16, \"beta_slow\": 2, \"mscale\": 0.5,"
         " \"n_expert_groups\": 4, \"n_limited_groups\": 2, \"max_batch_size\": 4}", &c);
  CHECK(c.hidden_size == 1024 && c.max_position_embeddings == 8192 && c.quant.present &&
            !strcmp(c.quant.scale_fmt, "ue8m0") && c.rope_scaling.original_max_position_embeddings == 2048 &&
            c.rope_theta == 50000 && c.rope_scaling.factor == 8 && c.rope_scaling.beta_fast == 16 &&
            c.rope_scaling.beta_slow == 2 && c.rope_scaling.mscale == 0.5 && c.rope_scaling.mscale_all_dim == 0.5 &&
            !strcmp(c.topk_method, "group_limited_greedy"),
        "ModelArgs fields");

  /* HF: defaults of DeepseekV3Config, null q_lora_rank, scale_fmt (V3.1), rope_type spelling */
  accept("{\"model_type\": \"deepseek_v3\"}", &c);
  CHECK(c.hidden_size == 7168 && c.num_hidden_layers == 61 && c.num_nextn_predict_layers == 1 && c.n_routed_experts == 256 &&
            c.q_lora_rank == 1536 && !c.quant.present && !c.rope_scaling.type[0],
        "HF defaults");
  accept("{\"q_lora_rank\": null, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 40}, "
         "\"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"scale_fmt\": \"ue8m0\", "
         "\"weight_block_size\": [128, 128]}}", &c);
  CHECK(c.q_lora_rank == 0 && !strcmp(c.rope_scaling.type, "yarn") && c.rope_scaling.factor == 40 &&
            c.rope_scaling.original_max_position_embeddings == 4096 && !strcmp(c.quant.scale_fmt, "ue8m0"),
        "HF q_lora_rank null, rope_type, scale_fmt");
  accept("{\"rope_scaling\": null, \"quantization_config\": null}", &c);
  CHECK(!c.rope_scaling.type[0] && !c.quant.present, "null objects");

  /* ---- rejected: one per rule, the error names the file and the field ---- */
  reject("{\"hidden_size\": -4}", "\"hidden_size\"", "-4");
  reject("{\"hidden_size\": \"x\"}", "\"hidden_size\"", "integer");
  reject("{\"hidden_size\": 1.5}", "\"hidden_size\"", "integer");
  reject("{\"hidden_size\": 1e300}", "\"hidden_size\"", "integer");
  reject("{\"num_hidden_layers\": 0}", "\"num_hidden_layers\"", NULL);
  reject("{\"num_key_value_heads\": 0}", "\"num_key_value_heads\"", NULL);
  reject("{\"num_nextn_predict_layers\": -1}", "\"num_nextn_predict_layers\"", NULL);
  reject("{\"n_routed_experts\": 10, \"n_group\": 4}", "\"n_routed_experts\"", "\"n_group\"");
  reject("{\"topk_group\": 9}", "\"topk_group\"", NULL);
  reject("{\"num_experts_per_tok\": 300}", "\"num_experts_per_tok\"", NULL);
  reject("{\"n_group\": 8, \"topk_group\": 1, \"num_experts_per_tok\": 64}", "\"num_experts_per_tok\"", NULL);
  reject("{\"qk_rope_head_dim\": 63}", "\"qk_rope_head_dim\"", "even");
  reject("{\"scoring_func\": \"relu\"}", "\"scoring_func\"", "relu");
  reject("{\"rms_norm_eps\": 0}", "\"rms_norm_eps\"", NULL);
  reject("{\"rope_theta\": -1}", "\"rope_theta\"", NULL);
  reject("{\"rope_theta\": 1e999}", "\"rope_theta\"", "finite");
  reject("{\"routed_scaling_factor\": -1e400}", "\"routed_scaling_factor\"", "finite");
  reject("{\"rope_scaling\": {\"type\": \"yarn\", \"beta_fast\": 1e999}}", "\"rope_scaling.beta_fast\"", "finite");
  reject("{\"norm_topk_prob\": 1}", "\"norm_topk_prob\"", "true or false");
  reject("{\"model_type\": 7}", "\"model_type\"", "string");
  reject("{\"rope_scaling\": 3}", "\"rope_scaling\"", NULL);
  reject("{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": \"big\"}}", "\"rope_scaling.factor\"", "number");
  reject("{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 0}}", "\"rope_scaling.factor\"", "positive");
  reject("{\"quantization_config\": [1]}", "\"quantization_config\"", NULL);
  reject("{\"quantization_config\": {\"weight_block_size\": [64, 64]}}", "\"quantization_config.weight_block_size\"",
         "[64, 64]");
  reject("{\"quantization_config\": {\"weight_block_size\": [128]}}", "\"quantization_config.weight_block_size\"", NULL);
  reject("{\"quantization_config\": {\"weight_block_size\": [128, 1e300]}}",
         "\"quantization_config.weight_block_size\"", NULL);
  reject("{\"quantization_config\": {\"fmt\": \"e5m2\"}}", "\"quantization_config.fmt\"", "e5m2");
  reject("{\"quantization_config\": {\"quant_method\": \"gptq\"}}", "\"quantization_config.quant_method\"", NULL);
  reject("{\"quantization_config\": {\"scale_fmt\": \"ue4m3\"}}", "\"quantization_config.scale_fmt\"", "ue4m3");
  reject("{\"quantization_config\": {\"fmt\": \"e4m3_with_a_very_long_name\"}}", "\"quantization_config.fmt\"", NULL);
  /* demo format: errors use the ModelArgs names */
  reject("{\"dim\": 0}", "\"dim\"", NULL);
  reject("{\"dim\": 7168, \"n_layers\": -1}", "\"n_layers\"", NULL);
  reject("{\"dim\": 7168, \"dtype\": \"int4\"}", "\"dtype\"", "int4");
  reject("{\"dim\": 7168, \"n_routed_experts\": 10, \"n_expert_groups\": 4}", "\"n_routed_experts\"",
         "\"n_expert_groups\"");
  reject("{\"dim\": 7168, \"n_limited_groups\": 2}", "\"n_limited_groups\"", NULL);
  reject("{\"dim\": 7168, \"score_func\": \"tanh\"}", "\"score_func\"", NULL);
  reject("{\"dim\": 7168, \"scale_fmt\": \"x\"}", "\"scale_fmt\"", NULL);
  reject("{\"dim\": 7168, \"rope_factor\": -2}", "\"rope_factor\"", NULL);
  /* not a config at all */
  reject("[1]", "not a JSON object", NULL);
  reject("{\"hidden_size\": ", "not valid JSON", NULL);
  reject("", "not valid JSON", NULL);
  /* mutated copies of the tiny config: accepted or refused with one line, never a crash
   * (the sanitizer build checks the "never") */
  {
    char *buf;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", tiny);
    if (dsv3_read_file(path, &buf, &n, 1 << 20) == 0) {
      char *m = malloc(n + 1);
      uint64_t x = 12345;
      int refused = 0, bad_err = 0;
      for (int it = 0; it < 3000; it++) {
        memcpy(m, buf, n + 1);
        for (int k = 0; k < 1 + it % 4; k++) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          static const char pool[] = "0123456789-.e\"{}[]:,ntrufalsE ";
          m[(x >> 8) % n] = (it & 1) ? pool[(x >> 40) % (sizeof pool - 1)] : (char)(x >> 48);
        }
        size_t len = it % 7 == 0 ? (size_t)((x >> 20) % n) : n; /* sometimes truncated too */
        if (dsv3_config_parse(m, len, "mut.json", &c) != 0) {
          refused++;
          const char *e = dsv3_error();
          bad_err += strncmp(e, "mut.json: ", 10) != 0 || strchr(e, '\n') != NULL;
        }
      }
      CHECK(refused > 100 && bad_err == 0, "mutations: %d refused, %d errors not one line naming the file", refused,
            bad_err);
      free(m);
      free(buf);
    }
  }
  CHECK(dsv3_config_load("/nonexistent/config.json", &c) == -1 && strstr(dsv3_error(), "/nonexistent/config.json"),
        "missing file: %s", dsv3_error());
  return check_done("ckpt_config");
}
