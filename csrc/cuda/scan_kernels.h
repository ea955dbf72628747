// extern "C" launchers of the fused CUDA kernels, on raw device pointers and a stream (no torch types).
//
// The argument structs mirror the dataclasses of pna_kernels/contract.py (ScanArgs, ScanResult, ScanSaved,
// ScanCotangents, ScanGrads, StateUpdateArgs, StateUpdateResult) as pointers, plus the scratch buffers and
// per-block / per-row partial sums that the caller allocates. Every launcher returns nullptr on success or a
// description of what failed (a static string). `dtype` is a PnaDtype, the input dtype: activations (u, delta, z,
// B, C, grad_out and the activation gradients; x, dt, z, B, C, y in the decode step) are in that dtype, everything
// else is float32. All arrays are contiguous. Shapes: u, delta, z: (batch, D, L); A, halt_weight: (D, N); B, C:
// (batch, G, N, L); D, delta_bias: (D,); halt_bias: one float; states: (batch, D, N). A nullptr z means no gate.
//
// The compile-time limits come from pna_kernels/cuda.py (one home): it passes -DPNA_CUDA_CHUNK (steps per
// checkpoint chunk) and -DPNA_CUDA_MAX_STATE (the largest N) to every compile.
#pragma once

#include <cuda_runtime.h>

#if !defined(PNA_CUDA_CHUNK) || !defined(PNA_CUDA_MAX_STATE)
#error "compile with -DPNA_CUDA_CHUNK=<steps per chunk> -DPNA_CUDA_MAX_STATE=<max N> (see pna_kernels/cuda.py)"
#endif
// The forward-side kernel options (pna_kernels/cuda_options.py: KernelOptions.defines() passes every one).
#if !defined(PNA_CUDA_PLAIN) || !defined(PNA_CUDA_LANES_PER_CHANNEL) || !defined(PNA_CUDA_PRECOMPUTE_GATES) || \
    !defined(PNA_CUDA_FAST_LOG2) || !defined(PNA_CUDA_PARALLEL_COMBINE) || !defined(PNA_CUDA_FORWARD_TIMESTEPS)
#error "compile with every -D flag of pna_kernels/cuda_options.py's KernelOptions.defines() (PNA_CUDA_PLAIN, ...)"
#endif

extern "C" {

enum PnaDtype { PNA_FLOAT32 = 0, PNA_FLOAT16 = 1, PNA_BFLOAT16 = 2 };

// contract.ScanArgs (chunk_size is PNA_CUDA_CHUNK).
typedef struct PnaScanArgs {
  int dtype;
  int batch, dim, length, dstate, groups;
  int delta_softplus, with_channel_mean;
  const void* u;
  const void* delta;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* delta_bias;
  const float* halt_weight;
  const float* halt_bias;
  const float* initial_state;
} PnaScanArgs;

// contract.ScanResult, written by the forward: out (batch, D, L) in the input dtype; entropy, halt_logits
// (batch, L); last_state (batch, D, N); channel_mean (batch, L, N) (only with with_channel_mean); checkpoints
// (batch, ceil(L / chunk), D, N): the state before every chunk; entropy_sums (batch, 2, L): S1 and S2. Scratch:
// partials, 3 * batch * num_dblocks * L floats; channel_partials, batch * num_dblocks * L * N floats (only with
// with_channel_mean).
typedef struct PnaScanResult {
  void* out;
  float* entropy;
  float* halt_logits;
  float* last_state;
  float* channel_mean;
  float* checkpoints;
  float* entropy_sums;
  float* partials;
  float* channel_partials;
} PnaScanResult;

// contract.ScanSaved.
typedef struct PnaScanSaved {
  const float* checkpoints;
  const float* entropy_sums;
} PnaScanSaved;

// contract.ScanCotangents: grad_out in the input dtype; grad_entropy, grad_halt (batch, L), grad_last_state
// (batch, D, N), grad_channel_mean (batch, L, N) (only with with_channel_mean) in float32.
typedef struct PnaScanCotangents {
  const void* grad_out;
  const float* grad_entropy;
  const float* grad_halt;
  const float* grad_last_state;
  const float* grad_channel_mean;
} PnaScanCotangents;

// What the backward writes for contract.ScanGrads: u, delta, z (if z) in the input dtype and initial_state
// (batch, D, N) directly; the rest as partial sums the caller adds up in a fixed order: A_rows, halt_weight_rows
// (batch, D, N); D_rows, delta_bias_rows (batch, D); B_blocks, C_blocks (batch, dbdc_slabs, N, L) (sum the slabs
// of each group). dhalt_bias is the sum of grad_halt.
typedef struct PnaScanGradParts {
  void* u;
  void* delta;
  void* z;
  float* A_rows;
  float* B_blocks;
  float* C_blocks;
  float* D_rows;
  float* delta_bias_rows;
  float* halt_weight_rows;
  float* initial_state;
} PnaScanGradParts;

// contract.StateUpdateArgs: state (batch, D, N) float32, updated in place; x, dt, z (batch, D) and B, C
// (batch, G, N) in the input dtype.
typedef struct PnaStateUpdateArgs {
  int dtype;
  int batch, dim, dstate, groups;
  int dt_softplus;
  float* state;
  const void* x;
  const void* dt;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* dt_bias;
  const float* halt_weight;
  const float* halt_bias;
} PnaStateUpdateArgs;

// contract.StateUpdateResult: y (batch, D) in the input dtype; entropy, halt_logits (batch,); channel_mean
// (batch, N). Scratch: partials, 3 * batch * num_dblocks floats; channel_partials, batch * num_dblocks * N floats.
typedef struct PnaStateUpdateResult {
  void* y;
  float* entropy;
  float* halt_logits;
  float* channel_mean;
  float* partials;
  float* channel_partials;
} PnaStateUpdateResult;

// Blocks per batch row (the partial-sum buffers above have this many rows per batch element).
int pna_cuda_num_dblocks(int dim, int groups, int dstate);

// Slabs per batch row of the backward's B_blocks / C_blocks (groups * slabs per group, in group order).
int pna_cuda_dbdc_slabs(int dim, int groups, int dstate);

// sizeof of the structs above, in the order they are declared, so a foreign-function caller can check its mirror.
int pna_cuda_struct_sizes(int* sizes, int count);

const char* pna_cuda_scan_forward(const PnaScanArgs* args, const PnaScanResult* result, cudaStream_t stream);
const char* pna_cuda_scan_backward(const PnaScanArgs* args, const PnaScanSaved* saved, const PnaScanCotangents* cot,
                                   const PnaScanGradParts* grads, cudaStream_t stream);
const char* pna_cuda_state_update(const PnaStateUpdateArgs* args, const PnaStateUpdateResult* result,
                                  cudaStream_t stream);

}  // extern "C"
