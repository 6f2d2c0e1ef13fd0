/* dsv3-convert - reshard a DeepSeek-V3 checkpoint for model parallelism, tensor for tensor
 * identical to the official inference/convert.py, in bounded memory.
 *
 * Every output file is planned from the input headers alone: each logical tensor is described
 * by its "sources" (one for the HF layout; one per input rank when resharding a runtime
 * checkpoint), each output rank's slice is cut from them, and the slices are copied (or
 * dequantised) by many threads straight from the mmapped inputs to their final offsets. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "convert.h"
#include "fp8.h"
#include "names.h"
#include "plan.h"
#include "runstate.h"
#include "tarball.h"
#include "util.h"

static const char *PROG = "dsv3-convert";

typedef struct {
  const char *in, *out;
  int mp, n_experts, keep_mtp, threads, quiet, json, resume, no_manifest, pack_per_rank;
  const char *pack;
  dsv3_dtype dtype; /* DSV3_DT_INVALID: as stored */
  uint64_t memory;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-convert IN OUT --mp MP [OPTIONS]\n"
          "       dsv3-convert --hf-ckpt-path IN --save-path OUT --n-experts E --model-parallel MP\n"
          "Reshard a DeepSeek-V3 checkpoint into model{r}-mp{MP}.safetensors files for the runtime,\n"
          "exactly as the official convert.py does (names, splits, experts per rank, bytes), in\n"
          "bounded memory.  IN is the Hugging Face layout or an existing runtime layout (reshard\n"
          "mp16 -> mp8 directly).  MTP layers (>= num_hidden_layers) are dropped unless --keep-mtp.\n\n"
          "  --mp, --model-parallel MP   model-parallel degree (ranks)\n"
          "  --n-experts E               routed experts (default: from config.json; checked against it)\n"
          "  --dtype fp8|bf16            bf16: dequantise FP8 weights while resharding (scales dropped;\n"
          "                              identical to dsv3-cast then dsv3-convert); default: as stored\n"
          "  --keep-mtp                  keep the MTP layers (runtime names)\n"
          "  --resume                    after an interrupted run of this same conversion: keep the\n"
          "                              shards it completed (anything else is redone)\n"
          "  --no-manifest               do not write dsv3-manifest.json\n"
          "  --pack OUT.tar.zst          write one archive instead of a directory (zstd on all cores)\n"
          "  --pack-per-rank             with --pack: one archive per rank, OUT-rank{r}.tar.zst, each with\n"
          "                              its shard, config, tokenizer files and the manifest (for shipping)\n"
          "  --threads N, --memory SIZE, --json, -q/--quiet, -h/--help, --version\n");
}

typedef struct {
  const dsv3_tensor *t, *scale; /* scale: FP8 source's scale (for --dtype bf16) */
  int64_t r0, c0;               /* position of this source in the logical tensor */
} source;

typedef struct {
  char *rt;
  dsv3_split split;
  dsv3_dtype dtype; /* stored */
  int ndim;
  int64_t shape[DSV3_MAX_DIMS]; /* logical (full) shape */
  int64_t expert;               /* routed expert index, or -1 */
  int is_scale;
  source *src; /* one for the HF layout; one per input rank for split runtime tensors */
  int nsrc, cap;
} logical;

/* The 671B release has ~92k tensors: logical tensors are found by name through an
 * open-addressing hash (a linear search made planning quadratic: a minute at full depth). */
typedef struct {
  logical *v;
  size_t n, cap;
  uint32_t *ht; /* 0: empty; else index + 1 */
  size_t hcap;  /* power of two, >= 2 * the most tensors added */
} logicals;

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void logicals_init(logicals *L, size_t max_tensors) {
  L->hcap = 16;
  while (L->hcap < 2 * max_tensors + 2) L->hcap *= 2;
  L->ht = dsv3_xcalloc(L->hcap, sizeof *L->ht);
}

static void logicals_free(logicals *L) {
  for (size_t i = 0; i < L->n; i++) {
    free(L->v[i].rt);
    free(L->v[i].src);
  }
  free(L->v);
  free(L->ht);
}

/* The slot of `rt`: holding it, or the empty slot where it belongs. */
static size_t find_slot(const logicals *L, const char *rt) {
  size_t m = L->hcap - 1, i = (size_t)name_hash(rt) & m;
  while (L->ht[i] && strcmp(L->v[L->ht[i] - 1].rt, rt)) i = (i + 1) & m;
  return i;
}

