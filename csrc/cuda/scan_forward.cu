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
  const bool has_z = p.a.z != nullptr;
  const size_t rows = (static_cast<size_t>(pos.b) * D + pos.d0) * L;  // the block's first channel row
  const T* u = static_cast<const T*>(p.a.u) + rows;
  const T* delta = static_cast<const T*>(p.a.delta) + rows;
  const T* z = has_z ? static_cast<const T*>(p.a.z) + rows : nullptr;
  T* out = static_cast<T*>(p.r.out) + rows;
  const size_t bc = (static_cast<size_t>(pos.b) * s.groups + pos.g) * N * L;
  const T* B = static_cast<const T*>(p.a.B) + bc;
  const T* C = static_cast<const T*>(p.a.C) + bc;
  const int n_chunks = (L + kChunk - 1) / kChunk;
  const size_t plane = static_cast<size_t>(s.batch) * s.layout.n_dblocks * L;
  float* partials = p.r.partials + (static_cast<size_t>(pos.b) * s.layout.n_dblocks + pos.blk) * L;
  float* channel_partials =
      with_mean ? p.r.channel_partials + (static_cast<size_t>(pos.b) * s.layout.n_dblocks + pos.blk) * L * N : nullptr;

  for (int t0 = 0; t0 < L; t0 += TILE) {
    const int tl = min(TILE, L - t0);
    for (int i = threadIdx.x; i < pos.nch * TILE; i += kThreads) {
      const int c = i / TILE, t = i % TILE;
      if (t < tl) {
        const size_t at = static_cast<size_t>(c) * L + t0 + t;
        s_u[c * W + t] = to_float(u[at]);
        const float x = to_float(delta[at]) + p.a.delta_bias[pos.d0 + c];
        s_dt[c * W + t] = p.a.delta_softplus ? softplus(x) : x;
        const float zz = has_z ? to_float(z[at]) : 0.f;
        s_z[c * W + t] = kPrecomputeGates ? silu(zz) : zz;
      }
    }
    for (int i = threadIdx.x; i < N * TILE; i += kThreads) {
      const int n = i / TILE, t = i % TILE;
      if (t < tl) {
        s_B[n * W + t] = to_float(B[static_cast<size_t>(n) * L + t0 + t]);
        s_C[n * W + t] = to_float(C[static_cast<size_t>(n) * L + t0 + t]);
      }
    }
    __syncthreads();

    for (int t = 0; t < tl; ++t) {
      const int tg = t0 + t;
      if (tg % kChunk == 0) {
        float* ck = p.r.checkpoints + ((static_cast<size_t>(pos.b) * n_chunks + tg / kChunk) * D + pos.d) * N;
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
          if (lane == 0) partials[q * plane + first + step] = v;
        }
        if (with_mean) {
          for (int i = threadIdx.x; i < steps * N; i += kThreads) {
            const int step = i / N, n = i % N;
            float v = 0.f;
            for (int w = 0; w < kWarps; ++w) v += s_mean[(step * kWarps + w) * N + n];
            channel_partials[static_cast<size_t>(first + step) * N + n] = v;
          }
        }
        __syncthreads();
      }
    }

    if constexpr (kPlain) __syncthreads();  // s_y complete (otherwise the last flush's barriers see to it)
    for (int i = threadIdx.x; i < pos.nch * TILE; i += kThreads) {
      const int c = i / TILE, t = i % TILE;
      if (t < tl) out[static_cast<size_t>(c) * L + t0 + t] = from_float<T>(s_y[c * W + t]);
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
  const size_t shared = forward_shared_bytes(p.s.layout, a.dstate, a.with_channel_mean != 0);
  const dim3 grid(p.s.layout.n_dblocks, a.batch);
  cudaError_t err = dispatch(a.dtype, p.s.layout.npt, [&](auto tag, auto npt) {
    auto kernel = scan_forward_kernel<decltype(tag), decltype(npt)::value>;
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
