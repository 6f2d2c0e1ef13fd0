/* dsv3-inspect - look inside a DeepSeek-V3 checkpoint: summary, tensors, statistics,
 * structure check against config.json, and diffs.  A thin CLI over libdsv3. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fp8.h"
#include "names.h"
#include "util.h"

static const char *PROG = "dsv3-inspect";

typedef struct {
  int json, quiet, threads;
  const char *filter;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-inspect [MODE] [OPTIONS] CKPT\n"
          "Inspect a DeepSeek-V3 checkpoint: a directory in the Hugging Face layout\n"
          "(model.safetensors.index.json + shards), the runtime layout (model{r}-mp{n}.safetensors)\n"
          "or a single .safetensors file.\n\n"
          "modes (default: summary):\n"
          "  --tensors           one line per tensor: name, dtype, shape, bytes, file, offset, scale shape\n"
          "  --stats             min, max, mean, std, absmax, NaN/Inf counts (FP8 dequantised)\n"
          "  --check             structure against config.json; exit 1 listing every problem\n"
          "  --diff OTHER        compare with another checkpoint tensor by tensor (dequantised);\n"
          "                      exit 1 if anything differs\n"
          "options:\n"
          "  --filter GLOB       only tensors whose name matches GLOB (--tensors, --stats, --diff)\n"
          "  --json              machine-readable output on stdout\n"
          "  --threads N         worker threads (default: all cores)\n"
          "  -q, --quiet         no progress bar\n"
          "  -h, --help          this help;  --version  print the version\n"
          "exit status: 0 ok, 1 problems found or bad input (one line on stderr), 2 usage\n");
}

static void print_json(cJSON *j) {
  char *s = cJSON_Print(j);
  puts(s);
  free(s);
  cJSON_Delete(j);
}

static void shape_str(const dsv3_tensor *t, char *buf, size_t cap) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, cap - k, "[");
  for (int i = 0; i < t->ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

static cJSON *shape_json(const dsv3_tensor *t) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->shape[i]));
  return a;
}

/* The FP8 scale of a weight, in either naming scheme, or NULL. */
static const dsv3_tensor *scale_of(const dsv3_ckpt *ck, const char *name, int rank) {
  char sn[1024];
  size_t n = strlen(name);
  if (n > 7 && strcmp(name + n - 7, ".weight") == 0) {
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const dsv3_tensor *s = dsv3_ckpt_find(ck, sn, rank, NULL);
    if (s) return s;
    snprintf(sn, sizeof sn, "%.*s.scale", (int)(n - 7), name);
    return dsv3_ckpt_find(ck, sn, rank, NULL);
  }
  return NULL;
}

/* ------------------------------------------------------------------ summary */
static int is_mtp(const dsv3_config *c, const char *name) {
  dsv3_name_info ni;
  dsv3_name_parse(name, &ni);
  return c && ni.layer >= c->num_hidden_layers;
}

