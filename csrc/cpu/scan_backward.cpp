// Fused backward on the CPU: a reverse walk over chunks with recomputation from the forward's checkpoints.
//
// Work items are the forward's (batch row, channel block). For each chunk, last to first, every channel of the
// block recomputes its states from the chunk's checkpoint into a (chunk + 1, N) scratch buffer (with the decay
// factors exp(dt A) in a (chunk, N) one), then runs the adjoint recurrence backwards over the chunk:
//   g_t = exp(dt_{t+1} A) g_{t+1} + C_t dy_t + grad_entropy_t * 2 h_t (S2/S1 - log h_t^2) / S1
//         + grad_halt_t * halt_weight,            g_{L-1} starts from grad_last_state.
// Gradients owned by one item (du, ddelta, dz, dinitial_state) are written directly; the others go to partial
// buffers (per batch row for the (D,)- and (D, N)-shaped ones, per block for dB and dC) that are summed in a
// fixed order afterwards, so the result does not depend on the number of threads.
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
  scalar_t* du;
  scalar_t* ddelta;
  scalar_t* dz;  // nullptr without a gate
  scalar_t* dinitial_state;
  scalar_t* dA_rows;            // (batch, D, N)
  scalar_t* dhalt_weight_rows;  // (batch, D, N)
  scalar_t* dD_rows;            // (batch, D)
  scalar_t* ddelta_bias_rows;   // (batch, D)
  scalar_t* dB_blocks;          // (batch, blocks, N, L)
  scalar_t* dC_blocks;          // (batch, blocks, N, L)
};

