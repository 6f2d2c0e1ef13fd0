/* tensors.c - `--tensors`: one row per stored tensor. */
#include "inspect.h"

int dsv3i_tensors(dsv3_ckpt *ck, const dsv3i_opts *o) {
  cJSON *arr = o->json ? cJSON_CreateArray() : NULL;
  size_t n = dsv3_ckpt_count(ck), shown = 0;
  if (!arr)
    printf("%-60s %-8s %-16s %12s  %s\n", "name", "dtype", "shape", "bytes", "file @offset  [scale shape]");
  for (size_t i = 0; i < n; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    if (o->filter && !dsv3_glob_match(o->filter, t->name)) continue;
    shown++;
    const dsv3_tensor *s = t->dtype == DSV3_F8_E4M3 ? dsv3i_scale_of(ck, t->name, dsv3_ckpt_file_rank(ck, f), NULL) : NULL;
    uint64_t off = dsv3_st_data_offset(dsv3_ckpt_file(ck, f)) + t->begin; /* absolute, in the file */
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "name", t->name);
      cJSON_AddStringToObject(e, "dtype", dsv3_dtype_name(t->dtype));
      cJSON_AddItemToObject(e, "shape", dsv3i_shape_json(t));
      cJSON_AddNumberToObject(e, "bytes", (double)t->nbytes);
      cJSON_AddStringToObject(e, "file", dsv3_ckpt_file_name(ck, f));
      cJSON_AddNumberToObject(e, "offset", (double)off);
      if (dsv3_ckpt_file_rank(ck, f) >= 0) cJSON_AddNumberToObject(e, "rank", dsv3_ckpt_file_rank(ck, f));
      if (s) cJSON_AddItemToObject(e, "scale_shape", dsv3i_shape_json(s));
      cJSON_AddItemToArray(arr, e);
    } else {
      char sh[160], ss[160] = "";
      dsv3i_shape_str(t, sh, sizeof sh);
      if (s) dsv3i_shape_str(s, ss, sizeof ss);
      printf("%-60s %-8s %-16s %12llu  %s @%llu%s%s\n", t->name, dsv3_dtype_name(t->dtype), sh,
             (unsigned long long)t->nbytes, dsv3_ckpt_file_name(ck, f), (unsigned long long)off,
             s ? "  scale " : (t->dtype == DSV3_F8_E4M3 ? "  NO SCALE" : ""), ss);
    }
  }
  if (arr) dsv3i_print_json(arr);
  else if (!o->quiet) fprintf(stderr, "%zu of %zu tensors\n", shown, n);
  return 0;
}