static int cmd_summary(dsv3_ckpt *ck, const opts *o) {
  const dsv3_config *c = dsv3_ckpt_config(ck);
  size_t n = dsv3_ckpt_count(ck);
  uint64_t bytes_dt[DSV3_DT_COUNT] = {0}, params_dt[DSV3_DT_COUNT] = {0};
  size_t count_dt[DSV3_DT_COUNT] = {0}, n_mtp = 0, n_fp8 = 0, n_scales = 0, n_fp8_noscale = 0;
  int64_t max_layer = -1, max_expert = -1;
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    bytes_dt[t->dtype] += t->nbytes;
    params_dt[t->dtype] += t->numel;
    count_dt[t->dtype]++;
    if (is_mtp(c, t->name)) n_mtp++;
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
    if (ni.layer > max_layer) max_layer = ni.layer;
    if (ni.expert > max_expert) max_expert = ni.expert;
    if (ni.is_scale) n_scales++;
    if (t->dtype == DSV3_F8_E4M3) {
      n_fp8++;
      if (!scale_of(ck, t->name, dsv3_ckpt_file_rank(ck, f))) n_fp8_noscale++;
    }
  }
  uint64_t total = dsv3_ckpt_total_bytes(ck);
  int64_t idx_total = dsv3_ckpt_index_total_size(ck);
  int64_t n_dense = 0, n_moe = 0, n_mtp_layers = 0;
  if (c) {
    for (int64_t l = 0; l < c->num_hidden_layers; l++) dsv3_config_layer_is_moe(c, l) ? n_moe++ : n_dense++;
    n_mtp_layers = c->num_nextn_predict_layers;
  }
  int problems = dsv3_ckpt_check_index(ck, NULL, NULL);
  if (o->json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", dsv3_ckpt_path(ck));
    cJSON_AddStringToObject(j, "layout", dsv3_ckpt_layout_name(dsv3_ckpt_layout(ck)));
    cJSON_AddNumberToObject(j, "model_parallel", dsv3_ckpt_mp(ck));
    cJSON_AddNumberToObject(j, "files", (double)dsv3_ckpt_nfiles(ck));
    cJSON_AddNumberToObject(j, "tensors", (double)n);
    cJSON_AddNumberToObject(j, "tensors_mtp", (double)n_mtp);
    cJSON_AddNumberToObject(j, "tensors_main", (double)(n - n_mtp));
    cJSON_AddNumberToObject(j, "tensor_bytes", (double)total);
    if (idx_total >= 0) cJSON_AddNumberToObject(j, "index_total_size", (double)idx_total);
    cJSON_AddNumberToObject(j, "index_problems", problems);
    if (c) {
      cJSON *cj = cJSON_AddObjectToObject(j, "config");
      cJSON_AddStringToObject(cj, "model_type", c->model_type);
      cJSON_AddNumberToObject(cj, "hidden_size", (double)c->hidden_size);
      cJSON_AddNumberToObject(cj, "vocab_size", (double)c->vocab_size);
      cJSON_AddNumberToObject(cj, "num_attention_heads", (double)c->num_attention_heads);
      cJSON_AddNumberToObject(cj, "q_lora_rank", (double)c->q_lora_rank);
      cJSON_AddNumberToObject(cj, "kv_lora_rank", (double)c->kv_lora_rank);
      cJSON_AddNumberToObject(cj, "layers_dense", (double)n_dense);
      cJSON_AddNumberToObject(cj, "layers_moe", (double)n_moe);
      cJSON_AddNumberToObject(cj, "layers_mtp", (double)n_mtp_layers);
      cJSON_AddNumberToObject(cj, "n_routed_experts", (double)c->n_routed_experts);
      cJSON_AddNumberToObject(cj, "n_shared_experts", (double)c->n_shared_experts);
      cJSON_AddNumberToObject(cj, "num_experts_per_tok", (double)c->num_experts_per_tok);
    }
    cJSON *dj = cJSON_AddObjectToObject(j, "dtypes");
    for (int d = 1; d < DSV3_DT_COUNT; d++) {
      if (!count_dt[d]) continue;
      cJSON *e = cJSON_AddObjectToObject(dj, dsv3_dtype_name((dsv3_dtype)d));
      cJSON_AddNumberToObject(e, "tensors", (double)count_dt[d]);
      cJSON_AddNumberToObject(e, "bytes", (double)bytes_dt[d]);
      cJSON_AddNumberToObject(e, "params", (double)params_dt[d]);
    }
    cJSON *q = cJSON_AddObjectToObject(j, "quantization");
    cJSON_AddNumberToObject(q, "fp8_weights", (double)n_fp8);
    cJSON_AddNumberToObject(q, "scales", (double)n_scales);
    cJSON_AddNumberToObject(q, "fp8_without_scale", (double)n_fp8_noscale);
    if (c && c->quant.present) {
      cJSON_AddStringToObject(q, "method", c->quant.quant_method);
      cJSON_AddStringToObject(q, "fmt", c->quant.fmt);
      cJSON *bs = cJSON_AddArrayToObject(q, "block_size");
      cJSON_AddItemToArray(bs, cJSON_CreateNumber((double)c->quant.weight_block_size[0]));
      cJSON_AddItemToArray(bs, cJSON_CreateNumber((double)c->quant.weight_block_size[1]));
    }
    print_json(j);
    return 0;
  }
  char hb[32];
  printf("checkpoint   %s\n", dsv3_ckpt_path(ck));
  printf("layout       %s", dsv3_ckpt_layout_name(dsv3_ckpt_layout(ck)));
  if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME) printf(" (model parallel %d)", dsv3_ckpt_mp(ck));
  printf(", %zu file%s\n", dsv3_ckpt_nfiles(ck), dsv3_ckpt_nfiles(ck) == 1 ? "" : "s");
  if (c) {
    printf("model        %s: hidden %lld, vocab %lld, %lld heads, q_lora %lld, kv_lora %lld, rope %lld\n",
           c->model_type, (long long)c->hidden_size, (long long)c->vocab_size,
           (long long)c->num_attention_heads, (long long)c->q_lora_rank, (long long)c->kv_lora_rank,
           (long long)c->qk_rope_head_dim);
    printf("layers       %lld main (%lld dense, %lld MoE) + %lld MTP\n", (long long)c->num_hidden_layers,
           (long long)n_dense, (long long)n_moe, (long long)n_mtp_layers);
    printf("experts      %lld routed (%lld per token, %lld groups, top %lld groups), %lld shared, %s scoring\n",
           (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, (long long)c->n_group,
           (long long)c->topk_group, (long long)c->n_shared_experts, c->scoring_func);
    if (c->rope_scaling.type[0])
      printf("rope         theta %g, %s factor %g (original %lld)\n", c->rope_theta, c->rope_scaling.type,
             c->rope_scaling.factor, (long long)c->rope_scaling.original_max_position_embeddings);
  } else {
    printf("model        (no config.json)\n");
  }
  printf("tensors      %zu", n);
  if (c) printf(" (%zu in the main model, %zu in MTP layers)", n - n_mtp, n_mtp);
  printf("\n");
  printf("bytes        %llu (%s)", (unsigned long long)total, dsv3_human_bytes(total, hb, sizeof hb));
  if (idx_total >= 0)
    printf(", index total_size %lld: %s", (long long)idx_total, (uint64_t)idx_total == total ? "matches" : "MISMATCH");
  printf("\n");
  printf("by dtype     ");
  int first = 1;
  for (int d = 1; d < DSV3_DT_COUNT; d++) {
    if (!count_dt[d]) continue;
    printf("%s%s: %zu tensors, %llu params, %s", first ? "" : "\n             ", dsv3_dtype_name((dsv3_dtype)d),
           count_dt[d], (unsigned long long)params_dt[d], dsv3_human_bytes(bytes_dt[d], hb, sizeof hb));
    first = 0;
  }
  printf("\n");
  if (n_fp8 || (c && c->quant.present)) {
    printf("quantization %s %s, %lldx%lld blocks: %zu FP8 weights with %zu scales\n",
           c && c->quant.present ? c->quant.quant_method : "fp8", c && c->quant.fmt[0] ? c->quant.fmt : "e4m3",
           c ? (long long)c->quant.weight_block_size[0] : 128LL, c ? (long long)c->quant.weight_block_size[1] : 128LL,
           n_fp8, n_scales);
  } else {
    printf("quantization none\n");
  }
  if (n_fp8_noscale) printf("warning      %zu FP8 weights have no scale\n", n_fp8_noscale);
  if (problems) printf("warning      index has %d problems (run --check)\n", problems);
  if (c && c->quant.present && !n_fp8) printf("warning      config has quantization_config but no tensor is FP8\n");
  if (c && !c->quant.present && n_fp8) printf("warning      FP8 tensors but config.json has no quantization_config\n");
  return 0;
}

