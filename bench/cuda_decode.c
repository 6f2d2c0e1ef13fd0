/* cuda_decode - end-to-end GPU forward (dsv3-run/gpu_model.c) on a checkpoint: prefill tokens/s
 * against the measured BF16 tensor-core peak, decode ms/step at several batch sizes against the
 * memory floor (weights touched per step + cache read, over the measured copy bandwidth).
 *
 *   cuda_decode CKPT [--prompt-len N] [--context N] [--steps N] [--batches 1,8,32]
 *
 * Use a 671B-width slice from dsv3-gen (scripts/gpu/cuda_e2e.sh makes one). */
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv3_cuda.h"
#include "gpu_model.h"
#include "model.h"
#include "util.h"

static void die(const char *what) {
  fprintf(stderr, "cuda_decode: error: %s: %s\n", what, dsv3_error());
  exit(1);
}

static double wb(const dsv3_wmat *w) {
  if (!w->rows) return 0;
  double b = (double)w->rows * w->cols * dsv3_dtype_size(w->dtype);
  if (w->dtype == DSV3_F8_E4M3) b += (double)((w->rows + 127) / 128) * ((w->cols + 127) / 128) * 4;
  return b;
}

/* bytes a decode step of B tokens must read: every non-routed weight, the routed experts
 * expected to be touched (E * (1 - (1 - K/E)^B) per MoE layer for random routing), the head,
 * and the latent cache rows of every sequence */
static double step_bytes(const dsv3_model *m, int64_t B, int64_t ctx_len) {
  const dsv3_config *c = &m->cfg;
  double b = wb(&m->head);
  for (int64_t l = 0; l < m->n_layers; l++) {
    const dsv3_layer *L = &m->layers[l];
    b += wb(&L->wq) + wb(&L->wq_a) + wb(&L->wq_b) + wb(&L->wkv_a) + (double)L->wkv_b.rows * L->wkv_b.cols * 2 + wb(&L->wo);
    if (L->moe) {
      double E = (double)c->n_routed_experts, K = (double)c->num_experts_per_tok;
      double touched = E * (1 - pow(1 - K / E, (double)B));
      b += wb(&L->gate) + wb(&L->sw1) + wb(&L->sw2) + wb(&L->sw3) + touched * (wb(&L->ew1[0]) + wb(&L->ew2[0]) + wb(&L->ew3[0]));
    } else {
      b += wb(&L->w1) + wb(&L->w2) + wb(&L->w3);
    }
    b += (double)B * ctx_len * (c->kv_lora_rank + c->qk_rope_head_dim) * 2;
  }
  return b;
}

static double np_(const dsv3_wmat *w) { return (double)w->rows * w->cols; }

/* FLOPs a prefill of P tokens must do (model FLOPs, as MFU counts them): 2 per parameter on a
 * token's path (the routed experts it picks, kv_b once) for every token, the head for the
 * last token only (the prefill computes no other logits), and causal attention in its
 * non-absorbed form, 2 H (qk_head_dim + v_head_dim) per (query, key) pair, P (P + 1) / 2 pairs. */
static double prefill_flops(const dsv3_model *m, int64_t P) {
  const dsv3_config *c = &m->cfg;
  double per_tok = 0;
  for (int64_t l = 0; l < m->n_layers; l++) {
    const dsv3_layer *L = &m->layers[l];
    per_tok += np_(&L->wq) + np_(&L->wq_a) + np_(&L->wq_b) + np_(&L->wkv_a) + np_(&L->wkv_b) + np_(&L->wo);
    if (L->moe)
      per_tok += np_(&L->gate) + np_(&L->sw1) + np_(&L->sw2) + np_(&L->sw3) +
                 (double)c->num_experts_per_tok * (np_(&L->ew1[0]) + np_(&L->ew2[0]) + np_(&L->ew3[0]));
    else
      per_tok += np_(&L->w1) + np_(&L->w2) + np_(&L->w3);
  }
  const double attn = 2.0 * m->n_local_heads * (c->qk_nope_head_dim + c->qk_rope_head_dim + c->v_head_dim) * (double)P *
                      (P + 1) / 2 * m->n_layers;
  return 2.0 * per_tok * P + 2.0 * np_(&m->head) + attn;
}

