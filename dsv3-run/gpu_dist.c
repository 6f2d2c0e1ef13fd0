/* gpu_dist.c - ranks, rendezvous, NCCL and the watchdog of dsv3-run (see gpu_dist.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gpu_dist.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef DSV3_HAVE_NCCL
#include <nccl.h>
#endif

#include "util.h"

#define MSG_MAGIC 0x4e523344u /* "D3RN" */
enum { MSG_HELLO = 100, MSG_STATUS = 101, MSG_VERDICT = 102, MSG_FAIL = 103 };

struct dsv3_dist {
  dsv3_dist_params p;
  int *fd; /* rank 0: fd[r] for r in 1..world-1; others: fd[0] = rank 0 */
  int nfd;
  unsigned char nccl_id[128];
  void *comm;
  /* watchdog */
  pthread_t dog;
  int dog_on;
  pthread_mutex_t mu;
  double deadline; /* 0: no guarded section open */
  char what[128];
  volatile int quit;
};

/* ------------------------------------------------------------------ environment */
static const char *env(const char *k) {
  const char *v = getenv(k);
  return v && *v ? v : NULL;
}
static int env_int(const char *k, int *out) {
  const char *v = env(k);
  if (!v) return 0;
  char *e;
  long x = strtol(v, &e, 10);
  if (*e || x < 0 || x > 1 << 20) return -1;
  *out = (int)x;
  return 1;
}

/* "node[03-05,07],other" -> "node03"; "a,b" -> "a" */
static void first_host(const char *list, char *out, size_t n) {
  size_t i = 0, o = 0;
  while (list[i] && list[i] != ',' && list[i] != '[' && o + 1 < n) out[o++] = list[i++];
  if (list[i] == '[') {
    i++;
    while (list[i] && list[i] != ',' && list[i] != '-' && list[i] != ']' && o + 1 < n) out[o++] = list[i++];
  }
  out[o] = 0;
}

int dsv3_dist_from_env(dsv3_dist_params *p) {
  memset(p, 0, sizeof *p);
  p->timeout = 300;
  int r = -1, w = -1, l = -1, got;
  static const struct {
    const char *rank, *world, *local, *name;
  } src[] = {{"RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun"},
             {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
             {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "mpirun (PMI)"},
             {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "srun"}};
  size_t s;
  for (s = 0; s < sizeof src / sizeof *src; s++) {
    if (!env(src[s].rank) || !env(src[s].world)) continue;
    if (env_int(src[s].rank, &r) < 0 || env_int(src[s].world, &w) < 0 || (got = env_int(src[s].local, &l)) < 0) {
      dsv3_error_set("%s environment: %s=%s %s=%s: not integers", src[s].name, src[s].rank, env(src[s].rank), src[s].world,
                     env(src[s].world));
      return -1;
    }
    if (!got) l = -1;
    break;
  }
  if (s == sizeof src / sizeof *src || w <= 1) return 0;
  if (r >= w) {
    dsv3_error_set("%s environment: rank %d outside a world of %d", src[s].name, r, w);
    return -1;
  }
  p->rank = r, p->world = w, p->local_rank = l, p->source = src[s].name;
  const char *h = env("MASTER_ADDR");
  if (h) snprintf(p->host, sizeof p->host, "%s", h);
  else if (env("SLURM_STEP_NODELIST") || env("SLURM_JOB_NODELIST"))
    first_host(env("SLURM_STEP_NODELIST") ? env("SLURM_STEP_NODELIST") : env("SLURM_JOB_NODELIST"), p->host, sizeof p->host);
  else snprintf(p->host, sizeof p->host, "127.0.0.1");
  int port = 29511, mp;
  if (env_int("DSV3_MASTER_PORT", &port) < 0 || (env("DSV3_MASTER_PORT") == NULL && env_int("MASTER_PORT", &mp) < 0)) {
    dsv3_error_set("DSV3_MASTER_PORT / MASTER_PORT: not a port number");
    return -1;
  }
  if (!env("DSV3_MASTER_PORT") && env("MASTER_PORT")) port = mp + 1;
  if (port <= 0 || port > 65535) {
    dsv3_error_set("rendezvous port %d out of range", port);
    return -1;
  }
  p->port = port;
  return 1;
}

/* ------------------------------------------------------------------ sockets */
static int write_all(int fd, const void *b, size_t n) {
  const char *c = b;
  while (n) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k, n -= (size_t)k;
  }
  return 0;
}
/* deadline 0: wait forever.  Returns 0, -1 (closed or error), -2 (timed out). */
static int read_all(int fd, void *b, size_t n, double deadline) {
  char *c = b;
  while (n) {
    if (deadline > 0) {
      double left = deadline - dsv3_now();
      if (left <= 0) return -2;
      struct pollfd pf = {fd, POLLIN, 0};
      int pr = poll(&pf, 1, (int)(left * 1000) + 1);
      if (pr < 0 && errno == EINTR) continue;
      if (pr == 0) return -2;
    }
    ssize_t k = recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k, n -= (size_t)k;
  }
  return 0;
}