/* ------------------------------------------------------------------ tensors */
static int cmd_tensors(dsv3_ckpt *ck, const opts *o) {
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  size_t n = dsv3_ckpt_count(ck);
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (o->filter && !dsv3_glob_match(o->filter, t->name)) continue;
    const dsv3_tensor *s = t->dtype == DSV3_F8_E4M3 ? scale_of(ck, t->name, dsv3_ckpt_file_rank(ck, f)) : NULL;
    uint64_t off = dsv3_st_data_offset(dsv3_ckpt_file(ck, f)) + t->begin;
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", t->name);
      cJSON_AddStringToObject(e, "dtype", dsv3_dtype_name(t->dtype));
      cJSON_AddItemToObject(e, "shape", shape_json(t));
      cJSON_AddNumberToObject(e, "bytes", (double)t->nbytes);
      cJSON_AddStringToObject(e, "file", dsv3_ckpt_file_name(ck, f));
      cJSON_AddNumberToObject(e, "offset", (double)off);
      if (s) cJSON_AddItemToObject(e, "scale_shape", shape_json(s));
      cJSON_AddItemToArray(arr, e);
    } else {
      char sh[128], ss[128] = "";
      shape_str(t, sh, sizeof sh);
      if (s) shape_str(s, ss, sizeof ss);
      printf("%-60s %-8s %-16s %12llu  %s @%llu%s%s\n", t->name, dsv3_dtype_name(t->dtype), sh,
             (unsigned long long)t->nbytes, dsv3_ckpt_file_name(ck, f), (unsigned long long)off,
             s ? "  scale " : "", ss);
    }
  }
  if (arr) print_json(arr);
  return 0;
}

/* ------------------------------------------------------------------ stats */
typedef struct {
  double min, max, sum, sumsq, absmax;
  uint64_t n, nan, inf;
  int skipped; /* non-float */
} stat_t;

typedef struct {
  dsv3_ckpt *ck;
  const dsv3_tensor **ts;
  size_t *fi;
  stat_t *st;
  dsv3_progress *pg;
} stats_ctx;

/* Visit a tensor's values as float32 (FP8 weights dequantised with their scale) in chunks. */
typedef void (*visit_fn)(void *ctx, const float *v, size_t n);
static int visit_values(dsv3_ckpt *ck, const dsv3_tensor *t, int rank, visit_fn fn, void *ctx) {
  const size_t CH = 1 << 16;
  float *buf = dsv3_xmalloc(CH * sizeof(float));
  const dsv3_tensor *s = t->dtype == DSV3_F8_E4M3 ? scale_of(ck, t->name, rank) : NULL;
  if (s && t->ndim == 2 && s->dtype == DSV3_F32 && s->ndim == 2 &&
      s->shape[0] == dsv3_ceil_div(t->shape[0], 128) && s->shape[1] == dsv3_ceil_div(t->shape[1], 128)) {
    int64_t M = t->shape[0], N = t->shape[1];
    int64_t rows = N > 0 ? (int64_t)(CH / (size_t)N) : 1;
    if (rows < 1) rows = 1;
    if (rows > 1) rows = rows / 1; /* whole rows per chunk */
    float *rb = N > (int64_t)CH ? dsv3_xmalloc((size_t)N * sizeof(float)) : buf;
    if (rb != buf) rows = 1;
    for (int64_t r = 0; r < M; r += rows) {
      int64_t nr = r + rows <= M ? rows : M - r;
      dsv3_fp8_dequant_rows(t->data, s->data, M, N, r, nr, DSV3_F32, rb);
      fn(ctx, rb, (size_t)(nr * N));
    }
    if (rb != buf) free(rb);
  } else {
    size_t esz = dsv3_dtype_size(t->dtype);
    for (uint64_t i = 0; i < t->numel; i += CH) {
      size_t k = t->numel - i < CH ? (size_t)(t->numel - i) : CH;
      dsv3_to_f32(t->dtype, (const uint8_t *)t->data + i * esz, buf, k);
      fn(ctx, buf, k);
    }
  }
  free(buf);
  return 0;
}

