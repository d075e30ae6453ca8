// cpu/matmul_kquants.hpp: kernels for ggml's k-quant weights (Q4_K, Q6_K; layouts in quant_k.hpp)
// against the 8-bit activations of quantize_activations.hpp, portable scalar, AVX2 and (Q6_K) AVX-512.
//
// A super-block of 256 weights meets 8 activation blocks of 32. For activation block b (sub-block
// s = b mod 8 of super-block b / 8):
//   Q4_K  x = d sc_s q - dmin m_s, q in [0, 15] (6-bit sc_s and m_s):
//           term 1: scale d,    isum     = sc_s * sum q y      (exact integers)
//           term 2: scale dmin, min_isum = -m_s * sum y
//   Q6_K  x = d sc (q - 32), q in [0, 63], one int8 sc per 16 weights (two per activation block):
//           scale d, isum = sum sc (q - 32) y
// The sum runs over 8 lanes, one per sub-block position: lane s accumulates the blocks b = s mod 8,
// acc[s] = madd(scale * dx, isum, acc[s]) (then the min term), in order, and y = reduce8(acc).
// The AVX2 kernels take one row's super-block at a time: the 8 integer sums of its sub-blocks land
// in the 8 lanes of one vector, where the row's 8 sub-block scales and mins (decoded once per
// super-block, no transposes) and the 8 activation scales multiply them lane by lane. Every sum is
// exact, so the scalar and the AVX2 kernels give the same bits.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../quant.hpp"
#include "matmul_args.hpp"
#include "matmul_avx2.hpp"
#include "matmul_avx512.hpp"
#include "matmul_scalar.hpp"
#include "simd.hpp"

namespace lumen::cpu {

namespace kquant {

inline float half_at(const std::byte* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return detail::fp16_to_fp32(h);
}

// The 6-bit scale and min of sub-block s of a Q4_K super-block.
inline void q4_k_sub(const std::byte* super, int s, int& sc, int& m) {
    uint8_t a, b;
    quant::q4_k_scale_min(s, reinterpret_cast<const uint8_t*>(super + 4), a, b);
    sc = a;
    m = b;
}

}  // namespace kquant

namespace scalar {

struct q4_k_block {
    static constexpr bool has_min = true;
    static const std::byte* super(const std::byte* row, int64_t b) { return row + b / 8 * block_q4_k_bytes; }
    static float scale(const std::byte* row, int64_t b) { return kquant::half_at(super(row, b)); }
    static float min_scale(const std::byte* row, int64_t b) { return kquant::half_at(super(row, b) + 2); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t /*y_sum*/) {
        const int s = static_cast<int>(b % 8);
        int sc, m;
        kquant::q4_k_sub(super(row, b), s, sc, m);
        const auto* q = reinterpret_cast<const uint8_t*>(super(row, b) + 16 + 32 * (s / 2));
        const int shift = 4 * (s % 2);
        int32_t sum = 0;
        for (int l = 0; l < 32; ++l) sum += ((q[l] >> shift) & 0x0f) * y[l];
        return sc * sum;
    }
    static int32_t min_isum(const std::byte* row, int64_t b, int32_t y_sum) {
        int sc, m;
        kquant::q4_k_sub(super(row, b), static_cast<int>(b % 8), sc, m);
        return -m * y_sum;
    }
};

struct q6_k_block {
    static constexpr bool has_min = false;
    static const std::byte* super(const std::byte* row, int64_t b) { return row + b / 8 * block_q6_k_bytes; }
    static float scale(const std::byte* row, int64_t b) { return kquant::half_at(super(row, b) + 208); }
    // element l of block (half h, quarter k): low 4 bits from ql[64 h + 32 (k & 1) + l] (high
    // nibble when k >= 2), high 2 bits at bit 2 k of qh[32 h + l], scale scales[8 h + 2 k + l / 16]
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t /*y_sum*/) {
        const auto* p = reinterpret_cast<const uint8_t*>(super(row, b));
        const int h = static_cast<int>(b % 8) / 4, k = static_cast<int>(b % 4);
        const uint8_t* ql = p + 64 * h + 32 * (k & 1);
        const uint8_t* qh = p + 128 + 32 * h;
        const auto* sc = reinterpret_cast<const int8_t*>(p + 192 + 8 * h + 2 * k);
        int32_t sum[2] = {0, 0};
        for (int l = 0; l < 32; ++l) {
            const int q = ((ql[l] >> (4 * (k >> 1))) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4);
            sum[l / 16] += (q - 32) * y[l];
        }
        return sc[0] * sum[0] + sc[1] * sum[1];
    }
};

// row . x[t] for a k-quant row: 8 lanes, lane s takes the blocks b = s mod 8 (see the top)
template <class Block>
inline float dot_kq(const std::byte* row, const q8_activations& x, int64_t t) {
    float acc[8] = {};
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        float& lane = acc[b % 8];
        const float dx = x.scale(t, b);
        lane = madd(Block::scale(row, b) * dx, static_cast<float>(Block::isum(row, b, x.block(t, b), x.block_sum(t, b))), lane);
        if constexpr (Block::has_min)
            lane = madd(Block::min_scale(row, b) * dx, static_cast<float>(Block::min_isum(row, b, x.block_sum(t, b))), lane);
    }
    return reduce8(acc);
}

