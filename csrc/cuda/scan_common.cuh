// Shared pieces of the fused CUDA kernels: the thread layout, dtype conversion, warp sums and the math helpers.
// No torch headers: the kernels work on raw pointers and are launched through the extern "C" functions in
// scan_kernels.h.
//
// Thread layout (every kernel): a block of kThreads threads owns one batch row and a block of channels that lies
// inside one B/C group. tpc consecutive lanes of a warp share a channel: min(max(next_pow2(N), 4), 32), or the
// build's PNA_CUDA_LANES_PER_CHANNEL when that is not 0. Lane j owns the state entries n = j, j + tpc, ...,
// j + (NPT - 1) * tpc (NPT: ceil(N / tpc) rounded up to 1, 2, 4 or 8, a template parameter, so the entries live in
// registers), so a channel's sums over n are warp shuffles and the block holds kThreads / tpc channels. Blocks
// never straddle a group, so every block reads one group's B and C.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "scan_kernels.h"

namespace pna_cuda {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// The largest N (from pna_kernels/cuda.py, see scan_kernels.h); the layout holds up to 32 lanes x 8 entries.
constexpr int kMaxState = PNA_CUDA_MAX_STATE;
static_assert(kMaxState >= 1 && kMaxState <= 256, "a channel's state must fit 32 lanes x 8 entries");
// Steps per chunk: the forward saves the state before every kChunk steps, the backward recomputes a chunk's states
// from that checkpoint into shared memory (pna_kernels/cuda.py's CHUNK_SIZE, passed as PNA_CUDA_CHUNK).
constexpr int kChunk = PNA_CUDA_CHUNK;
constexpr float kLog2e = 1.4426950408889634f;
// Forward-side kernel options (pna_kernels/cuda_options.py), as constants for `if constexpr`.
constexpr bool kPlain = PNA_CUDA_PLAIN != 0;  // the forward writes out, last_state and checkpoints only
constexpr int kLanesPerChannel = PNA_CUDA_LANES_PER_CHANNEL;  // 0: chosen from N (make_layout)
static_assert(kLanesPerChannel == 0 || kLanesPerChannel == 4 || kLanesPerChannel == 8 || kLanesPerChannel == 16 ||
                  kLanesPerChannel == 32, "PNA_CUDA_LANES_PER_CHANNEL must be 0, 4, 8, 16 or 32");
static_assert(kLanesPerChannel == 0 || kMaxState <= 8 * kLanesPerChannel,
              "a lane holds at most 8 state entries: PNA_CUDA_MAX_STATE <= 8 * PNA_CUDA_LANES_PER_CHANNEL");
constexpr bool kPrecomputeGates = PNA_CUDA_PRECOMPUTE_GATES != 0;  // silu(z) staged with the tile (forward)
constexpr bool kFastLog2 = PNA_CUDA_FAST_LOG2 != 0;                // xlogx by the SFU's log2
constexpr bool kParallelCombine = PNA_CUDA_PARALLEL_COMBINE != 0;  // combine_sums.cu's tiled block sums
constexpr bool kForwardTimesteps = PNA_CUDA_FORWARD_TIMESTEPS != 0;  // scan_forward.cu's second layout
constexpr float kLn2 = 0.6931471805599453f;

// How the channels of one batch row are split into blocks.
struct Layout {
  int tpc;               // lanes per channel (a power of two, 4..32; kLanesPerChannel when that is not 0)
  int npt;               // state entries per lane (1, 2, 4 or 8)
  int cpb;               // channels per block = kThreads / tpc
  int blocks_per_group;  // ceil((D / G) / cpb)
  int n_dblocks;         // G * blocks_per_group
};

inline Layout make_layout(int dim, int groups, int dstate) {
  Layout l;
  int p = 4;
  while (p < dstate && p < 32) p *= 2;
  l.tpc = kLanesPerChannel != 0 ? kLanesPerChannel : p;
  int npt = (dstate + l.tpc - 1) / l.tpc;
  l.npt = npt <= 1 ? 1 : npt <= 2 ? 2 : npt <= 4 ? 4 : 8;
  l.cpb = kThreads / l.tpc;
  const int per_group = dim / groups;
  l.blocks_per_group = (per_group + l.cpb - 1) / l.cpb;
  l.n_dblocks = groups * l.blocks_per_group;
  return l;
}

// The problem size and where this block sits in it.
struct Shape {
  int batch, dim, length, dstate, groups;
  Layout layout;
};

struct BlockPos {
  int b;        // batch row
  int g;        // group
  int blk;      // block index among the row's n_dblocks
  int d0;       // first channel of the block
  int nch;      // channels of the block that exist (the group's last block may be partial)
  int c;        // this thread's channel slot in the block
  int j;        // this thread's lane within the channel
  int d;        // this thread's channel (valid only if c < nch)
  bool active;  // c < nch
};

// Thread `tid` of channel block `blk` (in [0, n_dblocks)) of batch row b.
__device__ inline BlockPos block_pos_at(const Shape& s, int b, int blk, int tid) {
  BlockPos p;
  p.b = b;
  p.blk = blk;
  p.g = p.blk / s.layout.blocks_per_group;
  const int per_group = s.dim / s.groups;
  const int first_in_group = (p.blk % s.layout.blocks_per_group) * s.layout.cpb;
  p.d0 = p.g * per_group + first_in_group;
  p.nch = min(s.layout.cpb, per_group - first_in_group);
  p.c = tid / s.layout.tpc;
  p.j = tid % s.layout.tpc;
  p.active = p.c < p.nch;
  p.d = p.d0 + p.c;
  return p;
}

// This thread of this block (the grid's x is the channel block, y the batch row).
__device__ inline BlockPos block_pos(const Shape& s) { return block_pos_at(s, blockIdx.y, blockIdx.x, threadIdx.x); }

template <typename T>
__device__ inline float to_float(T x);
template <>
__device__ inline float to_float<float>(float x) { return x; }
template <>
__device__ inline float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ inline float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ inline T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) { return x; }
template <>
__device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// softplus with torch's threshold: x for x > 20.
__device__ inline float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ inline float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// e log e with 0 log 0 = 0. With fast_log2 the logarithm is the SFU's approximate log2 (__log2f, lg2.approx.f32:
// the build does not flush denormals, so a denormal e keeps its finite logarithm) times ln 2.
__device__ inline float xlogx(float e) {
  if (!(e > 0.f)) return 0.f;
  if constexpr (kFastLog2) return e * (__log2f(e) * kLn2);
  return e * logf(e);
}
// silu(z) = z sigmoid(z), the output gate.
__device__ inline float silu(float z) { return z * sigmoid(z); }

