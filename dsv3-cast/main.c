/* dsv3-cast - FP8 <-> BF16/F16/F32 for DeepSeek-V3 checkpoints, on any CPU, streaming,
 * bit-exact with the official fp8_cast_bf16.py (Triton weight_dequant). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fp8.h"
#include "manifest.h"
#include "names.h"
#include "plan.h"
#include "runstate.h"
#include "tarball.h"
#include "util.h"

static const char *PROG = "dsv3-cast";

/* resume.c */

typedef struct {
  const char *in, *out, *scales_from, *pack;
  dsv3_ckpt *ref; /* --scales-from */
  dsv3_dtype to;
  int ue8m0, threads, quiet, json, resume, allow_missing, no_manifest;
  uint64_t memory;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-cast [OPTIONS] IN OUT\n"
          "Cast a DeepSeek-V3 checkpoint between FP8 (e4m3, 128x128 block scales) and BF16/F16/F32.\n"
          "Default FP8 -> BF16, bit-exact with the official fp8_cast_bf16.py; other tensors are\n"
          "copied unchanged, *_scale_inv dropped, shard names kept; the index, config.json\n"
          "(quantization_config removed, torch_dtype set) and every other file are written too.\n\n"
          "  --to bf16|f16|f32|fp8   target (fp8: quantise the linear weights the official release\n"
          "                          stores as FP8, writing weight_scale_inv and quantization_config)\n"
          "  --scale-fmt ue8m0       with --to fp8: power-of-two scales (DeepSeek-V3.1)\n"
          "  --scales-from DIR       with --to fp8: reuse the block scales of the FP8 checkpoint DIR\n"
          "                          (e.g. the one this BF16 model was cast from: the round trip is\n"
          "                          then byte-identical)\n"
          "  --input-fp8-hf-path IN, --output-bf16-hf-path OUT   the official script's flags\n"
          "  --allow-missing-scale   pass an FP8 weight without scale through unchanged (official\n"
          "                          behaviour) instead of failing\n"
          "  --resume                skip output shards that are already complete\n"
          "  --no-manifest           do not write dsv3-manifest.json (hashes of every file and tensor)\n"
          "  --pack OUT.tar.zst      write the output as one archive (.tar.zst, .tar.gz or .tar; zstd\n"
          "                          on all cores), manifest inside; then OUT is not given\n"
          "  --threads N             worker threads (default: all cores)\n"
          "  --memory SIZE           working-memory budget, e.g. 512M (default 256M)\n"
          "  --json                  print a JSON summary on stdout\n"
          "  -q, --quiet             no progress bar\n"
          "  -h, --help, --version\n");
}

static int is_scale_name(const char *n) {
  size_t l = strlen(n);
  return (l > 10 && strcmp(n + l - 10, "_scale_inv") == 0) || (l > 6 && strcmp(n + l - 6, ".scale") == 0);
}

/* Name of the scale of weight `w` in the checkpoint's naming scheme. */
static void scale_name(dsv3_layout lay, const char *w, char *out, size_t cap) {
  size_t l = strlen(w);
  if (lay == DSV3_LAYOUT_RUNTIME && l > 7 && strcmp(w + l - 7, ".weight") == 0)
    snprintf(out, cap, "%.*s.scale", (int)(l - 7), w);
  else
    snprintf(out, cap, "%s_scale_inv", w);
}

static int fp8_kind(dsv3_layout lay, const char *name) {
  dsv3_name_info ni;
  if (lay != DSV3_LAYOUT_RUNTIME) return dsv3_name_is_fp8_kind(name);
  dsv3_name_parse(name, &ni);
  return ni.is_fp8_weight_kind;
}

typedef struct {
  cJSON *weight_map;
  uint64_t total, in_total, out_total;
  size_t tensors_out, dequantised, quantised, copied, skipped_files;
} summary;

