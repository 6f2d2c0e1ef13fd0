/* dsv3-run - smoke-test generation with a DeepSeek-V3 checkpoint (CPU reference path). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#ifdef DSV3_HAVE_CUDA
#include "dsv3_cuda.h"
#include "gpu_dist.h"
#include "gpu_model.h"
#endif
#include "safetensors.h"
#include "tokenizer.h"
#include "util.h"

static const char *PROG = "dsv3-run";

typedef struct {
  const char *ckpt, *config, *prompt, *input_file, *dump_logits, *ids, *device, *master;
  int raw, tokenize, json, quiet, threads, ignore_eos, bf16_act, gpus, batch;
  double timeout;
  int64_t max_new, max_seq;
  double temperature, top_p;
  uint64_t seed;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-run --ckpt DIR [OPTIONS]\n"
          "Generate text with a DeepSeek-V3 checkpoint (HF layout, or runtime layout from dsv3-convert).\n"
          "Without --prompt or --input-file: an interactive chat (/exit quits, /clear forgets).\n\n"
          "  --ckpt DIR              checkpoint directory (tokenizer.json is read from it)\n"
          "  --config FILE           model config (official demo format or HF config.json)\n"
          "  --prompt TEXT           one prompt\n"
          "  --input-file F          one prompt per line; on the GPU decoded --batch at a time together\n"
          "  --batch N               prompts of --input-file decoded together on the GPU (default 8)\n"
          "  --raw                   no chat template: BOS + the prompt as plain text\n"
          "  --ids \"0 12 55\"         start from these token ids instead of text\n"
          "  --max-new-tokens N      default 100\n"
          "  --temperature T         0 = greedy (default 0.2, as the official demo)\n"
          "  --top-p P               nucleus sampling (default 1: off)\n"
          "  --seed S                sampling seed (default 965; on the GPU the draw is made on the device)\n"
          "  --ignore-eos            keep generating after <｜end▁of▁sentence｜>\n"
          "  --max-seq-len N         KV-cache length (default 4096)\n"
          "  --device cpu|cuda       default: cuda when built with CUDA and a GPU is present, else cpu\n"
          "  --gpus N                run a model{r}-mp{N} checkpoint on N local GPUs (a thread each, NCCL);\n"
          "                          under torchrun --no-python, mpirun or srun: one rank per process\n"
          "  --master HOST:PORT      multi-process runs: rank 0's address (default from MASTER_ADDR and\n"
          "                          MASTER_PORT + 1, or DSV3_MASTER_PORT)\n"
          "  --timeout SEC           multi-rank runs: longest wait for a rank or a collective (default 300)\n"
          "  --act f32|bf16          CPU activations: float32 (default) or rounded to bf16 where the\n"
          "                          official bf16 demo rounds them (closer to its logits; its GEMM\n"
          "                          rounding is not reproduced, so near-tied tokens may differ)\n"
          "  --threads N             CPU threads (default: all cores)\n"
          "  --tokenize              read text on stdin, print its ids, space-separated\n"
          "  --dump-logits FILE      write every position's logits (F32 [tokens, vocab]) and the ids\n"
          "  --json                  print a JSON record per prompt instead of streaming text\n"
          "  -q, --quiet             no statistics on stderr\n"
          "  -h, --help, --version\n");
}

/* splitmix64 */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }

static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The official sampler: softmax(logits / T), then argmax(p / Exp(1)); with top-p, tokens
 * outside the nucleus are dropped first.  T == 0: argmax. */
static int32_t sample(const float *logits, int64_t V, double temp, double top_p, uint64_t *rng) {
  int64_t best = 0;
  if (temp <= 0) {
    for (int64_t i = 1; i < V; i++)
      if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
  }
  float *p = dsv3_xmalloc((size_t)V * sizeof(float));
  for (int64_t i = 0; i < V; i++) p[i] = (float)(logits[i] / (temp > 1e-5 ? temp : 1e-5));
  dsv3_softmax(p, V);
  if (top_p < 1.0) {
    float *s = dsv3_xmalloc((size_t)V * sizeof(float));
    memcpy(s, p, (size_t)V * sizeof(float));
    qsort(s, (size_t)V, sizeof(float), cmp_desc);
    double cum = 0;
    float cut = s[0];
    for (int64_t i = 0; i < V; i++) {
      cum += s[i];
      cut = s[i];
      if (cum >= top_p) break;
    }
    for (int64_t i = 0; i < V; i++)
      if (p[i] < cut) p[i] = 0;
    free(s);
  }
  double bv = -1;
  for (int64_t i = 0; i < V; i++) {
    double e = -log(rng_unit(rng)); /* Exp(1) */
    double v = p[i] / e;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  free(p);
  return (int32_t)best;
}

#ifdef DSV3_HAVE_CUDA
static dsv3_gpu *gpu; /* --device cuda: weights resident, latent cache on the device */
#endif

/* One forward call on the chosen device (n tokens of sequence 0 from position start) and the
 * token that follows its last one.  On the GPU without logits to keep the logits stay on the
 * device and the token is sampled there (the same sampler, dsv3_cuda_sample); otherwise they
 * come back to `lg` ([n, V] with keep, else the last row) and the host samples. */
static int fwd_next(dsv3_model *m, dsv3_cache *c, const int32_t *ids, int64_t n, int64_t start, float *lg, int keep,
                    const opts *o, uint64_t *rng, int32_t *next) {
  int rc;
#ifdef DSV3_HAVE_CUDA
  if (gpu) {
    int32_t *sq = dsv3_xmalloc((size_t)n * sizeof(int32_t)), *ps = dsv3_xmalloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) sq[i] = 0, ps[i] = (int32_t)(start + i);
    rc = keep ? dsv3_gpu_forward(gpu, n, ids, sq, ps, lg, 1) : dsv3_gpu_forward_ids(gpu, n, ids, sq, ps, next, 0);
    free(sq);
    free(ps);
    if (rc || !keep) return rc;
  } else
#endif
    if ((rc = dsv3_forward(m, c, ids, n, start, lg, keep)))
      return rc;
  const int64_t V = m->cfg.vocab_size;
  *next = sample(lg + (keep ? (n - 1) * V : 0), V, o->temperature, o->top_p, rng);
  return 0;
}

