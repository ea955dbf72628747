// Python bindings of the C++/OpenMP CPU backend (loaded by pna_kernels/cpu.py).
#include <torch/extension.h>

#include "scan_kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused selective scan + state entropy + halt logits on the CPU (C++17, OpenMP)";
  m.def("scan_forward_out", &pna_cpu::scan_forward_out, "Fused forward into preallocated outputs");
  m.def("scan_backward_out", &pna_cpu::scan_backward_out, "Fused backward into preallocated gradients");
  m.def("state_update_out", &pna_cpu::state_update_out, "One decode step; updates the state in place");
}