template <typename scalar_t>
PNA_CPU_MULTIVERSION void backward_block(const BackwardPointers<scalar_t>& p, const ScanDims& dims, const ChannelBlocks& blocks,
                    bool delta_softplus, int64_t b, int64_t block) {
  const int64_t N = dims.dstate, L = dims.length, T = dims.chunk, n_chunks = dims.n_chunks();
  const int64_t group = blocks.group(block), d0 = blocks.begin(block), d1 = blocks.end(block);
  const scalar_t* Bg = p.B + (b * dims.groups + group) * N * L;
  const scalar_t* Cg = p.C + (b * dims.groups + group) * N * L;
  scalar_t* dBg = p.dB_blocks + (b * blocks.count(dims) + block) * N * L;
  scalar_t* dCg = p.dC_blocks + (b * blocks.count(dims) + block) * N * L;
  const scalar_t* S1 = p.entropy_sums + b * 2 * L;
  const scalar_t* S2 = S1 + L;

  // adjoint of every channel of the block, carried from chunk to chunk
  std::vector<scalar_t> adjoint((d1 - d0) * N);
  std::copy(p.grad_last_state + (b * dims.dim + d0) * N, p.grad_last_state + (b * dims.dim + d1) * N,
            adjoint.begin());
  std::vector<scalar_t> dA_acc((d1 - d0) * N, scalar_t(0)), dhw_acc((d1 - d0) * N, scalar_t(0));
  std::vector<scalar_t> dD_acc(d1 - d0, scalar_t(0)), ddb_acc(d1 - d0, scalar_t(0));
  std::vector<scalar_t> Bt(T * N), Ct(T * N), dBt(T * N), dCt(T * N);
  std::vector<scalar_t> states((T + 1) * N), decay(T * N), dt_row(T), dt_grad_row(T, 1);
  std::vector<scalar_t> gate_row(T, 1), gate_grad_row(T, 0);
  std::vector<scalar_t> ent_scale(T), ent_shift(T);

  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * T, steps = std::min(T, L - t0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < steps; ++t) {
        Bt[t * N + n] = Bg[n * L + t0 + t];
        Ct[t * N + n] = Cg[n * L + t0 + t];
      }
    }
    std::fill(dBt.begin(), dBt.end(), scalar_t(0));
    std::fill(dCt.begin(), dCt.end(), scalar_t(0));
    // dH/dh = 2h (S2/S1 - log h^2) / S1 = ent_scale * h * (ent_shift - log h^2); H is constant where S1 = 0
    for (int64_t t = 0; t < steps; ++t) {
      const scalar_t s1 = S1[t0 + t];
      const bool positive = s1 > scalar_t(0);
      ent_scale[t] = positive ? scalar_t(2) * p.grad_entropy[b * L + t0 + t] / s1 : scalar_t(0);
      ent_shift[t] = positive ? S2[t0 + t] / s1 : scalar_t(0);
    }
    for (int64_t d = d0; d < d1; ++d) {
      const scalar_t* Ad = p.A + d * N;
      const scalar_t* hw = p.halt_weight + d * N;
      const int64_t row = (b * dims.dim + d) * L + t0;
      // recompute the chunk's states: states[t + 1] = h_t, states[0] = the checkpoint
      const scalar_t* checkpoint = p.checkpoints + ((b * n_chunks + c) * dims.dim + d) * N;
      std::copy(checkpoint, checkpoint + N, states.begin());
      const scalar_t bias = p.delta_bias[d];
#pragma omp simd
      for (int64_t t = 0; t < steps; ++t) dt_row[t] = discretize(p.delta[row + t] + bias, delta_softplus);
      if (delta_softplus) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) dt_grad_row[t] = softplus_grad(p.delta[row + t] + bias);
      }
      if (p.z != nullptr) {
#pragma omp simd
        for (int64_t t = 0; t < steps; ++t) {
          gate_row[t] = silu(p.z[row + t]);
          gate_grad_row[t] = silu_grad(p.z[row + t]);
        }
      }
      for (int64_t t = 0; t < steps; ++t) {
        const scalar_t dt = dt_row[t], dtu = dt * p.u[row + t];
        const scalar_t* Bs = Bt.data() + t * N;
        const scalar_t* prev = states.data() + t * N;
        scalar_t* next = states.data() + (t + 1) * N;
        scalar_t* dec = decay.data() + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          dec[n] = exp_v(dt * Ad[n]);
          next[n] = dec[n] * prev[n] + dtu * Bs[n];
        }
      }
      scalar_t* g = adjoint.data() + (d - d0) * N;
      scalar_t* dAd = dA_acc.data() + (d - d0) * N;
      scalar_t* dhwd = dhw_acc.data() + (d - d0) * N;
      scalar_t dD_sum = 0, ddb_sum = 0;
      const scalar_t Dd = p.D[d];
      for (int64_t t = steps - 1; t >= 0; --t) {
        const scalar_t dt = dt_row[t], u = p.u[row + t], dtu = dt * u, gout = p.grad_out[row + t];
        const scalar_t dy = gout * gate_row[t];
        const scalar_t e_scale = ent_scale[t], e_shift = ent_shift[t];
        const scalar_t ghalt = p.grad_halt[b * L + t0 + t];
        const scalar_t* Bs = Bt.data() + t * N;
        const scalar_t* Cs = Ct.data() + t * N;
        const scalar_t* h = states.data() + (t + 1) * N;
        const scalar_t* prev = states.data() + t * N;
        const scalar_t* dec = decay.data() + t * N;
        scalar_t* dBs = dBt.data() + t * N;
        scalar_t* dCs = dCt.data() + t * N;
        scalar_t y = 0, gB = 0, ddt = 0;
#pragma omp simd reduction(+ : y, gB, ddt)
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t hn = h[n];
          const scalar_t gn = g[n] + Cs[n] * dy + e_scale * (hn * e_shift - hn * log_or_zero(hn * hn)) +
                              ghalt * hw[n];
          y += Cs[n] * hn;
          dCs[n] += dy * hn;
          dhwd[n] += ghalt * hn;
          dBs[n] += gn * dtu;
          gB += gn * Bs[n];
          const scalar_t decayed_prev = dec[n] * prev[n];
          ddt += gn * (Ad[n] * decayed_prev + Bs[n] * u);
          dAd[n] += gn * dt * decayed_prev;
          g[n] = gn * dec[n];
        }
        p.du[row + t] = dt * gB + dy * Dd;
        const scalar_t gdelta = ddt * dt_grad_row[t];
        p.ddelta[row + t] = gdelta;
        ddb_sum += gdelta;
        dD_sum += dy * u;
        if (p.z != nullptr) p.dz[row + t] = gout * (y + Dd * u) * gate_grad_row[t];
      }
      dD_acc[d - d0] += dD_sum;
      ddb_acc[d - d0] += ddb_sum;
    }
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < steps; ++t) {
        dBg[n * L + t0 + t] = dBt[t * N + n];
        dCg[n * L + t0 + t] = dCt[t * N + n];
      }
    }
  }
  const int64_t first = (b * dims.dim + d0) * N;
  std::copy(adjoint.begin(), adjoint.end(), p.dinitial_state + first);
  std::copy(dA_acc.begin(), dA_acc.end(), p.dA_rows + first);
  std::copy(dhw_acc.begin(), dhw_acc.end(), p.dhalt_weight_rows + first);
  std::copy(dD_acc.begin(), dD_acc.end(), p.dD_rows + b * dims.dim + d0);
  std::copy(ddb_acc.begin(), ddb_acc.end(), p.ddelta_bias_rows + b * dims.dim + d0);
}

