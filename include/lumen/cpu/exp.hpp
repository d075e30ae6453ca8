// cpu/exp.hpp: exp of 8 floats at once, bit for bit what std::exp(float) returns on glibc, for the
// exponentials of SwiGLU and of attention's softmax (one expf call each cost a sixth of SwiGLU's time).
//
// glibc's expf (since 2.27; the ARM optimized-routines algorithm, the same as musl's) writes
// x / ln2 * 32 = k + r, |r| <= 1/2, and exp(x) = 2^(k/32) * 2^(r/32) with 2^(i/32) from a table of
// 32 doubles and 2^(r/32) a cubic in r, all in double precision, rounded to float once at the end.
// On a CPU with FMA glibc runs its FMA build (__expf_fma), whose fused steps exp8 takes over one
// for one (kd, r, the two polynomial steps and their sum; the constants and the table are glibc's).
// Inputs with |x| >= 88 or not a number (glibc's special cases: overflow, underflow, errno) go to
// std::exp itself. exp8 is there (LUMEN_CPU_HAVE_EXP8) on AVX2 + FMA builds against glibc. It gave
// std::exp's bits for every one of the 2.24 billion floats from -104 to 89 when it was written (glibc
// 2.36); tests/test_kernels.cpp checks every 97th of them and the special cases. Elsewhere the callers keep
// std::exp: other C libraries may round differently, and the kernels' results must not depend on
// the path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "simd.hpp"

#if defined(LUMEN_CPU_HAVE_AVX2) && defined(__FMA__) && defined(__GLIBC__) && !defined(LUMEN_FORCE_SCALAR)
#define LUMEN_CPU_HAVE_EXP8 1

namespace lumen::cpu::avx2 {

namespace exp_detail {
// glibc's __exp2f_data: 2^(i/32) as doubles, each less i << 47 (added back from k's bits)
alignas(64) inline constexpr uint64_t table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
inline constexpr double inv_ln2_32 = 0x1.71547652b82fep+5;  // 32 / ln 2
inline constexpr double shift = 0x1.8p+52;                  // adding it rounds to an integer
inline constexpr double c0 = 0x1.c6af84b912394p-20, c1 = 0x1.ebfce50fac4f3p-13, c2 = 0x1.62e42ff0c52d6p-6;

// the main path for 4 floats widened to doubles
inline __m128 exp4(__m256d xd) {
    __m256d kd = _mm256_fmadd_pd(_mm256_set1_pd(inv_ln2_32), xd, _mm256_set1_pd(shift));
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, _mm256_set1_pd(shift));
    const __m256d r = _mm256_fmsub_pd(_mm256_set1_pd(inv_ln2_32), xd, kd);
    const __m256i t = _mm256_add_epi64(
        _mm256_i64gather_epi64(reinterpret_cast<const long long*>(table), _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8),
        _mm256_slli_epi64(ki, 47));
    const __m256d z = _mm256_fmadd_pd(_mm256_set1_pd(c0), r, _mm256_set1_pd(c1));
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(c2), _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_castsi256_pd(t)));
}
}  // namespace exp_detail

// exp of each lane: the bits of std::exp(float) (glibc)
inline __m256 exp8(__m256 x) {
    const __m256 y = _mm256_set_m128(exp_detail::exp4(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))),
                                     exp_detail::exp4(_mm256_cvtps_pd(_mm256_castps256_ps128(x))));
    // glibc's special cases: (bits >> 20) & 0x7ff above that of 88.0f (|x| >= 88, infinities, NaN)
    const __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
    const int special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a))));
    if (special == 0) return y;
    alignas(32) float in[8], out[8];
    _mm256_store_ps(in, x);
    _mm256_store_ps(out, y);
    for (int i = 0; i < 8; ++i)
        if (special & (1 << i)) out[i] = std::exp(in[i]);
    return _mm256_load_ps(out);
}

}  // namespace lumen::cpu::avx2

#endif

namespace lumen::cpu {

// x (n,) <- exp(x - m), in place: std::exp's bits, 8 at a time where exp8 is there.
inline void exp_minus(float* x, int64_t n, float m) {
    int64_t vectorised = 0;
#if defined(LUMEN_CPU_HAVE_EXP8)
    vectorised = n / 8 * 8;
    const __m256 mv = _mm256_set1_ps(m);
    for (int64_t i = 0; i < vectorised; i += 8) _mm256_storeu_ps(x + i, avx2::exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
#endif
    for (int64_t i = vectorised; i < n; ++i) x[i] = std::exp(x[i] - m);
}

}  // namespace lumen::cpu
