/* checkpoint.c - a checkpoint directory or file: layout detection, index, lookup. */
#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tarball.h"
#include "util.h"

/* Hash table slots carry the name's hash (high 32 bits) so that a probe rarely has to touch
 * the name itself: with ~92k names spread over memory, strcmp's cache misses dominated. */
typedef struct {
  const char *name;
  uint32_t file, tidx, hash;
} entry;
typedef struct {
  const char *name;
  uint32_t pos, hash;
} ientry;

struct dsv3_ckpt {
  char *path, *dir;
  dsv3_layout layout;
  dsv3_config cfg;
  int has_cfg, mp;
  size_t nfiles;
  dsv3_st **files;
  char **fnames;
  int *ranks;
  size_t ntotal;
  size_t *file_start; /* nfiles + 1 prefix sums */
  entry *ent;         /* open addressing table, name == NULL: empty */
  size_t ent_cap;
  /* index.json */
  int has_index;
  size_t nidx;
  char **idx_name, **idx_file;
  uint32_t *idx_fno;  /* file index (into fnames) of idx_file[i]; UINT32_MAX: no such file */
  ientry *iset;       /* open addressing: weight_map name -> its position in idx_name */
  size_t iset_cap;
  int64_t total_size;
  int total_size_bad; /* metadata.total_size present but not a non-negative integer */
  dsv3_archive *ar; /* checkpoint read from a .tar[.zst|.gz] */
};

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

void dsv3_ckpt_close(dsv3_ckpt *ck) {
  if (!ck) return;
  for (size_t i = 0; i < ck->nfiles; i++) {
    if (ck->files) dsv3_st_close(ck->files[i]);
    free(ck->fnames[i]);
  }
  for (size_t i = 0; i < ck->nidx; i++) {
    free(ck->idx_name[i]);
    free(ck->idx_file[i]);
  }
  free(ck->idx_name);
  free(ck->idx_file);
  free(ck->idx_fno);
  free(ck->iset);
  free(ck->files);
  free(ck->fnames);
  free(ck->ranks);
  free(ck->file_start);
  free(ck->ent);
  free(ck->path);
  free(ck->dir);
  if (ck->ar) {
    dsv3_archive_free(ck->ar);
    free(ck->ar);
  }
  free(ck);
}

/* 1 for a regular file (or a link to one), 0 for anything else that exists, -1 for nothing.
 * Checked before anything is opened: opening a FIFO would block forever. */
