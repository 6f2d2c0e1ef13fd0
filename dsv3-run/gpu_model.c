/* gpu_model.c - dsv3-run's GPU backend (see gpu_model.h): the forward pass of model.c with the
 * kernels of kernels/cuda, weights resident, decode steps as CUDA graphs. */
#include "gpu_model.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DSV3_HAVE_NCCL
#include <nccl.h>
#endif

#include "dsv3_cuda.h"
#include "gpu_dist.h"
#include "util.h"

#define PREFILL_CHUNK 2048 /* tokens per forward pass of a long prompt (bounds activations; the experts are read once per chunk) */

typedef struct {
  const void *data;
  dsv3_dtype dtype;
} gvec;

typedef struct {
  int moe;
  gvec attn_norm, ffn_norm, q_norm, kv_norm;
  dsv3_wmat wq, wq_a, wq_b, wkv_a, wo, w1, w2, w3, gate, sw1, sw2, sw3;
  uint16_t *wkvb; /* kv_b_proj as bf16 [H*(nope+V), C] for the absorbed attention */
  float *gate_bias;
  dsv3_cuda_expert *ex_dev, *ex_host; /* n_routed_experts entries, then the shared expert if merged */
  dsv3_dtype edt;
  int shared_slot; /* the shared expert is entry n_routed_experts: decode runs it with the routed ones */
  uint16_t *kv, *pe; /* cache [max_batch, max_seq, C] / [.., R] */
} glayer;

struct dsv3_gpu {
  const dsv3_model *m;
  int device;
  cudaStream_t st;
  dsv3_cuda_ctx *ctx;
  /* decode: each layer's kv path (kv_a, the cache write) on a second stream beside the q path,
   * forked and joined with events (captured into the graphs as two branches); its own context
   * so the two paths never share scratch.  DSV3_GPU_KV_STREAM=0: one stream. */
  cudaStream_t st2;
  dsv3_cuda_ctx *ctx2;
  cudaEvent_t ev_fork, ev_join;
  int64_t max_batch, max_seq;
  glayer *L;
  gvec embed, norm;
  dsv3_wmat head;
  float *cos_t, *sin_t;
  void **allocs; /* every weight/cache allocation, for free */
  int64_t nallocs, cap_allocs;
  uint64_t wbytes, cbytes;
  /* activations for `cap` tokens */
  int64_t cap;
  float *x, *h, *y, *qa, *q, *kva, *ql, *ol, *o, *glog, *wts, *logits;
  uint16_t *hb; /* h in bf16 (prefill chunks: the norms write it for the GEMMs that read h) */
  uint16_t *ob; /* o in bf16 (prefill chunks: the attention writes it for o_proj) */
  int32_t *idx, *tok, *seqb, *pos, *len; /* tok .. len: rows of in [4][cap] */
  int32_t *in;                           /* the step's inputs on the device, one copy from hin */
  int32_t *hin, *hids;                   /* pinned host: inputs [4][cap], sampled ids [cap] */
  int64_t logit_rows;
  /* model parallelism */
  int rank, world;
  struct dsv3_dist *dist;        /* rank 0: sends the work */
  struct dsv3_dist *follow_dist; /* every rank: its connection */
  void *comm; /* ncclComm_t */
  int comm_on;
  float *lgall;  /* all-gathered logits [world, logit_rows, local vocab] */
  float *lgrow;  /* the same reordered to [logit_rows, vocab] on the device (several ranks) */
  int32_t *ids;  /* tokens sampled on the device [logit_rows] */
  float temp, top_p; /* dsv3_gpu_set_sampling */
  uint64_t seed;
  /* a prefill chunk (> DSV3_GPU_GRAPH_MAX tokens of one sequence at consecutive positions):
   * its sequence and first position, for dsv3_cuda_mla_prefill; -1 otherwise */
  int prefill_seq, prefill_pos0;
  int64_t norm_r0; /* the final norm's first row: 0, or (a prompt chunk) the last row or none when no head reads the rest */
  /* graphs by token count */
  int graphs_on;
  cudaGraphExec_t graph[DSV3_GPU_GRAPH_MAX + 1];
  char warm[DSV3_GPU_GRAPH_MAX + 1];
  uint64_t graph_moves; /* dsv3_cuda_ctx_scratch_moves (both contexts) when the graphs were captured */
};

#define TRY(x)                                                                                                         \
  do {                                                                                                                 \
    if ((x) != 0) return -1;                                                                                           \
  } while (0)
#define CUDA_TRY(what, call)                                                                                           \
  do {                                                                                                                 \
    cudaError_t e_ = (call);                                                                                           \
    if (e_ != cudaSuccess) {                                                                                           \
      dsv3_error_set("cuda: %s: %s", what, cudaGetErrorString(e_));                                                    \
      return -1;                                                                                                       \
    }                                                                                                                  \
  } while (0)

static int dev_alloc(dsv3_gpu *g, void **p, size_t bytes, const char *what) {
  if (cudaMalloc(p, bytes ? bytes : 1) != cudaSuccess) {
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    dsv3_error_set("cuda: out of device memory allocating %s (%.1f MB; %.2f GB free of %.2f GB)", what, bytes / 1048576.0,
                   fr / 1073741824.0, tot / 1073741824.0);
    *p = NULL;
    return -1;
  }
  if (g->nallocs == g->cap_allocs) {
    g->cap_allocs = g->cap_allocs ? 2 * g->cap_allocs : 256;
    g->allocs = dsv3_xrealloc(g->allocs, (size_t)g->cap_allocs * sizeof(void *));
  }
  g->allocs[g->nallocs++] = *p;
  return 0;
}

static int upload(dsv3_gpu *g, void **dst, const void *src, size_t bytes, const char *what) {
  TRY(dev_alloc(g, dst, bytes, what));
  CUDA_TRY(what, cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice));
  g->wbytes += bytes;
  return 0;
}

static uint64_t mat_bytes(const dsv3_wmat *w) {
  return (uint64_t)(w->rows * w->cols) * dsv3_dtype_size(w->dtype);
}
static uint64_t scale_bytes(const dsv3_wmat *w) {
  return w->rows && w->dtype == DSV3_F8_E4M3 ? (uint64_t)(((w->rows + 127) / 128) * ((w->cols + 127) / 128)) * 4 : 0;
}

