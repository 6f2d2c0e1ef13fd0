/* dsv3-gen - write a random DeepSeek-V3 checkpoint in the official Hugging Face FP8 layout
 * for any config (e.g. the real 671B config cut to N layers), so tools can be tested and
 * benchmarked at real widths without downloading 688 GB.
 *
 * Layout as the official release: linear projections F8_E4M3 with float32 128x128 block
 * scales (weight_scale_inv), embeddings / norms / router / lm_head / MTP eh_proj and
 * shared_head in BF16, e_score_correction_bias in F32; shards model-0000X-of-0000Y.safetensors
 * (reference safetensors layout, {"format": "pt"} metadata) with model.safetensors.index.json
 * and config.json (num_hidden_layers = --layers).  The tensor list is dsv3-inspect's
 * (dsv3-inspect/expect.c), so `dsv3-inspect --check` accepts the result.
 *
 * Values: e4m3 bytes follow a quantised normal (sigma 448/4.5, so a block's absmax is near
 * the e4m3 maximum, as real block quantisation gives; never NaN), scales log-uniform in
 * [1e-3, 1e-2]; BF16 weights N(0, 0.02), norms N(1, 0.1), biases N(0, 0.01).  Every value
 * depends only on --seed, the tensor and the position (counter-based generator), not on
 * --threads or the shard size.
 *
 * Streaming: each shard is laid out by the safetensors writer, then filled chunk by chunk
 * (8 MB per thread) with pwrite; it appears under its final name when complete. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config.h"
#include "expect.h"
#include "fp8.h"
#include "safetensors.h"
#include "util.h"

static const char *PROG = "dsv3-gen";
#define CHUNK (8u << 20)

/* ---------------------------------------------------------------- random numbers */
static inline uint64_t mix64(uint64_t z) { /* splitmix64 finaliser */
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Inverse of the standard normal CDF (Acklam; relative error < 1.2e-9). */
static double norm_inv(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549671010115618e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  double q, r;
  if (p < 0.02425) {
    q = sqrt(-2 * log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - 0.02425) return -norm_inv(1 - p);
  q = p - 0.5;
  r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* 16 random bits -> a normal variate, by quantile (65536 equiprobable values). */
static float *normal_table(void) {
  float *t = dsv3_xmalloc(65536 * sizeof(float));
  for (int k = 0; k < 65536; k++) t[k] = (float)norm_inv((k + 0.5) / 65536.0);
  return t;
}

typedef enum { V_FP8, V_SCALE, V_BF_W, V_NORM, V_BIAS } vkind;

typedef struct {
  uint8_t e4[65536];   /* e4m3 bytes of N(0, 448/4.5) */
  float nrm[65536];    /* N(0,1) */
  uint16_t bfw[65536]; /* bf16 of N(0, 0.02) */
  uint16_t bfn[65536]; /* bf16 of N(1, 0.1) */
} tables_t;
static tables_t TB;

static void build_tables(void) {
  float *n = normal_table();
  for (int k = 0; k < 65536; k++) {
    TB.nrm[k] = n[k];
    TB.e4[k] = dsv3_f32_to_e4m3(n[k] * (448.0f / 4.5f)); /* saturating: never NaN */
    TB.bfw[k] = dsv3_f32_to_bf16(0.02f * n[k]);
    TB.bfn[k] = dsv3_f32_to_bf16(1.0f + 0.1f * n[k]);
  }
  free(n);
}

/* Fill `n` bytes of tensor data starting at byte `off` of a tensor of dtype `dt`. */
static void fill(vkind k, dsv3_dtype dt, uint64_t key, uint64_t off, uint8_t *buf, size_t n) {
  size_t esz = dsv3_dtype_size(dt);
  uint64_t e0 = off / esz, ne = n / esz;
  if (k == V_FP8) { /* 4 bytes per 64-bit draw */
    for (uint64_t i = 0; i < ne; i += 4) {
      uint64_t r = mix64(key ^ mix64((e0 + i) >> 2));
      for (int q = 0; q < 4 && i + (uint64_t)q < ne; q++) buf[i + (uint64_t)q] = TB.e4[(r >> (16 * q)) & 0xffff];
    }
    return;
  }
  if (dt == DSV3_BF16 && (k == V_BF_W || k == V_NORM)) { /* 4 elements per draw */
    const uint16_t *tab = k == V_NORM ? TB.bfn : TB.bfw;
    for (uint64_t i = 0; i < ne; i += 4) {
      uint64_t r = mix64(key ^ mix64((e0 + i) >> 2));
      for (int q = 0; q < 4 && i + (uint64_t)q < ne; q++) {
        uint16_t h = tab[(r >> (16 * q)) & 0xffff];
        memcpy(buf + 2 * (i + (uint64_t)q), &h, 2); /* little-endian hosts */
      }
    }
    return;
  }
  for (uint64_t i = 0; i < ne; i++) {
    uint64_t r = mix64(key ^ mix64(e0 + i));
    float v;
    switch (k) {
    case V_SCALE: v = (float)exp(log(1e-3) + (double)(r >> 11) * 0x1.0p-53 * log(10.0)); break;
    case V_NORM: v = 1.0f + 0.1f * TB.nrm[r & 0xffff]; break;
    case V_BIAS: v = 0.01f * TB.nrm[r & 0xffff]; break;
    default: v = 0.02f * TB.nrm[r & 0xffff]; break;
    }
    dsv3_from_f32(dt, &v, buf + i * esz, 1);
  }
}

/* ---------------------------------------------------------------- plan */
typedef struct {
  char name[200];
  dsv3_dtype dt;
  int ndim;
  int64_t shape[2];
  uint64_t bytes;
  vkind kind;
  uint64_t key;
  int shard, idx; /* writer index within the shard */
} gt_t;

typedef struct {
  size_t t;
  uint64_t off;
  size_t n;
} chunk_t;

typedef struct {
  gt_t *ts;
  chunk_t *ch;
  dsv3_stw *w;
  uint8_t **buf; /* per thread */
  dsv3_progress *pg;
} run_ctx;

static int run_chunk(void *vctx, size_t i, int thread) {
  run_ctx *c = vctx;
  const chunk_t *k = &c->ch[i];
  const gt_t *t = &c->ts[k->t];
  if (!c->buf[thread]) c->buf[thread] = dsv3_xmalloc(CHUNK);
  fill(t->kind, t->dt, t->key, k->off, c->buf[thread], k->n);
  if (dsv3_stw_pwrite(c->w, t->idx, k->off, c->buf[thread], k->n) != 0) return -1;
  dsv3_progress_add(c->pg, k->n);
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-gen --config CONFIG.json --out DIR [OPTIONS]\n"
          "Write a random DeepSeek-V3 checkpoint in the official Hugging Face FP8 layout\n"
          "(F8_E4M3 linear weights with float32 128x128 block scales, BF16 embeddings, norms,\n"
          "router and lm_head, F32 router bias), sharded, with index and config.json.\n\n"
          "  --config FILE      HF config.json (or the official demo's config_671B.json format)\n"
          "  --out DIR          output directory (created; must not hold a checkpoint unless --force)\n"
          "  --layers N         main layers (default: num_hidden_layers of the config)\n"
          "  --no-mtp           no MTP layers (num_nextn_predict_layers = 0)\n"
          "  --dtype fp8|bf16   bf16: unquantised, no scales, no quantization_config (default: fp8\n"
          "                     when the config has a quantization_config)\n"
          "  --seed S           random seed (default 0); values never depend on --threads\n"
          "  --shard-size SIZE  bytes per shard, e.g. 5G (default 5G)\n"
          "  --shards N         about N equal shards instead (at most N)\n"
          "  --threads N        worker threads (default: all cores)\n"
          "  --force            write into a directory that already holds a checkpoint\n"
          "  --dry-run          print the plan (tensors, bytes, shards) and write nothing\n"
          "  --json             print a JSON summary on stdout\n"
          "  -q, --quiet        no progress bar\n"
          "  -h, --help, --version\n");
}

static void die_usage(const char *m) {
  fprintf(stderr, "%s: %s (see --help)\n", PROG, m);
  exit(2);
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(const gt_t *const *)a)->name, (*(const gt_t *const *)b)->name);
}