static int file_kind(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  return S_ISREG(st.st_mode) ? 1 : 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name from an index must be a plain file name in the checkpoint directory. */
static int safe_basename(const char *s) {
  return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < 256;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* model{r}-mp{n}.safetensors -> r, n */
static int parse_rt_name(const char *s, int *r, int *n) {
  int a, b, len = 0;
  if (sscanf(s, "model%d-mp%d.safetensors%n", &a, &b, &len) == 2 && (size_t)len == strlen(s) && a >= 0 &&
      b > 0 && a < b && b <= 4096) {
    *r = a;
    *n = b;
    return 0;
  }
  return -1;
}

static void add_file_name(dsv3_ckpt *ck, size_t *cap, const char *name) {
  for (size_t i = 0; i < ck->nfiles; i++)
    if (strcmp(ck->fnames[i], name) == 0) return;
  if (ck->nfiles == *cap) {
    *cap = *cap ? *cap * 2 : 16;
    ck->fnames = dsv3_xrealloc(ck->fnames, *cap * sizeof(char *));
  }
  ck->fnames[ck->nfiles++] = dsv3_xstrdup(name);
}

static int parse_index(dsv3_ckpt *ck, const char *buf, size_t n, const char *ipath, size_t *cap) {
  cJSON *root = cJSON_ParseWithLength(buf, n);
  if (!root || !cJSON_IsObject(root)) {
    dsv3_error_set("%s: not a valid JSON object", ipath);
    cJSON_Delete(root);
    return -1;
  }
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!cJSON_IsObject(wm)) {
    dsv3_error_set("%s: no \"weight_map\" object", ipath);
    cJSON_Delete(root);
    return -1;
  }
  ck->total_size = -1;
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
  if (cJSON_IsObject(md)) {
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(md, "total_size");
    if (cJSON_IsNumber(ts) && ts->valuedouble >= 0 && ts->valuedouble <= 9e18 &&
        (double)(int64_t)ts->valuedouble == ts->valuedouble)
      ck->total_size = (int64_t)ts->valuedouble;
    else if (ts)
      ck->total_size_bad = 1;
  }
  size_t cnt = (size_t)cJSON_GetArraySize(wm);
  ck->idx_name = dsv3_xcalloc(cnt ? cnt : 1, sizeof(char *));
  ck->idx_file = dsv3_xcalloc(cnt ? cnt : 1, sizeof(char *));
  for (const cJSON *e = wm->child; e; e = e->next) {
    if (!cJSON_IsString(e) || !safe_basename(e->valuestring)) {
      dsv3_error_set("%s: tensor %.200s: weight_map value is not a plain file name", ipath, e->string);
      cJSON_Delete(root);
      return -1;
    }
    ck->idx_name[ck->nidx] = dsv3_xstrdup(e->string);
    ck->idx_file[ck->nidx++] = dsv3_xstrdup(e->valuestring);
  }
  cJSON_Delete(root);
  /* the shards: the distinct weight_map values (sort + unique: 91k entries, 163 files) */
  if (ck->nidx) {
    char **files = dsv3_xmalloc(ck->nidx * sizeof(char *));
    memcpy(files, ck->idx_file, ck->nidx * sizeof(char *));
    qsort(files, ck->nidx, sizeof(char *), cmp_str);
    for (size_t i = 0; i < ck->nidx; i++)
      if (i == 0 || strcmp(files[i], files[i - 1]) != 0) add_file_name(ck, cap, files[i]);
    free(files);
  }
  /* the weight_map names as a hash set; a name twice is an error (JSON objects may repeat keys) */
  ck->iset_cap = 16;
  while (ck->iset_cap < ck->nidx * 2) ck->iset_cap <<= 1;
  ck->iset = dsv3_xcalloc(ck->iset_cap, sizeof(ientry));
  for (size_t i = 0; i < ck->nidx; i++) {
    uint64_t hv = hash_str(ck->idx_name[i]);
    size_t h = (size_t)hv & (ck->iset_cap - 1);
    while (ck->iset[h].name) {
      if (ck->iset[h].hash == (uint32_t)(hv >> 32) && strcmp(ck->iset[h].name, ck->idx_name[i]) == 0) {
        dsv3_error_set("%s: tensor %.200s: appears twice in weight_map", ipath, ck->idx_name[i]);
        return -1;
      }
      h = (h + 1) & (ck->iset_cap - 1);
    }
    ck->iset[h] = (ientry){ck->idx_name[i], (uint32_t)i, (uint32_t)(hv >> 32)};
  }
  ck->has_index = 1;
  return 0;
}

static int read_index(dsv3_ckpt *ck, const char *ipath, size_t *cap) {
  char *buf;
  size_t n;
  if (dsv3_read_file(ipath, &buf, &n, 512u << 20) != 0) return -1;
  int rc = parse_index(ck, buf, n, ipath, cap);
  free(buf);
  return rc;
}

/* A checkpoint inside an archive: the same layouts, members held in memory. */
static int open_archive(dsv3_ckpt *ck, const char *path, size_t *cap) {
  ck->ar = dsv3_xcalloc(1, sizeof *ck->ar);
  if (dsv3_archive_read(path, ck->ar) != 0) return -1;
  ck->dir = dsv3_xstrdup(path);
  const dsv3_member *idx = dsv3_archive_find(ck->ar, "model.safetensors.index.json");
  char label[4096];
  snprintf(label, sizeof label, "%s:model.safetensors.index.json", path);
  if (idx && parse_index(ck, (const char *)idx->data, idx->size, label, cap) != 0) return -1;
  int n_rt = 0, rt_mp = -1;
  for (size_t i = 0; i < ck->ar->n; i++) {
    const char *nm = ck->ar->m[i].name;
    if (!ends_with(nm, ".safetensors") || strchr(nm, '/')) continue;
    int r, n;
    if (parse_rt_name(nm, &r, &n) == 0) {
      if (rt_mp >= 0 && rt_mp != n) {
        dsv3_error_set("%s: model{r}-mp{n}.safetensors members of different degrees", path);
        return -1;
      }
      rt_mp = n;
      n_rt++;
    }
    add_file_name(ck, cap, nm);
  }
  if (idx) ck->layout = DSV3_LAYOUT_HF;
  else if (n_rt > 0) ck->layout = DSV3_LAYOUT_RUNTIME, ck->mp = rt_mp;
  else if (ck->nfiles) ck->layout = DSV3_LAYOUT_SINGLE;
  else {
    dsv3_error_set("%s: no .safetensors members", path);
    return -1;
  }
  if (ck->layout == DSV3_LAYOUT_RUNTIME && n_rt != rt_mp) {
    dsv3_error_set("%s: %d of %d model{r}-mp%d.safetensors members present", path, n_rt, rt_mp, rt_mp);
    return -1;
  }
  return 0;
}

static int list_dir(dsv3_ckpt *ck, size_t *cap, int *n_rt, int *rt_mp) {
  DIR *d = opendir(ck->dir);
  if (!d) {
    dsv3_error_set("%s: cannot list directory", ck->dir);
    return -1;
  }
  struct dirent *de;
  *n_rt = 0;
  *rt_mp = -1;
  int mixed = 0;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors")) continue;
    int r, n;
    if (parse_rt_name(de->d_name, &r, &n) == 0) {
      if (*rt_mp >= 0 && *rt_mp != n) mixed = 1;
      *rt_mp = n;
      (*n_rt)++;
    }
    add_file_name(ck, cap, de->d_name);
  }
  closedir(d);
  if (mixed) {
    dsv3_error_set("%s: model{r}-mp{n}.safetensors files of different degrees n in one directory", ck->dir);
    return -1;
  }
  return 0;
}

