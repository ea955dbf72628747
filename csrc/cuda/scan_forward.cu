// Fused forward: selective scan + y + silu(z) gate + per-step partial sums of the state entropy and halt logit.
//
// One block per (batch row, block of channels of one group); each lane owns NPT entries of a channel's state row
// (see scan_common.cuh) and walks the sequence. A tile of steps of u, dt, z (the block's channels) and of B, C
// (the group's) is staged in shared memory with coalesced loads, scanned, and y is written back coalesced. Each
// lane stores its share of S1 = sum h^2, S2 = sum h^2 log h^2 and sum halt_weight * h for every step in shared
// memory; every kSumSteps steps the block adds them up (one warp per step and sum, in a fixed order) and writes
// them to partials (3, batch, n_dblocks, L); combine_sums.cu adds the blocks. That costs a few shuffles per step
// instead of three full warp reductions. With the channel mean, each warp also sums every state entry over its
// channels (shuffles), stages that (N values a step) in shared memory, and the flush adds the warps in order into
// channel_partials (batch, n_dblocks, L, N), which combine_sums.cu adds over blocks and divides by D. The state
// before every kChunk steps goes to the checkpoints; no per-step state is stored.
//
// softplus(delta + bias) is computed once per element while a tile is staged; with precompute_gates
// (PNA_CUDA_PRECOMPUTE_GATES) so is the gate silu(z), which otherwise lane 0 of each channel computes at every step
// while the channel's other lanes wait.
//
// The plain build (PNA_CUDA_PLAIN, the baseline that isolates the cost of fusion) drops the entropy, halt and
// channel-mean sums, their shared memory and the combine kernels: it writes out, last_state and the checkpoints
// (one state per chunk, which the backward needs) and leaves entropy, halt_logits, entropy_sums and channel_mean
// unwritten.
//
// The second layout (PNA_CUDA_FORWARD_TIMESTEPS, scan_forward_timesteps_kernel below) is mamba-ssm's: same
// blocks, but a thread owns K consecutive steps of a pass of kThreads * K steps and loops over the state
// entries n and the block's channels; see that kernel.
//
// Why a lane per state entry rather than mamba's threads-along-L block scan: for batch 8, L 2048, D 1536, N 16
// this gives 8 * 192 = 1536 blocks of 128 threads (about 12 per H100 SM), every lane's recurrence is a plain
// fused multiply-add chain with no scan over L, the per-step entropy sums need no extra pass over a state that
// already sits one entry per lane, and the per-chunk checkpoints fall out of the loop for free.
#include "scan_common.cuh"