template <class Block>
inline void rows_kq(const matmul_args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t t = 0; t < a.n_tokens; ++t) a.y[t * a.y_stride + r] = dot_kq<Block>(a.w + r * a.w_stride, *a.xq, t);
}

}  // namespace scalar

#if defined(LUMEN_CPU_HAVE_AVX2)
namespace avx2 {

// The 8 activation scales (float) and quant sums (int32) of blocks 8 sb .. 8 sb + 7 of token t.
inline __m256 block_scales(const q8_activations& x, int64_t t, int64_t sb) {
    const float* d = x.d + 8 * sb * x.n_tokens + t;
    if (x.n_tokens == 1) return _mm256_loadu_ps(d);
    const __m256i stride = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(x.n_tokens)));
    return _mm256_i32gather_ps(d, stride, 4);
}
inline __m256i block_sums(const q8_activations& x, int64_t t, int64_t sb) {
    const int32_t* s = x.sum + 8 * sb * x.n_tokens + t;
    if (x.n_tokens == 1) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
    const __m256i stride = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(x.n_tokens)));
    return _mm256_i32gather_epi32(reinterpret_cast<const int*>(s), stride, 4);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// One Q4_K super-block of a row, unpacked: the quants of its 8 sub-blocks as bytes in [0, 15], the
// 8 scales and mins as int32 lanes, d and dmin.
struct q4_k_super {
    static constexpr int64_t bytes = block_q4_k_bytes;
    __m256i q[8];
    __m256i sc, m;
    float d, dmin;

    void load(const std::byte* p) {
        d = _cvtsh_ss(load_u16(p));
        dmin = _cvtsh_ss(load_u16(p + 2));
        uint32_t w[3];
        std::memcpy(w, p + 4, 12);  // the 12 bytes of 6-bit scales and mins (quant::q4_k_scale_min)
        const uint64_t sc8 = (w[0] & 0x3f3f3f3fu) | uint64_t{(w[2] & 0x0f0f0f0fu) | ((w[0] >> 2) & 0x30303030u)} << 32;
        const uint64_t m8 = (w[1] & 0x3f3f3f3fu) | uint64_t{((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 2) & 0x30303030u)} << 32;
        sc = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc8)));
        m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(m8)));
        const __m256i low4 = _mm256_set1_epi8(0x0f);
        LUMEN_UNROLL
        for (int c = 0; c < 4; ++c) {  // 32 bytes per pair of sub-blocks: low nibbles, then high
            const __m256i raw = load256(p + 16 + 32 * c);
            q[2 * c] = _mm256_and_si256(raw, low4);
            q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        }
    }
    // acc[s] += (d dx_b) (sc_s sum q y) + (dmin dx_b) (-m_s sum y), b = 8 sb + s
    void dot(const q8_activations& x, int64_t t, int64_t sb, __m256& acc) const {
        __m256i v[8];
        LUMEN_UNROLL
        for (int s = 0; s < 8; ++s) v[s] = dot_u8s8(q[s], load256(x.block(t, 8 * sb + s)));
        const __m256i isum = _mm256_mullo_epi32(sum_lanes_8(v), sc);
        const __m256 dx = block_scales(x, t, sb);
        acc = madd(_mm256_mul_ps(_mm256_set1_ps(d), dx), _mm256_cvtepi32_ps(isum), acc);
        const __m256i min_isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_mullo_epi32(m, block_sums(x, t, sb)));
        acc = madd(_mm256_mul_ps(_mm256_set1_ps(dmin), dx), _mm256_cvtepi32_ps(min_isum), acc);
    }
};

