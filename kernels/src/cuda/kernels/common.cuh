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

// Aligned loads of 2, 4 and 16 bytes (little-endian words), one instruction each where
// byte loads took one per byte; each caller states the alignment it relies on. Weights
// are read through the read-only cache.
#ifdef OASIS_HOST
static inline u32 lda2(const u8* p) { u16 v; memcpy(&v, p, 2); return v; }
static inline u32 lda4(const u8* p) { u32 v; memcpy(&v, p, 4); return v; }
static inline void lda16(const u8* p, u32* o) { memcpy(o, p, 16); }
static inline float as_f32(u32 b) { float f; memcpy(&f, &b, 4); return f; }
#else
DEV u32 lda2(const u8* p) { return __ldg((const unsigned short*)p); }
DEV u32 lda4(const u8* p) { return __ldg((const unsigned int*)p); }
DEV void lda16(const u8* p, u32* o) {
  uint4 v = __ldg((const uint4*)p);
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
DEV float as_f32(u32 b) { return __uint_as_float(b); }
#endif

// Byte `k` (0..11) of the three little-endian words s0 s1 s2.
DEV int byte_of3(u32 s0, u32 s1, u32 s2, int k) {
  u32 w = k < 4 ? s0 : (k < 8 ? s1 : s2);
  return (int)((w >> (8 * (k & 3))) & 0xff);
}
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

// The 32 values of unit `u` (values 32u..32u+31) of a row of type T, as ggml's
// dequantize_row_* computes them.
template <int T> DEV void dequant_unit(const u8* row, int u, float* y);

// Alignment: a weight starts 256-byte aligned and its rows follow each other, so a unit's
// address is aligned to the gcd of 256 and the bytes of a row, unit and block: 16 for
// F32/F16/BF16 (k a multiple of 32) and Q4_K/Q5_K (144 and 176 bytes a block), 4 for Q4_1
// (20), 2 for Q4_0, Q8_0 and Q6_K (18, 34, 210).
template <> DEV void dequant_unit<T_F32>(const u8* row, int u, float* y) {
  const u8* p = row + (u64)u * 128;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u32 w[4];
    lda16(p + 16 * i, w);
#pragma unroll
    for (int k = 0; k < 4; k++) y[4 * i + k] = as_f32(w[k]);
  }
}
template <> DEV void dequant_unit<T_F16>(const u8* row, int u, float* y) {
  const u8* p = row + (u64)u * 64;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    u32 w[4];
    lda16(p + 16 * i, w);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      y[8 * i + 2 * k] = h2f((u16)(w[k] & 0xffff));
      y[8 * i + 2 * k + 1] = h2f((u16)(w[k] >> 16));
    }
  }
}
template <> DEV void dequant_unit<T_BF16>(const u8* row, int u, float* y) {
  const u8* p = row + (u64)u * 64;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    u32 w[4];
    lda16(p + 16 * i, w);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      y[8 * i + 2 * k] = bf2f((u16)(w[k] & 0xffff));
      y[8 * i + 2 * k + 1] = bf2f((u16)(w[k] >> 16));
    }
  }
}
template <> DEV void dequant_unit<T_Q4_0>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 18;
  float d = h2f((u16)lda2(b));
#pragma unroll
  for (int i = 0; i < 8; i++) {
    u32 v = lda2(b + 2 + 2 * i);
#pragma unroll
    for (int k = 0; k < 2; k++) {
      int q = (v >> (8 * k)) & 0xff;
      y[2 * i + k] = ((q & 0xF) - 8) * d;
      y[2 * i + k + 16] = ((q >> 4) - 8) * d;
    }
  }
}
template <> DEV void dequant_unit<T_Q4_1>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 20;
  u32 dm = lda4(b);
  float d = h2f((u16)(dm & 0xffff)), m = h2f((u16)(dm >> 16));
#pragma unroll
  for (int i = 0; i < 4; i++) {
    u32 w = lda4(b + 4 + 4 * i);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      int q = (w >> (8 * k)) & 0xff;
      y[4 * i + k] = (q & 0xF) * d + m;
      y[4 * i + k + 16] = (q >> 4) * d + m;
    }
  }
}
template <> DEV void dequant_unit<T_Q8_0>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)u * 34;
  float d = h2f((u16)lda2(b));