static void stat_visit(void *ctx, const float *v, size_t n) {
  stat_t *s = ctx;
  for (size_t i = 0; i < n; i++) {
    float x = v[i];
    if (isnan(x)) {
      s->nan++;
      continue;
    }
    if (isinf(x)) {
      s->inf++;
      continue;
    }
    if (s->n == 0 || x < s->min) s->min = x;
    if (s->n == 0 || x > s->max) s->max = x;
    s->sum += x;
    s->sumsq += (double)x * x;
    if (fabs(x) > s->absmax) s->absmax = fabs(x);
    s->n++;
  }
}

static int stats_task(void *vctx, size_t i, int thread) {
  (void)thread;
  stats_ctx *c = vctx;
  const dsv3_tensor *t = c->ts[i];
  if (!dsv3_dtype_is_float(t->dtype) && t->dtype != DSV3_F8_E4M3) {
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
  }
  visit_values(c->ck, t, dsv3_ckpt_file_rank(c->ck, c->fi[i]), stat_visit, &c->st[i]);
  dsv3_progress_add(c->pg, t->nbytes);
  return 0;
}

static int cmd_stats(dsv3_ckpt *ck, const opts *o) {
  size_t n = dsv3_ckpt_count(ck), k = 0;
  const dsv3_tensor **ts = dsv3_xmalloc((n ? n : 1) * sizeof *ts);
  size_t *fi = dsv3_xmalloc((n ? n : 1) * sizeof *fi);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (o->filter && !dsv3_glob_match(o->filter, t->name)) continue;
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
    ts[k] = t;
    fi[k++] = f;
    total += t->nbytes;
  }
  stats_ctx c = {ck, ts, fi, dsv3_xcalloc(k ? k : 1, sizeof(stat_t)), dsv3_progress_new("stats", total, o->quiet || o->json)};
  double t0 = dsv3_now();
  dsv3_parallel_for(k, o->threads, stats_task, &c);
  double el = dsv3_now() - t0;
  dsv3_progress_done(c.pg);
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  if (!arr) printf("%-60s %-8s %12s %12s %12s %12s %12s %6s %6s\n", "name", "dtype", "min", "max", "mean", "std", "absmax", "nan", "inf");
  for (size_t i = 0; i < k; i++) {
    stat_t *s = &c.st[i];
    double mean = s->n ? s->sum / (double)s->n : 0;
    double var = s->n ? s->sumsq / (double)s->n - mean * mean : 0;
    double sd = var > 0 ? sqrt(var) : 0;
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", ts[i]->name);
      cJSON_AddStringToObject(e, "dtype", dsv3_dtype_name(ts[i]->dtype));
      cJSON_AddNumberToObject(e, "count", (double)s->n);
      cJSON_AddNumberToObject(e, "min", s->min);
      cJSON_AddNumberToObject(e, "max", s->max);
      cJSON_AddNumberToObject(e, "mean", mean);
      cJSON_AddNumberToObject(e, "std", sd);
      cJSON_AddNumberToObject(e, "absmax", s->absmax);
      cJSON_AddNumberToObject(e, "nan", (double)s->nan);
      cJSON_AddNumberToObject(e, "inf", (double)s->inf);
      cJSON_AddItemToArray(arr, e);
    } else {
      printf("%-60s %-8s %12.5g %12.5g %12.5g %12.5g %12.5g %6llu %6llu\n", ts[i]->name,
             dsv3_dtype_name(ts[i]->dtype), s->min, s->max, mean, sd, s->absmax, (unsigned long long)s->nan,
             (unsigned long long)s->inf);
    }
  }
  if (arr) print_json(arr);
  else if (!o->quiet) {
    char hb[32];
    fprintf(stderr, "%zu tensors, %s in %.2f s (%.2f GB/s)\n", k, dsv3_human_bytes(total, hb, sizeof hb), el,
            el > 0 ? (double)total / el / 1e9 : 0);
  }
  free(c.st);
  free(ts);
  free(fi);
  return 0;
}

/* ------------------------------------------------------------------ check */
typedef struct {
  int n;
  cJSON *arr;
} problems_t;

