/* inspect_floor - the floors the dsv3-inspect benchmarks are compared with.
 *   inspect_floor mem SIZE_MB THREADS   read bandwidth of RAM: THREADS threads summing a buffer
 *   inspect_floor headers FILE...       time to open each file and read its 8-byte length and
 *                                       JSON header (what any safetensors reader must do), then
 *                                       the same plus parsing each header with cJSON: prints
 *                                       "READ_S PARSE_S" */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
  const uint64_t *p;
  size_t n;
  uint64_t sum;
} part_t;

static void *sum_part(void *v) {
  part_t *p = v;
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= p->n; i += 4) {
    a += p->p[i];
    b ^= p->p[i + 1];
    c += p->p[i + 2];
    d ^= p->p[i + 3];
  }
  p->sum = a + b + c + d;
  return NULL;
}

static int mem(size_t mb, int threads) {
  size_t n = mb << 17; /* 8-byte words */
  uint64_t *buf = malloc(n * 8);
  if (!buf) return 1;
  for (size_t i = 0; i < n; i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
  double best = 0;
  uint64_t sink = 0;
  for (int rep = 0; rep < 5; rep++) {
    pthread_t t[256];
    part_t pt[256];
    double t0 = now();
    for (int k = 0; k < threads; k++) {
      pt[k] = (part_t){buf + n / threads * k, n / threads, 0};
      pthread_create(&t[k], NULL, sum_part, &pt[k]);
    }
    for (int k = 0; k < threads; k++) {
      pthread_join(t[k], NULL);
      sink += pt[k].sum;
    }
    double gbs = n * 8.0 / (now() - t0) / 1e9;
    if (gbs > best) best = gbs;
  }
  printf("%.2f\n", best);
  fprintf(stderr, "(checksum %llx)\n", (unsigned long long)sink);
  free(buf);
  return 0;
}

static int headers(int n, char **files, int parse, double *secs) {
  double t0 = now();
  uint64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    int fd = open(files[i], O_RDONLY);
    uint64_t len;
    if (fd < 0 || pread(fd, &len, 8, 0) != 8 || len > (100u << 20)) return 1;
    char *h = malloc(len);
    if (pread(fd, h, len, 8) != (ssize_t)len) return 1;
    if (parse) {
      cJSON *j = cJSON_ParseWithLength(h, len);
      if (!j) return 1;
      cJSON_Delete(j);
    }
    bytes += len + 8;
    free(h);
    close(fd);
  }
  *secs = now() - t0;
  if (parse) fprintf(stderr, "(%d files, %llu header bytes)\n", n, (unsigned long long)bytes);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "mem") == 0) return mem((size_t)atol(argv[2]), atoi(argv[3]) > 0 && atoi(argv[3]) <= 256 ? atoi(argv[3]) : 1);
  if (argc >= 3 && strcmp(argv[1], "headers") == 0) {
    double a, b;
    if (headers(argc - 2, argv + 2, 0, &a) || headers(argc - 2, argv + 2, 1, &b)) return 1;
    printf("%.6f %.6f\n", a, b);
    return 0;
  }
  fprintf(stderr, "usage: inspect_floor mem SIZE_MB THREADS | headers FILE...\n");
  return 2;
}