#pragma unroll
  for (int i = 0; i < 16; i++) {
    u32 v = lda2(b + 2 + 2 * i);
    y[2 * i] = (int)(i8)(v & 0xff) * d;
    y[2 * i + 1] = (int)(i8)(v >> 8) * d;
  }
}
// ggml's get_scale_min_k4 on the 12 scale bytes held in s0 s1 s2.
DEV void scale_min_k4w(int j, u32 s0, u32 s1, u32 s2, int* sc, int* m) {
  if (j < 4) {
    *sc = byte_of3(s0, s1, s2, j) & 63;
    *m = byte_of3(s0, s1, s2, j + 4) & 63;
  } else {
    *sc = (byte_of3(s0, s1, s2, j + 4) & 0xF) | ((byte_of3(s0, s1, s2, j - 4) >> 6) << 4);
    *m = (byte_of3(s0, s1, s2, j + 4) >> 4) | ((byte_of3(s0, s1, s2, j) >> 6) << 4);
  }
}
template <> DEV void dequant_unit<T_Q4_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 144;
  int j = u % 8, g = j / 2;
  u32 h[4], q[8];
  lda16(b, h);
  lda16(b + 16 + 32 * g, q);
  lda16(b + 32 + 32 * g, q + 4);
  float d = h2f((u16)(h[0] & 0xffff)), dmin = h2f((u16)(h[0] >> 16));
  int sc, m;
  scale_min_k4w(j, h[1], h[2], h[3], &sc, &m);
  float d1 = d * sc, m1 = dmin * m;
  int shift = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 8; i++) {
#pragma unroll
    for (int k = 0; k < 4; k++) y[4 * i + k] = d1 * ((q[i] >> (8 * k + shift)) & 0xF) - m1;
  }
}
template <> DEV void dequant_unit<T_Q5_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 176;
  int j = u % 8, g = j / 2;
  u32 h[4], qh[8], ql[8];
  lda16(b, h);
  lda16(b + 16, qh);
  lda16(b + 32, qh + 4);
  lda16(b + 48 + 32 * g, ql);
  lda16(b + 64 + 32 * g, ql + 4);
  float d = h2f((u16)(h[0] & 0xffff)), dmin = h2f((u16)(h[0] >> 16));
  int sc, m;
  scale_min_k4w(j, h[1], h[2], h[3], &sc, &m);
  float d1 = d * sc, m1 = dmin * m;
  int shift = (j & 1) * 4;
#pragma unroll
  for (int i = 0; i < 8; i++) {
#pragma unroll
    for (int k = 0; k < 4; k++) {
      int q = ((ql[i] >> (8 * k + shift)) & 0xF) + (((qh[i] >> (8 * k + j)) & 1) ? 16 : 0);
      y[4 * i + k] = d1 * q - m1;
    }
  }
}
template <> DEV void dequant_unit<T_Q6_K>(const u8* row, int u, float* y) {
  const u8* b = row + (u64)(u / 8) * 210;
  int j = u % 8, n = j / 4, which = j % 4;
  const u8* ql = b + 64 * n + 32 * (which & 1);
  const u8* qh = b + 128 + 32 * n;
  u32 s = lda2(b + 192 + 8 * n + 2 * which);
  int s0 = (int)(i8)(s & 0xff), s1 = (int)(i8)(s >> 8);
  float d = h2f((u16)lda2(b + 208));
  int shift = (which >> 1) * 4;
#pragma unroll
  for (int i = 0; i < 16; i++) {
    u32 l2 = lda2(ql + 2 * i), h2 = lda2(qh + 2 * i);
#pragma unroll
    for (int k = 0; k < 2; k++) {
      int lo = (l2 >> (8 * k)) & 0xff, hi = (h2 >> (8 * k)) & 0xff;
      int q = (((lo >> shift) & 0xF) | (((hi >> (2 * which)) & 3) << 4)) - 32;
      y[2 * i + k] = d * (i < 8 ? s0 : s1) * q;
    }
  }
}
