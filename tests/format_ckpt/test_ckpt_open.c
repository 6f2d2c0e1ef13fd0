/* checkpoint.c: models/dsv3-tiny in the HF layout, lookups of every tensor, the index check
 * clean and then catching each injected inconsistency (in copies with an edited index), the
 * runtime layout on synthetic model{r}-mp{n} directories written with the writer, a single
 * file, a directory without index, and the refusals. */
#include <cjson/cJSON.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "util.h"

#define IDX "model.safetensors.index.json"
#define S1 "model-00001-of-00003.safetensors"
#define S2 "model-00002-of-00003.safetensors"
#define S3 "model-00003-of-00003.safetensors"

static const char *tiny;
static char tmp[256];

typedef struct {
  int n;
  char lines[64][1100];
} problems;

static void on_problem(void *ctx, const char *line) {
  problems *p = ctx;
  if (p->n < 64) snprintf(p->lines[p->n], sizeof p->lines[0], "%s", line);
  p->n++;
}

static int run(const char *fmt, const char *a) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, fmt, a, a, a);
  return system(cmd);
}

/* A fresh copy of the tiny model in tmp/m; returns its path. */
static const char *fresh_copy(void) {
  static char dir[512];
  snprintf(dir, sizeof dir, "%s/m", tmp);
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s' && cp '%s'/* '%s'/", dir, dir, tiny, dir);
  if (system(cmd) != 0) {
    fprintf(stderr, "cannot copy the tiny model\n");
    exit(77);
  }
  return dir;
}

static cJSON *load_index(const char *dir) {
  char *p = dsv3_path_join(dir, IDX), *buf;
  size_t n;
  cJSON *j = dsv3_read_file(p, &buf, &n, 1u << 26) == 0 ? cJSON_ParseWithLength(buf, n) : NULL;
  if (j) free(buf);
  free(p);
  return j;
}

static void save_index(const char *dir, cJSON *j) {
  char *p = dsv3_path_join(dir, IDX), *txt = cJSON_Print(j);
  FILE *f = fopen(p, "w");
  if (f) {
    fputs(txt, f);
    fclose(f);
  }
  free(txt);
  free(p);
}

/* Open dir (must succeed), run the index check; returns the problem count. */
static int check_dir(const char *dir, problems *p) {
  memset(p, 0, sizeof *p);
  dsv3_ckpt *ck;
  if (dsv3_ckpt_open(dir, &ck) != 0) {
    CHECK(0, "open %s: %s", dir, dsv3_error());
    return -1;
  }
  int n = dsv3_ckpt_check_index(ck, on_problem, p);
  CHECK(n == p->n, "returned %d problems, reported %d", n, p->n);
  dsv3_ckpt_close(ck);
  return n;
}

static int has_line(const problems *p, const char *a, const char *b, const char *c) {
  for (int i = 0; i < p->n && i < 64; i++)
    if (strstr(p->lines[i], a) && (!b || strstr(p->lines[i], b)) && (!c || strstr(p->lines[i], c))) return 1;
  return 0;
}

static void dump(const problems *p) {
  for (int i = 0; i < p->n && i < 64; i++) fprintf(stderr, "  problem: %s\n", p->lines[i]);
}
/* CHECK, listing the problems of `p` when it fails */
#define CHECKP(cond, ...)                 \
  do {                                    \
    int failed_before = check_failures;   \
    CHECK(cond, __VA_ARGS__);             \
    if (check_failures > failed_before) dump(&p); \
  } while (0)

/* Write a file of F32 tensors named names[i], each [2, 3] filled with base + i. */
static int write_st(const char *path, const char *const *names, int n, float base) {
  dsv3_tensor_src ts[8];
  float v[8][6];
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < 6; k++) v[i][k] = base + (float)i + 0.001f * (float)k;
    ts[i] = (dsv3_tensor_src){names[i], DSV3_F32, 2, {2, 3}, v[i]};
  }
  return dsv3_st_write_file(path, ts, (size_t)n, NULL, 0);
}

