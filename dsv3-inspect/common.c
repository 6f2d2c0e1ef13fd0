/* common.c - small helpers shared by the dsv3-inspect modes. */
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "inspect.h"

void dsv3i_print_json(cJSON *j) {
  char *s = cJSON_Print(j);
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
  }
  free(s);
  cJSON_Delete(j);
}

void dsv3i_shape_str(const dsv3_tensor *t, char *buf, size_t cap) {
  size_t k = 0;
  buf[0] = 0;
  k += (size_t)snprintf(buf + k, cap - k, "[");
  for (int i = 0; i < t->ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

cJSON *dsv3i_shape_json(const dsv3_tensor *t) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->shape[i]));
  return a;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

int dsv3i_is_scale_name(const char *name) {
  return ends_with(name, ".weight_scale_inv") || ends_with(name, ".scale");
}

const dsv3_tensor *dsv3i_scale_of(const dsv3_ckpt *ck, const char *name, int rank, size_t *file_index) {
  char sn[1100];
  size_t n = strlen(name);
  if (n < 8 || n > 1000 || !ends_with(name, ".weight")) return NULL;
  snprintf(sn, sizeof sn, "%s_scale_inv", name);
  const dsv3_tensor *s = dsv3_ckpt_find(ck, sn, rank, file_index);
  if (s) return s;
  snprintf(sn, sizeof sn, "%.*s.scale", (int)(n - 7), name);
  return dsv3_ckpt_find(ck, sn, rank, file_index);
}

int dsv3i_scale_fits(const dsv3_tensor *t, const dsv3_tensor *s) {
  return s && t && t->ndim == 2 && s->ndim == 2 && s->dtype == DSV3_F32 &&
         s->shape[0] == dsv3_ceil_div(t->shape[0], DSV3_FP8_BLOCK) &&
         s->shape[1] == dsv3_ceil_div(t->shape[1], DSV3_FP8_BLOCK);
}

void dsv3i_hf_name(const dsv3_ckpt *ck, const char *name, char *out, size_t cap) {
  if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME && dsv3_name_rt_to_hf(name, out, cap) == 0) return;
  snprintf(out, cap, "%s", name);
}

int dsv3i_is_mtp(const dsv3_config *c, const char *name) {
  if (!c) return 0;
  dsv3_name_info ni;
  dsv3_name_parse(name, &ni);
  return ni.layer >= 0 && ni.layer >= c->num_hidden_layers;
}

int dsv3i_parse_threads(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == 0 || *end || v <= 0 || v > 4096) return -1;
  return (int)v;
}