typedef struct {
  float *logits; /* [n, V] */
  int32_t *ids;
  int64_t n, cap;
} dump_t;

static void dump_add(dump_t *d, const float *lg, int64_t rows, const int32_t *ids, int64_t V) {
  if (d->n + rows > d->cap) {
    while (d->n + rows > d->cap) d->cap = d->cap ? d->cap * 2 : 256;
    d->logits = dsv3_xrealloc(d->logits, (size_t)(d->cap * V) * sizeof(float));
    d->ids = dsv3_xrealloc(d->ids, (size_t)d->cap * sizeof(int32_t));
  }
  memcpy(d->logits + d->n * V, lg, (size_t)(rows * V) * sizeof(float));
  memcpy(d->ids + d->n, ids, (size_t)rows * sizeof(int32_t));
  d->n += rows;
}

typedef struct {
  int32_t *out;
  int64_t n;
  double prefill_s, decode_s;
  int64_t prompt_n;
} gen_result;

/* Generate from prompt ids; streams text to stdout unless quiet_text. */
static int generate(dsv3_model *m, const dsv3_tokenizer *tok, const opts *o, const int32_t *prompt, int64_t np,
                    int stream, dump_t *dump, uint64_t *rng, gen_result *res) {
  int64_t V = m->cfg.vocab_size;
  memset(res, 0, sizeof *res);
  res->prompt_n = np;
  if (np <= 0) {
    dsv3_error_set("empty prompt");
    return -1;
  }
  int64_t total = np + o->max_new;
  if (total > m->max_seq_len) total = m->max_seq_len;
  if (np > total || (np == total && o->max_new > 0)) {
    dsv3_error_set("prompt of %lld tokens does not fit --max-seq-len %lld", (long long)np, (long long)m->max_seq_len);
    return -1;
  }
  dsv3_cache *c = dsv3_cache_new(m, total);
  float *lg = dsv3_xmalloc((size_t)((dump ? np : 1) * V) * sizeof(float));
  res->out = dsv3_xmalloc((size_t)(total - np + 1) * sizeof(int32_t));
  double t0 = dsv3_now();
  int32_t next = 0;
  int rc = fwd_next(m, c, prompt, np, 0, lg, dump != NULL, o, rng, &next);
  res->prefill_s = dsv3_now() - t0;
  if (rc) goto out;
  if (dump) dump_add(dump, lg, np, prompt, V);
  double t1 = dsv3_now();
  char buf[4096];
  for (int64_t pos = np; pos < total; pos++) {
    if (tok && next == dsv3_tok_eos(tok) && !o->ignore_eos) break;
    res->out[res->n++] = next;
    if (stream && tok) {
      size_t l = dsv3_tok_is_special(tok, next) ? 0 : dsv3_tok_token_bytes(tok, next, buf, sizeof buf);
      fwrite(buf, 1, l, stdout);
      fflush(stdout);
    }
    if (pos + 1 >= total) break;
    int32_t cur = next;
    if ((rc = fwd_next(m, c, &cur, 1, pos, lg, dump != NULL, o, rng, &next))) break;
    if (dump) dump_add(dump, lg, 1, &cur, V);
  }
  res->decode_s = dsv3_now() - t1;
out:
  free(lg);
  dsv3_cache_free(m, c);
  return rc;
}

static void report(const opts *o, const gen_result *r) {
  if (o->quiet) return;
  fprintf(stderr, "\n[%s] prompt %lld tokens: prefill %.1f tok/s (%.3f s); decode %lld tokens: %.2f tok/s (%.3f ms/token)\n",
          PROG, (long long)r->prompt_n, r->prefill_s > 0 ? r->prompt_n / r->prefill_s : 0, r->prefill_s, (long long)r->n,
          r->decode_s > 0 && r->n > 1 ? (r->n - 1) / r->decode_s : 0, r->n > 1 ? r->decode_s * 1000 / (r->n - 1) : 0);
}

