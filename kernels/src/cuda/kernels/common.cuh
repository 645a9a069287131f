// Shared definitions of Oasis's CUDA kernels. No CUDA headers: NVRTC compiles these with no
// include path, so half-precision conversions are inline PTX and the integer types are
// spelled out. `OASIS_HOST` builds the pure arithmetic (dequantization) as host C++ for the
// CPU tests that check it against the CPU kernels' formulas.
#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

#ifdef OASIS_HOST
#include <cmath>
#include <cstring>
#define DEV inline
static inline float h2f(u16 h) {
  // IEEE half to float, exactly.
  u32 sign = (u32)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) bits = sign;
    else { exp = 127 - 15 + 1; while (!(man & 0x400)) { man <<= 1; exp--; } man &= 0x3ff; bits = sign | (exp << 23) | (man << 13); }
  } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
  else bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  float f; memcpy(&f, &bits, 4); return f;
}
static inline float bf2f(u16 b) { u32 bits = (u32)b << 16; float f; memcpy(&f, &bits, 4); return f; }
#else
#define DEV __device__ __forceinline__
DEV float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
DEV u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
DEV float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
DEV u16 f2bf(float f) {
  // Round to nearest even (what `cvt.rn.bf16.f32` does on sm_80+), written out so it
  // compiles for every target.
  u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40);  // NaN stays NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return (u16)(x >> 16);
}
DEV float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
DEV float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
#endif

// ggml type ids (ggml.h), the weight types the kernels read.
#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

DEV u16 ld_u16(const u8* p) { return (u16)(p[0] | (p[1] << 8)); }
DEV u32 ld_u32(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24); }

// Bytes of one row of `k` values of type `t` (k a multiple of the type's block).
DEV u64 row_bytes(int t, int k) {
  switch (t) {
    case T_F32: return (u64)k * 4;
    case T_F16: case T_BF16: return (u64)k * 2;
    case T_Q4_0: return (u64)(k / 32) * 18;
    case T_Q4_1: return (u64)(k / 32) * 20;
    case T_Q8_0: return (u64)(k / 32) * 34;
    case T_Q4_K: return (u64)(k / 256) * 144;
    case T_Q5_K: return (u64)(k / 256) * 176;
    case T_Q6_K: return (u64)(k / 256) * 210;
    default: return 0;
  }
}

// The two 6-bit (scale, min) of sub-block `j` (0..7) of a Q4_K/Q5_K super-block
// (ggml's get_scale_min_k4).
DEV void scale_min_k4(int j, const u8* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The 32 values of unit `u` (values 32u..32u+31) of a row of type T, as ggml's
// dequantize_row_* computes them.
template <int T> DEV void dequant_unit(const u8* row, int u, float* y);

template <> DEV void dequant_unit<T_F32>(const u8* row, int u, float* y) {
  const float* p = (const float*)row + 32 * u;
#pragma unroll
  for (int i = 0; i < 32; i++) y[i] = p[i];
}
template <> DEV void dequant_unit<T_F16>(const u8* row, int u, float* y) {
  const u16* p = (const u16*)row + 32 * u;
#pragma unroll
  for (int i = 0; i < 32; i++) y[i] = h2f(p[i]);
}
template <> DEV void dequant_unit<T_BF16>(const u8* row, int u, float* y) {
  const u16* p = (const u16*)row + 32 * u;
#pragma unroll
  for (int i = 0; i < 32; i++) y[i] = bf2f(p[i]);
}
template <> DEV void dequant_unit<T_Q4_0>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 18;
  float d = h2f(ld_u16(b));
  const u8* qs = b + 2;
#pragma unroll
  for (int j = 0; j < 16; j++) {
    y[j] = ((int)(qs[j] & 0xF) - 8) * d;
    y[j + 16] = ((int)(qs[j] >> 4) - 8) * d;
  }
}
template <> DEV void dequant_unit<T_Q4_1>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 20;
  float d = h2f(ld_u16(b)), m = h2f(ld_u16(b + 2));
  const u8* qs = b + 4;
#pragma unroll
  for (int j = 0; j < 16; j++) {
    y[j] = (qs[j] & 0xF) * d + m;
    y[j + 16] = (qs[j] >> 4) * d + m;
  }
}
template <> DEV void dequant_unit<T_Q8_0>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 34;
  float d = h2f(ld_u16(b));
  const i8* qs = (const i8*)(b + 2);
#pragma unroll
  for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
}
template <> DEV void dequant_unit<T_Q4_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 144;
  int j = u % 8, g = j / 2;
  float d = h2f(ld_u16(b)), dmin = h2f(ld_u16(b + 2));
  int sc, m;
  scale_min_k4(j, b + 4, &sc, &m);
  float d1 = d * sc, m1 = dmin * m;
  const u8* q = b + 16 + 32 * g;
  int shift = (j & 1) * 4;
#pragma unroll
  for (int l = 0; l < 32; l++) y[l] = d1 * ((q[l] >> shift) & 0xF) - m1;
}
template <> DEV void dequant_unit<T_Q5_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 176;
  int j = u % 8, g = j / 2;
  float d = h2f(ld_u16(b)), dmin = h2f(ld_u16(b + 2));
  int sc, m;
  scale_min_k4(j, b + 4, &sc, &m);
  float d1 = d * sc, m1 = dmin * m;
  const u8* qh = b + 16;
  const u8* ql = b + 48 + 32 * g;
  int shift = (j & 1) * 4;
#pragma unroll
  for (int l = 0; l < 32; l++) {
    int q = ((ql[l] >> shift) & 0xF) + (((qh[l] >> j) & 1) ? 16 : 0);
    y[l] = d1 * q - m1;
  }
}
template <> DEV void dequant_unit<T_Q6_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 210;
  int j = u % 8, n = j / 4, which = j % 4;
  const u8* ql = b + 64 * n + 32 * (which & 1);
  const u8* qh = b + 128 + 32 * n;
  const i8* sc = (const i8*)(b + 192) + 8 * n + 2 * which;
  float d = h2f(ld_u16(b + 208));
  int shift = (which >> 1) * 4;
#pragma unroll
  for (int l = 0; l < 32; l++) {
    int q = (((ql[l] >> shift) & 0xF) | (((qh[l] >> (2 * which)) & 3) << 4)) - 32;
    y[l] = d * sc[l / 16] * q;
  }
}
