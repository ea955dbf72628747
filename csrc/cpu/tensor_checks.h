// The guards a raw caller of the entry points needs (dtype, device, contiguity, and the shapes the kernels index
// by): a failure raises ValueError in Python naming the argument. Everything else (finite values, N limits,
// broadcasting) is validated once, in Python (pna_kernels/validation.py).
#pragma once

#include <initializer_list>
#include <vector>

#include <ATen/core/Tensor.h>

#include "scan_common.h"
#include "scan_kernels.h"

namespace pna_cpu {

// An argument and the shape it must have.
struct Expected {
  const char* name;
  const at::Tensor* tensor;
  std::vector<int64_t> shape;
};

// Every tensor must be a contiguous CPU tensor of `dtype` and its expected shape.
inline void check_tensors(at::ScalarType dtype, std::initializer_list<Expected> expected) {
  for (const Expected& e : expected) {
    const at::Tensor& t = *e.tensor;
    TORCH_CHECK_VALUE(t.device().is_cpu(), e.name, ": expected a CPU tensor, got one on ", t.device());
    TORCH_CHECK_VALUE(t.scalar_type() == dtype, e.name, ": expected dtype ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(e.shape), e.name, ": expected shape ",
                      at::IntArrayRef(e.shape), ", got ", t.sizes());
    TORCH_CHECK_VALUE(t.is_contiguous(), e.name, ": must be contiguous");
  }
}

inline void check_compute_dtype(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                    ": expected float32 or float64 (upcast float16/bfloat16 first), got ", t.scalar_type());
}

inline void check_positive(const char* name, int64_t value) {
  TORCH_CHECK_VALUE(value >= 1, name, ": must be >= 1, got ", value);
}

// The checks of a ScanArgs shared by the forward and the backward; returns its sizes.
inline ScanDims check_scan_args(const ScanArgs& a) {
  TORCH_CHECK_VALUE(a.u.dim() == 3, "u: expected (batch, D, L), got shape ", a.u.sizes());
  TORCH_CHECK_VALUE(a.A.dim() == 2, "A: expected (D, N), got shape ", a.A.sizes());
  TORCH_CHECK_VALUE(a.B.dim() == 4, "B: expected (batch, G, N, L), got shape ", a.B.sizes());
  check_compute_dtype("u", a.u);
  check_positive("chunk_size", a.chunk_size);
  const ScanDims dims{a.u.size(0), a.u.size(1), a.u.size(2), a.A.size(1), a.B.size(1), a.chunk_size};
  TORCH_CHECK_VALUE(dims.groups >= 1 && dims.dim % dims.groups == 0, "B: number of groups ", dims.groups,
                    " must divide D = ", dims.dim);
  const std::vector<int64_t> bdl{dims.batch, dims.dim, dims.length}, dn{dims.dim, dims.dstate},
      bgnl{dims.batch, dims.groups, dims.dstate, dims.length};
  check_tensors(a.u.scalar_type(),
                {{"u", &a.u, bdl}, {"delta", &a.delta, bdl}, {"A", &a.A, dn}, {"B", &a.B, bgnl}, {"C", &a.C, bgnl},
                 {"D", &a.D, {dims.dim}}, {"delta_bias", &a.delta_bias, {dims.dim}},
                 {"halt_weight", &a.halt_weight, dn}, {"halt_bias", &a.halt_bias, {}},
                 {"initial_state", &a.initial_state, {dims.batch, dims.dim, dims.dstate}}});
  if (a.z.has_value()) check_tensors(a.u.scalar_type(), {{"z", &*a.z, bdl}});
  return dims;
}

}  // namespace pna_cpu