/* Position in the weight_map of NAME, or -1. */
static long index_pos(const dsv3_ckpt *ck, const char *name) {
  if (!ck->iset_cap) return -1;
  uint64_t hv = hash_str(name);
  size_t mask = ck->iset_cap - 1, h = (size_t)hv & mask;
  while (ck->iset[h].name) {
    if (ck->iset[h].hash == (uint32_t)(hv >> 32) && strcmp(ck->iset[h].name, name) == 0) return (long)ck->iset[h].pos;
    h = (h + 1) & mask;
  }
  return -1;
}

static int cmp_str_key(const void *key, const void *elem) {
  return strcmp((const char *)key, *(const char *const *)elem);
}

/* Name -> (file, tensor) for every tensor of every file, in one open-addressing table.  The
 * same name in two files: the runtime layout has that on purpose (replicated tensors); the HF
 * layout tolerates it when the index names one of them (check_index reports the other); a
 * directory or file without index refuses it, as a lookup could not choose. */
static int build_lookup(dsv3_ckpt *ck) {
  ck->file_start = dsv3_xcalloc(ck->nfiles + 1, sizeof(size_t));
  for (size_t f = 0; f < ck->nfiles; f++)
    ck->file_start[f + 1] = ck->file_start[f] + dsv3_st_count(ck->files[f]);
  ck->ntotal = ck->file_start[ck->nfiles];
  ck->ent_cap = 16;
  while (ck->ent_cap < ck->ntotal * 2) ck->ent_cap <<= 1;
  ck->ent = dsv3_xcalloc(ck->ent_cap, sizeof(entry));
  size_t mask = ck->ent_cap - 1;
  for (size_t f = 0; f < ck->nfiles; f++)
    for (size_t i = 0; i < dsv3_st_count(ck->files[f]); i++) {
      const dsv3_tensor *t = dsv3_st_tensor(ck->files[f], i);
      uint64_t hv = hash_str(t->name);
      size_t h = (size_t)hv & mask;
      while (ck->ent[h].name) {
        if (ck->ent[h].hash == (uint32_t)(hv >> 32) && strcmp(ck->ent[h].name, t->name) == 0 &&
            ck->layout != DSV3_LAYOUT_RUNTIME &&
            (ck->layout != DSV3_LAYOUT_HF || index_pos(ck, t->name) < 0)) {
          dsv3_error_set("%s: tensor %s: also in %s", dsv3_st_path(ck->files[f]), t->name,
                         ck->fnames[ck->ent[h].file]);
          return -1;
        }
        h = (h + 1) & mask;
      }
      ck->ent[h] = (entry){t->name, (uint32_t)f, (uint32_t)i, (uint32_t)(hv >> 32)};
    }
  /* the file the index names for each entry (files are sorted by name by now) */
  if (ck->has_index) {
    ck->idx_fno = dsv3_xcalloc(ck->nidx ? ck->nidx : 1, sizeof(uint32_t));
    for (size_t i = 0; i < ck->nidx; i++) {
      char **hit = bsearch(ck->idx_file[i], ck->fnames, ck->nfiles, sizeof(char *), cmp_str_key);
      ck->idx_fno[i] = hit ? (uint32_t)(hit - ck->fnames) : UINT32_MAX;
    }
  }
  return 0;
}