static int write_dump(const char *path, const dump_t *d, int64_t V) {
  dsv3_tensor_src ts[2] = {{"logits", DSV3_F32, 2, {d->n, V}, d->logits}, {"ids", DSV3_I32, 1, {d->n}, d->ids}};
  return dsv3_st_write_file(path, ts, 2, NULL, 0);
}

/* Prompt text -> ids: raw (BOS + text) or the chat template with one user turn. */
static int64_t prompt_ids(const dsv3_tokenizer *tok, const opts *o, const char *text, int32_t **ids) {
  if (o->raw) {
    int32_t *t;
    int64_t n = dsv3_tok_encode(tok, text, strlen(text), &t);
    if (n < 0) { /* a hostile tokenizer.json (the error names it) */
      *ids = NULL;
      return -1;
    }
    *ids = dsv3_xmalloc((size_t)(n + 1) * sizeof(int32_t));
    (*ids)[0] = dsv3_tok_bos(tok);
    memcpy(*ids + 1, t, (size_t)n * sizeof(int32_t));
    free(t);
    return n + 1;
  }
  dsv3_chat_msg msg = {"user", text};
  return dsv3_tok_chat(tok, &msg, 1, 1, ids);
}

static void print_json(const dsv3_tokenizer *tok, const char *prompt, const int32_t *pids, int64_t np, const gen_result *r) {
  cJSON *j = cJSON_CreateObject();
  if (prompt) cJSON_AddStringToObject(j, "prompt", prompt);
  cJSON *a = cJSON_AddArrayToObject(j, "prompt_ids");
  for (int64_t i = 0; i < np; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(pids[i]));
  cJSON *b = cJSON_AddArrayToObject(j, "ids");
  for (int64_t i = 0; i < r->n; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber(r->out[i]));
  if (tok) {
    char *txt = dsv3_tok_decode(tok, r->out, (size_t)r->n, 1, NULL);
    cJSON_AddStringToObject(j, "completion", txt);
    free(txt);
  }
  cJSON_AddNumberToObject(j, "prefill_tok_s", r->prefill_s > 0 ? r->prompt_n / r->prefill_s : 0);
  cJSON_AddNumberToObject(j, "decode_tok_s", r->decode_s > 0 && r->n > 1 ? (r->n - 1) / r->decode_s : 0);
  char *s = cJSON_PrintUnformatted(j);
  puts(s);
  free(s);
  cJSON_Delete(j);
}

static int run_one(dsv3_model *m, const dsv3_tokenizer *tok, const opts *o, const char *text, const int32_t *ids0,
                   int64_t n0, dump_t *dump, uint64_t *rng) {
  int32_t *ids = NULL;
  int64_t np = ids0 ? n0 : prompt_ids(tok, o, text, &ids);
  if (np < 0) return -1; /* the tokenizer's error */
  const int32_t *p = ids0 ? ids0 : ids;
  gen_result r;
  if (!o->json && text && o->raw) {
    fputs(text, stdout); /* the completion follows the prompt text */
    fflush(stdout);
  }
  int rc = generate(m, tok, o, p, np, !o->json, dump, rng, &r);
  if (!rc) {
    if (o->json) print_json(tok, text, p, np, &r);
    else putchar('\n');
    report(o, &r);
  }
  free(r.out);
  free(ids);
  return rc;
}

#ifdef DSV3_HAVE_CUDA
/* --input-file on the GPU: prompts [0, k) decoded together, sequence i in cache slot i: each
 * prompt is prefilled alone, then every decode step runs one token of each unfinished prompt. */