/* Plan one output shard from one input shard. */
static int plan_shard(const opts *o, dsv3_ckpt *ck, size_t fi, dsv3_plan_file *pf, summary *sum, uint64_t chunk) {
  dsv3_st *st = dsv3_ckpt_file(ck, fi);
  dsv3_layout lay = dsv3_ckpt_layout(ck);
  const char *fname = dsv3_ckpt_file_name(ck, fi);
  int rank = dsv3_ckpt_file_rank(ck, fi);
  pf->w = dsv3_stw_new();
  size_t n = dsv3_st_count(st);
  /* declare outputs */
  int *oidx = dsv3_xmalloc((n ? n : 1) * sizeof(int)), *sidx = dsv3_xmalloc((n ? n : 1) * sizeof(int));
  const dsv3_tensor **scl = dsv3_xcalloc(n ? n : 1, sizeof *scl);
  for (size_t i = 0; i < n; i++) {
    const dsv3_tensor *t = dsv3_st_tensor(st, i);
    oidx[i] = sidx[i] = -1;
    char sn[1024];
    if (o->to != DSV3_F8_E4M3) {
      if (is_scale_name(t->name)) continue; /* dropped, as the official script does */
      dsv3_dtype odt = t->dtype;
      if (t->dtype != DSV3_F8_E4M3 && dsv3_dtype_size(t->dtype) == 1) {
        /* the official script would dequantise any 1-byte weight as if e4m3; dropping its
         * scale would silently change the values: refuse */
        scale_name(lay, t->name, sn, sizeof sn);
        if (dsv3_ckpt_find(ck, sn, rank, NULL)) {
          dsv3_error_set("%s: tensor %s: is %s with a scale %s; only F8_E4M3 block-scaled weights can be cast",
                         dsv3_st_path(st), t->name, dsv3_dtype_name(t->dtype), sn);
          goto fail;
        }
      }
      if (t->dtype == DSV3_F8_E4M3) {
        scale_name(lay, t->name, sn, sizeof sn);
        const dsv3_tensor *s = dsv3_ckpt_find(ck, sn, rank, NULL);
        if (!s) { /* a file may carry either naming scheme */
          char alt[1024];
          scale_name(lay == DSV3_LAYOUT_RUNTIME ? DSV3_LAYOUT_HF : DSV3_LAYOUT_RUNTIME, t->name, alt, sizeof alt);
          if ((s = dsv3_ckpt_find(ck, alt, rank, NULL))) snprintf(sn, sizeof sn, "%s", alt);
        }
        if (!s) {
          if (!o->allow_missing) {
            dsv3_error_set("%s: tensor %s: FP8 weight has no scale %s (use --allow-missing-scale to copy it unchanged)",
                           dsv3_st_path(st), t->name, sn);
            goto fail;
          }
          fprintf(stderr, "%s: warning: %s: tensor %s: no scale, copied unchanged\n", PROG, fname, t->name);
        } else {
          if (t->ndim != 2 || s->dtype != DSV3_F32 || s->ndim != 2 || s->shape[0] != dsv3_ceil_div(t->shape[0], 128) ||
              s->shape[1] != dsv3_ceil_div(t->shape[1], 128)) {
            dsv3_error_set("%s: tensor %s: scale %s has the wrong shape or dtype for a 2-D FP8 weight",
                           dsv3_st_path(st), t->name, sn);
            goto fail;
          }
          scl[i] = s;
          odt = o->to;
        }
      }
      oidx[i] = dsv3_stw_add(pf->w, t->name, odt, t->ndim, t->shape);
    } else {
      /* to FP8: quantise exactly the FP8 kinds that are stored wider; keep the rest */
      int q = fp8_kind(lay, t->name) && t->ndim == 2 &&
              (t->dtype == DSV3_BF16 || t->dtype == DSV3_F16 || t->dtype == DSV3_F32);
      oidx[i] = dsv3_stw_add(pf->w, t->name, q ? DSV3_F8_E4M3 : t->dtype, t->ndim, t->shape);
      if (q) {
        scale_name(lay, t->name, sn, sizeof sn);
        if (dsv3_ckpt_find(ck, sn, rank, NULL)) {
          dsv3_error_set("%s: tensor %s: is %s but a scale %s already exists", dsv3_st_path(st), t->name,
                         dsv3_dtype_name(t->dtype), sn);
          goto fail;
        }
        int64_t ss[2] = {dsv3_ceil_div(t->shape[0], 128), dsv3_ceil_div(t->shape[1], 128)};
        if (o->ref) {
          const dsv3_tensor *g = dsv3_ckpt_find(o->ref, sn, rank, NULL);
          if (!g || g->dtype != DSV3_F32 || g->ndim != 2 || g->shape[0] != ss[0] || g->shape[1] != ss[1]) {
            dsv3_error_set("%s: tensor %s: no F32 [%lld, %lld] scale %s in --scales-from %s", dsv3_st_path(st), t->name,
                           (long long)ss[0], (long long)ss[1], sn, o->scales_from);
            goto fail;
          }
          scl[i] = g;
        }
        sidx[i] = dsv3_stw_add(pf->w, sn, DSV3_F32, 2, ss);
        if (sidx[i] < 0) goto fail;
      }
    }
    if (oidx[i] < 0) {
      dsv3_error_prefix("%s", dsv3_st_path(st));
      goto fail;
    }
  }
  dsv3_stw_layout(pf->w);
  /* pieces */
  for (size_t i = 0; i < n; i++) {
    if (oidx[i] < 0) continue;
    const dsv3_tensor *t = dsv3_st_tensor(st, i);
    dsv3_piece p = {0};
    p.out = oidx[i];
    p.src = t;
    p.src_file = st;
    p.rows = t->ndim >= 2 ? t->shape[0] : 1;
    p.cols = t->ndim >= 2 ? (int64_t)(t->numel / (uint64_t)(t->shape[0] ? t->shape[0] : 1)) : (int64_t)t->numel;
    if (t->numel == 0) continue;
    if (scl[i] && sidx[i] < 0) {
      p.kind = DSV3_PIECE_DEQUANT;
      p.src_scale = scl[i];
      p.out_dt = o->to;
      sum->dequantised++;
    } else if (sidx[i] >= 0) {
      p.kind = DSV3_PIECE_QUANT;
      p.out_scale = sidx[i];
      p.src_scale = scl[i];
      p.ue8m0 = o->ue8m0;
      sum->quantised++;
    } else {
      p.kind = DSV3_PIECE_COPY;
      sum->copied++;
    }
    dsv3_plan_add(pf, p, 0, p.rows, 0, p.cols, 0, chunk);
  }
  /* index entries */
  for (size_t k = 0; k < dsv3_stw_count(pf->w); k++) sum->total += dsv3_stw_nbytes(pf->w, (int)k);
  sum->tensors_out += dsv3_stw_count(pf->w);
  free(oidx);
  free(sidx);
  free(scl);
  return 0;
fail:
  free(oidx);
  free(sidx);
  free(scl);
  return -1;
}