int dsv3_ckpt_open(const char *path, dsv3_ckpt **out) {
  dsv3_ckpt *ck = dsv3_xcalloc(1, sizeof *ck);
  ck->path = dsv3_xstrdup(path);
  ck->mp = 1;
  ck->total_size = -1;
  size_t cap = 0;
  int single_file = !dsv3_is_dir(path);
  if (single_file && dsv3_archive_is(path) && dsv3_file_exists(path)) {
    single_file = 0;
    if (open_archive(ck, path, &cap) != 0) goto fail;
  } else if (single_file) {
    if (!dsv3_file_exists(path)) {
      dsv3_error_set("%s: no such file or directory", path);
      goto fail;
    }
    if (file_kind(path) != 1) {
      dsv3_error_set("%s: not a regular file or directory", path);
      goto fail;
    }
    const char *slash = strrchr(path, '/');
    ck->dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : dsv3_xstrdup(".");
    add_file_name(ck, &cap, slash ? slash + 1 : path);
    ck->layout = DSV3_LAYOUT_SINGLE;
    int r, n;
    if (parse_rt_name(ck->fnames[0], &r, &n) == 0 && n == 1) ck->layout = DSV3_LAYOUT_RUNTIME;
  } else if (!ck->ar) {
    ck->dir = dsv3_xstrdup(path);
    char *ipath = dsv3_path_join(path, "model.safetensors.index.json");
    int have_index = dsv3_file_exists(ipath);
    if (have_index && file_kind(ipath) != 1) {
      dsv3_error_set("%s: not a regular file", ipath);
      free(ipath);
      goto fail;
    }
    if (have_index && read_index(ck, ipath, &cap) != 0) {
      free(ipath);
      goto fail;
    }
    free(ipath);
    int n_rt, rt_mp;
    if (list_dir(ck, &cap, &n_rt, &rt_mp) != 0) goto fail;
    if (have_index) {
      ck->layout = DSV3_LAYOUT_HF;
    } else if (n_rt > 0) {
      ck->layout = DSV3_LAYOUT_RUNTIME;
      ck->mp = rt_mp;
      /* only the rank files belong to the checkpoint; every rank must be there */
      size_t k = 0;
      for (size_t i = 0; i < ck->nfiles; i++) {
        int r, n;
        if (parse_rt_name(ck->fnames[i], &r, &n) == 0)
          ck->fnames[k++] = ck->fnames[i];
        else
          free(ck->fnames[i]);
      }
      ck->nfiles = k;
      if ((int)k != rt_mp) {
        qsort(ck->fnames, ck->nfiles, sizeof(char *), cmp_str);
        for (int r = 0; r < rt_mp; r++) {
          char want[64];
          snprintf(want, sizeof want, "model%d-mp%d.safetensors", r, rt_mp);
          int found = 0;
          for (size_t i = 0; i < ck->nfiles; i++) found |= strcmp(ck->fnames[i], want) == 0;
          if (!found) {
            dsv3_error_set("%s: %s is missing (runtime layout with mp %d)", path, want, rt_mp);
            goto fail;
          }
        }
      }
    } else if (ck->nfiles > 0) {
      ck->layout = DSV3_LAYOUT_SINGLE;
    } else {
      dsv3_error_set("%s: no model.safetensors.index.json and no .safetensors files", path);
      goto fail;
    }
  }
  qsort(ck->fnames, ck->nfiles, sizeof(char *), cmp_str);
  ck->files = dsv3_xcalloc(ck->nfiles ? ck->nfiles : 1, sizeof(dsv3_st *));
  ck->ranks = dsv3_xcalloc(ck->nfiles ? ck->nfiles : 1, sizeof(int));
  for (size_t i = 0; i < ck->nfiles; i++) {
    if (ck->ar) {
      const dsv3_member *mb = dsv3_archive_find(ck->ar, ck->fnames[i]);
      char label[4096];
      snprintf(label, sizeof label, "%s:%s", path, ck->fnames[i]);
      if (!mb) {
        dsv3_error_set("%s: shard %s named by model.safetensors.index.json is missing", path, ck->fnames[i]);
        goto fail;
      }
      if (dsv3_st_open_mem(mb->data, mb->size, label, &ck->files[i]) != 0) goto fail;
      int r, n;
      ck->ranks[i] = (ck->layout == DSV3_LAYOUT_RUNTIME && parse_rt_name(ck->fnames[i], &r, &n) == 0) ? r : -1;
      continue;
    }
    char *fp = single_file ? dsv3_xstrdup(path) : dsv3_path_join(ck->dir, ck->fnames[i]);
    int kind = file_kind(fp);
    if (kind != 1) {
      if (kind < 0 && ck->layout == DSV3_LAYOUT_HF)
        dsv3_error_set("%s: shard %s named by model.safetensors.index.json is missing", path, ck->fnames[i]);
      else
        dsv3_error_set("%s: %s", fp, kind < 0 ? "no such file" : "not a regular file");
      free(fp);
      goto fail;
    }
    int rc = dsv3_st_open(fp, &ck->files[i]);
    free(fp);
    if (rc != 0) goto fail;
    int r, n;
    ck->ranks[i] = (ck->layout == DSV3_LAYOUT_RUNTIME && parse_rt_name(ck->fnames[i], &r, &n) == 0) ? r : -1;
  }
  if (ck->layout == DSV3_LAYOUT_RUNTIME) {
    /* order by rank, not by name (model10 sorts before model2) */
    for (size_t i = 1; i < ck->nfiles; i++)
      for (size_t j = i; j > 0 && ck->ranks[j - 1] > ck->ranks[j]; j--) {
        int tr = ck->ranks[j]; ck->ranks[j] = ck->ranks[j - 1]; ck->ranks[j - 1] = tr;
        dsv3_st *ts = ck->files[j]; ck->files[j] = ck->files[j - 1]; ck->files[j - 1] = ts;
        char *tn = ck->fnames[j]; ck->fnames[j] = ck->fnames[j - 1]; ck->fnames[j - 1] = tn;
      }
  }
  if (build_lookup(ck) != 0) goto fail;
  if (ck->ar) {
    const dsv3_member *cm = dsv3_archive_find(ck->ar, "config.json");
    char label[4096];
    snprintf(label, sizeof label, "%s:config.json", path);
    if (cm) {
      if (dsv3_config_parse((const char *)cm->data, cm->size, label, &ck->cfg) != 0) goto fail;
      ck->has_cfg = 1;
    }
    *out = ck;
    return 0;
  }
  char *cpath = dsv3_path_join(ck->dir, "config.json");
  if (dsv3_file_exists(cpath)) {
    if (file_kind(cpath) != 1) {
      dsv3_error_set("%s: not a regular file", cpath);
      free(cpath);
      goto fail;
    }
    if (dsv3_config_load(cpath, &ck->cfg) != 0) {
      free(cpath);
      goto fail;
    }
    ck->has_cfg = 1;
  }
  free(cpath);
  *out = ck;
  return 0;
fail:
  dsv3_ckpt_close(ck);
  return -1;
}