static void tiny_hf(void) {
  dsv3_ckpt *ck;
  CHECK(dsv3_ckpt_open(tiny, &ck) == 0, "open tiny: %s", dsv3_error());
  if (!ck) return;
  CHECK(dsv3_ckpt_layout(ck) == DSV3_LAYOUT_HF && !strcmp(dsv3_ckpt_layout_name(DSV3_LAYOUT_HF), "hf"), "layout");
  CHECK(dsv3_ckpt_mp(ck) == 1 && dsv3_ckpt_nfiles(ck) == 3 && dsv3_ckpt_count(ck) == 309, "mp %d files %zu tensors %zu",
        dsv3_ckpt_mp(ck), dsv3_ckpt_nfiles(ck), dsv3_ckpt_count(ck));
  CHECK(!strcmp(dsv3_ckpt_file_name(ck, 0), S1) && !strcmp(dsv3_ckpt_file_name(ck, 1), S2) &&
            !strcmp(dsv3_ckpt_file_name(ck, 2), S3), "files sorted by name");
  CHECK(dsv3_ckpt_file_rank(ck, 0) == -1 && !strcmp(dsv3_ckpt_path(ck), tiny), "rank/path");
  const dsv3_config *c = dsv3_ckpt_config(ck);
  CHECK(c && c->num_hidden_layers == 4 && c->n_routed_experts == 8, "config.json read");
  CHECK((int64_t)dsv3_ckpt_total_bytes(ck) == dsv3_ckpt_index_total_size(ck) &&
            dsv3_ckpt_index_total_size(ck) == 31431328, "total bytes %llu vs index %lld",
        (unsigned long long)dsv3_ckpt_total_bytes(ck), (long long)dsv3_ckpt_index_total_size(ck));
  /* every tensor by enumeration is found by name, in the file the index names */
  cJSON *idx = load_index(tiny);
  const cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");
  CHECK(cJSON_GetArraySize(wm) == 309, "weight_map size");
  size_t bad = 0, prev_file = 0;
  for (size_t i = 0; i < dsv3_ckpt_count(ck); i++) {
    size_t fi = 99, fj = 99;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &fi);
    const dsv3_tensor *u = t ? dsv3_ckpt_find(ck, t->name, -1, &fj) : NULL;
    const cJSON *w = t ? cJSON_GetObjectItem(wm, t->name) : NULL;
    if (!t || u != t || fi != fj || fi < prev_file || !cJSON_IsString(w) ||
        strcmp(w->valuestring, dsv3_ckpt_file_name(ck, fi)) != 0 || dsv3_st_find(dsv3_ckpt_file(ck, fi), t->name) != t)
      bad++;
    prev_file = fi;
  }
  CHECK(bad == 0, "%zu tensors not found where the index says", bad);
  CHECK(dsv3_ckpt_tensor(ck, 309, NULL) == NULL, "past the end");
  CHECK(dsv3_ckpt_find(ck, "model.layers.0.nope.weight", -1, NULL) == NULL && dsv3_ckpt_find(ck, "", -1, NULL) == NULL,
        "absent name");
  const dsv3_tensor *t = dsv3_ckpt_find(ck, "model.layers.4.eh_proj.weight", 0, NULL);
  CHECK(t && t->ndim == 2 && t->shape[0] == 512 && t->shape[1] == 1024, "MTP eh_proj (rank ignored outside runtime)");
  problems p;
  memset(&p, 0, sizeof p);
  CHECKP(dsv3_ckpt_check_index(ck, on_problem, &p) == 0 && p.n == 0, "index clean: %d problems", p.n);
  cJSON_Delete(idx);
  dsv3_ckpt_close(ck);
}