/* Declared output names for the index: walk the writer through its header. */
static void add_to_index(cJSON *wm, const dsv3_plan_file *pf, const char *fname) {
  size_t hl;
  const uint8_t *h = dsv3_stw_header(pf->w, &hl);
  dsv3_st *view;
  if (dsv3_st_open_header(h, hl, dsv3_stw_file_size(pf->w), fname, &view) != 0) return;
  for (size_t i = 0; i < dsv3_st_count(view); i++) cJSON_AddStringToObject(wm, dsv3_st_tensor(view, i)->name, fname);
  dsv3_st_close(view);
}

static int write_json(const char *path, cJSON *j) {
  char *s = cJSON_Print(j);
  size_t n = strlen(s);
  char *buf = dsv3_xmalloc(n + 2);
  memcpy(buf, s, n);
  buf[n] = '\n';
  int rc = dsv3_write_file_atomic(path, buf, n + 1);
  free(buf);
  free(s);
  return rc;
}

static int write_config(const opts *o, const dsv3_ckpt *ck, const char *out_dir) {
  if (!dsv3_ckpt_config(ck)) return 0;
  char *buf;
  size_t n;
  int rc = dsv3_ckpt_read_extra(ck, "config.json", &buf, &n);
  if (rc) return -1;
  cJSON *j = cJSON_ParseWithLength(buf, n);
  free(buf);
  if (!j || !cJSON_IsObject(j)) {
    dsv3_error_set("%s: config.json: not a JSON object", o->in);
    cJSON_Delete(j);
    return -1;
  }
  const char *td = o->to == DSV3_F16 ? "float16" : o->to == DSV3_F32 ? "float32" : "bfloat16";
  if (o->to == DSV3_F8_E4M3) {
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
    cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
    cJSON_AddStringToObject(q, "activation_scheme", "dynamic");
    cJSON_AddStringToObject(q, "fmt", "e4m3");
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    if (o->ue8m0) cJSON_AddStringToObject(q, "scale_fmt", "ue8m0");
    cJSON *bs = cJSON_AddArrayToObject(q, "weight_block_size");
    cJSON_AddItemToArray(bs, cJSON_CreateNumber(128));
    cJSON_AddItemToArray(bs, cJSON_CreateNumber(128));
    td = "bfloat16";
  } else {
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
  }
  cJSON_DeleteItemFromObjectCaseSensitive(j, "torch_dtype");
  cJSON_AddStringToObject(j, "torch_dtype", td);
  char *dst = dsv3_path_join(out_dir, "config.json");
  rc = write_json(dst, j);
  free(dst);
  cJSON_Delete(j);
  return rc;
}

