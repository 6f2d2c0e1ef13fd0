/* expect.c - the tensor list a config implies (see expect.h). */
#include "expect.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

dsv3_dtype dsv3i_torch_dtype(const dsv3_config *c) {
  if (strcmp(c->torch_dtype, "float32") == 0) return DSV3_F32;
  if (strcmp(c->torch_dtype, "float16") == 0) return DSV3_F16;
  return DSV3_BF16;
}

static void add(dsv3i_expects *x, const dsv3_config *c, dsv3i_kind kind, int64_t layer, int64_t expert,
                int64_t d0, int64_t d1, const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static void add(dsv3i_expects *x, const dsv3_config *c, dsv3i_kind kind, int64_t layer, int64_t expert,
                int64_t d0, int64_t d1, const char *fmt, ...) {
  if (x->n == x->cap) {
    x->cap = x->cap ? x->cap * 2 : 256;
    x->e = dsv3_xrealloc(x->e, x->cap * sizeof *x->e);
  }
  dsv3i_expect *e = &x->e[x->n++];
  memset(e, 0, sizeof *e);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->name, sizeof e->name, fmt, ap);
  va_end(ap);
  e->kind = kind;
  e->layer = layer;
  e->expert = expert;
  e->ndim = d1 > 0 ? 2 : 1;
  e->shape[0] = d0;
  e->shape[1] = d1;
  dsv3_dtype td = dsv3i_torch_dtype(c);
  int q8 = c->quant.present;
  /* The official release: linear projections FP8 (with scales), the router bias F32, every
   * other tensor BF16.  Unquantised (e.g. after dsv3-cast): linear weights in torch_dtype. */
  if (kind == DSV3I_K_LINEAR) {
    e->fp8 = q8;
    e->dtype = q8 ? DSV3_F8_E4M3 : td;
    e->alt = DSV3_DT_INVALID;
  } else if (kind == DSV3I_K_BIAS) {
    e->dtype = DSV3_F32;
    e->alt = td;
  } else {
    e->dtype = DSV3_BF16;
    e->alt = td;
  }
  if (e->alt == e->dtype) e->alt = DSV3_DT_INVALID;
}

