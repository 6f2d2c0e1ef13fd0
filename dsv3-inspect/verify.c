/* dsv3-inspect verify - check a checkpoint against whatever hashes it carries:
 *  - dsv3-manifest.json (dsv3-cast / dsv3-convert): per-file SHA-256 and size, per-tensor
 *    XXH3-128 (a bad file is searched for the bad tensors);
 *  - the etags `huggingface-cli download --local-dir` records in
 *    .cache/huggingface/download/NAME.metadata (the SHA-256 of LFS files);
 *  - a sha256sum-format list (--sha256 FILE).
 * Every distinct file is hashed once, files in parallel.  Exit 1 on any mismatch. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inspect.h"
#include "manifest.h"
#include "safetensors.h"
#include "util.h"

typedef struct {
  char *name;     /* relative to the checkpoint directory */
  uint8_t want[32];
  const char *source;
  int have_size;
  uint64_t size;
  const dsv3_manifest_file *mf; /* tensors, when from the manifest */
} expect_t;

typedef struct {
  char *name;
  uint8_t got[32];
  int err; /* cannot read */
  char errmsg[512];
  uint64_t size;
} hashed_t;

typedef struct {
  const char *dir;
  hashed_t *h;
  dsv3_progress *pg;
} vctx;

static int hash_task(void *vc, size_t i, int thread) {
  (void)thread;
  vctx *c = vc;
  char *p = dsv3_path_join(c->dir, c->h[i].name);
  struct stat st;
  if (stat(p, &st) != 0) {
    c->h[i].err = 1;
    snprintf(c->h[i].errmsg, sizeof c->h[i].errmsg, "missing");
  } else {
    c->h[i].size = (uint64_t)st.st_size;
    if (dsv3_sha256_file(p, c->h[i].got, c->pg) != 0) {
      c->h[i].err = 1;
      snprintf(c->h[i].errmsg, sizeof c->h[i].errmsg, "%s", dsv3_error());
    }
  }
  free(p);
  return 0;
}

static void add_expect(expect_t **e, size_t *n, const char *name, const uint8_t *want, const char *src) {
  *e = dsv3_xrealloc(*e, (*n + 1) * sizeof **e);
  expect_t *x = &(*e)[(*n)++];
  memset(x, 0, sizeof *x);
  x->name = dsv3_xstrdup(name);
  memcpy(x->want, want, 32);
  x->source = src;
}

static int safe_rel(const char *n) { return n[0] && n[0] != '/' && !strstr(n, ".."); }

/* .cache/huggingface/download/ NAME.metadata: commit hash, etag, timestamp (one per line). */
static void scan_hf(const char *dir, const char *sub, expect_t **e, size_t *n) {
  char *base = dsv3_path_join(dir, ".cache/huggingface/download");
  char *d = sub[0] ? dsv3_path_join(base, sub) : dsv3_xstrdup(base);
  DIR *dh = opendir(d);
  if (dh) {
    struct dirent *de;
    while ((de = readdir(dh))) {
      if (de->d_name[0] == '.') continue;
      char *rel = sub[0] ? dsv3_path_join(sub, de->d_name) : dsv3_xstrdup(de->d_name);
      char *full = dsv3_path_join(base, rel);
      struct stat st;
      if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
        scan_hf(dir, rel, e, n);
      } else {
        size_t l = strlen(rel);
        char *buf;
        size_t bl;
        if (l > 9 && !strcmp(rel + l - 9, ".metadata") && dsv3_read_file(full, &buf, &bl, 1 << 16) == 0) {
          char *line2 = strchr(buf, '\n');
          if (line2) {
            line2++;
            line2[strcspn(line2, "\r\n")] = 0;
            uint8_t h[32];
            rel[l - 9] = 0;
            if (dsv3_unhex(line2, h, 32) == 0 && safe_rel(rel)) add_expect(e, n, rel, h, "huggingface etag");
          }
          free(buf);
        }
      }
      free(rel);
      free(full);
    }
    closedir(dh);
  }
  free(d);
  free(base);
}

