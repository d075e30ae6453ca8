// cpu/matmul_avx512.hpp: the Q8_0 and Q4_0 matrix-vector tiles for CPUs with AVX-512 VNNI on weights
// as stored (the rows that repacking, matmul_packed.hpp, leaves out, or all with --no-repack): the
// 8 rows x 1 token tile of matmul_avx2.hpp with two rows' blocks in each 512-bit register.
//
// z[k] = [row k's block | row k + 4's block] (32 bytes each: Q8_0's quants, Q4_0's nibbles as
// bytes), against the activation block in both halves: one vpdpbusd takes two rows' dot products,
// four take the tile's eight, and their lane sums come out of a shorter reduction (sum_lanes_8).
// The integer sums are the AVX2 tile's, and so is everything after them (the scales, the float
// step), so the results are the same bits. Prompts (several tokens) keep the AVX2 tiles.
#pragma once

#include "matmul_avx2.hpp"

#if defined(LUMEN_CPU_HAVE_AVX512)

namespace lumen::cpu::avx512 {

// Full masks for the zero-masking forms of the intrinsics: GCC 12's unmasked forms start from an
// "undefined" vector, which its -Wmaybe-uninitialized takes for a read of an uninitialised one.
inline constexpr __mmask8 all4 = 0x0f, all8 = 0xff;
inline constexpr __mmask16 all16 = 0xffff;

// 64 bytes at p, loaded once: for a vector that two instructions use (Q4_0's and Q6_K's low and high
// nibbles), GCC folds the load into both as a memory operand, so the bytes are read twice; the empty
// asm makes the value a register's. Per 16-row Q4_0 record 12 loads instead of 16 + 4: 6.2 -> 4.3 ns
// per record on one Zen 4 core with the weights in L2 (the load ports, not the arithmetic, set the pace).
inline __m512i load_once(const std::byte* p) {
    __m512i v = _mm512_loadu_si512(p);
#if defined(__GNUC__)
    asm("" : "+v"(v));
#endif
    return v;
}

inline __m512i bcast(__m256i v) { return _mm512_maskz_broadcast_i64x4(all8, v); }      // [v | v]
inline __m512i join(__m256i lo, __m256i hi) {  // [lo | hi]
    return _mm512_mask_broadcast_i64x4(_mm512_maskz_broadcast_i64x4(all4, lo), 0xf0, hi);
}
inline __m256i half(__m512i v, int i) { return i == 0 ? _mm512_maskz_extracti64x4_epi64(all4, v, 0) : _mm512_maskz_extracti64x4_epi64(all4, v, 1); }

// z[k] = [row k's 8 lanes | row k + 4's] -> lane i = the sum of row i's lanes (integer adds: exact
// in any order). Per 128-bit quarter j: pair32 and pair64 leave [z0_j, z1_j, z2_j, z3_j] (each
// quarter's 4 lanes summed); quarters 0 and 1 are rows 0-3, quarters 2 and 3 rows 4-7.
inline __m256i sum_lanes_8(const __m512i z[4]) {
    auto pair32 = [](__m512i x, __m512i y) { return _mm512_add_epi32(_mm512_maskz_unpacklo_epi32(all16, x, y), _mm512_maskz_unpackhi_epi32(all16, x, y)); };
    auto pair64 = [](__m512i x, __m512i y) { return _mm512_add_epi32(_mm512_maskz_unpacklo_epi64(all8, x, y), _mm512_maskz_unpackhi_epi64(all8, x, y)); };
    const __m512i q = pair64(pair32(z[0], z[1]), pair32(z[2], z[3]));
    const __m512i s = _mm512_maskz_shuffle_i32x4(all16, q, q, _MM_SHUFFLE(3, 1, 2, 0));  // quarters 0, 2 | 1, 3
    return _mm256_add_epi32(half(s, 0), half(s, 1));
}

// The 8 rows' sums of a block type with dot(weights(row k, row k + 4), y) (2 rows per register).
template <class Block>
inline __m256i sums_8_in_pairs(const std::byte* wb, int64_t ws, const typename Block::act& y) {
    __m512i z[4];
    LUMEN_UNROLL
    for (int k = 0; k < 4; ++k) z[k] = Block::dot(Block::weights(wb + k * ws, wb + (k + 4) * ws), y);
    return sum_lanes_8(z);
}

// Q8_0: the AVX2 block's (w ^ m) |y|, on two rows at once
struct q8_0_block {
    using avx2_block = avx2::q8_0_block;
    static constexpr int64_t bytes = avx2_block::bytes;
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return avx2_block::correction(x, t, b); }
    struct act {
        __m512i abs_y, negative;
    };
    static act activations(const int8_t* y) {
        const avx2_block::act a = avx2_block::activations(y);
        return {bcast(a.abs_y), bcast(a.negative)};
    }
    static __m512i weights(const std::byte* block0, const std::byte* block1) {
        return join(avx2_block::weights(block0), avx2_block::weights(block1));
    }
    static __m512i dot(__m512i w, const act& y) {
        return _mm512_dpbusd_epi32(_mm512_setzero_si512(), y.abs_y, _mm512_xor_si512(w, y.negative));
    }
    static __m256i sums_8(const std::byte* wb, int64_t ws, const act& y) { return sums_8_in_pairs<q8_0_block>(wb, ws, y); }
};

// Q4_0: nibbles (unsigned) against the activation quants
struct q4_0_block {
    using avx2_block = avx2::q4_0_block;
    static constexpr int64_t bytes = avx2_block::bytes;
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return avx2_block::correction(x, t, b); }
    using act = __m512i;
    static act activations(const int8_t* y) { return bcast(avx2_block::activations(y)); }
    static __m512i weights(const std::byte* block0, const std::byte* block1) {
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block0 + 2));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block1 + 2));
        __m512i q = _mm512_mask_broadcast_i32x4(_mm512_maskz_broadcast_i32x4(0x00ff, q0), 0xff00, q1);  // [q0 q0 q1 q1]
        q = _mm512_mask_srli_epi32(q, 0xf0f0, q, 4);  // the second copy of each: the high nibbles down
        return _mm512_and_si512(q, _mm512_set1_epi8(0x0f));
    }
    static __m512i dot(__m512i w, act y) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, y); }
    static __m256i sums_8(const std::byte* wb, int64_t ws, act y) { return sums_8_in_pairs<q4_0_block>(wb, ws, y); }
};

// The AVX2 driver and tiles (avx2::tile_q8_8x1 takes these blocks' sums_8); prompts and the rows
// left over from the tiles keep the AVX2 blocks.
template <class Block>
inline void rows_q8(const matmul_args& a, int64_t r0, int64_t r1) {
    using base = typename Block::avx2_block;
    avx2::rows_tiled<&avx2::tile_q8_8x1<Block>, &avx2::tile_q8_2x4<base>, &avx2::dot_q8<base>>(a, r0, r1);
}

}  // namespace lumen::cpu::avx512

#endif  // LUMEN_CPU_HAVE_AVX512
