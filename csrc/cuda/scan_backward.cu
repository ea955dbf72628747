// Fused backward of the scan + entropy + halt op.
//
// Same block layout as the forward (scan_common.cuh). Each block walks its chunks from last to first: it stages
// the chunk's inputs in shared memory, recomputes the chunk's states from the forward's checkpoint into shared
// memory (each lane its own entries), then runs the adjoint recurrence backwards over the chunk's steps:
//   g_t = exp(dt_{t+1} A) g_{t+1} + C_t dy_t + grad_entropy_t * 2 h_t (S2_t / S1_t - log h_t^2) / S1_t
//         + grad_halt_t * halt_weight + grad_channel_mean_t / D        (g_{L-1} starts from grad_last_state),
// with dy = grad_out * silu(z) (grad_out without a gate) and S1, S2 the forward's per-step sums (the channel-mean
// term only with the channel mean; each lane reads its entries of grad_channel_mean, shared by the block's channels,
// straight from global memory). From g_t:
//   dA += g_t h_{t-1} a_t dt_t,  d dt_t = sum_n g_t (A a_t h_{t-1} + B_t u_t),  du_t = sum_n g_t dt_t B_t + D dy_t,
//   dB_t[n] = sum_d g_t dt_t u_t,  dC_t[n] = sum_d h_t dy_t,  dz_t = grad_out_t y_t silu'(z_t),  dD += dy_t u_t,
//   d delta = d dt * sigmoid(delta + delta_bias) with softplus (d dt without),  dhalt_weight += grad_halt_t h_t.
// Per-channel results (du, d delta, dz) are written coalesced per chunk. Sums over channels (dB, dC) are warp
// shuffles, then a fixed-order sum over the block's warps, written per block to (batch, slabs, N, L); sums over
// batch rows (dA, dD, d delta_bias, dhalt_weight) are written per row. The caller adds both up in a fixed order, so
// the gradients are deterministic (no atomics).
//
// Compile-time options (pna_kernels/cuda_options.py): PNA_CUDA_CHUNK (16, 32 or 64 steps per chunk);
// PNA_CUDA_REUSE_DECAY keeps the recompute's exp(dt A) for the adjoint step (see reuse_decay below);
// PNA_CUDA_PLAIN drops the entropy, halt and channel-mean terms; PNA_CUDA_DBDC_REDUCTION 0 ("partials") runs one
// layout channel block per CUDA block, so one dB/dC slab per channel block, 1 ("wide_blocks") runs up to 4 channel
// blocks of a group as sub-blocks of one CUDA block (see backward_plan), which stage B and C once and add their
// warps' dB/dC together, so one slab per CUDA block.
#include "scan_common.cuh"

#if !defined(PNA_CUDA_REUSE_DECAY) || !defined(PNA_CUDA_DBDC_REDUCTION)
#error "compile with every -D flag of pna_kernels/cuda_options.KernelOptions.defines()"
#endif
#if PNA_CUDA_DBDC_REDUCTION < 0 || PNA_CUDA_DBDC_REDUCTION > 1
#error "PNA_CUDA_DBDC_REDUCTION: an index into pna_kernels/cuda_options.DBDC_REDUCTIONS"
#endif

