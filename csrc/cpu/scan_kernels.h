// Entry points of the C++/OpenMP CPU backend. They take and return structs that mirror the dataclasses of
// pna_kernels/contract.py field by field (bindings.cpp converts by field name), allocate their outputs and write
// every element of them. All tensors are contiguous CPU tensors, all float32 or all float64 (the compute dtype);
// the Python wrapper (pna_kernels/cpu.py) upcasts float16/bfloat16 activations before the call.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace pna_cpu {

// contract.ScanArgs. u, delta, z: (batch, D, L); A, halt_weight: (D, N); B, C: (batch, G, N, L); D, delta_bias:
// (D,); halt_bias: (); initial_state: (batch, D, N).
struct ScanArgs {
  at::Tensor u, delta, A, B, C, D;
  std::optional<at::Tensor> z;
  at::Tensor delta_bias, halt_weight, halt_bias, initial_state;
  bool delta_softplus = false;
  bool with_channel_mean = false;
  int64_t chunk_size = 0;
};

// contract.ScanResult: out (batch, D, L); entropy, halt_logits (batch, L); last_state (batch, D, N); channel_mean
// (batch, L, N) or (0,) when not asked for; checkpoints (batch, ceil(L / chunk), D, N) = the state before every
// chunk; entropy_sums (batch, 2, L) = S1, S2 of every step.
struct ScanResult {
  at::Tensor out, entropy, halt_logits, last_state, channel_mean, checkpoints, entropy_sums;
};

// contract.ScanSaved.
struct ScanSaved {
  at::Tensor checkpoints, entropy_sums;
};

// contract.ScanCotangents: grad_out (batch, D, L); grad_entropy, grad_halt (batch, L); grad_last_state
// (batch, D, N); grad_channel_mean (batch, L, N), or (0,) when the forward had no channel mean.
struct ScanCotangents {
  at::Tensor grad_out, grad_entropy, grad_halt, grad_last_state, grad_channel_mean;
};

// contract.ScanGrads: the gradient of every input in its shape (z only when z is given).
struct ScanGrads {
  at::Tensor u, delta, A, B, C, D;
  std::optional<at::Tensor> z;
  at::Tensor delta_bias, halt_weight, halt_bias, initial_state;
};

// contract.StateUpdateArgs. state: (batch, D, N), updated in place; x, dt, z: (batch, D); B, C: (batch, G, N).
struct StateUpdateArgs {
  at::Tensor state, x, dt, A, B, C, D;
  std::optional<at::Tensor> z;
  at::Tensor dt_bias, halt_weight, halt_bias;
  bool dt_softplus = false;
};

// contract.StateUpdateResult: y (batch, D); entropy, halt_logits (batch,); channel_mean (batch, N).
struct StateUpdateResult {
  at::Tensor y, entropy, halt_logits, channel_mean;
};

ScanResult scan_forward(const ScanArgs& args, int64_t num_threads);
ScanGrads scan_backward(const ScanArgs& args, const ScanSaved& saved, const ScanCotangents& cot, int64_t num_threads);
StateUpdateResult state_update(const StateUpdateArgs& args, int64_t num_threads);

}  // namespace pna_cpu
