// Host emulation of the CUDA features the kernels in this directory use, for CI machines without a GPU
// (pna_kernels/cuda_emulation.py): the kernels compile with the host C++ compiler and run one block at a time with
// one std::thread per CUDA thread, __syncthreads as a block-wide barrier and __shfl_xor_sync as a warp-wide exchange.
// The build rewrites the three constructs a host compiler cannot parse (kernel<<<...>>>, extern __shared__ and
// __shared__) into emu_launch(...), emu_shared and static; it is never part of the GPU build.
//
// So that a missed shared-memory write or a dependence on block order shows up, every launch walks its grid in a
// shuffled order and the dynamic shared memory is filled with NaN before every block. The order comes from a seed
// (the environment variable PNA_CUDA_EMULATION_SEED, an unsigned integer, read at every launch; 0 if unset) and a
// count of the launches so far, so successive launches differ and a run is reproducible. The kernels' static
// __shared__ arrays are not poisoned: the kernels keep every shared array in the dynamic block (`smem`).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#undef __launch_bounds__
#define __launch_bounds__(...)
#define cudaGetLastError() cudaSuccess
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetErrorString(err) "emulated CUDA error"
#define blockIdx emu_block_index

using std::isfinite;
// The SFU's approximate log2 (fast_log2), as the precise one.
inline float __log2f(float x) { return std::log2(x); }
using std::max;
using std::min;

inline thread_local uint3 threadIdx;
inline uint3 emu_block_index;
inline dim3 blockDim, gridDim;
// Dynamic shared memory: all of it NaN at every launch, and the launch's bytes again before every block.
inline std::vector<float> emu_shared(1 << 20);
inline unsigned long long emu_launch_count = 0;
inline std::barrier<>* emu_block_barrier = nullptr;
inline std::barrier<>* emu_warp_barrier[32] = {};
inline float emu_lanes[32][32];

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu_lanes[warp][lane] = v;
  emu_warp_barrier[warp]->arrive_and_wait();
  const float other = emu_lanes[warp][lane ^ lane_mask];
  emu_warp_barrier[warp]->arrive_and_wait();
  return other;
}

inline float __shfl_up_sync(unsigned, float v, unsigned delta) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu_lanes[warp][lane] = v;
  emu_warp_barrier[warp]->arrive_and_wait();
  const float other = lane >= delta ? emu_lanes[warp][lane - delta] : v;
  emu_warp_barrier[warp]->arrive_and_wait();
  return other;
}

// The order in which a launch visits its grid's blocks: a permutation of (x, y) drawn from the seed and the launch.
inline std::vector<std::pair<unsigned, unsigned>> emu_block_order(dim3 grid) {
  std::vector<std::pair<unsigned, unsigned>> order;
  for (unsigned y = 0; y < grid.y; ++y)
    for (unsigned x = 0; x < grid.x; ++x) order.emplace_back(x, y);
  const char* seed = std::getenv("PNA_CUDA_EMULATION_SEED");
  std::mt19937_64 rng((seed != nullptr ? std::strtoull(seed, nullptr, 10) : 0ull) * 0x9E3779B97F4A7C15ull +
                      emu_launch_count++);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

template <typename Kernel>
struct EmuLaunch {
  Kernel* kernel;
  dim3 grid;
  unsigned threads;
  size_t shared_bytes;
  template <typename... Args>
  void operator()(Args... args) {
    const size_t shared_floats = (shared_bytes + sizeof(float) - 1) / sizeof(float);
    if (shared_floats > emu_shared.size()) {
      std::fprintf(stderr, "host emulation: a launch asks %zu bytes of shared memory, more than the emulated %zu\n",
                   shared_bytes, emu_shared.size() * sizeof(float));
      std::abort();
    }
    gridDim = grid;
    blockDim = dim3(threads);
    std::fill(emu_shared.begin(), emu_shared.end(), NAN);
    for (const auto& [x, y] : emu_block_order(grid)) {
      emu_block_index = make_uint3(x, y, 0);
      std::fill(emu_shared.begin(), emu_shared.begin() + shared_floats, NAN);
      std::barrier<> block(threads);
      emu_block_barrier = &block;
      std::vector<std::unique_ptr<std::barrier<>>> warps;
      for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
        warps.push_back(std::make_unique<std::barrier<>>(32));
        emu_warp_barrier[w] = warps.back().get();
      }
      std::vector<std::thread> lanes;
      for (unsigned t = 0; t < threads; ++t)
        lanes.emplace_back([&, t] {
          threadIdx = make_uint3(t, 0, 0);
          kernel(args...);
        });
      for (auto& lane : lanes) lane.join();
    }
  }
};

template <typename Kernel>
EmuLaunch<Kernel> emu_launch(Kernel* kernel, dim3 grid, unsigned threads, size_t shared_bytes) {
  return {kernel, grid, threads, shared_bytes};
}