static int generate_batch(dsv3_model *m, const dsv3_tokenizer *tok, const opts *o, char **texts, int64_t k) {
  int32_t **ids = dsv3_xcalloc((size_t)k, sizeof *ids);
  int64_t *np = dsv3_xcalloc((size_t)k, sizeof *np), *total = dsv3_xcalloc((size_t)k, sizeof *total);
  int32_t *next = dsv3_xcalloc((size_t)k, sizeof *next), *tk = dsv3_xcalloc((size_t)k, 4), *sq = dsv3_xcalloc((size_t)k, 4),
          *ps = dsv3_xcalloc((size_t)k, 4);
  char *done = dsv3_xcalloc((size_t)k, 1);
  gen_result *res = dsv3_xcalloc((size_t)k, sizeof *res);
  int32_t *nx = dsv3_xcalloc((size_t)k, sizeof *nx); /* the step's tokens, sampled on the device */
  int rc = 0;
  int64_t steps = 0, ntok = 0, nprompt = 0;
  double t0 = dsv3_now(), prefill_s = 0, decode_s = 0;
  for (int64_t i = 0; i < k && !rc; i++) {
    np[i] = prompt_ids(tok, o, texts[i], &ids[i]);
    if (np[i] < 0) { /* the tokenizer's error */
      rc = -1;
      break;
    }
    nprompt += np[i];
    total[i] = np[i] + o->max_new < m->max_seq_len ? np[i] + o->max_new : m->max_seq_len;
    if (np[i] <= 0 || np[i] > total[i] || (np[i] == total[i] && o->max_new > 0)) {
      dsv3_error_set("%s: prompt %lld of %lld tokens does not fit --max-seq-len %lld", o->input_file, (long long)i + 1,
                     (long long)np[i], (long long)m->max_seq_len);
      rc = -1;
      break;
    }
    res[i].out = dsv3_xmalloc((size_t)(total[i] - np[i] + 1) * sizeof(int32_t));
    res[i].prompt_n = np[i];
    int32_t *s1 = dsv3_xmalloc((size_t)np[i] * 4), *p1 = dsv3_xmalloc((size_t)np[i] * 4);
    for (int64_t j = 0; j < np[i]; j++) s1[j] = (int32_t)i, p1[j] = (int32_t)j;
    rc = dsv3_gpu_forward_ids(gpu, np[i], ids[i], s1, p1, &next[i], 0); /* sampled on the device */
    free(s1);
    free(p1);
  }
  prefill_s = dsv3_now() - t0;
  double t1 = dsv3_now();
  while (!rc) {
    int64_t n = 0;
    for (int64_t i = 0; i < k; i++) {
      if (done[i]) continue;
      int64_t pos = np[i] + res[i].n; /* where next[i] goes */
      if (tok && next[i] == dsv3_tok_eos(tok) && !o->ignore_eos) {
        done[i] = 1;
        continue;
      }
      res[i].out[res[i].n++] = next[i];
      if (pos + 1 >= total[i]) {
        done[i] = 1;
        continue;
      }
      tk[n] = next[i], sq[n] = (int32_t)i, ps[n] = (int32_t)pos;
      n++;
    }
    if (!n) break;
    if ((rc = dsv3_gpu_forward_ids(gpu, n, tk, sq, ps, nx, 1))) break;
    steps++, ntok += n;
    for (int64_t j = 0; j < n; j++) next[sq[j]] = nx[j];
  }
  decode_s = dsv3_now() - t1;
  for (int64_t i = 0; i < k && !rc; i++) {
    res[i].prefill_s = prefill_s * (double)np[i] / (double)nprompt, res[i].decode_s = decode_s;
    if (o->json) {
      print_json(tok, texts[i], ids[i], np[i], &res[i]);
    } else {
      char *txt = dsv3_tok_decode(tok, res[i].out, (size_t)res[i].n, 1, NULL);
      printf("Prompt: %s\nCompletion: %s%s\n", texts[i], o->raw ? texts[i] : "", txt);
      free(txt);
    }
  }
  if (!rc && !o->quiet)
    fprintf(stderr,
            "[%s] %lld prompts together: prefill %lld tokens, %.1f tok/s; decode %lld tokens in %lld steps, %.1f tok/s "
            "(%.2f ms/step)\n",
            PROG, (long long)k, (long long)nprompt, prefill_s > 0 ? nprompt / prefill_s : 0, (long long)ntok, (long long)steps,
            decode_s > 0 ? ntok / decode_s : 0, steps ? decode_s * 1000 / steps : 0);
  for (int64_t i = 0; i < k; i++) {
    free(ids[i]);
    free(res[i].out);
  }
  free(ids), free(np), free(total), free(next), free(tk), free(sq), free(ps), free(done), free(res), free(nx);
  return rc;
}

/* the GPU a rank drives: its local rank among the node's GPUs */
static int rank_device(const dsv3_dist_params *p) {
  int ndev = dsv3_cuda_device_count();
  int local = p->local_rank >= 0 ? p->local_rank : p->rank;
  if (ndev <= 0) {
    dsv3_error_set("no CUDA device is available");
    return -1;
  }
  /* a launcher that shows each process only its own GPU (srun --gpus-per-task 1) */
  if (ndev == 1 && p->source && strcmp(p->source, "--gpus") != 0) return 0;
  if (p->local_rank >= ndev) {
    dsv3_error_set("local rank %d but this node has %d GPUs", p->local_rank, ndev);
    return -1;
  }
  return local % ndev;
}

/* A rank > 0: load its shard, then run rank 0's forward calls until it exits. */
static int follower(const opts *o, const dsv3_dist_params *p) {
  dsv3_dist *d = NULL;
  dsv3_model *m = NULL;
  dsv3_gpu *g = NULL;
  int rc = -1, dev;
  uint32_t type;
  void *buf;
  size_t n;
  if (dsv3_dist_connect(p, &d) || dsv3_dist_recv(d, &type, &buf, &n)) goto out;
  if (type != DSV3_MSG_SETUP || n != 16) {
    free(buf);
    dsv3_error_set("rank %d: garbled setup message from rank 0", p->rank);
    goto out;
  }
  int64_t mb = ((int64_t *)buf)[0], ms = ((int64_t *)buf)[1];
  free(buf);
  int ok = dsv3_model_load_rank(o->ckpt, o->config, ms, p->rank, p->world, &m) == 0 && (dev = rank_device(p)) >= 0 &&
           dsv3_gpu_load(m, mb, dev, &g) == 0;
  if (dsv3_dist_agree(d, ok)) goto out;
  if (dsv3_gpu_attach(g, d) || dsv3_gpu_follow(g)) {
    dsv3_dist_report_failure(d);
    goto out;
  }
  rc = 0;
out:
  dsv3_gpu_free(g);
  dsv3_model_free(m);
  dsv3_dist_free(d);
  return rc;
}