int dsv3i_cmd_verify(int argc, char **argv);
int dsv3i_cmd_verify(int argc, char **argv) {
  static const char *PROG = "dsv3-inspect verify";
  enum { O_SHA = 256, O_JSON, O_THREADS };
  static const struct option lo[] = {{"sha256", required_argument, 0, O_SHA}, {"json", no_argument, 0, O_JSON},
                                     {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
                                     {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *shafile = NULL;
  int json = 0, quiet = 0, threads = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_SHA: shafile = optarg; break;
    case O_JSON: json = 1; break;
    case O_THREADS:
      if ((threads = dsv3i_parse_threads(optarg)) < 0)
        dsv3_die(PROG, 2, "--threads needs a number from 1 to 4096 (see --help)");
      break;
    case 'q': quiet = 1; break;
    case 'h':
      printf("usage: dsv3-inspect verify [--sha256 LIST] [--json] [--threads N] CKPT\n"
             "Verify every file of CKPT against dsv3-manifest.json (SHA-256 per file, XXH3-128 per tensor),\n"
             "the Hugging Face download etags under .cache/huggingface/download, and a sha256sum list.\n"
             "Exit 1 naming each bad file (and tensor, with a manifest).\n");
      return 0;
    default: dsv3_die_badopt(PROG, argc, argv);
    }
  }
  if (optind != argc - 1) dsv3_die(PROG, 2, "needs one checkpoint directory (see --help)");
  const char *dir = argv[optind];
  if (!dsv3_is_dir(dir)) dsv3_die(PROG, 1, "%s: not a checkpoint directory", dir);
  expect_t *E = NULL;
  size_t ne = 0;
  dsv3_manifest man = {0};
  int have_man = 0;
  char *mp = dsv3_path_join(dir, DSV3_MANIFEST_NAME);
  if (dsv3_file_exists(mp)) {
    if (dsv3_manifest_load(mp, &man) != 0) {
      dsv3_error_print(PROG);
      free(mp);
      return 1;
    }
    have_man = 1;
    for (size_t i = 0; i < man.nfiles; i++) {
      add_expect(&E, &ne, man.files[i].name, man.files[i].sha256, DSV3_MANIFEST_NAME);
      E[ne - 1].have_size = 1;
      E[ne - 1].size = man.files[i].size;
      E[ne - 1].mf = &man.files[i];
    }
  }
  free(mp);
  scan_hf(dir, "", &E, &ne);
  if (shafile) {
    FILE *f = fopen(shafile, "r");
    if (!f) dsv3_die(PROG, 1, "%s: cannot open", shafile);
    char line[4096];
    int ln = 0;
    while (fgets(line, sizeof line, f)) {
      ln++;
      line[strcspn(line, "\r\n")] = 0;
      if (!line[0]) continue;
      uint8_t h[32];
      char hex[65];
      memcpy(hex, line, 64);
      hex[64] = 0;
      const char *name = line + 64;
      while (*name == ' ' || *name == '*') name++;
      if (strlen(line) < 66 || dsv3_unhex(hex, h, 32) != 0 || !safe_rel(name))
        dsv3_die(PROG, 1, "%s: line %d is not \"SHA256  NAME\" with a relative name", shafile, ln);
      add_expect(&E, &ne, name, h, "sha256 list");
    }
    fclose(f);
  }
  if (!ne) dsv3_die(PROG, 1, "%s: nothing to verify: no %s, no .cache/huggingface etags, no --sha256 list", dir, DSV3_MANIFEST_NAME);
  /* distinct files */
  hashed_t *H = NULL;
  size_t nh = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < ne; i++) {
    size_t k;
    for (k = 0; k < nh; k++)
      if (!strcmp(H[k].name, E[i].name)) break;
    if (k < nh) continue;
    H = dsv3_xrealloc(H, (nh + 1) * sizeof *H);
    memset(&H[nh], 0, sizeof *H);
    H[nh].name = E[i].name;
    char *p = dsv3_path_join(dir, E[i].name);
    struct stat st;
    if (stat(p, &st) == 0) total += (uint64_t)st.st_size;
    free(p);
    nh++;
  }
  vctx ctx = {dir, H, dsv3_progress_new("verify", total, quiet || json)};
  double t0 = dsv3_now();
  dsv3_parallel_for(nh, threads, hash_task, &ctx);
  double el = dsv3_now() - t0;
  dsv3_progress_done(ctx.pg);
  int bad = 0;
  cJSON *arr = json ? cJSON_CreateArray() : NULL;
  for (size_t i = 0; i < ne; i++) {
    hashed_t *h = NULL;
    for (size_t k = 0; k < nh; k++)
      if (!strcmp(H[k].name, E[i].name)) h = &H[k];
    char why[1024] = "";
    if (h->err) snprintf(why, sizeof why, "%s", h->errmsg);
    else if (E[i].have_size && h->size != E[i].size)
      snprintf(why, sizeof why, "size %llu, expected %llu", (unsigned long long)h->size, (unsigned long long)E[i].size);
    else if (memcmp(h->got, E[i].want, 32)) snprintf(why, sizeof why, "SHA-256 mismatch");
    cJSON *bad_t = NULL;
    if (why[0] && E[i].mf && !h->err) {
      /* which tensors? */
      char *p = dsv3_path_join(dir, E[i].name);
      dsv3_st *st;
      bad_t = cJSON_CreateArray();
      if (dsv3_st_open(p, &st) == 0) {
        for (size_t k = 0; k < E[i].mf->ntensors; k++) {
          const dsv3_manifest_tensor *mt = &E[i].mf->t[k];
          const dsv3_tensor *t = dsv3_st_find(st, mt->name);
          uint8_t x[16];
          if (t) dsv3_xxh3_128(t->data, t->nbytes, x);
          if (!t || memcmp(x, mt->xxh3, 16)) cJSON_AddItemToArray(bad_t, cJSON_CreateString(mt->name));
        }
        dsv3_st_close(st);
      } else {
        size_t l = strlen(why);
        snprintf(why + l, sizeof why - l, " (%s)", dsv3_error());
      }
      free(p);
    }
    if (why[0]) bad++;
    if (arr) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "file", E[i].name);
      cJSON_AddStringToObject(e, "source", E[i].source);
      cJSON_AddBoolToObject(e, "ok", !why[0]);
      if (why[0]) cJSON_AddStringToObject(e, "error", why);
      if (bad_t) cJSON_AddItemToObject(e, "bad_tensors", bad_t);
      cJSON_AddItemToArray(arr, e);
    } else {
      if (why[0]) {
        printf("BAD  %s: %s (%s)\n", E[i].name, why, E[i].source);
        for (const cJSON *b = bad_t ? bad_t->child : NULL; b; b = b->next)
          printf("BAD  %s: tensor %s: XXH3-128 mismatch\n", E[i].name, b->valuestring);
      } else if (!quiet) {
        printf("ok   %s (%s)\n", E[i].name, E[i].source);
      }
      cJSON_Delete(bad_t);
    }
  }
  if (arr) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", bad == 0);
    cJSON_AddNumberToObject(j, "checks", (double)ne);
    cJSON_AddNumberToObject(j, "bad", bad);
    cJSON_AddNumberToObject(j, "bytes", (double)total);
    cJSON_AddNumberToObject(j, "seconds", el);
    cJSON_AddItemToObject(j, "files", arr);
    char *s = cJSON_Print(j);
    puts(s);
    free(s);
    cJSON_Delete(j);
  } else {
    char hb[32];
    printf("%s: %zu checks of %zu files (%s, %.2f GB/s): %d bad\n", bad ? "FAILED" : "ok", ne, nh,
           dsv3_human_bytes(total, hb, sizeof hb), el > 0 ? (double)total / el / 1e9 : 0, bad);
  }
  for (size_t i = 0; i < ne; i++) free(E[i].name);
  free(E);
  free(H);
  if (have_man) dsv3_manifest_free(&man);
  return bad ? 1 : 0;
}