namespace pna_cuda {
namespace {

// Steps staged per tile: shared memory grows with N through the B and C tiles.
__host__ __device__ constexpr int forward_tile(int npt) { return npt >= 4 ? 16 : 64 / npt; }
// Steps whose per-lane entropy and halt sums are staged before the block adds them up (divides every tile).
constexpr int kSumSteps = 16;
static_assert(forward_tile(1) % kSumSteps == 0 && forward_tile(8) % kSumSteps == 0, "kSumSteps must divide tiles");

struct ForwardParams {
  Shape s;
  PnaScanArgs a;
  PnaScanResult r;
};

size_t forward_shared_bytes(const Layout& l, int dstate, bool with_mean) {
  const size_t tiles = static_cast<size_t>(4 * l.cpb + 2 * dstate) * (forward_tile(l.npt) + 1);
  if (kPlain) return sizeof(float) * tiles;
  const size_t mean = with_mean ? static_cast<size_t>(kSumSteps) * kWarps * dstate : 0;
  return sizeof(float) * (tiles + 3 * kSumSteps * kThreads + mean);
}

// The block's rows of the inputs and outputs (both layouts).
template <typename T>
struct BlockRows {
  const T *u, *delta, *z, *B, *C;  // u, delta, z: the block's first channel row; B, C: the group's; z may be null
  T* out;
  size_t plane;             // floats between the S1, S2 and halt planes of the partials
  float* partials;          // the block's row (L) of the S1 plane
  float* channel_partials;  // the block's (L, N), nullptr without the channel mean
  int n_chunks;             // checkpoints a row: ceil(L / kChunk)
};

template <typename T>
__device__ inline BlockRows<T> block_rows(const ForwardParams& p, const BlockPos& pos, bool with_mean) {
  const Shape& s = p.s;
  const size_t rows = (static_cast<size_t>(pos.b) * s.dim + pos.d0) * s.length;
  const size_t bc = (static_cast<size_t>(pos.b) * s.groups + pos.g) * s.dstate * s.length;
  const size_t blk = static_cast<size_t>(pos.b) * s.layout.n_dblocks + pos.blk;
  BlockRows<T> r;
  r.u = static_cast<const T*>(p.a.u) + rows;
  r.delta = static_cast<const T*>(p.a.delta) + rows;
  r.z = p.a.z != nullptr ? static_cast<const T*>(p.a.z) + rows : nullptr;
  r.B = static_cast<const T*>(p.a.B) + bc;
  r.C = static_cast<const T*>(p.a.C) + bc;
  r.out = static_cast<T*>(p.r.out) + rows;
  r.plane = static_cast<size_t>(s.batch) * s.layout.n_dblocks * s.length;
  r.partials = p.r.partials + blk * s.length;
  r.channel_partials = with_mean ? p.r.channel_partials + blk * s.length * s.dstate : nullptr;
  r.n_chunks = (s.length + kChunk - 1) / kChunk;
  return r;
}

// Stage steps t0 .. t0 + tl - 1 (tl <= steps) of the block's channels in rows of `width` floats: u, dt (delta +
// bias, softplus applied if asked) and z (silu(z) with precompute_gates; 0 without a gate).
template <typename T>
__device__ inline void stage_channels(const ForwardParams& p, const BlockPos& pos, const BlockRows<T>& r, int t0,
                                      int tl, int steps, int width, float* s_u, float* s_dt, float* s_z) {
  for (int i = threadIdx.x; i < pos.nch * steps; i += kThreads) {
    const int c = i / steps, t = i % steps;
    if (t < tl) {
      const size_t at = static_cast<size_t>(c) * p.s.length + t0 + t;
      s_u[c * width + t] = to_float(r.u[at]);
      const float x = to_float(r.delta[at]) + p.a.delta_bias[pos.d0 + c];
      s_dt[c * width + t] = p.a.delta_softplus ? softplus(x) : x;
      const float zz = r.z != nullptr ? to_float(r.z[at]) : 0.f;
      s_z[c * width + t] = kPrecomputeGates ? silu(zz) : zz;
    }
  }
}

// The second layout's steps: a thread owns K = tpc / 4 consecutive steps of a pass of kThreads * K (1 with 32
// channels a block, 8 with 4), so the block's staged channels x steps, and its shared memory (64 KiB for them),
// do not depend on the layout, and the scan's shuffles are shared by more steps where a block has fewer channels.
int timesteps_per_thread(const Layout& l) { return l.tpc / 4; }

size_t forward_timesteps_shared_bytes(const Layout& l, int dstate) {
  const size_t pass = static_cast<size_t>(kThreads) * timesteps_per_thread(l);
  return sizeof(float) * (4 * static_cast<size_t>(l.cpb) * pass + static_cast<size_t>(l.cpb) * dstate + 4 * kWarps);
}

// The state before this thread's steps: an exclusive scan, in thread order, of the threads' affine maps
// h -> P h + Q (their steps composed) applied to `carry`, the state before the block's first step. Inclusive warp
// scans by shuffles, then the warps' totals in order. Every thread of the block calls it; s_tot holds two
// alternating buffers of the warps' totals ([2][2][kWarps], `parity` picks one), so one barrier a call suffices.
__device__ inline float state_before(float P, float Q, float carry, float* s_tot, int parity) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int off = 1; off < 32; off *= 2) {
    const float Pp = __shfl_up_sync(0xffffffffu, P, off), Qp = __shfl_up_sync(0xffffffffu, Q, off);
    if (lane >= off) {
      Q = P * Qp + Q;
      P = P * Pp;
    }
  }
  float* tot = s_tot + parity * 2 * kWarps;
  if (lane == 31) {
    tot[warp] = P;
    tot[kWarps + warp] = Q;
  }
  float Pe = __shfl_up_sync(0xffffffffu, P, 1), Qe = __shfl_up_sync(0xffffffffu, Q, 1);
  if (lane == 0) {
    Pe = 1.f;
    Qe = 0.f;
  }
  __syncthreads();
  float h = carry;
  for (int w = 0; w < warp; ++w) h = tot[w] * h + tot[kWarps + w];
  return Pe * h + Qe;
}

