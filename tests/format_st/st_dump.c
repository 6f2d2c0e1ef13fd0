/* st-dump: print what the libdsv3 safetensors reader sees, for tests against other readers.
 *
 *   st-dump [--header-only] FILE...
 *
 * Per file: `file\tPATH\tCOUNT\tDATA_OFFSET\tFILE_SIZE`, then `meta\tKEY\tVALUE` per metadata
 * entry and `tensor\tNAME\tDTYPE\t[D0,D1,...]\tBEGIN\tEND\tSHA256` per tensor in file order
 * (BEGIN/END relative to the data section, as in the header).  Strings are printed with \\, \t,
 * \n, \r and other bytes below 0x20 escaped (\xNN).  --header-only reads only the 8-byte length
 * and the header with pread and parses it with dsv3_st_open_header: the hash column is "-".
 * Errors: `st-dump: error: LINE` on stderr, exit 1; usage: exit 2. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "util.h"

static void put_str(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\\') fputs("\\\\", stdout);
    else if (*p == '\t') fputs("\\t", stdout);
    else if (*p == '\n') fputs("\\n", stdout);
    else if (*p == '\r') fputs("\\r", stdout);
    else if (*p < 0x20) printf("\\x%02x", *p);
    else putchar(*p);
  }
}

static void sha256_hex(const void *p, size_t n, char out[65]) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Header-only: pread the length, then the header, never mapping the data. */
static int open_header_only(const char *path, dsv3_st **st) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    dsv3_error_set("%s: %s", path, strerror(errno));
    return -1;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    dsv3_error_set("%s: not a regular file", path);
    return -1;
  }
  unsigned char len8[8] = {0};
  ssize_t got = pread(fd, len8, 8, 0);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | len8[i];
  /* read what is there, at most the header: the parser reports lengths past the end itself */
  uint64_t want = got == 8 ? (hl > DSV3_ST_MAX_HEADER ? 0 : hl) + 8 : (uint64_t)(got > 0 ? got : 0);
  if (want > (uint64_t)sb.st_size) want = (uint64_t)sb.st_size;
  unsigned char *buf = dsv3_xmalloc(want ? want : 1);
  ssize_t r = want ? pread(fd, buf, want, 0) : 0;
  close(fd);
  int rc = dsv3_st_open_header(buf, r > 0 ? (size_t)r : 0, (uint64_t)sb.st_size, path, st);
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  int header_only = 0, first = 1;
  if (argc > 1 && !strcmp(argv[1], "--header-only")) {
    header_only = 1;
    first = 2;
  }
  if (first >= argc) {
    fprintf(stderr, "usage: st-dump [--header-only] FILE...\n");
    return 2;
  }
  for (int a = first; a < argc; a++) {
    dsv3_st *st = NULL;
    if ((header_only ? open_header_only(argv[a], &st) : dsv3_st_open(argv[a], &st)) != 0) {
      dsv3_error_print("st-dump");
      return 1;
    }
    printf("file\t");
    put_str(argv[a]);
    printf("\t%zu\t%llu\t%llu\n", dsv3_st_count(st), (unsigned long long)dsv3_st_data_offset(st),
           (unsigned long long)dsv3_st_file_size(st));
    for (size_t i = 0; i < dsv3_st_meta_count(st); i++) {
      const char *k, *v;
      dsv3_st_meta(st, i, &k, &v);
      printf("meta\t");
      put_str(k);
      putchar('\t');
      put_str(v);
      putchar('\n');
    }
    for (size_t i = 0; i < dsv3_st_count(st); i++) {
      const dsv3_tensor *t = dsv3_st_tensor(st, i);
      char hex[65] = "-";
      if (t->data) sha256_hex(t->data, t->nbytes, hex);
      printf("tensor\t");
      put_str(t->name);
      printf("\t%s\t[", dsv3_dtype_name(t->dtype));
      for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
      printf("]\t%llu\t%llu\t%s\n", (unsigned long long)t->begin, (unsigned long long)(t->begin + t->nbytes), hex);
    }
    dsv3_st_close(st);
  }
  return 0;
}
