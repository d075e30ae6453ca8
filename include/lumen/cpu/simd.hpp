// cpu/simd.hpp: which instruction sets the CPU kernels are compiled for, and the few arithmetic
// conventions that every kernel path (portable scalar, AVX2, WebAssembly SIMD128) shares so that
// they give the same bits.
//
// The choice is made at compile time from the compiler's target macros:
//   LUMEN_CPU_HAVE_AVX2   __AVX2__ && __F16C__ (e.g. -march=native on a Haswell, Zen or later CPU,
//                         or -march=x86-64-v3); the AVX2 kernels are compiled in.
//   LUMEN_CPU_HAVE_VNNI   AVX-VNNI or AVX-512 VNNI+VL: the AVX2 integer dot products use vpdpbusd
//                         (unless LUMEN_NO_VNNI is defined; the results are the same either way).
//   LUMEN_CPU_HAVE_AVX512 also AVX-512 F+BW+VL+VNNI and LUMEN_CPU_HAVE_VNNI (e.g. Ice Lake, Zen 4
//                         and later): Q8_0, Q4_0 and Q6_K weights repacked into 16-row groups,
//                         a row per 32-bit lane (matmul_packed.hpp, matmul_packed_q6_k.hpp;
//                         unrepacked: Q8_0/Q4_0 two rows per 512-bit register, matmul_avx512.hpp,
//                         Q6_K two blocks per register, matmul_kquants.hpp), unless
//                         LUMEN_NO_AVX512 is defined.
//   LUMEN_CPU_HAVE_WASM   __wasm_simd128__ (em++ -msimd128).
//   LUMEN_CPU_HAVE_WASM_RELAXED  also __wasm_relaxed_simd__ and LUMEN_WASM_RELAXED_DOT (the web
//                         build's relaxed flavours: em++ -mrelaxed-simd, and a post-link step that
//                         puts in the 8-bit dot product clang 14 cannot emit; see matmul_wasm.hpp).
// The portable scalar kernels are always compiled. Defining LUMEN_FORCE_SCALAR before including
// lumen makes the scalar kernels the active ones (the tests use it to keep that path tested).
//
// Shared conventions (the tests hold every path to them):
//   madd(a, b, c)   a * b + c, the product rounded before the add (no FMA anywhere, see below);
//   reduce8(v)      the 8 lanes summed as ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)).
// So the scalar, AVX2 and WebAssembly kernels give the same bits, and a model gives the same
// logits natively and in the browser. (Unfused costs nothing measurable here: the kernels are
// bound by loads, conversions and integer work, not by the FMA units.)
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__F16C__)
#define LUMEN_CPU_HAVE_AVX2 1
#include <immintrin.h>
#if !defined(LUMEN_NO_VNNI) && (defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__)))
#define LUMEN_CPU_HAVE_VNNI 1
#endif
#if defined(LUMEN_CPU_HAVE_VNNI) && !defined(LUMEN_NO_AVX512) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define LUMEN_CPU_HAVE_AVX512 1
#endif
#endif

#if defined(__wasm_simd128__)
#define LUMEN_CPU_HAVE_WASM 1
#include <wasm_simd128.h>
#if defined(__wasm_relaxed_simd__) && defined(LUMEN_WASM_RELAXED_DOT)
#define LUMEN_CPU_HAVE_WASM_RELAXED 1
#endif
#endif

// LUMEN_UNROLL before a loop of a constant, small trip count: unrolled, so that arrays of vectors
// indexed by its counter stay in registers (GCC 12 otherwise kept the repacked kernels' weight
// vectors on the stack and ran their 4-step loops as loops: stories110M Q4_0 generation 25% slower
// with AVX-512, 30% with AVX2).
#if defined(__clang__)
#define LUMEN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LUMEN_UNROLL _Pragma("GCC unroll 16")
#else
#define LUMEN_UNROLL
#endif

