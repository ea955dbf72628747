// Fused backward on the CPU: a reverse walk over chunks with recomputation from the forward's checkpoints.
//
// The work is the forward's (batch row, channel block) units, with the same channel-innermost layout. For each
// chunk, last to first, a block recomputes its states from the chunk's checkpoint into a (chunk + 1, N, channels)
// scratch buffer (and the decay factors exp(dt A) into a (chunk, N, channels) one), computes every term that needs
// h_t but not the adjoint (the source below, with the entropy's log only at steps with an entropy cotangent), then
// runs the adjoint recurrence backwards over the chunk:
//   g_t = exp(dt_{t+1} A) g_{t+1} + C_t dy_t + grad_entropy_t * 2 h_t (S2/S1 - log h_t^2) / S1
//         + grad_halt_t * halt_weight + grad_channel_mean_t / D,       g_{L-1} starts from grad_last_state.
// Gradients owned by one block (du, ddelta, dz, dinitial_state) are written directly; the (D,)- and (D, N)-shaped
// ones go to per-batch-row buffers summed afterwards; dB and dC are summed over a group's blocks in block order,
// by one work item per (batch row, group) or through per-block partials (see whole_groups). Every sum runs in a
// fixed order, so the result does not depend on the number of threads.
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "scan_common.h"
#include "scan_kernels.h"
#include "tensor_checks.h"
#include "vector_math.h"

