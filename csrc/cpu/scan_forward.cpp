// Fused forward on the CPU: the selective scan, y, the gate, per-token entropy sums and halt logits in one pass.
//
// Work items are (batch row, block of up to 16 channels); OpenMP spreads them over threads. An item keeps its
// block's state as (N, channels) and walks time chunk by chunk; the innermost loop runs over the block's
// channels, contiguous in that layout, so each step's y, S1, S2 and halt sums accumulate lane-wise with no
// reduction inside the vector loop. The per-token sums of the block go to a partial buffer (batch, blocks, 3, L)
// that is summed over blocks in a fixed order; so is the optional channel mean, whose per-block sums over channels
// go to a (batch, blocks, L, N) buffer (never (batch, L, D, N)).
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
  scalar_t* partials;       // (batch, blocks, 3, L): S1, S2, halt sum of each block
  scalar_t* mean_partials;  // (batch, blocks, L, N): sum of h over the block's channels; nullptr if not asked
};

// Per-thread buffers of forward_block, allocated once per thread and reused by every item the thread runs.
// Channel-innermost layouts ([n][channel], [step][channel], [step][n][channel]), so the vector loops run over
// the kBlockChannels lanes of a block.
template <typename scalar_t>
struct ForwardScratch {
  std::vector<scalar_t> h, A, hw, dt, u, gate, row, states;
  explicit ForwardScratch(const ScanDims& dims)
      : h(dims.dstate * kBlockChannels), A(h.size()), hw(h.size()), dt(dims.chunk * kBlockChannels), u(dt.size()),
        gate(dt.size()), row(dims.chunk), states(dims.chunk * dims.dstate * kBlockChannels) {}
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void forward_block(const ForwardPointers<scalar_t>& p, const ScanDims& dims,
                                       const ChannelBlocks& blocks, bool delta_softplus, int64_t b, int64_t block,
                                       ForwardScratch<scalar_t>& s) {
  const int64_t N = dims.dstate, L = dims.length, T = dims.chunk, n_chunks = dims.n_chunks();
  const int64_t group = blocks.group(block), d0 = blocks.begin(block), width = blocks.end(block) - d0;
  // Lanes past `width` are padding: zero state, inputs and parameters keep them exactly zero, so the
  // vector loops always run over kBlockChannels lanes, a compile-time count the compiler fully unrolls.
  constexpr int64_t W = kBlockChannels;
  const scalar_t* Bg = p.B + (b * dims.groups + group) * N * L;
  const scalar_t* Cg = p.C + (b * dims.groups + group) * N * L;
  scalar_t* part = p.partials + (b * blocks.count(dims) + block) * 3 * L;
  scalar_t* mean_part = p.mean_partials == nullptr ? nullptr : p.mean_partials + (b * blocks.count(dims) + block) * L * N;
  scalar_t* const h = s.h.data();
  const scalar_t* const A = s.A.data();
  const scalar_t* const hw = s.hw.data();
  scalar_t* const dt = s.dt.data();
  scalar_t* const u = s.u.data();
  scalar_t* const gate = s.gate.data();
  scalar_t* const row = s.row.data();
  scalar_t* const states = s.states.data();
  for (auto* buffer : {&s.h, &s.A, &s.hw, &s.dt, &s.u}) std::fill(buffer->begin(), buffer->end(), scalar_t(0));
  std::fill(s.gate.begin(), s.gate.end(), scalar_t(1));
  for (int64_t k = 0; k < width; ++k) {
    for (int64_t n = 0; n < N; ++n) {
      h[n * W + k] = p.initial_state[(b * dims.dim + d0 + k) * N + n];
      s.A[n * W + k] = p.A[(d0 + k) * N + n];
      s.hw[n * W + k] = p.halt_weight[(d0 + k) * N + n];
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
    // The recurrence alone first, every state of the chunk kept: its only serial dependence is one multiply-add
    // per step, so the independent exps of all n keep the vector units busy.
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t* dtt = dt + t * W;
      const scalar_t* ut = u + t * W;
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Bn = Bg[n * L + t0 + t];
        scalar_t* hn = h + n * W;
        const scalar_t* An = A + n * W;
        scalar_t* out = states + (t * N + n) * W;
#pragma omp simd
        for (int64_t k = 0; k < W; ++k) {
          const scalar_t v = exp_v(dtt[k] * An[k]) * hn[k] + dtt[k] * ut[k] * Bn;
          hn[k] = v;
          out[k] = v;
        }
      }
    }
    // Then what is read off every state (y, the entropy sums, the halt sum): independent across steps, so the log's
    // latency never sits on the recurrence.
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t* ut = u + t * W;
      alignas(64) scalar_t y[W] = {}, s1[W] = {}, s2[W] = {}, hsum[W] = {};
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Cn = Cg[n * L + t0 + t];
        const scalar_t* hn = states + (t * N + n) * W;
        const scalar_t* hwn = hw + n * W;
#pragma omp simd
        for (int64_t k = 0; k < W; ++k) {
          const scalar_t v = hn[k];
          const scalar_t e = v * v;
          y[k] += Cn * v;
          s1[k] += e;
          s2[k] += e * log_or_zero(e);
          hsum[k] += hwn[k] * v;
        }
        if (mean_part != nullptr) mean_part[(t0 + t) * N + n] = lane_sum(hn);
      }
      for (int64_t k = 0; k < width; ++k) {
        p.out[(b * dims.dim + d0 + k) * L + t0 + t] = (y[k] + p.D[d0 + k] * ut[k]) * gate[t * W + k];
      }
      part[t0 + t] = lane_sum(s1);
      part[L + t0 + t] = lane_sum(s2);
      part[2 * L + t0 + t] = lane_sum(hsum);
    }
  }
  for (int64_t k = 0; k < width; ++k) {
    for (int64_t n = 0; n < N; ++n) p.last_state[(b * dims.dim + d0 + k) * N + n] = h[n * W + k];
  }
}