static void injected(void) {
  problems p;
  const char *d;
  cJSON *idx;
  dsv3_ckpt *ck;
  const char *victim = "model.layers.1.self_attn.o_proj.weight"; /* in S1 */

  /* 0. the copy itself is clean */
  d = fresh_copy();
  CHECKP(check_dir(d, &p) == 0, "copy clean");

  /* 1. the index names a shard that does not exist: open fails naming it */
  idx = load_index(d);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(idx, "weight_map"), victim,
                            cJSON_CreateString("model-00009-of-00003.safetensors"));
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "model-00009-of-00003.safetensors") &&
            strstr(dsv3_error(), "missing") && strstr(dsv3_error(), d),
        "missing shard: %s", dsv3_error());

  /* 1b. a shard deleted */
  d = fresh_copy();
  run("rm '%s'/" S2, d);
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), S2) && strstr(dsv3_error(), "missing"),
        "deleted shard: %s", dsv3_error());

  /* 1c. a shard that is not a safetensors file: open fails naming it */
  d = fresh_copy();
  run("truncate -s 100 '%s'/" S3, d);
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), S3), "truncated shard: %s", dsv3_error());

  /* 2. tensor in the index under another (existing) file than the one holding it */
  d = fresh_copy();
  idx = load_index(d);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(idx, "weight_map"), victim, cJSON_CreateString(S3));
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECKP(check_dir(d, &p) == 1 && has_line(&p, victim, "weight_map says " S3, "it is in " S1), "wrong file: %d", p.n);

  /* 3. tensor in the index and in no file */
  d = fresh_copy();
  idx = load_index(d);
  cJSON_AddStringToObject(cJSON_GetObjectItem(idx, "weight_map"), "model.layers.9.ghost.weight", S2);
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECKP(check_dir(d, &p) == 1 && has_line(&p, IDX ": tensor model.layers.9.ghost.weight", "in no shard", S2),
        "ghost: %d", p.n);

  /* 4. tensor in a file but not in the index */
  d = fresh_copy();
  idx = load_index(d);
  cJSON_DeleteItemFromObject(cJSON_GetObjectItem(idx, "weight_map"), victim);
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECKP(check_dir(d, &p) == 1 && has_line(&p, S1 ": tensor ", victim, "not in " IDX), "unlisted: %d", p.n);

  /* 5. total_size wrong, and not a number */
  d = fresh_copy();
  idx = load_index(d);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(idx, "metadata"), "total_size", cJSON_CreateNumber(31431329));
  save_index(d, idx);
  CHECKP(check_dir(d, &p) == 1 && has_line(&p, IDX ": metadata.total_size 31431329", "31431328", NULL), "total_size: %d",
        p.n);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(idx, "metadata"), "total_size", cJSON_CreateString("big"));
  save_index(d, idx);
  CHECKP(check_dir(d, &p) == 1 && has_line(&p, "total_size", "not", NULL), "total_size string: %d", p.n);
  cJSON_DeleteItemFromObject(idx, "metadata");
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECKP(check_dir(d, &p) == 0, "no metadata is not a problem");
  CHECK(dsv3_ckpt_open(d, &ck) == 0 && dsv3_ckpt_index_total_size(ck) == -1, "no total_size: -1");
  dsv3_ckpt_close(ck);

  /* 6. all at once: each reported, nothing else */
  d = fresh_copy();
  idx = load_index(d);
  cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");
  cJSON_ReplaceItemInObject(wm, victim, cJSON_CreateString(S2));
  cJSON_DeleteItemFromObject(wm, "lm_head.weight");
  cJSON_AddStringToObject(wm, "ghost", S1);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(idx, "metadata"), "total_size", cJSON_CreateNumber(1));
  save_index(d, idx);
  cJSON_Delete(idx);
  CHECKP(check_dir(d, &p) == 4 && has_line(&p, victim, "says " S2, NULL) && has_line(&p, "lm_head.weight", "not in", NULL) &&
            has_line(&p, "ghost", "no shard", NULL) && has_line(&p, "total_size 1 ", NULL, NULL),
        "four problems: %d", p.n);

  /* 7. a shard the index does not name is still listed; its tensors are reported */
  d = fresh_copy();
  char path[1024];
  snprintf(path, sizeof path, "%s/extra.safetensors", d);
  const char *extra[] = {"extra.a", "extra.b"};
  CHECK(write_st(path, extra, 2, 1.0f) == 0, "write extra: %s", dsv3_error());
  CHECKP(check_dir(d, &p) == 3 && has_line(&p, "extra.safetensors: tensor extra.a: not in", NULL, NULL) &&
            has_line(&p, "extra.safetensors: tensor extra.b", NULL, NULL) && has_line(&p, "total_size", NULL, NULL),
        "extra shard: %d", p.n);
  CHECK(dsv3_ckpt_open(d, &ck) == 0 && dsv3_ckpt_nfiles(ck) == 4 && dsv3_ckpt_count(ck) == 311 &&
            !strcmp(dsv3_ckpt_file_name(ck, 0), "extra.safetensors") && dsv3_ckpt_find(ck, "extra.b", -1, NULL),
        "extra shard listed");
  dsv3_ckpt_close(ck);

  /* 8. a second copy of an indexed tensor in another file: lookups follow the index, the copy
   *    is reported */
  const char *dup[] = {"model.norm.weight"};
  snprintf(path, sizeof path, "%s/zz-copy.safetensors", d);
  CHECK(write_st(path, dup, 1, 5.0f) == 0, "write copy");
  CHECK(dsv3_ckpt_open(d, &ck) == 0, "open with duplicate: %s", dsv3_error());
  if (ck) {
    size_t fi;
    const dsv3_tensor *t = dsv3_ckpt_find(ck, "model.norm.weight", -1, &fi);
    cJSON *ix = load_index(d);
    const char *want = cJSON_GetObjectItem(cJSON_GetObjectItem(ix, "weight_map"), "model.norm.weight")->valuestring;
    CHECK(t && t->dtype == DSV3_BF16 && !strcmp(dsv3_ckpt_file_name(ck, fi), want), "find follows the index (%s)",
          t ? dsv3_ckpt_file_name(ck, fi) : "none");
    cJSON_Delete(ix);
    dsv3_ckpt_close(ck);
  }
  CHECKP(check_dir(d, &p) == 4 && has_line(&p, "zz-copy.safetensors: tensor model.norm.weight: also in", NULL, NULL),
        "duplicate reported: %d", p.n);
  /* ... but a duplicate of a name the index does not know cannot be resolved: refused */
  snprintf(path, sizeof path, "%s/zz-copy2.safetensors", d);
  CHECK(write_st(path, extra, 1, 7.0f) == 0, "write copy 2");
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "extra.a") && strstr(dsv3_error(), "also in"),
        "unresolvable duplicate: %s", dsv3_error());

  /* 9. a hostile index */
  d = fresh_copy();
  static const char *const hostile[][2] = {
      {"{\"weight_map\": {\"x\": \"../etc/passwd\"}}", "plain file name"},
      {"{\"weight_map\": {\"x\": \"/etc/passwd\"}}", "plain file name"},
      {"{\"weight_map\": {\"x\": 5}}", "plain file name"},
      {"{\"weight_mop\": {}}", "weight_map"},
      {"{\"weight_map\": [1]}", "weight_map"},
      {"{\"weight_map\": {\"x\": \"" S1 "\", \"x\": \"" S1 "\"}}", "twice"},
      {"[]", IDX},
      {"{\"weight_map\": {", IDX},
  };
  for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
    snprintf(path, sizeof path, "%s/" IDX, d);
    FILE *f = fopen(path, "w");
    if (!f) continue;
    fputs(hostile[i][0], f);
    fclose(f);
    CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), hostile[i][1]) && !strchr(dsv3_error(), '\n'),
          "hostile index %s: %s", hostile[i][0], dsv3_error());
  }
  /* mutated indexes: opened (then checked) or refused with one line, never a crash or hang */
  {
    char *orig;
    size_t n;
    char *ip = dsv3_path_join(tiny, IDX);
    if (dsv3_read_file(ip, &orig, &n, 1 << 24) == 0) {
      uint64_t x = 777;
      int refused = 0, opened = 0, bad_err = 0;
      char *m = malloc(n + 1);
      for (int it = 0; it < 150; it++) {
        memcpy(m, orig, n + 1);
        for (int k = 0; k < 1 + it % 3; k++) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          static const char pool[] = "0123456789-\"{}[]:,./ ";
          m[(x >> 8) % n] = pool[(x >> 40) % (sizeof pool - 1)];
        }
        snprintf(path, sizeof path, "%s/" IDX, d);
        FILE *mf = fopen(path, "w");
        if (!mf) break;
        fwrite(m, 1, it % 5 == 0 ? (size_t)((x >> 20) % n) : n, mf);
        fclose(mf);
        if (dsv3_ckpt_open(d, &ck) == 0) {
          opened++;
          dsv3_ckpt_check_index(ck, NULL, NULL);
          dsv3_ckpt_close(ck);
        } else {
          refused++;
          bad_err += strchr(dsv3_error(), '\n') != NULL || !strstr(dsv3_error(), d);
        }
      }
      CHECK(refused > 0 && opened > 0 && bad_err == 0, "index mutations: %d opened, %d refused, %d bad errors",
            opened, refused, bad_err);
      free(m);
      free(orig);
    }
    free(ip);
  }
  /* an empty weight_map is an index of nothing: the shards' tensors are all unlisted */
  snprintf(path, sizeof path, "%s/" IDX, d);
  FILE *f = fopen(path, "w");
  if (f) {
    fputs("{\"weight_map\": {}}", f);
    fclose(f);
  }
  CHECKP(check_dir(d, &p) == 309, "empty weight_map: %d problems", p.n);
  /* a bad config.json fails the open, naming it */
  d = fresh_copy();
  run("echo '{\"hidden_size\": 0}' > '%s'/config.json", d);
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "config.json") && strstr(dsv3_error(), "hidden_size"),
        "bad config: %s", dsv3_error());
  run("rm '%s'/config.json", d);
  CHECK(dsv3_ckpt_open(d, &ck) == 0 && dsv3_ckpt_config(ck) == NULL, "no config.json: NULL");
  dsv3_ckpt_close(ck);
}

