// cpu/quantize_activations.hpp: activations rounded to 8-bit blocks on the fly, once per matrix
// product, so that quantized weights meet them in integer dot products (as ggml's Q8_0 does).
//
// Format (ours, in memory only; like ggml's Q8_0 blocks but with a float scale and the block
// sums kept, laid out for the matmul micro-kernels):
//   a row x (cols,) of token t is cut into blocks of 32; for block b with amax = max |x_j|,
//     d = amax / 127,  q_j = round_to_nearest_even(x_j * (127 / amax))  (all 0 when amax = 0)
//   so x_j ~ q_j * d with q_j in [-127, 127].
//   qs   (n_tokens, cols)      int8    the quants, row after row
//   d    (n_blocks, n_tokens)  float   scale of block b of token t at d[b * n_tokens + t]
//   sum  (n_blocks, n_tokens)  int32   sum of the 32 quants of that block
//   neg_sum (n_blocks, n_tokens) int32 sum of its negative quants (<= 0), for kernels that move the
//                                      activations' signs onto the weights as w ^ m (Q8_0)
//   half_sum (n_blocks, n_tokens) int32 sum of its first 16 quants (the other 16: sum - half_sum),
//                                      for kernels whose weight scales go by 16 (Q6_K)
// Scales and sums are stored block-major so that a kernel computing several tokens at once reads
// their values for one block from consecutive addresses.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "simd.hpp"

namespace lumen::cpu {

inline constexpr int64_t q8_block = 32;

struct q8_activations {
    int64_t n_tokens = 0;
    int64_t cols = 0;      // a multiple of 32
    int64_t n_blocks = 0;  // cols / 32
    int8_t* qs = nullptr;
    float* d = nullptr;
    int32_t* sum = nullptr;
    int32_t* neg_sum = nullptr;
    int32_t* half_sum = nullptr;

    const int8_t* block(int64_t t, int64_t b) const { return qs + t * cols + b * q8_block; }
    float scale(int64_t t, int64_t b) const { return d[b * n_tokens + t]; }
    int32_t block_sum(int64_t t, int64_t b) const { return sum[b * n_tokens + t]; }
    int32_t block_neg_sum(int64_t t, int64_t b) const { return neg_sum[b * n_tokens + t]; }
    int32_t block_half_sum(int64_t t, int64_t b) const { return half_sum[b * n_tokens + t]; }
};

// Memory for q8_activations, 64-byte aligned; grows when asked for more, never shrinks, so that a
// context that has processed its largest batch allocates nothing afterwards.
class q8_buffer {
public:
    q8_activations view(int64_t n_tokens, int64_t cols) {
        const int64_t n_blocks = cols / q8_block;
        const size_t qs_bytes = round_up(static_cast<size_t>(n_tokens * cols));
        const size_t d_bytes = round_up(static_cast<size_t>(n_blocks * n_tokens) * sizeof(float));
        const size_t total = qs_bytes + 4 * d_bytes;
        if (total > capacity_) {
            data_.reset(static_cast<std::byte*>(::operator new(total, std::align_val_t{64})));
            capacity_ = total;
        }
        q8_activations a;
        a.n_tokens = n_tokens;
        a.cols = cols;
        a.n_blocks = n_blocks;
        a.qs = reinterpret_cast<int8_t*>(data_.get());
        a.d = reinterpret_cast<float*>(data_.get() + qs_bytes);
        a.sum = reinterpret_cast<int32_t*>(data_.get() + qs_bytes + d_bytes);
        a.neg_sum = reinterpret_cast<int32_t*>(data_.get() + qs_bytes + 2 * d_bytes);
        a.half_sum = reinterpret_cast<int32_t*>(data_.get() + qs_bytes + 3 * d_bytes);
        return a;
    }
    size_t capacity() const { return capacity_; }

private:
    static size_t round_up(size_t n) { return (n + 63) / 64 * 64; }
    struct aligned_delete {
        void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t{64}); }
    };
    std::unique_ptr<std::byte, aligned_delete> data_;
    size_t capacity_ = 0;
};

