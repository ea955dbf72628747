// Argument checks of the raw entry points: a failure raises ValueError in Python naming the argument.
#pragma once

#include <initializer_list>
#include <vector>

#include <ATen/core/Tensor.h>

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

}  // namespace pna_cpu
