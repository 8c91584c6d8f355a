// Loop bodies of needle-cpu, compiled once per instruction set.
//
// isa.cpp includes vmath.h and this file inside `namespace isa_base` (the compiler's baseline:
// SSE2 on x86-64, NEON on aarch64) and, on x86-64, again inside `namespace isa_avx2` under
// `#pragma GCC target("avx2,fma")`; a table of function pointers picks one at import from
// what the running CPU supports. So the file includes no headers and defines only templates
// and `static` functions. Each kernel is a template over the element type: float32 and
// float64 go through 32-byte vectors (vmath.h), integers through plain loops the compiler
// vectorizes, with wrapping arithmetic as numpy's. The ops come from oplist.h's lists.

constexpr int64_t kStreamBytes = 1 << 20;  // stream results of at least this many bytes

template <class T>
constexpr bool kFloat = std::is_floating_point_v<T>;

// Stores of results bigger than the caches bypass them (no read of the old line first):
// a third less memory traffic. p must be 32-byte aligned; fence() before others read.
#if NDL_ISA_AVX2  // set by the includer: the target pragma does not define __AVX__
template <class V>
NDL_INLINE void vstream(void* p, V v) {
  __m256 bits;
  __builtin_memcpy(&bits, &v, sizeof bits);
  _mm256_stream_ps(static_cast<float*>(p), bits);
}
NDL_INLINE void fence() { _mm_sfence(); }
#else
template <class V>
NDL_INLINE void vstream(void* p, V v) {
  vstore(p, v);
}
NDL_INLINE void fence() {}
#endif

// ------------------------------------------------------------------------------ maps

// out[i] = f(a[i]): whole vectors, then a zero-padded last partial vector; f maps vectors of T
// to vectors of T. Integers: a plain loop.
template <class T, class F>
NDL_INLINE void map1(const T* __restrict a, T* __restrict out, int64_t n, F f) {
  if constexpr (!kFloat<T>) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i]);
  } else {
    using V = typename Lanes<T>::V;
    constexpr int64_t W = Lanes<T>::W;
    const int64_t whole = n - n % W, pairs = n - n % (2 * W);  // bounds known before the loops
    int64_t i = 0;
    if (n * int64_t(sizeof(T)) >= kStreamBytes && (reinterpret_cast<uintptr_t>(out) & 31) == 0) {
      for (; i < whole; i += W) vstream(out + i, f(vload<V>(a + i)));
      fence();
    }
    for (; i < pairs; i += 2 * W) {
      vstore(out + i, f(vload<V>(a + i)));
      vstore(out + i + W, f(vload<V>(a + i + W)));
    }
    for (; i < whole; i += W) vstore(out + i, f(vload<V>(a + i)));
    if (i < n) {
      T ta[W] = {}, to[W];
      for (int64_t j = 0; j < n - i; ++j) ta[j] = a[i + j];
      vstore(to, f(vload<V>(ta)));
      for (int64_t j = 0; j < n - i; ++j) out[i + j] = to[j];
    }
  }
}

template <class T, class F>
NDL_INLINE void map2(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t n,
                     F f) {
  if constexpr (!kFloat<T>) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else {
    using V = typename Lanes<T>::V;
    constexpr int64_t W = Lanes<T>::W;
    const int64_t whole = n - n % W, pairs = n - n % (2 * W);
    int64_t i = 0;
    if (n * int64_t(sizeof(T)) >= kStreamBytes && (reinterpret_cast<uintptr_t>(out) & 31) == 0) {
      for (; i < whole; i += W) vstream(out + i, f(vload<V>(a + i), vload<V>(b + i)));
      fence();
    }
    for (; i < pairs; i += 2 * W) {
      vstore(out + i, f(vload<V>(a + i), vload<V>(b + i)));
      vstore(out + i + W, f(vload<V>(a + i + W), vload<V>(b + i + W)));
    }
    for (; i < whole; i += W) vstore(out + i, f(vload<V>(a + i), vload<V>(b + i)));
    if (i < n) {
      T ta[W] = {}, tb[W] = {}, to[W];
      for (int64_t j = 0; j < n - i; ++j) ta[j] = a[i + j], tb[j] = b[i + j];
      vstore(to, f(vload<V>(ta), vload<V>(tb)));
      for (int64_t j = 0; j < n - i; ++j) out[i + j] = to[j];
    }
  }
}

// A scalar as the maps' functions see it: a vector of it (floats) or itself (integers).
template <class T>
NDL_INLINE auto broadcast(T s) {
  if constexpr (kFloat<T>) return splat(s);
  else return s;
}

// ------------------------------------------------------------------------------ ops

// Each op of oplist.h as a function of two vectors (floats) or two integers. Integer sums and
// products wrap as numpy's (computed unsigned: signed overflow is undefined in C++).
template <class V>
using Unsigned = std::make_unsigned_t<V>;

