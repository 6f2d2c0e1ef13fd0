/* model.c - DeepSeek-V3 forward pass on the CPU (see model.h).  The math follows the official
 * inference/model.py with attn_impl="absorb" and gemm_impl="bf16": FP8 weights are seen as
 * bf16(e4m3 * scale); activations here are float32 (the official runs bf16 activations, so the
 * two agree to bf16 precision, not bit for bit: see tests/run/). */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "names.h"
#include "util.h"

/* bf16 emulation of the official activations (model->bf16_act) */
static void rnd(const dsv3_model *m, float *x, int64_t n) {
  if (!m->bf16_act) return;
  for (int64_t i = 0; i < n; i++) x[i] = dsv3_bf16_to_f32(dsv3_f32_to_bf16(x[i]));
}
static float rnd1(const dsv3_model *m, float x) { return m->bf16_act ? dsv3_bf16_to_f32(dsv3_f32_to_bf16(x)) : x; }

/* ------------------------------------------------------------------ loading */
typedef struct {
  dsv3_model *m;
  const char *path;
  int rank; /* runtime layout: the rank whose copy is bound */
} binder;

/* Find a tensor by its HF name, or by the runtime name convert.py gives it. */
static const dsv3_tensor *find(binder *b, const char *hf, int required) {
  const dsv3_tensor *t = dsv3_ckpt_find(b->m->ck, hf, b->rank, NULL);
  if (!t) {
    char rt[512];
    dsv3_split sp;
    if (dsv3_name_hf_to_rt(hf, rt, sizeof rt, &sp) == 0) t = dsv3_ckpt_find(b->m->ck, rt, b->rank, NULL);
  }
  if (!t && required) dsv3_error_set("%s: tensor %s: missing", b->path, hf);
  return t;
}

