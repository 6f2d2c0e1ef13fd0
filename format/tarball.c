/* tarball.c - libarchive input and zstd-tar output (see tarball.h). */
#include "tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int ends(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

int dsv3_archive_is(const char *path) {
  return ends(path, ".tar") || ends(path, ".tar.zst") || ends(path, ".tzst") || ends(path, ".tar.gz") ||
         ends(path, ".tgz") || ends(path, ".tar.xz");
}

void dsv3_archive_free(dsv3_archive *a) {
  for (size_t i = 0; i < a->n; i++) {
    if (a->m[i].data && a->m[i].size) munmap(a->m[i].data, a->m[i].size);
    free(a->m[i].name);
  }
  free(a->m);
  free(a->path);
  memset(a, 0, sizeof *a);
}

const dsv3_member *dsv3_archive_find(const dsv3_archive *a, const char *name) {
  for (size_t i = 0; i < a->n; i++)
    if (!strcmp(a->m[i].name, name)) return &a->m[i];
  return NULL;
}

/* A member path is safe when relative, without "..", and not empty. */
static int safe_member(const char *p) {
  if (!p[0] || p[0] == '/') return 0;
  for (const char *s = p; *s;) {
    const char *e = strchr(s, '/');
    size_t l = e ? (size_t)(e - s) : strlen(s);
    if (l == 2 && s[0] == '.' && s[1] == '.') return 0;
    s += l + (e != NULL);
  }
  return 1;
}

int dsv3_archive_read(const char *path, dsv3_archive *a) {
  memset(a, 0, sizeof *a);
  a->path = dsv3_xstrdup(path);
  struct archive *ar = archive_read_new();
  archive_read_support_filter_all(ar);
  archive_read_support_format_tar(ar);
  if (archive_read_open_filename(ar, path, 1 << 20) != ARCHIVE_OK) {
    dsv3_error_set("%s: %s", path, archive_error_string(ar) ? archive_error_string(ar) : "cannot open");
    archive_read_free(ar);
    dsv3_archive_free(a);
    return -1;
  }
  struct archive_entry *e;
  int r;
  while ((r = archive_read_next_header(ar, &e)) == ARCHIVE_OK) {
    const char *name = archive_entry_pathname(e);
    mode_t type = archive_entry_filetype(e);
    if (!name) name = "";
    if (type == AE_IFDIR) continue;
    if (!safe_member(name)) {
      dsv3_error_set("%s: member %.300s: absolute or \"..\" path refused", path, name);
      goto fail;
    }
    if (type != AE_IFREG || archive_entry_hardlink(e) || archive_entry_symlink(e)) {
      dsv3_error_set("%s: member %.300s: links and special files are refused", path, name);
      goto fail;
    }
    int64_t sz = archive_entry_size(e);
    if (sz < 0 || (uint64_t)sz > ((uint64_t)1 << 46)) {
      dsv3_error_set("%s: member %.300s: invalid size", path, name);
      goto fail;
    }
    a->m = dsv3_xrealloc(a->m, (a->n + 1) * sizeof *a->m);
    dsv3_member *m = &a->m[a->n++];
    m->name = dsv3_xstrdup(name[0] == '.' && name[1] == '/' ? name + 2 : name);
    m->size = (size_t)sz;
    m->data = NULL;
    if (sz) {
      void *p = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        dsv3_error_set("%s: member %.300s: cannot hold %lld bytes in memory", path, name, (long long)sz);
        m->size = 0;
        goto fail;
      }
      m->data = p;
      size_t got = 0;
      while (got < (size_t)sz) {
        la_ssize_t k = archive_read_data(ar, m->data + got, (size_t)sz - got);
        if (k <= 0) {
          dsv3_error_set("%s: member %.300s: corrupted or truncated (%s)", path, name,
                         k < 0 && archive_error_string(ar) ? archive_error_string(ar) : "short read");
          goto fail;
        }
        got += (size_t)k;
      }
    }
  }
  if (r != ARCHIVE_EOF) {
    dsv3_error_set("%s: corrupted archive after %zu members (%s)", path, a->n,
                   archive_error_string(ar) ? archive_error_string(ar) : "bad header");
    goto fail;
  }
  archive_read_free(ar);
  /* strip a common top directory ("dsv3-tiny/config.json" -> "config.json") */
  if (a->n) {
    const char *s = strchr(a->m[0].name, '/');
    size_t pl = s ? (size_t)(s - a->m[0].name) + 1 : 0;
    for (size_t i = 0; pl && i < a->n; i++)
      if (strncmp(a->m[i].name, a->m[0].name, pl)) pl = 0;
    if (pl)
      for (size_t i = 0; i < a->n; i++) memmove(a->m[i].name, a->m[i].name + pl, strlen(a->m[i].name + pl) + 1);
  }
  return 0;