typedef struct {
  const opts *o;
  dsv3_dist_params p;
} rank_arg;

/* --gpus N: ranks 1..N-1 as threads; an error ends the process (rank 0 reports it when it
 * stops them at the agreement, otherwise the failing rank does). */
static void *follower_thread(void *arg) {
  rank_arg *a = arg;
  if (follower(a->o, &a->p)) {
    const char *e = dsv3_error();
    if (!strstr(e, "ranks not ready")) { /* rank 0 prints the agreement's verdict */
      fprintf(stderr, "%s: error: %s\n", PROG, e);
      fflush(stdout);
      _exit(1);
    }
  }
  return NULL;
}
#endif

static int chat(dsv3_model *m, const dsv3_tokenizer *tok, const opts *o, uint64_t *rng) {
  dsv3_chat_msg *msgs = NULL;
  size_t n = 0;
  char *line = NULL;
  size_t cap = 0;
  int rc = 0;
  for (;;) {
    if (isatty(0)) {
      fputs(">>> ", stdout);
      fflush(stdout);
    }
    ssize_t l = getline(&line, &cap, stdin);
    if (l < 0) break;
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
    if (!strcmp(line, "/exit")) break;
    if (!strcmp(line, "/clear")) {
      for (size_t i = 0; i < n; i++) free((char *)msgs[i].content);
      n = 0;
      continue;
    }
    msgs = dsv3_xrealloc(msgs, (n + 2) * sizeof *msgs);
    msgs[n++] = (dsv3_chat_msg){"user", dsv3_xstrdup(line)};
    int32_t *ids;
    int64_t np = dsv3_tok_chat(tok, msgs, n, 1, &ids);
    if (np < 0) { /* a hostile tokenizer.json: this turn is dropped, as a failed generation */
      dsv3_error_print(PROG);
      n--;
      free((char *)msgs[n].content);
      continue;
    }
    gen_result r;
    rc = generate(m, tok, o, ids, np, 1, NULL, rng, &r);
    free(ids);
#ifdef DSV3_HAVE_CUDA
    if (rc && dsv3_dist_lost()) { /* a rank is gone: the caller reports it and exits */
      free(r.out);
      break;
    }
#endif
    if (rc) {
      dsv3_error_print(PROG);
      rc = 0;
      free(r.out);
      n--;
      free((char *)msgs[n].content);
      continue;
    }
    putchar('\n');
    report(o, &r);
    char *txt = dsv3_tok_decode(tok, r.out, (size_t)r.n, 1, NULL);
    msgs[n++] = (dsv3_chat_msg){"assistant", txt};
    free(r.out);
  }
  for (size_t i = 0; i < n; i++) free((char *)msgs[i].content);
  free(msgs);
  free(line);
  return rc;
}

