// The second, small kernels of the forward and the decode step: per-block partial sums -> entropy and halt logits,
// and per-block sums over channels -> the channel mean. Each output element adds its blocks' partials in block
// order, so the result does not depend on scheduling.
#include "scan_common.cuh"

namespace pna_cuda {

__global__ void combine_sums_kernel(const float* __restrict__ partials, const float* __restrict__ halt_bias,
                                    int batch, int n_dblocks, int length, float* __restrict__ entropy,
                                    float* __restrict__ halt, float* __restrict__ sums) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(batch) * length) return;
  const int b = static_cast<int>(i / length);
  const int t = static_cast<int>(i % length);
  const size_t plane = static_cast<size_t>(batch) * n_dblocks * length;  // one of S1, S2, halt
  const float* row = partials + static_cast<size_t>(b) * n_dblocks * length + t;
  float s1 = 0.f, s2 = 0.f, hs = 0.f;
  for (int blk = 0; blk < n_dblocks; ++blk) {
    const size_t at = static_cast<size_t>(blk) * length;
    s1 += row[at];
    s2 += row[plane + at];
    hs += row[2 * plane + at];
  }
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

cudaError_t launch_combine_sums(const float* partials, const float* halt_bias, int batch, int n_dblocks, int length,
                                float* entropy, float* halt, float* sums, cudaStream_t stream) {
  const long long total = static_cast<long long>(batch) * length;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((total + threads - 1) / threads);
  combine_sums_kernel<<<blocks, threads, 0, stream>>>(partials, halt_bias, batch, n_dblocks, length, entropy, halt,
                                                      sums);
  return cudaGetLastError();
}

__global__ void combine_channel_mean_kernel(const float* __restrict__ channel_partials, int batch, int n_dblocks,
                                            int length, int dstate, int dim, float* __restrict__ channel_mean) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long plane = static_cast<long long>(length) * dstate;  // (L, N) of one block
  if (i >= batch * plane) return;
  const long long b = i / plane, tn = i % plane;
  const float* row = channel_partials + b * n_dblocks * plane + tn;
  float v = 0.f;
  for (int blk = 0; blk < n_dblocks; ++blk) v += row[blk * plane];
  channel_mean[i] = v / static_cast<float>(dim);
}

cudaError_t launch_combine_channel_mean(const float* channel_partials, int batch, int n_dblocks, int length,
                                        int dstate, int dim, float* channel_mean, cudaStream_t stream) {
  const long long total = static_cast<long long>(batch) * length * dstate;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((total + threads - 1) / threads);
  combine_channel_mean_kernel<<<blocks, threads, 0, stream>>>(channel_partials, batch, n_dblocks, length, dstate,
                                                              dim, channel_mean);
  return cudaGetLastError();
}

}  // namespace pna_cuda