static logical *find_logical(logicals *L, const char *rt) {
  size_t i = find_slot(L, rt);
  return L->ht[i] ? &L->v[L->ht[i] - 1] : NULL;
}

/* Add a logical tensor named rt (not present; at most hcap / 2 in all). */
static logical *add_logical(logicals *L, const char *rt) {
  if (L->n == L->cap) {
    L->cap = L->cap ? L->cap * 2 : 512;
    L->v = dsv3_xrealloc(L->v, L->cap * sizeof *L->v);
  }
  size_t slot = find_slot(L, rt);
  logical *l = &L->v[L->n++];
  memset(l, 0, sizeof *l);
  l->rt = dsv3_xstrdup(rt);
  l->expert = -1;
  L->ht[slot] = (uint32_t)L->n;
  return l;
}

static source *add_source(logical *l) {
  if (l->nsrc == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 1;
    l->src = dsv3_xrealloc(l->src, (size_t)l->cap * sizeof *l->src);
  }
  source *s = &l->src[l->nsrc++];
  memset(s, 0, sizeof *s);
  return s;
}

static int is_scale_name(const char *n) {
  size_t l = strlen(n);
  return (l > 10 && !strcmp(n + l - 10, "_scale_inv")) || (l > 6 && !strcmp(n + l - 6, ".scale"));
}

/* Collect logical tensors (runtime names) and their sources from the input. */
static int collect(dsv3_ckpt *ck, const opts *o, const dsv3_config *cfg, logicals *L) {
  int rt_in = dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME;
  int mp_in = dsv3_ckpt_mp(ck);
  logicals_init(L, dsv3_ckpt_count(ck));
  for (size_t i = 0; i < dsv3_ckpt_count(ck); i++) {
    size_t fi;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &fi);
    char rt[512];
    dsv3_split sp;
    dsv3_name_info ni;
    dsv3_name_parse(t->name, &ni);
    if (ni.layer >= cfg->num_hidden_layers && !o->keep_mtp) continue; /* MTP layer */
    if (rt_in) {
      snprintf(rt, sizeof rt, "%s", t->name);
      sp = dsv3_name_rt_split(rt);
    } else if (dsv3_name_hf_to_rt(t->name, rt, sizeof rt, &sp) != 0) {
      dsv3_error_prefix("%s", dsv3_st_path(dsv3_ckpt_file(ck, fi)));
      return -1;
    }
    int rank = dsv3_ckpt_file_rank(ck, fi);
    logical *l = find_logical(L, rt);
    if (!l) {
      l = add_logical(L, rt);
      l->split = sp;
      l->dtype = t->dtype;
      l->ndim = t->ndim;
      memcpy(l->shape, t->shape, sizeof l->shape);
      l->is_scale = is_scale_name(rt);
      if (sp == DSV3_SPLIT_EXPERT) {
        dsv3_name_info ri;
        dsv3_name_parse(rt, &ri);
        l->expert = ri.expert;
      }
      if (rt_in && (sp == DSV3_SPLIT_DIM0 || sp == DSV3_SPLIT_DIM1)) l->shape[sp] = 0; /* summed below */
    } else if (!rt_in) {
      dsv3_error_set("%s: tensor %s: maps to %s, which another tensor also maps to", dsv3_st_path(dsv3_ckpt_file(ck, fi)),
                     t->name, rt);
      return -1;
    }
    if (t->dtype != l->dtype || t->ndim != l->ndim) {
      dsv3_error_set("%s: tensor %s: dtype or rank differs between input ranks", dsv3_st_path(dsv3_ckpt_file(ck, fi)), t->name);
      return -1;
    }
    if (rt_in && l->nsrc > 0) {
      /* every rank's slice (or replica) must have rank 0's shape, or slices would overlap */
      const dsv3_tensor *t0 = l->src[0].t;
      for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != t0->shape[d]) {
          dsv3_error_set("%s: tensor %s: dim %d is %lld on this rank but %lld on another", dsv3_st_path(dsv3_ckpt_file(ck, fi)),
                         t->name, d, (long long)t->shape[d], (long long)t0->shape[d]);
          return -1;
        }
    }
    if (rt_in && (sp == DSV3_SPLIT_NONE || sp == DSV3_SPLIT_EXPERT) && l->nsrc > 0) continue; /* replicas */
    source *s = add_source(l);
    s->t = t;
    if (rt_in && (sp == DSV3_SPLIT_DIM0 || sp == DSV3_SPLIT_DIM1)) {
      if (t->ndim <= sp) {
        dsv3_error_set("tensor %s: split on dim %d but has %d dims", rt, (int)sp, t->ndim);
        return -1;
      }
      /* rank r holds slice r */
      int64_t part = t->shape[sp];
      if (sp == DSV3_SPLIT_DIM0) s->r0 = part * rank;
      else s->c0 = part * rank;
      l->shape[sp] += part;
    }
  }
  if (rt_in)
    for (size_t i = 0; i < L->n; i++) {
      logical *l = &L->v[i];
      if ((l->split == DSV3_SPLIT_DIM0 || l->split == DSV3_SPLIT_DIM1) && l->nsrc != mp_in) {
        dsv3_error_set("%s: tensor %s: found on %d of %d ranks", dsv3_ckpt_path(ck), l->rt, l->nsrc, mp_in);
        return -1;
      }
    }
  /* attach scales to FP8 weights (for --dtype bf16), in the same source order */
  for (size_t i = 0; i < L->n; i++) {
    logical *l = &L->v[i];
    if (l->dtype != DSV3_F8_E4M3) continue;
    size_t n = strlen(l->rt);
    if (n < 7 || strcmp(l->rt + n - 7, ".weight")) continue;
    char sn[512];
    snprintf(sn, sizeof sn, "%.*s.scale", (int)(n - 7), l->rt);
    logical *s = find_logical(L, sn);
    if (!s && o->dtype == DSV3_BF16) {
      dsv3_error_set("%s: tensor %s: FP8 weight has no scale", dsv3_ckpt_path(ck), l->rt);
      return -1;
    }
    if (s)
      for (int k = 0; k < l->nsrc && k < s->nsrc; k++) l->src[k].scale = s->src[k].t;
  }
  return 0;
}