static void problem(void *ctx, const char *line) {
  problems_t *p = ctx;
  p->n++;
  if (p->arr) cJSON_AddItemToArray(p->arr, cJSON_CreateString(line));
  else printf("%s\n", line);
}

typedef struct {
  char name[256];
  dsv3_dtype dtype;
  int ndim;
  int64_t shape[2];
  int fp8; /* expects a scale */
  int found;
} expect_t;

typedef struct {
  expect_t *e;
  size_t n, cap;
} expects;

static void expect(expects *x, int fp8, dsv3_dtype dt, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void expect(expects *x, int fp8, dsv3_dtype dt, int64_t d0, int64_t d1, const char *fmt, ...) {
  if (x->n == x->cap) {
    x->cap = x->cap ? x->cap * 2 : 256;
    x->e = dsv3_xrealloc(x->e, x->cap * sizeof *x->e);
  }
  expect_t *e = &x->e[x->n++];
  memset(e, 0, sizeof *e);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->name, sizeof e->name, fmt, ap);
  va_end(ap);
  e->dtype = dt;
  e->ndim = d1 > 0 ? 2 : 1;
  e->shape[0] = d0;
  e->shape[1] = d1;
  e->fp8 = fp8;
}

/* The HF tensor list DeepSeek-V3's modeling code expects from config.json. */
static void expected_hf(const dsv3_config *c, expects *x) {
  int q8 = c->quant.present;
  dsv3_dtype W = q8 ? DSV3_F8_E4M3 : DSV3_BF16, BF = DSV3_BF16;
  if (!q8 && strcmp(c->torch_dtype, "float32") == 0) W = BF = DSV3_F32;
  int64_t D = c->hidden_size, H = c->num_attention_heads, qk = dsv3_config_qk_head_dim(c);
  expect(x, 0, BF, c->vocab_size, D, "model.embed_tokens.weight");
  expect(x, 0, BF, D, 0, "model.norm.weight");
  expect(x, 0, BF, c->vocab_size, D, "lm_head.weight");
  for (int64_t l = 0; l < dsv3_config_total_layers(c); l++) {
    const char *p = "model.layers";
    expect(x, 0, BF, D, 0, "%s.%lld.input_layernorm.weight", p, (long long)l);
    expect(x, 0, BF, D, 0, "%s.%lld.post_attention_layernorm.weight", p, (long long)l);
    if (c->q_lora_rank > 0) {
      expect(x, q8, W, c->q_lora_rank, D, "%s.%lld.self_attn.q_a_proj.weight", p, (long long)l);
      expect(x, 0, BF, c->q_lora_rank, 0, "%s.%lld.self_attn.q_a_layernorm.weight", p, (long long)l);
      expect(x, q8, W, H * qk, c->q_lora_rank, "%s.%lld.self_attn.q_b_proj.weight", p, (long long)l);
    } else {
      expect(x, q8, W, H * qk, D, "%s.%lld.self_attn.q_proj.weight", p, (long long)l);
    }
    expect(x, q8, W, c->kv_lora_rank + c->qk_rope_head_dim, D, "%s.%lld.self_attn.kv_a_proj_with_mqa.weight", p, (long long)l);
    expect(x, 0, BF, c->kv_lora_rank, 0, "%s.%lld.self_attn.kv_a_layernorm.weight", p, (long long)l);
    expect(x, q8, W, H * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, "%s.%lld.self_attn.kv_b_proj.weight", p, (long long)l);
    expect(x, q8, W, D, H * c->v_head_dim, "%s.%lld.self_attn.o_proj.weight", p, (long long)l);
    if (dsv3_config_layer_is_moe(c, l)) {
      int64_t I = c->moe_intermediate_size;
      expect(x, 0, BF, c->n_routed_experts, D, "%s.%lld.mlp.gate.weight", p, (long long)l);
      if (strcmp(c->topk_method, "noaux_tc") == 0)
        expect(x, 0, DSV3_F32, c->n_routed_experts, 0, "%s.%lld.mlp.gate.e_score_correction_bias", p, (long long)l);
      for (int64_t e = 0; e < c->n_routed_experts; e++) {
        expect(x, q8, W, I, D, "%s.%lld.mlp.experts.%lld.gate_proj.weight", p, (long long)l, (long long)e);
        expect(x, q8, W, I, D, "%s.%lld.mlp.experts.%lld.up_proj.weight", p, (long long)l, (long long)e);
        expect(x, q8, W, D, I, "%s.%lld.mlp.experts.%lld.down_proj.weight", p, (long long)l, (long long)e);
      }
      if (c->n_shared_experts > 0) {
        int64_t S = I * c->n_shared_experts;
        expect(x, q8, W, S, D, "%s.%lld.mlp.shared_experts.gate_proj.weight", p, (long long)l);
        expect(x, q8, W, S, D, "%s.%lld.mlp.shared_experts.up_proj.weight", p, (long long)l);
        expect(x, q8, W, D, S, "%s.%lld.mlp.shared_experts.down_proj.weight", p, (long long)l);
      }
    } else {
      int64_t I = c->intermediate_size;
      expect(x, q8, W, I, D, "%s.%lld.mlp.gate_proj.weight", p, (long long)l);
      expect(x, q8, W, I, D, "%s.%lld.mlp.up_proj.weight", p, (long long)l);
      expect(x, q8, W, D, I, "%s.%lld.mlp.down_proj.weight", p, (long long)l);
    }
    if (l >= c->num_hidden_layers) { /* MTP extras */
      expect(x, 0, BF, D, 0, "%s.%lld.enorm.weight", p, (long long)l);
      expect(x, 0, BF, D, 0, "%s.%lld.hnorm.weight", p, (long long)l);
      expect(x, 0, BF, D, 2 * D, "%s.%lld.eh_proj.weight", p, (long long)l);
      expect(x, 0, BF, c->vocab_size, D, "%s.%lld.embed_tokens.weight", p, (long long)l);
      expect(x, 0, BF, D, 0, "%s.%lld.shared_head.norm.weight", p, (long long)l);
      expect(x, 0, BF, c->vocab_size, D, "%s.%lld.shared_head.head.weight", p, (long long)l);
    }
  }
}