// Sum over the `width` lanes (a power of two) that share a channel; every lane gets the sum.
__device__ inline float channel_sum(float v, int width) {
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the whole warp; every lane gets the sum.
__device__ inline float warp_sum(float v) { return channel_sum(v, 32); }

// Sum over the lanes of a warp with the same lane-in-channel j (the warp's channels), for lanes j < width.
__device__ inline float across_channels_sum(float v, int width) {
  for (int off = 16; off >= width; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Raise the block's dynamic shared memory limit when it needs more than the default 48 KiB.
template <typename Kernel>
inline cudaError_t allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// Calls f(T{}, std::integral_constant<int, NPT>{}) for the input type T of a dtype code and the NPT of a layout
// (the caller has checked both). Instantiates every kernel for float, __half and __nv_bfloat16 and NPT 1, 2, 4, 8.
template <typename F>
inline cudaError_t dispatch(int dtype, int npt, F&& f) {
  auto by_npt = [&](auto tag) -> cudaError_t {
    switch (npt) {
      case 1: return f(tag, std::integral_constant<int, 1>{});
      case 2: return f(tag, std::integral_constant<int, 2>{});
      case 4: return f(tag, std::integral_constant<int, 4>{});
      default: return f(tag, std::integral_constant<int, 8>{});
    }
  };
  if (dtype == PNA_FLOAT16) return by_npt(__half{});
  if (dtype == PNA_BFLOAT16) return by_npt(__nv_bfloat16{});
  return by_npt(float{});
}

// nullptr if the problem is one the kernels handle, else why not (a static string).
inline const char* check_problem(int dtype, int batch, int dim, int length, int dstate, int groups) {
  if (dtype != PNA_FLOAT32 && dtype != PNA_FLOAT16 && dtype != PNA_BFLOAT16) return "unknown dtype code";
  if (batch < 1 || batch > 65535) return "batch must be in [1, 65535] (it is the grid's y dimension)";
  if (dim < 1 || length < 1) return "D and L must be positive";
  if (dstate < 1 || dstate > kMaxState) return "N must be in [1, PNA_CUDA_MAX_STATE]";
  if (groups < 1 || dim % groups != 0) return "the group count G must divide D";
  return nullptr;
}

// Combine the per-block partial sums (3, batch, n_dblocks, L) of S1, S2 and sum halt_weight * h over the blocks in
// block order, then write entropy and halt (batch, L) and, when sums is not nullptr, S1 and S2 (batch, 2, L).
cudaError_t launch_combine_sums(const float* partials, const float* halt_bias, int batch, int n_dblocks, int length,
                                float* entropy, float* halt, float* sums, cudaStream_t stream);

// Sum the per-block sums over channels (batch, n_dblocks, L, N) over the blocks in block order and divide by D:
// the channel mean (batch, L, N).
cudaError_t launch_combine_channel_mean(const float* channel_partials, int batch, int n_dblocks, int length,
                                        int dstate, int dim, float* channel_mean, cudaStream_t stream);

// nullptr on success, else the CUDA error's description (a static string).
inline const char* error_string(cudaError_t err) { return err == cudaSuccess ? nullptr : cudaGetErrorString(err); }

}  // namespace pna_cuda
