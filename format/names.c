/* names.c - HF <-> runtime names exactly as the official convert.py maps them. */
#include "names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
  const char *hf, *rt;
  dsv3_split split;
} map_entry;

/* convert.py's `mapping`, then the MTP-only components (enorm, hnorm, eh_proj,
 * shared_head.head) that convert.py never sees because it drops the MTP layer; they are
 * mapped to themselves (--keep-mtp), shared_head.head split like the head. */
static const map_entry MAP[] = {
    {"embed_tokens", "embed", DSV3_SPLIT_DIM0},
    {"input_layernorm", "attn_norm", DSV3_SPLIT_NONE},
    {"post_attention_layernorm", "ffn_norm", DSV3_SPLIT_NONE},
    {"q_proj", "wq", DSV3_SPLIT_DIM0},
    {"q_a_proj", "wq_a", DSV3_SPLIT_NONE},
    {"q_a_layernorm", "q_norm", DSV3_SPLIT_NONE},
    {"q_b_proj", "wq_b", DSV3_SPLIT_DIM0},
    {"kv_a_proj_with_mqa", "wkv_a", DSV3_SPLIT_NONE},
    {"kv_a_layernorm", "kv_norm", DSV3_SPLIT_NONE},
    {"kv_b_proj", "wkv_b", DSV3_SPLIT_DIM0},
    {"o_proj", "wo", DSV3_SPLIT_DIM1},
    {"gate", "gate", DSV3_SPLIT_NONE},
    {"gate_proj", "w1", DSV3_SPLIT_DIM0},
    {"down_proj", "w2", DSV3_SPLIT_DIM1},
    {"up_proj", "w3", DSV3_SPLIT_DIM0},
    {"norm", "norm", DSV3_SPLIT_NONE},
    {"lm_head", "head", DSV3_SPLIT_DIM0},
    {"scale", "scale", DSV3_SPLIT_NONE},
    /* MTP extensions */
    {"enorm", "enorm", DSV3_SPLIT_NONE},
    {"hnorm", "hnorm", DSV3_SPLIT_NONE},
    {"eh_proj", "eh_proj", DSV3_SPLIT_NONE},
    {"head", "head", DSV3_SPLIT_DIM0},
};
#define NMAP (sizeof MAP / sizeof MAP[0])

/* Python's str.replace(old, new) on a bounded buffer. */
static int replace_all(const char *in, const char *old, const char *new_, char *out, size_t cap) {
  size_t lo = strlen(old), ln = strlen(new_), k = 0;
  const char *p = in;
  while (*p) {
    if (lo && strncmp(p, old, lo) == 0) {
      if (k + ln >= cap) return -1;
      memcpy(out + k, new_, ln);
      k += ln;
      p += lo;
    } else {
      if (k + 1 >= cap) return -1;
      out[k++] = *p++;
    }
  }
  out[k] = 0;
  return 0;
}

/* Second-to-last dotted component into buf; -1 if there is none. */
static int second_last(const char *name, char *buf, size_t cap) {
  const char *last = strrchr(name, '.');
  if (!last) return -1;
  const char *s = last;
  while (s > name && s[-1] != '.') s--;
  size_t n = (size_t)(last - s);
  if (n == 0 || n >= cap) return -1;
  memcpy(buf, s, n);
  buf[n] = 0;
  return 0;
}

static int is_routed_expert(const char *name) {
  return strstr(name, "experts") && !strstr(name, "shared_experts");
}

int dsv3_name_hf_to_rt(const char *hf, char *out, size_t cap, dsv3_split *split) {
  char a[1024], b[1024], key[256];
  const char *s = strncmp(hf, "model.", 6) == 0 ? hf + 6 : hf;
  if (replace_all(s, "self_attn", "attn", a, sizeof a) || replace_all(a, "mlp", "ffn", b, sizeof b) ||
      replace_all(b, "weight_scale_inv", "scale", a, sizeof a) ||
      replace_all(a, "e_score_correction_bias", "bias", b, sizeof b)) {
    dsv3_error_set("tensor %.200s: name too long", hf);
    return -1;
  }
  if (second_last(b, key, sizeof key) != 0) {
    dsv3_error_set("tensor %.200s: no component to map (convert.py would fail)", hf);
    return -1;
  }
  const map_entry *m = NULL;
  for (size_t i = 0; i < NMAP; i++)
    if (strcmp(MAP[i].hf, key) == 0) {
      m = &MAP[i];
      break;
    }
  if (!m) {
    dsv3_error_set("tensor %.200s: key \"%s\" is not in convert.py's mapping", hf, key);
    return -1;
  }
  if (replace_all(b, m->hf, m->rt, out, cap) != 0) {
    dsv3_error_set("tensor %.200s: name too long", hf);
    return -1;
  }
  if (split) *split = is_routed_expert(out) ? DSV3_SPLIT_EXPERT : m->split;
  return 0;
}

dsv3_split dsv3_name_rt_split(const char *rt) {
  if (is_routed_expert(rt)) return DSV3_SPLIT_EXPERT;
  char key[256];
  if (second_last(rt, key, sizeof key) != 0) return DSV3_SPLIT_NONE;
  /* The runtime key of a weight or scale is the mapped component. */
  for (size_t i = 0; i < NMAP; i++)
    if (strcmp(MAP[i].rt, key) == 0 && MAP[i].split != DSV3_SPLIT_NONE) return MAP[i].split;
  return DSV3_SPLIT_NONE;
}