namespace pna_cpu {
namespace {

template <typename scalar_t>
struct BackwardPointers {
  const scalar_t* grad_out;
  const scalar_t* grad_entropy;
  const scalar_t* grad_halt;
  const scalar_t* grad_last_state;
  const scalar_t* u;
  const scalar_t* delta;
  const scalar_t* A;
  const scalar_t* B;
  const scalar_t* C;
  const scalar_t* D;
  const scalar_t* z;  // nullptr without a gate
  const scalar_t* delta_bias;
  const scalar_t* halt_weight;
  const scalar_t* checkpoints;
  const scalar_t* entropy_sums;
  const scalar_t* grad_channel_mean;  // (batch, L, N); nullptr without the channel-mean output
  scalar_t* du;
  scalar_t* ddelta;
  scalar_t* dz;  // nullptr without a gate
  scalar_t* dinitial_state;
  scalar_t* dA_rows;            // (batch, D, N)
  scalar_t* dhalt_weight_rows;  // (batch, D, N)
  scalar_t* dD_rows;            // (batch, D)
  scalar_t* ddelta_bias_rows;   // (batch, D)
  scalar_t* dB_blocks;          // (batch, blocks, N, L); unused with whole_groups
  scalar_t* dC_blocks;          // (batch, blocks, N, L); unused with whole_groups
};

// Per-thread buffers of backward_block, allocated once per thread and reused by every item the thread runs.
// Channel-innermost layouts as in the forward: [n][channel], [step][channel], [step][n][channel].
template <typename scalar_t>
struct BackwardScratch {
  std::vector<scalar_t> g, A, hw, dA, dhw, dB_lanes;                                 // [n][channel]
  std::vector<scalar_t> dt, dt_grad, u, gout, gate, gate_grad, dy, y, du, ddelta, dz;  // [step][channel]
  std::vector<scalar_t> states, decay, source;                                       // [step][n][channel]
  std::vector<scalar_t> row, row2;
  explicit BackwardScratch(const ScanDims& dims) {
    const int64_t NW = dims.dstate * kBlockChannels, TW = dims.chunk * kBlockChannels;
    for (auto* v : {&g, &A, &hw, &dA, &dhw, &dB_lanes}) v->resize(NW);
    for (auto* v : {&dt, &dt_grad, &u, &gout, &gate, &gate_grad, &dy, &y, &du, &ddelta, &dz}) v->resize(TW);
    states.resize((dims.chunk + 1) * NW);
    decay.resize(dims.chunk * NW);
    source.resize(dims.chunk * NW);
    row.resize(dims.chunk);
    row2.resize(dims.chunk);
  }
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void backward_block(const BackwardPointers<scalar_t>& p, const ScanDims& dims,
                                        const ChannelBlocks& blocks, bool delta_softplus, int64_t b, int64_t block,
                                        BackwardScratch<scalar_t>& s, scalar_t* dBg, scalar_t* dCg, bool accumulate) {
  const int64_t N = dims.dstate, L = dims.length, T = dims.chunk, n_chunks = dims.n_chunks();
  const int64_t group = blocks.group(block), d0 = blocks.begin(block), width = blocks.end(block) - d0;
  // Lanes past `width` are padding: zero state, inputs and parameters keep them exactly zero, so the
  // vector loops always run over kBlockChannels lanes, a compile-time count the compiler fully unrolls.
  constexpr int64_t W = kBlockChannels;
  const scalar_t* Bg = p.B + (b * dims.groups + group) * N * L;
  const scalar_t* Cg = p.C + (b * dims.groups + group) * N * L;
  // dBg, dCg: (N, L), where this block's dB and dC go, written (or added to, when `accumulate`)
  const scalar_t* S1 = p.entropy_sums + b * 2 * L;
  const scalar_t* S2 = S1 + L;
  const scalar_t* grad_entropy = p.grad_entropy + b * L;
  const scalar_t* grad_halt = p.grad_halt + b * L;
  const scalar_t* grad_mean = p.grad_channel_mean == nullptr ? nullptr : p.grad_channel_mean + b * L * N;
  const scalar_t inv_dim = scalar_t(1) / scalar_t(dims.dim);

  scalar_t* const g = s.g.data();
  const scalar_t* const A = s.A.data();
  const scalar_t* const hw = s.hw.data();
  scalar_t* const dA = s.dA.data();
  scalar_t* const dhw = s.dhw.data();
  scalar_t* const dB_lanes = s.dB_lanes.data();
  scalar_t* const dt = s.dt.data();
  scalar_t* const dt_grad = s.dt_grad.data();
  scalar_t* const u = s.u.data();
  scalar_t* const gout = s.gout.data();
  scalar_t* const gate = s.gate.data();
  scalar_t* const gate_grad = s.gate_grad.data();
  scalar_t* const dy = s.dy.data();
  scalar_t* const y = s.y.data();
  scalar_t* const du = s.du.data();
  scalar_t* const ddelta = s.ddelta.data();
  scalar_t* const dz = s.dz.data();
  scalar_t* const states = s.states.data();
  scalar_t* const decay = s.decay.data();
  scalar_t* const source = s.source.data();
  scalar_t* const row = s.row.data();
  scalar_t* const row2 = s.row2.data();
  for (auto* v : {&s.g, &s.A, &s.hw, &s.dA, &s.dhw, &s.dt, &s.u, &s.gout, &s.gate_grad})
    std::fill(v->begin(), v->end(), scalar_t(0));
  std::fill(s.dt_grad.begin(), s.dt_grad.end(), scalar_t(1));
  std::fill(s.gate.begin(), s.gate.end(), scalar_t(1));
  std::fill(states, states + N * W, scalar_t(0));  // padding lanes of the checkpoint row; the rest is recomputed
  alignas(64) scalar_t Dskip[W] = {}, dD[W] = {}, dbias[W] = {}, valid[W] = {};
  for (int64_t k = 0; k < width; ++k) {
    valid[k] = scalar_t(1);  // the channel-mean gradient reaches real channels only, keeping padding lanes zero
    Dskip[k] = p.D[d0 + k];
    for (int64_t n = 0; n < N; ++n) {
      g[n * W + k] = p.grad_last_state[(b * dims.dim + d0 + k) * N + n];
      s.A[n * W + k] = p.A[(d0 + k) * N + n];
      s.hw[n * W + k] = p.halt_weight[(d0 + k) * N + n];
    }
  }

  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * T, steps = std::min(T, L - t0);
    for (int64_t k = 0; k < width; ++k) {
      const scalar_t* checkpoint = p.checkpoints + ((b * n_chunks + c) * dims.dim + d0 + k) * N;
      for (int64_t n = 0; n < N; ++n) states[n * W + k] = checkpoint[n];
      const int64_t offset = (b * dims.dim + d0 + k) * L + t0;
      const scalar_t bias = p.delta_bias[d0 + k];
      if (delta_softplus) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) softplus_and_grad(p.delta[offset + t] + bias, row[t], row2[t]);
        for (int64_t t = 0; t < steps; ++t) dt_grad[t * W + k] = row2[t];
      } else {
        for (int64_t t = 0; t < steps; ++t) row[t] = p.delta[offset + t] + bias;
      }
      for (int64_t t = 0; t < steps; ++t) dt[t * W + k] = row[t];
      if (p.z != nullptr) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) silu_and_grad(p.z[offset + t], row[t], row2[t]);
        for (int64_t t = 0; t < steps; ++t) gate[t * W + k] = row[t];
        for (int64_t t = 0; t < steps; ++t) gate_grad[t * W + k] = row2[t];
      }
      for (int64_t t = 0; t < steps; ++t) u[t * W + k] = p.u[offset + t];
      for (int64_t t = 0; t < steps; ++t) gout[t * W + k] = p.grad_out[offset + t];
    }
    // recompute the chunk's states from its checkpoint: states[t + 1] = h_t, states[0] = the checkpoint
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t* dtt = dt + t * W;
      const scalar_t* ut = u + t * W;
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Bn = Bg[n * L + t0 + t];
        const scalar_t* An = A + n * W;
        const scalar_t* prev = states + (t * N + n) * W;
        scalar_t* next = states + ((t + 1) * N + n) * W;
        scalar_t* dec = decay + (t * N + n) * W;
