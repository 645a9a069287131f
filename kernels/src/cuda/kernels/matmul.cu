// Products with GGUF weights on the GPU.
//
// Decode (a few tokens): `gemv_<type>` reads each weight once for up to 8 tokens: one warp
// per output row, each lane dequantizing whole 32-value units of the row and multiplying
// them with every token's activations in f32, then a warp reduction. Prefill (many tokens):
// `dequant_bf16_<type>` turns rows of a weight into bf16 for a cuBLAS tensor-core GEMM
// (f32 accumulation), `f32_to_bf16` the activations.
#include "common.cuh"

#define GEMV_MAX_TOKENS 8
#define GEMV_WARPS 4

// y[t * rows + r] = sum_k W[r, k] * x[t * k_len + k] for t < n_tok (<= 8).
template <int T>
DEV void gemv(const u8* __restrict__ w, int rows, int k_len, const float* __restrict__ x,
              int n_tok, float* __restrict__ y) {
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int r = blockIdx.x * GEMV_WARPS + warp;
  if (r >= rows) return;
  const u8* row = w + (u64)r * row_bytes(T, k_len);
  float acc[GEMV_MAX_TOKENS];
#pragma unroll
  for (int t = 0; t < GEMV_MAX_TOKENS; t++) acc[t] = 0.f;
  int units = k_len / 32;
  for (int u = lane; u < units; u += 32) {
    float v[32];
    dequant_unit<T>(row, u, v);
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) {
      if (t < n_tok) {
        const float4* xp = (const float4*)(x + (u64)t * k_len + 32 * u);
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) {
          float4 q = __ldg(xp + i);
          s += v[4 * i] * q.x + v[4 * i + 1] * q.y + v[4 * i + 2] * q.z + v[4 * i + 3] * q.w;
        }
        acc[t] += s;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < GEMV_MAX_TOKENS; t++) {
    if (t < n_tok) {
      float s = warp_sum(acc[t]);
      if (lane == 0) y[(u64)t * rows + r] = s;
    }
  }
}

// Rows [row0, row0 + n_rows) of W into bf16, `out` holding n_rows x k_len. One thread per
// 32-value unit.
template <int T>
DEV void dequant_bf16(const u8* __restrict__ w, int row0, int n_rows, int k_len,
                      u16* __restrict__ out) {
  u64 units_per_row = k_len / 32;
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= units_per_row * n_rows) return;
  u64 r = i / units_per_row;
  int u = (int)(i % units_per_row);
  const u8* row = w + (row0 + r) * row_bytes(T, k_len);
  float v[32];
  dequant_unit<T>(row, u, v);
  u32* o = (u32*)(out + r * k_len + 32 * u);
#pragma unroll
  for (int j = 0; j < 16; j++) o[j] = (u32)f2bf(v[2 * j]) | ((u32)f2bf(v[2 * j + 1]) << 16);
}

// Rows of an embedding table, dequantized: out[i, :] = W[ids[i], :].
template <int T>
DEV void embed_rows(const u8* __restrict__ w, int k_len, const u32* __restrict__ ids, int n,
                    float* __restrict__ out) {
  u64 units_per_row = k_len / 32;
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= units_per_row * n) return;
  u64 t = i / units_per_row;
  int u = (int)(i % units_per_row);
  const u8* row = w + (u64)ids[t] * row_bytes(T, k_len);
  float v[32];
  dequant_unit<T>(row, u, v);
  float* o = out + t * k_len + 32 * u;
#pragma unroll
  for (int j = 0; j < 32; j++) o[j] = v[j];
}

#define FOR_TYPE(NAME, T)                                                                  \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                            \
      gemv_##NAME(const u8* w, int rows, int k_len, const float* x, int n_tok, float* y) { \
    gemv<T>(w, rows, k_len, x, n_tok, y);                                                  \
  }                                                                                        \
  extern "C" __global__ void __launch_bounds__(256)                                        \
      dequant_bf16_##NAME(const u8* w, int row0, int n_rows, int k_len, u16* out) {        \
    dequant_bf16<T>(w, row0, n_rows, k_len, out);                                          \
  }                                                                                        \
  extern "C" __global__ void __launch_bounds__(256)                                        \
      embed_##NAME(const u8* w, int k_len, const u32* ids, int n, float* out) {            \
    embed_rows<T>(w, k_len, ids, n, out);                                                  \
  }

FOR_TYPE(f32, T_F32)
FOR_TYPE(f16, T_F16)
FOR_TYPE(bf16, T_BF16)
FOR_TYPE(q4_0, T_Q4_0)
FOR_TYPE(q4_1, T_Q4_1)
FOR_TYPE(q8_0, T_Q8_0)
FOR_TYPE(q4_k, T_Q4_K)
FOR_TYPE(q5_k, T_Q5_K)
FOR_TYPE(q6_k, T_Q6_K)

// Activations to bf16 for the tensor-core GEMM.
extern "C" __global__ void __launch_bounds__(256) f32_to_bf16(const float* x, u64 n, u16* out) {
  u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = f2bf(x[i]);
}