/* 0 if the logical tensor splits evenly at degree mp (and on 128-blocks for FP8 kinds). */
static int split_ok(const logical *l, int mp, int fp8_out, char *why, size_t cap) {
  if (l->split != DSV3_SPLIT_DIM0 && l->split != DSV3_SPLIT_DIM1) return 0;
  if (mp == 1) return 0; /* nothing is cut: partial edge blocks stay as they are */
  int d = l->split;
  if (l->ndim <= d) {
    snprintf(why, cap, "tensor %s: split on dim %d but has %d dims", l->rt, d, l->ndim);
    return -1;
  }
  if (l->shape[d] % mp) {
    snprintf(why, cap, "tensor %s: dim %d of size %lld is not divisible by %d", l->rt, d, (long long)l->shape[d], mp);
    return -1;
  }
  /* each rank's FP8 slice must start on a 128x128 scale block, or its scale slice would
   * belong partly to its neighbour */
  if (fp8_out && (l->dtype == DSV3_F8_E4M3 && ((l->shape[d] / mp) % DSV3_FP8_BLOCK))) {
    snprintf(why, cap, "tensor %s: FP8 slices of %lld along dim %d would cut 128x128 scale blocks", l->rt,
             (long long)(l->shape[d] / mp), d);
    return -1;
  }
  return 0;
}

static int valid_mp(const logicals *L, int mp, int n_experts, int fp8_out, char *why, size_t cap) {
  if (n_experts % mp) {
    snprintf(why, cap, "%d experts are not divisible by %d ranks", n_experts, mp);
    return -1;
  }
  /* weights first, so that the error names the weight rather than its scale; scales are not
   * written with --dtype bf16 */
  for (int pass = 0; pass < (fp8_out ? 2 : 1); pass++)
    for (size_t i = 0; i < L->n; i++)
      if (L->v[i].is_scale == pass && split_ok(&L->v[i], mp, fp8_out, why, cap)) return -1;
  return 0;
}