#pragma omp simd
        for (int64_t k = 0; k < W; ++k) {
          dec[k] = exp_v(dtt[k] * An[k]);
          next[k] = dec[k] * prev[k] + dtt[k] * ut[k] * Bn;
        }
      }
    }
    // Everything that depends on h_t but not on the adjoint, step by step and independent across steps (so the
    // log never sits on the adjoint's serial chain): the adjoint's source
    //   C_t dy_t + grad_entropy_t * 2 h_t (S2/S1 - log h_t^2) / S1 + grad_halt_t * halt_weight + grad_channel_mean_t / D,
    // y_t (for dz), dC_t and the halt weight's gradient. dH/dh = scale * (h * shift - h log h^2); H is constant
    // where S1 = 0.
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t s1 = S1[t0 + t];
      const scalar_t scale = s1 > scalar_t(0) ? scalar_t(2) * grad_entropy[t0 + t] / s1 : scalar_t(0);
      const scalar_t shift = s1 > scalar_t(0) ? S2[t0 + t] / s1 : scalar_t(0);
      const scalar_t ghalt = grad_halt[t0 + t];
      scalar_t* dyt = dy + t * W;
#pragma omp simd
      for (int64_t k = 0; k < W; ++k) dyt[k] = gout[t * W + k] * gate[t * W + k];
      alignas(64) scalar_t yt[W] = {}, dC_lanes[W];
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Cn = Cg[n * L + t0 + t];
        const scalar_t gmean = grad_mean == nullptr ? scalar_t(0) : grad_mean[(t0 + t) * N + n] * inv_dim;
        const scalar_t* hwn = hw + n * W;
        const scalar_t* h = states + ((t + 1) * N + n) * W;
        scalar_t* src = source + (t * N + n) * W;
        scalar_t* dhwn = dhw + n * W;
        if (scale != scalar_t(0)) {
#pragma omp simd
          for (int64_t k = 0; k < W; ++k) {
            const scalar_t hk = h[k];
            src[k] = Cn * dyt[k] + scale * (hk * shift - hk * log_or_zero(hk * hk)) + ghalt * hwn[k] + gmean * valid[k];
            yt[k] += Cn * hk;
            dC_lanes[k] = dyt[k] * hk;
            dhwn[k] += ghalt * hk;
          }
        } else {  // no entropy gradient at this step (every layer but the one the loss reads): no log to take
#pragma omp simd
          for (int64_t k = 0; k < W; ++k) {
            const scalar_t hk = h[k];
            // scale * (hk * shift) is 0, or NaN where the state or its sums are not finite, as the full term is
            src[k] = Cn * dyt[k] + scale * (hk * shift) + ghalt * hwn[k] + gmean * valid[k];
            yt[k] += Cn * hk;
            dC_lanes[k] = dyt[k] * hk;
            dhwn[k] += ghalt * hk;
          }
        }
        const scalar_t dC_sum = lane_sum(dC_lanes);  // dC_t[n]: the sum over the block's channels
        dCg[n * L + t0 + t] = accumulate ? dCg[n * L + t0 + t] + dC_sum : dC_sum;
      }