static int up_mat(dsv3_gpu *g, dsv3_wmat *d, const dsv3_wmat *s, const char *what) {
  *d = *s;
  if (!s->rows) return 0;
  void *p;
  TRY(upload(g, &p, s->data, mat_bytes(s), what));
  d->data = p;
  if (s->dtype == DSV3_F8_E4M3) {
    TRY(upload(g, &p, s->scale, scale_bytes(s), what));
    d->scale = p;
  }
  return 0;
}
static int up_vec(dsv3_gpu *g, gvec *d, const dsv3_vec *s, int64_t n, const char *what) {
  d->dtype = s->dtype;
  d->data = NULL;
  if (!s->data) return 0;
  void *p;
  TRY(upload(g, &p, s->data, (size_t)n * dsv3_dtype_size(s->dtype), what));
  d->data = p;
  return 0;
}

static uint64_t model_bytes(const dsv3_model *m) {
  const dsv3_config *c = &m->cfg;
  uint64_t b = mat_bytes(&m->head) + scale_bytes(&m->head) +
               (uint64_t)(m->local_vocab * c->hidden_size) * dsv3_dtype_size(m->embed.dtype);
  for (int64_t l = 0; l < m->n_layers; l++) {
    const dsv3_layer *L = &m->layers[l];
    const dsv3_wmat *ws[] = {&L->wq, &L->wq_a, &L->wq_b, &L->wkv_a, &L->wkv_b, &L->wo, &L->w1, &L->w2, &L->w3,
                             &L->gate, &L->sw1, &L->sw2, &L->sw3};
    for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
      if (ws[i]->rows) b += mat_bytes(ws[i]) + scale_bytes(ws[i]);
    b += (uint64_t)L->wkv_b.rows * (uint64_t)L->wkv_b.cols * 2;
    if (L->moe)
      for (int64_t e = 0; e < c->n_routed_experts; e++)
        b += mat_bytes(&L->ew1[e]) + mat_bytes(&L->ew2[e]) + mat_bytes(&L->ew3[e]) + scale_bytes(&L->ew1[e]) +
             scale_bytes(&L->ew2[e]) + scale_bytes(&L->ew3[e]);
  }
  return b;
}

/* captured graphs hold buffer addresses: drop them when the buffers move (warm stays: the
 * buffers only grow, so a later capture needs no allocation) */
static void drop_graphs(dsv3_gpu *g) {
  for (int i = 0; i <= DSV3_GPU_GRAPH_MAX; i++) {
    if (g->graph[i]) cudaGraphExecDestroy(g->graph[i]);
    g->graph[i] = NULL;
  }
}

static void free_acts(dsv3_gpu *g) {
  void *ps[] = {g->x, g->h, g->y, g->qa, g->q, g->kva, g->ql, g->ol, g->o, g->glog, g->wts, g->logits,
                g->idx, g->in, g->lgall, g->lgrow, g->ids, g->hb, g->ob};
  for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) cudaFree(ps[i]);
  cudaFreeHost(g->hin), cudaFreeHost(g->hids);
  g->x = g->h = g->y = g->qa = g->q = g->kva = g->ql = g->ol = g->o = g->glog = g->wts = g->logits = NULL;
  g->idx = g->tok = g->seqb = g->pos = g->len = g->in = g->hin = g->hids = NULL;
  g->lgall = g->lgrow = NULL;
  g->ids = NULL;
  g->hb = g->ob = NULL;
  drop_graphs(g); /* they point at the old buffers */
  memset(g->warm, 0, sizeof g->warm);
  g->cap = 0;
}

static int ensure_acts(dsv3_gpu *g, int64_t n) {
  if (n <= g->cap) return 0;
  CUDA_TRY("activations", cudaStreamSynchronize(g->st));
  free_acts(g);
  const dsv3_config *c = &g->m->cfg;
  int64_t cap = n < DSV3_GPU_GRAPH_MAX ? DSV3_GPU_GRAPH_MAX : n;
  int64_t D = c->hidden_size, H = g->m->n_local_heads, qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
  int64_t C = c->kv_lora_rank, R = c->qk_rope_head_dim, E = c->n_routed_experts > 0 ? c->n_routed_experts : 1;
  int64_t K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1;
  g->logit_rows = cap < DSV3_GPU_GRAPH_MAX ? cap : DSV3_GPU_GRAPH_MAX;
  struct {
    void **p;
    int64_t n;
  } b[] = {{(void **)&g->x, cap * D * 4},
           {(void **)&g->h, cap * D * 4},
           {(void **)&g->hb, cap * D * 2},
           {(void **)&g->ob, cap * H * c->v_head_dim * 2},
           {(void **)&g->y, cap * D * 4},
           {(void **)&g->qa, cap * (c->q_lora_rank > 0 ? c->q_lora_rank : 1) * 4},
           {(void **)&g->q, cap * H * qk * 4},
           {(void **)&g->kva, cap * (C + R) * 4},
           {(void **)&g->ql, cap * H * C * 4},
           {(void **)&g->ol, cap * H * C * 4},
           {(void **)&g->o, cap * H * c->v_head_dim * 4},
           {(void **)&g->glog, cap * E * 4},
           {(void **)&g->wts, cap * (K + 1) * 4}, /* + a shared-expert slot */
           {(void **)&g->logits, g->logit_rows * g->m->local_vocab * 4},
           {(void **)&g->lgall, g->world > 1 ? g->logit_rows * c->vocab_size * 4 : 4},
           {(void **)&g->lgrow, g->world > 1 ? g->logit_rows * c->vocab_size * 4 : 4},
           {(void **)&g->ids, g->logit_rows * 4},
           {(void **)&g->idx, cap * (K + 1) * 4},
           {(void **)&g->in, cap * 4 * 4}};
  for (size_t i = 0; i < sizeof b / sizeof *b; i++)
    if (cudaMalloc(b[i].p, (size_t)b[i].n) != cudaSuccess) {
      (void)cudaGetLastError();
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      dsv3_error_set("cuda: out of device memory for the activations of %lld tokens (%.1f MB more; %.2f GB free)",
                     (long long)cap, b[i].n / 1048576.0, fr / 1073741824.0);
      free_acts(g);
      return -1;
    }
  /* token, sequence, position and length rows: pinned on the host, so that a step's inputs
   * reach the device in one asynchronous copy (four copies from pageable memory before) */
  g->tok = g->in, g->seqb = g->in + cap, g->pos = g->in + 2 * cap, g->len = g->in + 3 * cap;
  if (cudaMallocHost((void **)&g->hin, (size_t)cap * 4 * 4) != cudaSuccess ||
      cudaMallocHost((void **)&g->hids, (size_t)cap * 4) != cudaSuccess) {
    (void)cudaGetLastError();
    dsv3_error_set("cuda: cannot pin %.1f KB of host memory for the inputs of %lld tokens", cap * 20 / 1024.0,
                   (long long)cap);
    free_acts(g);
    return -1;
  }
  g->cap = cap;
  return 0;
}

