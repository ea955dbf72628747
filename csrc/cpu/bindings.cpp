// Python bindings of the C++/OpenMP CPU backend (loaded by pna_kernels/cpu.py). The entry points take the
// dataclasses of pna_kernels/contract.py (any object with those attribute names) and return a dict keyed by the
// field names of the result dataclass, so the C++ structs of scan_kernels.h mirror the contract field by field.
#include <torch/extension.h>

#include "scan_kernels.h"

namespace {

namespace py = pybind11;
using at::Tensor;

Tensor tensor(const py::handle& obj, const char* name) { return obj.attr(name).cast<Tensor>(); }

std::optional<Tensor> optional_tensor(const py::handle& obj, const char* name) {
  const py::object value = obj.attr(name);
  return value.is_none() ? std::nullopt : std::optional<Tensor>(value.cast<Tensor>());
}

py::object optional_object(const std::optional<Tensor>& t) { return t.has_value() ? py::cast(*t) : py::none(); }

pna_cpu::ScanArgs scan_args(const py::handle& a) {
  pna_cpu::ScanArgs args;
  args.u = tensor(a, "u");
  args.delta = tensor(a, "delta");
  args.A = tensor(a, "A");
  args.B = tensor(a, "B");
  args.C = tensor(a, "C");
  args.D = tensor(a, "D");
  args.z = optional_tensor(a, "z");
  args.delta_bias = tensor(a, "delta_bias");
  args.halt_weight = tensor(a, "halt_weight");
  args.halt_bias = tensor(a, "halt_bias");
  args.initial_state = tensor(a, "initial_state");
  args.delta_softplus = a.attr("delta_softplus").cast<bool>();
  args.with_channel_mean = a.attr("with_channel_mean").cast<bool>();
  args.chunk_size = a.attr("chunk_size").cast<int64_t>();
  return args;
}

py::dict scan_forward(const py::handle& args, int64_t num_threads) {
  const pna_cpu::ScanResult r = pna_cpu::scan_forward(scan_args(args), num_threads);
  return py::dict(py::arg("out") = r.out, py::arg("entropy") = r.entropy, py::arg("halt_logits") = r.halt_logits,
                  py::arg("last_state") = r.last_state, py::arg("channel_mean") = r.channel_mean,
                  py::arg("checkpoints") = r.checkpoints, py::arg("entropy_sums") = r.entropy_sums);
}

py::dict scan_backward(const py::handle& args, const py::handle& saved, const py::handle& cot, int64_t num_threads) {
  const pna_cpu::ScanSaved s{tensor(saved, "checkpoints"), tensor(saved, "entropy_sums")};
  const pna_cpu::ScanCotangents c{tensor(cot, "grad_out"), tensor(cot, "grad_entropy"), tensor(cot, "grad_halt"),
                                  tensor(cot, "grad_last_state"), tensor(cot, "grad_channel_mean")};
  const pna_cpu::ScanGrads g = pna_cpu::scan_backward(scan_args(args), s, c, num_threads);
  return py::dict(py::arg("u") = g.u, py::arg("delta") = g.delta, py::arg("A") = g.A, py::arg("B") = g.B,
                  py::arg("C") = g.C, py::arg("D") = g.D, py::arg("z") = optional_object(g.z),
                  py::arg("delta_bias") = g.delta_bias, py::arg("halt_weight") = g.halt_weight,
                  py::arg("halt_bias") = g.halt_bias, py::arg("initial_state") = g.initial_state);
}

py::dict state_update(const py::handle& a, int64_t num_threads) {
  pna_cpu::StateUpdateArgs args;
  args.state = tensor(a, "state");
  args.x = tensor(a, "x");
  args.dt = tensor(a, "dt");
  args.A = tensor(a, "A");
  args.B = tensor(a, "B");
  args.C = tensor(a, "C");
  args.D = tensor(a, "D");
  args.z = optional_tensor(a, "z");
  args.dt_bias = tensor(a, "dt_bias");
  args.halt_weight = tensor(a, "halt_weight");
  args.halt_bias = tensor(a, "halt_bias");
  args.dt_softplus = a.attr("dt_softplus").cast<bool>();
  const pna_cpu::StateUpdateResult r = pna_cpu::state_update(args, num_threads);
  return py::dict(py::arg("y") = r.y, py::arg("entropy") = r.entropy, py::arg("halt_logits") = r.halt_logits,
                  py::arg("channel_mean") = r.channel_mean);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused selective scan + state entropy + halt logits on the CPU (C++17, OpenMP)";
  m.def("scan_forward", &scan_forward, py::arg("args"), py::arg("num_threads"),
        "Fused forward of a contract.ScanArgs: a dict of the contract.ScanResult fields");
  m.def("scan_backward", &scan_backward, py::arg("args"), py::arg("saved"), py::arg("cot"), py::arg("num_threads"),
        "Fused backward (ScanArgs, ScanSaved, ScanCotangents): a dict of the contract.ScanGrads fields");
  m.def("state_update", &state_update, py::arg("args"), py::arg("num_threads"),
        "One decode step of a contract.StateUpdateArgs, updating args.state in place: a dict of the "
        "contract.StateUpdateResult fields");
}
