// Host emulation of the CUDA features the kernels in this directory use, for CI machines without a GPU
// (tests/test_cuda_compile.py): the kernels compile with the host C++ compiler and run one block at a time with one
// std::thread per CUDA thread, __syncthreads as a block-wide barrier and __shfl_xor_sync as a warp-wide exchange.
// The test rewrites the three constructs a host compiler cannot parse (kernel<<<...>>>, extern __shared__ and
// __shared__) into emu_launch(...), emu_shared and static; it is never part of the extension build.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#undef __launch_bounds__
#define __launch_bounds__(...)
#define cudaGetLastError() cudaSuccess
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetErrorString(err) "emulated CUDA error"
#define blockIdx emu_block_index

using std::isfinite;
using std::max;
using std::min;

inline thread_local uint3 threadIdx;
inline uint3 emu_block_index;
inline dim3 blockDim, gridDim;
// Dynamic shared memory, filled with NaN before every launch so that reading an unwritten entry shows up.
inline std::vector<float> emu_shared(1 << 20);
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

template <typename Kernel>
struct EmuLaunch {
  Kernel* kernel;
  dim3 grid;
  unsigned threads;
  template <typename... Args>
  void operator()(Args... args) {
    gridDim = grid;
    blockDim = dim3(threads);
    std::fill(emu_shared.begin(), emu_shared.end(), NAN);
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        emu_block_index = make_uint3(x, y, 0);
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
  }
};

template <typename Kernel>
EmuLaunch<Kernel> emu_launch(Kernel* kernel, dim3 grid, unsigned threads, size_t /*shared_bytes*/) {
  return {kernel, grid, threads};
}
