// Paged attention over the f16 key/value cache on the GPU.
//
// The cache of one layer is two arrays of blocks, keys and values, each block
// BLOCK_POSITIONS positions x kv_dim f16 values (position-major, heads side by side). A
// sequence's blocks are listed in its block table; token t of the batch attends to the keys
// at positions 0..=pos[t] of its sequence, so one kernel serves a prompt (causal within
// the chunk and over the cached prefix) and decoding (one token per sequence) alike.
#include "common.cuh"

#define BLOCK_POSITIONS 64
#define ATTN_THREADS 128
#define ATTN_TILE 512
#define ATTN_MAX_HEAD_DIM 256
#define NEG_INF __int_as_float(0xff800000)

// Writes each token's key and value rows (kv_dim f32 values) into cache slot slot[t]
// (block * BLOCK_POSITIONS + offset), as f16.
extern "C" __global__ void __launch_bounds__(256)
    kv_write(const float* __restrict__ k, const float* __restrict__ v, int kv_dim,
             const u32* __restrict__ slot, u16* __restrict__ kc, u16* __restrict__ vc) {
  int t = blockIdx.x;
  u64 base = (u64)slot[t] * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    kc[base + i] = f2h(k[(u64)t * kv_dim + i]);
    vc[base + i] = f2h(v[(u64)t * kv_dim + i]);
  }
}