static int send_msg(int fd, uint32_t type, const void *buf, size_t n) {
  uint32_t h[4] = {MSG_MAGIC, type, (uint32_t)(n & 0xffffffffu), (uint32_t)((uint64_t)n >> 32)};
  return write_all(fd, h, sizeof h) || (n && write_all(fd, buf, n)) ? -1 : 0;
}
static int recv_msg(int fd, uint32_t *type, void **buf, size_t *n, double deadline) {
  uint32_t h[4];
  *buf = NULL;
  int rc = read_all(fd, h, sizeof h, deadline);
  if (rc) return rc;
  uint64_t len = (uint64_t)h[2] | (uint64_t)h[3] << 32;
  if (h[0] != MSG_MAGIC || len > (1u << 30)) return -3;
  *type = h[1];
  *buf = dsv3_xmalloc(len + 1);
  ((char *)*buf)[len] = 0;
  if (len && (rc = read_all(fd, *buf, len, deadline))) {
    free(*buf);
    *buf = NULL;
    return rc;
  }
  *n = len;
  return 0;
}

static const char *io_err(int rc) {
  return rc == -2 ? "timed out" : rc == -3 ? "garbled message (not a dsv3-run rank?)" : "connection closed";
}

int dsv3_dist_listen(const char *host, int port, int *fd, int *got_port) {
  *fd = -1;
  /* loopback hosts: 127.0.0.1 only; otherwise every address, IPv6 and IPv4 where possible */
  int loopback = host && (!strcmp(host, "127.0.0.1") || !strcmp(host, "localhost"));
  int one = 1, zero = 0, rc = -1, s = -1;
  struct sockaddr_storage ss;
  if (!loopback && (s = socket(AF_INET6, SOCK_STREAM, 0)) >= 0) {
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6, a.sin6_port = htons((uint16_t)port), a.sin6_addr = in6addr_any;
    rc = bind(s, (struct sockaddr *)&a, sizeof a);
    if (rc) close(s);
  }
  if (rc) {
    if ((s = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
      dsv3_error_set("rendezvous: socket: %s", strerror(errno));
      return -1;
    }
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET, a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(loopback ? INADDR_LOOPBACK : INADDR_ANY);
    rc = bind(s, (struct sockaddr *)&a, sizeof a);
  }
  if (rc || listen(s, 1024)) {
    dsv3_error_set("rendezvous: cannot listen on port %d: %s (another run? set DSV3_MASTER_PORT)", port, strerror(errno));
    close(s);
    return -1;
  }
  socklen_t sl = sizeof ss;
  getsockname(s, (struct sockaddr *)&ss, &sl);
  *got_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  *fd = s;
  return 0;
}

static void tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void *watchdog(void *arg);

static dsv3_dist *dist_new(const dsv3_dist_params *p) {
  dsv3_dist *d = dsv3_xcalloc(1, sizeof *d);
  d->p = *p;
  d->nfd = p->rank == 0 ? p->world : 1;
  d->fd = dsv3_xmalloc((size_t)d->nfd * sizeof(int));
  for (int i = 0; i < d->nfd; i++) d->fd[i] = -1;
  pthread_mutex_init(&d->mu, NULL);
  return d;
}

static int start_dog(dsv3_dist *d) {
  if (pthread_create(&d->dog, NULL, watchdog, d)) {
    dsv3_error_set("cannot start the watchdog thread");
    return -1;
  }
  d->dog_on = 1;
  return 0;
}

int dsv3_dist_connect_leader(const dsv3_dist_params *p, int lfd, dsv3_dist **out) {
  *out = NULL;
  dsv3_dist *d = dist_new(p);
  double deadline = dsv3_now() + p->timeout;
  int have = 0;
  while (have < p->world - 1) {
    double left = deadline - dsv3_now();
    struct pollfd pf = {lfd, POLLIN, 0};
    int pr = left > 0 ? poll(&pf, 1, (int)(left * 1000) + 1) : 0;
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) {
      char miss[256] = "";
      size_t o = 0;
      for (int r = 1; r < p->world && o + 12 < sizeof miss; r++)
        if (d->fd[r] < 0) o += (size_t)snprintf(miss + o, sizeof miss - o, "%s%d", o ? "," : "", r);
      dsv3_error_set("rendezvous: rank(s) %s did not connect to rank 0 (port %d) within %.0f s", miss, p->port, p->timeout);
      goto fail;
    }
    int c = accept(lfd, NULL, NULL);
    if (c < 0) continue;
    tune(c);
    uint32_t type;
    void *buf;
    size_t n;
    int rc = recv_msg(c, &type, &buf, &n, dsv3_now() + 10);
    int32_t *hv = buf;
    if (rc || type != MSG_HELLO || n != 8) { /* not one of ours: ignore it */
      free(buf);
      close(c);
      continue;
    }
    int r = hv[0], w = hv[1];
    free(buf);
    if (w != p->world || r <= 0 || r >= p->world || d->fd[r] >= 0) {
      char msg[160];
      snprintf(msg, sizeof msg, "rank 0 runs a world of %d ranks; a process came as rank %d of %d", p->world, r, w);
      send_msg(c, MSG_FAIL, msg, strlen(msg));
      close(c);
      dsv3_error_set("rendezvous: %s", msg);
      goto fail;
    }
    d->fd[r] = c;
    have++;
  }
  if (start_dog(d)) goto fail;
  *out = d;
  return 0;
fail:
  dsv3_dist_free(d);
  return -1;
}

