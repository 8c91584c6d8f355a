// Loop bodies of needle-cpu, compiled once per instruction set.
//
// isa.cpp includes this file inside `namespace isa_base` (the compiler's baseline:
// SSE2 on x86-64, NEON on aarch64) and, on x86-64, again inside `namespace isa_avx2` under
// `#pragma GCC target("avx2,fma")`; a table of function pointers picks one at import from
// what the running CPU supports. So the file includes no headers and defines only
// `static` functions. SIMD is written with GCC/Clang vector extensions: the compiler lowers
// an 8-float vector to one AVX register, two SSE/NEON registers, whatever the target has.

typedef float vf __attribute__((vector_size(32)));
typedef int vi __attribute__((vector_size(32)));
#define NDL_INLINE static inline __attribute__((always_inline))
constexpr int64_t W = 8;                // floats per vector
constexpr int64_t kStream = 1 << 18;  // stream results of at least this many floats per chunk

NDL_INLINE vf vload(const float* p) {  // unaligned load
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
NDL_INLINE void vstore(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

// Stores of results bigger than the caches bypass them (no read of the old line first):
// a third less memory traffic. p must be 32-byte aligned; fence() before others read.
#if NDL_ISA_AVX2  // set by the includer: the target pragma does not define __AVX__
NDL_INLINE void vstream(float* p, vf v) { _mm256_stream_ps(p, reinterpret_cast<__m256>(v)); }
NDL_INLINE void fence() { _mm_sfence(); }
#else
NDL_INLINE void vstream(float* p, vf v) { vstore(p, v); }
NDL_INLINE void fence() {}
#endif
NDL_INLINE vf splat(float x) { return vf{x, x, x, x, x, x, x, x}; }
NDL_INLINE vf as_f(vi v) { return reinterpret_cast<vf>(v); }  // bit casts
NDL_INLINE vi as_i(vf v) { return reinterpret_cast<vi>(v); }
NDL_INLINE vf select(vi mask, vf a, vf b) { return mask ? a : b; }  // mask lanes: 0 or -1

// exp: 2^n * p(r), x = n ln2 + r, |r| <= ln2/2, Cephes' minimax polynomial (~1 ulp).
NDL_INLINE vf v_exp(vf x) {
  x = select(x > splat(88.8f), splat(88.8f), x);    // exp(88.8) overflows to inf below
  x = select(x < splat(-104.f), splat(-104.f), x);  // and exp(-104) underflows to 0
  const vf magic = splat(12582912.f);               // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  vf r = x - n * splat(0.693359375f) + n * splat(2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.f);
  vi ni = __builtin_convertvector(n, vi);
  vi n1 = ni >> 1, n2 = ni - n1;  // two factors keep 2^n in range at both ends (denormals, inf)
  return p * as_f((n1 + 127) << 23) * as_f((n2 + 127) << 23);
}

// log: frexp, then Cephes' polynomial on the mantissa around 1 (~1 ulp).
NDL_INLINE vf v_log(vf x) {
  vi denormal = x < splat(1.17549435e-38f);
  vf xs = select(denormal, x * splat(8388608.f), x);  // scale denormals by 2^23
  vi bits = as_i(xs);
  vi e = ((bits >> 23) & 0xff) - 126 - (denormal & 23);
  vf m = as_f((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  vf ef = __builtin_convertvector(e, vf);
  vi below = m < splat(0.707106781186547524f);
  ef = select(below, ef - splat(1.f), ef);
  m = select(below, m + m, m) - splat(1.f);
  vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m - splat(1.1514610310e-1f);
  y = y * m + splat(1.1676998740e-1f);
  y = y * m - splat(1.2420140846e-1f);
  y = y * m + splat(1.4249322787e-1f);
  y = y * m - splat(1.6668057665e-1f);
  y = y * m + splat(2.0000714765e-1f);
  y = y * m - splat(2.4999993993e-1f);
  y = y * m + splat(3.3333331174e-1f);
  y = y * m * z;
  y = y - ef * splat(2.12194440e-4f) - splat(0.5f) * z;
  vf res = m + y + ef * splat(0.693359375f);
  const float inf = __builtin_inff();
  res = select(x == splat(0.f), splat(-inf), res);
  res = select(x < splat(0.f), splat(__builtin_nanf("")), res);
  res = select(x == splat(inf), splat(inf), res);
  return select(x != x, x, res);  // NaN in, NaN out
}

// tanh: odd polynomial near 0 (keeps relative accuracy), 1 - 2/(e^2|x| + 1) beyond.
NDL_INLINE vf v_tanh(vf x) {
  vf ax = as_f(as_i(x) & 0x7fffffff);
  vf z = x * x;
  vf p = splat(-5.70498872745e-3f);
  p = p * z + splat(2.06390887954e-2f);
  p = p * z - splat(5.37397155531e-2f);
  p = p * z + splat(1.33314422036e-1f);
  p = p * z - splat(3.33332819422e-1f);
  vf small = p * z * x + x;
  vf big = splat(1.f) - splat(2.f) / (v_exp(ax + ax) + splat(1.f));
  vf r = select(ax < splat(0.625f), small, big);
  // |r| with the sign of x: the polynomial gives +0 for -0, and big has no sign of its own.
  return as_f((as_i(r) & 0x7fffffff) | (as_i(x) & int(0x80000000)));
}

// Apply f to whole vectors, then to a zero-padded last partial vector.
template <class F>
NDL_INLINE void map1(const float* __restrict a, float* __restrict out, int64_t n, F f) {
  int64_t i = 0;
  if (n >= kStream && (reinterpret_cast<uintptr_t>(out) & 31) == 0) {
    for (; i + W <= n; i += W) vstream(out + i, f(vload(a + i)));
    fence();
  }
  for (; i + 2 * W <= n; i += 2 * W) {
    vstore(out + i, f(vload(a + i)));
    vstore(out + i + W, f(vload(a + i + W)));
  }
  for (; i + W <= n; i += W) vstore(out + i, f(vload(a + i)));
  if (i < n) {
    float ta[W] = {}, to[W];
    for (int64_t j = 0; j < n - i; ++j) ta[j] = a[i + j];
    vstore(to, f(vload(ta)));
    for (int64_t j = 0; j < n - i; ++j) out[i + j] = to[j];
  }
}

template <class F>
NDL_INLINE void map2(const float* __restrict a, const float* __restrict b, float* __restrict out,
                     int64_t n, F f) {
  int64_t i = 0;
  if (n >= kStream && (reinterpret_cast<uintptr_t>(out) & 31) == 0) {
    for (; i + W <= n; i += W) vstream(out + i, f(vload(a + i), vload(b + i)));
    fence();
  }
  for (; i + 2 * W <= n; i += 2 * W) {
    vstore(out + i, f(vload(a + i), vload(b + i)));
    vstore(out + i + W, f(vload(a + i + W), vload(b + i + W)));
  }
  for (; i + W <= n; i += W) vstore(out + i, f(vload(a + i), vload(b + i)));
  if (i < n) {
    float ta[W] = {}, tb[W] = {}, to[W];
    for (int64_t j = 0; j < n - i; ++j) ta[j] = a[i + j], tb[j] = b[i + j];
    vstore(to, f(vload(ta), vload(tb)));
    for (int64_t j = 0; j < n - i; ++j) out[i + j] = to[j];
  }
}

// numpy's maximum: NaN wins, and a tie (-0 and +0) gives b, as numpy's SIMD loops do.
NDL_INLINE vf v_max(vf a, vf b) { return select((a > b) | (a != a), a, b); }
NDL_INLINE vf v_bool(vi mask) { return as_f(mask & as_i(splat(1.f))); }     // 1.0 / 0.0

// One entry per elementwise kernel; `op` numbers them (see Op in ops.h).
static void binary(int op, const float* a, const float* b, float* out, int64_t n) {
  switch (op) {
    case 0: return map2(a, b, out, n, [](vf x, vf y) { return x + y; });
    case 1: return map2(a, b, out, n, [](vf x, vf y) { return x * y; });
    case 2: return map2(a, b, out, n, [](vf x, vf y) { return x / y; });
    case 3: return map2(a, b, out, n, [](vf x, vf y) { return v_max(x, y); });
    case 4: return map2(a, b, out, n, [](vf x, vf y) { return v_bool(x == y); });
    case 5: return map2(a, b, out, n, [](vf x, vf y) { return v_bool(x >= y); });
  }
}

static void scalar(int op, const float* a, float s, float* out, int64_t n) {
  vf v = splat(s);
  switch (op) {
    case 0: return map1(a, out, n, [v](vf x) { return x + v; });
    case 1: return map1(a, out, n, [v](vf x) { return x * v; });
    case 2: return map1(a, out, n, [v](vf x) { return x / v; });
    case 3: return map1(a, out, n, [v](vf x) { return v_max(x, v); });
    case 4: return map1(a, out, n, [v](vf x) { return v_bool(x == v); });
    case 5: return map1(a, out, n, [v](vf x) { return v_bool(x >= v); });
    case 6: return map1(a, out, n, [](vf x) { return x * x; });  // power 2
  }
}

static void unary(int op, const float* a, float* out, int64_t n) {
  switch (op) {
    case 0: return map1(a, out, n, [](vf x) { return v_log(x); });
    case 1: return map1(a, out, n, [](vf x) { return v_exp(x); });
    case 2: return map1(a, out, n, [](vf x) { return v_tanh(x); });
  }
}

NDL_INLINE float hsum(vf v) {
  float s = 0.f;
  for (int j = 0; j < W; ++j) s += v[j];
  return s;
}

// Sum of n floats with four vector accumulators (32 partial sums).
static float sum_block(const float* a, int64_t n) {
  vf s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 += vload(a + i);
    s1 += vload(a + i + W);
    s2 += vload(a + i + 2 * W);
    s3 += vload(a + i + 3 * W);
  }
  for (; i + W <= n; i += W) s0 += vload(a + i);
  float s = hsum((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) s += a[i];
  return s;
}

static float max_block(const float* a, int64_t n) {  // four accumulators hide the latency
  float m = a[0];
  int64_t i = 0;
  if (n >= 4 * W) {
    vf m0 = vload(a), m1 = vload(a + W), m2 = vload(a + 2 * W), m3 = vload(a + 3 * W);
    for (i = 4 * W; i + 4 * W <= n; i += 4 * W) {
      m0 = v_max(m0, vload(a + i));
      m1 = v_max(m1, vload(a + i + W));
      m2 = v_max(m2, vload(a + i + 2 * W));
      m3 = v_max(m3, vload(a + i + 3 * W));
    }
    m0 = v_max(v_max(m0, m1), v_max(m2, m3));
    m = m0[0];
    for (int j = 1; j < W; ++j) m = (m0[j] >= m || m0[j] != m0[j]) ? m0[j] : m;
  }
  for (; i < n; ++i) m = (a[i] >= m || a[i] != a[i]) ? a[i] : m;
  return m;
}

#if defined(__clang__) || __GNUC__ >= 12
#define NDL_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define NDL_SHUF(a, b, ...) __builtin_shuffle(a, b, vi{__VA_ARGS__})
#endif

// r[k] <- column k of the 8 x 8 matrix whose rows are r[0..7] (unpack, shuffle, swap halves).
NDL_INLINE void transpose8(vf* r) {
  vf t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = NDL_SHUF(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = NDL_SHUF(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = NDL_SHUF(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] = NDL_SHUF(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int q = 0; q < 4; ++q) {
    r[q] = NDL_SHUF(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[q + 4] = NDL_SHUF(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Copy an n0 x n1 strided block in 32 x 32 tiles, so both sides stay in cache (transposes).
static void copy2d(const float* src, float* dst, int64_t n0, int64_t n1, int64_t s0, int64_t s1,
                   int64_t d0, int64_t d1) {
  constexpr int64_t T = 32;
  for (int64_t i0 = 0; i0 < n0; i0 += T) {
    int64_t e0 = i0 + T < n0 ? i0 + T : n0;
    for (int64_t j0 = 0; j0 < n1; j0 += T) {
      int64_t e1 = j0 + T < n1 ? j0 + T : n1;
      if (e0 - i0 == T && e1 - j0 == T && s0 == 1 && d1 == 1) {  // the common transpose tile
        for (int64_t j = j0; j < e1; j += W) {
          for (int64_t i = i0; i < e0; i += W) {  // 8 x 8 through registers
            vf r[W];
            for (int k = 0; k < W; ++k) r[k] = vload(src + i + (j + k) * s1);
            transpose8(r);
            for (int q = 0; q < W; ++q) vstore(dst + (i + q) * d0 + j, r[q]);
          }
        }
        continue;
      }
      for (int64_t i = i0; i < e0; ++i)
        for (int64_t j = j0; j < e1; ++j) dst[i * d0 + j * d1] = src[i * s0 + j * s1];
    }
  }
}

// C (R x 8V) = A (R x K) @ B (K x 8V slice of a K x ldb matrix), where each row of A is
// `nseg` segments of `seg` floats found through pointers (row r, segment s at a[r * nseg + s]):
// a convolution reads its patches straight from the input that way, without im2col. R*V
// vector accumulators stay in registers through the whole K loop (6 x 2 fills the 16 AVX
// registers).
template <int R, int V>
NDL_INLINE void gemm_tile(const float* const* a, int64_t nseg, int64_t seg, const float* B,
                          int64_t ldb, float* C, int64_t ldc) {
  vf acc[R][V] = {};
  for (int64_t s = 0; s < nseg; ++s) {
    const float* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = a[r * nseg + s];
    const float* Bs = B + s * seg * ldb;
    for (int64_t k = 0; k < seg; ++k) {
      vf b[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) b[v] = vload(Bs + k * ldb + v * W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        vf x = splat(rows[r][k]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += x * b[v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
}

template <int R>
NDL_INLINE void gemm_rows(const float* const* a, int64_t nseg, int64_t seg, const float* B,
                          float* C, int64_t N) {
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W) gemm_tile<R, 2>(a, nseg, seg, B + j, N, C + j, N);
  for (; j + W <= N; j += W) gemm_tile<R, 1>(a, nseg, seg, B + j, N, C + j, N);
  for (; j < N; ++j)  // the last N % 8 columns
    for (int r = 0; r < R; ++r) {
      float acc = 0.f;
      for (int64_t s = 0; s < nseg; ++s)
        for (int64_t k = 0; k < seg; ++k) acc += a[r * nseg + s][k] * B[(s * seg + k) * N + j];
      C[r * N + j] = acc;
    }
}

// C (M x N) = A (M x nseg*seg, rows through pointers as above) @ B (nseg*seg x N), for a B
// that stays in L2, where OpenBLAS's packing and im2col would cost more than they save.
static void gemm_small_k(const float* const* a, int64_t M, int64_t nseg, int64_t seg,
                         const float* B, float* C, int64_t N) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) gemm_rows<6>(a + i * nseg, nseg, seg, B, C + i * N, N);
  for (; i < M; ++i) gemm_rows<1>(a + i * nseg, nseg, seg, B, C + i * N, N);
}
