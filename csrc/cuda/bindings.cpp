// Python bindings of the CUDA backend (loaded by pna_kernels/cuda.py). The entry points take the dataclasses of
// pna_kernels/contract.py (any object with their field names), allocate outputs and scratch with torch, fill the
// launchers' structs of scan_kernels.h, call them on the current stream, turn a launcher's error into a Python
// RuntimeError, add up the kernels' per-block / per-row partial sums in a fixed order (torch sums, which are
// deterministic for a given shape), and return a dict keyed by the field names of the result dataclass. They keep
// the guards a raw caller needs: device, dtype, contiguity and the compiled chunk size.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>

#include "scan_kernels.h"

namespace {

namespace py = pybind11;
using at::Tensor;

int dtype_code(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return PNA_FLOAT32;
    case at::kHalf: return PNA_FLOAT16;
    case at::kBFloat16: return PNA_BFLOAT16;
    default: TORCH_CHECK_VALUE(false, "u: the CUDA kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return -1;
}

// Reads the tensor fields of a contract dataclass, each checked against the device of the first one read.
class Fields {
 public:
  explicit Fields(const py::handle& obj) : obj_(obj) {}

  // The field `name`, in `dtype` (any dtype when not given).
  Tensor get(const char* name, std::optional<at::ScalarType> dtype = std::nullopt) {
    Tensor t = obj_.attr(name).cast<Tensor>();
    if (!device_.has_value()) device_ = t.device();
    TORCH_CHECK_VALUE(t.is_cuda() && t.device() == *device_, name, ": expected a CUDA tensor on ", *device_,
                      ", got ", t.device());
    TORCH_CHECK_VALUE(!dtype.has_value() || t.scalar_type() == *dtype, name, ": expected dtype ", *dtype, ", got ",
                      t.scalar_type());
    TORCH_CHECK_VALUE(t.is_contiguous(), name, ": must be contiguous");
    return t;
  }

  std::optional<Tensor> optional(const char* name, at::ScalarType dtype) {
    if (obj_.attr(name).is_none()) return std::nullopt;
    return get(name, dtype);
  }

  template <typename V>
  V value(const char* name) {
    return obj_.attr(name).cast<V>();
  }

 private:
  py::handle obj_;
  std::optional<at::Device> device_;
};

template <typename T = float>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

const void* optional_ptr(const std::optional<Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

void raise_if_failed(const char* launcher, const char* error) {
  TORCH_CHECK(error == nullptr, "pna cuda: ", launcher, " failed: ", error);
}

int to_int(int64_t v, const char* name) {
  TORCH_CHECK_VALUE(v >= 0 && v <= INT32_MAX, name, ": ", v, " does not fit the kernels' int indices");
  return static_cast<int>(v);
}

// The tensors of a contract.ScanArgs, kept alive while the launcher's struct points into them.
struct ScanInputs {
  Tensor u, delta, A, B, C, D, delta_bias, halt_weight, halt_bias, initial_state;
  std::optional<Tensor> z;
  PnaScanArgs args;
};

ScanInputs scan_inputs(const py::handle& obj) {
  Fields f(obj);
  ScanInputs in;
  in.u = f.get("u");
  const auto act = in.u.scalar_type(), f32 = at::kFloat;
  in.delta = f.get("delta", act);
  in.A = f.get("A", f32);
  in.B = f.get("B", act);
  in.C = f.get("C", act);
  in.D = f.get("D", f32);
  in.z = f.optional("z", act);
  in.delta_bias = f.get("delta_bias", f32);
  in.halt_weight = f.get("halt_weight", f32);
  in.halt_bias = f.get("halt_bias", f32);
  in.initial_state = f.get("initial_state", f32);
  TORCH_CHECK_VALUE(in.u.dim() == 3 && in.B.dim() == 4 && in.A.dim() == 2,
                    "u, B, A: expected (batch, D, L), (batch, G, N, L), (D, N)");
  const int64_t chunk_size = f.value<int64_t>("chunk_size");
  TORCH_CHECK_VALUE(chunk_size == PNA_CUDA_CHUNK, "chunk_size: the kernels are compiled for ", PNA_CUDA_CHUNK,
                    ", got ", chunk_size);
  PnaScanArgs& a = in.args;
  a.dtype = dtype_code(in.u);
  a.batch = to_int(in.u.size(0), "u");
  a.dim = to_int(in.u.size(1), "u");
  a.length = to_int(in.u.size(2), "u");
  a.dstate = to_int(in.A.size(1), "A");
  a.groups = to_int(in.B.size(1), "B");
  a.delta_softplus = f.value<bool>("delta_softplus");
  a.with_channel_mean = f.value<bool>("with_channel_mean");
  a.u = in.u.data_ptr();
  a.delta = in.delta.data_ptr();
  a.A = ptr(in.A);
  a.B = in.B.data_ptr();
  a.C = in.C.data_ptr();
  a.D = ptr(in.D);
  a.z = optional_ptr(in.z);
  a.delta_bias = ptr(in.delta_bias);
  a.halt_weight = ptr(in.halt_weight);
  a.halt_bias = ptr(in.halt_bias);
  a.initial_state = ptr(in.initial_state);
  return in;
}

py::dict scan_forward(const py::handle& args) {
  const ScanInputs in = scan_inputs(args);
  const PnaScanArgs& a = in.args;
  const c10::cuda::CUDAGuard guard(in.u.device());
  const auto f32 = in.u.options().dtype(at::kFloat);
  const int n_chunks = (a.length + PNA_CUDA_CHUNK - 1) / PNA_CUDA_CHUNK;
  const int n_dblocks = pna_cuda_num_dblocks(a.dim, a.groups, a.dstate);
  const bool mean = a.with_channel_mean != 0;
  Tensor out = at::empty_like(in.u);
  Tensor entropy = at::empty({a.batch, a.length}, f32);
  Tensor halt = at::empty({a.batch, a.length}, f32);
  Tensor last_state = at::empty({a.batch, a.dim, a.dstate}, f32);
  Tensor channel_mean = mean ? at::empty({a.batch, a.length, a.dstate}, f32) : at::empty({0}, f32);
  Tensor checkpoints = at::empty({a.batch, n_chunks, a.dim, a.dstate}, f32);
  Tensor entropy_sums = at::empty({a.batch, 2, a.length}, f32);
  Tensor partials = at::empty({3, a.batch, n_dblocks, a.length}, f32);
  Tensor channel_partials = at::empty({mean ? a.batch : 0, n_dblocks, a.length, a.dstate}, f32);
  const PnaScanResult r{out.data_ptr(), ptr(entropy),      ptr(halt),     ptr(last_state),
                        mean ? ptr(channel_mean) : nullptr, ptr(checkpoints), ptr(entropy_sums), ptr(partials),
                        mean ? ptr(channel_partials) : nullptr};
  raise_if_failed("scan_forward", pna_cuda_scan_forward(&a, &r, c10::cuda::getCurrentCUDAStream()));
  return py::dict(py::arg("out") = out, py::arg("entropy") = entropy, py::arg("halt_logits") = halt,
                  py::arg("last_state") = last_state, py::arg("channel_mean") = channel_mean,
                  py::arg("checkpoints") = checkpoints, py::arg("entropy_sums") = entropy_sums);
}

py::dict scan_backward(const py::handle& args, const py::handle& saved_obj, const py::handle& cot_obj) {
  const ScanInputs in = scan_inputs(args);
  const PnaScanArgs& a = in.args;
  const auto f32 = at::kFloat;
  Fields saved_fields(saved_obj), cot_fields(cot_obj);
  const Tensor checkpoints = saved_fields.get("checkpoints", f32), entropy_sums = saved_fields.get("entropy_sums", f32);
  const Tensor grad_out = cot_fields.get("grad_out", in.u.scalar_type());
  const Tensor grad_entropy = cot_fields.get("grad_entropy", f32), grad_halt = cot_fields.get("grad_halt", f32);
  const Tensor grad_last_state = cot_fields.get("grad_last_state", f32);
  const Tensor grad_channel_mean = cot_fields.get("grad_channel_mean", f32);
  const bool mean = a.with_channel_mean != 0;
  TORCH_CHECK_VALUE(!mean || grad_channel_mean.sizes() == at::IntArrayRef({a.batch, a.length, a.dstate}),
                    "grad_channel_mean: expected shape (batch, L, N), got ", grad_channel_mean.sizes());
  const c10::cuda::CUDAGuard guard(in.u.device());
  const auto opts = in.u.options().dtype(f32);
  const int n_dblocks = pna_cuda_num_dblocks(a.dim, a.groups, a.dstate);
  Tensor du = at::empty_like(in.u), ddelta = at::empty_like(in.delta);
  std::optional<Tensor> dz;
  if (in.z.has_value()) dz = at::empty_like(*in.z);
  Tensor dA_rows = at::empty({a.batch, a.dim, a.dstate}, opts);
  Tensor dhalt_weight_rows = at::empty({a.batch, a.dim, a.dstate}, opts);
  Tensor dinitial_state = at::empty({a.batch, a.dim, a.dstate}, opts);
  Tensor dD_rows = at::empty({a.batch, a.dim}, opts);
  Tensor ddelta_bias_rows = at::empty({a.batch, a.dim}, opts);
  Tensor dB_blocks = at::empty({a.batch, n_dblocks, a.dstate, a.length}, opts);
  Tensor dC_blocks = at::empty({a.batch, n_dblocks, a.dstate, a.length}, opts);
  const PnaScanSaved s{ptr(checkpoints), ptr(entropy_sums)};
  const PnaScanCotangents c{grad_out.data_ptr(), ptr(grad_entropy), ptr(grad_halt), ptr(grad_last_state),
                            mean ? ptr(grad_channel_mean) : nullptr};
  const PnaScanGradParts g{du.data_ptr(),       ddelta.data_ptr(),     dz.has_value() ? dz->data_ptr() : nullptr,
                           ptr(dA_rows),        ptr(dB_blocks),        ptr(dC_blocks),
                           ptr(dD_rows),        ptr(ddelta_bias_rows), ptr(dhalt_weight_rows),
                           ptr(dinitial_state)};
  raise_if_failed("scan_backward", pna_cuda_scan_backward(&a, &s, &c, &g, c10::cuda::getCurrentCUDAStream()));
  const int64_t per_group = n_dblocks / a.groups;
  auto group_sum = [&](const Tensor& blocks, const Tensor& like) {
    return blocks.view({a.batch, a.groups, per_group, a.dstate, a.length}).sum(2).to(like.scalar_type());
  };
  return py::dict(py::arg("u") = du, py::arg("delta") = ddelta, py::arg("A") = dA_rows.sum(0),
                  py::arg("B") = group_sum(dB_blocks, in.B), py::arg("C") = group_sum(dC_blocks, in.C),
                  py::arg("D") = dD_rows.sum(0), py::arg("z") = dz.has_value() ? py::cast(*dz) : py::none(),
                  py::arg("delta_bias") = ddelta_bias_rows.sum(0), py::arg("halt_weight") = dhalt_weight_rows.sum(0),
                  py::arg("halt_bias") = grad_halt.sum().reshape(in.halt_bias.sizes()),
                  py::arg("initial_state") = dinitial_state);
}

py::dict state_update(const py::handle& obj) {
  Fields f(obj);
  const auto f32 = at::kFloat;
  const Tensor state = f.get("state", f32);
  const Tensor x = f.get("x");
  const auto act = x.scalar_type();
  const Tensor dt = f.get("dt", act), A = f.get("A", f32), B = f.get("B", act), C = f.get("C", act);
  const Tensor D = f.get("D", f32), dt_bias = f.get("dt_bias", f32), halt_weight = f.get("halt_weight", f32);
  const Tensor halt_bias = f.get("halt_bias", f32);
  const std::optional<Tensor> z = f.optional("z", act);
  TORCH_CHECK_VALUE(x.dim() == 2 && B.dim() == 3 && A.dim() == 2, "x, B, A: expected (batch, D), (batch, G, N), (D, N)");
  PnaStateUpdateArgs a{dtype_code(x), to_int(x.size(0), "x"), to_int(x.size(1), "x"), to_int(A.size(1), "A"),
                       to_int(B.size(1), "B"), f.value<bool>("dt_softplus"), ptr(state), x.data_ptr(),
                       dt.data_ptr(), ptr(A), B.data_ptr(), C.data_ptr(), ptr(D), optional_ptr(z), ptr(dt_bias),
                       ptr(halt_weight), ptr(halt_bias)};
  const c10::cuda::CUDAGuard guard(x.device());
  const auto opts = x.options().dtype(f32);
  const int n_dblocks = pna_cuda_num_dblocks(a.dim, a.groups, a.dstate);
  Tensor y = at::empty_like(x);
  Tensor entropy = at::empty({a.batch}, opts), halt = at::empty({a.batch}, opts);
  Tensor channel_mean = at::empty({a.batch, a.dstate}, opts);
  Tensor partials = at::empty({3, a.batch, n_dblocks}, opts);
  Tensor channel_partials = at::empty({a.batch, n_dblocks, a.dstate}, opts);
  const PnaStateUpdateResult r{y.data_ptr(),      ptr(entropy),  ptr(halt),
                               ptr(channel_mean), ptr(partials), ptr(channel_partials)};
  raise_if_failed("state_update", pna_cuda_state_update(&a, &r, c10::cuda::getCurrentCUDAStream()));
  return py::dict(py::arg("y") = y, py::arg("entropy") = entropy, py::arg("halt_logits") = halt,
                  py::arg("channel_mean") = channel_mean);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused selective scan + state entropy + halt logits (+ channel mean) on CUDA";
  m.attr("CHUNK_SIZE") = PNA_CUDA_CHUNK;
  m.attr("MAX_STATE_DIM") = PNA_CUDA_MAX_STATE;
  m.def("scan_forward", &scan_forward, py::arg("args"),
        "Fused forward of a contract.ScanArgs: a dict of the contract.ScanResult fields");
  m.def("scan_backward", &scan_backward, py::arg("args"), py::arg("saved"), py::arg("cot"),
        "Fused backward (ScanArgs, ScanSaved, ScanCotangents): a dict of the contract.ScanGrads fields");
  m.def("state_update", &state_update, py::arg("args"),
        "One decode step of a contract.StateUpdateArgs, updating args.state in place: a dict of the "
        "contract.StateUpdateResult fields");
}
