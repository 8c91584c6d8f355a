// Vector types and vectorised exp, log and tanh for float32 and float64; part of the kernels
// compiled once per instruction set (isa.cpp includes it before kernels.h, inside each ISA's
// namespace, so it includes no headers and defines only static functions).
//
// SIMD is written with GCC/Clang vector extensions: 32-byte vectors of 8 floats or 4 doubles,
// which the compiler lowers to one AVX register, two SSE/NEON registers, whatever the target
// has. The polynomials are Cephes' minimax fits (~1 ulp); edge values (signed zeros, inf, NaN,
// denormals) give numpy's results.

typedef float vf __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef int64_t vl __attribute__((vector_size(32)));
typedef uint64_t vul __attribute__((vector_size(32)));
#define NDL_INLINE static inline __attribute__((always_inline))

// The vector of T (32 bytes) and its lanes.
template <class T> struct Lanes;
template <> struct Lanes<float> {
  using V = vf;
  static constexpr int64_t W = 8;
};
template <> struct Lanes<double> {
  using V = vd;
  static constexpr int64_t W = 4;
};

template <class V>
NDL_INLINE V vload(const void* p) {  // unaligned load
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
NDL_INLINE void vstore(void* p, V v) {
  __builtin_memcpy(p, &v, sizeof v);
}
NDL_INLINE vf splat(float x) { return vf{x, x, x, x, x, x, x, x}; }
NDL_INLINE vd splat(double x) { return vd{x, x, x, x}; }
NDL_INLINE vf as_f(vi v) { return reinterpret_cast<vf>(v); }  // bit casts
NDL_INLINE vi as_i(vf v) { return reinterpret_cast<vi>(v); }
NDL_INLINE vd as_d(vl v) { return reinterpret_cast<vd>(v); }
NDL_INLINE vl as_l(vd v) { return reinterpret_cast<vl>(v); }
template <class M, class V>
NDL_INLINE V select(M mask, V a, V b) {  // mask lanes: 0 or -1
  return mask ? a : b;
}

// ------------------------------------------------------------------------------ float32

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

// ------------------------------------------------------------------------------ float64

// exp: 2^n * (1 + 2 P(r^2) r / (Q(r^2) - P(r^2) r)), Cephes' rational fit (~1 ulp).
NDL_INLINE vd v_exp(vd x) {
  x = select(x > splat(709.79), splat(709.79), x);  // exp(709.79) overflows to inf below
  x = select(x < splat(-746.), splat(-746.), x);    // and exp(-746) underflows to 0
  const vd magic = splat(6755399441055744.);        // 1.5 * 2^52: adding it rounds to an integer
  const vd t = x * splat(1.4426950408889634074) + magic;
  vd n = t - magic;
  vd r = x - n * splat(6.93145751953125e-1) - n * splat(1.42860682030941723212e-6);
  vd rr = r * r;
  vd p = (splat(1.26177193074810590878e-4) * rr + splat(3.02994407707441961300e-2)) * rr +
         splat(9.99999999999999999910e-1);
  vd q = ((splat(3.00198505138664455042e-6) * rr + splat(2.52448340349684104192e-3)) * rr +
          splat(2.27265548208155028766e-1)) * rr + splat(2.00000000000000000009e0);
  p = p * r;
  vd e = splat(1.) + splat(2.) * p / (q - p);
  // n as an integer: the low bits of t's mantissa (AVX2 has no packed double-to-int64
  // conversion; __builtin_convertvector would go lane by lane).
  vl ni = as_l(t) - as_l(magic);
  vl n1 = ni >> 1, n2 = ni - n1;  // two factors keep 2^n in range at both ends
  vul b1 = __builtin_convertvector(n1 + 1023, vul) << 52;
  vul b2 = __builtin_convertvector(n2 + 1023, vul) << 52;
  return e * reinterpret_cast<vd>(b1) * reinterpret_cast<vd>(b2);
}

// log: frexp; for exponents within +-2, x - x^2/2 + x^3 P(x)/Q(x) around 1, else
// z + z^3 R(z^2)/S(z^2) with z = 2(m-1)/(m+1) (Cephes, ~1 ulp); both, then a select.
NDL_INLINE vd v_log(vd x) {
  vl denormal = x < splat(2.2250738585072014e-308);
  vd xs = select(denormal, x * splat(4503599627370496.), x);  // scale denormals by 2^52
  vl bits = as_l(xs);
  vl e = ((bits >> 52) & 0x7ff) - 1022 - (denormal & 52);
  vl far = (e > 2) | (e < -2);
  vd m = as_d((bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);  // in [0.5, 1)
  vl below = m < splat(0.70710678118654752440);
  const vd magic = splat(6755399441055744.);  // e + below (-1) to double through 1.5 * 2^52
  vd ef = as_d(e + below + as_l(magic)) - magic;
  // Near: x = m - 1 (or 2m - 1), log = x - x^2/2 + x^3 P(x)/Q(x) + e ln2.
  vd t = select(below, m + m, m) - splat(1.);
  vd tt = t * t;
  vd p = splat(1.01875663804580931796e-4);
  p = p * t + splat(4.97494994976747001425e-1);
  p = p * t + splat(4.70579119878881725854e0);
  p = p * t + splat(1.44989225341610930846e1);
  p = p * t + splat(1.79368678507819816313e1);
  p = p * t + splat(7.70838733755885391666e0);
  vd q = t + splat(1.12873587189167450590e1);
  q = q * t + splat(4.52279145837532221105e1);
  q = q * t + splat(8.29875266912776603211e1);
  q = q * t + splat(7.11544750618563894466e1);
  q = q * t + splat(2.31251620126765340583e1);
  vd y = t * (tt * p / q) - ef * splat(2.121944400546905827679e-4) - splat(0.5) * tt;
  vd near = t + y + ef * splat(0.693359375);
  // Far: z = 2 (m - 1) / (m + 1) (with m doubled when below), log = z + z^3 R(z^2)/S(z^2) + e ln2.
  vd num = select(below, m - splat(0.5), m - splat(1.));
  vd den = select(below, splat(0.5) * num + splat(0.5), splat(0.5) * m + splat(0.5));
  vd z = num / den;
  vd zz = z * z;
  vd r = (splat(-7.89580278884799154124e-1) * zz + splat(1.63866645699558079767e1)) * zz +
         splat(-6.41409952958715622951e1);
  vd s = ((zz + splat(-3.56722798256324312549e1)) * zz + splat(3.12093766372244180303e2)) * zz +
         splat(-7.69691943550460008604e2);
  vd w = z * (zz * r / s) - ef * splat(2.121944400546905827679e-4);
  vd farv = w + z + ef * splat(0.693359375);
  vd res = select(far, farv, near);
  const double inf = __builtin_inf();
  res = select(x == splat(0.), splat(-inf), res);
  res = select(x < splat(0.), splat(__builtin_nan("")), res);
  res = select(x == splat(inf), splat(inf), res);
  return select(x != x, x, res);  // NaN in, NaN out
}

// tanh: x + x^3 P(x^2)/Q(x^2) below 0.625 (Cephes), 1 - 2/(e^2|x| + 1) beyond.
NDL_INLINE vd v_tanh(vd x) {
  const vl top = as_l(splat(-0.));  // the sign bits
  vd ax = as_d(as_l(x) & ~top);
  vd s = x * x;
  vd p = (splat(-9.64399179425052238628e-1) * s + splat(-9.92877231001918586564e1)) * s +
         splat(-1.61468768441708447952e3);
  vd q = ((s + splat(1.12811678491632931402e2)) * s + splat(2.23548839060100448583e3)) * s +
         splat(4.84406305325125486048e3);
  vd small = x + x * s * (p / q);
  vd big = splat(1.) - splat(2.) / (v_exp(ax + ax) + splat(1.));
  vd r = select(ax < splat(0.625), small, big);
  return as_d((as_l(r) & ~top) | (as_l(x) & top));  // |r| with the sign of x
}
