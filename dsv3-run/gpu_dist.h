/* gpu_dist.h - dsv3-run across ranks: the launch environment, a TCP rendezvous with rank 0
 * (which hands out the NCCL unique id and, later, the work of every forward call), NCCL, and a
 * watchdog that ends the process with a clear error when a rank dies or a collective hangs.
 *
 * Life of a run:   dsv3_dist_connect       every rank reaches rank 0 over TCP
 *                  (setup message)         rank 0 -> all: batch size, cache length
 *                  load the shard, upload  each rank on its GPU
 *                  dsv3_dist_agree         every rank's status to rank 0; all or none go on
 *                  forward calls           rank 0 sends each call's tokens; all run it
 *                  DSV3_MSG_EXIT           rank 0 -> all
 * The followers (rank > 0) read nothing from stdin and print only errors. */
#ifndef DSV3_GPU_DIST_H
#define DSV3_GPU_DIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int rank, world, local_rank;
  char host[256]; /* rank 0's address */
  int port;       /* rank 0 listens here */
  double timeout; /* seconds: rendezvous, load agreement, each forward call */
  const char *source; /* "torchrun", "mpirun", "srun", "--gpus", ... */
} dsv3_dist_params;

/* Read a launcher's environment: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
 * MASTER_PORT), Open MPI (OMPI_COMM_WORLD_*), MPICH/Hydra (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID),
 * Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, first host of SLURM_STEP_NODELIST).  Rank 0
 * listens on DSV3_MASTER_PORT, else MASTER_PORT + 1 (torchrun's own store holds MASTER_PORT),
 * else 29511; its host is MASTER_ADDR, else Slurm's first node, else 127.0.0.1.
 * Returns 1 when a multi-rank launch was found, 0 when none, -1 on inconsistent values. */
int dsv3_dist_from_env(dsv3_dist_params *p);

typedef struct dsv3_dist dsv3_dist;

/* Rendezvous: rank 0 listens (port 0: any free port, see dsv3_dist_listen for --gpus) and
 * accepts the other ranks; they connect, retrying until the timeout. */
int dsv3_dist_connect(const dsv3_dist_params *p, dsv3_dist **out);
/* For --gpus: rank 0's listening socket, opened before the other threads start; *port is the
 * port it got.  Pass the result to dsv3_dist_connect_leader. */
int dsv3_dist_listen(const char *host, int port, int *fd, int *got_port);
int dsv3_dist_connect_leader(const dsv3_dist_params *p, int listen_fd, dsv3_dist **out);
void dsv3_dist_free(dsv3_dist *d);
int dsv3_dist_rank(const dsv3_dist *d);
int dsv3_dist_world(const dsv3_dist *d);

/* Messages from rank 0 to every other rank (rank 0: send; the others: recv, which waits as long
 * as rank 0 needs, and fails when rank 0's connection closes). */
enum { DSV3_MSG_SETUP = 1, DSV3_MSG_WORK = 2, DSV3_MSG_EXIT = 3 };
int dsv3_dist_send(dsv3_dist *d, uint32_t type, const void *buf, size_t n);
/* 1 once a send or receive found a peer rank gone: the run cannot go on (chat stops) */
int dsv3_dist_lost(void);
int dsv3_dist_recv(dsv3_dist *d, uint32_t *type, void **buf, size_t *n); /* *buf: malloc'd */

/* Every rank reports ok or its error (dsv3_error()) to rank 0, which tells all of them whether
 * every rank is ready; on failure each rank's error names the failing ranks and theirs. */
int dsv3_dist_agree(dsv3_dist *d, int ok);

/* A guarded section (a collective, a forward call): while one is open, a watchdog thread ends
 * the process with exit status 1 and an error naming `what` when it outlasts the timeout or a
 * peer's connection closes (a rank died). */
void dsv3_dist_guard(dsv3_dist *d, const char *what);
void dsv3_dist_unguard(dsv3_dist *d);
/* A follower that fails tells rank 0 why before it exits. */
void dsv3_dist_report_failure(dsv3_dist *d);

/* NCCL, after dsv3_dist_agree: the communicator of all ranks on the current CUDA device.
 * Returns an ncclComm_t (void * here, so that callers need no nccl.h), NULL on error. */
void *dsv3_dist_nccl(dsv3_dist *d);
int dsv3_dist_have_nccl(void);

#ifdef __cplusplus
}
#endif
#endif