const char *dsv3_ckpt_path(const dsv3_ckpt *ck) { return ck->path; }
dsv3_layout dsv3_ckpt_layout(const dsv3_ckpt *ck) { return ck->layout; }
const char *dsv3_ckpt_layout_name(dsv3_layout l) {
  switch (l) {
  case DSV3_LAYOUT_HF: return "hf";
  case DSV3_LAYOUT_RUNTIME: return "runtime";
  case DSV3_LAYOUT_SINGLE: return "single";
  }
  return "?";
}
const dsv3_config *dsv3_ckpt_config(const dsv3_ckpt *ck) { return ck->has_cfg ? &ck->cfg : NULL; }
int dsv3_ckpt_mp(const dsv3_ckpt *ck) { return ck->mp; }
size_t dsv3_ckpt_nfiles(const dsv3_ckpt *ck) { return ck->nfiles; }
dsv3_st *dsv3_ckpt_file(const dsv3_ckpt *ck, size_t i) { return ck->files[i]; }
const char *dsv3_ckpt_file_name(const dsv3_ckpt *ck, size_t i) { return ck->fnames[i]; }
int dsv3_ckpt_file_rank(const dsv3_ckpt *ck, size_t i) { return ck->ranks[i]; }
size_t dsv3_ckpt_count(const dsv3_ckpt *ck) { return ck->ntotal; }