struct op_add {
  template <class V>
  V operator()(V x, V y) const {
    if constexpr (std::is_integral_v<V>) return V(Unsigned<V>(x) + Unsigned<V>(y));
    else return x + y;
  }
};
struct op_mul {
  template <class V>
  V operator()(V x, V y) const {
    if constexpr (std::is_integral_v<V>) return V(Unsigned<V>(x) * Unsigned<V>(y));
    else return x * y;
  }
};
struct op_div {  // floats only: elementwise.cpp refuses integer handles
  template <class V>
  V operator()(V x, V y) const {
    if constexpr (std::is_integral_v<V>) return x;
    else return x / y;
  }
};
// numpy's maximum: NaN wins, and a tie (-0 and +0) gives y, as numpy's SIMD loops do.
struct op_maximum {
  template <class V>
  V operator()(V x, V y) const {
    if constexpr (std::is_integral_v<V>) return x > y ? x : y;
    else return select((x > y) | (x != x), x, y);
  }
};
// x^y of two elements (never vectors: see run2): libm's pow for floats; integers by
// squaring, wrapping (elementwise.cpp refuses y < 0).
template <class T>
NDL_INLINE T ipow(T x, T y) {
  Unsigned<T> r = 1, b = Unsigned<T>(x);
  for (Unsigned<T> e = Unsigned<T>(y); e != 0; e >>= 1, b *= b)
    if (e & 1) r *= b;
  return T(r);
}
struct op_power {
  template <class T>
  T operator()(T x, T y) const {
    if constexpr (std::is_integral_v<T>) return ipow(x, y);
    else return std::pow(x, y);
  }
};
// Comparisons of two elements (see compare): with NaN all are false but ne, as IEEE (and
// numpy) compare.
struct op_eq {
  template <class V>
  auto operator()(V x, V y) const { return x == y; }
};
struct op_ne {
  template <class V>
  auto operator()(V x, V y) const { return x != y; }
};
struct op_ge {
  template <class V>
  auto operator()(V x, V y) const { return x >= y; }
};
struct op_gt {
  template <class V>
  auto operator()(V x, V y) const { return x > y; }
};
struct op_le {
  template <class V>
  auto operator()(V x, V y) const { return x <= y; }
};
struct op_lt {
  template <class V>
  auto operator()(V x, V y) const { return x < y; }
};
struct op_log {
  template <class V>
  V operator()(V x) const { return v_log(x); }
};
struct op_exp {
  template <class V>
  V operator()(V x) const { return v_exp(x); }
};
struct op_tanh {
  template <class V>
  V operator()(V x) const { return v_tanh(x); }
};

// ------------------------------------------------------------------------------ kernels