// out[t, h, :] = softmax_j(scale * q[t, h] . K[j, kvh]) V[j, kvh] over j <= pos[t], with
// kvh = h / (n_heads / n_kv_heads). One block of 128 threads per (token, head): keys in
// tiles of 512 with an online softmax; each thread keeps up to two output dimensions.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attention(const float* __restrict__ q, const u16* __restrict__ kc,
              const u16* __restrict__ vc, const u32* __restrict__ tables,
              const u32* __restrict__ table_of, const u32* __restrict__ pos, int n_heads,
              int n_kv_heads, int head_dim, float scale, float* __restrict__ out) {
  __shared__ float qs[ATTN_MAX_HEAD_DIM];
  __shared__ float p[ATTN_TILE];
  __shared__ float red[ATTN_THREADS / 32];
  int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  int kv_dim = n_kv_heads * head_dim;
  int kvh = h / (n_heads / n_kv_heads);
  const float* qrow = q + ((u64)t * n_heads + h) * head_dim;
  for (int i = tid; i < head_dim; i += ATTN_THREADS) qs[i] = qrow[i] * scale;
  __syncthreads();
  const u32* table = tables + table_of[t];
  int n_keys = (int)pos[t] + 1;
  float m = NEG_INF, l = 0.f, acc0 = 0.f, acc1 = 0.f;
  int d0 = tid, d1 = tid + ATTN_THREADS;
  for (int start = 0; start < n_keys; start += ATTN_TILE) {
    int n = min(ATTN_TILE, n_keys - start);
    // Scores of this tile.
    float tile_max = NEG_INF;
    for (int j = tid; j < n; j += ATTN_THREADS) {
      int key = start + j;
      u64 slot = (u64)table[key / BLOCK_POSITIONS] * BLOCK_POSITIONS + key % BLOCK_POSITIONS;
      const u32* krow = (const u32*)(kc + slot * kv_dim + kvh * head_dim);
      float s = 0.f;
      for (int i = 0; i < head_dim / 2; i++) {
        u32 two = krow[i];
        s += qs[2 * i] * h2f((u16)(two & 0xffff)) + qs[2 * i + 1] * h2f((u16)(two >> 16));
      }
      p[j] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = warp_max(tile_max);
    if (tid % 32 == 0) red[tid / 32] = tile_max;
    __syncthreads();
    float new_m = m;
    for (int w = 0; w < ATTN_THREADS / 32; w++) new_m = fmaxf(new_m, red[w]);
    __syncthreads();
    // Probabilities relative to the new maximum; the running sums rescaled.
    float tile_sum = 0.f;
    for (int j = tid; j < n; j += ATTN_THREADS) {
      float e = expf(p[j] - new_m);
      p[j] = e;
      tile_sum += e;
    }
    tile_sum = warp_sum(tile_sum);
    if (tid % 32 == 0) red[tid / 32] = tile_sum;
    __syncthreads();
    float sum = 0.f;
    for (int w = 0; w < ATTN_THREADS / 32; w++) sum += red[w];
    float correction = expf(m - new_m);
    l = l * correction + sum;
    acc0 *= correction;
    acc1 *= correction;
    m = new_m;
    // Values: each thread its dimensions, over the tile's positions.
    for (int j = 0; j < n; j++) {
      int key = start + j;
      u64 slot = (u64)table[key / BLOCK_POSITIONS] * BLOCK_POSITIONS + key % BLOCK_POSITIONS;
      const u16* vrow = vc + slot * kv_dim + kvh * head_dim;
      float pj = p[j];
      if (d0 < head_dim) acc0 += pj * h2f(vrow[d0]);
      if (d1 < head_dim) acc1 += pj * h2f(vrow[d1]);
    }
    __syncthreads();
  }
  float* orow = out + ((u64)t * n_heads + h) * head_dim;
  float inv = 1.0f / l;
  if (d0 < head_dim) orow[d0] = acc0 * inv;
  if (d1 < head_dim) orow[d1] = acc1 * inv;
}

// Attention for prompt chunks, in tiles: one block of 128 threads per (tile, head), a tile
// being up to ATTN_QT consecutive rows of one sequence (tiles[i] = first row << 5 | rows,
// made by the host per step). The tile's keys stream through shared memory ATTN_KT at a
// time, read once for all its rows (the per-row kernel above reads them once per row);
// scores, an online softmax per row and the value sums run on CUDA cores in f32. Each
// thread keeps output dimension `tid` of every row. head_dim <= ATTN_TILED_MAX_HD.
#define ATTN_QT 16
#define ATTN_KT 32
#define ATTN_TILED_MAX_HD 128
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attention_tiles(const float* __restrict__ q, const u16* __restrict__ kc,
                    const u16* __restrict__ vc, const u32* __restrict__ tables,
                    const u32* __restrict__ table_of, const u32* __restrict__ pos,
                    const u32* __restrict__ tiles, int n_heads, int n_kv_heads, int head_dim,
                    float scale, float* __restrict__ out) {
  __shared__ float qs[ATTN_QT][ATTN_TILED_MAX_HD];
  __shared__ float ks[ATTN_KT][ATTN_TILED_MAX_HD + 1];
  __shared__ float vs[ATTN_KT][ATTN_TILED_MAX_HD];
  __shared__ float ps[ATTN_QT][ATTN_KT];
  __shared__ float row_m[ATTN_QT], row_l[ATTN_QT], row_c[ATTN_QT];
  __shared__ int row_keys[ATTN_QT];
  __shared__ int tile_keys;
  int tid = threadIdx.x, h = blockIdx.y;
  u32 tile = tiles[blockIdx.x];
  int t0 = (int)(tile >> 5), rows = (int)(tile & 31);
  int kv_dim = n_kv_heads * head_dim;
  int kvh = h / (n_heads / n_kv_heads);
  const u32* table = tables + table_of[t0];
  for (int i = tid; i < ATTN_QT * head_dim; i += ATTN_THREADS) {
    int r = i / head_dim, d = i % head_dim;
    qs[r][d] = r < rows ? q[((u64)(t0 + r) * n_heads + h) * head_dim + d] * scale : 0.f;
  }
  if (tid < ATTN_QT) {
    row_keys[tid] = tid < rows ? (int)pos[t0 + tid] + 1 : 0;
    row_m[tid] = NEG_INF;
    row_l[tid] = 0.f;
  }
  __syncthreads();
  if (tid == 0) {
    int most = 0;
    for (int r = 0; r < rows; r++) most = max(most, row_keys[r]);
    tile_keys = most;
  }
  float acc[ATTN_QT];
#pragma unroll
  for (int r = 0; r < ATTN_QT; r++) acc[r] = 0.f;
  __syncthreads();
  int n_keys = tile_keys, half = head_dim / 2;
  for (int start = 0; start < n_keys; start += ATTN_KT) {
    // This tile of keys and values into shared memory (zeros past the last key).
    for (int i = tid; i < ATTN_KT * half; i += ATTN_THREADS) {
      int j = i / half, pair = i % half, key = start + j;
      float k0 = 0.f, k1 = 0.f, v0 = 0.f, v1 = 0.f;
      if (key < n_keys) {
        u64 slot = (u64)table[key / BLOCK_POSITIONS] * BLOCK_POSITIONS + key % BLOCK_POSITIONS;
        u64 at = slot * kv_dim + kvh * head_dim + 2 * pair;
        u32 kk = *(const u32*)(kc + at), vv = *(const u32*)(vc + at);
        k0 = h2f((u16)(kk & 0xffff));
        k1 = h2f((u16)(kk >> 16));
        v0 = h2f((u16)(vv & 0xffff));
        v1 = h2f((u16)(vv >> 16));
      }
      ks[j][2 * pair] = k0;
      ks[j][2 * pair + 1] = k1;
      vs[j][2 * pair] = v0;
      vs[j][2 * pair + 1] = v1;
    }
    __syncthreads();
    // Scores: each warp one row at a time, each lane one key.
    for (int i = tid; i < ATTN_QT * ATTN_KT; i += ATTN_THREADS) {
      int r = i / ATTN_KT, j = i % ATTN_KT;
      float s = NEG_INF;
      if (r < rows && start + j < row_keys[r]) {
        s = 0.f;
        for (int d = 0; d < head_dim; d++) s += qs[r][d] * ks[j][d];
      }
      ps[r][j] = s;
    }
    __syncthreads();
    // The online softmax, one thread per row.
    if (tid < rows) {
      int r = tid;
      float tile_max = NEG_INF;
      for (int j = 0; j < ATTN_KT; j++) tile_max = fmaxf(tile_max, ps[r][j]);
      float new_m = fmaxf(row_m[r], tile_max);
      float sum = 0.f;
      for (int j = 0; j < ATTN_KT; j++) {
        float e = ps[r][j] == NEG_INF ? 0.f : expf(ps[r][j] - new_m);
        ps[r][j] = e;
        sum += e;
      }
      float c = row_m[r] == NEG_INF ? 0.f : expf(row_m[r] - new_m);
      row_c[r] = c;
      row_l[r] = row_l[r] * c + sum;
      row_m[r] = new_m;
    }
    __syncthreads();
    // Values: dimension tid of every row.
    if (tid < head_dim) {
#pragma unroll
      for (int r = 0; r < ATTN_QT; r++) {
        if (r < rows) {
          float a = acc[r] * row_c[r];
          for (int j = 0; j < ATTN_KT; j++) a += ps[r][j] * vs[j][tid];
          acc[r] = a;
        }
      }
    }
    __syncthreads();
  }
  if (tid < head_dim) {
#pragma unroll
    for (int r = 0; r < ATTN_QT; r++) {
      if (r < rows) out[((u64)(t0 + r) * n_heads + h) * head_dim + tid] = acc[r] / row_l[r];
    }
  }
}
