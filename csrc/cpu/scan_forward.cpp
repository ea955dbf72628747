// Fused forward on the CPU: the selective scan, y, the gate, per-token entropy sums and halt logits in one pass.
//
// Work items are (batch row, channel block); OpenMP spreads them over threads. Inside an item the loop runs
// chunk by chunk: B and C of the chunk are transposed to (step, N) so the innermost loop over N reads contiguous
// memory, then every channel walks the chunk with its state in a small buffer. Per-token S1, S2 and halt sums
// of the block go to a partial buffer (batch, blocks, 3, L) that is summed over blocks in a fixed order.
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
struct ForwardPointers {
  const scalar_t* u;
  const scalar_t* delta;
  const scalar_t* A;
  const scalar_t* B;
  const scalar_t* C;
  const scalar_t* D;
  const scalar_t* z;  // nullptr without a gate
  const scalar_t* delta_bias;
  const scalar_t* halt_weight;
  const scalar_t* initial_state;
  scalar_t* out;
  scalar_t* last_state;
  scalar_t* checkpoints;
  scalar_t* partials;  // (batch, blocks, 3, L): S1, S2, halt sum of each block
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void forward_block(const ForwardPointers<scalar_t>& p, const ScanDims& dims, const ChannelBlocks& blocks,
                   bool delta_softplus, int64_t b, int64_t block) {
  const int64_t N = dims.dstate, L = dims.length, T = dims.chunk;
  const int64_t group = blocks.group(block), d0 = blocks.begin(block), d1 = blocks.end(block);
  const scalar_t* Bg = p.B + (b * dims.groups + group) * N * L;
  const scalar_t* Cg = p.C + (b * dims.groups + group) * N * L;
  std::vector<scalar_t> state((d1 - d0) * N), Bt(T * N), Ct(T * N), sums(3 * T), dt_row(T), gate_row(T, 1);
  std::copy(p.initial_state + (b * dims.dim + d0) * N, p.initial_state + (b * dims.dim + d1) * N, state.begin());
  scalar_t* part = p.partials + (b * blocks.count(dims) + block) * 3 * L;

  for (int64_t c = 0; c < dims.n_chunks(); ++c) {
    const int64_t t0 = c * T, steps = std::min(T, L - t0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < steps; ++t) {
        Bt[t * N + n] = Bg[n * L + t0 + t];
        Ct[t * N + n] = Cg[n * L + t0 + t];
      }
    }
    std::fill(sums.begin(), sums.end(), scalar_t(0));
    for (int64_t d = d0; d < d1; ++d) {
      scalar_t* h = state.data() + (d - d0) * N;
      std::copy(h, h + N, p.checkpoints + ((b * dims.n_chunks() + c) * dims.dim + d) * N);
      const scalar_t* Ad = p.A + d * N;
      const scalar_t* hw = p.halt_weight + d * N;
      const int64_t row = (b * dims.dim + d) * L + t0;
      const scalar_t bias = p.delta_bias[d];
#pragma omp simd
      for (int64_t t = 0; t < steps; ++t) dt_row[t] = discretize(p.delta[row + t] + bias, delta_softplus);
      if (p.z != nullptr) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) gate_row[t] = silu(p.z[row + t]);
      }
      for (int64_t t = 0; t < steps; ++t) {
        const scalar_t dt = dt_row[t];
        const scalar_t u = p.u[row + t];
        const scalar_t dtu = dt * u;
        const scalar_t* Bs = Bt.data() + t * N;
        const scalar_t* Cs = Ct.data() + t * N;
        scalar_t y = 0, s1 = 0, s2 = 0, hsum = 0;
#pragma omp simd reduction(+ : y, s1, s2, hsum)
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t hn = exp_v(dt * Ad[n]) * h[n] + dtu * Bs[n];
          h[n] = hn;
          const scalar_t e = hn * hn;
          y += Cs[n] * hn;
          s1 += e;
          s2 += e * log_or_zero(e);
          hsum += hw[n] * hn;
        }
        sums[t] += s1;
        sums[T + t] += s2;
        sums[2 * T + t] += hsum;
        p.out[row + t] = (y + p.D[d] * u) * gate_row[t];
      }
    }
    for (int64_t k = 0; k < 3; ++k) {
      std::copy(sums.begin() + k * T, sums.begin() + k * T + steps, part + k * L + t0);
    }
  }
  std::copy(state.begin(), state.end(), p.last_state + (b * dims.dim + d0) * N);
}