#pragma omp simd
      for (int64_t k = 0; k < W; ++k) y[t * W + k] = yt[k];
    }
    // adjoint recurrence, last step of the chunk first: g_t = exp(dt_{t+1} A) g_{t+1} + source_t
    for (int64_t t = steps - 1; t >= 0; --t) {
      const scalar_t* dtt = dt + t * W;
      const scalar_t* ut = u + t * W;
      alignas(64) scalar_t gB[W] = {}, gdt[W] = {};
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t Bn = Bg[n * L + t0 + t];
        const scalar_t* An = A + n * W;
        const scalar_t* prev = states + (t * N + n) * W;
        const scalar_t* dec = decay + (t * N + n) * W;
        const scalar_t* src = source + (t * N + n) * W;
        scalar_t* gn = g + n * W;
        scalar_t* dAn = dA + n * W;
        scalar_t* dBn = dB_lanes + n * W;
#pragma omp simd
        for (int64_t k = 0; k < W; ++k) {
          const scalar_t gk = gn[k] + src[k];
          dBn[k] = gk * dtt[k] * ut[k];
          gB[k] += gk * Bn;
          const scalar_t decayed_prev = dec[k] * prev[k];
          gdt[k] += gk * (An[k] * decayed_prev + Bn * ut[k]);
          dAn[k] += gk * dtt[k] * decayed_prev;
          gn[k] = gk * dec[k];
        }
      }
      for (int64_t n = 0; n < N; ++n) {  // dB_t[n]
        const scalar_t dB_sum = lane_sum(dB_lanes + n * W);
        dBg[n * L + t0 + t] = accumulate ? dBg[n * L + t0 + t] + dB_sum : dB_sum;
      }
#pragma omp simd
      for (int64_t k = 0; k < W; ++k) {
        const int64_t i = t * W + k;
        const scalar_t gdelta = gdt[k] * dt_grad[i];
        du[i] = dtt[k] * gB[k] + dy[i] * Dskip[k];
        ddelta[i] = gdelta;
        dz[i] = gout[i] * (y[i] + Dskip[k] * ut[k]) * gate_grad[i];
        dbias[k] += gdelta;
        dD[k] += dy[i] * ut[k];
      }
    }
    // the chunk's per-channel gradients, from [step][channel] back to the (batch, D, L) layout
    for (int64_t k = 0; k < width; ++k) {
      const int64_t offset = (b * dims.dim + d0 + k) * L + t0;
      for (int64_t t = 0; t < steps; ++t) p.du[offset + t] = du[t * W + k];
      for (int64_t t = 0; t < steps; ++t) p.ddelta[offset + t] = ddelta[t * W + k];
      if (p.z != nullptr) {
        for (int64_t t = 0; t < steps; ++t) p.dz[offset + t] = dz[t * W + k];
      }
    }
  }
  for (int64_t k = 0; k < width; ++k) {
    const int64_t d = d0 + k;
    for (int64_t n = 0; n < N; ++n) {
      p.dinitial_state[(b * dims.dim + d) * N + n] = g[n * W + k];
      p.dA_rows[(b * dims.dim + d) * N + n] = dA[n * W + k];
      p.dhalt_weight_rows[(b * dims.dim + d) * N + n] = dhw[n * W + k];
    }
    p.dD_rows[b * dims.dim + d] = dD[k];
    p.ddelta_bias_rows[b * dims.dim + d] = dbias[k];
  }
}