const dsv3_tensor *dsv3_ckpt_tensor(const dsv3_ckpt *ck, size_t i, size_t *file_index) {
  if (i >= ck->ntotal) return NULL;
  size_t lo = 0, hi = ck->nfiles;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (ck->file_start[mid] <= i) lo = mid;
    else hi = mid;
  }
  if (file_index) *file_index = lo;
  return dsv3_st_tensor(ck->files[lo], i - ck->file_start[lo]);
}

const dsv3_tensor *dsv3_ckpt_find(const dsv3_ckpt *ck, const char *name, int rank, size_t *file_index) {
  if (!ck->ent_cap) return NULL;
  uint64_t hv = hash_str(name);
  uint32_t h32 = (uint32_t)(hv >> 32);
  size_t mask = ck->ent_cap - 1, h = (size_t)hv & mask;
  const entry *first = NULL;
  int consult_index = 0;
  for (; ck->ent[h].name; h = (h + 1) & mask) {
    const entry *e = &ck->ent[h];
    if (e->hash != h32 || strcmp(e->name, name) != 0) continue;
    if (rank >= 0 && ck->ranks[e->file] != rank && ck->ranks[e->file] >= 0) continue;
    if (!first) {
      first = e;
      if (ck->layout != DSV3_LAYOUT_HF) break;
      continue; /* HF: a second copy would make the index decide */
    }
    consult_index = 1;
    break;
  }
  if (consult_index) {
    /* HF layout, the name in more than one file: the copy in the file the index names */
    long ip = index_pos(ck, name);
    uint32_t want = ip >= 0 && ck->idx_fno ? ck->idx_fno[ip] : UINT32_MAX;
    for (h = (size_t)hv & mask; want != UINT32_MAX && ck->ent[h].name; h = (h + 1) & mask) {
      const entry *e = &ck->ent[h];
      if (e->hash == h32 && e->file == want && strcmp(e->name, name) == 0) {
        first = e;
        break;
      }
    }
  }
  if (!first) return NULL;
  if (file_index) *file_index = first->file;
  return dsv3_st_tensor(ck->files[first->file], first->tidx);
}

uint64_t dsv3_ckpt_total_bytes(const dsv3_ckpt *ck) {
  uint64_t s = 0;
  for (size_t i = 0; i < ck->ntotal; i++) s += dsv3_ckpt_tensor(ck, i, NULL)->nbytes;
  return s;
}

int64_t dsv3_ckpt_index_total_size(const dsv3_ckpt *ck) { return ck->has_index ? ck->total_size : -1; }

typedef struct {
  char first[1100];
  int errors;
  dsv3_problem_fn warn;
  void *ctx;
} index_verdict;

static void on_index_problem(void *ctx, const char *line) {
  index_verdict *v = ctx;
  if (strstr(line, "metadata.total_size")) {
    if (v->warn) v->warn(v->ctx, line);
    return;
  }
  if (!v->errors++) snprintf(v->first, sizeof v->first, "%s", line);
}

int dsv3_ckpt_require_index(const dsv3_ckpt *ck, const char *dir, dsv3_problem_fn warn, void *ctx) {
  index_verdict v = {.warn = warn, .ctx = ctx};
  dsv3_ckpt_check_index(ck, on_index_problem, &v);
  if (!v.errors) return 0;
  if (v.errors > 1)
    dsv3_error_set("%s/%s (and %d more index problems; dsv3-inspect --check lists them)", dir, v.first, v.errors - 1);
  else
    dsv3_error_set("%s/%s", dir, v.first);
  return -1;
}