int main(int argc, char **argv) {
  enum { O_CKPT = 256, O_CONFIG, O_PROMPT, O_INPUT, O_RAW, O_IDS, O_MAXNEW, O_TEMP, O_TOPP, O_SEED, O_EOS, O_MAXSEQ,
         O_DEVICE, O_ACT, O_THREADS, O_TOKENIZE, O_DUMP, O_JSON, O_VERSION, O_INTERACTIVE, O_GPUS, O_MASTER, O_TIMEOUT,
         O_BATCH };
  static const struct option lo[] = {
      {"ckpt", required_argument, 0, O_CKPT}, {"ckpt-path", required_argument, 0, O_CKPT},
      {"config", required_argument, 0, O_CONFIG}, {"prompt", required_argument, 0, O_PROMPT},
      {"input-file", required_argument, 0, O_INPUT}, {"raw", no_argument, 0, O_RAW}, {"ids", required_argument, 0, O_IDS},
      {"max-new-tokens", required_argument, 0, O_MAXNEW}, {"temperature", required_argument, 0, O_TEMP},
      {"top-p", required_argument, 0, O_TOPP}, {"seed", required_argument, 0, O_SEED},
      {"ignore-eos", no_argument, 0, O_EOS}, {"max-seq-len", required_argument, 0, O_MAXSEQ},
      {"device", required_argument, 0, O_DEVICE}, {"act", required_argument, 0, O_ACT}, {"threads", required_argument, 0, O_THREADS},
      {"tokenize", no_argument, 0, O_TOKENIZE}, {"dump-logits", required_argument, 0, O_DUMP},
      {"json", no_argument, 0, O_JSON}, {"interactive", no_argument, 0, O_INTERACTIVE},
      {"gpus", required_argument, 0, O_GPUS}, {"master", required_argument, 0, O_MASTER},
      {"timeout", required_argument, 0, O_TIMEOUT}, {"batch", required_argument, 0, O_BATCH},
      {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, O_VERSION}, {0, 0, 0, 0}};
  opts o = {.max_new = 100, .max_seq = 4096, .temperature = 0.2, .top_p = 1.0, .seed = 965, .device = NULL,
            .timeout = 300, .batch = 8};
  int c;
  char *end;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_CKPT: o.ckpt = optarg; break;
    case O_CONFIG: o.config = optarg; break;
    case O_PROMPT: o.prompt = optarg; break;
    case O_INPUT: o.input_file = optarg; break;
    case O_RAW: o.raw = 1; break;
    case O_IDS: o.ids = optarg; break;
    case O_MAXNEW:
      errno = 0;
      o.max_new = strtoll(optarg, &end, 10);
      if (*end || !*optarg || errno || o.max_new < 0) dsv3_die(PROG, 2, "--max-new-tokens needs a non-negative integer");
      if (o.max_new > (1 << 24)) o.max_new = 1 << 24; /* --max-seq-len caps it anyway; no overflow in np + max_new */
      break;
    case O_TEMP:
      o.temperature = strtod(optarg, &end);
      if (*end || !*optarg || !(o.temperature >= 0 && isfinite(o.temperature)))
        dsv3_die(PROG, 2, "--temperature needs a finite number >= 0");
      break;
    case O_TOPP:
      o.top_p = strtod(optarg, &end);
      if (*end || !*optarg || !(o.top_p > 0 && o.top_p <= 1)) dsv3_die(PROG, 2, "--top-p needs a number in (0, 1]");
      break;
    case O_SEED:
      errno = 0;
      o.seed = strtoull(optarg, &end, 10);
      if (*end || !*optarg || errno || optarg[0] == '-') dsv3_die(PROG, 2, "--seed needs a non-negative integer");
      break;
    case O_EOS: o.ignore_eos = 1; break;
    case O_MAXSEQ:
      o.max_seq = strtoll(optarg, &end, 10);
      if (*end || o.max_seq < 2 || o.max_seq > (1 << 24)) dsv3_die(PROG, 2, "--max-seq-len needs an integer in [2, 16M]");
      break;
    case O_DEVICE:
      if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) dsv3_die(PROG, 2, "--device must be cpu or cuda");
      o.device = optarg;
      break;
    case O_ACT:
      if (strcmp(optarg, "f32") && strcmp(optarg, "bf16")) dsv3_die(PROG, 2, "--act must be f32 or bf16");
      o.bf16_act = !strcmp(optarg, "bf16");
      break;
    case O_THREADS:
      o.threads = atoi(optarg);
      if (o.threads <= 0) dsv3_die(PROG, 2, "--threads needs a positive number");
      break;
    case O_TOKENIZE: o.tokenize = 1; break;
    case O_DUMP: o.dump_logits = optarg; break;
    case O_JSON: o.json = 1; break;
    case O_INTERACTIVE: break;
    case O_GPUS:
      o.gpus = (int)strtol(optarg, &end, 10);
      if (*end || o.gpus < 1 || o.gpus > 1024) dsv3_die(PROG, 2, "--gpus needs a positive integer");
      break;
    case O_MASTER: o.master = optarg; break;
    case O_TIMEOUT:
      o.timeout = strtod(optarg, &end);
      if (*end || !(o.timeout > 0)) dsv3_die(PROG, 2, "--timeout needs a positive number of seconds");
      break;
    case O_BATCH:
      o.batch = (int)strtol(optarg, &end, 10);
      if (*end || o.batch < 1 || o.batch > 4096) dsv3_die(PROG, 2, "--batch needs a positive integer");
      break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION:
      printf("dsv3-run %s (cpu", DSV3_VERSION);
#ifdef DSV3_HAVE_CUDA
      printf(" cuda%s", dsv3_dist_have_nccl() ? " nccl" : "");
#endif
      printf(")\n");
      return 0;
    default: dsv3_die_badopt(PROG, argc, argv);
    }
  }
  if (optind != argc || !o.ckpt) {
    usage(stderr);
    return 2;
  }
  if (o.threads > 0) {
    char b[32];
    snprintf(b, sizeof b, "%d", o.threads);
    setenv("DSV3_THREADS", b, 1);
  }
  int device_given = o.device != NULL;
#ifdef DSV3_HAVE_CUDA
  if (!o.device) o.device = dsv3_cuda_device_count() > 0 ? "cuda" : "cpu";
#else
  if (!o.device) o.device = "cpu";
  (void)device_given;
  if (!strcmp(o.device, "cuda")) {
    fprintf(stderr, "%s: error: --device cuda: this build has no CUDA (configure with nvcc available)\n", PROG);
    return 1;
  }
