/* names.c against tests/data/tiny_names_rt.tsv: every name of models/dsv3-tiny mapped HF ->
 * runtime as the official convert.py's loop maps it (the TSV is that loop re-run in Python,
 * see tests/format_ckpt.cmake), its split rule, the inverse mapping, parsing of both schemes
 * and the FP8 kinds against the scales present in the model. */
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "names.h"
#include "util.h"

static const char *split_name(dsv3_split s) {
  switch (s) {
  case DSV3_SPLIT_NONE: return "none";
  case DSV3_SPLIT_DIM0: return "dim0";
  case DSV3_SPLIT_DIM1: return "dim1";
  case DSV3_SPLIT_EXPERT: return "expert";
  }
  return "?";
}

int main(void) {
  const char *tiny = check_env("DSV3_TINY"), *data = check_env("DSV3_TESTDATA");
  char path[4096];
  snprintf(path, sizeof path, "%s/tiny_names_rt.tsv", data);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    return 1;
  }
  dsv3_ckpt *ck = NULL;
  CHECK(dsv3_ckpt_open(tiny, &ck) == 0, "open tiny: %s", dsv3_error());
  if (!ck) return check_done("ckpt_names");

  char line[4096];
  size_t rows = 0, official = 0, mtp = 0;
  while (fgets(line, sizeof line, f)) {
    char hf[1024], rt[1024], sp[32], kind[32];
    if (sscanf(line, "%1023[^\t]\t%1023[^\t]\t%31[^\t]\t%31s", hf, rt, sp, kind) != 4) {
      CHECK(0, "bad TSV line: %s", line);
      continue;
    }
    rows++;
    official += !strcmp(kind, "official");
    mtp += !strcmp(kind, "mtp");
    CHECK(dsv3_ckpt_find(ck, hf, -1, NULL) != NULL, "%s: in the TSV but not in the model", hf);
    /* HF -> runtime, and how convert.py splits it */
    char out[1024], back[1024];
    dsv3_split s = (dsv3_split)99;
    int rc = dsv3_name_hf_to_rt(hf, out, sizeof out, &s);
    CHECK(rc == 0 && !strcmp(out, rt), "%s -> %s, convert.py: %s (%s)", hf, rc ? dsv3_error() : out, rt, kind);
    CHECK(rc == 0 && !strcmp(split_name(s), sp), "%s: split %s, convert.py: %s", hf, split_name(s), sp);
    CHECK(!strcmp(split_name(dsv3_name_rt_split(rt)), sp), "%s: rt_split %s, convert.py: %s", rt,
          split_name(dsv3_name_rt_split(rt)), sp);
    /* runtime -> HF */
    rc = dsv3_name_rt_to_hf(rt, back, sizeof back);
    CHECK(rc == 0 && !strcmp(back, hf), "inverse %s -> %s, want %s", rt, rc ? dsv3_error() : back, hf);
    /* parsing: the same facts from both names */
    dsv3_name_info a, b;
    dsv3_name_parse(hf, &a);
    dsv3_name_parse(rt, &b);
    int64_t want_layer = -1, want_expert = -1;
    const char *p = strstr(hf, "layers.");
    if (p) want_layer = strtoll(p + 7, NULL, 10);
    p = strstr(hf, ".experts.");
    if (p) want_expert = strtoll(p + 9, NULL, 10);
    int want_scale = strstr(hf, "weight_scale_inv") != NULL;
    CHECK(a.layer == want_layer && b.layer == want_layer, "%s: layer %lld/%lld want %lld", hf, (long long)a.layer,
          (long long)b.layer, (long long)want_layer);
    CHECK(a.expert == want_expert && b.expert == want_expert, "%s: expert %lld/%lld want %lld", hf,
          (long long)a.expert, (long long)b.expert, (long long)want_expert);
    CHECK(a.is_shared_expert == (strstr(hf, "shared_experts") != NULL) && b.is_shared_expert == a.is_shared_expert,
          "%s: shared expert", hf);
    CHECK(a.is_scale == want_scale && b.is_scale == want_scale, "%s: is_scale %d/%d", hf, a.is_scale, b.is_scale);
    CHECK(a.leaf && b.leaf && strchr(a.leaf, '.') && !strchr(strchr(a.leaf, '.') + 1, '.') &&
              strlen(a.leaf) <= strlen(hf) && !strcmp(hf + strlen(hf) - strlen(a.leaf), a.leaf),
          "%s: leaf %s", hf, a.leaf ? a.leaf : "(null)");
    /* FP8 kind <=> the model has a scale for this weight (the tiny model follows the release) */
    if (!want_scale) {
      char sc[1100];
      int has_scale = dsv3_name_scale_of(hf, sc, sizeof sc) == 0 && dsv3_ckpt_find(ck, sc, -1, NULL) != NULL;
      CHECK(dsv3_name_is_fp8_kind(hf) == has_scale, "%s: is_fp8_kind %d, scale in the model %d", hf,
            dsv3_name_is_fp8_kind(hf), has_scale);
      CHECK(a.is_fp8_weight_kind == has_scale && b.is_fp8_weight_kind == has_scale, "%s: parse fp8 kind %d/%d", hf,
            a.is_fp8_weight_kind, b.is_fp8_weight_kind);
    }
  }
  fclose(f);
  /* the TSV covers the whole model: 233 names convert.py writes + 76 of the MTP layer */
  CHECK(rows == dsv3_ckpt_count(ck) && rows == 309 && official == 233 && mtp == 76, "rows %zu official %zu mtp %zu",
        rows, official, mtp);
  dsv3_ckpt_close(ck);

  /* convert.py's str.replace semantics and rules on names the tiny model lacks */
  char out[256];
  dsv3_split s;
  CHECK(dsv3_name_hf_to_rt("model.layers.7.self_attn.q_proj.weight", out, sizeof out, &s) == 0 &&
            !strcmp(out, "layers.7.attn.wq.weight") && s == DSV3_SPLIT_DIM0, "q_proj (no q LoRA): %s", out);
  CHECK(dsv3_name_hf_to_rt("model.layers.7.self_attn.q_proj.weight_scale_inv", out, sizeof out, &s) == 0 &&
            !strcmp(out, "layers.7.attn.wq.scale") && s == DSV3_SPLIT_DIM0, "q_proj scale");
  CHECK(dsv3_name_rt_to_hf("layers.7.attn.wq.weight", out, sizeof out) == 0 &&
            !strcmp(out, "model.layers.7.self_attn.q_proj.weight"), "wq inverse: %s", out);
  CHECK(dsv3_name_hf_to_rt("model.layers.60.mlp.experts.255.down_proj.weight_scale_inv", out, sizeof out, &s) == 0 &&
            !strcmp(out, "layers.60.ffn.experts.255.w2.scale") && s == DSV3_SPLIT_EXPERT, "expert scale: %s", out);
  CHECK(dsv3_name_hf_to_rt("model.layers.3.foo.weight", out, sizeof out, &s) == -1 && strstr(dsv3_error(), "foo"),
        "unknown key (convert.py asserts): %s", dsv3_error());
  CHECK(dsv3_name_hf_to_rt("weight", out, sizeof out, &s) == -1, "no component");
  CHECK(dsv3_name_hf_to_rt("model..weight", out, sizeof out, &s) == -1, "empty component");
  CHECK(dsv3_name_hf_to_rt("model.layers.0.self_attn.o_proj.weight", out, 8, &s) == -1, "output too small");
  CHECK(dsv3_name_rt_to_hf("nodots", out, sizeof out) == -1, "inverse of a non-name");
  CHECK(dsv3_name_rt_to_hf("layers.0.attn.bogus.weight", out, sizeof out) == -1 && strstr(dsv3_error(), "bogus"),
        "inverse unknown key");
  /* the HF name parser on MTP and top-level names */
  dsv3_name_info ni;
  dsv3_name_parse("lm_head.weight", &ni);
  CHECK(ni.layer == -1 && ni.expert == -1 && !ni.is_scale && !ni.is_fp8_weight_kind && !strcmp(ni.leaf, "lm_head.weight"),
        "lm_head");
  dsv3_name_parse("model.layers.61.mlp.experts.12.gate_proj.weight_scale_inv", &ni);
  CHECK(ni.layer == 61 && ni.expert == 12 && ni.is_scale && !ni.is_shared_expert, "671B MTP expert scale");
  dsv3_name_parse("model.layers.x.mlp.experts.y.gate_proj.weight", &ni);
  CHECK(ni.layer == -1 && ni.expert == -1, "non-numeric layer/expert");
  CHECK(!dsv3_name_is_fp8_kind("model.layers.1.mlp.gate.weight") && !dsv3_name_is_fp8_kind("model.layers.4.eh_proj.weight") &&
            !dsv3_name_is_fp8_kind("model.layers.4.shared_head.head.weight") &&
            !dsv3_name_is_fp8_kind("model.layers.1.self_attn.kv_b_proj.weight_scale_inv") &&
            dsv3_name_is_fp8_kind("model.layers.9.self_attn.q_proj.weight"),
        "fp8 kinds");
  CHECK(dsv3_name_scale_of("a.weight", out, sizeof out) == 0 && !strcmp(out, "a.weight_scale_inv") &&
            dsv3_name_scale_of("a.weight", out, 5) == -1, "scale_of");
  return check_done("ckpt_names");
}