static void runtime_and_single(void) {
  char dir[512], path[1024];
  dsv3_ckpt *ck;
  snprintf(dir, sizeof dir, "%s/rt", tmp);
  mkdir(dir, 0755);
  const char *names[] = {"embed.weight", "norm.weight"};
  for (int r = 0; r < 2; r++) {
    snprintf(path, sizeof path, "%s/model%d-mp2.safetensors", dir, r);
    CHECK(write_st(path, names, 2, 10.0f * (float)r) == 0, "write rank %d: %s", r, dsv3_error());
  }
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  FILE *f = fopen(path, "w");
  if (f) fclose(f);
  CHECK(dsv3_ckpt_open(dir, &ck) == 0, "open mp2: %s", dsv3_error());
  if (ck) {
    CHECK(dsv3_ckpt_layout(ck) == DSV3_LAYOUT_RUNTIME && dsv3_ckpt_mp(ck) == 2 && dsv3_ckpt_nfiles(ck) == 2 &&
              dsv3_ckpt_count(ck) == 4 && dsv3_ckpt_config(ck) == NULL, "runtime layout mp 2");
    CHECK(dsv3_ckpt_file_rank(ck, 0) == 0 && dsv3_ckpt_file_rank(ck, 1) == 1 &&
              !strcmp(dsv3_ckpt_file_name(ck, 1), "model1-mp2.safetensors"), "ranks");
    size_t fi;
    const dsv3_tensor *t0 = dsv3_ckpt_find(ck, "embed.weight", 0, &fi);
    CHECK(t0 && fi == 0 && ((const float *)t0->data)[0] == 0.0f, "rank 0 copy");
    const dsv3_tensor *t1 = dsv3_ckpt_find(ck, "embed.weight", 1, &fi);
    CHECK(t1 && fi == 1 && ((const float *)t1->data)[0] == 10.0f, "rank 1 copy");
    CHECK(dsv3_ckpt_find(ck, "norm.weight", -1, &fi) && fi == 0, "rank -1: first");
    CHECK(dsv3_ckpt_find(ck, "embed.weight", 2, NULL) == NULL, "no rank 2");
    problems p = {0};
    CHECK(dsv3_ckpt_check_index(ck, on_problem, &p) == 0, "no index: nothing to check");
    dsv3_ckpt_close(ck);
  }
  /* config.json beside the ranks is read */
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", tiny, dir);
  CHECK(system(cmd) == 0, "copy config");
  CHECK(dsv3_ckpt_open(dir, &ck) == 0 && dsv3_ckpt_config(ck) && dsv3_ckpt_config(ck)->hidden_size == 512,
        "runtime config.json");
  dsv3_ckpt_close(ck);
  /* a single rank file opened directly is a plain single file (mp is a directory property) */
  snprintf(path, sizeof path, "%s/model1-mp2.safetensors", dir);
  CHECK(dsv3_ckpt_open(path, &ck) == 0 && dsv3_ckpt_layout(ck) == DSV3_LAYOUT_SINGLE && dsv3_ckpt_nfiles(ck) == 1 &&
            dsv3_ckpt_count(ck) == 2 && !strcmp(dsv3_ckpt_file_name(ck, 0), "model1-mp2.safetensors"),
        "single rank file");
  dsv3_ckpt_close(ck);
  /* a missing rank */
  snprintf(path, sizeof path, "%s/model1-mp2.safetensors", dir);
  unlink(path);
  CHECK(dsv3_ckpt_open(dir, &ck) == -1 && strstr(dsv3_error(), "model1-mp2.safetensors is missing") &&
            strstr(dsv3_error(), dir), "missing rank: %s", dsv3_error());
  /* two degrees in one directory */
  CHECK(write_st(path, names, 2, 10.0f) == 0, "rewrite rank 1");
  snprintf(path, sizeof path, "%s/model0-mp4.safetensors", dir);
  CHECK(write_st(path, names, 2, 0.0f) == 0, "write mp4 rank");
  CHECK(dsv3_ckpt_open(dir, &ck) == -1 && strstr(dsv3_error(), "different degrees"), "mixed mp: %s", dsv3_error());
  unlink(path);
  /* ranks ordered numerically: model10 after model9 (mp 12) */
  snprintf(dir, sizeof dir, "%s/rt12", tmp);
  mkdir(dir, 0755);
  for (int r = 0; r < 12; r++) {
    snprintf(path, sizeof path, "%s/model%d-mp12.safetensors", dir, r);
    write_st(path, names, 1, (float)r);
  }
  CHECK(dsv3_ckpt_open(dir, &ck) == 0 && dsv3_ckpt_mp(ck) == 12 && dsv3_ckpt_nfiles(ck) == 12, "mp12: %s",
        dsv3_error());
  if (ck) {
    int ok = 1;
    for (size_t i = 0; i < 12; i++) {
      size_t fi;
      const dsv3_tensor *t = dsv3_ckpt_find(ck, "embed.weight", (int)i, &fi);
      ok &= dsv3_ckpt_file_rank(ck, i) == (int)i && t && fi == i && ((const float *)t->data)[0] == (float)i;
    }
    CHECK(ok, "mp12 rank order");
    dsv3_ckpt_close(ck);
  }
  /* a single file, and a directory of shards without index */
  snprintf(path, sizeof path, "%s/" S2, tiny);
  CHECK(dsv3_ckpt_open(path, &ck) == 0 && dsv3_ckpt_layout(ck) == DSV3_LAYOUT_SINGLE && dsv3_ckpt_nfiles(ck) == 1 &&
            dsv3_ckpt_config(ck) && dsv3_ckpt_index_total_size(ck) == -1, "single file: %s", dsv3_error());
  dsv3_ckpt_close(ck);
  const char *d = fresh_copy();
  run("rm '%s'/" IDX, d);
  CHECK(dsv3_ckpt_open(d, &ck) == 0 && dsv3_ckpt_layout(ck) == DSV3_LAYOUT_SINGLE && dsv3_ckpt_nfiles(ck) == 3 &&
            dsv3_ckpt_count(ck) == 309 && dsv3_ckpt_find(ck, "lm_head.weight", -1, NULL),
        "shards without index: %s", dsv3_error());
  dsv3_ckpt_close(ck);
  snprintf(path, sizeof path, "%s/zz.safetensors", d);
  const char *dup[] = {"lm_head.weight"};
  write_st(path, dup, 1, 1.0f);
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "lm_head.weight") && strstr(dsv3_error(), "also in"),
        "duplicate without index: %s", dsv3_error());
  /* things that are not regular files: refused, never opened (a FIFO would block) */
  d = fresh_copy();
  snprintf(path, sizeof path, "%s/pipe.safetensors", d);
  CHECK(mkfifo(path, 0600) == 0, "mkfifo");
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "pipe.safetensors") && strstr(dsv3_error(), "regular"),
        "FIFO shard: %s", dsv3_error());
  CHECK(dsv3_ckpt_open(path, &ck) == -1 && strstr(dsv3_error(), "regular"), "FIFO path: %s", dsv3_error());
  unlink(path);
  CHECK(mkdir(path, 0755) == 0, "mkdir x.safetensors");
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "pipe.safetensors") && strstr(dsv3_error(), "regular"),
        "directory named .safetensors: %s", dsv3_error());
  d = fresh_copy();
  snprintf(path, sizeof path, "%s/config.json", d);
  unlink(path);
  CHECK(mkfifo(path, 0600) == 0, "mkfifo config");
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), "config.json") && strstr(dsv3_error(), "regular"),
        "FIFO config.json: %s", dsv3_error());
  d = fresh_copy();
  snprintf(path, sizeof path, "%s/" IDX, d);
  unlink(path);
  CHECK(mkfifo(path, 0600) == 0, "mkfifo index");
  CHECK(dsv3_ckpt_open(d, &ck) == -1 && strstr(dsv3_error(), IDX) && strstr(dsv3_error(), "regular"),
        "FIFO index: %s", dsv3_error());
  /* nothing there */
  snprintf(dir, sizeof dir, "%s/empty", tmp);
  mkdir(dir, 0755);
  CHECK(dsv3_ckpt_open(dir, &ck) == -1 && strstr(dsv3_error(), dir), "empty dir: %s", dsv3_error());
  snprintf(path, sizeof path, "%s/nonexistent", tmp);
  CHECK(dsv3_ckpt_open(path, &ck) == -1 && strstr(dsv3_error(), "nonexistent"), "no such path: %s", dsv3_error());
}

int main(void) {
  tiny = check_env("DSV3_TINY");
  const char *td = getenv("TMPDIR");
  snprintf(tmp, sizeof tmp, "%s/dsv3-ckpt-XXXXXX", td && *td ? td : "/tmp");
  if (!mkdtemp(tmp)) return 77;
  alarm(120); /* a hang (e.g. opening a FIFO) fails the test instead of stalling ctest */
  tiny_hf();
  injected();
  runtime_and_single();
  run("rm -rf '%s'", tmp);
  return check_done("ckpt_open");
}
