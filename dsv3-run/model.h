/* model.h - DeepSeek-V3 weights, latent KV cache and the CPU forward pass, following the
 * official inference/model.py (bf16 path, absorbed MLA).  Weights stay in the mmapped
 * checkpoint (FP8 with block scales or BF16) and are dequantised block by block on the fly. */
#ifndef DSV3_MODEL_H
#define DSV3_MODEL_H

#include <stdint.h>

#include "checkpoint.h"
#include "ops.h"

typedef struct {
  const void *data;
  dsv3_dtype dtype;
} dsv3_vec; /* a norm weight or bias */

typedef struct {
  int moe;
  dsv3_vec attn_norm, ffn_norm, q_norm, kv_norm;
  dsv3_wmat wq, wq_a, wq_b, wkv_a, wkv_b, wo; /* wq only without q LoRA */
  float *wkv_b_f32; /* wkv_b dequantised (bf16-rounded) for the absorbed attention, lazily */
  dsv3_wmat w1, w2, w3;                       /* dense MLP */
  dsv3_wmat gate;                             /* router [n_experts, dim] */
  dsv3_vec gate_bias;                         /* e_score_correction_bias (may be absent) */
  dsv3_wmat *ew1, *ew2, *ew3;                 /* routed experts */
  dsv3_wmat sw1, sw2, sw3;                    /* shared experts (rows 0: none) */
} dsv3_layer;

typedef struct {
  dsv3_config cfg;
  dsv3_ckpt *ck;
  dsv3_vec embed, norm;
  dsv3_wmat head;
  dsv3_layer *layers;
  int64_t n_layers;      /* main layers run (MTP layers are not, as in the official demo) */
  /* Model parallelism (model{r}-mp{n} shards, as the official convert.py splits them): this
   * process holds rank mp_rank of mp_world.  Local sizes: heads, dense MLP and shared-expert
   * widths and the vocabulary are divided by mp_world; routed experts [expert0, expert0 +
   * n_local_experts) are present (the others' matrices have rows == 0). */
  int mp_rank, mp_world;
  int64_t n_local_heads, local_inter, local_vocab, vocab0, expert0, n_local_experts;
  int64_t max_seq_len;
  float softmax_scale;
  float *rope_cos, *rope_sin; /* [max_seq_len, rope/2] */
  int threads;
  /* Round activations to bf16 where the official bf16 demo holds bf16 tensors (linear and
   * norm outputs, RoPE, caches, attention scores and probabilities, residual adds, expert
   * sums).  Off: float32 activations throughout. */
  int bf16_act;
} dsv3_model;

typedef struct {
  int64_t max_seq;
  int64_t len; /* positions filled */
  float **kv; /* per layer [max_seq, kv_lora_rank]: kv_norm(latent) */
  float **pe; /* per layer [max_seq, qk_rope_head_dim]: rope(k_pe) */
} dsv3_cache;

/* Open a checkpoint (HF layout, or runtime layout mp1) and bind every weight.  `config_path`
 * (official demo format or HF config.json) overrides the checkpoint's config.json.  Errors
 * name the checkpoint and the missing or mis-shaped tensor. */
int dsv3_model_load(const char *ckpt, const char *config_path, int64_t max_seq_len, dsv3_model **out);
/* The same for rank `rank` of `world` (world > 1: the runtime layout with mp == world; only the
 * GPU backend runs such a model). */
int dsv3_model_load_rank(const char *ckpt, const char *config_path, int64_t max_seq_len, int rank, int world,
                         dsv3_model **out);
void dsv3_model_free(dsv3_model *m);

dsv3_cache *dsv3_cache_new(const dsv3_model *m, int64_t max_seq);
void dsv3_cache_free(const dsv3_model *m, dsv3_cache *c);

/* Run n tokens of one sequence at positions [start_pos, start_pos + n) (start_pos must equal
 * c->len).  Writes logits [n, vocab] when all_logits, else the last position's [vocab]. */
int dsv3_forward(dsv3_model *m, dsv3_cache *c, const int32_t *tokens, int64_t n, int64_t start_pos,
                 float *logits, int all_logits);

/* Bytes of weights read per decoded token (attention + dense/shared MLPs + the routed experts
 * chosen, on average num_experts_per_tok per MoE layer + head): the memory-bandwidth floor. */
uint64_t dsv3_model_bytes_per_token(const dsv3_model *m);

#endif