/* Every other file (tokenizer, generation_config.json, README, LICENSE, *.py...). */
static int copy_other_files(const dsv3_ckpt *ck, const char *out_dir) {
  char **names;
  size_t n = dsv3_ckpt_extra_names(ck, &names);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    const char *nm = names[i];
    if (!rc && strcmp(nm, "model.safetensors.index.json") && strcmp(nm, "config.json") && strcmp(nm, DSV3_MANIFEST_NAME)) {
      char *t = dsv3_path_join(out_dir, nm);
      rc = dsv3_ckpt_copy_extra(ck, nm, t);
      free(t);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

/* The input index must tell the truth about where each tensor is (loaders trust it, and a
 * lie means the checkpoint is not what it claims); a wrong total_size only warns, as the
 * output's is recomputed. */
static void on_index_warning(void *ctx, const char *line) {
  const opts *o = ctx;
  if (!o->quiet && !o->json) fprintf(stderr, "%s: warning: %s (the output's is recomputed)\n", PROG, line);
}

/* The input index's "metadata" object (a copy; empty when there is none). */
static cJSON *input_index_metadata(const dsv3_ckpt *ck) {
  char *buf = NULL;
  size_t n = 0;
  cJSON *md = NULL;
  if (dsv3_ckpt_read_extra(ck, "model.safetensors.index.json", &buf, &n) == 0) {
    cJSON *j = cJSON_ParseWithLength(buf, n);
    cJSON *m = j ? cJSON_GetObjectItemCaseSensitive(j, "metadata") : NULL;
    if (cJSON_IsObject(m)) md = cJSON_Duplicate(m, 1);
    cJSON_Delete(j);
  }
  free(buf);
  return md ? md : cJSON_CreateObject();
}

int main(int argc, char **argv) {
  enum { O_TO = 256, O_SCALEFMT, O_SCALESFROM, O_IN, O_OUT, O_ALLOW, O_RESUME, O_NOMANIFEST, O_PACK, O_THREADS, O_MEMORY, O_JSON, O_VERSION };
  static const struct option lo[] = {
      {"to", required_argument, 0, O_TO}, {"scale-fmt", required_argument, 0, O_SCALEFMT},
      {"scales-from", required_argument, 0, O_SCALESFROM},
      {"input-fp8-hf-path", required_argument, 0, O_IN}, {"output-bf16-hf-path", required_argument, 0, O_OUT},
      {"allow-missing-scale", no_argument, 0, O_ALLOW}, {"resume", no_argument, 0, O_RESUME}, {"no-manifest", no_argument, 0, O_NOMANIFEST}, {"pack", required_argument, 0, O_PACK},
      {"threads", required_argument, 0, O_THREADS}, {"memory", required_argument, 0, O_MEMORY},
      {"json", no_argument, 0, O_JSON}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, O_VERSION}, {0, 0, 0, 0}};
  opts o = {.to = DSV3_BF16, .memory = 256u << 20};
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_TO:
      if (!strcmp(optarg, "bf16")) o.to = DSV3_BF16;
      else if (!strcmp(optarg, "f16") || !strcmp(optarg, "fp16")) o.to = DSV3_F16;
      else if (!strcmp(optarg, "f32") || !strcmp(optarg, "fp32")) o.to = DSV3_F32;
      else if (!strcmp(optarg, "fp8")) o.to = DSV3_F8_E4M3;
      else dsv3_die(PROG, 2, "--to must be bf16, f16, f32 or fp8 (got \"%s\")", optarg);
      break;
    case O_SCALEFMT:
      if (strcmp(optarg, "ue8m0")) dsv3_die(PROG, 2, "--scale-fmt supports ue8m0 only");
      o.ue8m0 = 1;
      break;
    case O_SCALESFROM: o.scales_from = optarg; break;
    case O_IN: o.in = optarg; break;
    case O_OUT: o.out = optarg; break;
    case O_ALLOW: o.allow_missing = 1; break;
    case O_RESUME: o.resume = 1; break;
    case O_NOMANIFEST: o.no_manifest = 1; break;
    case O_PACK:
      if (!dsv3_archive_is(optarg)) dsv3_die(PROG, 2, "--pack needs a .tar.zst, .tar.gz or .tar name");
      o.pack = optarg;
      break;
    case O_THREADS:
      o.threads = atoi(optarg);
      if (o.threads <= 0) dsv3_die(PROG, 2, "--threads needs a positive number");
      break;
    case O_MEMORY:
      if (dsv3_parse_size(optarg, &o.memory) || o.memory < (1u << 20)) dsv3_die(PROG, 2, "--memory needs a size of at least 1M (e.g. 512M)");
      break;
    case O_JSON: o.json = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("dsv3-cast %s\n", DSV3_VERSION); return 0;
    default: dsv3_die_badopt(PROG, argc, argv); /* one line, ours (opterr = 0) */
    }
  }
  if (!o.in && optind < argc) o.in = argv[optind++];
  if (!o.out && !o.pack && optind < argc) o.out = argv[optind++];
  if (!o.in || (!o.out && !o.pack) || optind != argc)
    dsv3_die(PROG, 2, "needs an input and an output directory, nothing else (see --help)");
  if ((o.ue8m0 || o.scales_from) && o.to != DSV3_F8_E4M3) dsv3_die(PROG, 2, "--scale-fmt and --scales-from apply to --to fp8 only");
  if (o.ue8m0 && o.scales_from) dsv3_die(PROG, 2, "--scale-fmt and --scales-from exclude each other");
  if (!dsv3_is_dir(o.in) && !dsv3_archive_is(o.in)) dsv3_die(PROG, 1, "%s: not a checkpoint directory or archive", o.in);
  /* --pack: write the directory beside the archive, pack it, remove it */
  char *pack_dir = NULL;
  if (o.pack) {
    size_t l = strlen(o.pack) + 32;
    pack_dir = dsv3_xmalloc(l);
    snprintf(pack_dir, l, "%s.parts.%ld", o.pack, (long)getpid());
    o.out = pack_dir;
  }
  if (o.pack && dsv3_path_inside(o.pack, o.in) && !dsv3_archive_is(o.in))
    dsv3_die(PROG, 1, "%s: output must not be inside the input directory %s", o.pack, o.in);
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
  if (o.scales_from && dsv3_ckpt_open(o.scales_from, &o.ref) != 0) {
    dsv3_error_print(PROG);
    dsv3_ckpt_close(ck);
    return 1;
  }
  if (dsv3_ckpt_require_index(ck, o.in, on_index_warning, &o) != 0) {
    dsv3_error_print(PROG);
    dsv3_ckpt_close(ck);
    dsv3_ckpt_close(o.ref);
    return 1;
  }
  size_t nf = dsv3_ckpt_nfiles(ck);
  dsv3_plan_file *pf = dsv3_xcalloc(nf ? nf : 1, sizeof *pf);
  summary sum = {0};
  dsv3_input_hasher *ih = NULL;
  sum.weight_map = cJSON_CreateObject();
  char *state = NULL;
  int resumable = 0;
  uint64_t todo = 0;
  int rc = 0;
  for (size_t i = 0; i < nf && !rc; i++) {
    pf[i].path = dsv3_path_join(o.out, dsv3_ckpt_file_name(ck, i));
    rc = plan_shard(&o, ck, i, &pf[i], &sum, chunk);
    if (!rc) {
      add_to_index(sum.weight_map, &pf[i], dsv3_ckpt_file_name(ck, i));
      todo += pf[i].in_bytes;
    }
  }
  if (rc) goto fail;
  if (dsv3_mkdirs(o.out) != 0) goto fail;
  {
    uint64_t need = 0;
    for (size_t i = 0; i < nf; i++) need += dsv3_stw_file_size(pf[i].w);
    int64_t fr = dsv3_free_disk(o.out);
    if (fr >= 0 && (uint64_t)fr < need) {
      char a[32], b[32];
      dsv3_error_set("%s: needs %s of free disk, %s available", o.out, dsv3_human_bytes(need, a, sizeof a),
                     dsv3_human_bytes((uint64_t)fr, b, sizeof b));
      goto fail;
    }
  }
  /* the one place output shards are decided and written; see resume.c for --resume */
  {
    int stale = dsv3_clean_stale_temps(o.out);
    if (stale && !o.quiet && !o.json) fprintf(stderr, "%s: removed %d temp file(s) of a killed run\n", PROG, stale);
    char opt[1200];
    snprintf(opt, sizeof opt, "to=%s ue8m0=%d allow-missing-scale=%d", dsv3_dtype_name(o.to), o.ue8m0, o.allow_missing);
    state = dsv3_runstate_text("dsv3-cast", opt, ck, "scales-from", o.ref);
    resumable = o.resume && dsv3_runstate_matches(o.out, "dsv3-cast", state);
    if (o.resume && !resumable && !o.quiet && !o.json)
      fprintf(stderr, "%s: --resume: %s holds no interrupted run of this command on these inputs; casting every shard\n",
              PROG, o.out);
    if (dsv3_runstate_write(o.out, "dsv3-cast", state) != 0) goto fail;
  }
  ih = o.no_manifest ? NULL : dsv3_input_hasher_start(ck);
  dsv3_progress *pg = dsv3_progress_new("cast", todo, o.quiet || o.json);
  dsv3_plan_file **run = dsv3_xmalloc((nf ? nf : 1) * sizeof *run);
  size_t nrun = 0;
  for (size_t i = 0; i < nf; i++) {
    sum.in_total += dsv3_st_file_size(dsv3_ckpt_file(ck, i));
    sum.out_total += dsv3_stw_file_size(pf[i].w);
    pf[i].hash = !o.no_manifest;
    if (resumable && dsv3_plan_output_complete(&pf[i])) {
      sum.skipped_files++;
      dsv3_progress_add(pg, pf[i].in_bytes);
      continue;
    }
    run[nrun++] = &pf[i];
  }
  if (dsv3_plan_run_all(run, nrun, threads, pg, !dsv3_ckpt_in_memory(ck), NULL, NULL, PROG) != 0) {
    dsv3_progress_done(pg);
    free(run);
    goto fail;
  }
  free(run);
  dsv3_progress_done(pg);
  if (dsv3_ckpt_layout(ck) == DSV3_LAYOUT_HF) {
    cJSON *idx = cJSON_CreateObject();
    cJSON *md = input_index_metadata(ck);
    cJSON_AddItemToObject(idx, "metadata", md);
    cJSON_DeleteItemFromObjectCaseSensitive(md, "total_size");
    cJSON_AddNumberToObject(md, "total_size", (double)sum.total);
    cJSON_AddItemToObject(idx, "weight_map", sum.weight_map);
    sum.weight_map = NULL;
    char *ip = dsv3_path_join(o.out, "model.safetensors.index.json");
    int r = write_json(ip, idx);
    free(ip);
    cJSON_Delete(idx);
    if (r) goto fail;
  }
  if (write_config(&o, ck, o.out) || copy_other_files(ck, o.out)) goto fail;
  if (!o.no_manifest && dsv3_plan_write_manifest(pf, nf, ck, ih, PROG, argc, argv, o.out, threads)) {
    ih = NULL;
    goto fail;
  }
  ih = NULL;
  dsv3_runstate_remove(o.out, "dsv3-cast");
  if (o.pack && dsv3_pack_dir(o.out, o.pack, threads, NULL, NULL, 1)) goto fail;
  double el = dsv3_now() - t0;
  if (o.json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "input", o.in);
    cJSON_AddStringToObject(j, "output", o.out);
    cJSON_AddStringToObject(j, "to", dsv3_dtype_name(o.to));
    cJSON_AddNumberToObject(j, "files", (double)nf);
    cJSON_AddNumberToObject(j, "files_skipped", (double)sum.skipped_files);
    cJSON_AddNumberToObject(j, "tensors", (double)sum.tensors_out);
    cJSON_AddNumberToObject(j, "dequantised", (double)sum.dequantised);
    cJSON_AddNumberToObject(j, "quantised", (double)sum.quantised);
    cJSON_AddNumberToObject(j, "copied", (double)sum.copied);
    cJSON_AddNumberToObject(j, "input_bytes", (double)sum.in_total);
    cJSON_AddNumberToObject(j, "output_bytes", (double)sum.out_total);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddNumberToObject(j, "input_gb_per_s", el > 0 ? (double)sum.in_total / el / 1e9 : 0);
    cJSON_AddNumberToObject(j, "output_gb_per_s", el > 0 ? (double)sum.out_total / el / 1e9 : 0);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "memory_budget_bytes", (double)o.memory);
    cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)dsv3_peak_rss());
    char *s = cJSON_Print(j);
    puts(s);
    free(s);
    cJSON_Delete(j);
  } else if (!o.quiet) {
    char a[32], b[32], r[32];
    fprintf(stderr, "%s: %zu files, %zu tensors (%zu dequantised, %zu quantised, %zu copied): %s -> %s in %.2f s, peak RSS %s\n",
            PROG, nf, sum.tensors_out, sum.dequantised, sum.quantised, sum.copied,
            dsv3_human_bytes(sum.in_total, a, sizeof a), dsv3_human_bytes(sum.out_total, b, sizeof b), el,
            dsv3_human_bytes(dsv3_peak_rss(), r, sizeof r));
  }
  for (size_t i = 0; i < nf; i++) dsv3_plan_file_free(&pf[i]);
  free(pf);
  cJSON_Delete(sum.weight_map);
  dsv3_ckpt_close(ck);
  dsv3_ckpt_close(o.ref);
  free(pack_dir);
  free(state);
  return 0;
fail:
  dsv3_error_print(PROG);
  dsv3_input_hasher_cancel(ih);
  for (size_t i = 0; i < nf; i++) dsv3_plan_file_free(&pf[i]);
  free(pf);
  cJSON_Delete(sum.weight_map);
  dsv3_ckpt_close(ck);
  dsv3_ckpt_close(o.ref);
  free(state);
  return 1;
}