#endif
  if (!dsv3_file_exists(o.ckpt)) dsv3_die(PROG, 1, "%s: no such file or directory", o.ckpt);
  if (!dsv3_is_dir(o.ckpt)) dsv3_die(PROG, 1, "%s: not a directory (--ckpt takes the checkpoint's directory)", o.ckpt);
  dsv3_tokenizer *tok = NULL;
  char *tp = dsv3_path_join(o.ckpt, "tokenizer.json");
  if (dsv3_file_exists(tp) && dsv3_tok_load(tp, &tok) != 0) {
    free(tp);
    dsv3_error_print(PROG);
    return 1;
  }
  free(tp);
  if (!tok && !o.ids) {
    dsv3_die(PROG, 1, "%s: no tokenizer.json (use --ids to give token ids)", o.ckpt);
  }
  if (o.tokenize) {
    size_t cap = 1 << 16, n = 0;
    char *buf = dsv3_xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, stdin)) > 0) {
      n += r;
      if (n == cap) buf = dsv3_xrealloc(buf, cap *= 2);
    }
    int32_t *ids;
    int64_t k = dsv3_tok_encode(tok, buf, n, &ids);
    if (k < 0) dsv3_die(PROG, 1, "%s", dsv3_error());
    for (int64_t i = 0; i < k; i++) printf("%s%d", i ? " " : "", ids[i]);
    putchar('\n');
    free(ids);
    free(buf);
    dsv3_tok_free(tok);
    return 0;
  }
  /* --input-file: every prompt up front (the GPU decodes them --batch at a time) */
  char **texts = NULL;
  int64_t ntexts = 0, *lineno = NULL; /* the file line of each prompt, for errors */
  if (!o.ids && !o.prompt && o.input_file) {
    FILE *f = fopen(o.input_file, "r");
    if (!f) dsv3_die(PROG, 1, "%s: cannot open", o.input_file);
    char *line = NULL;
    size_t cap = 0;
    ssize_t l;
    int64_t ln = 0;
    while ((l = getline(&line, &cap, f)) >= 0) {
      ln++;
      while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
      if (!l) continue;
      if (memchr(line, 0, (size_t)l)) dsv3_die(PROG, 1, "%s: line %lld: a NUL byte in a prompt", o.input_file, (long long)ln);
      texts = dsv3_xrealloc(texts, (size_t)(ntexts + 1) * sizeof *texts);
      lineno = dsv3_xrealloc(lineno, (size_t)(ntexts + 1) * sizeof *lineno);
      lineno[ntexts] = ln;
      texts[ntexts++] = dsv3_xstrdup(line);
    }
    free(line);
    fclose(f);
  }
  int batched = !strcmp(o.device, "cuda") && ntexts > 1 && o.batch > 1 && !o.dump_logits;
  int64_t max_batch = batched ? (ntexts < o.batch ? ntexts : o.batch) : 1;
  (void)max_batch; /* the GPU backend's only */

  /* ranks: --gpus N (threads) or a launcher's environment (processes) */
  int world = 1;
#ifdef DSV3_HAVE_CUDA
  dsv3_dist *dist = NULL;
  dsv3_dist_params dp;
  pthread_t *fth = NULL;
  rank_arg *fargs = NULL;
  int launched = dsv3_dist_from_env(&dp);
  if (launched < 0) dsv3_die(PROG, 2, "%s", dsv3_error());
  if (launched && o.gpus > 1)
    dsv3_die(PROG, 2, "--gpus %d and a %s launch (world %d) both ask for ranks: use one", o.gpus, dp.source, dp.world);
  if (o.gpus > 1) {
    memset(&dp, 0, sizeof dp);
    dp.world = o.gpus, dp.source = "--gpus";
    snprintf(dp.host, sizeof dp.host, "127.0.0.1");
    launched = 1;
  } else if (launched && o.master) {
    const char *colon = strrchr(o.master, ':');
    char *e2;
    long pt = colon ? strtol(colon + 1, &e2, 10) : -1;
    if (!colon || colon == o.master || *e2 || pt <= 0 || pt > 65535 || (size_t)(colon - o.master) >= sizeof dp.host)
      dsv3_die(PROG, 2, "--master needs HOST:PORT");
    snprintf(dp.host, sizeof dp.host, "%.*s", (int)(colon - o.master), o.master);
    dp.port = (int)pt;
  }
  if (launched) {
    dp.timeout = o.timeout;
    if (device_given && !strcmp(o.device, "cpu"))
      dsv3_die(PROG, 2, "%d ranks (%s) run on GPUs: --device cpu runs one process (mp 1)", dp.world, dp.source);
    o.device = "cuda";
    world = dp.world;
    if (o.bf16_act) dsv3_die(PROG, 2, "--act bf16 is a CPU-path option");
    if (dp.rank != 0) { /* a follower: no prompts, no output but errors */
      int frc = follower(&o, &dp);
      if (frc) dsv3_error_print(PROG);
      dsv3_tok_free(tok);
      return frc ? 1 : 0;
    }
    int rrc;
    if (o.gpus > 1) {
      int lfd;
      rrc = dsv3_dist_listen(dp.host, 0, &lfd, &dp.port);
      if (!rrc) {
        fth = dsv3_xcalloc((size_t)world, sizeof *fth);
        fargs = dsv3_xcalloc((size_t)world, sizeof *fargs);
        for (int r = 1; r < world; r++) {
          fargs[r].o = &o, fargs[r].p = dp;
          fargs[r].p.rank = r, fargs[r].p.local_rank = r;
          if (pthread_create(&fth[r], NULL, follower_thread, &fargs[r])) dsv3_die(PROG, 1, "cannot start rank %d's thread", r);
        }
        dp.local_rank = 0;
        rrc = dsv3_dist_connect_leader(&dp, lfd, &dist);
        close(lfd);
      }
    } else {
      rrc = dsv3_dist_connect(&dp, &dist);
    }
    int64_t setup[2] = {max_batch, o.max_seq};
    if (rrc || dsv3_dist_send(dist, DSV3_MSG_SETUP, setup, sizeof setup)) {
      dsv3_error_print(PROG);
      return 1;
    }
  }
