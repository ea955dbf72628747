// One decode step on the CPU: advance the state by one token in place and read y, entropy and halt off it.
// Batch rows are independent work items; within a row the sums over channels run in a fixed order.
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

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
  scalar_t* channel_mean;  // (batch, N)
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void state_update_row(const StepPointers<scalar_t>& p, int64_t dim, int64_t dstate, int64_t groups,
                      bool dt_softplus, scalar_t halt_bias, int64_t b) {
  const int64_t N = dstate, per_group = dim / groups;
  scalar_t s1 = 0, s2 = 0, hsum = 0;
  scalar_t* mean = p.channel_mean + b * N;
  std::fill(mean, mean + N, scalar_t(0));
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
      mean[n] += hn;  // channels in order, so the sum is the same on every run
    }
    s1 += ds1;
    s2 += ds2;
    hsum += dh;
    y += p.D[d] * x;
    p.y[i] = p.z == nullptr ? y : y * silu(p.z[i]);
  }
  const scalar_t inv_dim = scalar_t(1) / scalar_t(dim);
  for (int64_t n = 0; n < N; ++n) mean[n] *= inv_dim;
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

StateUpdateResult state_update(const StateUpdateArgs& a, int64_t num_threads) {
  TORCH_CHECK_VALUE(a.x.dim() == 2, "x: expected (batch, D), got shape ", a.x.sizes());
  TORCH_CHECK_VALUE(a.A.dim() == 2, "A: expected (D, N), got shape ", a.A.sizes());
  TORCH_CHECK_VALUE(a.B.dim() == 3, "B: expected (batch, G, N), got shape ", a.B.sizes());
  check_compute_dtype("x", a.x);
  check_positive("num_threads", num_threads);
  const int64_t batch = a.x.size(0), dim = a.x.size(1), dstate = a.A.size(1), groups = a.B.size(1);
  TORCH_CHECK_VALUE(groups >= 1 && dim % groups == 0, "B: number of groups ", groups, " must divide D = ", dim);
  const std::vector<int64_t> bd{batch, dim}, dn{dim, dstate}, bgn{batch, groups, dstate};
  check_tensors(a.x.scalar_type(), {{"state", &a.state, {batch, dim, dstate}}, {"x", &a.x, bd}, {"dt", &a.dt, bd},
                                    {"A", &a.A, dn}, {"B", &a.B, bgn}, {"C", &a.C, bgn}, {"D", &a.D, {dim}},
                                    {"dt_bias", &a.dt_bias, {dim}}, {"halt_weight", &a.halt_weight, dn},
                                    {"halt_bias", &a.halt_bias, {}}});
  if (a.z.has_value()) check_tensors(a.x.scalar_type(), {{"z", &*a.z, bd}});
  const auto options = a.x.options();
  StateUpdateResult r{at::empty({batch, dim}, options), at::empty({batch}, options), at::empty({batch}, options),
                      at::empty({batch, dstate}, options)};

  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "pna_cpu_state_update", [&] {
    const StepPointers<scalar_t> p{
        a.state.data_ptr<scalar_t>(), a.x.data_ptr<scalar_t>(), a.dt.data_ptr<scalar_t>(), a.A.data_ptr<scalar_t>(),
        a.B.data_ptr<scalar_t>(), a.C.data_ptr<scalar_t>(), a.D.data_ptr<scalar_t>(),
        a.z.has_value() ? a.z->data_ptr<scalar_t>() : nullptr, a.dt_bias.data_ptr<scalar_t>(),
        a.halt_weight.data_ptr<scalar_t>(), r.y.data_ptr<scalar_t>(), r.entropy.data_ptr<scalar_t>(),
        r.halt_logits.data_ptr<scalar_t>(), r.channel_mean.data_ptr<scalar_t>()};
    state_update(p, batch, dim, dstate, groups, a.dt_softplus, a.halt_bias.item<scalar_t>(), num_threads);
  });
  return r;
}

}  // namespace pna_cpu