static int cmd_check(dsv3_ckpt *ck, const opts *o) {
  problems_t P = {0, o->json ? cJSON_CreateArray() : NULL};
  const dsv3_config *c = dsv3_ckpt_config(ck);
  dsv3_ckpt_check_index(ck, problem, &P);
  char line[1024];
  size_t n = dsv3_ckpt_count(ck);
  /* every FP8 weight has a scale of the right shape and dtype */
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (t->dtype != DSV3_F8_E4M3) continue;
    const dsv3_tensor *s = scale_of(ck, t->name, dsv3_ckpt_file_rank(ck, f));
    if (!s) {
      snprintf(line, sizeof line, "%s: tensor %s: FP8 weight without a scale", dsv3_ckpt_file_name(ck, f), t->name);
      problem(&P, line);
    } else if (t->ndim != 2 || s->ndim != 2 || s->dtype != DSV3_F32 || s->shape[0] != dsv3_ceil_div(t->shape[0], 128) ||
               s->shape[1] != dsv3_ceil_div(t->shape[1], 128)) {
      char a[64], b[64];
      shape_str(t, a, sizeof a);
      shape_str(s, b, sizeof b);
      snprintf(line, sizeof line, "%s: tensor %s: scale %s %s does not fit weight %s (want F32 [%lld, %lld])",
               dsv3_ckpt_file_name(ck, f), t->name, dsv3_dtype_name(s->dtype), b, a,
               t->ndim == 2 ? (long long)dsv3_ceil_div(t->shape[0], 128) : -1LL,
               t->ndim == 2 ? (long long)dsv3_ceil_div(t->shape[1], 128) : -1LL);
      problem(&P, line);
    }
  }
  if (!c) {
    snprintf(line, sizeof line, "%s: no config.json: structure not checked", dsv3_ckpt_path(ck));
    problem(&P, line);
  } else if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME) {
    /* runtime layout: every tensor name must map back to an expected HF name */
    expects X = {0};
    expected_hf(c, &X);
    for (size_t i = 0; i < n; i++) {
      size_t f;
      const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
      char hf[1024];
      int ok = dsv3_name_rt_to_hf(t->name, hf, sizeof hf) == 0;
      size_t k;
      if (ok) {
        size_t hl = strlen(hf);
        if (hl > 17 && strcmp(hf + hl - 17, ".weight_scale_inv") == 0) continue;
        for (k = 0; k < X.n; k++)
          if (strcmp(X.e[k].name, hf) == 0) break;
        ok = k < X.n;
        if (ok) X.e[k].found = 1;
      }
      if (!ok) {
        snprintf(line, sizeof line, "%s: tensor %s: not expected by config.json", dsv3_ckpt_file_name(ck, f), t->name);
        problem(&P, line);
      }
    }
    free(X.e);
  } else {
    expects X = {0};
    expected_hf(c, &X);
    for (size_t k = 0; k < X.n; k++) {
      expect_t *e = &X.e[k];
      const dsv3_tensor *t = dsv3_ckpt_find(ck, e->name, -1, NULL);
      if (!t) {
        snprintf(line, sizeof line, "tensor %s: missing", e->name);
        problem(&P, line);
        continue;
      }
      e->found = 1;
      int shape_ok = t->ndim == e->ndim && t->shape[0] == e->shape[0] && (e->ndim < 2 || t->shape[1] == e->shape[1]);
      if (!shape_ok) {
        char a[64];
        shape_str(t, a, sizeof a);
        if (e->ndim == 2)
          snprintf(line, sizeof line, "tensor %s: shape %s, expected [%lld, %lld]", e->name, a, (long long)e->shape[0], (long long)e->shape[1]);
        else
          snprintf(line, sizeof line, "tensor %s: shape %s, expected [%lld]", e->name, a, (long long)e->shape[0]);
        problem(&P, line);
      }
      /* FP8 kinds may also be stored dequantised (BF16/F16/F32 after dsv3-cast). */
      int dt_ok = t->dtype == e->dtype || (dsv3_dtype_is_float(t->dtype) && t->dtype != DSV3_F8_E4M3 &&
                                           (e->dtype == DSV3_BF16 || e->fp8 || e->dtype == DSV3_F32) && !c->quant.present) ||
                  (e->dtype == DSV3_F32 && t->dtype == DSV3_F32);
      if (!dt_ok) {
        snprintf(line, sizeof line, "tensor %s: dtype %s, expected %s", e->name, dsv3_dtype_name(t->dtype), dsv3_dtype_name(e->dtype));
        problem(&P, line);
      }
    }
    for (size_t i = 0; i < n; i++) {
      size_t f;
      const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
      size_t tl = strlen(t->name);
      if (tl > 17 && strcmp(t->name + tl - 17, ".weight_scale_inv") == 0) {
        char w[1024];
        snprintf(w, sizeof w, "%.*s", (int)(tl - 10), t->name);
        const dsv3_tensor *wt = dsv3_ckpt_find(ck, w, -1, NULL);
        if (!wt || wt->dtype != DSV3_F8_E4M3) {
          snprintf(line, sizeof line, "%s: tensor %s: scale without an FP8 weight", dsv3_ckpt_file_name(ck, f), t->name);
          problem(&P, line);
        }
        continue;
      }
      size_t k;
      for (k = 0; k < X.n; k++)
        if (X.e[k].found == 1 && strcmp(X.e[k].name, t->name) == 0) break;
      if (k == X.n) {
        snprintf(line, sizeof line, "%s: tensor %s: not expected by config.json", dsv3_ckpt_file_name(ck, f), t->name);
        problem(&P, line);
      }
    }
    free(X.e);
  }
  if (P.arr) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", P.n == 0);
    cJSON_AddItemToObject(j, "problems", P.arr);
    print_json(j);
  } else if (P.n == 0) {
    printf("ok: %zu tensors match config.json, every FP8 weight has its scale, index consistent\n", n);
  } else {
    fprintf(stderr, "%s: %d problem%s\n", PROG, P.n, P.n == 1 ? "" : "s");
  }
  return P.n ? 1 : 0;
}