// The second layout: the block's channels, u, dt (softplus applied) and z of a pass are staged in shared memory;
// for every state entry n (outer) and channel c (inner) each thread composes its steps' maps
// h -> exp(dt A) h + dt B u, state_before gives its starting state, and it replays its steps: checkpoints, y
// (accumulated over n in shared memory, each thread its own steps), and in registers S1, S2 and the halt sum over
// the block's channels and entries, and the channel-mean sum over the channels for entry n. The last thread keeps
// the state after a full pass for the next one. Partial sums go to the same buffers as the lane layout's.
template <typename T, int K>
__global__ void __launch_bounds__(kThreads) scan_forward_timesteps_kernel(ForwardParams p) {
  constexpr int S = kThreads * K;  // steps of a pass
  extern __shared__ float smem[];
  const Shape& s = p.s;
  const BlockPos pos = block_pos(s);  // the block's batch row, group and channels (not the lane layout's c, j)
  const int cpb = s.layout.cpb, N = s.dstate, L = s.length, D = s.dim;
  float* s_u = smem;                // [cpb][S]
  float* s_dt = s_u + cpb * S;      // [cpb][S]
  float* s_z = s_dt + cpb * S;      // [cpb][S]: z, or silu(z) with precompute_gates
  float* s_y = s_z + cpb * S;       // [cpb][S]: sum_n C h
  float* s_carry = s_y + cpb * S;   // [cpb][N]: the state before the pass
  float* s_tot = s_carry + cpb * N;  // [2][2][kWarps]: state_before's warp totals
  const bool with_mean = !kPlain && p.a.with_channel_mean != 0;
  const BlockRows<T> rows = block_rows<T>(p, pos, with_mean);
  const bool has_z = rows.z != nullptr;
  const size_t state0 = (static_cast<size_t>(pos.b) * D + pos.d0) * N;  // the block's channels' states
  for (int i = threadIdx.x; i < pos.nch * N; i += kThreads) s_carry[i] = p.a.initial_state[state0 + i];
  int parity = 0;

  for (int t0 = 0; t0 < L; t0 += S) {
    const int tl = min(S, L - t0);
    stage_channels(p, pos, rows, t0, tl, S, S, s_u, s_dt, s_z);
    for (int i = threadIdx.x; i < pos.nch * S; i += kThreads) s_y[i] = 0.f;
    __syncthreads();

    const int first = threadIdx.x * K;  // this thread's first step in the pass
    float s1[K], s2[K], hs[K];
#pragma unroll
    for (int k = 0; k < K; ++k) s1[k] = s2[k] = hs[k] = 0.f;
    for (int n = 0; n < N; ++n) {
      float Bk[K], Ck[K], mean[K];
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const bool in = first + k < tl;
        Bk[k] = in ? to_float(rows.B[static_cast<size_t>(n) * L + t0 + first + k]) : 0.f;
        Ck[k] = in ? to_float(rows.C[static_cast<size_t>(n) * L + t0 + first + k]) : 0.f;
        mean[k] = 0.f;
      }
      for (int c = 0; c < pos.nch; ++c) {
        const size_t dn = static_cast<size_t>(pos.d0 + c) * N + n;
        const float a2 = p.a.A[dn] * kLog2e, hw = p.a.halt_weight[dn];
        float ak[K], bk[K], P = 1.f, Q = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          ak[k] = 1.f;  // steps past the end are the identity map
          bk[k] = 0.f;
          if (first + k < tl) {
            const float dt = s_dt[c * S + first + k];
            ak[k] = exp2f(dt * a2);
            bk[k] = dt * Bk[k] * s_u[c * S + first + k];
          }
          Q = ak[k] * Q + bk[k];
          P = ak[k] * P;
        }
        float h = state_before(P, Q, s_carry[c * N + n], s_tot, parity);
        parity ^= 1;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int tg = t0 + first + k;
          if (first + k < tl) {
            if (tg % kChunk == 0) {
              const size_t chunk_row = static_cast<size_t>(pos.b) * rows.n_chunks + tg / kChunk;
              p.r.checkpoints[(chunk_row * D + pos.d0 + c) * N + n] = h;
            }
            h = ak[k] * h + bk[k];
            s_y[c * S + first + k] += Ck[k] * h;
            if constexpr (!kPlain) {
              const float e = h * h;
              s1[k] += e;
              s2[k] += xlogx(e);
              hs[k] += hw * h;
            }
            mean[k] += h;
            if (tg == L - 1) p.r.last_state[state0 + c * N + n] = h;
          }
        }
        if (threadIdx.x == kThreads - 1 && tl == S) s_carry[c * N + n] = h;  // read after the next pass's barrier
      }
      if (with_mean) {
#pragma unroll
        for (int k = 0; k < K; ++k)
          if (first + k < tl) rows.channel_partials[static_cast<size_t>(t0 + first + k) * N + n] = mean[k];
      }
    }
    if constexpr (!kPlain) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (first + k < tl) {
          rows.partials[t0 + first + k] = s1[k];
          rows.partials[rows.plane + t0 + first + k] = s2[k];
          rows.partials[2 * rows.plane + t0 + first + k] = hs[k];
        }
      }
    }
    __syncthreads();  // s_y complete

    for (int i = threadIdx.x; i < pos.nch * S; i += kThreads) {
      const int c = i / S, t = i % S;
      if (t < tl) {
        float y = s_y[c * S + t] + p.a.D[pos.d0 + c] * s_u[c * S + t];
        if (has_z) y *= kPrecomputeGates ? s_z[c * S + t] : silu(s_z[c * S + t]);
        rows.out[static_cast<size_t>(c) * L + t0 + t] = from_float<T>(y);
      }
    }
    __syncthreads();  // the next pass overwrites the shared arrays
  }
}