void dsv3_gpu_free(dsv3_gpu *g) {
  if (!g) return;
  cudaSetDevice(g->device);
  if (g->st) cudaStreamSynchronize(g->st);
  free_acts(g);
  for (int64_t i = 0; i < g->nallocs; i++) cudaFree(g->allocs[i]);
  free(g->allocs);
  if (g->L)
    for (int64_t l = 0; l < g->m->n_layers; l++) free(g->L[l].ex_host);
  free(g->L);
  if (g->st2) cudaStreamSynchronize(g->st2);
  dsv3_cuda_ctx_free(g->ctx);
  dsv3_cuda_ctx_free(g->ctx2);
  if (g->ev_fork) cudaEventDestroy(g->ev_fork);
  if (g->ev_join) cudaEventDestroy(g->ev_join);
  if (g->st) cudaStreamDestroy(g->st);
  if (g->st2) cudaStreamDestroy(g->st2);
  free(g);
}

void dsv3_gpu_memory(const dsv3_gpu *g, uint64_t *weights, uint64_t *cache) {
  if (weights) *weights = g->wbytes;
  if (cache) *cache = g->cbytes;
}
void dsv3_gpu_set_graphs(dsv3_gpu *g, int on) { g->graphs_on = on; }

int dsv3_gpu_load(const dsv3_model *m, int64_t max_batch, int device, dsv3_gpu **out) {
  *out = NULL;
  int ndev = dsv3_cuda_device_count();
  if (device < 0 || device >= ndev) {
    dsv3_error_set("cuda: device %d not available (%d CUDA devices)", device, ndev);
    return -1;
  }
  const dsv3_config *c = &m->cfg;
  if (max_batch < 1) max_batch = 1;
  CUDA_TRY("set device", cudaSetDevice(device));
  /* everything up front: a clear error before any upload when it cannot fit */
  int64_t C = c->kv_lora_rank, R = c->qk_rope_head_dim;
  uint64_t need_w = model_bytes(m), need_c = (uint64_t)(m->n_layers * max_batch * m->max_seq_len * (C + R)) * 2;
  size_t fr = 0, tot = 0;
  CUDA_TRY("memory info", cudaMemGetInfo(&fr, &tot));
  if (need_w + need_c + (256u << 20) > fr) {
    dsv3_error_set("cuda: out of device memory: the model needs %.2f GB of weights + %.2f GB of KV cache (%lld sequences x "
                   "%lld positions), %.2f GB free of %.2f GB (lower --max-seq-len or the batch)",
                   need_w / 1e9, need_c / 1e9, (long long)max_batch, (long long)m->max_seq_len, fr / 1e9, tot / 1e9);
    return -1;
  }
  dsv3_gpu *g = dsv3_xcalloc(1, sizeof *g);
  g->m = m, g->device = device, g->max_batch = max_batch, g->max_seq = m->max_seq_len, g->graphs_on = 1;
  g->temp = 0.f, g->top_p = 1.f, g->seed = 0; /* greedy until dsv3_gpu_set_sampling */
  g->rank = m->mp_world > 1 ? m->mp_rank : 0, g->world = m->mp_world > 1 ? m->mp_world : 1, g->comm_on = 1;
  if (cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking) != cudaSuccess) {
    dsv3_error_set("cuda: cannot create a stream");
    free(g);
    return -1;
  }
  if (dsv3_cuda_ctx_new(g->st, &g->ctx)) goto fail;
  {
    const char *ks = getenv("DSV3_GPU_KV_STREAM");
    if (!(ks && !strcmp(ks, "0"))) {
      if (cudaStreamCreateWithFlags(&g->st2, cudaStreamNonBlocking) != cudaSuccess ||
          cudaEventCreateWithFlags(&g->ev_fork, cudaEventDisableTiming) != cudaSuccess ||
          cudaEventCreateWithFlags(&g->ev_join, cudaEventDisableTiming) != cudaSuccess) {
        dsv3_error_set("cuda: cannot create the kv stream: %s", cudaGetErrorString(cudaGetLastError()));
        goto fail;
      }
      if (dsv3_cuda_ctx_new(g->st2, &g->ctx2)) goto fail;
    }
  }
  int64_t D = c->hidden_size, H = m->n_local_heads, nope = c->qk_nope_head_dim;
  void *p;
  if (upload(g, &p, m->embed.data, (size_t)(m->local_vocab * D) * dsv3_dtype_size(m->embed.dtype), "embed_tokens")) goto fail;
  g->embed = (gvec){p, m->embed.dtype};
  if (up_vec(g, &g->norm, &m->norm, D, "model.norm") || up_mat(g, &g->head, &m->head, "lm_head")) goto fail;
  {
    size_t tb = (size_t)(m->max_seq_len * (R / 2)) * 4;
    if (upload(g, &p, m->rope_cos, tb, "rope cos")) goto fail;
    g->cos_t = p;
    if (upload(g, &p, m->rope_sin, tb, "rope sin")) goto fail;
    g->sin_t = p;
  }
  g->L = dsv3_xcalloc((size_t)m->n_layers, sizeof *g->L);
  for (int64_t l = 0; l < m->n_layers; l++) {
    const dsv3_layer *S = &m->layers[l];
    glayer *L = &g->L[l];
    char what[96];
    snprintf(what, sizeof what, "layer %lld", (long long)l);
    L->moe = S->moe;
    if (up_vec(g, &L->attn_norm, &S->attn_norm, D, what) || up_vec(g, &L->ffn_norm, &S->ffn_norm, D, what) ||
        up_vec(g, &L->q_norm, &S->q_norm, c->q_lora_rank, what) || up_vec(g, &L->kv_norm, &S->kv_norm, C, what) ||
        up_mat(g, &L->wq, &S->wq, what) || up_mat(g, &L->wq_a, &S->wq_a, what) || up_mat(g, &L->wq_b, &S->wq_b, what) ||
        up_mat(g, &L->wkv_a, &S->wkv_a, what) || up_mat(g, &L->wo, &S->wo, what) || up_mat(g, &L->w1, &S->w1, what) ||
        up_mat(g, &L->w2, &S->w2, what) || up_mat(g, &L->w3, &S->w3, what) || up_mat(g, &L->gate, &S->gate, what) ||
        up_mat(g, &L->sw1, &S->sw1, what) || up_mat(g, &L->sw2, &S->sw2, what) || up_mat(g, &L->sw3, &S->sw3, what))
      goto fail;
    /* kv_b_proj: bf16 once (the official absorb path keeps it so); the FP8 copy is dropped */
    {
      dsv3_wmat tmp;
      if (up_mat(g, &tmp, &S->wkv_b, what)) goto fail;
      if (dev_alloc(g, &p, (size_t)(S->wkv_b.rows * S->wkv_b.cols) * 2, what)) goto fail;
      L->wkvb = p;
      g->wbytes += (uint64_t)(S->wkv_b.rows * S->wkv_b.cols) * 2;
      /* uploads ran on the legacy stream, which a non-blocking stream does not wait for */
      if (cudaDeviceSynchronize() != cudaSuccess) {
        dsv3_error_set("cuda: upload of layer %lld: %s", (long long)l, cudaGetErrorString(cudaGetLastError()));
        goto fail;
      }
      if (dsv3_cuda_dequant(L->wkvb, &tmp, g->st)) goto fail;
      if (cudaDeviceSynchronize() != cudaSuccess || cudaStreamSynchronize(g->st) != cudaSuccess) {
        dsv3_error_set("cuda: kv_b_proj of layer %lld: %s", (long long)l, cudaGetErrorString(cudaGetLastError()));
        goto fail;
      }
      for (int64_t i = g->nallocs - 3; i < g->nallocs - 1; i++) /* tmp data + scale: free now */
        if (g->allocs[i] == tmp.data || g->allocs[i] == tmp.scale) {
          cudaFree(g->allocs[i]);
          g->allocs[i] = NULL;
        }
      g->wbytes -= mat_bytes(&S->wkv_b) + scale_bytes(&S->wkv_b);
    }
    if (S->moe) {
      if (S->gate_bias.data) {
        float *bias = dsv3_xmalloc((size_t)c->n_routed_experts * 4);
        dsv3_to_f32(S->gate_bias.dtype, S->gate_bias.data, bias, (size_t)c->n_routed_experts);
        int rc = upload(g, &p, bias, (size_t)c->n_routed_experts * 4, what);
        free(bias);
        if (rc) goto fail;
        L->gate_bias = p;
      }
      int64_t E = c->n_routed_experts;
      L->edt = S->ew1[m->expert0].dtype;
      L->ex_host = dsv3_xcalloc((size_t)E + 1, sizeof *L->ex_host); /* other ranks' experts: NULL */
      for (int64_t e = m->expert0; e < m->expert0 + m->n_local_experts; e++) {
        dsv3_wmat d1, d2, d3;
        if (S->ew1[e].dtype != L->edt || S->ew2[e].dtype != L->edt || S->ew3[e].dtype != L->edt ||
            (L->edt != DSV3_F8_E4M3 && L->edt != DSV3_BF16)) {
          dsv3_error_set("cuda: layer %lld expert %lld: experts must all be FP8 or all BF16", (long long)l, (long long)e);
          goto fail;
        }
        if (up_mat(g, &d1, &S->ew1[e], what) || up_mat(g, &d2, &S->ew2[e], what) || up_mat(g, &d3, &S->ew3[e], what))
          goto fail;
        L->ex_host[e] = (dsv3_cuda_expert){d1.data, d2.data, d3.data, d1.scale, d2.scale, d3.scale};
      }
      /* a whole shared expert of the experts' shape and dtype (not at mp > 1, where each rank
       * holds a slice of it) joins the decode launches of the routed experts as entry E */
      const int64_t I = c->moe_intermediate_size;
      L->shared_slot = L->sw1.rows == I && L->sw1.cols == D && L->sw3.rows == I && L->sw3.cols == D &&
                       L->sw2.rows == D && L->sw2.cols == I && L->sw1.dtype == L->edt && L->sw2.dtype == L->edt &&
                       L->sw3.dtype == L->edt;
      if (L->shared_slot)
        L->ex_host[E] =
            (dsv3_cuda_expert){L->sw1.data, L->sw2.data, L->sw3.data, L->sw1.scale, L->sw2.scale, L->sw3.scale};
      if (upload(g, &p, L->ex_host, (size_t)(E + 1) * sizeof *L->ex_host, what)) goto fail;
      L->ex_dev = p;
    }
    size_t cb = (size_t)(max_batch * g->max_seq * C) * 2, pb = (size_t)(max_batch * g->max_seq * R) * 2;
    if (dev_alloc(g, &p, cb, "kv cache")) goto fail;
    L->kv = p;
    if (dev_alloc(g, &p, pb, "kv cache")) goto fail;
    L->pe = p;
    g->cbytes += cb + pb;
  }
  if (cudaDeviceSynchronize() != cudaSuccess) {
    dsv3_error_set("cuda: upload: %s", cudaGetErrorString(cudaGetLastError()));
    goto fail;
  }
  {
    /* BF16 copies of the FP8 projection and dense / shared MLP weights for the prompt GEMMs
     * (dequantised once, not in every prefill chunk; dsv3_cuda_weight_cache), in the memory a
     * prefill chunk leaves free: its activations and scratch estimated per token (x, h, y, q,
     * o, ql, ol, the MoE's pair rows, the MLA keys and values, the dense MLP's hidden rows) for
     * PREFILL_CHUNK tokens, plus 2 GB.  DSV3_GPU_WCACHE=0: none. */
    const char *wce = getenv("DSV3_GPU_WCACHE");
    const int64_t K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1, V = c->v_head_dim;
    const uint64_t per_tok = (uint64_t)(4 * (4 * D + H * (nope + R) + 2 * H * C + H * V + 2 * c->intermediate_size) +
                                        K * (4 * D + 10 * c->moe_intermediate_size) + 2 * H * (nope + V));
    const uint64_t reserve = per_tok * PREFILL_CHUNK + (2ull << 30);
    uint64_t want = 0;
    for (int64_t l = 0; l < m->n_layers; l++) {
      const glayer *L = &g->L[l];
      const dsv3_wmat *ws[] = {&L->wq, &L->wq_a, &L->wq_b, &L->wkv_a, &L->wo, &L->w1, &L->w2, &L->w3, &L->sw1, &L->sw2, &L->sw3};
      for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
        if (ws[i]->rows && ws[i]->dtype == DSV3_F8_E4M3) want += (uint64_t)ws[i]->rows * (uint64_t)ws[i]->cols * 2;
    }
    size_t fr = 0, tot = 0;
    if (!(wce && !strcmp(wce, "0")) && want && cudaMemGetInfo(&fr, &tot) == cudaSuccess && fr > reserve)
      dsv3_cuda_weight_cache(g->ctx, (size_t)(fr - reserve < want ? fr - reserve : want));
  }
  *out = g;
  return 0;
