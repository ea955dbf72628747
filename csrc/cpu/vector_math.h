// Branch-free exp and log that the compiler can vectorise inside `#pragma omp simd` loops.
//
// glibc only offers vector expf/logf under -ffast-math, which would also break the 0 * log 0 handling, so the
// float versions here are written out: Cody-Waite range reduction plus a short polynomial, accurate to a few
// ulp. The double versions call the C library, because the float64 path is the precise one, not the fast one.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

namespace pna_cpu {

inline float bits_to_float(int32_t bits) { return __builtin_bit_cast(float, bits); }

inline int32_t float_to_bits(float value) { return __builtin_bit_cast(int32_t, value); }

// exp(x) = 2^k * exp(r) with k = round(x / ln 2) and |r| <= ln(2) / 2; exp(r) by its degree-7 Taylor polynomial
// (truncation error below 1e-8). 2^k is applied as two normal factors 2^(k >> 1) * 2^(k - (k >> 1)), so results
// down to the subnormal range come out right; 0 below -104 (where even subnormals underflow), +inf above
// log(FLT_MAX) = 88.7228.
inline float exp_fast(float x) {
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const float low = x < -104.0f ? -104.0f : x;  // a select, not std::fmax, which GCC does not vectorise
  const float xc = low > 88.7228f ? 88.7228f : low;
  const float k = (xc * 1.44269504088896341f + round_magic) - round_magic;
  const float r = (xc - k * 0.693145751953125f) - k * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k), k_half = ki >> 1;
  const float result = p * bits_to_float((k_half + 127) << 23) * bits_to_float((ki - k_half + 127) << 23);
  return x < -104.0f ? 0.0f : (x > 88.7228f ? std::numeric_limits<float>::infinity() : result);
}

// log(x) for finite x > 0, subnormals included: x = m * 2^k with m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(s) with s = (m - 1) / (m + 1), |s| < 0.172, by its odd series up to s^9.
inline float log_fast(float x) {
  const bool subnormal = x < FLT_MIN;
  const float xs = subnormal ? x * 8388608.0f : x;  // 2^23 lifts subnormals into the normal range
  const int32_t bits = float_to_bits(xs);
  int32_t k = ((bits >> 23) & 0xff) - 127 - (subnormal ? 23 : 0);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // in [1, 2)
  const bool high = m > 1.41421356237f;
  m = high ? 0.5f * m : m;
  k = high ? k + 1 : k;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  const float kf = static_cast<float>(k);
  return 2.0f * s * p + kf * 0.693145751953125f + kf * 1.428606765330187045e-06f;
}

// log(1 + y) for y >= 0 without losing small y: log(u) * y / (u - 1) with u = 1 + y rounded, exact where
// u == 1 (then log1p(y) = y to working precision).
inline float log1p_fast(float y) {
  const float u = 1.0f + y;
  const float denom = u == 1.0f ? 1.0f : u - 1.0f;
  return u == 1.0f ? y : log_fast(u) * (y / denom);
}

template <typename scalar_t>
inline scalar_t exp_v(scalar_t x);
template <>
inline float exp_v<float>(float x) { return exp_fast(x); }
template <>
inline double exp_v<double>(double x) { return std::exp(x); }

template <typename scalar_t>
inline scalar_t log1p_v(scalar_t y);
template <>
inline float log1p_v<float>(float y) { return log1p_fast(y); }
template <>
inline double log1p_v<double>(double y) { return std::log1p(y); }

// log(e) for e > 0 and 0 for e == 0, so that e * log_or_zero(e) and h * log_or_zero(h * h) are 0 at h = 0.
template <typename scalar_t>
inline scalar_t log_or_zero(scalar_t e);
template <>
inline float log_or_zero<float>(float e) {
  const float safe = e > 0.0f ? e : 1.0f;
  return log_fast(safe);
}
template <>
inline double log_or_zero<double>(double e) {
  return e > 0.0 ? std::log(e) : 0.0;
}

}  // namespace pna_cpu