// out[i] = sum over r < rows of parts[r * size + i], in order of r (row by row, so the adds run along i in vectors).
template <typename scalar_t>
void sum_rows(const scalar_t* parts, int64_t rows, int64_t size, scalar_t* out) {
  std::fill(out, out + size, scalar_t(0));
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* part = parts + r * size;
#pragma omp simd
    for (int64_t i = 0; i < size; ++i) out[i] += part[i];
  }
}

// With at least this many (batch row, B/C group) pairs, a work item is a whole pair: it runs the pair's channel
// blocks in order and adds their dB/dC straight into the output, in the order the per-block partials would be
// summed, so without their (batch, blocks, N, L) buffers. With fewer (say batch 1), items are single blocks, so
// more threads find work, and the partials are summed afterwards. The choice depends on the shape only.
constexpr int64_t kMinGroupItems = 8;

inline bool whole_groups(const ScanDims& dims) { return dims.batch * dims.groups >= kMinGroupItems; }

template <typename scalar_t>
void backward(const BackwardPointers<scalar_t>& p, const ScanDims& dims, bool delta_softplus, int64_t num_threads,
              scalar_t* dA, scalar_t* dB, scalar_t* dC, scalar_t* dD, scalar_t* ddelta_bias,
              scalar_t* dhalt_weight, scalar_t* dhalt_bias) {
  const ChannelBlocks blocks(dims);
  const int64_t n_blocks = blocks.count(dims), items = dims.batch * n_blocks;
  const int64_t N = dims.dstate, L = dims.length;
  if (whole_groups(dims)) {
#pragma omp parallel num_threads(num_threads)
    {
      BackwardScratch<scalar_t> scratch(dims);
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < dims.batch * dims.groups; ++item) {
        scalar_t* dB_out = dB + item * N * L;
        scalar_t* dC_out = dC + item * N * L;
        const int64_t b = item / dims.groups, first = (item % dims.groups) * blocks.per_group;
        for (int64_t j = 0; j < blocks.per_group; ++j) {
          backward_block(p, dims, blocks, delta_softplus, b, first + j, scratch, dB_out, dC_out, j > 0);
        }
      }
    }
  } else {
#pragma omp parallel num_threads(num_threads)
    {
      BackwardScratch<scalar_t> scratch(dims);
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < items; ++item) {
        scalar_t* dB_part = p.dB_blocks + item * N * L;
        scalar_t* dC_part = p.dC_blocks + item * N * L;
        backward_block(p, dims, blocks, delta_softplus, item / n_blocks, item % n_blocks, scratch, dB_part, dC_part,
                       false);
      }
    }
#pragma omp parallel for num_threads(num_threads) schedule(static)  // rows are independent; blocks added in order
    for (int64_t b = 0; b < dims.batch; ++b) {
      for (int64_t g = 0; g < dims.groups; ++g) {
        const int64_t first = (b * n_blocks + g * blocks.per_group) * N * L, out = (b * dims.groups + g) * N * L;
        sum_rows(p.dB_blocks + first, blocks.per_group, N * L, dB + out);
        sum_rows(p.dC_blocks + first, blocks.per_group, N * L, dC + out);
      }
    }
  }
  sum_rows(p.dA_rows, dims.batch, dims.dim * N, dA);
  sum_rows(p.dhalt_weight_rows, dims.batch, dims.dim * N, dhalt_weight);
  sum_rows(p.dD_rows, dims.batch, dims.dim, dD);
  sum_rows(p.ddelta_bias_rows, dims.batch, dims.dim, ddelta_bias);
  sum_rows(p.grad_halt, dims.batch * L, 1, dhalt_bias);  // halt_bias feeds every token
}

}  // namespace