int dsv3_ckpt_check_index(const dsv3_ckpt *ck, dsv3_problem_fn cb, void *ctx) {
  if (!ck->has_index) return 0;
  int problems = 0;
  char line[1024];
#define PROBLEM(...)                                   \
  do {                                                 \
    problems++;                                        \
    snprintf(line, sizeof line, __VA_ARGS__);          \
    if (cb) cb(ctx, line);                             \
  } while (0)
  /* every weight_map entry: the named file holds the tensor */
  for (size_t i = 0; i < ck->nidx; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_find(ck, ck->idx_name[i], -1, &f);
    if (!t)
      PROBLEM("model.safetensors.index.json: tensor %.300s: in weight_map (%s) but in no shard",
              ck->idx_name[i], ck->idx_file[i]);
    else if (strcmp(ck->fnames[f], ck->idx_file[i]) != 0)
      PROBLEM("model.safetensors.index.json: tensor %.300s: weight_map says %s but it is in %s",
              ck->idx_name[i], ck->idx_file[i], ck->fnames[f]);
  }
  /* every tensor of every file: in the weight_map, and there under this file */
  for (size_t i = 0; i < ck->ntotal; i++) {
    size_t f;
    const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &f);
    long ip = index_pos(ck, t->name);
    if (ip < 0) {
      PROBLEM("%s: tensor %.300s: not in model.safetensors.index.json", ck->fnames[f], t->name);
    } else if (ck->idx_fno[ip] != f && ck->idx_fno[ip] != UINT32_MAX) {
      /* the copy the index names exists: this one is a second copy (the other case, the
       * named file lacking it, was reported above) */
      size_t g;
      if (dsv3_ckpt_find(ck, t->name, -1, &g) && g == ck->idx_fno[ip])
        PROBLEM("%s: tensor %.300s: also in %s, where model.safetensors.index.json places it", ck->fnames[f],
                t->name, ck->idx_file[ip]);
    }
  }
  if (ck->total_size_bad)
    PROBLEM("model.safetensors.index.json: metadata.total_size is not a non-negative integer");
  if (ck->total_size >= 0 && (uint64_t)ck->total_size != dsv3_ckpt_total_bytes(ck))
    PROBLEM("model.safetensors.index.json: metadata.total_size %lld but the tensors hold %llu bytes",
            (long long)ck->total_size, (unsigned long long)dsv3_ckpt_total_bytes(ck));
#undef PROBLEM
  return problems;
}

/* ------------------------------------------------------------------ other files */
static int is_extra(const char *nm) {
  return nm[0] != '.' && !ends_with(nm, ".safetensors") && !strchr(nm, '/');
}

size_t dsv3_ckpt_extra_names(const dsv3_ckpt *ck, char ***names) {
  size_t n = 0;
  *names = NULL;
  if (ck->ar) {
    for (size_t i = 0; i < ck->ar->n; i++)
      if (is_extra(ck->ar->m[i].name)) {
        *names = dsv3_xrealloc(*names, (n + 1) * sizeof(char *));
        (*names)[n++] = dsv3_xstrdup(ck->ar->m[i].name);
      }
    return n;
  }
  if (!dsv3_is_dir(ck->path)) return 0;
  DIR *d = opendir(ck->dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (!is_extra(de->d_name)) continue;
    char *p = dsv3_path_join(ck->dir, de->d_name);
    struct stat st;
    if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
      *names = dsv3_xrealloc(*names, (n + 1) * sizeof(char *));
      (*names)[n++] = dsv3_xstrdup(de->d_name);
    }
    free(p);
  }
  if (d) closedir(d);
  if (n) qsort(*names, n, sizeof(char *), cmp_str);
  return n;
}

int dsv3_ckpt_read_extra(const dsv3_ckpt *ck, const char *name, char **buf, size_t *n) {
  if (ck->ar) {
    const dsv3_member *m = dsv3_archive_find(ck->ar, name);
    if (!m) {
      dsv3_error_set("%s: no member %s", ck->path, name);
      return -1;
    }
    *buf = dsv3_xmalloc(m->size + 1);
    memcpy(*buf, m->data, m->size);
    (*buf)[m->size] = 0;
    *n = m->size;
    return 0;
  }
  char *p = dsv3_path_join(ck->dir, name);
  int rc = dsv3_read_file(p, buf, n, (size_t)1 << 32);
  free(p);
  return rc;
}

int dsv3_ckpt_copy_extra(const dsv3_ckpt *ck, const char *name, const char *dst) {
  if (!ck->ar) {
    char *p = dsv3_path_join(ck->dir, name);
    int rc = dsv3_copy_file(p, dst);
    free(p);
    return rc;
  }
  const dsv3_member *m = dsv3_archive_find(ck->ar, name);
  if (!m) {
    dsv3_error_set("%s: no member %s", ck->path, name);
    return -1;
  }
  return dsv3_write_file_atomic(dst, m->data, m->size);
}

int dsv3_ckpt_in_memory(const dsv3_ckpt *ck) { return ck->ar != NULL; }