namespace lumen::cpu {

// The instruction set of the active kernels, for messages and benchmark tables.
constexpr const char* simd_name() {
#if defined(LUMEN_FORCE_SCALAR)
    return "scalar (forced)";
#elif defined(LUMEN_CPU_HAVE_AVX512)
    return "AVX2+AVX512-VNNI";
#elif defined(LUMEN_CPU_HAVE_AVX2) && defined(LUMEN_CPU_HAVE_VNNI)
    return "AVX2+VNNI";
#elif defined(LUMEN_CPU_HAVE_AVX2)
    return "AVX2";
#elif defined(LUMEN_CPU_HAVE_WASM_RELAXED)
    return "WASM SIMD128+relaxed dot";
#elif defined(LUMEN_CPU_HAVE_WASM)
    return "WASM SIMD128";
#else
    return "scalar";
#endif
}

// p, as a float the compiler must have rounded: a product passed through it is never fused with a
// following add into an FMA (GCC and Clang may otherwise fuse on x86 FMA targets: GCC's vectorizer
// even forms vfmaddsub under -ffp-contract=off).
inline float rounded(float p) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__FMA__)
    __asm__("" : "+x"(p));
#endif
    return p;
}

// a * b + c with the product rounded to float first, never fused into one FMA: fused and unfused
// results differ in the last bit, and WebAssembly has no FMA, so every path computes unfused to
// give the same bits everywhere.
inline float madd(float a, float b, float c) { return rounded(a * b) + c; }

// ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))
inline float reduce8(const float* v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

#if defined(LUMEN_CPU_HAVE_AVX2)
namespace avx2 {

// madd on 8 lanes: a * b + c, unfused.
inline __m256 madd(__m256 a, __m256 b, __m256 c) { return _mm256_add_ps(_mm256_mul_ps(a, b), c); }

// reduce8 of one vector's lanes, in the same order.
inline float reduce8(__m256 v) {
    const __m256 h = _mm256_hadd_ps(v, v);   // [v0+v1, v2+v3, ., . | v4+v5, v6+v7, ., .]
    const __m256 h2 = _mm256_hadd_ps(h, h);  // [(v0+v1)+(v2+v3), ... | (v4+v5)+(v6+v7), ...]
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(h2), _mm256_extractf128_ps(h2, 1)));
}

// Eight vectors of int32 -> one vector whose lane i is the sum of the lanes of v[i] (exact): a
// transpose by unpacks with the adds on the way (cheaper than vphaddd, which is 3 uops).
inline __m256i sum_lanes_8(const __m256i v[8]) {
    auto pair32 = [](__m256i x, __m256i y) {  // [x0+x2, y0+y2, x1+x3, y1+y3 | the same for lanes 4-7]
        return _mm256_add_epi32(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y));
    };
    auto pair64 = [](__m256i x, __m256i y) {  // [x0+x1, x2+x3, y0+y1, y2+y3 | ...] on 64-bit pairs
        return _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
    };
    const __m256i a = pair64(pair32(v[0], v[1]), pair32(v[2], v[3]));  // [s0 s1 s2 s3 | s0 s1 s2 s3], halves
    const __m256i b = pair64(pair32(v[4], v[5]), pair32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

// The sum of the 8 int32 lanes of v.
inline int32_t sum_lanes(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

// Lane i (of 8) = sum over bytes 4i..4i+3 of u[k] * s[k], u unsigned, s signed; exact as long as
// no pair u[2j] s[2j] + u[2j+1] s[2j+1] leaves the int16 range (true for every caller).
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(LUMEN_CPU_HAVE_VNNI) && defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#elif defined(LUMEN_CPU_HAVE_VNNI)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

}  // namespace avx2
#endif

#if defined(LUMEN_CPU_HAVE_WASM)
namespace wasm128 {

// The sum of the 4 int32 lanes of v.
inline int32_t sum_lanes(v128_t v) {
    return wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 1) + wasm_i32x4_extract_lane(v, 2) +
           wasm_i32x4_extract_lane(v, 3);
}

}  // namespace wasm128
#endif

}  // namespace lumen::cpu
