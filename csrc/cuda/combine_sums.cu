// The second, small kernels of the forward and the decode step: per-block partial sums -> entropy and halt logits,
// and per-block sums over channels -> the channel mean. Each output element adds its blocks' partials in a fixed
// order, so the result does not depend on scheduling: by default one thread per element walks the blocks in block
// order; with parallel_combine (PNA_CUDA_PARALLEL_COMBINE) a CUDA block takes kTileElements consecutive elements
// (one coalesced row of the partials per warp) and its kSlices warps split the blocks: warp w adds blocks w,
// w + kSlices, ... in order, then the warps' sums are added by a fixed pairwise tree in shared memory.
#include "scan_common.cuh"

namespace pna_cuda {
namespace {

constexpr int kCombineThreads = 256;
constexpr int kTileElements = 32;                          // consecutive output elements of a parallel block
constexpr int kSlices = kCombineThreads / kTileElements;  // warps sharing the blocks of one element
static_assert(kTileElements == 32 && (kSlices & (kSlices - 1)) == 0, "a slice is a warp; slices a power of two");

unsigned combine_blocks(long long elements) {
  const long long per_block = kParallelCombine ? kTileElements : kCombineThreads;
  return static_cast<unsigned>((elements + per_block - 1) / per_block);
}

// The parallel combine's sums of K planes of partials for this thread's element: plane q's value of block blk is
// rows[q * plane_stride + blk * block_stride]. Every thread of the block calls it; the totals are right in the
// first warp (slice 0) only. scratch: K * kCombineThreads floats of shared memory.
template <int K>
__device__ void sum_blocks_tiled(const float* rows, size_t plane_stride, size_t block_stride, int n_dblocks,
                                 bool in_range, float* scratch, float (&total)[K]) {
  const int slice = threadIdx.x / kTileElements;
#pragma unroll
  for (int q = 0; q < K; ++q) total[q] = 0.f;
  if (in_range)
    for (int blk = slice; blk < n_dblocks; blk += kSlices) {
#pragma unroll
      for (int q = 0; q < K; ++q) total[q] += rows[q * plane_stride + blk * block_stride];
    }
#pragma unroll
  for (int q = 0; q < K; ++q) scratch[q * kCombineThreads + threadIdx.x] = total[q];
  for (int half = kSlices / 2; half > 0; half /= 2) {
    __syncthreads();
    if (slice < half) {
#pragma unroll
      for (int q = 0; q < K; ++q) {
        total[q] += scratch[q * kCombineThreads + threadIdx.x + half * kTileElements];
        scratch[q * kCombineThreads + threadIdx.x] = total[q];
      }
    }
  }
}

// The entropy and halt logit of token i from S1, S2 and sum halt_weight * h, and the sums if asked.
__device__ inline void write_token(long long i, int length, float s1, float s2, float hs, const float* halt_bias,
                                   float* entropy, float* halt, float* sums) {
  const int b = static_cast<int>(i / length);
  const int t = static_cast<int>(i % length);
  // 0 for an all-zero state; NaN when the state is non-finite or its energy overflows (NaN or infinite sums),
  // never a finite number.
  const float h = s1 == 0.f ? 0.f : logf(s1) - s2 / s1;
  entropy[i] = isfinite(h) ? h : nanf("");
  halt[i] = hs + halt_bias[0];
  if (sums != nullptr) {
    sums[(static_cast<size_t>(b) * 2) * length + t] = s1;
    sums[(static_cast<size_t>(b) * 2 + 1) * length + t] = s2;
  }
}

}  // namespace

__global__ void combine_sums_kernel(const float* __restrict__ partials, const float* __restrict__ halt_bias,
                                    int batch, int n_dblocks, int length, float* __restrict__ entropy,
                                    float* __restrict__ halt, float* __restrict__ sums) {
  const size_t plane = static_cast<size_t>(batch) * n_dblocks * length;  // one of S1, S2, halt
  if constexpr (kParallelCombine) {
    extern __shared__ float smem[];  // [3][kCombineThreads]
    const long long i = static_cast<long long>(blockIdx.x) * kTileElements + threadIdx.x % kTileElements;
    const bool in_range = i < static_cast<long long>(batch) * length;
    const float* row = partials + (in_range ? (i / length) * n_dblocks * length + i % length : 0);
    float v[3];
    sum_blocks_tiled<3>(row, plane, length, n_dblocks, in_range, smem, v);
    if (in_range && threadIdx.x < kTileElements)
      write_token(i, length, v[0], v[1], v[2], halt_bias, entropy, halt, sums);
  } else {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(batch) * length) return;
    const float* row = partials + (i / length) * n_dblocks * length + i % length;
    float s1 = 0.f, s2 = 0.f, hs = 0.f;
    for (int blk = 0; blk < n_dblocks; ++blk) {
      const size_t at = static_cast<size_t>(blk) * length;
      s1 += row[at];
      s2 += row[plane + at];
      hs += row[2 * plane + at];
    }
    write_token(i, length, s1, s2, hs, halt_bias, entropy, halt, sums);
  }
}

cudaError_t launch_combine_sums(const float* partials, const float* halt_bias, int batch, int n_dblocks, int length,
                                float* entropy, float* halt, float* sums, cudaStream_t stream) {
  const unsigned blocks = combine_blocks(static_cast<long long>(batch) * length);
  const size_t shared = kParallelCombine ? 3 * kCombineThreads * sizeof(float) : 0;
  combine_sums_kernel<<<blocks, kCombineThreads, shared, stream>>>(partials, halt_bias, batch, n_dblocks, length,
                                                                   entropy, halt, sums);
  return cudaGetLastError();
}

__global__ void combine_channel_mean_kernel(const float* __restrict__ channel_partials, int batch, int n_dblocks,
                                            int length, int dstate, int dim, float* __restrict__ channel_mean) {
  const long long plane = static_cast<long long>(length) * dstate;  // (L, N) of one block
  if constexpr (kParallelCombine) {
    extern __shared__ float smem[];  // [kCombineThreads]
    const long long i = static_cast<long long>(blockIdx.x) * kTileElements + threadIdx.x % kTileElements;
    const bool in_range = i < batch * plane;
    float v[1];
    sum_blocks_tiled<1>(channel_partials + (in_range ? (i / plane) * n_dblocks * plane + i % plane : 0), 0, plane,
                        n_dblocks, in_range, smem, v);
    if (in_range && threadIdx.x < kTileElements) channel_mean[i] = v[0] / static_cast<float>(dim);
  } else {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= batch * plane) return;
    const long long b = i / plane, tn = i % plane;
    const float* row = channel_partials + b * n_dblocks * plane + tn;
    float v = 0.f;
    for (int blk = 0; blk < n_dblocks; ++blk) v += row[blk * plane];
    channel_mean[i] = v / static_cast<float>(dim);
  }
}

cudaError_t launch_combine_channel_mean(const float* channel_partials, int batch, int n_dblocks, int length,
                                        int dstate, int dim, float* channel_mean, cudaStream_t stream) {
  const unsigned blocks = combine_blocks(static_cast<long long>(batch) * length * dstate);
  const size_t shared = kParallelCombine ? kCombineThreads * sizeof(float) : 0;
  combine_channel_mean_kernel<<<blocks, kCombineThreads, shared, stream>>>(channel_partials, batch, n_dblocks,
                                                                           length, dstate, dim, channel_mean);
  return cudaGetLastError();
}

}  // namespace pna_cuda
