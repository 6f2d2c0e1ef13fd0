/* gpu_model.h - the GPU backend of dsv3-run: a dsv3_model's weights resident on one CUDA
 * device, a bf16 latent KV cache for max_batch sequences of the model's max_seq_len, and the
 * forward pass built from kernels/cuda.  Decode steps of up to DSV3_GPU_GRAPH_MAX tokens are
 * captured once per token count as a CUDA graph and replayed.
 *
 * Numerics: activations float32 (as the CPU path with --act f32), FP8 weights seen as
 * bf16(e4m3 * scale) like the CPU reference, latent cache bf16 (as the official demo), prefill
 * GEMMs with bf16-rounded activations.  Compare with the CPU path to bf16 precision. */
#ifndef DSV3_GPU_MODEL_H
#define DSV3_GPU_MODEL_H

#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV3_GPU_GRAPH_MAX 64 /* decode steps of <= this many tokens run as CUDA graphs */

typedef struct dsv3_gpu dsv3_gpu;

/* Upload the weights of `m` (which must stay open: the CPU side keeps config and tables) to
 * device `device` and allocate the cache for max_batch sequences of m->max_seq_len positions.
 * Out of memory is an error naming the bytes needed and free. */
int dsv3_gpu_load(const dsv3_model *m, int64_t max_batch, int device, dsv3_gpu **out);
void dsv3_gpu_free(dsv3_gpu *g);
/* Device bytes held: weights and cache. */
void dsv3_gpu_memory(const dsv3_gpu *g, uint64_t *weights, uint64_t *cache);
void dsv3_gpu_set_graphs(dsv3_gpu *g, int on); /* default on */

/* Run n tokens: token i belongs to sequence seq[i] (< max_batch) at position pos[i]; the
 * cache rows [0, pos[i]) of that sequence must have been filled by earlier calls (or earlier
 * tokens of this call).  A prefill is n tokens of one sequence at consecutive positions; a
 * batch decode step one token per sequence.  logits (host): [n, vocab] when all_logits, else
 * the last token's [vocab]; NULL for none. */
int dsv3_gpu_forward(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos,
                     float *logits, int all_logits);
/* The same, with the next tokens sampled on the device (dsv3_cuda_sample with the parameters
 * of dsv3_gpu_set_sampling: temperature 0 is argmax, the first index on ties) so only the ids
 * cross to the host: ids [n] (all_rows) or [1] (the last token). */
int dsv3_gpu_forward_ids(dsv3_gpu *g, int64_t n, const int32_t *tokens, const int32_t *seq, const int32_t *pos,
                         int32_t *ids, int all_rows);
/* Sampling for dsv3_gpu_forward_ids (default: greedy).  The noise of row r is drawn from (seed,
 * r, its position), so a seed repeats a run on the GPU (not the host sampler's draws). */
void dsv3_gpu_set_sampling(dsv3_gpu *g, double temperature, double top_p, uint64_t seed);

/* Model parallelism (the model was loaded with dsv3_model_load_rank): after dsv3_dist_agree,
 * attach the ranks' NCCL communicator.  Then rank 0 calls dsv3_gpu_forward as above (it sends
 * every call to the other ranks, and gets the whole vocabulary's logits), the other ranks
 * call dsv3_gpu_follow, which runs rank 0's calls until dsv3_gpu_finish.  Collectives as
 * the official model.py: all-reduce after the vocab-parallel embedding, the row-parallel
 * o_proj, the dense MLP and the MoE (routed experts E/mp per rank plus the shared experts'
 * part), all-gather of the logits; on the compute stream, inside the decode graphs. */
struct dsv3_dist;
int dsv3_gpu_attach(dsv3_gpu *g, struct dsv3_dist *d);
int dsv3_gpu_follow(dsv3_gpu *g);
void dsv3_gpu_finish(dsv3_gpu *g);
/* Benchmarks only: skip the collectives (results are wrong) to measure their share. */
void dsv3_gpu_set_comm(dsv3_gpu *g, int on);

#ifdef __cplusplus
}
#endif
#endif