fail:
  dsv3_gpu_free(g);
  return -1;
}

/* ------------------------------------------------------------------ forward */
/* sum over ranks, in place, on the compute stream (captured into the decode graphs) */
static int allreduce(dsv3_gpu *g, float *buf, int64_t count) {
  if (g->world == 1 || !g->comm_on) return 0;
#ifdef DSV3_HAVE_NCCL
  ncclResult_t r = ncclAllReduce(buf, buf, (size_t)count, ncclFloat, ncclSum, (ncclComm_t)g->comm, g->st);
  if (r != ncclSuccess) {
    dsv3_error_set("rank %d: NCCL all-reduce: %s", g->rank, ncclGetErrorString(r));
    return -1;
  }
  return 0;
#else
  (void)buf, (void)count;
  dsv3_error_set("built without NCCL");
  return -1;
#endif
}

/* h in float32 from the norm before layer L's attention (y: the residual it adds, or NULL), or
 * (NULL) its bf16 copy alone: a prompt chunk whose kv_a and q projections all read the bf16
 * rows (dsv3_cuda_linear_xb_only), where the norm can write them alone */
static float *attn_h(dsv3_gpu *g, const glayer *L, const uint16_t *hb, const float *y, int64_t n) {
  const int q_xb = g->m->cfg.q_lora_rank > 0 ? dsv3_cuda_linear_xb_only(g->ctx, n, &L->wq_a)
                                             : dsv3_cuda_linear_xb_only(g->ctx, n, &L->wq);
  return hb && q_xb && dsv3_cuda_linear_xb_only(g->ctx, n, &L->wkv_a) &&
                 dsv3_cuda_rmsnorm_bf16_only_ok(g->x, y, L->attn_norm.data, L->attn_norm.dtype, g->m->cfg.hidden_size)
             ? NULL
             : g->h;
}

