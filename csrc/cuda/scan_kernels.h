// extern "C" launchers of the fused CUDA kernels, on raw device pointers and a stream (no torch types).
//
// Every launcher returns nullptr on success or the CUDA error's description. `dtype` is a PnaDtype, the input
// dtype; activations (u, delta, z, B, C, grad_out and the activation gradients) are in
// that dtype, everything else is float32. All arrays are contiguous. Shapes: u, delta, z: (batch, D, L);
// A, halt_weight: (D, N); B, C: (batch, G, N, L); Dskip, delta_bias: (D,); halt_bias: one float;
// states: (batch, D, N). A nullptr z means no gate.
#pragma once

#include <cuda_runtime.h>

extern "C" {

enum PnaDtype { PNA_FLOAT32 = 0, PNA_FLOAT16 = 1, PNA_BFLOAT16 = 2 };

// Blocks per batch row (the partial-sum buffers below have this many rows per batch element).
int pna_cuda_num_dblocks(int dim, int groups, int dstate);

// Steps per checkpoint chunk the kernels are compiled for.
int pna_cuda_chunk_size(void);

// Forward. Writes out (batch, D, L) in the input dtype; last_state (batch, D, N), checkpoints
// (batch, ceil(L / chunk), D, N): the state before every chunk; entropy, halt (batch, L) and entropy_sums
// (batch, 2, L) holding S1 and S2. `partials` is scratch of 3 * batch * num_dblocks * L floats.
const char* pna_cuda_scan_forward(int dtype, const void* u, const void* delta, const float* A, const void* B,
                                  const void* C, const float* Dskip, const void* z, const float* delta_bias,
                                  const float* halt_weight, const float* halt_bias, const float* initial_state,
                                  int delta_softplus, int batch, int dim, int length, int dstate, int groups,
                                  void* out, float* last_state, float* checkpoints, float* partials, float* entropy,
                                  float* halt, float* entropy_sums, cudaStream_t stream);

// Backward. grad_out in the input dtype; grad_entropy, grad_halt (batch, L) and grad_last_state (batch, D, N)
// float32. Writes du, ddelta, dz (if z) in the input dtype and per-batch-row / per-block partial sums that the
// caller adds up in a fixed order: dA_rows, dhalt_weight_rows (batch, D, N); dD_rows, ddelta_bias_rows (batch, D);
// dB_blocks, dC_blocks (batch, num_dblocks, N, L) (sum the blocks of each group); and dinitial_state (batch, D, N).
const char* pna_cuda_scan_backward(int dtype, const void* grad_out, const float* grad_entropy, const float* grad_halt,
                                   const float* grad_last_state, const void* u, const void* delta, const float* A,
                                   const void* B, const void* C, const float* Dskip, const void* z,
                                   const float* delta_bias, const float* halt_weight, const float* checkpoints,
                                   const float* entropy_sums, int delta_softplus, int batch, int dim, int length,
                                   int dstate, int groups, void* du, void* ddelta, void* dz, float* dA_rows,
                                   float* dB_blocks, float* dC_blocks, float* dD_rows, float* ddelta_bias_rows,
                                   float* dhalt_weight_rows, float* dinitial_state, cudaStream_t stream);

// One decode step: x, dt, z (batch, D) and B, C (batch, G, N) in the input dtype; state (batch, D, N) float32 is
// updated in place. Writes y (batch, D) in the input dtype, entropy and halt (batch,). `partials` is scratch of
// 3 * batch * num_dblocks floats.
const char* pna_cuda_state_update(int dtype, float* state, const void* x, const void* dt, const float* A,
                                  const void* B, const void* C, const float* Dskip, const void* z,
                                  const float* dt_bias, const float* halt_weight, const float* halt_bias,
                                  int dt_softplus, int batch, int dim, int dstate, int groups, void* y,
                                  float* partials, float* entropy, float* halt, cudaStream_t stream);

}  // extern "C"