/* Plan rank `rank`'s file. */
static int plan_rank(const opts *o, const logicals *L, int rank, int n_experts, dsv3_plan_file *pf, uint64_t chunk) {
  int mp = o->mp, dq = o->dtype == DSV3_BF16;
  pf->w = dsv3_stw_new();
  int *idx = dsv3_xmalloc((L->n ? L->n : 1) * sizeof(int));
  int64_t per = n_experts / mp;
  for (size_t i = 0; i < L->n; i++) {
    const logical *l = &L->v[i];
    idx[i] = -1;
    if (l->split == DSV3_SPLIT_EXPERT && (l->expert < rank * per || l->expert >= (rank + 1) * per)) continue;
    if (dq && l->is_scale) continue;
    int64_t shape[DSV3_MAX_DIMS];
    memcpy(shape, l->shape, sizeof shape);
    if (l->split == DSV3_SPLIT_DIM0 || l->split == DSV3_SPLIT_DIM1) shape[l->split] /= mp;
    dsv3_dtype dt = (dq && l->dtype == DSV3_F8_E4M3 && l->src[0].scale) ? DSV3_BF16 : l->dtype;
    idx[i] = dsv3_stw_add(pf->w, l->rt, dt, l->ndim, shape);
    if (idx[i] < 0) {
      free(idx);
      return -1;
    }
  }
  dsv3_stw_layout(pf->w);
  for (size_t i = 0; i < L->n; i++) {
    const logical *l = &L->v[i];
    if (idx[i] < 0) continue;
    /* logical tensor as [rows, cols]; the output slice [R0,R1) x [C0,C1) */
    int64_t rows = l->ndim >= 1 ? l->shape[0] : 1, numel = 1;
    for (int d = 0; d < l->ndim; d++) numel *= l->shape[d];
    if (l->ndim == 0) rows = 1;
    int64_t cols = rows ? numel / rows : 0;
    if (l->ndim == 1) { rows = 1; cols = l->shape[0]; }
    if (numel == 0) continue;
    int64_t R0 = 0, R1 = rows, C0 = 0, C1 = cols;
    if (l->split == DSV3_SPLIT_DIM0) { R0 = rows / mp * rank; R1 = R0 + rows / mp; }
    if (l->split == DSV3_SPLIT_DIM1) {
      int64_t inner = cols / l->shape[1]; /* elements per dim-1 index (1 for 2-D) */
      C0 = l->shape[1] / mp * rank * inner;
      C1 = C0 + l->shape[1] / mp * inner;
    }
    int deq = dq && l->dtype == DSV3_F8_E4M3 && l->src[0].scale;
    for (int k = 0; k < l->nsrc; k++) {
      const source *s = &l->src[k];
      const dsv3_tensor *t = s->t;
      int64_t srows = l->ndim >= 2 ? t->shape[0] : 1;
      int64_t scols = (int64_t)(t->numel / (uint64_t)(srows ? srows : 1));
      int64_t sc0 = s->c0 * (l->ndim >= 2 ? scols / t->shape[1] : 1);
      /* intersection of the source's region with the output slice */
      int64_t a = R0 > s->r0 ? R0 : s->r0, b = R1 < s->r0 + srows ? R1 : s->r0 + srows;
      int64_t c = C0 > sc0 ? C0 : sc0, e = C1 < sc0 + scols ? C1 : sc0 + scols;
      if (a >= b || c >= e) continue;
      dsv3_piece p = {0};
      p.kind = deq ? DSV3_PIECE_DEQUANT : DSV3_PIECE_COPY;
      p.out = idx[i];
      p.src = t;
      p.src_scale = deq ? s->scale : NULL;
      p.out_dt = DSV3_BF16;
      p.rows = srows;
      p.cols = scols;
      if (e - c != C1 - C0) {
        p.out_cols = C1 - C0;
        p.out_c0 = c - C0;
      }
      size_t oes = deq ? 2 : dsv3_dtype_size(l->dtype);
      uint64_t off = ((uint64_t)(a - R0) * (uint64_t)(C1 - C0)) * oes;
      dsv3_plan_add(pf, p, a - s->r0, b - a, c - sc0, e - c, off, chunk);
    }
  }
  free(idx);
  return 0;
}

/* After each rank: drop every mapped input page.  The plan drops the pages inside the ranges
 * it consumed, but not pages shared with neighbouring tensors (scales, norms: ~170 MB over
 * the 671B model), which would otherwise stay in RSS until exit.  The mappings are read-only
 * and file-backed, so a dropped page is simply read again if needed (never for memory-held
 * archive members, whose pages would be lost). */
static void drop_input_pages(const dsv3_ckpt *ck) {
  long pg = sysconf(_SC_PAGESIZE);
  for (size_t i = 0; i < dsv3_ckpt_nfiles(ck); i++) {
    uint64_t n = 0;
    const void *img = dsv3_st_image(dsv3_ckpt_file(ck, i), &n);
    if (img && n && pg > 0 && (uintptr_t)img % (uintptr_t)pg == 0) madvise((void *)(uintptr_t)img, n, MADV_DONTNEED);
  }
}