static int bind_mat(binder *b, dsv3_wmat *w, int64_t rows, int64_t cols, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bind_mat(binder *b, dsv3_wmat *w, int64_t rows, int64_t cols, const char *fmt, ...) {
  char name[512], sn[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const dsv3_tensor *t = find(b, name, 1);
  if (!t) return -1;
  if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
    dsv3_error_set("%s: tensor %s: shape [%lld, %lld] expected, got %d-D [%lld, ...]", b->path, name, (long long)rows,
                   (long long)cols, t->ndim, (long long)(t->ndim ? t->shape[0] : 0));
    return -1;
  }
  memset(w, 0, sizeof *w);
  w->dtype = t->dtype;
  w->data = t->data;
  w->rows = rows;
  w->cols = cols;
  if (t->dtype == DSV3_F8_E4M3) {
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const dsv3_tensor *s = find(b, sn, 1);
    if (!s) return -1;
    if (s->dtype != DSV3_F32 || s->ndim != 2 || s->shape[0] != dsv3_ceil_div(rows, 128) ||
        s->shape[1] != dsv3_ceil_div(cols, 128)) {
      dsv3_error_set("%s: tensor %s: scale must be F32 [%lld, %lld]", b->path, sn, (long long)dsv3_ceil_div(rows, 128),
                     (long long)dsv3_ceil_div(cols, 128));
      return -1;
    }
    w->scale = s->data;
  } else if (t->dtype != DSV3_BF16 && t->dtype != DSV3_F16 && t->dtype != DSV3_F32) {
    dsv3_error_set("%s: tensor %s: dtype %s is not a weight dtype", b->path, name, dsv3_dtype_name(t->dtype));
    return -1;
  }
  return 0;
}

static int bind_vec(binder *b, dsv3_vec *v, int64_t n, int required, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bind_vec(binder *b, dsv3_vec *v, int64_t n, int required, const char *fmt, ...) {
  char name[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const dsv3_tensor *t = find(b, name, required);
  v->data = NULL;
  if (!t) return required ? -1 : 0;
  if (t->numel != (uint64_t)n || !dsv3_dtype_is_float(t->dtype) || t->dtype == DSV3_F8_E4M3) {
    dsv3_error_set("%s: tensor %s: expected %lld float values", b->path, name, (long long)n);
    return -1;
  }
  v->data = t->data;
  v->dtype = t->dtype;
  return 0;
}

void dsv3_model_free(dsv3_model *m) {
  if (!m) return;
  for (int64_t l = 0; m->layers && l < m->n_layers; l++) {
    free(m->layers[l].ew1);
    free(m->layers[l].ew2);
    free(m->layers[l].ew3);
    free(m->layers[l].wkv_b_f32);
  }
  free(m->layers);
  free(m->rope_cos);
  free(m->rope_sin);
  dsv3_ckpt_close(m->ck);
  free(m);
}

int dsv3_model_load(const char *ckpt, const char *config_path, int64_t max_seq_len, dsv3_model **out) {
  return dsv3_model_load_rank(ckpt, config_path, max_seq_len, 0, 1, out);
}

int dsv3_model_load_rank(const char *ckpt, const char *config_path, int64_t max_seq_len, int rank, int world,
                         dsv3_model **out) {
  *out = NULL;
  dsv3_model *m = dsv3_xcalloc(1, sizeof *m);
  if (dsv3_ckpt_open(ckpt, &m->ck) != 0) goto fail;
  if (dsv3_ckpt_require_index(m->ck, ckpt, NULL, NULL) != 0) goto fail; /* as cast and convert */
  if (config_path) {
    if (dsv3_config_load(config_path, &m->cfg) != 0) goto fail;
  } else if (dsv3_ckpt_config(m->ck)) {
    m->cfg = *dsv3_ckpt_config(m->ck);
  } else {
    dsv3_error_set("%s: no config.json (pass --config)", ckpt);
    goto fail;
  }
  if (world == 1 && dsv3_ckpt_mp(m->ck) > 1) {
    dsv3_error_set("%s: model-parallel degree %d: one process runs mp 1 (reshard with dsv3-convert --mp 1, or run %d "
                   "ranks: --gpus %d)",
                   ckpt, dsv3_ckpt_mp(m->ck), dsv3_ckpt_mp(m->ck), dsv3_ckpt_mp(m->ck));
    goto fail;
  }
  if (world > 1 && (dsv3_ckpt_layout(m->ck) != DSV3_LAYOUT_RUNTIME || dsv3_ckpt_mp(m->ck) != world)) {
    dsv3_error_set("%s: %d ranks need the runtime layout with mp %d (model{r}-mp%d.safetensors), this checkpoint is %s "
                   "with mp %d (reshard with dsv3-convert --mp %d)",
                   ckpt, world, world, world, dsv3_ckpt_layout_name(dsv3_ckpt_layout(m->ck)), dsv3_ckpt_mp(m->ck), world);
    goto fail;
  }
  if (rank < 0 || rank >= world) {
    dsv3_error_set("%s: rank %d outside [0, %d)", ckpt, rank, world);
    goto fail;
  }
  const dsv3_config *c = &m->cfg;
  binder b = {m, ckpt, world > 1 ? rank : 0};
  int64_t D = c->hidden_size, qk = dsv3_config_qk_head_dim(c);
  /* the official convert.py's divisibility rules: a clear error instead of a shape mismatch */
  {
    const struct {
      const char *what;
      int64_t v;
    } dv[] = {{"num_attention_heads", c->num_attention_heads}, {"vocab_size", c->vocab_size},
              {"intermediate_size", c->intermediate_size}, {"n_routed_experts", c->n_routed_experts},
              {"moe_intermediate_size * n_shared_experts", c->moe_intermediate_size * c->n_shared_experts}};
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++)
      if (dv[i].v % world) {
        dsv3_error_set("%s: %s = %lld is not divisible by %d ranks", ckpt, dv[i].what, (long long)dv[i].v, world);
        goto fail;
      }
  }
  m->mp_rank = rank, m->mp_world = world;
  m->n_local_heads = c->num_attention_heads / world;
  m->local_inter = c->intermediate_size / world;
  m->local_vocab = c->vocab_size / world, m->vocab0 = (int64_t)rank * m->local_vocab;
  m->n_local_experts = c->n_routed_experts / world, m->expert0 = (int64_t)rank * m->n_local_experts;
  const int64_t H = m->n_local_heads, V = m->local_vocab;
  if (bind_vec(&b, &m->embed, V * D, 1, "model.embed_tokens.weight") || bind_vec(&b, &m->norm, D, 1, "model.norm.weight") ||
      bind_mat(&b, &m->head, V, D, "lm_head.weight"))
    goto fail;
  m->n_layers = c->num_hidden_layers;
  m->layers = dsv3_xcalloc((size_t)m->n_layers, sizeof *m->layers);
  for (int64_t l = 0; l < m->n_layers; l++) {
    dsv3_layer *L = &m->layers[l];
    const char *p = "model.layers";
    long long li = (long long)l;
    if (bind_vec(&b, &L->attn_norm, D, 1, "%s.%lld.input_layernorm.weight", p, li) ||
        bind_vec(&b, &L->ffn_norm, D, 1, "%s.%lld.post_attention_layernorm.weight", p, li) ||
        bind_vec(&b, &L->kv_norm, c->kv_lora_rank, 1, "%s.%lld.self_attn.kv_a_layernorm.weight", p, li) ||
        bind_mat(&b, &L->wkv_a, c->kv_lora_rank + c->qk_rope_head_dim, D, "%s.%lld.self_attn.kv_a_proj_with_mqa.weight", p, li) ||
        bind_mat(&b, &L->wkv_b, H * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, "%s.%lld.self_attn.kv_b_proj.weight", p, li) ||
        bind_mat(&b, &L->wo, D, H * c->v_head_dim, "%s.%lld.self_attn.o_proj.weight", p, li))
      goto fail;
    if (c->q_lora_rank > 0) {
      if (bind_mat(&b, &L->wq_a, c->q_lora_rank, D, "%s.%lld.self_attn.q_a_proj.weight", p, li) ||
          bind_vec(&b, &L->q_norm, c->q_lora_rank, 1, "%s.%lld.self_attn.q_a_layernorm.weight", p, li) ||
          bind_mat(&b, &L->wq_b, H * qk, c->q_lora_rank, "%s.%lld.self_attn.q_b_proj.weight", p, li))
        goto fail;
    } else if (bind_mat(&b, &L->wq, H * qk, D, "%s.%lld.self_attn.q_proj.weight", p, li)) {
      goto fail;
    }
    L->moe = dsv3_config_layer_is_moe(c, l);
    if (!L->moe) {
      int64_t I = m->local_inter;
      if (bind_mat(&b, &L->w1, I, D, "%s.%lld.mlp.gate_proj.weight", p, li) ||
          bind_mat(&b, &L->w2, D, I, "%s.%lld.mlp.down_proj.weight", p, li) ||
          bind_mat(&b, &L->w3, I, D, "%s.%lld.mlp.up_proj.weight", p, li))
        goto fail;
      continue;
    }
    int64_t E = c->n_routed_experts, I = c->moe_intermediate_size;
    if (bind_mat(&b, &L->gate, E, D, "%s.%lld.mlp.gate.weight", p, li) ||
        bind_vec(&b, &L->gate_bias, E, 0, "%s.%lld.mlp.gate.e_score_correction_bias", p, li))
      goto fail;
    L->ew1 = dsv3_xcalloc((size_t)E, sizeof(dsv3_wmat));
    L->ew2 = dsv3_xcalloc((size_t)E, sizeof(dsv3_wmat));
    L->ew3 = dsv3_xcalloc((size_t)E, sizeof(dsv3_wmat));
    for (int64_t e = m->expert0; e < m->expert0 + m->n_local_experts; e++)
      if (bind_mat(&b, &L->ew1[e], I, D, "%s.%lld.mlp.experts.%lld.gate_proj.weight", p, li, (long long)e) ||
          bind_mat(&b, &L->ew2[e], D, I, "%s.%lld.mlp.experts.%lld.down_proj.weight", p, li, (long long)e) ||
          bind_mat(&b, &L->ew3[e], I, D, "%s.%lld.mlp.experts.%lld.up_proj.weight", p, li, (long long)e))
        goto fail;
    if (c->n_shared_experts > 0) {
      int64_t S = I * c->n_shared_experts / world;
      if (bind_mat(&b, &L->sw1, S, D, "%s.%lld.mlp.shared_experts.gate_proj.weight", p, li) ||
          bind_mat(&b, &L->sw2, D, S, "%s.%lld.mlp.shared_experts.down_proj.weight", p, li) ||
          bind_mat(&b, &L->sw3, S, D, "%s.%lld.mlp.shared_experts.up_proj.weight", p, li))
        goto fail;
    }
  }
  /* RoPE and the softmax scale as the official demo, whose max_seq_len (16384 by default)
   * exceeds original_seq_len, so YaRN and its mscale are on whenever rope_scaling asks. */
  m->max_seq_len = max_seq_len > 0 ? max_seq_len : 4096;
  const dsv3_rope_scaling *rs = &c->rope_scaling;
  int yarn = rs->type[0] && !strcmp(rs->type, "yarn") && rs->factor > 1;
  dsv3_rope_params rp = {c->qk_rope_head_dim, m->max_seq_len, c->rope_theta, yarn ? rs->factor : 1.0,
                         rs->original_max_position_embeddings, rs->beta_fast, rs->beta_slow};
  size_t half = (size_t)c->qk_rope_head_dim / 2;
  m->rope_cos = dsv3_xmalloc((size_t)m->max_seq_len * half * sizeof(float));
  m->rope_sin = dsv3_xmalloc((size_t)m->max_seq_len * half * sizeof(float));
  dsv3_rope_tables(&rp, m->rope_cos, m->rope_sin);
  m->softmax_scale = (float)pow((double)dsv3_config_qk_head_dim(c), -0.5);
  if (yarn) {
    double ms = 0.1 * rs->mscale * log(rs->factor) + 1.0;
    m->softmax_scale = (float)(m->softmax_scale * ms * ms);
  }
  *out = m;
  return 0;
fail:
  dsv3_model_free(m);
  return -1;
}

dsv3_cache *dsv3_cache_new(const dsv3_model *m, int64_t max_seq) {
  dsv3_cache *c = dsv3_xcalloc(1, sizeof *c);
  c->max_seq = max_seq;
  c->kv = dsv3_xcalloc((size_t)m->n_layers, sizeof(float *));
  c->pe = dsv3_xcalloc((size_t)m->n_layers, sizeof(float *));
  for (int64_t l = 0; l < m->n_layers; l++) {
    c->kv[l] = dsv3_xmalloc((size_t)(max_seq * m->cfg.kv_lora_rank) * sizeof(float));
    c->pe[l] = dsv3_xmalloc((size_t)(max_seq * m->cfg.qk_rope_head_dim) * sizeof(float));
  }
  return c;
}

void dsv3_cache_free(const dsv3_model *m, dsv3_cache *c) {
  if (!c) return;
  for (int64_t l = 0; l < m->n_layers; l++) {
    free(c->kv[l]);
    free(c->pe[l]);
  }
  free(c->kv);
  free(c->pe);
  free(c);
}

/* ------------------------------------------------------------------ attention */
typedef struct {
  const dsv3_model *m;
  const dsv3_layer *L;
  const dsv3_cache *c;
  const float *q;   /* [n, H, qk] (rope applied to the pe part) */
  float *o;         /* [n, H, v] */
  int64_t n, start;
} attn_ctx;

static int attn_task(void *vctx, size_t task, int thread) {
  (void)thread;
  attn_ctx *a = vctx;
  const dsv3_config *cf = &a->m->cfg;
  int64_t H = cf->num_attention_heads, nope = cf->qk_nope_head_dim, R = cf->qk_rope_head_dim;
  int64_t C = cf->kv_lora_rank, V = cf->v_head_dim, qk = nope + R;
  int64_t t = (int64_t)task / H, h = (int64_t)task % H, pos = a->start + t, S = pos + 1;
  const float *W = a->L->wkv_b_f32 + h * (nope + V) * C; /* [nope + V, C] of head h */
  const float *q = a->q + (t * H + h) * qk;
  float *ql = dsv3_xmalloc((size_t)C * sizeof(float)), *p = dsv3_xmalloc((size_t)S * sizeof(float));
  float *ol = dsv3_xcalloc((size_t)C, sizeof(float));
  /* absorb: q_lat[c] = sum_d q_nope[d] * W[d][c] */
  for (int64_t c = 0; c < C; c++) ql[c] = 0;
  const dsv3_model *m = a->m;
  for (int64_t d = 0; d < nope; d++)
    for (int64_t c = 0; c < C; c++) ql[c] += q[d] * W[d * C + c];
  rnd(m, ql, C);
  for (int64_t s = 0; s < S; s++) {
    const float *kv = a->c->kv[a->L - m->layers] + s * C, *pe = a->c->pe[a->L - m->layers] + s * R;
    float acc = 0, acc2 = 0;
    for (int64_t c = 0; c < C; c++) acc += ql[c] * kv[c];
    for (int64_t r = 0; r < R; r++) acc2 += q[nope + r] * pe[r];
    /* official: (einsum + einsum) * softmax_scale, each step a bf16 tensor */
    p[s] = rnd1(m, rnd1(m, rnd1(m, acc) + rnd1(m, acc2)) * m->softmax_scale);
  }
  dsv3_softmax(p, S);
  rnd(m, p, S);
  for (int64_t s = 0; s < S; s++) {
    const float *kv = a->c->kv[a->L - m->layers] + s * C;
    for (int64_t c = 0; c < C; c++) ol[c] += p[s] * kv[c];
  }
  rnd(m, ol, C);
  float *o = a->o + (t * H + h) * V;
  for (int64_t v = 0; v < V; v++) {
    const float *wv = W + (nope + v) * C;
    float acc = 0;
    for (int64_t c = 0; c < C; c++) acc += ol[c] * wv[c];
    o[v] = rnd1(m, acc);
  }
  free(ql);
  free(p);
  free(ol);
  return 0;
}

static void attention(dsv3_model *m, dsv3_layer *L, dsv3_cache *c, const float *x, int64_t n, int64_t start, float *out) {
  const dsv3_config *cf = &m->cfg;
  int64_t D = cf->hidden_size, H = cf->num_attention_heads, nope = cf->qk_nope_head_dim, R = cf->qk_rope_head_dim;
  int64_t C = cf->kv_lora_rank, V = cf->v_head_dim, qk = nope + R;
  int64_t li = L - m->layers;
  if (!L->wkv_b_f32) {
    L->wkv_b_f32 = dsv3_xmalloc((size_t)(L->wkv_b.rows * C) * sizeof(float));
    for (int64_t r = 0; r < L->wkv_b.rows; r++) dsv3_wmat_row(&L->wkv_b, r, L->wkv_b_f32 + r * C);
  }
  float *q = dsv3_xmalloc((size_t)(n * H * qk) * sizeof(float));
  if (cf->q_lora_rank > 0) {
    float *qa = dsv3_xmalloc((size_t)(n * cf->q_lora_rank) * sizeof(float));
    dsv3_linear(qa, x, n, &L->wq_a);
    rnd(m, qa, n * cf->q_lora_rank);
    dsv3_rmsnorm(qa, qa, L->q_norm.data, L->q_norm.dtype, n, cf->q_lora_rank, (float)cf->rms_norm_eps);
    rnd(m, qa, n * cf->q_lora_rank);
    dsv3_linear(q, qa, n, &L->wq_b);
    free(qa);
  } else {
    dsv3_linear(q, x, n, &L->wq);
  }
  rnd(m, q, n * H * qk);
  float *kv = dsv3_xmalloc((size_t)(n * (C + R)) * sizeof(float));
  dsv3_linear(kv, x, n, &L->wkv_a);
  rnd(m, kv, n * (C + R));
  for (int64_t t = 0; t < n; t++) {
    int64_t pos = start + t;
    for (int64_t h = 0; h < H; h++) {
      dsv3_rope_apply(q + (t * H + h) * qk + nope, R, m->rope_cos, m->rope_sin, pos);
      rnd(m, q + (t * H + h) * qk + nope, R);
    }
    dsv3_rmsnorm(c->kv[li] + pos * C, kv + t * (C + R), L->kv_norm.data, L->kv_norm.dtype, 1, C, (float)cf->rms_norm_eps);
    rnd(m, c->kv[li] + pos * C, C);
    memcpy(c->pe[li] + pos * R, kv + t * (C + R) + C, (size_t)R * sizeof(float));
    dsv3_rope_apply(c->pe[li] + pos * R, R, m->rope_cos, m->rope_sin, pos);
    rnd(m, c->pe[li] + pos * R, R);
  }
  float *o = dsv3_xmalloc((size_t)(n * H * V) * sizeof(float));
  attn_ctx a = {m, L, c, q, o, n, start};
  dsv3_parallel_for((size_t)(n * H), m->threads, attn_task, &a);
  dsv3_linear(out, o, n, &L->wo);
  rnd(m, out, n * D);
  free(q);
  free(kv);
  free(o);
}

/* ------------------------------------------------------------------ MLP / MoE */
static void mlp(const dsv3_model *m, const dsv3_wmat *w1, const dsv3_wmat *w2, const dsv3_wmat *w3, const float *x,
                int64_t n, float *out) {
  int64_t I = w1->rows;
  float *g = dsv3_xmalloc((size_t)(n * I) * sizeof(float)), *u = dsv3_xmalloc((size_t)(n * I) * sizeof(float));
  dsv3_linear(g, x, n, w1);
  dsv3_linear(u, x, n, w3);
  if (m->bf16_act) { /* silu(bf16) is a bf16 tensor, then the product */
    rnd(m, g, n * I);
    rnd(m, u, n * I);
    for (int64_t i = 0; i < n * I; i++) g[i] = rnd1(m, rnd1(m, g[i] / (1.0f + expf(-g[i]))) * u[i]);
  } else {
    dsv3_silu_mul(g, g, u, n * I);
  }
  dsv3_linear(out, g, n, w2);
  rnd(m, out, n * w2->rows);
  free(g);
  free(u);
}

static void moe(dsv3_model *m, dsv3_layer *L, const float *x, int64_t n, float *out) {
  const dsv3_config *cf = &m->cfg;
  int64_t D = cf->hidden_size, E = cf->n_routed_experts, K = cf->num_experts_per_tok;
  float *logits = dsv3_xmalloc((size_t)(n * E) * sizeof(float));
  dsv3_linear(logits, x, n, &L->gate);
  rnd(m, logits, n * E);
  int32_t *idx = dsv3_xmalloc((size_t)(n * K) * sizeof(int32_t));
  float *wt = dsv3_xmalloc((size_t)(n * K) * sizeof(float));
  float *bias = NULL;
  if (L->gate_bias.data) {
    bias = dsv3_xmalloc((size_t)E * sizeof(float));
    dsv3_to_f32(L->gate_bias.dtype, L->gate_bias.data, bias, (size_t)E);
  }
  dsv3_route_params rp = {E, K, cf->n_group, cf->topk_group, strcmp(cf->scoring_func, "softmax") != 0,
                          (float)cf->routed_scaling_factor, m->bf16_act};

  for (int64_t t = 0; t < n; t++) dsv3_route(&rp, logits + t * E, bias, idx + t * K, wt + t * K);
  /* routed experts in index order over the tokens that chose them, then the shared experts */
  float *yr = dsv3_xcalloc((size_t)(n * D), sizeof(float));
  float *xs = dsv3_xmalloc((size_t)(n * D) * sizeof(float)), *ys = dsv3_xmalloc((size_t)(n * D) * sizeof(float));
  int64_t *who = dsv3_xmalloc((size_t)n * sizeof(int64_t));
  float *ww = dsv3_xmalloc((size_t)n * sizeof(float));
  for (int64_t e = 0; e < E; e++) {
    int64_t cnt = 0;
    for (int64_t t = 0; t < n; t++)
      for (int64_t k = 0; k < K; k++)
        if (idx[t * K + k] == e) {
          memcpy(xs + cnt * D, x + t * D, (size_t)D * sizeof(float));
          who[cnt] = t;
          ww[cnt++] = wt[t * K + k];
        }
    if (!cnt) continue;
    mlp(m, &L->ew1[e], &L->ew2[e], &L->ew3[e], xs, cnt, ys);
    for (int64_t j = 0; j < cnt; j++)
      for (int64_t d = 0; d < D; d++) yr[who[j] * D + d] = rnd1(m, yr[who[j] * D + d] + rnd1(m, ys[j * D + d] * ww[j]));
  }
  if (L->sw1.rows) mlp(m, &L->sw1, &L->sw2, &L->sw3, x, n, out);
  else memset(out, 0, (size_t)(n * D) * sizeof(float));
  for (int64_t i = 0; i < n * D; i++) out[i] = rnd1(m, out[i] + yr[i]);
  free(yr);
  free(xs);
  free(ys);
  free(who);
  free(ww);
  free(bias);
  free(logits);
  free(idx);
  free(wt);
}

/* ------------------------------------------------------------------ forward */
int dsv3_forward(dsv3_model *m, dsv3_cache *c, const int32_t *tokens, int64_t n, int64_t start_pos, float *logits,
                 int all_logits) {
  const dsv3_config *cf = &m->cfg;
  int64_t D = cf->hidden_size, V = cf->vocab_size;
  if (start_pos != c->len || start_pos + n > c->max_seq || start_pos + n > m->max_seq_len) {
    dsv3_error_set("sequence of %lld tokens exceeds --max-seq-len %lld", (long long)(start_pos + n),
                   (long long)(c->max_seq < m->max_seq_len ? c->max_seq : m->max_seq_len));
    return -1;
  }
  for (int64_t t = 0; t < n; t++)
    if (tokens[t] < 0 || tokens[t] >= V) {
      dsv3_error_set("token id %d out of the vocabulary (%lld)", tokens[t], (long long)V);
      return -1;
    }
  float *x = dsv3_xmalloc((size_t)(n * D) * sizeof(float)), *h = dsv3_xmalloc((size_t)(n * D) * sizeof(float));
  float *y = dsv3_xmalloc((size_t)(n * D) * sizeof(float));
  dsv3_embed(x, tokens, n, m->embed.data, m->embed.dtype, D);
  rnd(m, x, n * D);
  float eps = (float)cf->rms_norm_eps;
  for (int64_t l = 0; l < m->n_layers; l++) {
    dsv3_layer *L = &m->layers[l];
    dsv3_rmsnorm(h, x, L->attn_norm.data, L->attn_norm.dtype, n, D, eps);
    rnd(m, h, n * D);
    attention(m, L, c, h, n, start_pos, y);
    for (int64_t i = 0; i < n * D; i++) x[i] = rnd1(m, x[i] + y[i]);
    dsv3_rmsnorm(h, x, L->ffn_norm.data, L->ffn_norm.dtype, n, D, eps);
    rnd(m, h, n * D);
    if (L->moe) moe(m, L, h, n, y);
    else mlp(m, &L->w1, &L->w2, &L->w3, h, n, y);
    for (int64_t i = 0; i < n * D; i++) x[i] = rnd1(m, x[i] + y[i]);
  }
  c->len = start_pos + n;
  if (logits) {
    int64_t first = all_logits ? 0 : n - 1, cnt = n - first;
    dsv3_rmsnorm(h, x + first * D, m->norm.data, m->norm.dtype, cnt, D, eps);
    rnd(m, h, cnt * D);
    dsv3_linear(logits, h, cnt, &m->head);
    rnd(m, logits, cnt * V);
  }
  free(x);
  free(h);
  free(y);
  return 0;
}

static uint64_t wbytes(const dsv3_wmat *w) {
  if (!w->rows) return 0;
  uint64_t b = (uint64_t)(w->rows * w->cols) * dsv3_dtype_size(w->dtype);
  if (w->scale) b += (uint64_t)(dsv3_ceil_div(w->rows, 128) * dsv3_ceil_div(w->cols, 128)) * 4;
  return b;
}

uint64_t dsv3_model_bytes_per_token(const dsv3_model *m) {
  uint64_t b = wbytes(&m->head) + (uint64_t)m->cfg.hidden_size * 2; /* head + one embedding row */
  for (int64_t l = 0; l < m->n_layers; l++) {
    const dsv3_layer *L = &m->layers[l];
    b += wbytes(&L->wq) + wbytes(&L->wq_a) + wbytes(&L->wq_b) + wbytes(&L->wkv_a) + wbytes(&L->wkv_b) + wbytes(&L->wo);
    if (L->moe)
      b += wbytes(&L->gate) + wbytes(&L->sw1) + wbytes(&L->sw2) + wbytes(&L->sw3) +
           (uint64_t)m->cfg.num_experts_per_tok * (wbytes(&L->ew1[0]) + wbytes(&L->ew2[0]) + wbytes(&L->ew3[0]));
    else
      b += wbytes(&L->w1) + wbytes(&L->w2) + wbytes(&L->w3);
  }
  return b;
}
