// The matmul kernels of needle-cuda: C (m, p) = A (m, n) @ B (n, p), row-major, batched over
// blockIdx.z. Included by kernels.cuh only.
//
// float32 (matmul_kernel) tiling: a block of 256 threads computes a 128x128 tile of C, looping over
// n in steps of 16. Each step's A tile (128x16, stored transposed so a thread reads its 8 rows as
// two float4) and B tile (16x128) sit in shared memory, double-buffered: while the block computes
// from one buffer, each thread holds the next step's global loads in registers and stores them into
// the other buffer afterwards, so one __syncthreads per step suffices. Each thread owns an 8x8
// register tile made of four 4x4 pieces 64 rows/columns apart, which makes its shared-memory
// reads float4 and conflict-free and its global stores coalesced.
#pragma once

#include <cstdint>

#include "ops.cuh"

namespace needle_cuda {
namespace mm {

constexpr int BM = 128;       // rows of C per block
constexpr int BN = 128;       // columns of C per block
constexpr int BK = 16;        // depth of one step
constexpr int THREADS = 256;  // 16 x 16 threads, 8 x 8 outputs each
constexpr int APAD = 4;     // keeps transposed A stores at most 2-way conflicted, rows 16B-aligned
constexpr int GROUP_M = 8;  // tile rows per group in the block order, for L2 reuse of B

// This thread's share of the next A tile (two float4: a row and four consecutive k), zero
// outside the matrix. kVec: n % 4 == 0, so a float4 is either wholly inside or wholly outside.
template <bool kVec>
__device__ __forceinline__ void load_tile_a(const float* A, int m, int n, int row0, int k0,
                                            float4 (&ra)[2]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int idx = threadIdx.x + j * THREADS;
    const int gr = row0 + (idx >> 2), gk = k0 + ((idx & 3) << 2);
    const float* src = A + static_cast<int64_t>(gr) * n + gk;
    if (kVec) {
      ra[j] = (gr < m && gk < n) ? *reinterpret_cast<const float4*>(src)
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
    } else {
      const bool row_ok = gr < m;
      ra[j].x = (row_ok && gk + 0 < n) ? src[0] : 0.f;
      ra[j].y = (row_ok && gk + 1 < n) ? src[1] : 0.f;
      ra[j].z = (row_ok && gk + 2 < n) ? src[2] : 0.f;
      ra[j].w = (row_ok && gk + 3 < n) ? src[3] : 0.f;
    }
  }
}

// This thread's share of the next B tile (two float4: a k row and four consecutive columns).
// kVec: p % 4 == 0.
template <bool kVec>
__device__ __forceinline__ void load_tile_b(const float* B, int n, int p, int k0, int col0,
                                            float4 (&rb)[2]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int idx = threadIdx.x + j * THREADS;
    const int gk = k0 + (idx >> 5), gc = col0 + ((idx & 31) << 2);
    const float* src = B + static_cast<int64_t>(gk) * p + gc;
    if (kVec) {
      rb[j] = (gk < n && gc < p) ? *reinterpret_cast<const float4*>(src)
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
    } else {
      const bool k_ok = gk < n;
      rb[j].x = (k_ok && gc + 0 < p) ? src[0] : 0.f;
      rb[j].y = (k_ok && gc + 1 < p) ? src[1] : 0.f;
      rb[j].z = (k_ok && gc + 2 < p) ? src[2] : 0.f;
      rb[j].w = (k_ok && gc + 3 < p) ? src[3] : 0.f;
    }
  }
}

// Registers -> shared memory: A transposed (As[k][row]), B as is (Bs[k][col]).
__device__ __forceinline__ void store_tiles(float (*As)[BM + APAD], float (*Bs)[BN],
                                            const float4 (&ra)[2], const float4 (&rb)[2]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int idx = threadIdx.x + j * THREADS;
    const int r = idx >> 2, c = (idx & 3) << 2;
    As[c + 0][r] = ra[j].x;
    As[c + 1][r] = ra[j].y;
    As[c + 2][r] = ra[j].z;
    As[c + 3][r] = ra[j].w;
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int idx = threadIdx.x + j * THREADS;
    *reinterpret_cast<float4*>(&Bs[idx >> 5][(idx & 31) << 2]) = rb[j];
  }
}