fail:
  archive_read_free(ar);
  dsv3_archive_free(a);
  return -1;
}

int dsv3_archive_pack(const char *dir, const char *const *names, size_t n, const char *out_path, int threads, int level) {
  dsv3_outfile of;
  if (dsv3_outfile_open(&of, out_path) != 0) return -1;
  struct archive *aw = archive_write_new();
  archive_write_set_format_pax_restricted(aw);
  char opt[32];
  if (ends(out_path, ".tar.gz") || ends(out_path, ".tgz")) {
    archive_write_add_filter_gzip(aw);
  } else if (ends(out_path, ".tar")) {
    archive_write_add_filter_none(aw);
  } else {
    archive_write_add_filter_zstd(aw);
    snprintf(opt, sizeof opt, "%d", threads > 0 ? threads : dsv3_num_cpus());
    archive_write_set_filter_option(aw, "zstd", "threads", opt);
    snprintf(opt, sizeof opt, "%d", level);
    archive_write_set_filter_option(aw, "zstd", "compression-level", opt);
  }
  int rc = -1;
  if (archive_write_open_fd(aw, of.fd) != ARCHIVE_OK) {
    dsv3_error_set("%s: %s", out_path, archive_error_string(aw));
    goto out;
  }
  size_t cap = 8u << 20;
  char *buf = dsv3_xmalloc(cap);
  for (size_t i = 0; i < n; i++) {
    char *p = dsv3_path_join(dir, names[i]);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      dsv3_error_set("%s: %s", p, strerror(errno));
      free(p);
      if (fd >= 0) close(fd);
      free(buf);
      goto out;
    }
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, names[i]);
    archive_entry_set_size(e, st.st_size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, st.st_mtime, 0);
    int bad = archive_write_header(aw, e) != ARCHIVE_OK;
    archive_entry_free(e);
    ssize_t r;
    while (!bad && (r = read(fd, buf, cap)) > 0)
      if (archive_write_data(aw, buf, (size_t)r) != r) bad = 1;
    close(fd);
    free(p);
    if (bad) {
      dsv3_error_set("%s: writing member %s: %s", out_path, names[i], archive_error_string(aw));
      free(buf);
      goto out;
    }
  }
  free(buf);
  if (archive_write_close(aw) != ARCHIVE_OK) {
    dsv3_error_set("%s: %s", out_path, archive_error_string(aw));
    goto out;
  }
  rc = 0;
out:
  archive_write_free(aw);
  if (rc == 0) return dsv3_outfile_commit(&of);
  dsv3_outfile_abort(&of);
  return rc;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int dsv3_pack_dir(const char *dir, const char *out_path, int threads, int (*only)(const char *, void *), void *ctx,
                  int remove_dir) {
  DIR *d = opendir(dir);
  if (!d) {
    dsv3_error_set("%s: cannot list directory", dir);
    return -1;
  }
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || (only && !only(de->d_name, ctx))) continue;
    names = dsv3_xrealloc(names, (n + 1) * sizeof(char *));
    names[n++] = dsv3_xstrdup(de->d_name);
  }
  closedir(d);
  if (n) qsort(names, n, sizeof(char *), cmp_name);
  int rc = dsv3_archive_pack(dir, (const char *const *)names, n, out_path, threads, 3);
  for (size_t i = 0; i < n; i++) {
    if (rc == 0 && remove_dir) {
      char *p = dsv3_path_join(dir, names[i]);
      unlink(p);
      free(p);
    }
    free(names[i]);
  }
  free(names);
  if (rc == 0 && remove_dir && !only) dsv3_remove_flat_dir(dir);
  return rc;
}