// out[i] = sum over r < rows of parts[r * size + i], in order of r.
template <typename scalar_t>
void sum_rows(const scalar_t* parts, int64_t rows, int64_t size, scalar_t* out) {
  for (int64_t i = 0; i < size; ++i) {
    scalar_t total = 0;
    for (int64_t r = 0; r < rows; ++r) total += parts[r * size + i];
    out[i] = total;
  }
}

template <typename scalar_t>
void backward(const BackwardPointers<scalar_t>& p, const ScanDims& dims, bool delta_softplus, int64_t num_threads,
              scalar_t* dA, scalar_t* dB, scalar_t* dC, scalar_t* dD, scalar_t* ddelta_bias,
              scalar_t* dhalt_weight, scalar_t* dhalt_bias) {
  const ChannelBlocks blocks(dims);
  const int64_t n_blocks = blocks.count(dims), items = dims.batch * n_blocks;
  const int64_t N = dims.dstate, L = dims.length;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    backward_block(p, dims, blocks, delta_softplus, item / n_blocks, item % n_blocks);
  }
  sum_rows(p.dA_rows, dims.batch, dims.dim * N, dA);
  sum_rows(p.dhalt_weight_rows, dims.batch, dims.dim * N, dhalt_weight);
  sum_rows(p.dD_rows, dims.batch, dims.dim, dD);
  sum_rows(p.ddelta_bias_rows, dims.batch, dims.dim, ddelta_bias);
  for (int64_t b = 0; b < dims.batch; ++b) {
    for (int64_t g = 0; g < dims.groups; ++g) {
      const int64_t first = (b * n_blocks + g * blocks.per_group) * N * L, out = (b * dims.groups + g) * N * L;
      sum_rows(p.dB_blocks + first, blocks.per_group, N * L, dB + out);
      sum_rows(p.dC_blocks + first, blocks.per_group, N * L, dC + out);
    }
  }
  sum_rows(p.grad_halt, dims.batch * L, 1, dhalt_bias);  // halt_bias feeds every token
}

}  // namespace