static int layers(dsv3_gpu *g, int64_t n, int64_t max_len) {
  const dsv3_model *m = g->m;
  const dsv3_config *c = &m->cfg;
  dsv3_cuda_ctx *ctx = g->ctx;
  cudaStream_t st = g->st;
  const int64_t D = c->hidden_size, H = m->n_local_heads, nope = c->qk_nope_head_dim, R = c->qk_rope_head_dim;
  const int64_t C = c->kv_lora_rank, Vh = c->v_head_dim, qk = nope + R, K = c->num_experts_per_tok;
  const float eps = (float)c->rms_norm_eps;
  if (g->world > 1) {
    TRY(dsv3_cuda_embed_part(g->x, g->tok, n, g->embed.data, g->embed.dtype, m->vocab0, m->local_vocab, D, st));
    TRY(allreduce(g, g->x, n * D));
  } else {
    TRY(dsv3_cuda_embed(g->x, g->tok, n, g->embed.data, g->embed.dtype, c->vocab_size, D, st));
  }
  uint16_t *hb = g->prefill_seq >= 0 ? g->hb : NULL; /* bf16 h for a prompt chunk's GEMMs */
  TRY(dsv3_cuda_rmsnorm_bf16(attn_h(g, &g->L[0], hb, NULL, n), hb, g->x, NULL, g->L[0].attn_norm.data, g->L[0].attn_norm.dtype, n,
                             D, eps, st));
  const int par = g->ctx2 && g->prefill_seq < 0 && n <= DSV3_GPU_GRAPH_MAX; /* the kv path beside the q path */
  /* a timing aid (bench/cuda_decode, docs/cuda.md): DSV3_GPU_SKIP's bit 1 leaves out every
   * layer's attention block, bit 2 its MLP / MoE, bit 4 the attention kernels alone (over the
   * cache); the step's time without them attributes it.  The logits are then meaningless. */
  /* DSV3_GPU_Q_FUSED=0: the decode q path in separate launches (rmsnorm, q_b, RoPE, absorb q) */
  const char *sk = getenv("DSV3_GPU_SKIP"), *qfe = getenv("DSV3_GPU_Q_FUSED");
  const int skip = sk ? atoi(sk) : 0, qf = !(qfe && !strcmp(qfe, "0"));
  for (int64_t l = 0; l < m->n_layers; l++) {
    glayer *L = &g->L[l];
    if (skip & 1) goto mlp;
    /* attention: kv_a and the cache write (on the second stream when par), then the q path */
    if (par) {
      CUDA_TRY("kv stream fork", cudaEventRecord(g->ev_fork, st));
      CUDA_TRY("kv stream fork", cudaStreamWaitEvent(g->st2, g->ev_fork, 0));
    }
    TRY(dsv3_cuda_linear_xb(par ? g->ctx2 : ctx, g->kva, g->h, hb, n, &L->wkv_a, 0));
    TRY(dsv3_cuda_mla_cache_write(L->kv, L->pe, g->kva, n, L->kv_norm.data, L->kv_norm.dtype, eps, g->cos_t, g->sin_t,
                                  g->seqb, g->pos, C, R, g->max_seq, par ? g->st2 : st));
    if (par) CUDA_TRY("kv stream join", cudaEventRecord(g->ev_join, g->st2));
    /* one decode token: q_norm, q_b, RoPE and absorb q in one launch (mla.cu) */
    const int qfused = qf && n == 1 && g->prefill_seq < 0 && c->q_lora_rank > 0 &&
                       dsv3_cuda_mla_q_fused_ok(&L->wq_b, g->qa, H, nope, R, C);
    if (qfused) {
      TRY(dsv3_cuda_linear(ctx, g->qa, g->h, n, &L->wq_a, 0));
      TRY(dsv3_cuda_mla_q_fused(g->ql, g->q, g->qa, L->q_norm.data, L->q_norm.dtype, eps, &L->wq_b, L->wkvb, g->cos_t,
                                g->sin_t, g->pos, H, nope, R, Vh, C, st));
    } else if (c->q_lora_rank > 0) {
      TRY(dsv3_cuda_linear_xb(ctx, g->qa, g->h, hb, n, &L->wq_a, 0));
      TRY(dsv3_cuda_rmsnorm(g->qa, g->qa, L->q_norm.data, L->q_norm.dtype, n, c->q_lora_rank, eps, st));
      TRY(dsv3_cuda_linear(ctx, g->q, g->qa, n, &L->wq_b, 0));
    } else {
      TRY(dsv3_cuda_linear_xb(ctx, g->q, g->h, hb, n, &L->wq, 0));
    }
    /* (a prompt chunk's q is rotated inside the attention: folded into its q loads) */
    if (!qfused && g->prefill_seq < 0) TRY(dsv3_cuda_rope(g->q + nope, n, H, H * qk, qk, R, g->cos_t, g->sin_t, g->pos, st));
    if (g->prefill_seq >= 0) { /* a prompt chunk: the non-absorbed form on the tensor cores, o directly */
      TRY(dsv3_cuda_mla_prefill(ctx, g->o, g->q, L->wkvb, L->kv, L->pe, g->prefill_seq, g->prefill_pos0, n, H, nope, R, Vh,
                                C, g->max_seq, m->softmax_scale, g->cos_t, g->sin_t, g->ob));
    } else {
      if (!qfused) TRY(dsv3_cuda_mla_absorb_q(g->ql, g->q, L->wkvb, n, H, nope, R, Vh, C, st));
      if (par) CUDA_TRY("kv stream join", cudaStreamWaitEvent(st, g->ev_join, 0));
      if (!(skip & 4))
        TRY(dsv3_cuda_mla_attention(ctx, g->ol, g->ql, g->q + nope, H * qk, qk, L->kv, L->pe, g->seqb, g->len, n, H, C,
                                    R, g->max_seq, max_len, m->softmax_scale));
      TRY(dsv3_cuda_mla_absorb_o(g->o, g->ol, L->wkvb, n, H, nope, Vh, C, st));
    }
    TRY(dsv3_cuda_linear_xb(ctx, g->y, g->o, g->prefill_seq >= 0 ? g->ob : NULL, n, &L->wo, 0));
    TRY(allreduce(g, g->y, n * D));
  mlp:
    TRY(dsv3_cuda_rmsnorm_bf16(g->h, hb, g->x, g->y, L->ffn_norm.data, L->ffn_norm.dtype, n, D, eps, st));
    /* MLP / MoE */
    if (skip & 2) {
    } else if (!L->moe) {
      TRY(dsv3_cuda_mlp_xb(ctx, g->y, g->h, hb, n, &L->w1, &L->w2, &L->w3, 0));
    } else {
      dsv3_route_params rp = {c->n_routed_experts, K, c->n_group, c->topk_group, strcmp(c->scoring_func, "softmax") != 0,
                              (float)c->routed_scaling_factor, 0};
      int64_t I = c->moe_intermediate_size;
      const int dec = n <= DSV3_GPU_GRAPH_MAX && n * (K + 1) < 65536 && D % 16 == 0 && I % 16 == 0;
      const int shared = dec && L->shared_slot; /* the shared expert as routed slot K, weight 1 */
      TRY(dsv3_cuda_linear_xb(ctx, g->glog, g->h, hb, n, &L->gate, 0));
      TRY(dsv3_cuda_route_shared(&rp, g->glog, L->gate_bias, g->idx, g->wts, n, shared, st));
      if (dec)
        TRY(dsv3_cuda_moe_decode(ctx, g->y, g->h, n, g->idx, g->wts, K + shared, L->ex_dev, L->edt, D, I, 0));
      else if (dsv3_cuda_moe_grouped_ok(L->edt, D, I))
        TRY(dsv3_cuda_moe_grouped(ctx, g->y, g->h, n, g->idx, g->wts, K, L->ex_dev, c->n_routed_experts, L->edt, D, I, 0));
      else
        TRY(dsv3_cuda_moe_prefill(ctx, g->y, g->h, n, g->idx, g->wts, K, L->ex_host, c->n_routed_experts, L->edt, D, I, 0));
      if (L->sw1.rows && !shared) TRY(dsv3_cuda_mlp_xb(ctx, g->y, g->h, hb, n, &L->sw1, &L->sw2, &L->sw3, 1));
    }
    TRY(allreduce(g, g->y, n * D)); /* the MLP's row-parallel part, or local experts + shared part */
    if (l + 1 < m->n_layers) {
      const gvec *nn = &g->L[l + 1].attn_norm;
      TRY(dsv3_cuda_rmsnorm_bf16(attn_h(g, &g->L[l + 1], hb, g->y, n), hb, g->x, g->y, nn->data, nn->dtype, n, D, eps, st));
    } else if (g->norm_r0 < n) { /* the final norm: of the rows the head reads (chunk) */
      const int64_t r0 = g->norm_r0;
      TRY(dsv3_cuda_rmsnorm_bf16(g->h + r0 * D, NULL, g->x + r0 * D, g->y + r0 * D, g->norm.data, g->norm.dtype, n - r0, D,
                                 eps, st));
    }
  }
  return 0;
}