// One op over whole arrays: through the vector maps, except pow, a libm call per element,
// which goes element by element (called per lane, it would spill the vector around each call).
template <class F, class T>
NDL_INLINE void run2(F f, const T* a, const T* b, T* out, int64_t n) {
  map2(a, b, out, n, f);
}
template <class T>
NDL_INLINE void run2(op_power f, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

template <class T>
static void binary(int op, const T* a, const T* b, T* out, int64_t n) {
#define NDL_CASE(name) \
  case needle_cpu::Arith::name: return run2(op_##name(), a, b, out, n);
  switch (needle_cpu::Arith(op)) { NDL_ARITHMETIC(NDL_CASE) }
#undef NDL_CASE
}

// x^s with numpy's shortcuts for a scalar exponent: x*x for 2 and sqrt for 0.5 (these differ
// from pow at -0.0 and -inf), x for 1, 1/x for -1.
template <class T>
static void scalar_power(const T* a, T s, T* out, int64_t n) {
  if constexpr (kFloat<T>) {
    using V = typename Lanes<T>::V;
    auto lanes = [](V x, auto f) {
      for (int j = 0; j < int(Lanes<T>::W); ++j) x[j] = f(x[j]);
      return x;
    };
    if (s == T(2)) return map1(a, out, n, [](V x) { return x * x; });
    if (s == T(1)) return map1(a, out, n, [](V x) { return x; });
    if (s == T(-1)) return map1(a, out, n, [](V x) { return broadcast(T(1)) / x; });
    if (s == T(0.5))  // the compiler vectorizes this sqrt (not pow)
      return map1(a, out, n, [&](V x) { return lanes(x, [](T v) { return std::sqrt(v); }); });
  }
  for (int64_t i = 0; i < n; ++i) out[i] = op_power()(a[i], s);  // element by element: run2
}

template <class F, class T>
NDL_INLINE void run1(F f, const T* a, T s, T* out, int64_t n) {
  const auto v = broadcast(s);
  map1(a, out, n, [f, v](auto x) { return f(x, v); });
}
template <class T>
NDL_INLINE void run1(op_power, const T* a, T s, T* out, int64_t n) {
  scalar_power(a, s, out, n);
}

template <class T>
static void scalar(int op, const T* a, T s, T* out, int64_t n) {
#define NDL_CASE(name) \
  case needle_cpu::Arith::name: return run1(op_##name(), a, s, out, n);
  switch (needle_cpu::Arith(op)) { NDL_ARITHMETIC(NDL_CASE) }
#undef NDL_CASE
}

// Comparisons write bytes through plain loops: the compiler vectorizes them with packs, 4-6x
// faster than narrowing vector masks to bytes (which GCC 12 does lane by lane).
template <class T>
static void compare(int op, const T* __restrict a, const T* __restrict b,
                    uint8_t* __restrict out, int64_t n) {
#define NDL_CASE(name)                                                        \
  case needle_cpu::Cmp::name:                                                 \
    for (int64_t i = 0; i < n; ++i) out[i] = uint8_t(op_##name()(a[i], b[i])); \
    return;
  switch (needle_cpu::Cmp(op)) { NDL_COMPARE(NDL_CASE) NDL_SCALAR_COMPARE(NDL_CASE) }
#undef NDL_CASE
}

template <class T>
static void scalar_compare(int op, const T* __restrict a, T s, uint8_t* __restrict out,
                           int64_t n) {
#define NDL_CASE(name)                                                    \
  case needle_cpu::Cmp::name:                                             \
    for (int64_t i = 0; i < n; ++i) out[i] = uint8_t(op_##name()(a[i], s)); \
    return;
  switch (needle_cpu::Cmp(op)) { NDL_COMPARE(NDL_CASE) NDL_SCALAR_COMPARE(NDL_CASE) }
#undef NDL_CASE
}

template <class T>
static void unary(int op, const T* a, T* out, int64_t n) {
  if constexpr (kFloat<T>) {
#define NDL_CASE(name) \
  case needle_cpu::Unary::name: return map1(a, out, n, op_##name());
    switch (needle_cpu::Unary(op)) { NDL_UNARY(NDL_CASE) }
#undef NDL_CASE
  }
}

// ------------------------------------------------------------------------------ reductions

// Sum of n values: four vector accumulators (32 partial sums of float32, 16 of float64); the
// caller combines blocks in double. Integers: one wrapping sum (exact modulo 2^bits).
template <class T>
static T sum_block(const T* a, int64_t n) {
  if constexpr (!kFloat<T>) {
    Unsigned<T> s = 0;
    for (int64_t i = 0; i < n; ++i) s += Unsigned<T>(a[i]);
    return T(s);
  } else {
    using V = typename Lanes<T>::V;
    constexpr int64_t W = Lanes<T>::W;
    V s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      s0 += vload<V>(a + i);
      s1 += vload<V>(a + i + W);
      s2 += vload<V>(a + i + 2 * W);
      s3 += vload<V>(a + i + 3 * W);
    }
    for (; i + W <= n; i += W) s0 += vload<V>(a + i);
    s0 = (s0 + s1) + (s2 + s3);
    T s = 0;
    for (int j = 0; j < W; ++j) s += s0[j];
    for (; i < n; ++i) s += a[i];
    return s;
  }
}

// out = exp(a + shift) and the sum of out, in one pass: the values and the order of the sum
// are those of scalar add, then exp (map1), then sum_block, so the bits are too (a softmax
// row read once instead of three times). Float dtypes only.
template <class T>
static T exp_shift_sum(const T* a, T shift, T* out, int64_t n) {
  if constexpr (!kFloat<T>) {
    for (int64_t i = 0; i < n; ++i) out[i] = T(0);
    return T(0);
  } else {
    using V = typename Lanes<T>::V;
    constexpr int64_t W = Lanes<T>::W;
    const V vs = broadcast(shift);
    const op_exp ex;
    V s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const V e0 = ex(vload<V>(a + i) + vs), e1 = ex(vload<V>(a + i + W) + vs);
      const V e2 = ex(vload<V>(a + i + 2 * W) + vs), e3 = ex(vload<V>(a + i + 3 * W) + vs);
      vstore(out + i, e0), vstore(out + i + W, e1);
      vstore(out + i + 2 * W, e2), vstore(out + i + 3 * W, e3);
      s0 += e0, s1 += e1, s2 += e2, s3 += e3;
    }
    for (; i + W <= n; i += W) {
      const V e0 = ex(vload<V>(a + i) + vs);
      vstore(out + i, e0);
      s0 += e0;
    }
    if (i < n) {  // the tail through one padded vector, as map1 does
      T ta[W] = {}, to[W];
      for (int64_t j = 0; j < n - i; ++j) ta[j] = a[i + j];
      vstore(to, ex(vload<V>(ta) + vs));
      for (int64_t j = 0; j < n - i; ++j) out[i + j] = to[j];
    }
    s0 = (s0 + s1) + (s2 + s3);
    T s = 0;
    for (int j = 0; j < W; ++j) s += s0[j];
    for (; i < n; ++i) s += out[i];
    return s;
  }
}

template <class T>
NDL_INLINE T max1(T m, T x) {  // NaN wins
  if constexpr (kFloat<T>) return (x >= m || x != x) ? x : m;
  else return x > m ? x : m;
}

template <class T>
static T max_block(const T* a, int64_t n) {  // four accumulators hide the latency
  T m = a[0];
  int64_t i = 0;
  if constexpr (kFloat<T>) {
    using V = typename Lanes<T>::V;
    constexpr int64_t W = Lanes<T>::W;
    const op_maximum vmax;
    if (n >= 4 * W) {
      V m0 = vload<V>(a), m1 = vload<V>(a + W), m2 = vload<V>(a + 2 * W), m3 = vload<V>(a + 3 * W);
      for (i = 4 * W; i + 4 * W <= n; i += 4 * W) {
        m0 = vmax(m0, vload<V>(a + i));
        m1 = vmax(m1, vload<V>(a + i + W));
        m2 = vmax(m2, vload<V>(a + i + 2 * W));
        m3 = vmax(m3, vload<V>(a + i + 3 * W));
      }
      m0 = vmax(vmax(m0, m1), vmax(m2, m3));
      m = m0[0];
      for (int j = 1; j < W; ++j) m = max1(m, m0[j]);
    }
  }
  for (; i < n; ++i) m = max1(m, a[i]);
  return m;
}

// ------------------------------------------------------------------------------ tiles

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

// Copy an n0 x n1 strided block of U (the bits of any dtype of that width) in 32 x 32 tiles,
// so both sides stay in cache (transposes); 4-byte elements go 8 x 8 through registers.
template <class U>
static void copy2d(const U* src, U* dst, int64_t n0, int64_t n1, int64_t s0, int64_t s1,
                   int64_t d0, int64_t d1) {
  constexpr int64_t T = 32;
  for (int64_t i0 = 0; i0 < n0; i0 += T) {
    int64_t e0 = i0 + T < n0 ? i0 + T : n0;
    for (int64_t j0 = 0; j0 < n1; j0 += T) {
      int64_t e1 = j0 + T < n1 ? j0 + T : n1;
      if (sizeof(U) == 4 && e0 - i0 == T && e1 - j0 == T && s0 == 1 && d1 == 1) {
        for (int64_t j = j0; j < e1; j += 8) {
          for (int64_t i = i0; i < e0; i += 8) {  // moves bits: no arithmetic on them
            vf r[8];
            for (int k = 0; k < 8; ++k) r[k] = vload<vf>(src + i + (j + k) * s1);
            transpose8(r);
            for (int q = 0; q < 8; ++q) vstore(dst + (i + q) * d0 + j, r[q]);
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
      for (int v = 0; v < V; ++v) b[v] = vload<vf>(Bs + k * ldb + v * 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        vf x = splat(rows[r][k]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += x * b[v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) vstore(C + r * ldc + v * 8, acc[r][v]);
}

template <int R>
NDL_INLINE void gemm_rows(const float* const* a, int64_t nseg, int64_t seg, const float* B,
                          float* C, int64_t N) {
  int64_t j = 0;
  for (; j + 16 <= N; j += 16) gemm_tile<R, 2>(a, nseg, seg, B + j, N, C + j, N);
  for (; j + 8 <= N; j += 8) gemm_tile<R, 1>(a, nseg, seg, B + j, N, C + j, N);
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

// Rows [i0, i1) of C (m x p) = A (m x n) @ B (n x p) for integers, exact modulo 2^bits as
// numpy's: blocks of 128 k by 512 columns keep B's block in L2 while each row of C gathers it.
template <class T>
static void igemm_rows(const T* a, const T* b, T* c, int64_t i0, int64_t i1, int64_t n,
                       int64_t p) {
  using U = Unsigned<T>;
  constexpr int64_t KB = 128, JB = 512;
  for (int64_t j0 = 0; j0 < p; j0 += JB) {
    const int64_t j1 = j0 + JB < p ? j0 + JB : p;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) c[i * p + j] = 0;
    for (int64_t k0 = 0; k0 < n; k0 += KB) {
      const int64_t k1 = k0 + KB < n ? k0 + KB : n;
      for (int64_t i = i0; i < i1; ++i) {
        U* __restrict ci = reinterpret_cast<U*>(c + i * p);
        for (int64_t k = k0; k < k1; ++k) {
          const U x = U(a[i * n + k]);
          const U* __restrict bk = reinterpret_cast<const U*>(b + k * p);
          for (int64_t j = j0; j < j1; ++j) ci[j] += x * bk[j];
        }
      }
    }
  }
}
