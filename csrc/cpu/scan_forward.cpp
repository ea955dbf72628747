// Fused forward on the CPU: the selective scan, y, the gate, per-token entropy sums and halt logits in one pass.
//
// Work items are (batch row, block of up to 16 channels); OpenMP spreads them over threads. An item keeps its
// block's state as (N, channels) and walks time chunk by chunk; the innermost loop runs over the block's
// channels, contiguous in that layout, so each step's y, S1, S2 and halt sums accumulate lane-wise with no
// reduction inside the vector loop. The per-token sums of the block go to a partial buffer (batch, blocks, 3, L)
// that is summed over blocks in a fixed order.
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
PNA_CPU_MULTIVERSION void forward_block(const ForwardPointers<scalar_t>& p, const ScanDims& dims,
                                       const ChannelBlocks& blocks, bool delta_softplus, int64_t b, int64_t block) {
  const int64_t N = dims.dstate, L = dims.length, T = dims.chunk, n_chunks = dims.n_chunks();
  const int64_t group = blocks.group(block), d0 = blocks.begin(block), width = blocks.end(block) - d0;
  // Lanes past `width` are padding: zero state, inputs and parameters keep them exactly zero, so the
  // vector loops always run over kBlockChannels lanes, a compile-time count the compiler fully unrolls.
  constexpr int64_t W = kBlockChannels;
  const scalar_t* Bg = p.B + (b * dims.groups + group) * N * L;
  const scalar_t* Cg = p.C + (b * dims.groups + group) * N * L;
  scalar_t* part = p.partials + (b * blocks.count(dims) + block) * 3 * L;
  // Channel-innermost copies ([n][channel] and [step][channel]), so the vector loops run over W channels.
  std::vector<scalar_t> h(N * W), A(N * W), hw(N * W), dt(T * W), u(T * W), gate(T * W, scalar_t(1)), row(T);
  std::vector<scalar_t> y(W), s1(W), s2(W), hsum(W);
  for (int64_t k = 0; k < width; ++k) {
    for (int64_t n = 0; n < N; ++n) {
      h[n * W + k] = p.initial_state[(b * dims.dim + d0 + k) * N + n];
      A[n * W + k] = p.A[(d0 + k) * N + n];
      hw[n * W + k] = p.halt_weight[(d0 + k) * N + n];
    }
  }

  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t t0 = c * T, steps = std::min(T, L - t0);
    for (int64_t k = 0; k < width; ++k) {
      for (int64_t n = 0; n < N; ++n) p.checkpoints[((b * n_chunks + c) * dims.dim + d0 + k) * N + n] = h[n * W + k];
      const int64_t offset = (b * dims.dim + d0 + k) * L + t0;
      const scalar_t bias = p.delta_bias[d0 + k];
#pragma omp simd
      for (int64_t t = 0; t < steps; ++t) row[t] = discretize(p.delta[offset + t] + bias, delta_softplus);
      for (int64_t t = 0; t < steps; ++t) dt[t * W + k] = row[t];
      for (int64_t t = 0; t < steps; ++t) u[t * W + k] = p.u[offset + t];
      if (p.z != nullptr) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) row[t] = silu(p.z[offset + t]);
        for (int64_t t = 0; t < steps; ++t) gate[t * W + k] = row[t];
      }
    }
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t* dtt = dt.data() + t * W;
      const scalar_t* ut = u.data() + t * W;
      std::fill(y.begin(), y.end(), scalar_t(0));
      std::fill(s1.begin(), s1.end(), scalar_t(0));
      std::fill(s2.begin(), s2.end(), scalar_t(0));
      std::fill(hsum.begin(), hsum.end(), scalar_t(0));
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Bn = Bg[n * L + t0 + t], Cn = Cg[n * L + t0 + t];
        scalar_t* hn = h.data() + n * W;
        const scalar_t* An = A.data() + n * W;
        const scalar_t* hwn = hw.data() + n * W;
#pragma omp simd
        for (int64_t k = 0; k < W; ++k) {
          const scalar_t v = exp_v(dtt[k] * An[k]) * hn[k] + dtt[k] * ut[k] * Bn;
          hn[k] = v;
          const scalar_t e = v * v;
          y[k] += Cn * v;
          s1[k] += e;
          s2[k] += e * log_or_zero(e);
          hsum[k] += hwn[k] * v;
        }
      }
      for (int64_t k = 0; k < width; ++k) {
        p.out[(b * dims.dim + d0 + k) * L + t0 + t] = (y[k] + p.D[d0 + k] * ut[k]) * gate[t * W + k];
      }
      part[t0 + t] = lane_sum(s1.data());
      part[L + t0 + t] = lane_sum(s2.data());
      part[2 * L + t0 + t] = lane_sum(hsum.data());
    }
  }
  for (int64_t k = 0; k < width; ++k) {
    for (int64_t n = 0; n < N; ++n) p.last_state[(b * dims.dim + d0 + k) * N + n] = h[n * W + k];
  }
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