#endif

  dsv3_model *m = NULL;
  double t0 = dsv3_now();
  int ok = dsv3_model_load_rank(o.ckpt, o.config, o.max_seq, 0, world, &m) == 0;
  if (ok) m->threads = o.threads;
#ifdef DSV3_HAVE_CUDA
  double tg = dsv3_now();
  if (ok && !strcmp(o.device, "cuda")) {
    if (o.bf16_act) dsv3_die(PROG, 2, "--act bf16 is a CPU-path option");
    int dev = launched ? rank_device(&dp) : 0;
    if (!launched && dsv3_cuda_device_count() == 0) dsv3_die(PROG, 1, "--device cuda: no CUDA device is available");
    ok = dev >= 0 && dsv3_gpu_load(m, max_batch, dev, &gpu) == 0;
    if (ok) dsv3_gpu_set_sampling(gpu, o.temperature, o.top_p, o.seed);
  }
  if (dist) {
    ok = dsv3_dist_agree(dist, ok) == 0 && dsv3_gpu_attach(gpu, dist) == 0;
  }
#endif
  if (!ok) {
    dsv3_error_print(PROG);
#ifdef DSV3_HAVE_CUDA
    fflush(stdout);
    if (dist) _exit(1); /* the other ranks were told (or time out) */
    dsv3_gpu_free(gpu);
#endif
    dsv3_model_free(m);
    dsv3_tok_free(tok);
    return 1;
  }
#ifdef DSV3_HAVE_CUDA
  if (gpu && !o.quiet && !o.json) {
    uint64_t wb, cb;
    dsv3_gpu_memory(gpu, &wb, &cb);
    if (world > 1)
      fprintf(stderr, "[%s] cuda: %d ranks (%s), rank 0: weights %.2f GB and cache %.2f GB resident, ready in %.2f s\n", PROG,
              world, dp.source, (double)wb / 1e9, (double)cb / 1e9, dsv3_now() - tg);
    else
      fprintf(stderr, "[%s] cuda: weights %.2f GB and cache %.2f GB resident, uploaded in %.2f s\n", PROG, (double)wb / 1e9,
              (double)cb / 1e9, dsv3_now() - tg);
  }
#endif
  m->bf16_act = o.bf16_act;
  if (!o.quiet && !o.json)
    fprintf(stderr, "[%s] %s: %lld layers, %lld experts, loaded in %.2f s (%s, %d threads)\n", PROG, o.ckpt,
            (long long)m->n_layers, (long long)m->cfg.n_routed_experts, dsv3_now() - t0, o.device,
            o.threads ? o.threads : dsv3_num_cpus());
  uint64_t rng = o.seed;
  dump_t dump = {0};
  int rc = 0;
  if (o.ids) {
    int32_t *ids = NULL;
    int64_t n = 0;
    for (char *s = (char *)o.ids; *s;) {
      long v = strtol(s, &end, 10);
      if (end == s) {
        if (*s == ' ' || *s == ',') { s++; continue; }
        dsv3_die(PROG, 2, "--ids: not a list of integers");
      }
      ids = dsv3_xrealloc(ids, (size_t)(n + 1) * sizeof(int32_t));
      ids[n++] = (int32_t)v;
      s = end;
    }
    rc = run_one(m, tok, &o, NULL, ids, n, o.dump_logits ? &dump : NULL, &rng);
    free(ids);
  } else if (o.prompt) {
    rc = run_one(m, tok, &o, o.prompt, NULL, 0, o.dump_logits ? &dump : NULL, &rng);
  } else if (o.input_file) {
#ifdef DSV3_HAVE_CUDA
    if (batched)
      for (int64_t i = 0; i < ntexts && !rc; i += max_batch)
        rc = generate_batch(m, tok, &o, texts + i, ntexts - i < max_batch ? ntexts - i : max_batch);
#endif
    for (int64_t i = 0; !batched && i < ntexts && !rc; i++) {
      if (!o.json) printf("Prompt: %s\nCompletion: ", texts[i]);
      rc = run_one(m, tok, &o, texts[i], NULL, 0, o.dump_logits ? &dump : NULL, &rng);
      if (rc) dsv3_error_prefix("%s: line %lld", o.input_file, (long long)lineno[i]);
    }
  } else {
    rc = chat(m, tok, &o, &rng);
  }
  if (rc) dsv3_error_print(PROG);
  if (!rc && o.dump_logits && write_dump(o.dump_logits, &dump, m->cfg.vocab_size) != 0) {
    dsv3_error_print(PROG);
    rc = 1;
  }
  free(dump.logits);
  free(dump.ids);
  for (int64_t i = 0; i < ntexts; i++) free(texts[i]);
  free(texts);
  free(lineno);
#ifdef DSV3_HAVE_CUDA
  dsv3_gpu_finish(gpu);
  dsv3_gpu_free(gpu);
  dsv3_dist_free(dist);
  if (fth)
    for (int r = 1; r < world; r++) pthread_join(fth[r], NULL);
  free(fth);
  free(fargs);
#endif
  dsv3_model_free(m);
  dsv3_tok_free(tok);
  return rc ? 1 : 0;
}