static int connect_once(const dsv3_dist_params *p) {
  char port[16];
  snprintf(port, sizeof port, "%d", p->port);
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(p->host, port, &hints, &ai) || !ai) return -2;
  int fd = -1;
  for (struct addrinfo *a = ai; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  return fd;
}

int dsv3_dist_connect(const dsv3_dist_params *p, dsv3_dist **out) {
  *out = NULL;
  if (p->rank == 0) {
    int lfd, got;
    if (dsv3_dist_listen(p->host, p->port, &lfd, &got)) return -1;
    int rc = dsv3_dist_connect_leader(p, lfd, out);
    close(lfd);
    return rc;
  }
  dsv3_dist *d = dist_new(p);
  double deadline = dsv3_now() + p->timeout;
  int fd;
  for (;;) {
    fd = connect_once(p);
    if (fd == -2) {
      dsv3_error_set("rendezvous: rank %d: cannot resolve rank 0's host %s", p->rank, p->host);
      goto fail;
    }
    if (fd >= 0) break;
    if (dsv3_now() > deadline) {
      dsv3_error_set("rendezvous: rank %d: rank 0 (%s:%d) did not answer within %.0f s", p->rank, p->host, p->port,
                     p->timeout);
      goto fail;
    }
    usleep(100000);
  }
  tune(fd);
  d->fd[0] = fd;
  int32_t hv[2] = {p->rank, p->world};
  if (send_msg(fd, MSG_HELLO, hv, sizeof hv)) {
    dsv3_error_set("rendezvous: rank %d: lost rank 0", p->rank);
    goto fail;
  }
  if (start_dog(d)) goto fail;
  *out = d;
  return 0;
fail:
  dsv3_dist_free(d);
  return -1;
}

