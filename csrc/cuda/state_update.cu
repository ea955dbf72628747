// One decode step of the fused op: h = exp(dt A) h + dt B x in place, y = C h + D x (times silu(z)), and the step's
// entropy, halt logit and channel mean. Same block layout as the forward (scan_common.cuh); per-block partial sums
// of S1, S2 and halt_weight * h go to partials (3, batch, n_dblocks, 1) and the block's sums of the new state over
// its channels to channel_partials (batch, n_dblocks, 1, N); combine_sums.cu adds both in block order.
#include "scan_common.cuh"

namespace pna_cuda {
namespace {

struct StepParams {
  Shape s;
  PnaStateUpdateArgs a;
  PnaStateUpdateResult r;
};

template <typename T, int NPT>
__global__ void __launch_bounds__(kThreads) state_update_kernel(StepParams p) {
  extern __shared__ float smem[];
  const Shape& s = p.s;
  float* s_red = smem;                 // [3][kWarps]: each warp's S1, S2, halt sums
  float* s_mean = s_red + 3 * kWarps;  // [kWarps][N]: each warp's sums of the new state over its channels
  const BlockPos pos = block_pos(s);
  const int tpc = s.layout.tpc, N = s.dstate, D = s.dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t bd = static_cast<size_t>(pos.b) * D + pos.d;
  float dt = 0.f, xx = 0.f;
  if (pos.active) {
    const float raw = to_float(static_cast<const T*>(p.a.dt)[bd]) + p.a.dt_bias[pos.d];
    dt = p.a.dt_softplus ? softplus(raw) : raw;
    xx = to_float(static_cast<const T*>(p.a.x)[bd]);
  }
  const size_t bc = (static_cast<size_t>(pos.b) * s.groups + pos.g) * N;
  const T* B = static_cast<const T*>(p.a.B) + bc;
  const T* C = static_cast<const T*>(p.a.C) + bc;
  float yp = 0.f, s1 = 0.f, s2 = 0.f, hs = 0.f, hv[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int n = pos.j + k * tpc;
    hv[k] = 0.f;
    if (pos.active && n < N) {
      const size_t dn = static_cast<size_t>(pos.d) * N + n;
      float& h = p.a.state[bd * N + n];
      const float hn = exp2f(dt * p.a.A[dn] * kLog2e) * h + dt * to_float(B[n]) * xx;
      h = hn;
      hv[k] = hn;
      yp += to_float(C[n]) * hn;
      const float e = hn * hn;
      s1 += e;
      s2 += xlogx(e);
      hs += p.a.halt_weight[dn] * hn;
    }
  }
  yp = channel_sum(yp, tpc);
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const float v = across_channels_sum(hv[k], tpc);  // entries that do not exist hold 0
    const int n = pos.j + k * tpc;
    if (lane < tpc && n < N) s_mean[warp * N + n] = v;
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  hs = warp_sum(hs);
  if (lane == 0) {
    s_red[0 * kWarps + warp] = s1;
    s_red[1 * kWarps + warp] = s2;
    s_red[2 * kWarps + warp] = hs;
  }
  if (pos.j == 0 && pos.active) {
    float y = yp + p.a.D[pos.d] * xx;
    if (p.a.z != nullptr) {
      const float zz = to_float(static_cast<const T*>(p.a.z)[bd]);
      y *= silu(zz);
    }
    static_cast<T*>(p.r.y)[bd] = from_float<T>(y);
  }
  __syncthreads();
  if (threadIdx.x < 3) {
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w) v += s_red[threadIdx.x * kWarps + w];
    p.r.partials[(static_cast<size_t>(threadIdx.x) * s.batch + pos.b) * s.layout.n_dblocks + pos.blk] = v;
  }
  for (int n = threadIdx.x; n < N; n += kThreads) {
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w) v += s_mean[w * N + n];
    p.r.channel_partials[(static_cast<size_t>(pos.b) * s.layout.n_dblocks + pos.blk) * N + n] = v;
  }
}

}  // namespace
}  // namespace pna_cuda

extern "C" const char* pna_cuda_state_update(const PnaStateUpdateArgs* args, const PnaStateUpdateResult* result,
                                             cudaStream_t stream) {
  using namespace pna_cuda;
  const PnaStateUpdateArgs& a = *args;
  if (const char* why = check_problem(a.dtype, a.batch, a.dim, 1, a.dstate, a.groups)) return why;
  const StepParams p{Shape{a.batch, a.dim, 1, a.dstate, a.groups, make_layout(a.dim, a.groups, a.dstate)}, a,
                     *result};
  const dim3 grid(p.s.layout.n_dblocks, a.batch);
  const size_t shared = sizeof(float) * kWarps * (3 + static_cast<size_t>(a.dstate));
  cudaError_t err = dispatch(a.dtype, p.s.layout.npt, [&](auto tag, auto npt) {
    state_update_kernel<decltype(tag), decltype(npt)::value><<<grid, kThreads, shared, stream>>>(p);
    return cudaGetLastError();
  });
  if (err == cudaSuccess)
    err = launch_combine_sums(result->partials, a.halt_bias, a.batch, p.s.layout.n_dblocks, 1, result->entropy,
                              result->halt_logits, nullptr, stream);
  if (err == cudaSuccess)
    err = launch_combine_channel_mean(result->channel_partials, a.batch, p.s.layout.n_dblocks, 1, a.dstate, a.dim,
                                      result->channel_mean, stream);
  return error_string(err);
}