int dsv3_name_rt_to_hf(const char *rt, char *out, size_t cap) {
  char key[256], a[1024], b[1024];
  if (second_last(rt, key, sizeof key) != 0) {
    dsv3_error_set("tensor %.200s: not a runtime name", rt);
    return -1;
  }
  const char *hfkey = NULL;
  /* "head" is the lm_head at top level and shared_head.head inside an MTP layer;
   * "embed" is embed_tokens everywhere. */
  for (size_t i = 0; i < NMAP; i++)
    if (strcmp(MAP[i].rt, key) == 0) {
      hfkey = MAP[i].hf;
      break;
    }
  if (!hfkey) {
    dsv3_error_set("tensor %.200s: key \"%s\" is not a runtime name", rt, key);
    return -1;
  }
  if (strcmp(key, "head") == 0 && strstr(rt, "shared_head")) hfkey = "head";
  /* Replace the last occurrence of the key component only. */
  const char *last = strrchr(rt, '.');
  const char *ks = last - strlen(key);
  size_t pre = (size_t)(ks - rt);
  if (pre + strlen(hfkey) + strlen(last) + 1 > sizeof a) return -1;
  memcpy(a, rt, pre);
  snprintf(a + pre, sizeof a - pre, "%s%s", hfkey, last);
  /* Undo the global renames; "scale" -> "weight_scale_inv" on the leaf only. */
  size_t n = strlen(a);
  if (n > 6 && strcmp(a + n - 6, ".scale") == 0) snprintf(a + n - 6, sizeof a - (n - 6), ".weight_scale_inv");
  n = strlen(a);
  if (n > 5 && strcmp(a + n - 5, ".bias") == 0 && strstr(a, ".gate.bias"))
    snprintf(a + n - 5, sizeof a - (n - 5), ".e_score_correction_bias");
  if (replace_all(a, "attn.", "self_attn.", b, sizeof b) || replace_all(b, "ffn.", "mlp.", a, sizeof a)) return -1;
  /* attn_norm/ffn_norm survived as input_layernorm/post_attention_layernorm above. */
  int top = strncmp(a, "lm_head", 7) == 0;
  if (snprintf(out, cap, "%s%s", top ? "" : "model.", a) >= (int)cap) {
    dsv3_error_set("tensor %.200s: name too long", rt);
    return -1;
  }
  return 0;
}

static const char *FP8_KINDS[] = {"q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                                  "o_proj", "gate_proj", "up_proj", "down_proj"};

int dsv3_name_is_fp8_kind(const char *hf_name) {
  size_t n = strlen(hf_name);
  if (n < 7 || strcmp(hf_name + n - 7, ".weight") != 0) return 0;
  char key[256];
  if (second_last(hf_name, key, sizeof key) != 0) return 0;
  for (size_t i = 0; i < sizeof FP8_KINDS / sizeof FP8_KINDS[0]; i++)
    if (strcmp(key, FP8_KINDS[i]) == 0) return 1;
  return 0;
}

int dsv3_name_scale_of(const char *weight, char *out, size_t cap) {
  if (snprintf(out, cap, "%s_scale_inv", weight) >= (int)cap) {
    dsv3_error_set("tensor %.200s: name too long", weight);
    return -1;
  }
  return 0;
}

static int64_t num_after(const char *name, const char *tag) {
  const char *p = strstr(name, tag);
  if (!p) return -1;
  p += strlen(tag);
  if (*p < '0' || *p > '9') return -1;
  int64_t v = 0;
  while (*p >= '0' && *p <= '9' && v < (INT64_C(1) << 40)) v = v * 10 + (*p++ - '0');
  return *p == '.' ? v : -1;
}

void dsv3_name_parse(const char *name, dsv3_name_info *info) {
  memset(info, 0, sizeof *info);
  info->layer = num_after(name, "layers.");
  info->expert = -1;
  if (!strstr(name, "shared_experts")) {
    const char *e = strstr(name, ".experts.");
    if (e) info->expert = num_after(e, ".experts.");
  } else {
    info->is_shared_expert = 1;
  }
  size_t n = strlen(name);
  info->is_scale = (n > 10 && strcmp(name + n - 10, "_scale_inv") == 0) ||
                   (n > 6 && strcmp(name + n - 6, ".scale") == 0);
  /* leaf: last two components */
  const char *last = strrchr(name, '.');
  const char *s = name;
  if (last) {
    s = last;
    while (s > name && s[-1] != '.') s--;
  }
  info->leaf = s;
  if (dsv3_name_is_fp8_kind(name)) {
    info->is_fp8_weight_kind = 1;
  } else {
    /* runtime names: wq, wq_a, wq_b, wkv_a, wkv_b, wo, w1, w2, w3 */
    static const char *rt[] = {"wq", "wq_a", "wq_b", "wkv_a", "wkv_b", "wo", "w1", "w2", "w3"};
    char key[256];
    if (n > 7 && strcmp(name + n - 7, ".weight") == 0 && second_last(name, key, sizeof key) == 0)
      for (size_t i = 0; i < sizeof rt / sizeof rt[0]; i++)
        if (strcmp(key, rt[i]) == 0) info->is_fp8_weight_kind = 1;
  }
}