template <typename T, int NPT>
__global__ void __launch_bounds__(kThreads) scan_forward_kernel(ForwardParams p) {
  constexpr int TILE = forward_tile(NPT);
  constexpr int W = TILE + 1;  // padded row: lanes reading different rows hit different banks
  extern __shared__ float smem[];
  const Shape& s = p.s;
  const BlockPos pos = block_pos(s);
  const int cpb = s.layout.cpb, tpc = s.layout.tpc, N = s.dstate, L = s.length, D = s.dim;
  float* s_u = smem;
  float* s_dt = s_u + cpb * W;
  float* s_z = s_dt + cpb * W;
  float* s_y = s_z + cpb * W;
  float* s_B = s_y + cpb * W;
  float* s_C = s_B + N * W;
  float* s_sums = s_C + N * W;  // [3][kSumSteps][kThreads]: each lane's S1, S2, halt shares per step
  float* s_mean = s_sums + 3 * kSumSteps * kThreads;  // [kSumSteps][kWarps][N]: each warp's sums over channels
  const bool with_mean = !kPlain && p.a.with_channel_mean != 0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  float a2[NPT], hw[NPT], h[NPT];
  bool valid[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int n = pos.j + k * tpc;
    valid[k] = pos.active && n < N;
    const size_t dn = static_cast<size_t>(pos.d) * N + n;
    a2[k] = valid[k] ? p.a.A[dn] * kLog2e : 0.f;
    hw[k] = valid[k] ? p.a.halt_weight[dn] : 0.f;
    h[k] = valid[k] ? p.a.initial_state[static_cast<size_t>(pos.b) * D * N + dn] : 0.f;
  }
  const float d_skip = pos.active ? p.a.D[pos.d] : 0.f;
  const BlockRows<T> rows = block_rows<T>(p, pos, with_mean);
  const bool has_z = rows.z != nullptr;

  for (int t0 = 0; t0 < L; t0 += TILE) {
    const int tl = min(TILE, L - t0);
    stage_channels(p, pos, rows, t0, tl, TILE, W, s_u, s_dt, s_z);
    for (int i = threadIdx.x; i < N * TILE; i += kThreads) {
      const int n = i / TILE, t = i % TILE;
      if (t < tl) {
        s_B[n * W + t] = to_float(rows.B[static_cast<size_t>(n) * L + t0 + t]);
        s_C[n * W + t] = to_float(rows.C[static_cast<size_t>(n) * L + t0 + t]);
      }
    }
    __syncthreads();

    for (int t = 0; t < tl; ++t) {
      const int tg = t0 + t;
      if (tg % kChunk == 0) {
        float* ck = p.r.checkpoints + ((static_cast<size_t>(pos.b) * rows.n_chunks + tg / kChunk) * D + pos.d) * N;
#pragma unroll
        for (int k = 0; k < NPT; ++k)
          if (valid[k]) ck[pos.j + k * tpc] = h[k];
      }
      const float dt = s_dt[pos.c * W + t], uu = s_u[pos.c * W + t];
      float yp = 0.f, s1 = 0.f, s2 = 0.f, hs = 0.f;
#pragma unroll
      for (int k = 0; k < NPT; ++k) {
        if (valid[k]) {
          const int n = pos.j + k * tpc;
          h[k] = exp2f(dt * a2[k]) * h[k] + dt * s_B[n * W + t] * uu;
          yp += s_C[n * W + t] * h[k];
          if constexpr (!kPlain) {
            const float e = h[k] * h[k];
            s1 += e;
            s2 += xlogx(e);
            hs += hw[k] * h[k];
          }
        }
      }
      yp = channel_sum(yp, tpc);
      const int slot = t % kSumSteps;
      if (with_mean) {  // block-uniform, so every lane of the warp takes part in the shuffles
#pragma unroll
        for (int k = 0; k < NPT; ++k) {
          const float v = across_channels_sum(h[k], tpc);  // entries that do not exist hold 0
          const int n = pos.j + k * tpc;
          if (lane < tpc && n < N) s_mean[(slot * kWarps + warp) * N + n] = v;
        }
      }
      if constexpr (!kPlain) {
        s_sums[(0 * kSumSteps + slot) * kThreads + threadIdx.x] = s1;
        s_sums[(1 * kSumSteps + slot) * kThreads + threadIdx.x] = s2;
        s_sums[(2 * kSumSteps + slot) * kThreads + threadIdx.x] = hs;
      }
      if (pos.j == 0 && pos.active) {
        float y = yp + d_skip * uu;
        if (has_z) y *= kPrecomputeGates ? s_z[pos.c * W + t] : silu(s_z[pos.c * W + t]);
        s_y[pos.c * W + t] = y;
      }
      if (!kPlain && (slot == kSumSteps - 1 || t == tl - 1)) {  // add up the staged steps: a warp per (sum, step)
        __syncthreads();
        const int steps = slot + 1, first = t0 + t - slot;
        for (int row = warp; row < 3 * steps; row += kWarps) {
          const int q = row / steps, step = row % steps;
          const float* lanes = s_sums + (q * kSumSteps + step) * kThreads;
          float v = 0.f;
          for (int i = lane; i < kThreads; i += 32) v += lanes[i];
          v = warp_sum(v);
          if (lane == 0) rows.partials[q * rows.plane + first + step] = v;
        }
        if (with_mean) {
          for (int i = threadIdx.x; i < steps * N; i += kThreads) {
            const int step = i / N, n = i % N;
            float v = 0.f;
            for (int w = 0; w < kWarps; ++w) v += s_mean[(step * kWarps + w) * N + n];
            rows.channel_partials[static_cast<size_t>(first + step) * N + n] = v;
          }
        }
        __syncthreads();
      }
    }

    if constexpr (kPlain) __syncthreads();  // s_y complete (otherwise the last flush's barriers see to it)
    for (int i = threadIdx.x; i < pos.nch * TILE; i += kThreads) {
      const int c = i / TILE, t = i % TILE;
      if (t < tl) rows.out[static_cast<size_t>(c) * L + t0 + t] = from_float<T>(s_y[c * W + t]);
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }

#pragma unroll
  for (int k = 0; k < NPT; ++k)
    if (valid[k]) p.r.last_state[(static_cast<size_t>(pos.b) * D + pos.d) * N + pos.j + k * tpc] = h[k];
}

}  // namespace
}  // namespace pna_cuda