/* ------------------------------------------------------------------ diff */
typedef struct {
  const float *ref;
  size_t pos;
  double maxabs, maxrel, refmax;
} diff_acc;

/* Collect a tensor's values as float (dequantised) into a malloc'd array. */
typedef struct {
  float *v;
  size_t n;
} collect_t;
static void collect_visit(void *ctx, const float *v, size_t n) {
  collect_t *c = ctx;
  memcpy(c->v + c->n, v, n * sizeof(float));
  c->n += n;
}

/* HF name of a tensor in either layout. */
static void hf_name(const dsv3_ckpt *ck, const char *name, char *out, size_t cap) {
  if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME && dsv3_name_rt_to_hf(name, out, cap) == 0) return;
  snprintf(out, cap, "%s", name);
}

static int cmd_diff(dsv3_ckpt *a, dsv3_ckpt *b, const char *bpath, const opts *o) {
  if (dsv3_ckpt_mp(a) > 1 || dsv3_ckpt_mp(b) > 1) {
    dsv3_error_set("--diff compares whole tensors: reshard model-parallel checkpoints to mp 1 first (dsv3-convert --mp 1)");
    return -1;
  }
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  int ndiff = 0;
  size_t na = dsv3_ckpt_count(a), nb = dsv3_ckpt_count(b);
  char *seen = dsv3_xcalloc(nb ? nb : 1, 1);
  /* map HF names of b for lookup */
  for (size_t i = 0; i < na; i++) {
    const dsv3_tensor *t = dsv3_ckpt_tensor(a, i, NULL);
    char ha[1024];
    hf_name(a, t->name, ha, sizeof ha);
    dsv3_name_info ni;
    dsv3_name_parse(ha, &ni);
    if (ni.is_scale) continue;
    if (o->filter && !dsv3_glob_match(o->filter, ha)) continue;
    /* find in b under either naming */
    const dsv3_tensor *u = NULL;
    size_t ub = 0;
    for (size_t j = 0; j < nb && !u; j++) {
      const dsv3_tensor *c = dsv3_ckpt_tensor(b, j, NULL);
      char hb[1024];
      hf_name(b, c->name, hb, sizeof hb);
      if (strcmp(ha, hb) == 0) {
        u = c;
        ub = j;
      }
    }
    const char *status;
    double maxabs = 0, maxrel = 0;
    if (!u) {
      status = "only in first";
      ndiff++;
    } else {
      seen[ub] = 1;
      if (t->numel != u->numel || t->ndim != u->ndim || memcmp(t->shape, u->shape, sizeof(int64_t) * (size_t)t->ndim)) {
        status = "shape differs";
        ndiff++;
      } else {
        collect_t ca = {dsv3_xmalloc((t->numel ? t->numel : 1) * sizeof(float)), 0};
        collect_t cb = {dsv3_xmalloc((u->numel ? u->numel : 1) * sizeof(float)), 0};
        visit_values(a, t, -1, collect_visit, &ca);
        visit_values(b, u, -1, collect_visit, &cb);
        double refmax = 0;
        for (size_t k = 0; k < ca.n; k++) {
          double d = fabs((double)ca.v[k] - (double)cb.v[k]);
          if (isnan(ca.v[k]) != isnan(cb.v[k])) d = INFINITY;
          else if (isnan(d)) d = 0;
          if (d > maxabs) maxabs = d;
          if (fabs(ca.v[k]) > refmax) refmax = fabs(ca.v[k]);
          double rel = d / (fabs(ca.v[k]) > 1e-30 ? fabs(ca.v[k]) : 1e-30);
          if (d > 0 && rel > maxrel) maxrel = rel;
        }
        free(ca.v);
        free(cb.v);
        status = maxabs == 0 ? "equal" : "differs";
        if (maxabs != 0) ndiff++;
      }
    }
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", ha);
      cJSON_AddStringToObject(e, "status", status);
      cJSON_AddNumberToObject(e, "max_abs", maxabs);
      cJSON_AddNumberToObject(e, "max_rel", maxrel);
      cJSON_AddItemToArray(arr, e);
    } else if (strcmp(status, "equal") != 0) {
      printf("%-60s %-14s max_abs %.6g max_rel %.6g\n", ha, status, maxabs, maxrel);
    }
  }
  for (size_t j = 0; j < nb; j++) {
    if (seen[j]) continue;
    const dsv3_tensor *c = dsv3_ckpt_tensor(b, j, NULL);
    char hb[1024];
    hf_name(b, c->name, hb, sizeof hb);
    dsv3_name_info ni;
    dsv3_name_parse(hb, &ni);
    if (ni.is_scale || (o->filter && !dsv3_glob_match(o->filter, hb))) continue;
    ndiff++;
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", hb);
      cJSON_AddStringToObject(e, "status", "only in second");
      cJSON_AddItemToArray(arr, e);
    } else {
      printf("%-60s only in second (%s)\n", hb, bpath);
    }
  }
  free(seen);
  if (arr) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "equal", ndiff == 0);
    cJSON_AddNumberToObject(j, "differences", ndiff);
    cJSON_AddItemToObject(j, "tensors", arr);
    print_json(j);
  } else {
    printf("%s: %d tensor%s differ\n", ndiff ? "different" : "equal", ndiff, ndiff == 1 ? "" : "s");
  }
  return ndiff ? 1 : 0;
}