namespace pna_cuda {
namespace {

// Steps between flushes of the block's dB/dC sums to global memory (divides kChunk). It bounds their shared
// memory, 2 * warps * N * flush floats: 4 for N > 128 keeps the whole block under an A100's 163 KiB.
__host__ __device__ constexpr int flush_steps(int npt) { return npt >= 8 ? 4 : 8; }
static_assert(kChunk % flush_steps(1) == 0 && kChunk % flush_steps(8) == 0, "a flush must divide kChunk");

// reuse_decay: the recompute keeps every step's decay exp(dt A) in shared memory ([kChunk][NPT][kThreads] floats
// more), where that stays small (NPT * kChunk <= 64: at most 32 KiB); elsewhere the backward exponentiates again.
__host__ __device__ constexpr bool reuse_decay(int npt) { return PNA_CUDA_REUSE_DECAY != 0 && npt * kChunk <= 64; }

// dbdc_reduction "wide_blocks": up to this many of the layout's channel blocks (sub-blocks of kThreads threads, of
// one group) share a CUDA block and add their dB/dC in shared memory, so one (N, L) slab covers all of them.
// Capped by the registers a thread may use at kThreads * subs threads (255 at 128, 128 at 512).
__host__ __device__ constexpr int max_subs(int npt) {
  return PNA_CUDA_DBDC_REDUCTION == 0 ? 1 : npt <= 2 ? 4 : npt == 4 ? 2 : 1;
}
// The most shared memory a wide block takes (two fit an H100 SM, 228 KiB less 1 KiB per block): fewer sub-blocks
// where more would not fit. A wide block's shared bytes per warp are about a narrow block's.
constexpr size_t kWideSharedBytes = 110 * 1024;

// The most dynamic shared memory a block may opt in to (sm_90; an A100 allows 163 KiB).
constexpr size_t kMaxSharedBytes = 227 * 1024;

constexpr int kChannelArrays = 8;  // u, dt, d dt / d delta, z, grad_out, du, d delta, dz

// Shared floats of one sub-block: the chunk's states [kChunk + 1][NPT][kThreads], the decays (reuse_decay) and the
// per-channel arrays [kChannelArrays][cpb][kChunk + 1].
__host__ __device__ constexpr size_t sub_block_floats(int npt, int cpb) {
  return static_cast<size_t>(kChunk + 1) * npt * kThreads + (reuse_decay(npt) ? kChunk * npt * kThreads : 0) +
         static_cast<size_t>(kChannelArrays) * cpb * (kChunk + 1);
}

// How the backward is launched: `subs` sub-blocks per CUDA block, `blocks_per_group` CUDA blocks per group,
// `slabs` = groups * blocks_per_group (batch, slabs, N, L) dB and dC partial sums, `shared` bytes per block.
struct BackwardPlan {
  int subs, blocks_per_group, slabs;
  size_t shared;
};

size_t backward_shared_bytes(const Layout& l, int dstate, int subs) {
  const size_t common = 2 * static_cast<size_t>(dstate) * (kChunk + 1) + 3 * kChunk +  // B, C; the token arrays
                        2 * static_cast<size_t>(subs) * kWarps * dstate * flush_steps(l.npt);  // dB, dC per warp
  return sizeof(float) * (common + subs * sub_block_floats(l.npt, l.cpb));
}

BackwardPlan backward_plan(const Layout& l, int dstate, int groups) {
  int subs = max_subs(l.npt);
  // no more sub-blocks than half would already cover the group, and within kWideSharedBytes
  while (subs > 1 && (subs / 2 >= l.blocks_per_group || backward_shared_bytes(l, dstate, subs) > kWideSharedBytes))
    subs /= 2;
  BackwardPlan plan;
  plan.subs = subs;
  plan.blocks_per_group = (l.blocks_per_group + subs - 1) / subs;
  plan.slabs = groups * plan.blocks_per_group;
  plan.shared = backward_shared_bytes(l, dstate, subs);
  return plan;
}

struct BackwardParams {
  Shape s;
  BackwardPlan plan;
  PnaScanArgs a;
  PnaScanSaved saved;
  PnaScanCotangents cot;
  PnaScanGradParts g;
};

template <typename T, int NPT>
__global__ void __launch_bounds__(kThreads * max_subs(NPT)) scan_backward_kernel(BackwardParams p) {
  constexpr int W = kChunk + 1;
  constexpr int kFlush = flush_steps(NPT);
  constexpr bool kReuse = reuse_decay(NPT);
  extern __shared__ float smem[];
  const Shape& s = p.s;
  const int subs = p.plan.subs, threads = subs * kThreads;
  const int sub = threadIdx.x / kThreads, tid = threadIdx.x % kThreads;
  // This sub-block's channel block: sub-block `sub` of the CUDA block's run of channel blocks in group g.
  const int group = blockIdx.x / p.plan.blocks_per_group;
  const int in_group = (blockIdx.x % p.plan.blocks_per_group) * subs + sub;
  const bool exists = in_group < s.layout.blocks_per_group;  // the group's last CUDA block may have spare ones
  BlockPos pos = block_pos_at(s, blockIdx.y, group * s.layout.blocks_per_group + (exists ? in_group : 0), tid);
  if (!exists) {
    pos.nch = 0;
    pos.active = false;
  }
  const int cpb = s.layout.cpb, tpc = s.layout.tpc, N = s.dstate, L = s.length, D = s.dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s_B = smem;  // [N][W], the group's
  float* s_C = s_B + N * W;
  float* s_ge = s_C + N * W;  // 2 grad_entropy / S1 (0 where S1 = 0)
  float* s_r = s_ge + kChunk;  // S2 / S1
  float* s_gh = s_r + kChunk;  // grad_halt
  float* s_dB = s_gh + kChunk;  // [subs * kWarps][N][kFlush]
  float* s_dC = s_dB + subs * kWarps * N * kFlush;
  // This sub-block's part: h before the chunk, then after each step, [kChunk + 1][NPT][kThreads]; the decays
  // [kChunk][NPT][kThreads] (kReuse only); the per-channel arrays [cpb][W].
  float* s_h = s_dC + subs * kWarps * N * kFlush + sub * sub_block_floats(NPT, cpb);
  float* s_a = s_h + W * NPT * kThreads;
  float* s_u = s_a + (kReuse ? kChunk * NPT * kThreads : 0);
  float* s_dt = s_u + cpb * W;
  float* s_dsp = s_dt + cpb * W;
  float* s_z = s_dsp + cpb * W;
  float* s_gout = s_z + cpb * W;
  float* s_du = s_gout + cpb * W;
  float* s_ddelta = s_du + cpb * W;
  float* s_dz = s_ddelta + cpb * W;

  float a2[NPT], Av[NPT], hw[NPT], g[NPT], dA[NPT], dhw[NPT];
  bool valid[NPT];
  const size_t bd = static_cast<size_t>(pos.b) * D + pos.d;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int n = pos.j + k * tpc;
    valid[k] = pos.active && n < N;
    const size_t dn = static_cast<size_t>(pos.d) * N + n;
    Av[k] = valid[k] ? p.a.A[dn] : 0.f;
    a2[k] = Av[k] * kLog2e;
    hw[k] = valid[k] && !kPlain ? p.a.halt_weight[dn] : 0.f;
    g[k] = valid[k] ? p.cot.grad_last_state[bd * N + n] : 0.f;
    dA[k] = 0.f;
    dhw[k] = 0.f;
  }
  const float d_skip = pos.active ? p.a.D[pos.d] : 0.f;
  float dD_acc = 0.f, ddb_acc = 0.f;
  const bool has_z = p.a.z != nullptr;
  const size_t rows = (static_cast<size_t>(pos.b) * D + pos.d0) * L;
  const T* u = static_cast<const T*>(p.a.u) + rows;
  const T* delta = static_cast<const T*>(p.a.delta) + rows;
  const T* z = has_z ? static_cast<const T*>(p.a.z) + rows : nullptr;
  const T* gout = static_cast<const T*>(p.cot.grad_out) + rows;
  T* du = static_cast<T*>(p.g.u) + rows;
  T* ddelta = static_cast<T*>(p.g.delta) + rows;
  T* dz = has_z ? static_cast<T*>(p.g.z) + rows : nullptr;
  const size_t bc = (static_cast<size_t>(pos.b) * s.groups + pos.g) * N * L;
  const T* B = static_cast<const T*>(p.a.B) + bc;
  const T* C = static_cast<const T*>(p.a.C) + bc;
  const size_t slab = (static_cast<size_t>(pos.b) * p.plan.slabs + blockIdx.x) * N * L;
  float* dB_out = p.g.B_blocks + slab;
  float* dC_out = p.g.C_blocks + slab;
  const int n_chunks = (L + kChunk - 1) / kChunk;
  // plain: no entropy / halt / channel-mean terms, so none of their cotangents or saved sums is read
  const float* grad_mean = p.a.with_channel_mean && !kPlain
                               ? p.cot.grad_channel_mean + static_cast<size_t>(pos.b) * L * N : nullptr;
  const float inv_dim = 1.f / static_cast<float>(D);