int main(int argc, char **argv) {
  const char *ckpt = NULL;
  int64_t prompt = 2048, context = 256, steps = 20;
  int64_t batches[8] = {1, 8, 32}, nb = 3;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--prompt-len") && i + 1 < argc) prompt = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--context") && i + 1 < argc) context = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
      nb = 0;
      for (char *s = argv[++i]; *s && nb < 8;) {
        batches[nb++] = strtoll(s, &s, 10);
        if (*s == ',') s++;
      }
    } else if (argv[i][0] != '-' && !ckpt) ckpt = argv[i];
    else {
      fprintf(stderr, "usage: cuda_decode CKPT [--prompt-len N] [--context N] [--steps N] [--batches 1,8,32]\n");
      return 2;
    }
  }
  if (!ckpt || prompt < 1 || context < 1 || steps < 1) {
    fprintf(stderr, "usage: cuda_decode CKPT [--prompt-len N] [--context N] [--steps N] [--batches 1,8,32]\n");
    return 2;
  }
  if (dsv3_cuda_device_count() == 0) {
    fprintf(stderr, "cuda_decode: no CUDA device\n");
    return 77;
  }
  int64_t maxb = 1;
  for (int64_t i = 0; i < nb; i++) maxb = batches[i] > maxb ? batches[i] : maxb;
  int64_t max_seq = prompt > context + 2 * steps + 8 ? prompt : context + 2 * steps + 8; /* two timed runs of steps */
  dsv3_model *m;
  double t0 = dsv3_now();
  if (dsv3_model_load(ckpt, NULL, max_seq, &m) != 0) die("load");
  dsv3_gpu *g;
  if (dsv3_gpu_load(m, maxb, 0, &g) != 0) die("gpu load");
  uint64_t wbytes, cbytes;
  dsv3_gpu_memory(g, &wbytes, &cbytes);
  printf("model %s: %lld layers, %.2f GB weights + %.2f GB cache on the GPU, loaded in %.1f s\n", ckpt,
         (long long)m->n_layers, wbytes / 1e9, cbytes / 1e9, dsv3_now() - t0);

  /* floors, measured here */
  dsv3_cuda_ctx *ctx;
  if (dsv3_cuda_ctx_new(0, &ctx)) die("ctx");
  size_t n = (size_t)1 << 30;
  void *a, *b;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) die("floor buffers");
  cudaMemset(a, 0x3c, n);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  float ms;
  cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e0, 0);
  for (int i = 0; i < 10; i++) cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
  cudaEventRecord(e1, 0);
  cudaEventSynchronize(e1);
  cudaEventElapsedTime(&ms, e0, e1);
  double bw = 2.0 * n * 10 / (ms * 1e-3);
  const int G = 8192;
  float *cc;
  if (cudaMalloc((void **)&cc, (size_t)G * G * 4) != cudaSuccess) die("floor buffers");
  if (dsv3_cuda_f32_to_bf16(a, (const float *)b, (int64_t)G * G, 0) || dsv3_cuda_f32_to_bf16(b, (const float *)a, (int64_t)G * G, 0))
    die("floor");
  if (dsv3_cuda_gemm_bf16(ctx, cc, a, G, b, G, G, 0)) die("gemm");
  cudaEventRecord(e0, 0);
  for (int i = 0; i < 5; i++) dsv3_cuda_gemm_bf16(ctx, cc, a, G, b, G, G, 0);
  cudaEventRecord(e1, 0);
  cudaEventSynchronize(e1);
  cudaEventElapsedTime(&ms, e0, e1);
  double peak = 2.0 * G * G * (double)G * 5 / (ms * 1e-3);
  cudaFree(a), cudaFree(b), cudaFree(cc);
  dsv3_cuda_ctx_free(ctx);
  printf("floors: copy %.0f GB/s, cuBLAS BF16 GEMM %.0f TFLOP/s\n", bw / 1e9, peak / 1e12);

  uint64_t rng = 88172645463325252ull;
  const int64_t V = m->cfg.vocab_size;
  int32_t *tok = malloc((size_t)(prompt > maxb * context ? prompt : maxb * context) * 4);
  int32_t *seq = malloc((size_t)(prompt > maxb * context ? prompt : maxb * context) * 4);
  int32_t *pos = malloc((size_t)(prompt > maxb * context ? prompt : maxb * context) * 4);
  float *logits = malloc((size_t)(maxb * V) * 4);
  int32_t *ids = malloc((size_t)maxb * 4);
#define RND() (rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, (int32_t)(rng % (uint64_t)(V - 2)) + 2)
  /* prefill */
  for (int64_t i = 0; i < prompt; i++) tok[i] = RND(), seq[i] = 0, pos[i] = (int32_t)i;
  if (dsv3_gpu_forward(g, prompt, tok, seq, pos, logits, 0)) die("prefill warm-up");
  double ts = dsv3_now();
  cudaProfilerStart(); /* ncu --profile-from-start off profiles this prefill only */
  if (dsv3_gpu_forward(g, prompt, tok, seq, pos, logits, 0)) die("prefill");
  double tp = dsv3_now() - ts;
  cudaProfilerStop();
  double pflops = prefill_flops(m, prompt);
  printf("prefill %lld tokens: %.3f s, %.0f tokens/s, %.1f TFLOP of model FLOPs: %.0f TFLOP/s (%.1f%% of the cuBLAS peak)\n",
         (long long)prompt, tp, prompt / tp, pflops / 1e12, pflops / tp / 1e12, 100 * pflops / tp / peak);
  /* decode at each batch size: a context of `context` tokens per sequence first */
  for (int64_t bi = 0; bi < nb; bi++) {
    int64_t B = batches[bi];
    for (int64_t s = 0; s < B; s++) {
      for (int64_t i = 0; i < context; i++) tok[i] = RND(), seq[i] = (int32_t)s, pos[i] = (int32_t)i;
      if (dsv3_gpu_forward(g, context, tok, seq, pos, NULL, 0)) die("context");
    }
    /* a step as generation runs it (the next tokens sampled on the device, greedy: only the ids
     * come back), then as a caller that wants every logit on the host */
    double tt = 0, tl = 0;
    for (int64_t st = 0; st < 2 * steps + 3; st++) {
      for (int64_t s = 0; s < B; s++) tok[s] = RND(), seq[s] = (int32_t)s, pos[s] = (int32_t)(context + st);
      double a0 = dsv3_now();
      if (st < steps + 3 ? dsv3_gpu_forward_ids(g, B, tok, seq, pos, ids, 1) : dsv3_gpu_forward(g, B, tok, seq, pos, logits, 1))
        die("decode");
      if (st >= 3) *(st < steps + 3 ? &tt : &tl) += dsv3_now() - a0; /* after eager, capture */
    }
    double per = tt / steps, fl = step_bytes(m, B, context + steps) / bw;
    printf("decode batch %2lld: %.3f ms/step (%.1f tokens/s), floor %.3f ms, %.2fx floor; %.3f ms/step with the logits "
           "copied to the host\n",
           (long long)B, per * 1e3, B / per, fl * 1e3, per / fl, tl / steps * 1e3);
  }
  free(tok), free(seq), free(pos), free(logits), free(ids);
  dsv3_gpu_free(g);
  dsv3_model_free(m);
  return 0;
}