int main(int argc, char **argv) {
  enum { O_TENSORS = 256, O_STATS, O_CHECK, O_DIFF, O_FILTER, O_JSON, O_THREADS, O_VERSION };
  static const struct option lo[] = {
      {"tensors", no_argument, 0, O_TENSORS}, {"stats", no_argument, 0, O_STATS},
      {"check", no_argument, 0, O_CHECK},     {"diff", required_argument, 0, O_DIFF},
      {"filter", required_argument, 0, O_FILTER}, {"json", no_argument, 0, O_JSON},
      {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},          {"version", no_argument, 0, O_VERSION},
      {0, 0, 0, 0}};
  opts o = {0};
  int mode = 0;
  const char *other = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_TENSORS: case O_STATS: case O_CHECK:
      if (mode && mode != c) dsv3_die(PROG, 2, "choose one of --tensors, --stats, --check, --diff");
      mode = c;
      break;
    case O_DIFF:
      if (mode && mode != c) dsv3_die(PROG, 2, "choose one of --tensors, --stats, --check, --diff");
      mode = c;
      other = optarg;
      break;
    case O_FILTER: o.filter = optarg; break;
    case O_JSON: o.json = 1; break;
    case O_THREADS:
      o.threads = atoi(optarg);
      if (o.threads <= 0) dsv3_die(PROG, 2, "--threads needs a positive number");
      break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("dsv3-inspect %s\n", DSV3_VERSION); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    usage(stderr);
    return 2;
  }
  dsv3_ckpt *ck;
  if (dsv3_ckpt_open(argv[optind], &ck) != 0) {
    dsv3_error_print(PROG);
    return 1;
  }
  int rc;
  switch (mode) {
  case O_TENSORS: rc = cmd_tensors(ck, &o); break;
  case O_STATS: rc = cmd_stats(ck, &o); break;
  case O_CHECK: rc = cmd_check(ck, &o); break;
  case O_DIFF: {
    dsv3_ckpt *ck2;
    if (dsv3_ckpt_open(other, &ck2) != 0) {
      dsv3_error_print(PROG);
      dsv3_ckpt_close(ck);
      return 1;
    }
    rc = cmd_diff(ck, ck2, other, &o);
    if (rc < 0) dsv3_error_print(PROG);
    dsv3_ckpt_close(ck2);
    rc = rc < 0 ? 1 : rc;
    break;
  }
  default: rc = cmd_summary(ck, &o); break;
  }
  dsv3_ckpt_close(ck);
  return rc;
}
