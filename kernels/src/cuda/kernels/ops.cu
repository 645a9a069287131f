// Row operations of the decoder: RMSNorm, rotary embedding, SwiGLU, residual and bias
// additions, all in f32.
#include "common.cuh"

// out = x * rsqrt(mean(x^2) + eps) * w for one row of n (256 threads). `x` and `out` may be
// the same row: the sum is taken before any value is written, and each value is read right
// before its own index is written.
DEV void rms_norm_row(const float* xr, const float* w, int n, float eps, float* orow) {
  __shared__ float part[8];
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += xr[i] * xr[i];
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  float scale = 1.0f / sqrtf(part[0] / n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = (xr[i] * scale) * w[i];
}

// One block of 256 threads per row of x (rows x n).
extern "C" __global__ void __launch_bounds__(256)
    rms_norm(const float* __restrict__ x, const float* __restrict__ w, int n, float eps,
             float* __restrict__ out) {
  rms_norm_row(x + (u64)blockIdx.x * n, w, n, eps, out + (u64)blockIdx.x * n);
}

extern "C" __global__ void __launch_bounds__(256)
    rms_norm_inplace(float* x, const float* __restrict__ w, int n, float eps) {
  float* row = x + (u64)blockIdx.x * n;
  rms_norm_row(row, w, n, eps, row);
}

// Rotates the first n_rot dimensions of every head of row t (n_heads heads of head_dim) by
// position pos[t], ggml's way: theta advanced by repeated multiplication, angle =
// freq_scale * theta / factor[i]. neox: pairs (i, i + n_rot/2); else (2i, 2i + 1).
extern "C" __global__ void __launch_bounds__(128)
    rope(float* __restrict__ x, const u32* __restrict__ pos, int n_heads, int head_dim,
         int n_rot, float theta_scale, float freq_scale, const float* __restrict__ factors,
         int neox) {
  int t = blockIdx.x;
  int half = n_rot / 2;
  float* row = x + (u64)t * n_heads * head_dim;
  for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
    int h = idx / half, i = idx % half;
    float theta = (float)pos[t];
    for (int j = 0; j < i; j++) theta *= theta_scale;
    float ff = factors ? factors[i] : 1.0f;
    float angle = freq_scale * (theta / ff);
    float c = cosf(angle), s = sinf(angle);
    float* hp = row + h * head_dim;
    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float x0 = hp[a], x1 = hp[b];
    hp[a] = x0 * c - x1 * s;
    hp[b] = x0 * s + x1 * c;
  }
}

// gate = silu(gate) * up, elementwise over n values.
extern "C" __global__ void __launch_bounds__(256)
    swiglu(float* __restrict__ gate, const float* __restrict__ up, u64 n) {
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float g = gate[i];
    gate[i] = (g / (1.0f + expf(-g))) * up[i];
  }
}

// x += y, elementwise over n values.
extern "C" __global__ void __launch_bounds__(256)
    add_assign(float* __restrict__ x, const float* __restrict__ y, u64 n) {
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

// Each of `rows` rows of width n gets `bias` added.
extern "C" __global__ void __launch_bounds__(256)
    add_bias(float* __restrict__ x, const float* __restrict__ bias, int rows, int n) {
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (u64)rows * n) x[i] += bias[i % n];
}

// out[i, :] = x[rows[i], :], width n (the rows that get logits).
extern "C" __global__ void __launch_bounds__(256)
    gather_rows(const float* __restrict__ x, const u32* __restrict__ rows, int n_rows, int n,
                float* __restrict__ out) {
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (u64)n_rows * n) out[i] = x[(u64)rows[i / n] * n + i % n];
}