/* config.json for the output: the input's JSON with the layer count changed (unknown fields
 * kept), or, for the demo format, the HF fields from the parsed struct. */
static char *out_config(const char *path, const dsv3_config *c, int64_t layers, int64_t mtp, int fp8) {
  cJSON *j = NULL;
  if (!c->from_demo_format) {
    char *txt;
    size_t len;
    if (dsv3_read_file(path, &txt, &len, 16u << 20) == 0) {
      j = cJSON_ParseWithLength(txt, len);
      free(txt);
    }
  }
  if (!j) {
    j = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(a, cJSON_CreateString("DeepseekV3ForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", "deepseek_v3");
#define I(k, v) cJSON_AddNumberToObject(j, k, (double)(v))
    I("vocab_size", c->vocab_size); I("hidden_size", c->hidden_size); I("intermediate_size", c->intermediate_size);
    I("moe_intermediate_size", c->moe_intermediate_size); I("num_attention_heads", c->num_attention_heads);
    I("num_key_value_heads", c->num_key_value_heads); I("n_shared_experts", c->n_shared_experts);
    I("n_routed_experts", c->n_routed_experts); I("routed_scaling_factor", c->routed_scaling_factor);
    I("kv_lora_rank", c->kv_lora_rank); I("q_lora_rank", c->q_lora_rank); I("qk_rope_head_dim", c->qk_rope_head_dim);
    I("qk_nope_head_dim", c->qk_nope_head_dim); I("v_head_dim", c->v_head_dim); I("n_group", c->n_group);
    I("topk_group", c->topk_group); I("num_experts_per_tok", c->num_experts_per_tok);
    I("moe_layer_freq", c->moe_layer_freq); I("first_k_dense_replace", c->first_k_dense_replace);
    I("max_position_embeddings", c->max_position_embeddings); I("rms_norm_eps", c->rms_norm_eps);
    I("bos_token_id", c->bos_token_id); I("eos_token_id", c->eos_token_id); I("rope_theta", c->rope_theta);
#undef I
    cJSON_AddStringToObject(j, "topk_method", c->topk_method);
    cJSON_AddStringToObject(j, "scoring_func", c->scoring_func);
    cJSON_AddStringToObject(j, "hidden_act", c->hidden_act[0] ? c->hidden_act : "silu");
    cJSON_AddBoolToObject(j, "norm_topk_prob", c->norm_topk_prob);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddStringToObject(j, "torch_dtype", "bfloat16");
    if (c->rope_scaling.type[0]) {
      cJSON *r = cJSON_AddObjectToObject(j, "rope_scaling");
      cJSON_AddStringToObject(r, "type", c->rope_scaling.type);
      cJSON_AddNumberToObject(r, "factor", c->rope_scaling.factor);
      cJSON_AddNumberToObject(r, "original_max_position_embeddings", (double)c->rope_scaling.original_max_position_embeddings);
      cJSON_AddNumberToObject(r, "beta_fast", c->rope_scaling.beta_fast);
      cJSON_AddNumberToObject(r, "beta_slow", c->rope_scaling.beta_slow);
      cJSON_AddNumberToObject(r, "mscale", c->rope_scaling.mscale);
      cJSON_AddNumberToObject(r, "mscale_all_dim", c->rope_scaling.mscale_all_dim);
    }
  }
  cJSON_DeleteItemFromObjectCaseSensitive(j, "num_hidden_layers");
  cJSON_AddNumberToObject(j, "num_hidden_layers", (double)layers);
  cJSON_DeleteItemFromObjectCaseSensitive(j, "num_nextn_predict_layers");
  cJSON_AddNumberToObject(j, "num_nextn_predict_layers", (double)mtp);
  cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
  if (fp8) {
    cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
    cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
    cJSON_AddStringToObject(q, "fmt", "e4m3");
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    cJSON *b = cJSON_AddArrayToObject(q, "weight_block_size");
    cJSON_AddItemToArray(b, cJSON_CreateNumber(128));
    cJSON_AddItemToArray(b, cJSON_CreateNumber(128));
  }
  char *s = cJSON_Print(j);
  cJSON_Delete(j);
  return s;
}

static int dir_has_checkpoint(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d))) {
    size_t l = strlen(e->d_name);
    found = (l > 12 && strcmp(e->d_name + l - 12, ".safetensors") == 0) ||
            strcmp(e->d_name, "model.safetensors.index.json") == 0;
  }
  closedir(d);
  return found;
}

