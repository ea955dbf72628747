// Python bindings of the CUDA backend (loaded by pna_kernels/cuda.py): allocate outputs and scratch with torch,
// call the extern "C" launchers of scan_kernels.h on the current stream, turn a launcher's error into a Python
// RuntimeError, and add up the kernels' per-block / per-row partial sums in a fixed order (torch sums, which are
// deterministic for a given shape).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

#include "scan_kernels.h"

namespace {

using at::Tensor;

int dtype_code(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return PNA_FLOAT32;
    case at::kHalf: return PNA_FLOAT16;
    case at::kBFloat16: return PNA_BFLOAT16;
    default: TORCH_CHECK(false, "pna cuda: inputs must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return -1;
}

void check(const Tensor& t, const char* name, at::ScalarType dtype, const Tensor& like) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "pna cuda: ", name, " must be on ", like.device());
  TORCH_CHECK(t.scalar_type() == dtype, "pna cuda: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "pna cuda: ", name, " must be contiguous");
}

void raise_if_failed(const char* launcher, const char* error) {
  TORCH_CHECK(error == nullptr, "pna cuda: ", launcher, " failed: ", error);
}

template <typename T = float>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

const void* optional_ptr(const std::optional<Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

void check_chunk(int64_t chunk_size) {
  TORCH_CHECK(chunk_size == pna_cuda_chunk_size(), "pna cuda: the kernels are compiled for chunk_size ",
              pna_cuda_chunk_size(), ", got ", chunk_size);
}

// Checks shared by the forward and the backward; returns (batch, D, L, N, G).
std::tuple<int, int, int, int, int> check_scan(const Tensor& u, const Tensor& delta, const Tensor& A,
                                               const Tensor& B, const Tensor& C, const Tensor& D,
                                               const std::optional<Tensor>& z, const Tensor& delta_bias,
                                               const Tensor& halt_weight, const Tensor& halt_bias) {
  const auto dt = u.scalar_type();
  check(u, "u", dt, u);
  check(delta, "delta", dt, u);
  check(B, "B", dt, u);
  check(C, "C", dt, u);
  if (z.has_value()) check(*z, "z", dt, u);
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{A, "A"}, {D, "D"}, {delta_bias, "delta_bias"},
                                {halt_weight, "halt_weight"}, {halt_bias, "halt_bias"}})
    check(t, name, at::kFloat, u);
  TORCH_CHECK(u.dim() == 3 && B.dim() == 4 && A.dim() == 2, "pna cuda: u must be (batch, D, L), B (batch, G, N, L)");
  return {static_cast<int>(u.size(0)), static_cast<int>(u.size(1)), static_cast<int>(u.size(2)),
          static_cast<int>(A.size(1)), static_cast<int>(B.size(1))};
}

std::vector<Tensor> scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                 const Tensor& C, const Tensor& D, const std::optional<Tensor>& z,
                                 const Tensor& delta_bias, const Tensor& halt_weight, const Tensor& halt_bias,
                                 const Tensor& initial_state, bool delta_softplus, int64_t chunk_size) {
  check_chunk(chunk_size);
  const auto [batch, dim, length, dstate, groups] =
      check_scan(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias);
  check(initial_state, "initial_state", at::kFloat, u);
  const c10::cuda::CUDAGuard guard(u.device());
  const auto f32 = u.options().dtype(at::kFloat);
  const int n_chunks = (length + chunk_size - 1) / chunk_size;
  const int n_dblocks = pna_cuda_num_dblocks(dim, groups, dstate);
  Tensor out = at::empty_like(u);
  Tensor entropy = at::empty({batch, length}, f32);
  Tensor halt = at::empty({batch, length}, f32);
  Tensor last_state = at::empty({batch, dim, dstate}, f32);
  Tensor checkpoints = at::empty({batch, n_chunks, dim, dstate}, f32);
  Tensor entropy_sums = at::empty({batch, 2, length}, f32);
  Tensor partials = at::empty({3, batch, n_dblocks, length}, f32);
  raise_if_failed("scan_forward",
                  pna_cuda_scan_forward(dtype_code(u), u.data_ptr(), delta.data_ptr(), ptr(A), B.data_ptr(),
                                        C.data_ptr(), ptr(D), optional_ptr(z), ptr(delta_bias), ptr(halt_weight),
                                        ptr(halt_bias), ptr(initial_state), delta_softplus, batch, dim, length,
                                        dstate, groups, out.data_ptr(), ptr(last_state), ptr(checkpoints),
                                        ptr(partials), ptr(entropy), ptr(halt), ptr(entropy_sums),
                                        c10::cuda::getCurrentCUDAStream()));
  return {out, entropy, halt, last_state, checkpoints, entropy_sums};
}