// One 128x128 tile of C per block; grid = (tiles, 1, batch). Pointers are offset by the batch
// index times the matrix sizes. kVec requires n % 4 == 0 and p % 4 == 0 (16-byte rows).
template <bool kVec>
__global__ void __launch_bounds__(THREADS, 2)
    matmul_kernel(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                  int m, int n, int p) {
  __shared__ __align__(16) float As[2][BK][BM + APAD];
  __shared__ __align__(16) float Bs[2][BK][BN];

  const int64_t z = blockIdx.z;
  A += z * m * n;
  B += z * n * p;
  C += z * m * p;

  // Block order: groups of GROUP_M tile rows, walked column by column, so the blocks running
  // together share their B columns and A rows in L2.
  const int tiles_m = (m + BM - 1) / BM, tiles_n = (p + BN - 1) / BN;
  const int per_group = GROUP_M * tiles_n;
  const int group = blockIdx.x / per_group, in_group = blockIdx.x % per_group;
  const int first_m = group * GROUP_M;
  const int group_rows = min(tiles_m - first_m, GROUP_M);
  const int row0 = (first_m + in_group % group_rows) * BM;
  const int col0 = (in_group / group_rows) * BN;

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  }

  float4 ra[2], rb[2];
  const int k_tiles = (n + BK - 1) / BK;
  if (k_tiles > 0) {
    load_tile_a<kVec>(A, m, n, row0, 0, ra);
    load_tile_b<kVec>(B, n, p, 0, col0, rb);
    store_tiles(As[0], Bs[0], ra, rb);
    __syncthreads();
  }
  for (int t = 0; t < k_tiles; ++t) {
    const int cur = t & 1;
    const bool has_next = t + 1 < k_tiles;
    if (has_next) {  // issue the next step's global loads before computing this one
      load_tile_a<kVec>(A, m, n, row0, (t + 1) * BK, ra);
      load_tile_b<kVec>(B, n, p, (t + 1) * BK, col0, rb);
    }
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][k][ty * 4 + 64]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][k][tx * 4 + 64]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    // The other buffer was last read in step t-1, before the barrier that ended it.
    if (has_next) store_tiles(As[cur ^ 1], Bs[cur ^ 1], ra, rb);
    __syncthreads();
  }

  // acc[i][j] is C[row0 + rowof(i)][col0 + colof(j)], rowof(i) = ty*4 + i (+ 60 for i >= 4).
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = row0 + ty * 4 + (i < 4 ? i : 60 + i);
    if (r >= m) continue;
    float* crow = C + static_cast<int64_t>(r) * p;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = col0 + h * 64 + tx * 4;
      if (kVec) {
        if (c < p) {
          *reinterpret_cast<float4*>(crow + c) =
              make_float4(acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2], acc[i][h * 4 + 3]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (c + e < p) crow[c + e] = acc[i][h * 4 + e];
        }
      }
    }
  }
}

// The other dtypes (float64, int32, int64): a plain shared-memory tiling. A block of THREADS
// threads computes a 64x64 tile of C in steps of 16 along n; each thread owns 4x4 outputs 16
// rows/columns apart, so a warp reads 16 consecutive B values and broadcasts A values. Products
// accumulate with mul_add (fused for float64, wrapping for integers). Grid as matmul_kernel's.
constexpr int SM = 64;  // rows and columns of C per block
constexpr int SK = 16;  // depth of one step

template <typename T>
__global__ void __launch_bounds__(THREADS)
    matmul_simple_kernel(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int m,
                         int n, int p) {
  __shared__ T As[SK][SM + 1];  // As[k][row]; +1: the transposing stores hit distinct banks
  __shared__ T Bs[SK][SM];

  const int64_t z = blockIdx.z;
  A += z * m * n;
  B += z * n * p;
  C += z * m * p;
  const int tiles_n = (p + SM - 1) / SM;
  const int row0 = (blockIdx.x / tiles_n) * SM, col0 = (blockIdx.x % tiles_n) * SM;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  T acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  }
  for (int k0 = 0; k0 < n; k0 += SK) {
#pragma unroll
    for (int e = 0; e < SM * SK / THREADS; ++e) {  // 4 elements of each tile per thread
      const int idx = threadIdx.x + e * THREADS;
      const int ar = idx / SK, ak = idx % SK;  // A: along k, coalesced
      const int gr = row0 + ar, gk = k0 + ak;
      As[ak][ar] = (gr < m && gk < n) ? A[static_cast<int64_t>(gr) * n + gk] : T(0);
      const int bk = idx / SM, bc = idx % SM;  // B: along a row of B, coalesced
      const int hk = k0 + bk, gc = col0 + bc;
      Bs[bk][bc] = (hk < n && gc < p) ? B[static_cast<int64_t>(hk) * p + gc] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < SK; ++k) {
      T av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        av[i] = As[k][ty + 16 * i];
        bv[i] = Bs[k][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = mul_add(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = row0 + ty + 16 * i;
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = col0 + tx + 16 * j;
      if (c < p) C[static_cast<int64_t>(r) * p + c] = acc[i][j];
    }
  }
}

}  // namespace mm
}  // namespace needle_cuda
