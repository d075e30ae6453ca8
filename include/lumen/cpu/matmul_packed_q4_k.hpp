// cpu/matmul_packed_q4_k.hpp: Q4_K weights repacked once for AVX-512, 16 rows' super-blocks side by
// side with one 32-bit lane per row, and the matrix-product kernel that reads them.
//
// Why. The per-row Q4_K kernel (matmul_kquants.hpp, avx2::q4_k_super) takes one row's super-block
// at a time: it unpacks the nibbles, multiplies with vpmaddubsw/vpmaddwd (or vpdpbusd), reduces 8
// blocks across lanes and decodes the row's 6-bit scales and mins, with 256-bit vectors. Repacked as
// Q4_0 and Q6_K are (matmul_packed.hpp, matmul_packed_q6_k.hpp), vpdpbusd multiplies the nibbles of
// 16 rows at once, each row's sum in its own lane: no reductions, and the 16 rows' scales and mins
// are decoded together from three vectors.
//
// The layout. Rows [0, 16 n_groups) of W (rows, cols), n_super = cols / 256 super-blocks per row:
// group g, super-block sb is the record at (g n_super + sb) 2304 bytes:
//   d        the 16 rows' fp16 d, row order                                              32 bytes
//   dmin     the 16 rows' fp16 dmin                                                      32 bytes
//   scales   3 vectors, vector j lane r = bytes 4 j .. 4 j + 3 of row r's 12 bytes of
//            6-bit scales and mins (quant::q4_k_scale_min)                              192 bytes
//   quants   per pair of blocks c = 0..3 (blocks 2 c, 2 c + 1: ggml's qs[32 c .. 32 c + 31], low
//            nibbles block 2 c, high nibbles block 2 c + 1), 8 vectors, vector k lane r = row r's
//            bytes qs[32 c + 4 k .. 32 c + 4 k + 3]                                    4 x 512 bytes
// 2304 = 16 x 144: a group takes exactly the bytes of its 16 rows in ggml's layout.
//
// The arithmetic. A weight is d sc_s q - dmin m_s, q in [0, 15], sc_s and m_s 6-bit per block s of
// 32. Per block, vpdpbusd of the nibbles (unsigned; the high ones masked in place, so 16 times
// theirs, undone by one exact shift) against the activations' 4 bytes broadcast gives sum q y for
// the 16 rows; times sc_s (vpmulld) it is scalar::q4_k_block::isum, and m_s times minus the block's
// activation sum its min_isum. The float steps are scalar::dot_kq's with rows in lanes: per block
// position s one accumulator, acc[s] = madd(d dx_b, isum_b, acc[s]), then madd(dmin dx_b, min_isum_b,
// acc[s]), and reduce8 of the 8 at the end. So the results are the same bits as every other Q4_K
// kernel's. No software prefetch, as for the other packed tiles (one forward stream per thread).
#pragma once

#include "matmul_packed_q6_k.hpp"