void dsv3_dist_free(dsv3_dist *d) {
  if (!d) return;
  if (d->dog_on) {
    d->quit = 1;
    pthread_join(d->dog, NULL);
  }
#ifdef DSV3_HAVE_NCCL
  /* every stream was synchronised: nothing is in flight.  ncclCommDestroy would wait for the
   * other ranks to destroy theirs too (a deadlock when rank 0's thread joins the others
   * first); abort frees this rank's resources alone. */
  if (d->comm) ncclCommAbort((ncclComm_t)d->comm);
#endif
  for (int i = 0; i < d->nfd; i++)
    if (d->fd[i] >= 0) close(d->fd[i]);
  free(d->fd);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

int dsv3_dist_rank(const dsv3_dist *d) { return d->p.rank; }
int dsv3_dist_world(const dsv3_dist *d) { return d->p.world; }

/* ------------------------------------------------------------------ messages */
static volatile int lost; /* a peer rank is gone: nothing more can run */
int dsv3_dist_lost(void) { return lost; }

int dsv3_dist_send(dsv3_dist *d, uint32_t type, const void *buf, size_t n) {
  for (int r = 1; r < d->p.world; r++)
    if (send_msg(d->fd[r], type, buf, n)) {
      dsv3_error_set("rank 0: rank %d is gone (its connection closed)", r);
      lost = 1;
      return -1;
    }
  return 0;
}

int dsv3_dist_recv(dsv3_dist *d, uint32_t *type, void **buf, size_t *n) {
  int rc = recv_msg(d->fd[0], type, buf, n, 0);
  if (rc) {
    lost = 1;
    dsv3_error_set("rank %d: rank 0 is gone (%s)", d->p.rank, io_err(rc));
    return -1;
  }
  if (*type == MSG_FAIL) {
    dsv3_error_set("rank %d: %s", d->p.rank, (char *)*buf);
    free(*buf);
    *buf = NULL;
    return -1;
  }
  return 0;
}

int dsv3_dist_agree(dsv3_dist *d, int ok) {
  const int world = d->p.world;
  char mine[1024];
  snprintf(mine, sizeof mine, "%s", ok ? "" : dsv3_error());
  if (d->p.rank != 0) {
    dsv3_dist_guard(d, "waiting for every rank to load");
    int rc = send_msg(d->fd[0], MSG_STATUS, mine, strlen(mine));
    uint32_t type = 0;
    void *buf = NULL;
    size_t n = 0;
    if (!rc) rc = recv_msg(d->fd[0], &type, &buf, &n, 0);
    dsv3_dist_unguard(d);
    if (rc) {
      free(buf);
      dsv3_error_set("rank %d: rank 0 is gone (%s)", d->p.rank, io_err(rc));
      return -1;
    }
    if (type == MSG_VERDICT && n == sizeof d->nccl_id) {
      memcpy(d->nccl_id, buf, sizeof d->nccl_id);
      free(buf);
      return 0;
    }
    dsv3_error_set("%s", type == MSG_FAIL ? (char *)buf : "rank 0 sent a garbled verdict");
    free(buf);
    return -1;
  }
  /* rank 0: every status, then one verdict for all; identical errors are named once */
  char **msg = dsv3_xcalloc((size_t)world, sizeof *msg);
  int bad = !ok;
  msg[0] = ok ? NULL : dsv3_xstrdup(mine);
  double deadline = dsv3_now() + d->p.timeout;
  for (int r = 1; r < world; r++) {
    uint32_t type = 0;
    void *buf = NULL;
    size_t n = 0;
    int rc = recv_msg(d->fd[r], &type, &buf, &n, deadline);
    char line[1100];
    if (rc) snprintf(line, sizeof line, "did not report (%s)", io_err(rc));
    else if (type != MSG_STATUS) snprintf(line, sizeof line, "sent a garbled status");
    else if (n) snprintf(line, sizeof line, "%s", (char *)buf);
    else line[0] = 0;
    free(buf);
    if (line[0]) msg[r] = dsv3_xstrdup(line), bad = 1;
  }
  char *why = dsv3_xstrdup("");
  for (int r = 0; r < world; r++) {
    if (!msg[r]) continue;
    char ranks[256] = "";
    size_t o = 0;
    for (int q = r; q < world; q++)
      if (msg[q] && (q == r || !strcmp(msg[q], msg[r]))) {
        if (o + 16 < sizeof ranks) o += (size_t)snprintf(ranks + o, sizeof ranks - o, "%s%d", o ? "," : "", q);
        if (q != r) {
          free(msg[q]);
          msg[q] = NULL;
        }
      }
    size_t l = strlen(why) + strlen(ranks) + strlen(msg[r]) + 16;
    char *w = dsv3_xmalloc(l);
    snprintf(w, l, "%s%srank %s: %s", why, *why ? "; " : "", ranks, msg[r]);
    free(why);
    free(msg[r]);
    msg[r] = NULL;
    why = w;
  }
  free(msg);
  int rc = 0;
  if (!bad) {
#ifdef DSV3_HAVE_NCCL
    ncclUniqueId id;
    ncclResult_t nr = ncclGetUniqueId(&id);
    if (nr != ncclSuccess) {
      free(why);
      why = dsv3_xstrdup(ncclGetErrorString(nr));
      bad = 1;
    } else {
      memcpy(d->nccl_id, &id, sizeof d->nccl_id);
    }
#endif
  }
  if (bad) {
    char *w = dsv3_xmalloc(strlen(why) + 32);
    sprintf(w, "ranks not ready: %s", why);
    for (int r = 1; r < world; r++) send_msg(d->fd[r], MSG_FAIL, w, strlen(w));
    dsv3_error_set("%s", w);
    free(w);
    rc = -1;
  } else {
    for (int r = 1; r < world; r++)
      if (send_msg(d->fd[r], MSG_VERDICT, d->nccl_id, sizeof d->nccl_id)) {
        dsv3_error_set("rank 0: rank %d is gone", r);
        rc = -1;
      }
  }
  free(why);
  return rc;
}

void dsv3_dist_report_failure(dsv3_dist *d) {
  if (d && d->p.rank != 0 && d->fd[0] >= 0) {
    const char *e = dsv3_error();
    send_msg(d->fd[0], MSG_FAIL, e, strlen(e));
  }
}

/* ------------------------------------------------------------------ watchdog */
void dsv3_dist_guard(dsv3_dist *d, const char *what) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  snprintf(d->what, sizeof d->what, "%s", what);
  d->deadline = dsv3_now() + d->p.timeout;
  pthread_mutex_unlock(&d->mu);
}
void dsv3_dist_unguard(dsv3_dist *d) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  d->deadline = 0;
  pthread_mutex_unlock(&d->mu);
}

