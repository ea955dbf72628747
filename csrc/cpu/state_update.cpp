// One decode step on the CPU: advance the state by one token in place and read y, entropy and halt off it.
// Batch rows are independent work items; within a row the sums over channels run in a fixed order.
#include <vector>

#include <ATen/Dispatch.h>

#include "scan_common.h"
#include "scan_kernels.h"
#include "tensor_checks.h"
#include "vector_math.h"

namespace pna_cpu {
namespace {

template <typename scalar_t>
struct StepPointers {
  scalar_t* state;
  const scalar_t* x;
  const scalar_t* dt;
  const scalar_t* A;
  const scalar_t* B;
  const scalar_t* C;
  const scalar_t* D;
  const scalar_t* z;  // nullptr without a gate
  const scalar_t* dt_bias;
  const scalar_t* halt_weight;
  scalar_t* y;
  scalar_t* entropy;
  scalar_t* halt;
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void state_update_row(const StepPointers<scalar_t>& p, int64_t dim, int64_t dstate, int64_t groups,
                      bool dt_softplus, scalar_t halt_bias, int64_t b) {
  const int64_t N = dstate, per_group = dim / groups;
  scalar_t s1 = 0, s2 = 0, hsum = 0;
  for (int64_t d = 0; d < dim; ++d) {
    const int64_t i = b * dim + d;
    const scalar_t dt = discretize(p.dt[i] + p.dt_bias[d], dt_softplus);
    const scalar_t x = p.x[i], dtx = dt * x;
    const scalar_t* Ad = p.A + d * N;
    const scalar_t* hw = p.halt_weight + d * N;
    const scalar_t* Bs = p.B + (b * groups + d / per_group) * N;
    const scalar_t* Cs = p.C + (b * groups + d / per_group) * N;
    scalar_t* h = p.state + i * N;
    scalar_t y = 0, ds1 = 0, ds2 = 0, dh = 0;
#pragma omp simd reduction(+ : y, ds1, ds2, dh)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t hn = exp_v(dt * Ad[n]) * h[n] + dtx * Bs[n];
      h[n] = hn;
      const scalar_t e = hn * hn;
      y += Cs[n] * hn;
      ds1 += e;
      ds2 += e * log_or_zero(e);
      dh += hw[n] * hn;
    }
    s1 += ds1;
    s2 += ds2;
    hsum += dh;
    y += p.D[d] * x;
    p.y[i] = p.z == nullptr ? y : y * silu(p.z[i]);
  }
  p.entropy[b] = entropy_from_sums(s1, s2);
  p.halt[b] = hsum + halt_bias;
}

template <typename scalar_t>
void state_update(const StepPointers<scalar_t>& p, int64_t batch, int64_t dim, int64_t dstate, int64_t groups,
                  bool dt_softplus, scalar_t halt_bias, int64_t num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t b = 0; b < batch; ++b) state_update_row(p, dim, dstate, groups, dt_softplus, halt_bias, b);
}

}  // namespace

void state_update_out(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                      const std::optional<at::Tensor>& z, const at::Tensor& dt_bias, const at::Tensor& halt_weight,
                      const at::Tensor& halt_bias, bool dt_softplus, int64_t num_threads, at::Tensor& y,
                      at::Tensor& entropy, at::Tensor& halt) {
  TORCH_CHECK_VALUE(x.dim() == 2, "x: expected (batch, D), got shape ", x.sizes());
  TORCH_CHECK_VALUE(A.dim() == 2, "A: expected (D, N), got shape ", A.sizes());
  TORCH_CHECK_VALUE(B.dim() == 3, "B: expected (batch, G, N), got shape ", B.sizes());
  check_compute_dtype("x", x);
  check_positive("num_threads", num_threads);
  const int64_t batch = x.size(0), dim = x.size(1), dstate = A.size(1), groups = B.size(1);
  TORCH_CHECK_VALUE(groups >= 1 && dim % groups == 0, "B: number of groups ", groups, " must divide D = ", dim);
  const std::vector<int64_t> bd{batch, dim}, dn{dim, dstate}, bgn{batch, groups, dstate};
  check_tensors(x.scalar_type(), {{"state", &state, {batch, dim, dstate}}, {"x", &x, bd}, {"dt", &dt, bd},
                                  {"A", &A, dn}, {"B", &B, bgn}, {"C", &C, bgn}, {"D", &D, {dim}},
                                  {"dt_bias", &dt_bias, {dim}}, {"halt_weight", &halt_weight, dn},
                                  {"halt_bias", &halt_bias, {}}, {"y", &y, bd}, {"entropy", &entropy, {batch}},
                                  {"halt", &halt, {batch}}});
  if (z.has_value()) check_tensors(x.scalar_type(), {{"z", &*z, bd}});

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pna_cpu_state_update", [&] {
    const StepPointers<scalar_t> p{
        state.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
        B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(),
        z.has_value() ? z->data_ptr<scalar_t>() : nullptr, dt_bias.data_ptr<scalar_t>(),
        halt_weight.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), entropy.data_ptr<scalar_t>(),
        halt.data_ptr<scalar_t>()};
    state_update(p, batch, dim, dstate, groups, dt_softplus, halt_bias.item<scalar_t>(), num_threads);
  });
}

}  // namespace pna_cpu