  for (int chunk = n_chunks - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * kChunk;
    const int tl = min(kChunk, L - t0);
    for (int i = tid; i < pos.nch * kChunk; i += kThreads) {
      const int c = i / kChunk, t = i % kChunk;
      if (t < tl) {
        const size_t at = static_cast<size_t>(c) * L + t0 + t;
        s_u[c * W + t] = to_float(u[at]);
        const float x = to_float(delta[at]) + p.a.delta_bias[pos.d0 + c];
        s_dt[c * W + t] = p.a.delta_softplus ? softplus(x) : x;
        s_dsp[c * W + t] = p.a.delta_softplus ? sigmoid(x) : 1.f;
        s_z[c * W + t] = has_z ? to_float(z[at]) : 0.f;
        s_gout[c * W + t] = to_float(gout[at]);
      }
    }
    for (int i = threadIdx.x; i < N * kChunk; i += threads) {
      const int n = i / kChunk, t = i % kChunk;
      if (t < tl) {
        s_B[n * W + t] = to_float(B[static_cast<size_t>(n) * L + t0 + t]);
        s_C[n * W + t] = to_float(C[static_cast<size_t>(n) * L + t0 + t]);
      }
    }
    if constexpr (!kPlain) {
      const float* s1_row = p.saved.entropy_sums + static_cast<size_t>(pos.b) * 2 * L;
      const float* s2_row = s1_row + L;
      for (int t = threadIdx.x; t < tl; t += threads) {
        const size_t at = static_cast<size_t>(pos.b) * L + t0 + t;
        const float s1 = s1_row[t0 + t], s2 = s2_row[t0 + t];
        s_ge[t] = s1 > 0.f ? 2.f * p.cot.grad_entropy[at] / s1 : 0.f;
        s_r[t] = s1 > 0.f ? s2 / s1 : 0.f;
        s_gh[t] = p.cot.grad_halt[at];
      }
    }
    __syncthreads();

    // Recompute the chunk's states (each lane its own entries, so no barrier before reading them back).
    {
      const float* ck = p.saved.checkpoints + ((static_cast<size_t>(pos.b) * n_chunks + chunk) * D + pos.d) * N;
      float h[NPT];
#pragma unroll
      for (int k = 0; k < NPT; ++k) {
        h[k] = valid[k] ? ck[pos.j + k * tpc] : 0.f;
        s_h[k * kThreads + tid] = h[k];
      }
      for (int t = 0; t < tl; ++t) {
        const float dt = s_dt[pos.c * W + t], uu = s_u[pos.c * W + t];
#pragma unroll
        for (int k = 0; k < NPT; ++k) {
          const float a = exp2f(dt * a2[k]);
          if constexpr (kReuse) s_a[(t * NPT + k) * kThreads + tid] = a;
          if (valid[k]) h[k] = a * h[k] + dt * s_B[(pos.j + k * tpc) * W + t] * uu;
          s_h[((t + 1) * NPT + k) * kThreads + tid] = h[k];
        }
      }
    }

    for (int t = tl - 1; t >= 0; --t) {
      const float dt = s_dt[pos.c * W + t], uu = s_u[pos.c * W + t], go = s_gout[pos.c * W + t];
      float ge = 0.f, r = 0.f, gh = 0.f;
      if constexpr (!kPlain) {
        ge = s_ge[t];
        r = s_r[t];
        gh = s_gh[t];
      }
      float dy = go, zz = 0.f, sg = 0.f;
      if (has_z) {
        zz = s_z[pos.c * W + t];
        sg = sigmoid(zz);
        dy = go * zz * sg;
      }
      float yp = 0.f, ddt_p = 0.f, du_p = 0.f, dBv[NPT], dCv[NPT];
#pragma unroll
      for (int k = 0; k < NPT; ++k) {
        dBv[k] = 0.f;
        dCv[k] = 0.f;
        if (valid[k]) {
          const int n = pos.j + k * tpc;
          const float hp = s_h[(t * NPT + k) * kThreads + tid];
          const float hc = s_h[((t + 1) * NPT + k) * kThreads + tid];
          const float Bn = s_B[n * W + t], Cn = s_C[n * W + t];
          yp += Cn * hc;
          if constexpr (kPlain) {
            g[k] += Cn * dy;
          } else {
            const float e = hc * hc;
            g[k] += Cn * dy + gh * hw[k] + (e > 0.f ? ge * hc * (r - logf(e)) : 0.f);
            if (grad_mean != nullptr) g[k] += grad_mean[static_cast<size_t>(t0 + t) * N + n] * inv_dim;
            dhw[k] += gh * hc;
          }
          const float a = kReuse ? s_a[(t * NPT + k) * kThreads + tid] : exp2f(dt * a2[k]);
          ddt_p += g[k] * (Av[k] * a * hp + Bn * uu);
          du_p += g[k] * dt * Bn;
          dA[k] += g[k] * hp * a * dt;
          dBv[k] = g[k] * dt * uu;
          dCv[k] = hc * dy;
          g[k] *= a;
        }
      }
      ddt_p = channel_sum(ddt_p, tpc);
      du_p = channel_sum(du_p, tpc);
      if (has_z) yp = channel_sum(yp, tpc);
      const int slot = t % kFlush;
#pragma unroll
      for (int k = 0; k < NPT; ++k) {
        dBv[k] = across_channels_sum(dBv[k], tpc);
        dCv[k] = across_channels_sum(dCv[k], tpc);
        const int n = pos.j + k * tpc;
        if (lane < tpc && n < N) {
          s_dB[(warp * N + n) * kFlush + slot] = dBv[k];
          s_dC[(warp * N + n) * kFlush + slot] = dCv[k];
        }
      }
      if (pos.j == 0 && pos.active) {
        const float dd = ddt_p * s_dsp[pos.c * W + t];
        s_du[pos.c * W + t] = du_p + d_skip * dy;
        s_ddelta[pos.c * W + t] = dd;
        dD_acc += dy * uu;
        ddb_acc += dd;
        if (has_z) {
          const float y = yp + d_skip * uu;
          s_dz[pos.c * W + t] = go * y * sg * (1.f + zz * (1.f - sg));
        }
      }
      if (slot == 0) {  // steps t .. t + kFlush - 1 (those < tl) are complete: add up the warps, in warp order
        __syncthreads();
        const int steps = min(kFlush, tl - t);
        for (int i = threadIdx.x; i < N * kFlush; i += threads) {
          const int n = i / kFlush, q = i % kFlush;
          if (q < steps) {
            float vb = 0.f, vc = 0.f;
            for (int w = 0; w < subs * kWarps; ++w) {
              vb += s_dB[(w * N + n) * kFlush + q];
              vc += s_dC[(w * N + n) * kFlush + q];
            }
            dB_out[static_cast<size_t>(n) * L + t0 + t + q] = vb;
            dC_out[static_cast<size_t>(n) * L + t0 + t + q] = vc;
          }
        }
        __syncthreads();
      }
    }

    for (int i = tid; i < pos.nch * kChunk; i += kThreads) {
      const int c = i / kChunk, t = i % kChunk;
      if (t < tl) {
        const size_t at = static_cast<size_t>(c) * L + t0 + t;
        du[at] = from_float<T>(s_du[c * W + t]);
        ddelta[at] = from_float<T>(s_ddelta[c * W + t]);
        if (has_z) dz[at] = from_float<T>(s_dz[c * W + t]);
      }
    }
    __syncthreads();  // the next chunk overwrites the shared arrays
  }

#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    if (valid[k]) {
      const size_t at = bd * N + pos.j + k * tpc;
      p.g.A_rows[at] = dA[k];
      p.g.halt_weight_rows[at] = dhw[k];
      p.g.initial_state[at] = g[k];
    }
  }
  if (pos.j == 0 && pos.active) {
    p.g.D_rows[bd] = dD_acc;
    p.g.delta_bias_rows[bd] = ddb_acc;
  }
}

}  // namespace
}  // namespace pna_cuda