/* Shards of another degree in OUT would make a directory no loader can open (mp8 and mp16
 * files side by side): refuse before writing anything. */
static int other_degree_shards(const char *out_dir, int mp) {
  DIR *d = opendir(out_dir);
  if (!d) return 0;
  struct dirent *de;
  int rc = 0;
  while (!rc && (de = readdir(d))) {
    int r, n, len = 0;
    if (sscanf(de->d_name, "model%d-mp%d.safetensors%n", &r, &n, &len) == 2 && (size_t)len == strlen(de->d_name) && n != mp) {
      dsv3_error_set("%s: holds %s, a shard of another degree (mp %d); remove the old shards or choose another output",
                     out_dir, de->d_name, n);
      rc = -1;
    }
  }
  closedir(d);
  return rc;
}

/* Free bytes on the filesystem that will hold `path` (its nearest existing ancestor), -1 if
 * unknown. */
static int64_t free_disk_at(const char *path) {
  char *p = dsv3_xstrdup(path);
  int64_t fr = -1;
  for (;;) {
    struct stat sb;
    if (stat(p, &sb) == 0) {
      fr = dsv3_free_disk(p);
      break;
    }
    char *sl = strrchr(p, '/');
    if (!sl) {
      fr = dsv3_free_disk(".");
      break;
    }
    if (sl == p) sl[1] = 0;
    else *sl = 0;
  }
  free(p);
  return fr;
}

/* config.json for the shards: the input's, unchanged; after --dtype bf16 dequantised FP8
 * weights, without quantization_config and with torch_dtype bfloat16 (as dsv3-cast writes it),
 * so that loaders and dsv3-inspect --check do not look for scales. */