static void layer(dsv3i_expects *x, const dsv3_config *c, int64_t l) {
  const long long L = (long long)l;
  int64_t D = c->hidden_size, H = c->num_attention_heads;
  int64_t qk = dsv3_config_qk_head_dim(c);
  const char *p = "model.layers";
  add(x, c, DSV3I_K_NORM, l, -1, D, 0, "%s.%lld.input_layernorm.weight", p, L);
  if (c->q_lora_rank > 0) {
    add(x, c, DSV3I_K_LINEAR, l, -1, c->q_lora_rank, D, "%s.%lld.self_attn.q_a_proj.weight", p, L);
    add(x, c, DSV3I_K_NORM, l, -1, c->q_lora_rank, 0, "%s.%lld.self_attn.q_a_layernorm.weight", p, L);
    add(x, c, DSV3I_K_LINEAR, l, -1, H * qk, c->q_lora_rank, "%s.%lld.self_attn.q_b_proj.weight", p, L);
  } else {
    add(x, c, DSV3I_K_LINEAR, l, -1, H * qk, D, "%s.%lld.self_attn.q_proj.weight", p, L);
  }
  add(x, c, DSV3I_K_LINEAR, l, -1, c->kv_lora_rank + c->qk_rope_head_dim, D,
      "%s.%lld.self_attn.kv_a_proj_with_mqa.weight", p, L);
  add(x, c, DSV3I_K_NORM, l, -1, c->kv_lora_rank, 0, "%s.%lld.self_attn.kv_a_layernorm.weight", p, L);
  add(x, c, DSV3I_K_LINEAR, l, -1, H * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank,
      "%s.%lld.self_attn.kv_b_proj.weight", p, L);
  add(x, c, DSV3I_K_LINEAR, l, -1, D, H * c->v_head_dim, "%s.%lld.self_attn.o_proj.weight", p, L);
  add(x, c, DSV3I_K_NORM, l, -1, D, 0, "%s.%lld.post_attention_layernorm.weight", p, L);
  if (dsv3_config_layer_is_moe(c, l)) {
    int64_t I = c->moe_intermediate_size;
    add(x, c, DSV3I_K_ROUTER, l, -1, c->n_routed_experts, D, "%s.%lld.mlp.gate.weight", p, L);
    if (strcmp(c->topk_method, "noaux_tc") == 0)
      add(x, c, DSV3I_K_BIAS, l, -1, c->n_routed_experts, 0, "%s.%lld.mlp.gate.e_score_correction_bias", p, L);
    for (int64_t e = 0; e < c->n_routed_experts; e++) {
      const long long E = (long long)e;
      add(x, c, DSV3I_K_LINEAR, l, e, I, D, "%s.%lld.mlp.experts.%lld.gate_proj.weight", p, L, E);
      add(x, c, DSV3I_K_LINEAR, l, e, I, D, "%s.%lld.mlp.experts.%lld.up_proj.weight", p, L, E);
      add(x, c, DSV3I_K_LINEAR, l, e, D, I, "%s.%lld.mlp.experts.%lld.down_proj.weight", p, L, E);
    }
    if (c->n_shared_experts > 0) {
      int64_t S = I * c->n_shared_experts;
      add(x, c, DSV3I_K_LINEAR, l, -1, S, D, "%s.%lld.mlp.shared_experts.gate_proj.weight", p, L);
      add(x, c, DSV3I_K_LINEAR, l, -1, S, D, "%s.%lld.mlp.shared_experts.up_proj.weight", p, L);
      add(x, c, DSV3I_K_LINEAR, l, -1, D, S, "%s.%lld.mlp.shared_experts.down_proj.weight", p, L);
    }
  } else {
    int64_t I = c->intermediate_size;
    add(x, c, DSV3I_K_LINEAR, l, -1, I, D, "%s.%lld.mlp.gate_proj.weight", p, L);
    add(x, c, DSV3I_K_LINEAR, l, -1, I, D, "%s.%lld.mlp.up_proj.weight", p, L);
    add(x, c, DSV3I_K_LINEAR, l, -1, D, I, "%s.%lld.mlp.down_proj.weight", p, L);
  }
  if (l >= c->num_hidden_layers) { /* MTP module: DeepSeek-V3 technical report, section 2.2 */
    add(x, c, DSV3I_K_EMBED, l, -1, c->vocab_size, D, "%s.%lld.embed_tokens.weight", p, L);
    add(x, c, DSV3I_K_NORM, l, -1, D, 0, "%s.%lld.enorm.weight", p, L);
    add(x, c, DSV3I_K_NORM, l, -1, D, 0, "%s.%lld.hnorm.weight", p, L);
    add(x, c, DSV3I_K_EH_PROJ, l, -1, D, 2 * D, "%s.%lld.eh_proj.weight", p, L);
    add(x, c, DSV3I_K_NORM, l, -1, D, 0, "%s.%lld.shared_head.norm.weight", p, L);
    add(x, c, DSV3I_K_HEAD, l, -1, c->vocab_size, D, "%s.%lld.shared_head.head.weight", p, L);
  }
}

void dsv3i_expect_build(const dsv3_config *c, dsv3i_expects *x) {
  add(x, c, DSV3I_K_EMBED, -1, -1, c->vocab_size, c->hidden_size, "model.embed_tokens.weight");
  for (int64_t l = 0; l < c->num_hidden_layers; l++) layer(x, c, l);
  add(x, c, DSV3I_K_NORM, -1, -1, c->hidden_size, 0, "model.norm.weight");
  add(x, c, DSV3I_K_HEAD, -1, -1, c->vocab_size, c->hidden_size, "lm_head.weight");
  for (int64_t l = c->num_hidden_layers; l < dsv3_config_total_layers(c); l++) layer(x, c, l);
}

void dsv3i_expects_free(dsv3i_expects *x) {
  free(x->e);
  memset(x, 0, sizeof *x);
}