/* the logits of tokens [t0, t0 + cnt) of the chunk: into host memory (out), or sampled on the
 * device with dsv3_gpu_set_sampling's parameters and only the token ids copied back (ids);
 * both NULL: a follower, which takes part in the all-gather only */
static int head(dsv3_gpu *g, int64_t t0, int64_t cnt, float *out, int32_t *ids) {
  const int64_t D = g->m->cfg.hidden_size, V = g->m->cfg.vocab_size, Vl = g->m->local_vocab;
  for (int64_t i = 0; i < cnt; i += g->logit_rows) {
    int64_t k = cnt - i < g->logit_rows ? cnt - i : g->logit_rows;
    TRY(dsv3_cuda_linear(g->ctx, g->logits, g->h + (t0 + i) * D, k, &g->head, 0));
    const float *lg = g->logits; /* [k, V] on the device once gathered */
    if (g->world > 1) {
#ifdef DSV3_HAVE_NCCL
      if (g->comm_on) {
        ncclResult_t r = ncclAllGather(g->logits, g->lgall, (size_t)(k * Vl), ncclFloat, (ncclComm_t)g->comm, g->st);
        if (r != ncclSuccess) {
          dsv3_error_set("rank %d: NCCL all-gather of the logits: %s", g->rank, ncclGetErrorString(r));
          return -1;
        }
      }
#endif
      lg = g->lgall;
      if (k > 1 && (ids || out)) { /* [rank][token][Vl] -> [token][rank * Vl], on the device */
        for (int64_t r = 0; r < g->world; r++)
          CUDA_TRY("logits", cudaMemcpy2DAsync(g->lgrow + r * Vl, (size_t)V * 4, g->lgall + r * k * Vl, (size_t)Vl * 4,
                                               (size_t)Vl * 4, (size_t)k, cudaMemcpyDeviceToDevice, g->st));
        lg = g->lgrow;
      }
    }
    if (ids) {
      TRY(dsv3_cuda_sample(g->ids, lg, k, V, g->temp, g->top_p, g->seed, g->pos + t0 + i, g->st));
      CUDA_TRY("sampled ids", cudaMemcpyAsync(g->hids + i, g->ids, (size_t)k * 4, cudaMemcpyDeviceToHost, g->st));
      continue;
    }
    if (out) CUDA_TRY("logits", cudaMemcpyAsync(out + i * V, lg, (size_t)(k * V) * 4, cudaMemcpyDeviceToHost, g->st));
  }
  return 0;
}