// One Q6_K super-block of a row, unpacked: the quants minus 32 of its 8 blocks of 32 as signed
// bytes, and per block its two scales as int16 lanes (0-7: elements 0..15, 8-15: 16..31).
struct q6_k_super {
    static constexpr int64_t bytes = block_q6_k_bytes;
    __m256i q[8];
    __m256i sc16[8];
    float d;

    void load(const std::byte* p) {
        d = _cvtsh_ss(load_u16(p + 208));
        const __m256i all = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
        // dword s of `all` holds the scales (2 s, 2 s + 1); spread them over the two halves
        const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                                2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
        const __m256i low4 = _mm256_set1_epi8(0x0f), bits45 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
        LUMEN_UNROLL
        for (int h = 0; h < 2; ++h) {  // halves of 128: ql[64 h ..], qh[32 h ..]
            const __m256i ql0 = load256(p + 64 * h), ql1 = load256(p + 64 * h + 32);
            const __m256i qh = load256(p + 128 + 32 * h);
            const __m256i lo[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                                   _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                   _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
            const __m256i hi[4] = {_mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45),
                                   _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45), _mm256_and_si256(qh, bits45),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)};
            LUMEN_UNROLL
            for (int k = 0; k < 4; ++k) {
                const int s = 4 * h + k;
                q[s] = _mm256_sub_epi8(_mm256_or_si256(lo[k], hi[k]), k32);
                sc16[s] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(all, _mm256_set1_epi32(s)), spread);
            }
        }
    }
    // acc[s] += (d dx_b) sum sc (q - 32) y; |q - 32| <= 32, so no pair of vpmaddubsw leaves int16
    void dot(const q8_activations& x, int64_t t, int64_t sb, __m256& acc) const {
        __m256i v[8];
        LUMEN_UNROLL
        for (int s = 0; s < 8; ++s) {
            const __m256i y = load256(x.block(t, 8 * sb + s));
            v[s] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(y, y), _mm256_sign_epi8(q[s], y)), sc16[s]);
        }
        acc = madd(_mm256_mul_ps(_mm256_set1_ps(d), block_scales(x, t, sb)), _mm256_cvtepi32_ps(sum_lanes_8(v)), acc);
    }
};

// Rows [r0, r1), every token: a row's super-block is unpacked once for up to 4 tokens; tokens go in
// chunks whose activations stay in the L2 cache. With one token, the next rows are prefetched.
template <class Super>
inline void rows_kq(const matmul_args& a, int64_t r0, int64_t r1) {
    constexpr int T = 4;
    const q8_activations& x = *a.xq;
    const int64_t n_super = x.n_blocks / 8;
    const int64_t chunk = token_chunk(a.cols, T);
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
        const int64_t t1 = std::min(a.n_tokens, t0 + chunk);
        for (int64_t r = r0; r < r1; ++r) {
            const std::byte* row = a.w + r * a.w_stride;
            for (int64_t t = t0; t < t1; t += T) {
                const int nt = static_cast<int>(std::min<int64_t>(T, t1 - t));
                __m256 acc[T];
                for (__m256& v : acc) v = _mm256_setzero_ps();
                for (int64_t sb = 0; sb < n_super; ++sb) {
                    if (a.n_tokens == 1)  // rows are short: the hardware prefetchers need help
                        for (int k = 0; k < Super::bytes; k += 64)
                            _mm_prefetch(reinterpret_cast<const char*>(row + 4 * a.w_stride + sb * Super::bytes + k), _MM_HINT_T0);
                    Super w;
                    w.load(row + sb * Super::bytes);
                    for (int k = 0; k < nt; ++k) w.dot(x, t + k, sb, acc[k]);
                }
                for (int k = 0; k < nt; ++k) a.y[(t + k) * a.y_stride + r] = reduce8(acc[k]);
            }
        }
    }
}

}  // namespace avx2
#endif