namespace scalar {

// One block of 32 floats -> quants, scale, sum, sum of the negative quants and sum of the first 16,
// as defined at the top of this file.
inline void quantize_block_q8(const float* x, int8_t* q, float* d, int32_t* sum, int32_t* neg_sum, int32_t* half_sum) {
    float amax = 0.0f;
    for (int j = 0; j < q8_block; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0, negative = 0, first_half = 0;
    for (int j = 0; j < q8_block; ++j) {
        float v = std::nearbyint(x[j] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;  // only non-finite inputs reach the bounds
        if (v != v) v = 0.0f;
        q[j] = static_cast<int8_t>(v);
        s += q[j];
        negative += q[j] < 0 ? q[j] : 0;
        if (j == q8_block / 2 - 1) first_half = s;
    }
    *d = amax / 127.0f;
    *sum = s;
    *neg_sum = negative;
    *half_sum = first_half;
}

}  // namespace scalar

#if defined(LUMEN_CPU_HAVE_AVX2)
namespace avx2 {

inline void quantize_block_q8(const float* x, int8_t* q, float* d, int32_t* sum, int32_t* neg_sum, int32_t* half_sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 mul = _mm256_set1_ps(id);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    auto to_int = [&](__m256 v) {  // nearest even, clamped; NaN -> 0 (as the scalar path)
        __m256 r = _mm256_round_ps(_mm256_mul_ps(v, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
        return _mm256_cvtps_epi32(r);
    };
    const __m256i i0 = to_int(v0), i1 = to_int(v1), i2 = to_int(v2), i3 = to_int(v3);
    const __m256i first_half = _mm256_add_epi32(i0, i1);
    *sum = sum_lanes(_mm256_add_epi32(first_half, _mm256_add_epi32(i2, i3)));
    *half_sum = sum_lanes(first_half);
    const __m256i zero = _mm256_setzero_si256();
    *neg_sum = sum_lanes(_mm256_add_epi32(_mm256_add_epi32(_mm256_min_epi32(i0, zero), _mm256_min_epi32(i1, zero)),
                                          _mm256_add_epi32(_mm256_min_epi32(i2, zero), _mm256_min_epi32(i3, zero))));
    // int32 -> int8: the packs interleave 128-bit halves; one permute restores the order
    const __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
    const __m256i p = _mm256_packs_epi16(p01, p23);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(p, order));
    *d = amax / 127.0f;
}

}  // namespace avx2
#endif

#if defined(LUMEN_CPU_HAVE_WASM)
namespace wasm128 {

// The same as scalar::quantize_block_q8, in SIMD128: pmax/pmin (b < a ? b : a style) skip NaNs as
// fmax and the scalar clamp do, f32x4.nearest rounds to nearest even as nearbyint does.
inline void quantize_block_q8(const float* x, int8_t* q, float* d, int32_t* sum, int32_t* neg_sum, int32_t* half_sum) {
    v128_t v[8];
    v128_t m = wasm_f32x4_splat(0.0f);
    for (int i = 0; i < 8; ++i) {
        v[i] = wasm_v128_load(x + 4 * i);
        m = wasm_f32x4_pmax(m, wasm_f32x4_abs(v[i]));  // a NaN |x| leaves m as it is
    }
    m = wasm_f32x4_pmax(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
    m = wasm_f32x4_pmax(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
    const float amax = wasm_f32x4_extract_lane(m, 0);
    const v128_t id = wasm_f32x4_splat(amax != 0.0f ? 127.0f / amax : 0.0f);
    const v128_t lo = wasm_f32x4_splat(-127.0f), hi = wasm_f32x4_splat(127.0f);
    v128_t i32[8];
    v128_t s = wasm_i32x4_splat(0), negative = s, first_half = s;
    for (int i = 0; i < 8; ++i) {
        v128_t r = wasm_f32x4_nearest(wasm_f32x4_mul(v[i], id));
        r = wasm_f32x4_pmax(wasm_f32x4_pmin(r, hi), lo);  // a NaN stays NaN
        r = wasm_v128_and(r, wasm_f32x4_eq(r, r));          // NaN -> 0
        i32[i] = wasm_i32x4_trunc_sat_f32x4(r);
        s = wasm_i32x4_add(s, i32[i]);
        negative = wasm_i32x4_add(negative, wasm_i32x4_min(i32[i], wasm_i32x4_splat(0)));
        if (i == 3) first_half = s;
    }
    for (int i = 0; i < 2; ++i) {
        const v128_t lo16 = wasm_i16x8_narrow_i32x4(i32[4 * i], i32[4 * i + 1]);
        const v128_t hi16 = wasm_i16x8_narrow_i32x4(i32[4 * i + 2], i32[4 * i + 3]);
        wasm_v128_store(q + 16 * i, wasm_i8x16_narrow_i16x8(lo16, hi16));
    }
    *sum = sum_lanes(s);
    *neg_sum = sum_lanes(negative);
    *half_sum = sum_lanes(first_half);
    *d = amax / 127.0f;
}

}  // namespace wasm128
#endif

using quantize_block_fn = void (*)(const float* x, int8_t* q, float* d, int32_t* sum, int32_t* neg_sum, int32_t* half_sum);

// Blocks [b0, b1) of token t of x (n_tokens, cols) -> a, with `quantize_block` (the scalar or a SIMD
// version of the definition above, which agree bit for bit); a was made for x's shape. Each block is
// quantized on its own, so a job that quantizes the parts of a row it has just computed makes the
// same bits as one pass over the row.
inline void quantize_blocks(quantize_block_fn quantize_block, const float* x, const q8_activations& a, int64_t t,
                            int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
        quantize_block(x + t * a.cols + b * q8_block, a.qs + t * a.cols + b * q8_block, a.d + b * a.n_tokens + t,
                       a.sum + b * a.n_tokens + t, a.neg_sum + b * a.n_tokens + t, a.half_sum + b * a.n_tokens + t);
}

// Tokens [t0, t1) of x -> a, whole rows.
inline void quantize_tokens(quantize_block_fn quantize_block, const float* x, const q8_activations& a, int64_t t0,
                            int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) quantize_blocks(quantize_block, x, a, t, 0, a.n_blocks);
}

}  // namespace lumen::cpu