std::vector<std::optional<Tensor>> scan_backward(
    const Tensor& grad_out, const Tensor& grad_entropy, const Tensor& grad_halt, const Tensor& grad_last_state,
    const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C, const Tensor& D,
    const std::optional<Tensor>& z, const Tensor& delta_bias, const Tensor& halt_weight, const Tensor& halt_bias,
    const Tensor& initial_state, const Tensor& checkpoints, const Tensor& entropy_sums, bool delta_softplus,
    int64_t chunk_size) {
  check_chunk(chunk_size);
  const auto [batch, dim, length, dstate, groups] =
      check_scan(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias);
  check(grad_out, "grad_out", u.scalar_type(), u);
  check(grad_entropy, "grad_entropy", at::kFloat, u);
  check(grad_halt, "grad_halt", at::kFloat, u);
  check(grad_last_state, "grad_last_state", at::kFloat, u);
  check(initial_state, "initial_state", at::kFloat, u);
  check(checkpoints, "checkpoints", at::kFloat, u);
  check(entropy_sums, "entropy_sums", at::kFloat, u);
  const c10::cuda::CUDAGuard guard(u.device());
  const auto f32 = u.options().dtype(at::kFloat);
  const int n_dblocks = pna_cuda_num_dblocks(dim, groups, dstate);
  Tensor du = at::empty_like(u);
  Tensor ddelta = at::empty_like(delta);
  std::optional<Tensor> dz;
  if (z.has_value()) dz = at::empty_like(*z);
  Tensor dA_rows = at::empty({batch, dim, dstate}, f32);
  Tensor dhalt_weight_rows = at::empty({batch, dim, dstate}, f32);
  Tensor dinitial_state = at::empty({batch, dim, dstate}, f32);
  Tensor dD_rows = at::empty({batch, dim}, f32);
  Tensor ddelta_bias_rows = at::empty({batch, dim}, f32);
  Tensor dB_blocks = at::empty({batch, n_dblocks, dstate, length}, f32);
  Tensor dC_blocks = at::empty({batch, n_dblocks, dstate, length}, f32);
  raise_if_failed(
      "scan_backward",
      pna_cuda_scan_backward(dtype_code(u), grad_out.data_ptr(), ptr(grad_entropy), ptr(grad_halt),
                             ptr(grad_last_state), u.data_ptr(), delta.data_ptr(), ptr(A), B.data_ptr(),
                             C.data_ptr(), ptr(D), optional_ptr(z), ptr(delta_bias), ptr(halt_weight),
                             ptr(checkpoints), ptr(entropy_sums), delta_softplus, batch, dim, length, dstate, groups,
                             du.data_ptr(), ddelta.data_ptr(), dz.has_value() ? dz->data_ptr() : nullptr,
                             ptr(dA_rows), ptr(dB_blocks), ptr(dC_blocks), ptr(dD_rows), ptr(ddelta_bias_rows),
                             ptr(dhalt_weight_rows), ptr(dinitial_state), c10::cuda::getCurrentCUDAStream()));
  const int64_t per_group = n_dblocks / groups;
  auto group_sum = [&](const Tensor& blocks, const Tensor& like) {
    return blocks.view({batch, groups, per_group, dstate, length}).sum(2).to(like.scalar_type());
  };
  return {du,
          ddelta,
          dA_rows.sum(0),
          group_sum(dB_blocks, B),
          group_sum(dC_blocks, C),
          dD_rows.sum(0),
          dz,
          ddelta_bias_rows.sum(0),
          dhalt_weight_rows.sum(0),
          grad_halt.sum().reshape(halt_bias.sizes()),
          dinitial_state};
}

std::vector<Tensor> state_update(const Tensor& state, const Tensor& x, const Tensor& dt, const Tensor& A,
                                 const Tensor& B, const Tensor& C, const Tensor& D, const std::optional<Tensor>& z,
                                 const Tensor& dt_bias, const Tensor& halt_weight, const Tensor& halt_bias,
                                 bool dt_softplus) {
  const auto xt = x.scalar_type();
  check(x, "x", xt, x);
  check(dt, "dt", xt, x);
  check(B, "B", xt, x);
  check(C, "C", xt, x);
  if (z.has_value()) check(*z, "z", xt, x);
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{state, "state"}, {A, "A"}, {D, "D"},
                                {dt_bias, "dt_bias"}, {halt_weight, "halt_weight"}, {halt_bias, "halt_bias"}})
    check(t, name, at::kFloat, x);
  TORCH_CHECK(x.dim() == 2 && B.dim() == 3 && A.dim() == 2, "pna cuda: x must be (batch, D), B (batch, G, N)");
  const int batch = static_cast<int>(x.size(0)), dim = static_cast<int>(x.size(1));
  const int dstate = static_cast<int>(A.size(1)), groups = static_cast<int>(B.size(1));
  const c10::cuda::CUDAGuard guard(x.device());
  const auto f32 = x.options().dtype(at::kFloat);
  Tensor y = at::empty_like(x);
  Tensor entropy = at::empty({batch}, f32);
  Tensor halt = at::empty({batch}, f32);
  Tensor partials = at::empty({3, batch, pna_cuda_num_dblocks(dim, groups, dstate)}, f32);
  raise_if_failed("state_update",
                  pna_cuda_state_update(dtype_code(x), ptr(state), x.data_ptr(), dt.data_ptr(), ptr(A), B.data_ptr(),
                                        C.data_ptr(), ptr(D), optional_ptr(z), ptr(dt_bias), ptr(halt_weight),
                                        ptr(halt_bias), dt_softplus, batch, dim, dstate, groups, y.data_ptr(),
                                        ptr(partials), ptr(entropy), ptr(halt), c10::cuda::getCurrentCUDAStream()));
  return {y, entropy, halt};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused selective scan + state entropy + halt logits on CUDA";
  m.def("scan_forward", &scan_forward, "Fused forward: (out, entropy, halt, last_state, checkpoints, entropy_sums)");
  m.def("scan_backward", &scan_backward, "Fused backward: the gradients of every input (dz None without z)");
  m.def("state_update", &state_update, "One decode step: (y, entropy, halt); updates state in place");
}