extern "C" int pna_cuda_num_dblocks(int dim, int groups, int dstate) {
  return pna_cuda::make_layout(dim, groups, dstate).n_dblocks;
}

extern "C" int pna_cuda_struct_sizes(int* sizes, int count) {
  const int all[] = {sizeof(PnaScanArgs),      sizeof(PnaScanResult),      sizeof(PnaScanSaved),
                     sizeof(PnaScanCotangents), sizeof(PnaScanGradParts),   sizeof(PnaStateUpdateArgs),
                     sizeof(PnaStateUpdateResult)};
  const int n = static_cast<int>(sizeof(all) / sizeof(all[0]));
  for (int i = 0; i < count && i < n; ++i) sizes[i] = all[i];
  return n;
}

extern "C" const char* pna_cuda_scan_forward(const PnaScanArgs* args, const PnaScanResult* result,
                                             cudaStream_t stream) {
  using namespace pna_cuda;
  const PnaScanArgs& a = *args;
  if (const char* why = check_problem(a.dtype, a.batch, a.dim, a.length, a.dstate, a.groups)) return why;
  const ForwardParams p{Shape{a.batch, a.dim, a.length, a.dstate, a.groups, make_layout(a.dim, a.groups, a.dstate)},
                        a, *result};
  const size_t shared = kForwardTimesteps ? forward_timesteps_shared_bytes(p.s.layout, a.dstate)
                                          : forward_shared_bytes(p.s.layout, a.dstate, a.with_channel_mean != 0);
  const dim3 grid(p.s.layout.n_dblocks, a.batch);
  // The timestep layout's steps per thread (1, 2, 4 or 8) take the lane layout's NPT slot of dispatch.
  const int per_thread = kForwardTimesteps ? timesteps_per_thread(p.s.layout) : p.s.layout.npt;
  cudaError_t err = dispatch(a.dtype, per_thread, [&](auto tag, auto n) {
    using T = decltype(tag);
    constexpr int kN = decltype(n)::value;
    auto kernel = kForwardTimesteps ? scan_forward_timesteps_kernel<T, kN> : scan_forward_kernel<T, kN>;
    cudaError_t e = allow_shared_memory(kernel, shared);
    if (e != cudaSuccess) return e;
    kernel<<<grid, kThreads, shared, stream>>>(p);
    return cudaGetLastError();
  });
  if (kPlain) return error_string(err);
  if (err == cudaSuccess)
    err = launch_combine_sums(result->partials, a.halt_bias, a.batch, p.s.layout.n_dblocks, a.length,
                              result->entropy, result->halt_logits, result->entropy_sums, stream);
  if (err == cudaSuccess && a.with_channel_mean)
    err = launch_combine_channel_mean(result->channel_partials, a.batch, p.s.layout.n_dblocks, a.length, a.dstate,
                                      a.dim, result->channel_mean, stream);
  return error_string(err);
}
