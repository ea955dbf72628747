// Entry points of the C++/OpenMP CPU backend. Every function writes into preallocated, contiguous CPU outputs
// and writes every element of them. All tensors are float32 or all float64 (the compute dtype); the Python
// wrapper (pna_kernels/cpu.py) upcasts float16/bfloat16 activations before the call.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace pna_cpu {

// Fused forward. u, delta, z: (batch, D, L); A, halt_weight: (D, N); B, C: (batch, G, N, L); D, delta_bias: (D,);
// halt_bias: (); initial_state: (batch, D, N). Writes out (batch, D, L), entropy and halt (batch, L),
// last_state (batch, D, N), checkpoints (batch, ceil(L / chunk), D, N) = the state before every chunk, and
// entropy_sums (batch, 2, L) = S1, S2 of every step.
void scan_forward_out(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                      const at::Tensor& C, const at::Tensor& D, const std::optional<at::Tensor>& z,
                      const at::Tensor& delta_bias, const at::Tensor& halt_weight, const at::Tensor& halt_bias,
                      const at::Tensor& initial_state, bool delta_softplus, int64_t chunk, int64_t num_threads,
                      at::Tensor& out, at::Tensor& entropy, at::Tensor& halt, at::Tensor& last_state,
                      at::Tensor& checkpoints, at::Tensor& entropy_sums);

// Fused backward from the forward's checkpoints and entropy sums. grad_out: (batch, D, L); grad_entropy,
// grad_halt: (batch, L); grad_last_state: (batch, D, N). Writes the gradient of every input into the tensor of
// the same shape (dz only when z is given).
void scan_backward_out(const at::Tensor& grad_out, const at::Tensor& grad_entropy, const at::Tensor& grad_halt,
                       const at::Tensor& grad_last_state, const at::Tensor& u, const at::Tensor& delta,
                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                       const std::optional<at::Tensor>& z, const at::Tensor& delta_bias,
                       const at::Tensor& halt_weight, const at::Tensor& halt_bias, const at::Tensor& initial_state,
                       const at::Tensor& checkpoints, const at::Tensor& entropy_sums, bool delta_softplus,
                       int64_t chunk, int64_t num_threads, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA,
                       at::Tensor& dB, at::Tensor& dC, at::Tensor& dD, const std::optional<at::Tensor>& dz,
                       at::Tensor& ddelta_bias, at::Tensor& dhalt_weight, at::Tensor& dhalt_bias,
                       at::Tensor& dinitial_state);

// One decode step. state: (batch, D, N), updated in place; x, dt, z: (batch, D); B, C: (batch, G, N).
// Writes y (batch, D), entropy and halt (batch,).
void state_update_out(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                      const std::optional<at::Tensor>& z, const at::Tensor& dt_bias, const at::Tensor& halt_weight,
                      const at::Tensor& halt_bias, bool dt_softplus, int64_t num_threads, at::Tensor& y,
                      at::Tensor& entropy, at::Tensor& halt);

}  // namespace pna_cpu