#if defined(LUMEN_CPU_HAVE_AVX512)
namespace avx512 {

// Q6_K with two blocks per 512-bit register: z[k] = [block k | block k + 4], the two halves of the
// super-block side by side, so every step of avx2::q6_k_super runs once for both halves, and
// sum_lanes_8 leaves block s in lane s. AVX-512 has no vpsignb: the signs of y go onto the quants
// with a masked negation (|q - 32| <= 32 fits an int8 either way). The integer sums are the AVX2
// kernel's, so are the float steps: the same bits.
struct q6_k_super {
    static constexpr int64_t bytes = block_q6_k_bytes;
    __m512i q[4];     // quants - 32 as signed bytes, [block k | block k + 4]
    __m512i sc16[4];  // their scales as int16: [sc 2k x8, sc 2k+1 x8 | sc 2k+8 x8, sc 2k+9 x8]
    float d;

    static __m512i load_pair(const std::byte* a, const std::byte* b) { return join(avx2::load256(a), avx2::load256(b)); }

    void load(const std::byte* p) {
        d = _cvtsh_ss(avx2::load_u16(p + 208));
        const __m512i ql0 = load_pair(p, p + 64), ql1 = load_pair(p + 32, p + 96), qh = load_pair(p + 128, p + 160);
        const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30), k32 = _mm512_set1_epi8(32);
        const __mmask32 all32 = 0xffffffffu;
        const __m512i lo[4] = {_mm512_and_si512(ql0, low4), _mm512_and_si512(ql1, low4),
                               _mm512_and_si512(_mm512_maskz_srli_epi16(all32, ql0, 4), low4),
                               _mm512_and_si512(_mm512_maskz_srli_epi16(all32, ql1, 4), low4)};
        const __m512i hi[4] = {_mm512_and_si512(_mm512_maskz_slli_epi16(all32, qh, 4), bits45),
                               _mm512_and_si512(_mm512_maskz_slli_epi16(all32, qh, 2), bits45), _mm512_and_si512(qh, bits45),
                               _mm512_and_si512(_mm512_maskz_srli_epi16(all32, qh, 2), bits45)};
        // the 16 scales as int16 lanes 0-15, then per k the lanes (2k, 2k+1, 2k+8, 2k+9), 8 each
        const __m512i all = _mm512_maskz_cvtepi8_epi16(all32, _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192))));
        const __m512i base = _mm512_maskz_cvtepu8_epi16(all32, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                                                                  8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9));
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            q[k] = _mm512_sub_epi8(_mm512_or_si512(lo[k], hi[k]), k32);
            sc16[k] = _mm512_maskz_permutexvar_epi16(all32, _mm512_add_epi16(base, _mm512_set1_epi16(static_cast<short>(2 * k))), all);
        }
    }
    // acc[s] += (d dx_b) sum sc (q - 32) y, b = 8 sb + s: sum |y| (q - 32) sign(y) by vpmaddubsw
    void dot(const q8_activations& x, int64_t t, int64_t sb, __m256& acc) const {
        __m512i v[4];
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            const __m512i y = load_pair(reinterpret_cast<const std::byte*>(x.block(t, 8 * sb + k)),
                                        reinterpret_cast<const std::byte*>(x.block(t, 8 * sb + k + 4)));
            const __m512i signed_q = _mm512_mask_sub_epi8(q[k], _mm512_movepi8_mask(y), _mm512_setzero_si512(), q[k]);
            v[k] = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(y), signed_q), sc16[k]);
        }
        acc = avx2::madd(_mm256_mul_ps(_mm256_set1_ps(d), avx2::block_scales(x, t, sb)), _mm256_cvtepi32_ps(sum_lanes_8(v)), acc);
    }
};

}  // namespace avx512
#endif

}  // namespace lumen::cpu
