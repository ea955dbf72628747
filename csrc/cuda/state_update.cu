// One decode step of the fused op: h = exp(dt A) h + dt B x in place, y = C h + D x (times silu(z)), and the step's
// entropy and halt logit. Same block layout as the forward (scan_common.cuh); per-block partial sums of S1, S2 and
// halt_weight * h go to partials (3, batch, n_dblocks, 1) and combine_sums.cu adds them in block order.
#include "scan_common.cuh"

namespace pna_cuda {
namespace {

struct StepParams {
  Shape s;
  float* state;
  const void* x;
  const void* dt;
  const float* A;
  const void* B;
  const void* C;
  const float* Dskip;
  const void* z;
  const float* dt_bias;
  const float* halt_weight;
  bool softplus;
  void* y;
  float* partials;
};

template <typename T, int NPT>
__global__ void __launch_bounds__(kThreads) state_update_kernel(StepParams p) {
  __shared__ float s_red[3][kWarps];
  const Shape& s = p.s;
  const BlockPos pos = block_pos(s);
  const int tpc = s.layout.tpc, N = s.dstate, D = s.dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t bd = static_cast<size_t>(pos.b) * D + pos.d;
  float dt = 0.f, xx = 0.f;
  if (pos.active) {
    const float raw = to_float(static_cast<const T*>(p.dt)[bd]) + p.dt_bias[pos.d];
    dt = p.softplus ? softplus(raw) : raw;
    xx = to_float(static_cast<const T*>(p.x)[bd]);
  }
  const size_t bc = (static_cast<size_t>(pos.b) * s.groups + pos.g) * N;
  const T* B = static_cast<const T*>(p.B) + bc;
  const T* C = static_cast<const T*>(p.C) + bc;
  float yp = 0.f, s1 = 0.f, s2 = 0.f, hs = 0.f;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int n = pos.j + k * tpc;
    if (pos.active && n < N) {
      const size_t dn = static_cast<size_t>(pos.d) * N + n;
      float& h = p.state[bd * N + n];
      const float hn = exp2f(dt * p.A[dn] * kLog2e) * h + dt * to_float(B[n]) * xx;
      h = hn;
      yp += to_float(C[n]) * hn;
      const float e = hn * hn;
      s1 += e;
      s2 += xlogx(e);
      hs += p.halt_weight[dn] * hn;
    }
  }
  yp = channel_sum(yp, tpc);
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  hs = warp_sum(hs);
  if (lane == 0) {
    s_red[0][warp] = s1;
    s_red[1][warp] = s2;
    s_red[2][warp] = hs;
  }
  if (pos.j == 0 && pos.active) {
    float y = yp + p.Dskip[pos.d] * xx;
    if (p.z != nullptr) {
      const float zz = to_float(static_cast<const T*>(p.z)[bd]);
      y *= zz * sigmoid(zz);
    }
    static_cast<T*>(p.y)[bd] = from_float<T>(y);
  }
  __syncthreads();
  if (threadIdx.x < 3) {
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w) v += s_red[threadIdx.x][w];
    p.partials[(static_cast<size_t>(threadIdx.x) * s.batch + pos.b) * s.layout.n_dblocks + pos.blk] = v;
  }
}

}  // namespace
}  // namespace pna_cuda

extern "C" const char* pna_cuda_state_update(int dtype, float* state, const void* x, const void* dt, const float* A,
                                             const void* B, const void* C, const float* Dskip, const void* z,
                                             const float* dt_bias, const float* halt_weight, const float* halt_bias,
                                             int dt_softplus, int batch, int dim, int dstate, int groups, void* y,
                                             float* partials, float* entropy, float* halt, cudaStream_t stream) {
  using namespace pna_cuda;
  if (const char* why = check_problem(dtype, batch, dim, 1, dstate, groups)) return why;
  StepParams p;
  p.s = Shape{batch, dim, 1, dstate, groups, make_layout(dim, groups, dstate)};
  p.state = state;
  p.x = x;
  p.dt = dt;
  p.A = A;
  p.B = B;
  p.C = C;
  p.Dskip = Dskip;
  p.z = z;
  p.dt_bias = dt_bias;
  p.halt_weight = halt_weight;
  p.softplus = dt_softplus != 0;
  p.y = y;
  p.partials = partials;
  const dim3 grid(p.s.layout.n_dblocks, batch);
  cudaError_t err = dispatch(dtype, p.s.layout.npt, [&](auto tag, auto npt) {
    state_update_kernel<decltype(tag), decltype(npt)::value><<<grid, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  });
  if (err == cudaSuccess)
    err = launch_combine_sums(partials, halt_bias, batch, p.s.layout.n_dblocks, 1, entropy, halt, nullptr, stream);
  return error_string(err);
}
