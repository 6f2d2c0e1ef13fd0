/* summary.c - `dsv3-inspect CKPT`: what is in a checkpoint, in one screen. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "inspect.h"

/* A tensor "kind": the HF name with the layer prefix dropped and numbers replaced by '*',
 * e.g. "mlp.experts.*.gate_proj.weight". */
static void kind_of(const char *hf, char *out, size_t cap) {
  const char *s = hf;
  if (strncmp(s, "model.layers.", 13) == 0) {
    s += 13;
    while (*s >= '0' && *s <= '9') s++;
    if (*s == '.') s++;
  } else if (strncmp(s, "layers.", 7) == 0) {
    s += 7;
    while (*s >= '0' && *s <= '9') s++;
    if (*s == '.') s++;
  }
  size_t k = 0;
  while (*s && k + 2 < cap) {
    if (*s >= '0' && *s <= '9' && (s == hf || s[-1] == '.')) {
      const char *q = s;
      while (*q >= '0' && *q <= '9') q++;
      if (*q == '.' || *q == 0) {
        out[k++] = '*';
        s = q;
        continue;
      }
    }
    out[k++] = *s++;
  }
  out[k] = 0;
  size_t l = strlen(out);
  if (l > 7 && strcmp(out + l - 7, ".weight") == 0) out[l - 7] = 0;
}

typedef struct {
  char name[96];
  size_t count;
} kind_t;

static void kind_add(kind_t *k, int *nk, int cap, const char *name) {
  for (int i = 0; i < *nk; i++)
    if (strcmp(k[i].name, name) == 0) {
      k[i].count++;
      return;
    }
  if (*nk == cap) return;
  snprintf(k[*nk].name, sizeof k[*nk].name, "%s", name);
  k[(*nk)++].count = 1;
}

typedef struct {
  int n;
  char *line[32];
} warns_t;