ScanGrads scan_backward(const ScanArgs& a, const ScanSaved& saved, const ScanCotangents& cot, int64_t num_threads) {
  const ScanDims dims = check_scan_args(a);
  check_positive("num_threads", num_threads);
  const std::vector<int64_t> bdl{dims.batch, dims.dim, dims.length}, bl{dims.batch, dims.length},
      bdn{dims.batch, dims.dim, dims.dstate};
  const std::vector<int64_t> bln = a.with_channel_mean ? std::vector<int64_t>{dims.batch, dims.length, dims.dstate}
                                                       : std::vector<int64_t>{0};
  check_tensors(a.u.scalar_type(),
                {{"grad_out", &cot.grad_out, bdl}, {"grad_entropy", &cot.grad_entropy, bl},
                 {"grad_halt", &cot.grad_halt, bl}, {"grad_last_state", &cot.grad_last_state, bdn},
                 {"grad_channel_mean", &cot.grad_channel_mean, bln},
                 {"checkpoints", &saved.checkpoints, {dims.batch, dims.n_chunks(), dims.dim, dims.dstate}},
                 {"entropy_sums", &saved.entropy_sums, {dims.batch, 2, dims.length}}});
  ScanGrads g;
  for (auto [grad, like] : {std::pair<at::Tensor*, const at::Tensor*>{&g.u, &a.u}, {&g.delta, &a.delta},
                            {&g.A, &a.A}, {&g.B, &a.B}, {&g.C, &a.C}, {&g.D, &a.D}, {&g.delta_bias, &a.delta_bias},
                            {&g.halt_weight, &a.halt_weight}, {&g.halt_bias, &a.halt_bias},
                            {&g.initial_state, &a.initial_state}})
    *grad = at::empty_like(*like);
  if (a.z.has_value()) g.z = at::empty_like(*a.z);
  const int64_t n_blocks = ChannelBlocks(dims).count(dims);
  const auto options = a.u.options();
  const at::Tensor dA_rows = at::empty({dims.batch, dims.dim, dims.dstate}, options);
  const at::Tensor dhalt_weight_rows = at::empty_like(dA_rows);
  const at::Tensor dD_rows = at::empty({dims.batch, dims.dim}, options);
  const at::Tensor ddelta_bias_rows = at::empty_like(dD_rows);
  const at::Tensor dB_blocks =
      at::empty({whole_groups(dims) ? 0 : dims.batch, n_blocks, dims.dstate, dims.length}, options);
  const at::Tensor dC_blocks = at::empty_like(dB_blocks);

  AT_DISPATCH_FLOATING_TYPES(a.u.scalar_type(), "pna_cpu_scan_backward", [&] {
    const BackwardPointers<scalar_t> p{
        cot.grad_out.data_ptr<scalar_t>(), cot.grad_entropy.data_ptr<scalar_t>(), cot.grad_halt.data_ptr<scalar_t>(),
        cot.grad_last_state.data_ptr<scalar_t>(), a.u.data_ptr<scalar_t>(), a.delta.data_ptr<scalar_t>(),
        a.A.data_ptr<scalar_t>(), a.B.data_ptr<scalar_t>(), a.C.data_ptr<scalar_t>(), a.D.data_ptr<scalar_t>(),
        a.z.has_value() ? a.z->data_ptr<scalar_t>() : nullptr, a.delta_bias.data_ptr<scalar_t>(),
        a.halt_weight.data_ptr<scalar_t>(), saved.checkpoints.data_ptr<scalar_t>(),
        saved.entropy_sums.data_ptr<scalar_t>(),
        a.with_channel_mean ? cot.grad_channel_mean.data_ptr<scalar_t>() : nullptr, g.u.data_ptr<scalar_t>(),
        g.delta.data_ptr<scalar_t>(), g.z.has_value() ? g.z->data_ptr<scalar_t>() : nullptr,
        g.initial_state.data_ptr<scalar_t>(), dA_rows.data_ptr<scalar_t>(), dhalt_weight_rows.data_ptr<scalar_t>(),
        dD_rows.data_ptr<scalar_t>(), ddelta_bias_rows.data_ptr<scalar_t>(), dB_blocks.data_ptr<scalar_t>(),
        dC_blocks.data_ptr<scalar_t>()};
    backward(p, dims, a.delta_softplus, num_threads, g.A.data_ptr<scalar_t>(), g.B.data_ptr<scalar_t>(),
             g.C.data_ptr<scalar_t>(), g.D.data_ptr<scalar_t>(), g.delta_bias.data_ptr<scalar_t>(),
             g.halt_weight.data_ptr<scalar_t>(), g.halt_bias.data_ptr<scalar_t>());
  });
  return g;
}

}  // namespace pna_cpu
