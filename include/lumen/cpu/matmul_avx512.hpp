// cpu/matmul_avx512.hpp: the Q8_0 and Q4_0 matrix-vector tiles for CPUs with AVX-512 VNNI: the
// 8 rows x 1 token tile of matmul_avx2.hpp with two rows' blocks in each 512-bit register.
//
// z[k] = [row k's block | row k + 4's block] (32 bytes each: Q8_0's quants, Q4_0's nibbles as
// bytes), against the activation block in both halves: one vpdpbusd takes two rows' dot products,
// four take the tile's eight, and their lane sums come out of a shorter reduction (sum_lanes_8
// below). The integer sums are the AVX2 tile's, and so is everything after them (the scales, the
// float step), so the results are the same bits. Prompts (several tokens) keep the AVX2 tiles.
#pragma once

#include "matmul_avx2.hpp"

#if defined(LUMEN_CPU_HAVE_AVX512)

namespace lumen::cpu::avx512 {

// Q8_0: the AVX2 block's (w ^ m) |y|, on two rows at once
struct q8_0_block {
    using avx2_block = avx2::q8_0_block;
    struct act {
        __m512i abs_y, negative;
    };
    static act activations(const int8_t* y) {
        const avx2_block::act a = avx2_block::activations(y);
        return {_mm512_broadcast_i64x4(a.abs_y), _mm512_broadcast_i64x4(a.negative)};
    }
    static __m512i weights(const std::byte* block0, const std::byte* block1) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(avx2_block::weights(block0)), avx2_block::weights(block1), 1);
    }
    static __m512i dot(__m512i w, const act& y) {
        return _mm512_dpbusd_epi32(_mm512_setzero_si512(), y.abs_y, _mm512_xor_si512(w, y.negative));
    }
};

// Q4_0: nibbles (unsigned) against the activation quants
struct q4_0_block {
    using avx2_block = avx2::q4_0_block;
    using act = __m512i;
    static act activations(const int8_t* y) { return _mm512_broadcast_i64x4(avx2_block::activations(y)); }
    static __m512i weights(const std::byte* block0, const std::byte* block1) {
        const __m512i q = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block0 + 2)))),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block1 + 2))), 1);
        const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
        return _mm512_and_si512(_mm512_srlv_epi32(q, shift), _mm512_set1_epi8(0x0f));
    }
    static __m512i dot(__m512i w, act y) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, y); }
};

// z[k] = [row k's 8 lanes | row k + 4's] -> lane i = the sum of row i's lanes (integer adds: exact
// in any order). Per 128-bit quarter j: pair32 and pair64 leave [z0_j, z1_j, z2_j, z3_j] (each
// quarter's 4 lanes summed); quarters 0 and 1 are rows 0-3, quarters 2 and 3 rows 4-7.
inline __m256i sum_lanes_8(const __m512i z[4]) {
    auto pair32 = [](__m512i x, __m512i y) { return _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y)); };
    auto pair64 = [](__m512i x, __m512i y) { return _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y)); };
    const __m512i q = pair64(pair32(z[0], z[1]), pair32(z[2], z[3]));
    const __m512i s = _mm512_shuffle_i32x4(q, q, _MM_SHUFFLE(3, 1, 2, 0));  // quarters 0, 2 | 1, 3
    return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

// Rows r .. r + 7, one token t: lane i of the accumulator is row r + i (as avx2::tile_q8_8x1).
template <class Block>
inline void tile_q8_8x1(const matmul_args& a, int64_t r, int64_t t) {
    using base = typename Block::avx2_block;
    const q8_activations& x = *a.xq;
    const std::byte* w = a.w + r * a.w_stride;
    const int64_t ws = a.w_stride;
    const char* next = reinterpret_cast<const char*>(w + 8 * ws);  // the next tile, fetched meanwhile
    const int64_t next_step = 8 * ws / std::max<int64_t>(x.n_blocks, 1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        for (int64_t k = 0; k < next_step + 63; k += 64) _mm_prefetch(next + b * next_step + k, _MM_HINT_T0);
        const typename Block::act y = Block::activations(x.block(t, b));
        const std::byte* wb = w + b * base::bytes;
        __m512i z[4];
        for (int k = 0; k < 4; ++k) z[k] = Block::dot(Block::weights(wb + k * ws, wb + (k + 4) * ws), y);
        const __m256i s = _mm256_add_epi32(sum_lanes_8(z), _mm256_set1_epi32(base::correction(x, t, b)));
        const __m128i dw_h = _mm_setr_epi16(
            static_cast<int16_t>(avx2::load_u16(wb)), static_cast<int16_t>(avx2::load_u16(wb + ws)),
            static_cast<int16_t>(avx2::load_u16(wb + 2 * ws)), static_cast<int16_t>(avx2::load_u16(wb + 3 * ws)),
            static_cast<int16_t>(avx2::load_u16(wb + 4 * ws)), static_cast<int16_t>(avx2::load_u16(wb + 5 * ws)),
            static_cast<int16_t>(avx2::load_u16(wb + 6 * ws)), static_cast<int16_t>(avx2::load_u16(wb + 7 * ws)));
        const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(dw_h), _mm256_set1_ps(x.scale(t, b)));
        acc = avx2::madd(scale, _mm256_cvtepi32_ps(s), acc);
    }
    _mm256_storeu_ps(a.y + t * a.y_stride + r, acc);
}

template <class Block>
inline void rows_q8(const matmul_args& a, int64_t r0, int64_t r1) {
    using base = typename Block::avx2_block;
    avx2::rows_tiled<&tile_q8_8x1<Block>, &avx2::tile_q8_2x4<base>, &avx2::dot_q8<base>>(a, r0, r1);
}

}  // namespace lumen::cpu::avx512

#endif  // LUMEN_CPU_HAVE_AVX512
