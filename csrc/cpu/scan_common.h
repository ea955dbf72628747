// Shapes, the channel-block work split and the scalar activations shared by the CPU scan kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "vector_math.h"

// The per-work-item functions that hold the hot loops are compiled three times -- baseline x86-64, x86-64-v3
// (AVX2 + FMA) and x86-64-v4 (AVX-512) -- and the dynamic loader picks the best one the running CPU supports
// (GCC function multi-versioning). So one cached build is both safe and fast on any x86-64 machine, without
// -march=native. Other compilers and architectures get the baseline build.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__)
#define PNA_CPU_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define PNA_CPU_MULTIVERSION
#endif

namespace pna_cpu {

// Sizes of one fused scan: u is (batch, dim, length), A is (dim, dstate), B and C are (batch, groups, dstate,
// length); checkpoints hold the state before every `chunk` steps.
struct ScanDims {
  int64_t batch;
  int64_t dim;
  int64_t length;
  int64_t dstate;
  int64_t groups;
  int64_t chunk;

  int64_t n_chunks() const { return (length + chunk - 1) / chunk; }
  int64_t dim_per_group() const { return dim / groups; }
};

// Channels handled by one work item. Blocks never straddle a B/C group, so every block's dB/dC partial sums
// belong to a single group. The split depends only on the shape (never on the thread count), so the fixed-order
// reductions over blocks give bitwise identical results for any number of threads.
constexpr int64_t kBlockChannels = 16;

struct ChannelBlocks {
  int64_t per_group;
  int64_t dim_per_group;

  explicit ChannelBlocks(const ScanDims& dims)
      : per_group((dims.dim_per_group() + kBlockChannels - 1) / kBlockChannels),
        dim_per_group(dims.dim_per_group()) {}

  int64_t count(const ScanDims& dims) const { return dims.groups * per_group; }
  int64_t group(int64_t block) const { return block / per_group; }
  int64_t begin(int64_t block) const { return group(block) * dim_per_group + (block % per_group) * kBlockChannels; }
  int64_t end(int64_t block) const {
    return std::min(begin(block) + kBlockChannels, (group(block) + 1) * dim_per_group);
  }
};

// Sum of the kBlockChannels lanes of a block, as a fixed tree (lanes k and k + 8, then k + 4, ...): the same
// order on every run. Written on GCC vector types, so each level is one vector add of the two halves instead of
// a chain of scalar extracts and adds.
template <typename scalar_t>
inline scalar_t lane_sum(const scalar_t* lanes) {
  static_assert(kBlockChannels == 16, "lane_sum is written for 16 lanes");
  typedef scalar_t Half __attribute__((vector_size(8 * sizeof(scalar_t))));
  typedef scalar_t Quarter __attribute__((vector_size(4 * sizeof(scalar_t))));
  Half low, high;
  std::memcpy(&low, lanes, sizeof(Half));
  std::memcpy(&high, lanes + 8, sizeof(Half));
  const Half half = low + high;
  Quarter first, second;
  std::memcpy(&first, &half, sizeof(Quarter));
  std::memcpy(&second, reinterpret_cast<const char*>(&half) + sizeof(Quarter), sizeof(Quarter));
  const Quarter quarter = first + second;
  return (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
}

// The activations below use exp_v / log1p_v, so loops over them vectorise in float32 (see vector_math.h).

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + exp_v(-x));
}

template <typename scalar_t>
inline scalar_t silu(scalar_t x) {
  return x * sigmoid(x);
}

// softplus(x) and its derivative from one exp: e = exp(x), softplus = log1p(e) and d/dx = e / (1 + e) = sigmoid(x)
// up to the threshold 20, x and 1 above it (as torch).
template <typename scalar_t>
inline void softplus_and_grad(scalar_t x, scalar_t& value, scalar_t& grad) {
  const scalar_t e = exp_v(x > scalar_t(20) ? scalar_t(0) : x);  // keeps exp finite on the branch not taken
  value = x > scalar_t(20) ? x : log1p_v(e);
  grad = x > scalar_t(20) ? scalar_t(1) : e / (scalar_t(1) + e);
}

// silu(x) and its derivative from one sigmoid.
template <typename scalar_t>
inline void silu_and_grad(scalar_t x, scalar_t& value, scalar_t& grad) {
  const scalar_t s = sigmoid(x);
  value = x * s;
  grad = s * (scalar_t(1) + x * (scalar_t(1) - s));
}

// torch.nn.functional.softplus with beta 1 and threshold 20 (the unused derivative is optimised away).
template <typename scalar_t>
inline scalar_t softplus(scalar_t x) {
  scalar_t value, grad;
  softplus_and_grad(x, value, grad);
  return value;
}

// dt = softplus(x) or x, where x = delta + delta_bias.
template <typename scalar_t>
inline scalar_t discretize(scalar_t x, bool use_softplus) {
  return use_softplus ? softplus(x) : x;
}

// Entropy H = log(S1) - S2 / S1 of the sums S1 = sum e and S2 = sum e log e; 0 for an all-zero state. NaN when
// the state is non-finite or its energy overflows (NaN or infinite sums): H of a finite state lies in
// [0, log(D N)], so a non-finite result can only mean that, and it must not pass for a number.
template <typename scalar_t>
inline scalar_t entropy_from_sums(scalar_t s1, scalar_t s2) {
  if (s1 == scalar_t(0)) return scalar_t(0);
  const scalar_t h = std::log(s1) - s2 / s1;
  return std::isfinite(h) ? h : std::numeric_limits<scalar_t>::quiet_NaN();
}

}  // namespace pna_cpu