int main(int argc, char **argv) {
  enum { O_CONFIG = 256, O_OUT, O_LAYERS, O_SEED, O_SHARD, O_SHARDS, O_THREADS, O_NOMTP, O_DTYPE, O_FORCE, O_JSON, O_VERSION, O_DRY };
  static const struct option lo[] = {
      {"config", required_argument, 0, O_CONFIG}, {"out", required_argument, 0, O_OUT},
      {"layers", required_argument, 0, O_LAYERS}, {"seed", required_argument, 0, O_SEED},
      {"shard-size", required_argument, 0, O_SHARD}, {"shards", required_argument, 0, O_SHARDS},
      {"threads", required_argument, 0, O_THREADS}, {"no-mtp", no_argument, 0, O_NOMTP},
      {"dtype", required_argument, 0, O_DTYPE}, {"force", no_argument, 0, O_FORCE},
      {"json", no_argument, 0, O_JSON}, {"quiet", no_argument, 0, 'q'}, {"dry-run", no_argument, 0, O_DRY},
      {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, O_VERSION}, {0, 0, 0, 0}};
  const char *cfg_path = NULL, *out = NULL, *dtype = NULL;
  int64_t layers = -1, nshards = 0;
  uint64_t seed = 0, shard_size = 5000000000ull;
  int threads = 0, no_mtp = 0, force = 0, json = 0, quiet = 0, dry = 0, c;
  char *end;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_CONFIG: cfg_path = optarg; break;
    case O_OUT: out = optarg; break;
    case O_LAYERS:
      layers = strtoll(optarg, &end, 10);
      if (*end || !*optarg || layers < 0 || layers > 100000) die_usage("--layers needs a number >= 0");
      break;
    case O_SEED:
      seed = strtoull(optarg, &end, 0);
      if (*end || !*optarg) die_usage("--seed needs a number");
      break;
    case O_SHARD:
      if (dsv3_parse_size(optarg, &shard_size) != 0 || shard_size == 0) die_usage("--shard-size needs a size such as 5G");
      break;
    case O_SHARDS:
      nshards = strtoll(optarg, &end, 10);
      if (*end || !*optarg || nshards <= 0 || nshards > 99999) die_usage("--shards needs a number from 1 to 99999");
      break;
    case O_THREADS:
      threads = (int)strtol(optarg, &end, 10);
      if (*end || !*optarg || threads <= 0 || threads > 4096) die_usage("--threads needs a number from 1 to 4096");
      break;
    case O_NOMTP: no_mtp = 1; break;
    case O_DTYPE:
      dtype = optarg;
      if (strcmp(dtype, "fp8") && strcmp(dtype, "bf16")) die_usage("--dtype is fp8 or bf16");
      break;
    case O_FORCE: force = 1; break;
    case O_DRY: dry = 1; break;
    case O_JSON: json = 1; break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("dsv3-gen %s\n", DSV3_VERSION); return 0;
    default: fprintf(stderr, "%s: see --help\n", PROG); return 2;
    }
  }
  if (!cfg_path || !out || optind != argc) die_usage("--config and --out are required, and nothing else");
  dsv3_config cfg;
  if (dsv3_config_load(cfg_path, &cfg) != 0) dsv3_die(PROG, 1, "%s", dsv3_error());
  if (layers >= 0) cfg.num_hidden_layers = layers;
  if (no_mtp) cfg.num_nextn_predict_layers = 0;
  int fp8 = dtype ? strcmp(dtype, "fp8") == 0 : (cfg.quant.present || cfg.from_demo_format);
  cfg.quant.present = fp8;
  cfg.quant.weight_block_size[0] = cfg.quant.weight_block_size[1] = DSV3_FP8_BLOCK;
  snprintf(cfg.torch_dtype, sizeof cfg.torch_dtype, "bfloat16");

  /* the tensor list, scales right after their weights */
  dsv3i_expects X = {0};
  dsv3i_expect_build(&cfg, &X);
  gt_t *ts = dsv3_xmalloc((2 * X.n + 1) * sizeof *ts);
  size_t nt = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < X.n; i++) {
    const dsv3i_expect *e = &X.e[i];
    for (int sc = 0; sc <= e->fp8; sc++) {
      gt_t *t = &ts[nt];
      memset(t, 0, sizeof *t);
      snprintf(t->name, sizeof t->name, sc ? "%s_scale_inv" : "%s", e->name);
      t->ndim = e->ndim;
      t->shape[0] = sc ? dsv3_ceil_div(e->shape[0], DSV3_FP8_BLOCK) : e->shape[0];
      t->shape[1] = sc ? dsv3_ceil_div(e->shape[1], DSV3_FP8_BLOCK) : e->shape[1];
      t->dt = sc ? DSV3_F32 : e->dtype;
      t->kind = sc ? V_SCALE
                   : e->kind == DSV3I_K_LINEAR && fp8 ? V_FP8
                   : e->kind == DSV3I_K_NORM          ? V_NORM
                   : e->kind == DSV3I_K_BIAS          ? V_BIAS
                                                      : V_BF_W;
      uint64_t ne = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
      t->bytes = ne * dsv3_dtype_size(t->dt);
      t->key = mix64(seed * 0x100000001b3ull + mix64(nt + 1)); /* by position in the list */
      total += t->bytes;
      nt++;
    }
  }
  dsv3i_expects_free(&X);
  if (dry) {
    uint64_t fp8b = 0;
    size_t nfp8 = 0;
    for (size_t i = 0; i < nt; i++)
      if (ts[i].kind == V_FP8) fp8b += ts[i].bytes, nfp8++;
    char a[32], b[32];
    printf("%s: %zu tensors (%zu FP8 weights, %s), %llu bytes (%s), %lld layers + %lld MTP\n", out, nt, nfp8,
           dsv3_human_bytes(fp8b, b, sizeof b), (unsigned long long)total, dsv3_human_bytes(total, a, sizeof a),
           (long long)cfg.num_hidden_layers, (long long)cfg.num_nextn_predict_layers);
    free(ts);
    return 0;
  }
  if (dsv3_is_dir(out) && dir_has_checkpoint(out) && !force)
    dsv3_die(PROG, 1, "%s: already holds a checkpoint (use --force to write over it)", out);
  if (dsv3_mkdirs(out) != 0) dsv3_die(PROG, 1, "%s", dsv3_error());
  int64_t free_b = dsv3_free_disk(out);
  if (free_b >= 0 && (uint64_t)free_b < total + (64u << 20)) {
    char a[32], b[32];
    dsv3_die(PROG, 1, "%s: needs %s, only %s free", out, dsv3_human_bytes(total, a, sizeof a),
             dsv3_human_bytes((uint64_t)free_b, b, sizeof b));
  }
  /* shards: fill up to --shard-size, or cut the byte stream into --shards equal parts */
  int ns = 0;
  uint64_t cur = 0, cum = 0;
  for (size_t i = 0; i < nt; i++) {
    if (nshards) {
      ts[i].shard = (int)((__uint128_t)cum * (uint64_t)nshards / (total ? total : 1));
    } else {
      int is_scale = strstr(ts[i].name, "_scale_inv") != NULL; /* keep a scale with its weight */
      if (ns == 0 || (cur + ts[i].bytes > shard_size && cur > 0 && !is_scale)) {
        ns++;
        cur = 0;
      }
      ts[i].shard = ns - 1;
      cur += ts[i].bytes;
    }
    cum += ts[i].bytes;
  }
  /* --shards: parts may be skipped when a tensor is larger than a part: number densely */
  if (nshards) {
    int prev = -1, k = -1;
    for (size_t i = 0; i < nt; i++) {
      if (ts[i].shard != prev) prev = ts[i].shard, k++;
      ts[i].shard = k;
    }
    ns = k + 1;
  }
  if (ns > 99999) dsv3_die(PROG, 1, "%s: %d shards is more than the 5-digit shard names allow", out, ns);

  build_tables();
  double t0 = dsv3_now();
  int nthreads = threads > 0 ? threads : dsv3_num_cpus();
  run_ctx rc = {ts, NULL, NULL, dsv3_xcalloc((size_t)nthreads, sizeof(uint8_t *)),
                dsv3_progress_new("generate", total, quiet || json)};
  size_t first = 0;
  char fname[64];
  for (int s = 0; s < ns; s++) {
    size_t last = first;
    while (last < nt && ts[last].shard == s) last++;
    dsv3_stw *w = dsv3_stw_new();
    dsv3_stw_set_meta(w, "format", "pt");
    size_t nch = 0;
    for (size_t i = first; i < last; i++) {
      ts[i].idx = dsv3_stw_add(w, ts[i].name, ts[i].dt, ts[i].ndim, ts[i].shape);
      if (ts[i].idx < 0) dsv3_die(PROG, 1, "%s", dsv3_error());
      nch += (size_t)(ts[i].bytes / CHUNK) + 1;
    }
    chunk_t *ch = dsv3_xmalloc(nch * sizeof *ch);
    nch = 0;
    for (size_t i = first; i < last; i++)
      for (uint64_t off = 0; off < ts[i].bytes; off += CHUNK)
        ch[nch++] = (chunk_t){i, off, (size_t)(ts[i].bytes - off < CHUNK ? ts[i].bytes - off : CHUNK)};
    snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, ns);
    char *path = dsv3_path_join(out, fname);
    rc.ch = ch;
    rc.w = w;
    if (dsv3_stw_layout(w) != 0 || dsv3_stw_open(w, path) != 0 || dsv3_parallel_for(nch, nthreads, run_chunk, &rc) != 0 ||
        dsv3_stw_commit(w) != 0) {
      dsv3_error_print(PROG);
      dsv3_stw_free(w);
      return 1;
    }
    dsv3_stw_free(w);
    free(path);
    free(ch);
    first = last;
  }
  dsv3_progress_done(rc.pg);
  for (int i = 0; i < nthreads; i++) free(rc.buf[i]);
  free(rc.buf);

  /* index (weight_map sorted by name, as transformers writes it) and config */
  gt_t **by = dsv3_xmalloc((nt + 1) * sizeof *by);
  for (size_t i = 0; i < nt; i++) by[i] = &ts[i];
  qsort(by, nt, sizeof *by, cmp_name);
  cJSON *ij = cJSON_CreateObject();
  cJSON *md = cJSON_AddObjectToObject(ij, "metadata");
  cJSON_AddNumberToObject(md, "total_size", (double)total);
  cJSON *wm = cJSON_AddObjectToObject(ij, "weight_map");
  for (size_t i = 0; i < nt; i++) {
    snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", by[i]->shard + 1, ns);
    cJSON_AddStringToObject(wm, by[i]->name, fname);
  }
  free(by);
  char *itxt = cJSON_Print(ij);
  cJSON_Delete(ij);
  char *ctxt = out_config(cfg_path, &cfg, cfg.num_hidden_layers, cfg.num_nextn_predict_layers, fp8);
  char *ipath = dsv3_path_join(out, "model.safetensors.index.json"), *cpath = dsv3_path_join(out, "config.json");
  if (dsv3_write_file_atomic(cpath, ctxt, strlen(ctxt)) != 0 || dsv3_write_file_atomic(ipath, itxt, strlen(itxt)) != 0) {
    dsv3_error_print(PROG);
    return 1;
  }
  double el = dsv3_now() - t0;
  if (json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "out", out);
    cJSON_AddNumberToObject(j, "shards", ns);
    cJSON_AddNumberToObject(j, "tensors", (double)nt);
    cJSON_AddNumberToObject(j, "bytes", (double)total);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddNumberToObject(j, "GB_per_s", el > 0 ? total / el / 1e9 : 0);
    char *js = cJSON_Print(j);
    puts(js);
    free(js);
    cJSON_Delete(j);
  } else if (!quiet) {
    char hb[32];
    fprintf(stderr, "%s: %zu tensors, %d shard%s, %s in %.2f s (%.2f GB/s)\n", out, nt, ns, ns == 1 ? "" : "s",
            dsv3_human_bytes(total, hb, sizeof hb), el, el > 0 ? total / el / 1e9 : 0);
  }
  free(itxt);
  free(ctxt);
  free(ipath);
  free(cpath);
  free(ts);
  return 0;
}