#if defined(LUMEN_CPU_HAVE_AVX512)

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lumen::cpu::avx512 {

struct packed_q4_k {
    static constexpr int group_rows = packed_group_rows;               // 16
    static constexpr int64_t super_bytes = block_q4_k_bytes;           // 144
    static constexpr int64_t record_bytes = group_rows * super_bytes;  // 2304
    static constexpr int64_t dmin_at = 2 * group_rows;                 // 32
    static constexpr int64_t scales_at = 4 * group_rows;               // 64
    static constexpr int64_t quants_at = scales_at + 3 * 64;           // 256
    static constexpr int64_t pair_bytes = 8 * 64;                      // 512

    // Repacks the 16 rows at w (w_stride bytes apart, n_super super-blocks each) into the group's
    // records (a pack_fn).
    static void pack_group(const std::byte* w, int64_t w_stride, int64_t n_super, std::byte* out) {
        for (int64_t sb = 0; sb < n_super; ++sb) {
            std::byte* record = out + sb * record_bytes;
            for (int r = 0; r < group_rows; ++r) {
                const std::byte* super = w + r * w_stride + sb * super_bytes;  // d, dmin, scales[12], qs[128]
                std::memcpy(record + 2 * r, super, 2);
                std::memcpy(record + dmin_at + 2 * r, super + 2, 2);
                for (int j = 0; j < 3; ++j) std::memcpy(record + scales_at + 64 * j + 4 * r, super + 4 + 4 * j, 4);
                for (int c = 0; c < 4; ++c)
                    for (int k = 0; k < 8; ++k)
                        std::memcpy(record + quants_at + c * pair_bytes + 64 * k + 4 * r, super + 16 + 32 * c + 4 * k, 4);
            }
        }
    }

    // The 16 rows' 6-bit scales and mins of a super-block, four per 32-bit lane: byte i of
    // sc[0] is sc_i, of sc[1] sc_(4 + i); likewise m (quant::q4_k_scale_min, on 16 rows at once).
    struct scales_mins {
        __m512i sc[2], m[2];
    };
    static scales_mins load_scales(const std::byte* record) {
        const __m512i w0 = _mm512_loadu_si512(record + scales_at), w1 = _mm512_loadu_si512(record + scales_at + 64);
        const __m512i w2 = _mm512_loadu_si512(record + scales_at + 128);
        const __m512i bits05 = _mm512_set1_epi8(0x3f), bits03 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
        constexpr int a_and_b_or_c = 0xea;  // vpternlog: (a & b) | c
        scales_mins s;
        s.sc[0] = _mm512_and_si512(w0, bits05);
        s.m[0] = _mm512_and_si512(w1, bits05);
        s.sc[1] = _mm512_ternarylogic_epi32(w2, bits03, _mm512_and_si512(_mm512_maskz_srli_epi32(all16, w0, 2), bits45), a_and_b_or_c);
        s.m[1] = _mm512_ternarylogic_epi32(_mm512_maskz_srli_epi32(all16, w2, 4), bits03, _mm512_and_si512(_mm512_maskz_srli_epi32(all16, w1, 2), bits45),
                                           a_and_b_or_c);
        return s;
    }
    // byte s mod 4 of v[s / 4] in every lane, as int32
    static __m512i byte_of(const __m512i v[2], int s) {
        const __m512i word = v[s / 4];
        const int shift = 8 * (s % 4);
        if (shift == 24) return _mm512_maskz_srli_epi32(all16, word, 24);
        return _mm512_and_si512(shift == 0 ? word : _mm512_maskz_srli_epi32(all16, word, shift), _mm512_set1_epi32(0xff));
    }

    // The nibbles of blocks 2 c, 2 c + 1 for the 16 rows, as Q4_0's (packed_q4_0::load) in two
    // halves: half h, vector k holds elements 4 (4 h + k) .. + 3 of block 2 c (low) and 16 times
    // those of block 2 c + 1 (high).
    struct pair {
        packed_q4_0::weights half[2];
    };
    static pair load_pair(const std::byte* quants) { return {{packed_q4_0::load(quants), packed_q4_0::load(quants + 4 * 64)}}; }
    // sum q y of the 16 rows for the blocks of a pair: [0] block 2 c against y0, [1] block 2 c + 1
    // against y1 (two chains of vpdpbusd each)
    static void sums_16(const pair& p, const int8_t* y0, const int8_t* y1, __m512i out[2]) {
        __m512i low[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, high[2] = {low[0], low[1]};
        LUMEN_UNROLL
        for (int h = 0; h < 2; ++h)
            LUMEN_UNROLL
            for (int k = 0; k < 4; ++k) {
                const int j = 4 * h + k;  // elements 4 j .. 4 j + 3
                low[h] = dpbusd_broadcast(low[h], p.half[h].low[k], y0 + 4 * j);
                high[h] = dpbusd_broadcast(high[h], p.half[h].high[k], y1 + 4 * j);
            }
        out[0] = _mm512_add_epi32(low[0], low[1]);
        out[1] = _mm512_maskz_srai_epi32(all16, _mm512_add_epi32(high[0], high[1]), 4);
    }
};

// The 16 rows of group g (rows 16 g ..) and tokens t .. t + T - 1.
template <int T>
inline void tile_packed_q4_k(const matmul_args& a, int64_t g, int64_t t) {
    using P = packed_q4_k;
    const q8_activations& x = *a.xq;
    const int64_t n_super = x.n_blocks / 8;
    const std::byte* record = a.w_packed + g * n_super * P::record_bytes;
    __m512 acc[T][8];  // [token][block position s]: 16 rows in lanes
    for (auto& token : acc)
        for (__m512& v : token) v = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < n_super; ++sb, record += P::record_bytes) {
        const __m512 d = _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(record)));
        const __m512 dmin = _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(record + P::dmin_at)));
        const P::scales_mins scales = P::load_scales(record);
        LUMEN_UNROLL
        for (int c = 0; c < 4; ++c) {
            const P::pair q = P::load_pair(record + P::quants_at + c * P::pair_bytes);
            const int64_t b = 8 * sb + 2 * c;  // blocks b, b + 1: positions 2 c, 2 c + 1
            const __m512i sc[2] = {P::byte_of(scales.sc, 2 * c), P::byte_of(scales.sc, 2 * c + 1)};  // the same for every token
            const __m512i m[2] = {P::byte_of(scales.m, 2 * c), P::byte_of(scales.m, 2 * c + 1)};
            LUMEN_UNROLL
            for (int k = 0; k < T; ++k) {
                __m512i sums[2];
                P::sums_16(q, x.block(t + k, b), x.block(t + k, b + 1), sums);
                LUMEN_UNROLL
                for (int i = 0; i < 2; ++i) {
                    const int s = 2 * c + i;
                    const __m512 dx = _mm512_set1_ps(x.scale(t + k, b + i));
                    const __m512i isum = _mm512_mullo_epi32(sums[i], sc[i]);
                    const __m512i min_isum = _mm512_mullo_epi32(m[i], _mm512_set1_epi32(-x.block_sum(t + k, b + i)));
                    acc[k][s] = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_maskz_cvtepi32_ps(all16, isum)), acc[k][s]);
                    acc[k][s] = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(dmin, dx), _mm512_maskz_cvtepi32_ps(all16, min_isum)), acc[k][s]);
                }
            }
        }
    }
    for (int k = 0; k < T; ++k) store_reduce8(acc[k], a.y + (t + k) * a.y_stride + g * packed_group_rows);
}

template <int T>
struct q4_k_tile {
    static void run(const matmul_args& a, int64_t g, int64_t t) { tile_packed_q4_k<T>(a, g, t); }
};

inline void rows_packed_q4_k(const matmul_args& a, int64_t r0, int64_t r1) { rows_packed_kq<avx2::q4_k_super, q4_k_tile, 4>(a, r0, r1); }

}  // namespace lumen::cpu::avx512

#endif  // LUMEN_CPU_HAVE_AVX512