static int write_config(const dsv3_ckpt *ck, const char *out_dir, int dequantised) {
  char *dst = dsv3_path_join(out_dir, "config.json");
  int rc;
  if (!dequantised) {
    rc = dsv3_ckpt_copy_extra(ck, "config.json", dst);
    free(dst);
    return rc;
  }
  char *buf;
  size_t n;
  if (dsv3_ckpt_read_extra(ck, "config.json", &buf, &n)) {
    free(dst);
    return -1;
  }
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  if (!j || !cJSON_IsObject(j)) {
    dsv3_error_set("%s/config.json: not a JSON object", dsv3_ckpt_path(ck));
    cJSON_Delete(j);
    free(dst);
    return -1;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
  cJSON_DeleteItemFromObjectCaseSensitive(j, "torch_dtype");
  cJSON_AddStringToObject(j, "torch_dtype", "bfloat16");
  char *txt = cJSON_Print(j);
  cJSON_Delete(j);
  size_t l = strlen(txt);
  char *out = dsv3_xmalloc(l + 1);
  memcpy(out, txt, l);
  out[l] = '\n';
  free(txt);
  rc = dsv3_write_file_atomic(dst, out, l + 1);
  free(out);
  free(dst);
  return rc;
}

/* convert.py copies glob("*token*"); we also write config.json for dsv3-run. */
static int copy_extras(const dsv3_ckpt *ck, const char *out_dir, int dequantised) {
  char **names;
  size_t n = dsv3_ckpt_extra_names(ck, &names);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (!rc && !strcmp(names[i], "config.json")) {
      rc = write_config(ck, out_dir, dequantised);
    } else if (!rc && strstr(names[i], "token")) {
      char *t = dsv3_path_join(out_dir, names[i]);
      rc = dsv3_ckpt_copy_extra(ck, names[i], t);
      free(t);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

/* --pack-per-rank: rank r's archive holds its shard and the shared small files */
typedef struct {
  int rank, mp;
} rank_sel;
static int rank_file(const char *name, void *ctx) {
  const rank_sel *s = ctx;
  int r, n, len = 0;
  if (sscanf(name, "model%d-mp%d.safetensors%n", &r, &n, &len) == 2 && (size_t)len == strlen(name)) return r == s->rank;
  return 1;
}

static void after_window(void *ck) { drop_input_pages((dsv3_ckpt *)ck); }

/* An index that lies about where a tensor is refuses the input (dsv3_ckpt_require_index); a
 * wrong total_size only warns: the outputs have no index. */
static void on_index_warning(void *ctx, const char *line) {
  const opts *o = ctx;
  if (!o->quiet && !o->json) fprintf(stderr, "%s: warning: %s (ignored)\n", PROG, line);
}

int main(int argc, char **argv) {
  enum { O_MP = 256, O_E, O_IN, O_OUT, O_DTYPE, O_MTP, O_RESUME, O_NOMANIFEST, O_PACK, O_PACKRANK, O_THREADS, O_MEMORY, O_JSON, O_VERSION };
  static const struct option lo[] = {
      {"mp", required_argument, 0, O_MP}, {"model-parallel", required_argument, 0, O_MP},
      {"n-experts", required_argument, 0, O_E}, {"hf-ckpt-path", required_argument, 0, O_IN},
      {"save-path", required_argument, 0, O_OUT}, {"dtype", required_argument, 0, O_DTYPE},
      {"keep-mtp", no_argument, 0, O_MTP}, {"resume", no_argument, 0, O_RESUME}, {"no-manifest", no_argument, 0, O_NOMANIFEST},
      {"pack", required_argument, 0, O_PACK}, {"pack-per-rank", no_argument, 0, O_PACKRANK},
      {"threads", required_argument, 0, O_THREADS}, {"memory", required_argument, 0, O_MEMORY},
      {"json", no_argument, 0, O_JSON}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, O_VERSION}, {0, 0, 0, 0}};
  opts o = {.memory = 256u << 20};
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_MP:
      o.mp = atoi(optarg);
      if (o.mp <= 0 || o.mp > 4096) dsv3_die(PROG, 2, "--mp needs a degree between 1 and 4096");
      break;
    case O_E:
      o.n_experts = atoi(optarg);
      if (o.n_experts <= 0) dsv3_die(PROG, 2, "--n-experts needs a positive number");
      break;
    case O_IN: o.in = optarg; break;
    case O_OUT: o.out = optarg; break;
    case O_DTYPE:
      if (!strcmp(optarg, "bf16")) o.dtype = DSV3_BF16;
      else if (!strcmp(optarg, "fp8")) o.dtype = DSV3_DT_INVALID;
      else dsv3_die(PROG, 2, "--dtype must be fp8 (as stored) or bf16");
      break;
    case O_MTP: o.keep_mtp = 1; break;
    case O_RESUME: o.resume = 1; break;
    case O_NOMANIFEST: o.no_manifest = 1; break;
    case O_PACK:
      if (!dsv3_archive_is(optarg)) dsv3_die(PROG, 2, "--pack needs a .tar.zst, .tar.gz or .tar name");
      o.pack = optarg;
      break;
    case O_PACKRANK: o.pack_per_rank = 1; break;
    case O_THREADS:
      o.threads = atoi(optarg);
      if (o.threads <= 0) dsv3_die(PROG, 2, "--threads needs a positive number");
      break;
    case O_MEMORY:
      if (dsv3_parse_size(optarg, &o.memory) || o.memory < (1u << 20)) dsv3_die(PROG, 2, "--memory needs a size of at least 1M");
      break;
    case O_JSON: o.json = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("dsv3-convert %s\n", DSV3_VERSION); return 0;
    default: dsv3_die_badopt(PROG, argc, argv);
    }
  }
  if (!o.in && optind < argc) o.in = argv[optind++];
  if (!o.out && !o.pack && optind < argc) o.out = argv[optind++];
  if (!o.in || (!o.out && !o.pack) || optind != argc || !o.mp) {
    usage(stderr);
    return 2;
  }
  if (o.pack_per_rank && !o.pack) dsv3_die(PROG, 2, "--pack-per-rank needs --pack");
  char *pack_dir = NULL;
  if (o.pack) {
    size_t l = strlen(o.pack) + 32;
    pack_dir = dsv3_xmalloc(l);
    snprintf(pack_dir, l, "%s.parts.%ld", o.pack, (long)getpid());
    o.out = pack_dir;
  }
  if (!o.pack && (dsv3_path_inside(o.out, o.in) || dsv3_path_inside(o.in, o.out)))
    dsv3_die(PROG, 1, "%s: output must not be the input directory, inside it, or contain it (%s)", o.out, o.in);
  int threads = o.threads > 0 ? o.threads : dsv3_num_cpus();
  uint64_t chunk = o.memory / (uint64_t)(2 * threads);
  if (chunk < (1u << 20)) chunk = 1u << 20;
  if (chunk > (64u << 20)) chunk = 64u << 20;
  double t0 = dsv3_now();
  dsv3_ckpt *ck;
  if (dsv3_ckpt_open(o.in, &ck) != 0) {
    dsv3_error_print(PROG);
    return 1;
  }
  if (dsv3_ckpt_require_index(ck, o.in, on_index_warning, &o) != 0) { /* as dsv3-cast */
    dsv3_error_print(PROG);
    dsv3_ckpt_close(ck);
    return 1;
  }
  const dsv3_config *cfg = dsv3_ckpt_config(ck);
  logicals L = {0};
  dsv3_plan_file *pf = NULL;
  dsv3_input_hasher *ih = NULL;
  char *state = NULL, **done = NULL;
  int rc = 1;
  if (!cfg) {
    dsv3_error_set("%s: no config.json (needed for num_hidden_layers and the expert count)", o.in);
    goto out;
  }
  if (o.n_experts && o.n_experts != cfg->n_routed_experts) {
    dsv3_error_set("--n-experts %d but %s/config.json has n_routed_experts %lld", o.n_experts, o.in,
                   (long long)cfg->n_routed_experts);
    goto out;
  }
  int E = (int)cfg->n_routed_experts;
  if (collect(ck, &o, cfg, &L) != 0) goto out;
  char why[1024];
  int fp8_out = o.dtype != DSV3_BF16;
  if (valid_mp(&L, o.mp, E ? E : o.mp, fp8_out, why, sizeof why) != 0) {
    int best = 1;
    char tmp[1024];
    for (int m = o.mp - 1; m > 1; m--)
      if (valid_mp(&L, m, E ? E : m, fp8_out, tmp, sizeof tmp) == 0) {
        best = m;
        break;
      }
    dsv3_error_set("%s: cannot split for --mp %d: %s (largest valid degree below it: %d)", o.in, o.mp, why, best);
    goto out;
  }
  pf = dsv3_xcalloc((size_t)o.mp, sizeof *pf);
  uint64_t need = 0, todo = 0;
  for (int r = 0; r < o.mp; r++) {
    char nm[64];
    snprintf(nm, sizeof nm, "model%d-mp%d.safetensors", r, o.mp);
    pf[r].path = dsv3_path_join(o.out, nm);
    if (plan_rank(&o, &L, r, E ? E : o.mp, &pf[r], chunk) != 0) goto out;
    need += dsv3_stw_file_size(pf[r].w);
    todo += pf[r].in_bytes;
  }
  /* --resume trusts only what an interrupted run of this very conversion left (resume.c) */
  char opt[256];
  snprintf(opt, sizeof opt, "mp %d dtype %s keep-mtp %d experts %d", o.mp, o.dtype == DSV3_BF16 ? "bf16" : "stored",
           o.keep_mtp, E);
  state = dsv3_runstate_text("dsv3-convert", opt, ck, NULL, NULL);
  int resumable = o.resume && dsv3_runstate_matches(o.out, "dsv3-convert", state);
  if (o.resume && !resumable && !o.quiet && !o.json)
    fprintf(stderr, "%s: --resume: %s holds no interrupted run of this conversion; converting every shard\n", PROG, o.out);
  done = dsv3_xcalloc((size_t)o.mp, sizeof *done); /* complete shards to skip */
  for (int r = 0; r < o.mp; r++)
    if (resumable && dsv3_plan_output_complete(&pf[r])) {
      done[r] = pf[r].path;
      need -= dsv3_stw_file_size(pf[r].w);
    }
  if (other_degree_shards(o.out, o.mp) != 0) goto out;
  /* free disk where OUT will be (its nearest existing ancestor), before creating anything */
  int64_t fr = free_disk_at(o.out);
  if (fr >= 0 && (uint64_t)fr < need) {
    char a[32], b[32];
    dsv3_error_set("%s: needs %s of free disk, %s available", o.out, dsv3_human_bytes(need, a, sizeof a),
                   dsv3_human_bytes((uint64_t)fr, b, sizeof b));
    goto out;
  }
  if (dsv3_mkdirs(o.out) != 0 || dsv3_runstate_write(o.out, "dsv3-convert", state) != 0) goto out;
  int stale = dsv3_clean_stale_temps(o.out);
  if (stale && !o.quiet && !o.json) fprintf(stderr, "%s: removed %d temp file(s) of a killed run\n", PROG, stale);
  {
    char **names = dsv3_xcalloc((size_t)o.mp + 2, sizeof *names);
    for (int r = 0; r < o.mp; r++) names[r] = strrchr(pf[r].path, '/') + 1;
    names[o.mp] = "config.json";
    names[o.mp + 1] = "dsv3-manifest.json";
    dsv3_convert_remove_temps_on_signal(o.out, names, (size_t)o.mp + 2);
    free(names);
  }
  ih = o.no_manifest ? NULL : dsv3_input_hasher_start(ck);
  dsv3_progress *pg = dsv3_progress_new("convert", todo, o.quiet || o.json);
  int skipped = 0;
  dsv3_plan_file **run = dsv3_xmalloc((size_t)o.mp * sizeof *run);
  size_t nrun = 0;
  for (int r = 0; r < o.mp; r++) {
    pf[r].hash = !o.no_manifest;
    if (done[r]) {
      skipped++;
      dsv3_progress_add(pg, pf[r].in_bytes);
      continue;
    }
    run[nrun++] = &pf[r];
  }
  /* mapped inputs: drop their pages after each window of ranks */
  if (dsv3_plan_run_all(run, nrun, threads, pg, !dsv3_ckpt_in_memory(ck), dsv3_ckpt_in_memory(ck) ? NULL : after_window,
                        ck, PROG) != 0) {
    dsv3_progress_done(pg);
    free(run);
    goto out;
  }
  free(run);
  dsv3_progress_done(pg);
  int dequantised = 0;
  for (size_t i = 0; i < L.n && o.dtype == DSV3_BF16; i++)
    if (L.v[i].dtype == DSV3_F8_E4M3 && L.v[i].src[0].scale) dequantised = 1;
  if (copy_extras(ck, o.out, dequantised)) goto out;
  if (!o.no_manifest) {
    int mr = dsv3_plan_write_manifest(pf, (size_t)o.mp, ck, ih, PROG, argc, argv, o.out, threads);
    ih = NULL;
    if (mr) goto out;
  }
  dsv3_runstate_remove(o.out, "dsv3-convert"); /* complete: nothing left to resume */
  if (o.pack && !o.pack_per_rank && dsv3_pack_dir(o.out, o.pack, threads, NULL, NULL, 1)) goto out;
  if (o.pack_per_rank) {
    /* OUT.tar.zst -> OUT-rank{r}.tar.zst */
    const char *suf = strstr(o.pack, ".tar");
    for (int r = 0; r < o.mp; r++) {
      char name[4096];
      snprintf(name, sizeof name, "%.*s-rank%d%s", (int)(suf - o.pack), o.pack, r, suf);
      rank_sel sel = {r, o.mp};
      if (dsv3_pack_dir(o.out, name, threads, rank_file, &sel, 0)) goto out;
    }
    dsv3_remove_flat_dir(o.out);
  }
  double el = dsv3_now() - t0;
  uint64_t in_bytes = 0;
  for (size_t i = 0; i < dsv3_ckpt_nfiles(ck); i++) in_bytes += dsv3_st_file_size(dsv3_ckpt_file(ck, i));
  if (o.json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "input", o.in);
    cJSON_AddStringToObject(j, "output", o.out);
    cJSON_AddNumberToObject(j, "model_parallel", o.mp);
    cJSON_AddNumberToObject(j, "n_experts", E);
    cJSON_AddNumberToObject(j, "files_skipped", skipped);
    cJSON_AddNumberToObject(j, "input_bytes", (double)in_bytes);
    cJSON_AddNumberToObject(j, "output_bytes", (double)need);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddNumberToObject(j, "input_gb_per_s", el > 0 ? (double)in_bytes / el / 1e9 : 0);
    cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)dsv3_peak_rss());
    char *s = cJSON_Print(j);
    puts(s);
    free(s);
    cJSON_Delete(j);
  } else if (!o.quiet) {
    char a[32], b[32], r[32];
    fprintf(stderr, "%s: %d ranks, %s -> %s in %.2f s, peak RSS %s\n", PROG, o.mp, dsv3_human_bytes(in_bytes, a, sizeof a),
            dsv3_human_bytes(need, b, sizeof b), el, dsv3_human_bytes(dsv3_peak_rss(), r, sizeof r));
  }
  rc = 0;
out:
  if (rc) dsv3_error_print(PROG);
  dsv3_input_hasher_cancel(ih);
  dsv3_convert_temps_free();
  free(state);
  free(done);
  if (pf)
    for (int r = 0; r < o.mp; r++) dsv3_plan_file_free(&pf[r]);
  free(pf);
  logicals_free(&L);
  free(pack_dir);
  dsv3_ckpt_close(ck);
  return rc;
}