extern "C" int pna_cuda_dbdc_slabs(int dim, int groups, int dstate) {
  return pna_cuda::backward_plan(pna_cuda::make_layout(dim, groups, dstate), dstate, groups).slabs;
}

extern "C" const char* pna_cuda_scan_backward(const PnaScanArgs* args, const PnaScanSaved* saved,
                                              const PnaScanCotangents* cot, const PnaScanGradParts* grads,
                                              cudaStream_t stream) {
  using namespace pna_cuda;
  const PnaScanArgs& a = *args;
  if (const char* why = check_problem(a.dtype, a.batch, a.dim, a.length, a.dstate, a.groups)) return why;
  const Layout layout = make_layout(a.dim, a.groups, a.dstate);
  const BackwardParams p{Shape{a.batch, a.dim, a.length, a.dstate, a.groups, layout},
                         backward_plan(layout, a.dstate, a.groups), a, *saved, *cot, *grads};
  if (p.plan.shared > kMaxSharedBytes)
    return "the backward's shared memory (chunk + 1 states per lane) passes 227 KiB: use a shorter chunk or more "
           "lanes per channel";
  const dim3 grid(p.plan.slabs, a.batch);
  const unsigned threads = kThreads * p.plan.subs;
  const size_t shared = p.plan.shared;
  const cudaError_t err = dispatch(a.dtype, layout.npt, [&](auto tag, auto npt) {
    auto kernel = scan_backward_kernel<decltype(tag), decltype(npt)::value>;
    cudaError_t e = allow_shared_memory(kernel, shared);
    if (e != cudaSuccess) return e;
    kernel<<<grid, threads, shared, stream>>>(p);
    return cudaGetLastError();
  });
  return error_string(err);
}