static int chunk(dsv3_gpu *g, int64_t n, const int32_t *tok, const int32_t *seq, const int32_t *pos, float *logits,
                 int32_t *ids, int all_logits, int want_head) {
  TRY(ensure_acts(g, n));
  const int64_t cap = g->cap;
  int32_t *hb = g->hin + 3 * cap; /* lengths */
  int64_t max_len = 1;
  int prefill = n > DSV3_GPU_GRAPH_MAX;
  memcpy(g->hin, tok, (size_t)n * 4);
  memcpy(g->hin + cap, seq, (size_t)n * 4);
  memcpy(g->hin + 2 * cap, pos, (size_t)n * 4);
  for (int64_t i = 0; i < n; i++) {
    hb[i] = pos[i] + 1;
    if (hb[i] > max_len) max_len = hb[i];
    if (seq[i] != seq[0] || pos[i] != pos[0] + i) prefill = 0;
  }
  g->prefill_seq = prefill ? seq[0] : -1;
  g->prefill_pos0 = prefill ? pos[0] : -1;
  g->norm_r0 = prefill && !all_logits ? (want_head ? n - 1 : n) : 0;
  cudaStream_t st = g->st;
  int rc = -1;
  if (cudaMemcpyAsync(g->in, g->hin, (size_t)(n < cap ? 3 * cap + n : 4 * cap) * 4, cudaMemcpyHostToDevice, st) !=
      cudaSuccess) {
    dsv3_error_set("cuda: inputs: %s", cudaGetErrorString(cudaGetLastError()));
    goto out;
  }
  if (g->graphs_on && n <= DSV3_GPU_GRAPH_MAX) {
    /* one eager run sizes every scratch buffer; the next captures; later ones replay.  A run
     * of another size may have moved a scratch buffer a graph uses: re-capture then. */
    const uint64_t mv = dsv3_cuda_ctx_scratch_moves(g->ctx) + (g->ctx2 ? dsv3_cuda_ctx_scratch_moves(g->ctx2) : 0);
    if (g->graph_moves != mv) {
      drop_graphs(g);
      g->graph_moves = mv;
    }
    if (g->graph[n]) {
      if (cudaGraphLaunch(g->graph[n], st) != cudaSuccess) {
        dsv3_error_set("cuda: graph launch: %s", cudaGetErrorString(cudaGetLastError()));
        goto out;
      }
    } else if (g->warm[n]) {
      cudaGraph_t gr = NULL;
      if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        dsv3_error_set("cuda: begin capture: %s", cudaGetErrorString(cudaGetLastError()));
        goto out;
      }
      int lr = layers(g, n, g->max_seq);
      cudaError_t ce = cudaStreamEndCapture(st, &gr);
      if (lr) {
        if (gr) cudaGraphDestroy(gr);
        goto out;
      }
      if (ce != cudaSuccess || cudaGraphInstantiate(&g->graph[n], gr, 0) != cudaSuccess) {
        dsv3_error_set("cuda: graph capture: %s", cudaGetErrorString(ce != cudaSuccess ? ce : cudaGetLastError()));
        if (gr) cudaGraphDestroy(gr);
        g->graph[n] = NULL;
        goto out;
      }
      cudaGraphDestroy(gr);
      if (cudaGraphLaunch(g->graph[n], st) != cudaSuccess) {
        dsv3_error_set("cuda: graph launch: %s", cudaGetErrorString(cudaGetLastError()));
        goto out;
      }
    } else {
      if (layers(g, n, g->max_seq)) goto out;
      g->warm[n] = 1;
    }
  } else if (layers(g, n, max_len)) {
    goto out;
  }
  if (want_head && (all_logits ? head(g, 0, n, logits, ids) : head(g, n - 1, 1, logits, ids))) goto out;
  if (cudaStreamSynchronize(st) != cudaSuccess) {
    dsv3_error_set("cuda: forward: %s", cudaGetErrorString(cudaGetLastError()));
    goto out;
  }
  if (want_head && ids) memcpy(ids, g->hids, (size_t)(all_logits ? n : 1) * 4); /* head() left them pinned */
  rc = 0;
