/* config, names, checkpoint and fp8 on models/dsv3-tiny and crafted variants.
 * The expected runtime names come from the official convert.py's own output
 * (tests/data/ref_convert_mp1.tsv, made by scripts/ref/gpu-reference.sh). */
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "checkpoint.h"
#include "fp8.h"
#include "names.h"
#include "util.h"

static void count_problem(void *ctx, const char *line) {
  (void)line;
  ++*(int *)ctx;
}

static int sh(const char *fmt, const char *a, const char *b) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, fmt, a, b);
  return system(cmd);
}

int main(void) {
  const char *tiny = check_env("DSV3_TINY"), *data = check_env("DSV3_TESTDATA");
  /* ---- config ---- */
  dsv3_config c;
  char *cp = dsv3_path_join(tiny, "config.json");
  CHECK(dsv3_config_load(cp, &c) == 0, "tiny config: %s", dsv3_error());
  CHECK(c.hidden_size == 512 && c.num_hidden_layers == 4 && c.num_nextn_predict_layers == 1, "dims");
  CHECK(c.n_routed_experts == 8 && c.num_experts_per_tok == 2 && c.n_group == 4 && c.topk_group == 2, "moe");
  CHECK(c.q_lora_rank == 192 && c.kv_lora_rank == 128 && c.qk_rope_head_dim == 32, "mla");
  CHECK(!strcmp(c.rope_scaling.type, "yarn") && c.rope_scaling.factor == 4.0 &&
            c.rope_scaling.original_max_position_embeddings == 256, "rope");
  CHECK(c.quant.present && c.quant.weight_block_size[0] == 128 && !strcmp(c.quant.fmt, "e4m3"), "quant");
  CHECK(!dsv3_config_layer_is_moe(&c, 0) && dsv3_config_layer_is_moe(&c, 1) && dsv3_config_layer_is_moe(&c, 4), "moe layers");
  free(cp);
  const char *demo = "{\"vocab_size\":129280,\"dim\":7168,\"inter_dim\":18432,\"moe_inter_dim\":2048,\"n_layers\":61,"
                     "\"n_dense_layers\":3,\"n_heads\":128,\"n_routed_experts\":256,\"n_shared_experts\":1,"
                     "\"n_activated_experts\":8,\"n_expert_groups\":8,\"n_limited_groups\":4,\"route_scale\":2.5,"
                     "\"score_func\":\"sigmoid\",\"q_lora_rank\":1536,\"kv_lora_rank\":512,\"qk_nope_head_dim\":128,"
                     "\"qk_rope_head_dim\":64,\"v_head_dim\":128,\"dtype\":\"fp8\"}";
  CHECK(dsv3_config_parse(demo, strlen(demo), "config_671B.json", &c) == 0, "demo config: %s", dsv3_error());
  CHECK(c.from_demo_format && c.hidden_size == 7168 && c.first_k_dense_replace == 3 && c.quant.present &&
            c.rope_scaling.factor == 40 && c.rope_scaling.original_max_position_embeddings == 4096, "demo values");
  const char *bad1 = "{\"hidden_size\": -4}", *bad2 = "{\"n_routed_experts\": 10, \"n_group\": 4}", *bad3 = "[1]",
             *bad4 = "{\"hidden_size\": \"x\"}";
  CHECK(dsv3_config_parse(bad1, strlen(bad1), "c.json", &c) == -1 && strstr(dsv3_error(), "hidden_size"), "neg dim");
  CHECK(dsv3_config_parse(bad2, strlen(bad2), "c.json", &c) == -1 && strstr(dsv3_error(), "n_group"), "groups");
  CHECK(dsv3_config_parse(bad3, strlen(bad3), "c.json", &c) == -1, "array");
  CHECK(dsv3_config_parse(bad4, strlen(bad4), "c.json", &c) == -1 && strstr(dsv3_error(), "c.json"), "string dim");

  /* ---- checkpoint ---- */
  dsv3_ckpt *ck;
  CHECK(dsv3_ckpt_open(tiny, &ck) == 0, "open tiny: %s", dsv3_error());
  if (!ck) return check_done("checkpoint");
  CHECK(dsv3_ckpt_layout(ck) == DSV3_LAYOUT_HF && dsv3_ckpt_nfiles(ck) == 3 && dsv3_ckpt_count(ck) == 309, "tiny layout");
  CHECK(dsv3_ckpt_total_bytes(ck) == (uint64_t)dsv3_ckpt_index_total_size(ck), "total_size");
  int np = 0;
  CHECK(dsv3_ckpt_check_index(ck, count_problem, &np) == 0 && np == 0, "index clean");
  const dsv3_tensor *w = dsv3_ckpt_find(ck, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight", -1, NULL);
  const dsv3_tensor *s = dsv3_ckpt_find(ck, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv", -1, NULL);
  CHECK(w && s && w->dtype == DSV3_F8_E4M3 && s->shape[0] == dsv3_ceil_div(w->shape[0], 128) &&
            s->shape[1] == dsv3_ceil_div(w->shape[1], 128), "find weight + scale");

  /* ---- names: HF -> runtime equals what convert.py wrote ---- */
  char path[4096];
  snprintf(path, sizeof path, "%s/ref_convert_mp1.tsv", data);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "open %s", path);
  char line[4096], fn[256], nm[1024];
  size_t ref_n = 0;
  char **ref = NULL;
  while (f && fgets(line, sizeof line, f)) {
    if (line[0] == '#' || sscanf(line, "%255s %1023s", fn, nm) != 2) continue;
    ref = realloc(ref, (ref_n + 1) * sizeof *ref);
    ref[ref_n++] = strdup(nm);
  }
  if (f) fclose(f);
  size_t mapped = 0;
  for (size_t i = 0; i < dsv3_ckpt_count(ck); i++) {
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, NULL);
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
    if (ni.layer >= 4) continue; /* MTP: convert.py drops it */
    char rt[1024], back[1024];
    dsv3_split sp;
    CHECK(dsv3_name_hf_to_rt(t->name, rt, sizeof rt, &sp) == 0, "%s: %s", t->name, dsv3_error());
    int found = 0;
    for (size_t k = 0; k < ref_n; k++) found |= !strcmp(ref[k], rt);
    CHECK(found, "%s -> %s not in convert.py's output", t->name, rt);
    mapped++;
    CHECK(dsv3_name_rt_to_hf(rt, back, sizeof back) == 0 && !strcmp(back, t->name), "inverse %s -> %s -> %s", t->name, rt, back);
  }
  CHECK(mapped == ref_n && ref_n == 233, "mapped %zu names, convert.py wrote %zu", mapped, ref_n);
  for (size_t k = 0; k < ref_n; k++) free(ref[k]);
  free(ref);
  char rt[256];
  dsv3_split sp;
  CHECK(dsv3_name_hf_to_rt("model.layers.0.self_attn.o_proj.weight_scale_inv", rt, sizeof rt, &sp) == 0 &&
            !strcmp(rt, "layers.0.attn.wo.scale") && sp == DSV3_SPLIT_DIM1, "wo scale split dim 1");
  CHECK(dsv3_name_hf_to_rt("model.layers.3.mlp.experts.7.up_proj.weight", rt, sizeof rt, &sp) == 0 && sp == DSV3_SPLIT_EXPERT, "expert");
  CHECK(dsv3_name_hf_to_rt("model.layers.3.mlp.shared_experts.up_proj.weight", rt, sizeof rt, &sp) == 0 && sp == DSV3_SPLIT_DIM0, "shared");
  CHECK(dsv3_name_hf_to_rt("model.layers.3.foo.weight", rt, sizeof rt, &sp) == -1 && strstr(dsv3_error(), "foo"), "unknown key");
  CHECK(dsv3_name_is_fp8_kind("model.layers.1.mlp.experts.0.gate_proj.weight") &&
            !dsv3_name_is_fp8_kind("model.layers.1.mlp.gate.weight") && !dsv3_name_is_fp8_kind("lm_head.weight") &&
            !dsv3_name_is_fp8_kind("model.layers.4.eh_proj.weight"), "fp8 kinds");

  /* ---- fp8: table dequant equals the scalar formula, partial blocks included ---- */
  {
    int64_t M = w->shape[0], N = w->shape[1];
    uint16_t *out = malloc((size_t)(M * N) * 2);
    dsv3_fp8_dequant_rows(w->data, s->data, M, N, 0, M, DSV3_BF16, out);
    int bad = 0;
    for (int64_t r = 0; r < M; r++)
      for (int64_t cc = 0; cc < N; cc++) {
        float x = dsv3_e4m3_to_f32(((const uint8_t *)w->data)[r * N + cc]) * ((const float *)s->data)[(r / 128) * s->shape[1] + cc / 128];
        bad += out[r * N + cc] != dsv3_f32_to_bf16(x);
      }
    CHECK(bad == 0 && (N % 128 || M % 128), "dequant: %d mismatches (%lldx%lld)", bad, (long long)M, (long long)N);
    /* quantise -> dequantise error is within half an e4m3 step of the block scale */
    float *xf = malloc((size_t)(M * N) * 4);
    uint8_t *q = malloc((size_t)(M * N));
    float *sc = malloc((size_t)(dsv3_ceil_div(M, 128) * dsv3_ceil_div(N, 128)) * 4);
    dsv3_fp8_dequant_rows(w->data, s->data, M, N, 0, M, DSV3_F32, xf);
    dsv3_fp8_quant_rows(xf, DSV3_F32, M, N, 0, M, 0, q, sc);
    double maxrel = 0;
    for (int64_t i = 0; i < M * N; i++) {
      float back = dsv3_e4m3_to_f32(q[i]) * sc[(i / N / 128) * dsv3_ceil_div(N, 128) + (i % N) / 128];
      double d = fabs(back - xf[i]) / (fabs(xf[i]) + 1e-3);
      if (d > maxrel) maxrel = d;
    }
    CHECK(maxrel < 0.07, "quant round trip rel error %g", maxrel);
    free(xf);
    free(q);
    free(sc);
    free(out);
  }
  dsv3_ckpt_close(ck);

  /* ---- inconsistent copies ---- */
  char tmp[] = "/tmp/dsv3-ck-XXXXXX";
  if (!mkdtemp(tmp)) return 77;
  sh("cp %s/* %s/", tiny, tmp);
  sh("sed -i 's/\"total_size\": 31431328/\"total_size\": 31431329/' %s/model.safetensors.index.json%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == 0, "open copy");
  np = 0;
  dsv3_ckpt_check_index(ck, count_problem, &np);
  CHECK(np == 1, "total_size mismatch reported %d problems", np);
  dsv3_ckpt_close(ck);
  sh("cp %s/model.safetensors.index.json %s/", tiny, tmp);
  sh("sed -i 's/\"model.norm.weight\": \"model-0000[0-9]-of-00003.safetensors\"/\"model.norm.weight\": \"model-00003-of-00003.safetensors\"/' %s/model.safetensors.index.json%s", tmp, "");
  sh("sed -i 's/\"lm_head.weight\": \"model-00002-of-00003.safetensors\"/\"lm_head.weight\": \"model-00001-of-00003.safetensors\"/' %s/model.safetensors.index.json%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == 0, "open copy 2");
  np = 0;
  dsv3_ckpt_check_index(ck, count_problem, &np);
  CHECK(np >= 1, "wrong shard in weight_map not reported");
  dsv3_ckpt_close(ck);
  sh("sed -i 's/model-00003-of-00003.safetensors/model-00009-of-00003.safetensors/' %s/model.safetensors.index.json%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == -1 && strstr(dsv3_error(), "model-00009-of-00003.safetensors") &&
            strstr(dsv3_error(), "missing"), "missing shard: %s", dsv3_error());
  sh("cp %s/model.safetensors.index.json %s/", tiny, tmp);
  sh("sed -i 's/\"weight_map\"/\"weight_mop\"/' %s/model.safetensors.index.json%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == -1 && strstr(dsv3_error(), "weight_map"), "no weight_map: %s", dsv3_error());
  sh("printf '{\"weight_map\": {\"x\": \"../etc/passwd\"}}' > %s/model.safetensors.index.json%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == -1 && strstr(dsv3_error(), "plain file name"), "path traversal: %s", dsv3_error());
  /* runtime layout: model{r}-mp{n}, a missing rank is an error */
  sh("rm -f %s/*; true%s", tmp, "");
  for (int r = 0; r < 2; r++) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model%d-mp2.safetensors", tmp, r);
    float v[4] = {1, 2, 3, (float)r};
    dsv3_tensor_src t = {"embed.weight", DSV3_F32, 2, {2, 2}, v};
    CHECK(dsv3_st_write_file(p, &t, 1, NULL, 0) == 0, "write rank");
  }
  CHECK(dsv3_ckpt_open(tmp, &ck) == 0 && dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME && dsv3_ckpt_mp(ck) == 2, "runtime layout");
  if (ck) {
    const dsv3_tensor *e1 = dsv3_ckpt_find(ck, "embed.weight", 1, NULL);
    CHECK(e1 && ((const float *)e1->data)[3] == 1.0f, "find on rank 1");
    dsv3_ckpt_close(ck);
  }
  sh("rm %s/model1-mp2.safetensors%s", tmp, "");
  CHECK(dsv3_ckpt_open(tmp, &ck) == -1 && strstr(dsv3_error(), "model1-mp2.safetensors is missing"), "missing rank: %s", dsv3_error());
  sh("rm -rf %s%s", tmp, "");
  return check_done("checkpoint");
}