static void warn(warns_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(warns_t *w, const char *fmt, ...) {
  if (w->n == 32) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  w->line[w->n++] = dsv3_xstrdup(buf);
}

int dsv3i_summary(dsv3_ckpt *ck, const dsv3i_opts *o) {
  const dsv3_config *c = dsv3_ckpt_config(ck);
  size_t n = dsv3_ckpt_count(ck);
  uint64_t bytes_dt[DSV3_DT_COUNT] = {0}, params_dt[DSV3_DT_COUNT] = {0}, params_model = 0;
  size_t count_dt[DSV3_DT_COUNT] = {0}, n_mtp = 0, n_fp8 = 0, n_scales = 0, n_noscale = 0, n_orphan = 0,
         n_fp8_oddkind = 0, n_beyond = 0;
  uint64_t bytes_mtp = 0;
  kind_t kinds[64];
  int nk = 0;
  char first_noscale[256] = "", first_orphan[256] = "", first_odd[256] = "";
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    int rank = dsv3_ckpt_file_rank(ck, f);
    bytes_dt[t->dtype] += t->nbytes;
    params_dt[t->dtype] += t->numel;
    count_dt[t->dtype]++;
    int scale = dsv3i_is_scale_name(t->name);
    if (!scale) params_model += t->numel;
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
    if (dsv3i_is_mtp(c, t->name)) {
      n_mtp++;
      bytes_mtp += t->nbytes;
    }
    if (c && ni.layer >= dsv3_config_total_layers(c)) n_beyond++;
    char hf[1024];
    dsv3i_hf_name(ck, t->name, hf, sizeof hf);
    if (scale) {
      n_scales++;
      char w[1024];
      size_t l = strlen(t->name);
      if (l > 17 && strcmp(t->name + l - 17, ".weight_scale_inv") == 0) snprintf(w, sizeof w, "%.*s", (int)(l - 10), t->name);
      else snprintf(w, sizeof w, "%.*s.weight", (int)(l - 6), t->name);
      const dsv3_tensor *wt = dsv3_ckpt_find(ck, w, rank, NULL);
      if (!wt || wt->dtype != DSV3_F8_E4M3) {
        if (!n_orphan++) snprintf(first_orphan, sizeof first_orphan, "%s", t->name);
      }
    }
    if (t->dtype == DSV3_F8_E4M3) {
      n_fp8++;
      char k[256];
      kind_of(hf, k, sizeof k);
      kind_add(kinds, &nk, 64, k);
      if (!dsv3i_scale_fits(t, dsv3i_scale_of(ck, t->name, rank, NULL)))
        if (!n_noscale++) snprintf(first_noscale, sizeof first_noscale, "%s", t->name);
      if (!dsv3_name_is_fp8_kind(hf))
        if (!n_fp8_oddkind++) snprintf(first_odd, sizeof first_odd, "%s", t->name);
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
  warns_t W = {0};
  if (idx_total >= 0 && (uint64_t)idx_total != total)
    warn(&W, "index total_size %lld differs from the tensor bytes %llu", (long long)idx_total, (unsigned long long)total);
  if (problems) warn(&W, "the index has %d problem%s (run --check)", problems, problems == 1 ? "" : "s");
  if (n_noscale) warn(&W, "%zu FP8 weight%s without a scale of shape [ceil(M/128), ceil(N/128)] (first: %s)", n_noscale, n_noscale == 1 ? "" : "s", first_noscale);
  if (n_orphan) warn(&W, "%zu scale%s without an FP8 weight (first: %s)", n_orphan, n_orphan == 1 ? "" : "s", first_orphan);
  if (n_fp8_oddkind) warn(&W, "%zu FP8 tensor%s of a kind the official release keeps in BF16 (first: %s)", n_fp8_oddkind, n_fp8_oddkind == 1 ? "" : "s", first_odd);
  if (c && c->quant.present && !n_fp8) warn(&W, "config.json has a quantization_config but no tensor is FP8");
  if (c && !c->quant.present && n_fp8) warn(&W, "FP8 tensors but config.json has no quantization_config");
  if (c && c->quant.present && (c->quant.weight_block_size[0] != DSV3_FP8_BLOCK || c->quant.weight_block_size[1] != DSV3_FP8_BLOCK))
    warn(&W, "weight_block_size [%lld, %lld]: only 128x128 blocks are supported", (long long)c->quant.weight_block_size[0], (long long)c->quant.weight_block_size[1]);
  if (c && n_mtp_layers > 0 && n_mtp == 0)
    warn(&W, "config.json has %lld MTP layer%s but the checkpoint has none (convert.py drops them)", (long long)n_mtp_layers, n_mtp_layers == 1 ? "" : "s");
  if (n_beyond) warn(&W, "%zu tensor%s in layers beyond num_hidden_layers + num_nextn_predict_layers", n_beyond, n_beyond == 1 ? "" : "s");
  if (!c) warn(&W, "no config.json: layers and expected tensors unknown");

  if (o->json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", dsv3_ckpt_path(ck));
    cJSON_AddStringToObject(j, "layout", dsv3_ckpt_layout_name(dsv3_ckpt_layout(ck)));
    cJSON_AddNumberToObject(j, "model_parallel", dsv3_ckpt_mp(ck));
    cJSON_AddNumberToObject(j, "files", (double)dsv3_ckpt_nfiles(ck));
    cJSON_AddNumberToObject(j, "tensors", (double)n);
    cJSON_AddNumberToObject(j, "tensors_main", (double)(n - n_mtp));
    cJSON_AddNumberToObject(j, "tensors_mtp", (double)n_mtp);
    cJSON_AddNumberToObject(j, "tensor_bytes", (double)total);
    cJSON_AddNumberToObject(j, "tensor_bytes_mtp", (double)bytes_mtp);
    cJSON_AddNumberToObject(j, "parameters", (double)params_model);
    if (idx_total >= 0) {
      cJSON_AddNumberToObject(j, "index_total_size", (double)idx_total);
      cJSON_AddBoolToObject(j, "index_total_size_matches", (uint64_t)idx_total == total);
    }
    cJSON_AddNumberToObject(j, "index_problems", problems);
    if (c) {
      cJSON *cj = cJSON_AddObjectToObject(j, "config");
      cJSON_AddStringToObject(cj, "model_type", c->model_type);
      cJSON_AddStringToObject(cj, "torch_dtype", c->torch_dtype);
      cJSON_AddNumberToObject(cj, "vocab_size", (double)c->vocab_size);
      cJSON_AddNumberToObject(cj, "hidden_size", (double)c->hidden_size);
      cJSON_AddNumberToObject(cj, "intermediate_size", (double)c->intermediate_size);
      cJSON_AddNumberToObject(cj, "moe_intermediate_size", (double)c->moe_intermediate_size);
      cJSON_AddNumberToObject(cj, "num_attention_heads", (double)c->num_attention_heads);
      cJSON_AddNumberToObject(cj, "q_lora_rank", (double)c->q_lora_rank);
      cJSON_AddNumberToObject(cj, "kv_lora_rank", (double)c->kv_lora_rank);
      cJSON_AddNumberToObject(cj, "qk_rope_head_dim", (double)c->qk_rope_head_dim);
      cJSON_AddNumberToObject(cj, "qk_nope_head_dim", (double)c->qk_nope_head_dim);
      cJSON_AddNumberToObject(cj, "v_head_dim", (double)c->v_head_dim);
      cJSON_AddNumberToObject(cj, "num_hidden_layers", (double)c->num_hidden_layers);
      cJSON_AddNumberToObject(cj, "layers_dense", (double)n_dense);
      cJSON_AddNumberToObject(cj, "layers_moe", (double)n_moe);
      cJSON_AddNumberToObject(cj, "layers_mtp", (double)n_mtp_layers);
      cJSON_AddNumberToObject(cj, "n_routed_experts", (double)c->n_routed_experts);
      cJSON_AddNumberToObject(cj, "n_shared_experts", (double)c->n_shared_experts);
      cJSON_AddNumberToObject(cj, "num_experts_per_tok", (double)c->num_experts_per_tok);
      cJSON_AddNumberToObject(cj, "n_group", (double)c->n_group);
      cJSON_AddNumberToObject(cj, "topk_group", (double)c->topk_group);
      cJSON_AddStringToObject(cj, "topk_method", c->topk_method);
      cJSON_AddStringToObject(cj, "scoring_func", c->scoring_func);
      cJSON_AddNumberToObject(cj, "routed_scaling_factor", c->routed_scaling_factor);
      cJSON_AddNumberToObject(cj, "rope_theta", c->rope_theta);
      cJSON_AddNumberToObject(cj, "max_position_embeddings", (double)c->max_position_embeddings);
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
    if (c && c->quant.present) {
      cJSON_AddStringToObject(q, "method", c->quant.quant_method);
      cJSON_AddStringToObject(q, "fmt", c->quant.fmt);
      cJSON_AddStringToObject(q, "activation_scheme", c->quant.activation_scheme);
      if (c->quant.scale_fmt[0]) cJSON_AddStringToObject(q, "scale_fmt", c->quant.scale_fmt);
      cJSON *bs = cJSON_AddArrayToObject(q, "block_size");
      cJSON_AddItemToArray(bs, cJSON_CreateNumber((double)c->quant.weight_block_size[0]));
      cJSON_AddItemToArray(bs, cJSON_CreateNumber((double)c->quant.weight_block_size[1]));
    }
    cJSON_AddNumberToObject(q, "fp8_weights", (double)n_fp8);
    cJSON_AddNumberToObject(q, "scales", (double)n_scales);
    cJSON_AddNumberToObject(q, "fp8_without_scale", (double)n_noscale);
    cJSON *kj = cJSON_AddObjectToObject(q, "fp8_kinds");
    for (int i = 0; i < nk; i++) cJSON_AddNumberToObject(kj, kinds[i].name, (double)kinds[i].count);
    cJSON *wj = cJSON_AddArrayToObject(j, "warnings");
    for (int i = 0; i < W.n; i++) cJSON_AddItemToArray(wj, cJSON_CreateString(W.line[i]));
    dsv3i_print_json(j);
  } else {
    char hb[32];
    printf("checkpoint   %s\n", dsv3_ckpt_path(ck));
    printf("layout       %s", dsv3_ckpt_layout_name(dsv3_ckpt_layout(ck)));
    if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME) printf(" (model parallel %d)", dsv3_ckpt_mp(ck));
    printf(", %zu file%s\n", dsv3_ckpt_nfiles(ck), dsv3_ckpt_nfiles(ck) == 1 ? "" : "s");
    if (c) {
      printf("model        %s (%s): hidden %lld, vocab %lld, intermediate %lld, moe_intermediate %lld\n",
             c->model_type, c->torch_dtype, (long long)c->hidden_size, (long long)c->vocab_size,
             (long long)c->intermediate_size, (long long)c->moe_intermediate_size);
      printf("attention    MLA, %lld heads, q_lora %lld, kv_lora %lld, nope %lld + rope %lld, v %lld\n",
             (long long)c->num_attention_heads, (long long)c->q_lora_rank, (long long)c->kv_lora_rank,
             (long long)c->qk_nope_head_dim, (long long)c->qk_rope_head_dim, (long long)c->v_head_dim);
      printf("layers       %lld main (%lld dense, %lld MoE) + %lld MTP\n", (long long)c->num_hidden_layers,
             (long long)n_dense, (long long)n_moe, (long long)n_mtp_layers);
      printf("experts      %lld routed, %lld per token (%s, %s, %lld groups, top %lld), %lld shared, scale %g\n",
             (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, c->scoring_func, c->topk_method,
             (long long)c->n_group, (long long)c->topk_group, (long long)c->n_shared_experts,
             c->routed_scaling_factor);
      printf("rope         theta %g", c->rope_theta);
      if (c->rope_scaling.type[0])
        printf(", %s factor %g (original %lld), max positions %lld", c->rope_scaling.type, c->rope_scaling.factor,
               (long long)c->rope_scaling.original_max_position_embeddings, (long long)c->max_position_embeddings);
      printf("\n");
    } else {
      printf("model        (no config.json)\n");
    }
    printf("tensors      %zu", n);
    if (c) printf(" (%zu in the main model, %zu in MTP layers)", n - n_mtp, n_mtp);
    printf("\n");
    printf("parameters   %llu (scales excluded)\n", (unsigned long long)params_model);
    printf("bytes        %llu (%s)", (unsigned long long)total, dsv3_human_bytes(total, hb, sizeof hb));
    if (idx_total >= 0)
      printf(", index total_size %lld: %s", (long long)idx_total, (uint64_t)idx_total == total ? "matches" : "MISMATCH");
    printf("\n");
    int first = 1;
    for (int d = 1; d < DSV3_DT_COUNT; d++) {
      if (!count_dt[d]) continue;
      printf("%s%-8s %6zu tensors %16llu params %12s\n", first ? "by dtype     " : "             ",
             dsv3_dtype_name((dsv3_dtype)d), count_dt[d], (unsigned long long)params_dt[d],
             dsv3_human_bytes(bytes_dt[d], hb, sizeof hb));
      first = 0;
    }
    if (n_fp8 || (c && c->quant.present)) {
      printf("quantization %s %s, %lldx%lld blocks, %s scales: %zu FP8 weights, %zu scales\n",
             c && c->quant.present ? c->quant.quant_method : "fp8", c && c->quant.fmt[0] ? c->quant.fmt : "e4m3",
             c && c->quant.present ? (long long)c->quant.weight_block_size[0] : 128LL,
             c && c->quant.present ? (long long)c->quant.weight_block_size[1] : 128LL,
             c && c->quant.scale_fmt[0] ? c->quant.scale_fmt : "float32", n_fp8, n_scales);
      for (int i = 0; i < nk; i++) printf("  FP8 kind   %-40s %zu\n", kinds[i].name, kinds[i].count);
    } else {
      printf("quantization none\n");
    }
    for (int i = 0; i < W.n; i++) printf("warning      %s\n", W.line[i]);
  }
  for (int i = 0; i < W.n; i++) free(W.line[i]);
  return 0;
}