static void die_now(dsv3_dist *d, const char *msg) {
  fflush(stdout);
  fprintf(stderr, "dsv3-run: error: rank %d: %s\n", d->p.rank, msg);
  fflush(stderr);
  _exit(1);
}

static void *watchdog(void *arg) {
  dsv3_dist *d = arg;
  struct pollfd *pf = dsv3_xcalloc((size_t)d->nfd, sizeof *pf);
  while (!d->quit) {
    pthread_mutex_lock(&d->mu);
    double dl = d->deadline;
    char what[128];
    memcpy(what, d->what, sizeof what);
    pthread_mutex_unlock(&d->mu);
    if (dl == 0) {
      usleep(20000);
      continue;
    }
    char msg[1400];
    if (dsv3_now() > dl) {
      snprintf(msg, sizeof msg, "%s: no progress for %.0f s (a rank hangs or died; --timeout)", what, d->p.timeout);
      die_now(d, msg);
    }
    int n = 0;
    for (int i = 0; i < d->nfd; i++)
      if (d->fd[i] >= 0) pf[n++] = (struct pollfd){d->fd[i], POLLRDHUP, 0};
    if (poll(pf, (nfds_t)n, 20) > 0) {
      for (int i = 0; i < n; i++) {
        if (!(pf[i].revents & (POLLRDHUP | POLLHUP | POLLERR))) continue;
        pthread_mutex_lock(&d->mu);
        int still = d->deadline != 0;
        pthread_mutex_unlock(&d->mu);
        if (!still) break;
        int peer = d->p.rank == 0 ? -1 : 0;
        for (int r = 0; d->p.rank == 0 && r < d->nfd; r++)
          if (d->fd[r] == pf[i].fd) peer = r;
        /* a failing follower says why before it closes */
        uint32_t type;
        void *buf = NULL;
        size_t len;
        if (d->p.rank == 0 && recv_msg(pf[i].fd, &type, &buf, &len, dsv3_now() + 0.5) == 0 && type == MSG_FAIL)
          snprintf(msg, sizeof msg, "%s: rank %d failed: %s", what, peer, (char *)buf);
        else snprintf(msg, sizeof msg, "%s: rank %d is gone (its connection closed)", what, peer);
        free(buf);
        die_now(d, msg);
      }
    }
  }
  free(pf);
  return NULL;
}

/* ------------------------------------------------------------------ NCCL */
int dsv3_dist_have_nccl(void) {
#ifdef DSV3_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

void *dsv3_dist_nccl(dsv3_dist *d) {
#ifdef DSV3_HAVE_NCCL
  if (d->comm) return d->comm;
  ncclUniqueId id;
  memcpy(&id, d->nccl_id, sizeof id);
  ncclComm_t comm;
  dsv3_dist_guard(d, "NCCL initialisation");
  ncclResult_t r = ncclCommInitRank(&comm, d->p.world, id, d->p.rank);
  dsv3_dist_unguard(d);
  if (r != ncclSuccess) {
    dsv3_error_set("rank %d: NCCL initialisation: %s", d->p.rank, ncclGetErrorString(r));
    return NULL;
  }
  d->comm = comm;
  return comm;
#else
  dsv3_error_set("this dsv3-run was built without NCCL: multi-rank runs need it (install NCCL and rebuild)");
  (void)d;
  return NULL;
#endif
}