template <typename scalar_t>
void forward(const ForwardPointers<scalar_t>& p, const ScanDims& dims, bool delta_softplus, int64_t num_threads,
             scalar_t halt_bias, scalar_t* entropy, scalar_t* halt, scalar_t* entropy_sums, scalar_t* channel_mean) {
  const ChannelBlocks blocks(dims);
  const int64_t n_blocks = blocks.count(dims), items = dims.batch * n_blocks, L = dims.length, N = dims.dstate;
#pragma omp parallel num_threads(num_threads)
  {
    ForwardScratch<scalar_t> scratch(dims);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      forward_block(p, dims, blocks, delta_softplus, item / n_blocks, item % n_blocks, scratch);
    }
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
  if (channel_mean == nullptr) return;
  const scalar_t inv_dim = scalar_t(1) / scalar_t(dims.dim);
#pragma omp parallel for num_threads(num_threads) schedule(static)  // rows are independent; blocks added in order
  for (int64_t b = 0; b < dims.batch; ++b) {
    scalar_t* mean = channel_mean + b * L * N;
    std::fill(mean, mean + L * N, scalar_t(0));
    for (int64_t block = 0; block < n_blocks; ++block) {
      const scalar_t* part = p.mean_partials + (b * n_blocks + block) * L * N;
      for (int64_t i = 0; i < L * N; ++i) mean[i] += part[i];
    }
    for (int64_t i = 0; i < L * N; ++i) mean[i] *= inv_dim;
  }
}

}  // namespace

ScanResult scan_forward(const ScanArgs& a, int64_t num_threads) {
  const ScanDims dims = check_scan_args(a);
  check_positive("num_threads", num_threads);
  const auto options = a.u.options();
  ScanResult r;
  r.out = at::empty({dims.batch, dims.dim, dims.length}, options);
  r.entropy = at::empty({dims.batch, dims.length}, options);
  r.halt_logits = at::empty({dims.batch, dims.length}, options);
  r.last_state = at::empty({dims.batch, dims.dim, dims.dstate}, options);
  r.channel_mean = a.with_channel_mean ? at::empty({dims.batch, dims.length, dims.dstate}, options)
                                       : at::empty({0}, options);
  r.checkpoints = at::empty({dims.batch, dims.n_chunks(), dims.dim, dims.dstate}, options);
  r.entropy_sums = at::empty({dims.batch, 2, dims.length}, options);
  const int64_t n_blocks = ChannelBlocks(dims).count(dims);
  const at::Tensor partials = at::empty({dims.batch, n_blocks, 3, dims.length}, options);
  const at::Tensor mean_partials =
      at::empty({a.with_channel_mean ? dims.batch : 0, n_blocks, dims.length, dims.dstate}, options);

  AT_DISPATCH_FLOATING_TYPES(a.u.scalar_type(), "pna_cpu_scan_forward", [&] {
    const ForwardPointers<scalar_t> p{
        a.u.data_ptr<scalar_t>(), a.delta.data_ptr<scalar_t>(), a.A.data_ptr<scalar_t>(), a.B.data_ptr<scalar_t>(),
        a.C.data_ptr<scalar_t>(), a.D.data_ptr<scalar_t>(), a.z.has_value() ? a.z->data_ptr<scalar_t>() : nullptr,
        a.delta_bias.data_ptr<scalar_t>(), a.halt_weight.data_ptr<scalar_t>(), a.initial_state.data_ptr<scalar_t>(),
        r.out.data_ptr<scalar_t>(), r.last_state.data_ptr<scalar_t>(), r.checkpoints.data_ptr<scalar_t>(),
        partials.data_ptr<scalar_t>(), a.with_channel_mean ? mean_partials.data_ptr<scalar_t>() : nullptr};
    forward(p, dims, a.delta_softplus, num_threads, a.halt_bias.item<scalar_t>(), r.entropy.data_ptr<scalar_t>(),
            r.halt_logits.data_ptr<scalar_t>(), r.entropy_sums.data_ptr<scalar_t>(),
            a.with_channel_mean ? r.channel_mean.data_ptr<scalar_t>() : nullptr);
  });
  return r;
}

}  // namespace pna_cpu