template <typename scalar_t>
void forward(const ForwardPointers<scalar_t>& p, const ScanDims& dims, bool delta_softplus, int64_t num_threads,
             scalar_t halt_bias, scalar_t* entropy, scalar_t* halt, scalar_t* entropy_sums) {
  const ChannelBlocks blocks(dims);
  const int64_t n_blocks = blocks.count(dims), items = dims.batch * n_blocks, L = dims.length;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    forward_block(p, dims, blocks, delta_softplus, item / n_blocks, item % n_blocks);
  }
  for (int64_t b = 0; b < dims.batch; ++b) {
    for (int64_t t = 0; t < L; ++t) {
      scalar_t s1 = 0, s2 = 0, hsum = 0;
      for (int64_t block = 0; block < n_blocks; ++block) {
        const scalar_t* part = p.partials + (b * n_blocks + block) * 3 * L;
        s1 += part[t];
        s2 += part[L + t];
        hsum += part[2 * L + t];
      }
      entropy_sums[(b * 2) * L + t] = s1;
      entropy_sums[(b * 2 + 1) * L + t] = s2;
      entropy[b * L + t] = entropy_from_sums(s1, s2);
      halt[b * L + t] = hsum + halt_bias;
    }
  }
}

}  // namespace

void scan_forward_out(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                      const at::Tensor& C, const at::Tensor& D, const std::optional<at::Tensor>& z,
                      const at::Tensor& delta_bias, const at::Tensor& halt_weight, const at::Tensor& halt_bias,
                      const at::Tensor& initial_state, bool delta_softplus, int64_t chunk, int64_t num_threads,
                      at::Tensor& out, at::Tensor& entropy, at::Tensor& halt, at::Tensor& last_state,
                      at::Tensor& checkpoints, at::Tensor& entropy_sums) {
  TORCH_CHECK_VALUE(u.dim() == 3, "u: expected (batch, D, L), got shape ", u.sizes());
  TORCH_CHECK_VALUE(A.dim() == 2, "A: expected (D, N), got shape ", A.sizes());
  TORCH_CHECK_VALUE(B.dim() == 4, "B: expected (batch, G, N, L), got shape ", B.sizes());
  check_compute_dtype("u", u);
  check_positive("chunk", chunk);
  check_positive("num_threads", num_threads);
  const ScanDims dims{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1), chunk};
  TORCH_CHECK_VALUE(dims.groups >= 1 && dims.dim % dims.groups == 0, "B: number of groups ", dims.groups,
                    " must divide D = ", dims.dim);
  const auto dt = u.scalar_type();
  const std::vector<int64_t> bdl{dims.batch, dims.dim, dims.length}, dn{dims.dim, dims.dstate},
      bgnl{dims.batch, dims.groups, dims.dstate, dims.length}, bdn{dims.batch, dims.dim, dims.dstate},
      bl{dims.batch, dims.length};
  check_tensors(dt, {{"u", &u, bdl}, {"delta", &delta, bdl}, {"A", &A, dn}, {"B", &B, bgnl}, {"C", &C, bgnl},
                     {"D", &D, {dims.dim}}, {"delta_bias", &delta_bias, {dims.dim}}, {"halt_weight", &halt_weight, dn},
                     {"halt_bias", &halt_bias, {}}, {"initial_state", &initial_state, bdn}, {"out", &out, bdl},
                     {"entropy", &entropy, bl}, {"halt", &halt, bl}, {"last_state", &last_state, bdn},
                     {"checkpoints", &checkpoints, {dims.batch, dims.n_chunks(), dims.dim, dims.dstate}},
                     {"entropy_sums", &entropy_sums, {dims.batch, 2, dims.length}}});
  if (z.has_value()) check_tensors(dt, {{"z", &*z, bdl}});
  at::Tensor partials = at::empty({dims.batch, ChannelBlocks(dims).count(dims), 3, dims.length}, u.options());

  AT_DISPATCH_FLOATING_TYPES(dt, "pna_cpu_scan_forward", [&] {
    const ForwardPointers<scalar_t> p{
        u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
        C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(), z.has_value() ? z->data_ptr<scalar_t>() : nullptr,
        delta_bias.data_ptr<scalar_t>(), halt_weight.data_ptr<scalar_t>(), initial_state.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), last_state.data_ptr<scalar_t>(), checkpoints.data_ptr<scalar_t>(),
        partials.data_ptr<scalar_t>()};
    forward(p, dims, delta_softplus, num_threads, halt_bias.item<scalar_t>(), entropy.data_ptr<scalar_t>(),
            halt.data_ptr<scalar_t>(), entropy_sums.data_ptr<scalar_t>());
  });
}

}  // namespace pna_cpu