out:
  return rc;
}

static int forward(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos, float *logits,
                   int32_t *ids, int all_logits, int want_head) {
  if (cudaSetDevice(g->device) != cudaSuccess) {
    dsv3_error_set("cuda: cannot select device %d", g->device);
    return -1;
  }
  const int64_t V = g->m->cfg.vocab_size;
  int rc = 0;
  dsv3_dist_guard(g->dist, "forward pass");
  for (int64_t i = 0; i < n && !rc; i += PREFILL_CHUNK) {
    int64_t k = n - i < PREFILL_CHUNK ? n - i : PREFILL_CHUNK;
    int last = i + k == n;
    float *lg = !logits ? NULL : all_logits ? logits + i * V : last ? logits : NULL;
    int32_t *id = !ids ? NULL : all_logits ? ids + i : last ? ids : NULL;
    rc = chunk(g, k, tokens + i, seq + i, pos + i, lg, id, all_logits, want_head && (all_logits || last));
  }
  dsv3_dist_unguard(g->dist);
  return rc;
}

/* checks a call, and sends it to the other ranks */
static int submit(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos, int all_logits,
                  int want_head) {
  const dsv3_config *c = &g->m->cfg;
  for (int64_t i = 0; i < n; i++) {
    if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
      dsv3_error_set("token id %d out of the vocabulary (%lld)", tokens[i], (long long)c->vocab_size);
      return -1;
    }
    if (seq[i] < 0 || seq[i] >= g->max_batch) {
      dsv3_error_set("sequence %d outside the batch of %lld", seq[i], (long long)g->max_batch);
      return -1;
    }
    if (pos[i] < 0 || pos[i] >= g->max_seq) {
      dsv3_error_set("sequence of %lld tokens exceeds --max-seq-len %lld", (long long)pos[i] + 1, (long long)g->max_seq);
      return -1;
    }
  }
  if (g->dist) { /* the other ranks run the same call */
    size_t nb = 16 + (size_t)n * 12;
    int64_t *msg = dsv3_xmalloc(nb);
    msg[0] = n, msg[1] = (int64_t)(all_logits ? 1 : 0) | (want_head ? 2 : 0);
    int32_t *body = (int32_t *)(msg + 2);
    memcpy(body, tokens, (size_t)n * 4);
    memcpy(body + n, seq, (size_t)n * 4);
    memcpy(body + 2 * n, pos, (size_t)n * 4);
    int rc = dsv3_dist_send(g->dist, DSV3_MSG_WORK, msg, nb);
    free(msg);
    if (rc) return -1;
  }
  return 0;
}

int dsv3_gpu_forward(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos, float *logits,
                     int all_logits) {
  if (n <= 0) return 0;
  if (submit(g, n, tokens, seq, pos, all_logits, logits != NULL)) return -1;
  return forward(g, n, tokens, seq, pos, logits, NULL, all_logits, logits != NULL);
}

int dsv3_gpu_forward_ids(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos,
                         int32_t *ids, int all_rows) {
  if (n <= 0) return 0;
  if (submit(g, n, tokens, seq, pos, all_rows, 1)) return -1;
  return forward(g, n, tokens, seq, pos, NULL, ids, all_rows, 1);
}

void dsv3_gpu_set_sampling(dsv3_gpu *g, double temperature, double top_p, uint64_t seed) {
  g->temp = (float)temperature, g->top_p = (float)top_p, g->seed = seed;
}

int dsv3_gpu_attach(dsv3_gpu *g, struct dsv3_dist *d) {
  if (g->world == 1) return 0;
  if (!d || dsv3_dist_world(d) != g->world || dsv3_dist_rank(d) != g->rank) {
    dsv3_error_set("rank %d of %d: the model was loaded for rank %d of %d", d ? dsv3_dist_rank(d) : 0,
                   d ? dsv3_dist_world(d) : 1, g->rank, g->world);
    return -1;
  }
  if (cudaSetDevice(g->device) != cudaSuccess) {
    dsv3_error_set("cuda: cannot select device %d", g->device);
    return -1;
  }
  g->comm = dsv3_dist_nccl(d);
  if (!g->comm) return -1;
  if (getenv("DSV3_BENCH_NO_COMM")) g->comm_on = 0; /* bench/mp_decode.sh: the collectives' share */
  g->dist = g->rank == 0 ? d : NULL; /* rank 0 sends the work; the others receive it in follow() */
  g->follow_dist = d;
  return 0;
}

void dsv3_gpu_set_comm(dsv3_gpu *g, int on) { g->comm_on = on; }

int dsv3_gpu_follow(dsv3_gpu *g) {
  struct dsv3_dist *d = g->follow_dist;
  if (!d || g->rank == 0) {
    dsv3_error_set("dsv3_gpu_follow: not a follower rank");
    return -1;
  }
  for (;;) {
    uint32_t type;
    void *buf;
    size_t nb;
    if (dsv3_dist_recv(d, &type, &buf, &nb)) return -1;
    if (type == DSV3_MSG_EXIT) {
      free(buf);
      return 0;
    }
    int64_t *msg = buf;
    if (type != DSV3_MSG_WORK || nb < 16 || msg[0] <= 0 || msg[0] > (1 << 24) || nb != 16 + (size_t)msg[0] * 12) {
      free(buf);
      dsv3_error_set("rank %d: garbled work message from rank 0", g->rank);
      return -1;
    }
    int64_t n = msg[0];
    int32_t *body = (int32_t *)(msg + 2);
    dsv3_dist_guard(d, "forward pass");
    int rc = forward(g, n, body, body + n, body + 2 * n, NULL, NULL, (int)(msg[1] & 1), (int)(msg[1] & 2) != 0);
    dsv3_dist_unguard(d);
    free(buf);
    if (rc) return -1;
  }
}

void dsv3_gpu_finish(dsv3_gpu *g) {
  if (g && g->dist && g->rank == 0) dsv3_dist_send(g->dist, DSV3_MSG_EXIT, NULL, 0);
}