void scan_backward_out(const at::Tensor& grad_out, const at::Tensor& grad_entropy, const at::Tensor& grad_halt,
                       const at::Tensor& grad_last_state, const at::Tensor& u, const at::Tensor& delta,
                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                       const std::optional<at::Tensor>& z, const at::Tensor& delta_bias,
                       const at::Tensor& halt_weight, const at::Tensor& halt_bias, const at::Tensor& initial_state,
                       const at::Tensor& checkpoints, const at::Tensor& entropy_sums, bool delta_softplus,
                       int64_t chunk, int64_t num_threads, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA,
                       at::Tensor& dB, at::Tensor& dC, at::Tensor& dD, const std::optional<at::Tensor>& dz,
                       at::Tensor& ddelta_bias, at::Tensor& dhalt_weight, at::Tensor& dhalt_bias,
                       at::Tensor& dinitial_state) {
  TORCH_CHECK_VALUE(u.dim() == 3, "u: expected (batch, D, L), got shape ", u.sizes());
  TORCH_CHECK_VALUE(A.dim() == 2, "A: expected (D, N), got shape ", A.sizes());
  TORCH_CHECK_VALUE(B.dim() == 4, "B: expected (batch, G, N, L), got shape ", B.sizes());
  check_compute_dtype("u", u);
  check_positive("chunk", chunk);
  check_positive("num_threads", num_threads);
  TORCH_CHECK_VALUE(z.has_value() == dz.has_value(), "dz: must be given exactly when z is given");
  const ScanDims dims{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1), chunk};
  TORCH_CHECK_VALUE(dims.groups >= 1 && dims.dim % dims.groups == 0, "B: number of groups ", dims.groups,
                    " must divide D = ", dims.dim);
  const auto dt = u.scalar_type();
  const std::vector<int64_t> bdl{dims.batch, dims.dim, dims.length}, dn{dims.dim, dims.dstate},
      bgnl{dims.batch, dims.groups, dims.dstate, dims.length}, bdn{dims.batch, dims.dim, dims.dstate},
      bl{dims.batch, dims.length};
  check_tensors(dt, {{"grad_out", &grad_out, bdl}, {"grad_entropy", &grad_entropy, bl}, {"grad_halt", &grad_halt, bl},
                     {"grad_last_state", &grad_last_state, bdn}, {"u", &u, bdl}, {"delta", &delta, bdl},
                     {"A", &A, dn}, {"B", &B, bgnl}, {"C", &C, bgnl}, {"D", &D, {dims.dim}},
                     {"delta_bias", &delta_bias, {dims.dim}}, {"halt_weight", &halt_weight, dn},
                     {"halt_bias", &halt_bias, {}}, {"initial_state", &initial_state, bdn},
                     {"checkpoints", &checkpoints, {dims.batch, dims.n_chunks(), dims.dim, dims.dstate}},
                     {"entropy_sums", &entropy_sums, {dims.batch, 2, dims.length}}, {"du", &du, bdl},
                     {"ddelta", &ddelta, bdl}, {"dA", &dA, dn}, {"dB", &dB, bgnl}, {"dC", &dC, bgnl},
                     {"dD", &dD, {dims.dim}}, {"ddelta_bias", &ddelta_bias, {dims.dim}},
                     {"dhalt_weight", &dhalt_weight, dn}, {"dhalt_bias", &dhalt_bias, {}},
                     {"dinitial_state", &dinitial_state, bdn}});
  if (z.has_value()) check_tensors(dt, {{"z", &*z, bdl}, {"dz", &*dz, bdl}});
  const int64_t n_blocks = ChannelBlocks(dims).count(dims);
  const at::Tensor dA_rows = at::empty({dims.batch, dims.dim, dims.dstate}, u.options());
  const at::Tensor dhalt_weight_rows = at::empty_like(dA_rows);
  const at::Tensor dD_rows = at::empty({dims.batch, dims.dim}, u.options());
  const at::Tensor ddelta_bias_rows = at::empty_like(dD_rows);
  const at::Tensor dB_blocks = at::empty({dims.batch, n_blocks, dims.dstate, dims.length}, u.options());
  const at::Tensor dC_blocks = at::empty_like(dB_blocks);

  AT_DISPATCH_FLOATING_TYPES(dt, "pna_cpu_scan_backward", [&] {
    const BackwardPointers<scalar_t> p{
        grad_out.data_ptr<scalar_t>(), grad_entropy.data_ptr<scalar_t>(), grad_halt.data_ptr<scalar_t>(),
        grad_last_state.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(),
        A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(),
        z.has_value() ? z->data_ptr<scalar_t>() : nullptr, delta_bias.data_ptr<scalar_t>(),
        halt_weight.data_ptr<scalar_t>(), checkpoints.data_ptr<scalar_t>(), entropy_sums.data_ptr<scalar_t>(),
        du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(), dz.has_value() ? dz->data_ptr<scalar_t>() : nullptr,
        dinitial_state.data_ptr<scalar_t>(), dA_rows.data_ptr<scalar_t>(), dhalt_weight_rows.data_ptr<scalar_t>(),
        dD_rows.data_ptr<scalar_t>(), ddelta_bias_rows.data_ptr<scalar_t>(), dB_blocks.data_ptr<scalar_t>(),
        dC_blocks.data_ptr<scalar_t>()};
    backward(p, dims, delta_softplus, num_threads, dA.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(),
             dC.data_ptr<scalar_t>(), dD.data_ptr<scalar_t>(), ddelta_bias.data_ptr<scalar_t>(),
             dhalt_weight.data_ptr<scalar_t>(), dhalt_bias.data_ptr<scalar_t>());
  });
}

}  // namespace pna_cpu
