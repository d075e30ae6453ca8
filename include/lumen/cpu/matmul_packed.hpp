// cpu/matmul_packed.hpp: Q8_0 and Q4_0 weights repacked once for the SIMD kernels, with 16 (AVX-512)
// or 8 (AVX2) rows' blocks side by side, and the matrix-product kernels that read them.
//
// Why. In ggml's layout a row's blocks follow each other, so a tile of rows reads as many streams
// 1-2 KiB apart, gathers the rows' fp16 scales one by one, and (AVX-512) needs lane reductions of
// its own per row: most of a block's cost is that bookkeeping, not the dot products. Repacked, the
// rows' block b is one contiguous record that a tile reads front to back, their scales are one
// vector, and one sequential stream per thread is easy to prefetch.
//
// The layout. The rows [0, G * n_groups) of W (rows, cols), G rows per group, n_blocks = cols / 32
// blocks per row: group g, block b is the record at (g * n_blocks + b) * G * block_bytes:
//   G fp16 scales, row order                                      2 G bytes
//   the G rows' quants (copy_quants says where row r's go)       G x 16 (Q4_0) or G x 32 (Q8_0)
// so a group takes exactly the bytes of its G rows in ggml's layout.
//   AVX2 (G = 8): row r's quants at r x quant bytes, as stored; the tiles are the AVX2 tiles of
//     matmul_avx2.hpp reading the record (one dot per row and sum_lanes_8, or 2 rows x 4 tokens).
//   AVX-512 (G = 16): one 32-bit lane per row. The quants come in vectors of 64 bytes, vector k
//     holding bytes 4k .. 4k + 3 of every row, row r in lane r: one vpdpbusd of vector k against
//     the activations' 4 bytes broadcast adds 4 products to each row's own lane, so the 16 rows'
//     sums end in row order with no reduction across lanes. Q4_0's bytes are copied as they are
//     (elements 4k .. 4k + 3 in the low nibbles, 16 + 4k .. in the high); Q8_0's quants are
//     stored + 128 (as unsigned bytes: q ^ 0x80), so that vpdpbusd takes them as its unsigned
//     operand against the signed activations directly: the block's dot product is
//     sum (q + 128) y - 128 sum y.
//
// The results are the same bits as every other kernel's: per block the exact integer dot product,
// converted to float once, times (dw * dx), added to the row's sum in block order (simd.hpp).
// Rows past the last whole group, and weights that could not be repacked, go through the unpacked
// kernels (matmul_avx2.hpp, matmul_avx512.hpp).
#pragma once

#include "matmul_avx512.hpp"

#if defined(LUMEN_CPU_HAVE_AVX2)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lumen::cpu::avx2 {

inline constexpr int64_t packed_group_rows = 8;

// The records of 8 rows of Block (q8_0_block or q4_0_block), quants as stored, row after row.
template <class Block>
struct packed {
    static constexpr int group_rows = packed_group_rows;
    static constexpr int64_t block_bytes = Block::bytes;
    static constexpr int64_t quant_bytes = Block::bytes - 2;
    static constexpr int64_t record_bytes = group_rows * block_bytes;
    static int64_t quant_offset(int r) { return r * quant_bytes; }
    static void copy_quants(const std::byte* from, std::byte* quants, int r) { std::memcpy(quants + quant_offset(r), from, static_cast<size_t>(quant_bytes)); }
    static const std::byte* quants(const std::byte* record, int r) { return record + 2 * group_rows + quant_offset(r); }
};

// Repacks the Packed::group_rows rows at w (w_stride bytes apart, n_blocks blocks each) into the
// group's records, in the layout Packed describes (copy_quants puts row r's quants of a block into
// the record's quants): AVX2's packed<Block> and AVX-512's packed_q4_0, packed_q8_0.
template <class Packed>
inline void pack_group(const std::byte* w, int64_t w_stride, int64_t n_blocks, std::byte* out) {
    constexpr int rows = Packed::group_rows;
    for (int64_t b = 0; b < n_blocks; ++b) {
        std::byte* record = out + b * Packed::record_bytes;
        for (int r = 0; r < rows; ++r) {
            const std::byte* block = w + r * w_stride + b * Packed::block_bytes;
            std::memcpy(record + 2 * r, block, 2);
            Packed::copy_quants(block + 2, record + 2 * rows, r);
        }
    }
}

// Fetches the cache lines of `bytes` bytes at p: the AVX2 tiles' help for the hardware prefetchers
// (with the earlier 16-row records, the prefetchers alone left a third of the bandwidth unused; with
// the 8-row records, on Zen 4 with AVX-512 turned off, prefetching or not came within 2%). The
// AVX-512 tiles do without it (see tile_packed).
inline void prefetch_bytes(const std::byte* p, int64_t bytes) {
    for (int64_t k = 0; k < bytes; k += 64) _mm_prefetch(reinterpret_cast<const char*>(p) + k, _MM_HINT_T0);
}

// Rows [r0, r1) of a kernel with repacked weights: packed(g0, g1) for the whole groups of `group`
// rows that a.w_packed holds, unpacked(begin, end) for the rows before and after them (all rows
// when nothing is repacked).
template <class Unpacked, class Packed>
inline void split_packed(const matmul_args& a, int64_t r0, int64_t r1, int64_t group, Unpacked&& unpacked, Packed&& packed) {
    const int64_t p0 = (r0 + group - 1) / group * group, p1 = std::min(r1, a.packed_rows) / group * group;
    if (a.w_packed == nullptr || p0 >= p1) {
        unpacked(r0, r1);
        return;
    }
    if (r0 < p0) unpacked(r0, p0);
    packed(p0 / group, p1 / group);
    if (p1 < r1) unpacked(p1, r1);
}

// The 8 rows of group g, token t: as tile_q8_8x1, reading the records (scales as one vector, the
// records prefetched 32 ahead, about 4 KiB).
template <class Block>
inline void tile_packed_8x1(const matmul_args& a, int64_t g, int64_t t) {
    using P = packed<Block>;
    const q8_activations& x = *a.xq;
    const std::byte* record = a.w_packed + g * x.n_blocks * P::record_bytes;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < x.n_blocks; ++b, record += P::record_bytes) {
        prefetch_bytes(record + 32 * P::record_bytes, P::record_bytes);
        const typename Block::act y = Block::activations(x.block(t, b));
        __m256i v[8];
        LUMEN_UNROLL
        for (int i = 0; i < 8; ++i) v[i] = Block::dot(Block::weights_at(P::quants(record, i)), y);
        const __m256i s = _mm256_add_epi32(sum_lanes_8(v), _mm256_set1_epi32(Block::correction(x, t, b)));
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(record)));
        acc = madd(_mm256_mul_ps(dw, _mm256_set1_ps(x.scale(t, b))), _mm256_cvtepi32_ps(s), acc);
    }
    _mm256_storeu_ps(a.y + t * a.y_stride + g * packed_group_rows, acc);
}

// Rows 8 g + i, 8 g + i + 1 and tokens t .. t + 3: as tile_q8_2x4, reading the records.
template <class Block>
inline void tile_packed_2x4(const matmul_args& a, int64_t g, int i, int64_t t) {
    using P = packed<Block>;
    struct packed_rows {
        const std::byte* records;
        int i;
        const std::byte* quants(int64_t b, int j) const { return P::quants(records + b * P::record_bytes, i + j); }
        uint32_t scales(int64_t b) const {
            uint32_t two;
            std::memcpy(&two, records + b * P::record_bytes + 2 * i, 4);  // side by side in the record
            return two;
        }
    };
    const q8_activations& x = *a.xq;
    const packed_rows rows{a.w_packed + g * x.n_blocks * P::record_bytes, i};
    store_2x4(a, g * packed_group_rows + i, t, dot_2x4<Block>(x, rows, t));
}

// Rows [r0, r1): the whole groups a.w_packed holds through the packed tiles (8 x 1 for a token,
// 2 x 4 for prompts, in chunks of tokens whose activations stay in the L2 cache, the tokens left
// over one at a time), the other rows through the unpacked kernels.
template <class Block>
inline void rows_packed(const matmul_args& a, int64_t r0, int64_t r1) {
    auto unpacked = [&](int64_t begin, int64_t end) { rows_q8<Block>(a, begin, end); };
    split_packed(a, r0, r1, packed_group_rows, unpacked, [&](int64_t g0, int64_t g1) {
        const int64_t chunk = a.n_tokens == 1 ? 1 : token_chunk(a.cols, 4);
        for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
            const int64_t t1 = std::min(a.n_tokens, t0 + chunk), t4 = t0 + (t1 - t0) / 4 * 4;
            for (int64_t g = g0; g < g1; ++g) {
                for (int i = 0; i < packed_group_rows; i += 2)
                    for (int64_t t = t0; t < t4; t += 4) tile_packed_2x4<Block>(a, g, i, t);
                for (int64_t t = t4; t < t1; ++t) tile_packed_8x1<Block>(a, g, t);
            }
        }
    });
}

}  // namespace lumen::cpu::avx2

#endif  // LUMEN_CPU_HAVE_AVX2

#if defined(LUMEN_CPU_HAVE_AVX512)

namespace lumen::cpu::avx512 {

inline constexpr int64_t packed_group_rows = 16;

// Row r's quants of a block, `bytes` of them, into lane r of the record's vectors (4 bytes of the
// row per vector, see the top), each 32-bit word x-ored with `flip`.
inline void copy_to_lanes(const std::byte* from, std::byte* quants, int r, int bytes, uint32_t flip) {
    for (int k = 0; k < bytes / 4; ++k) {
        uint32_t word;
        std::memcpy(&word, from + 4 * k, 4);
        word ^= flip;
        std::memcpy(quants + 64 * k + 4 * r, &word, 4);
    }
}

// the 4 activations y[0..3] in every 32-bit lane
inline __m512i broadcast_4(const int8_t* y) {
    int32_t four;
    std::memcpy(&four, y, 4);
    return _mm512_set1_epi32(four);
}

// acc + vpdpbusd(w, broadcast_4(y)): w's unsigned bytes times the 4 activations y[0..3], in every
// lane. Written so that the broadcast is the instruction's memory operand ({1to16}): clang does that
// from the intrinsics, GCC (12) loads it into a register of its own with a separate vpbroadcastd,
// one more vector instruction per 4 bytes of activations, hence the asm for GCC.
inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const int8_t* y) {
#if defined(__GNUC__) && !defined(__clang__)
    using unaligned_i32 = int32_t __attribute__((aligned(1), may_alias));
    __asm__("vpdpbusd {%2%{1to16%}, %1, %0|%0, %1, %2%{1to16%}}"  // AT&T | Intel syntax (-masm=intel)
            : "+v"(acc)
            : "v"(w), "m"(*reinterpret_cast<const unaligned_i32*>(y)));
    return acc;
#else
    return _mm512_dpbusd_epi32(acc, w, broadcast_4(y));
#endif
}

// Q4_0: 4 vectors; vector k, lane r holds row r's elements 4k .. 4k + 3 (low nibbles) and
// 16 + 4k .. 16 + 4k + 3 (high nibbles).
struct packed_q4_0 {
    using unpacked = q4_0_block;
    static constexpr int group_rows = packed_group_rows;
    static constexpr int64_t block_bytes = block_q4_0_bytes;
    static constexpr int64_t record_bytes = packed_group_rows * block_bytes;  // 288
    static void copy_quants(const std::byte* from, std::byte* quants, int r) { copy_to_lanes(from, quants, r, 16, 0); }
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -8 * x.block_sum(t, b); }

    struct weights {
        __m512i low[4];   // the low nibbles as bytes
        __m512i high[4];  // the high nibbles times 16 (masked in place, not shifted)
    };
    static weights load(const std::byte* quants) {
        const __m512i low_mask = _mm512_set1_epi8(0x0f), high_mask = _mm512_set1_epi8(static_cast<char>(0xf0));
        weights w;
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            const __m512i q = load_once(quants + 64 * k);
            w.low[k] = _mm512_and_si512(q, low_mask);
            w.high[k] = _mm512_and_si512(q, high_mask);
        }
        return w;
    }
    // the 16 rows' integer dot products with the activation block y, plus `start` (the correction;
    // the high nibbles' sum is 16 times theirs, exactly: one shift undoes it)
    static __m512i sums_16(const weights& w, const int8_t* y, __m512i start) {
        __m512i low = start, high = _mm512_setzero_si512();
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            low = dpbusd_broadcast(low, w.low[k], y + 4 * k);
            high = dpbusd_broadcast(high, w.high[k], y + 16 + 4 * k);
        }
        return _mm512_add_epi32(low, _mm512_maskz_srai_epi32(all16, high, 4));
    }
};

// Q8_0: 8 vectors; vector k, lane r holds row r's quants 4k .. 4k + 3, + 128.
struct packed_q8_0 {
    using unpacked = q8_0_block;
    static constexpr int group_rows = packed_group_rows;
    static constexpr int64_t block_bytes = block_q8_0_bytes;
    static constexpr int64_t record_bytes = packed_group_rows * block_bytes;  // 544
    static void copy_quants(const std::byte* from, std::byte* quants, int r) { copy_to_lanes(from, quants, r, 32, 0x80808080u); }
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -128 * x.block_sum(t, b); }

    struct weights {
        __m512i q[8];  // q + 128
    };
    static weights load(const std::byte* quants) {
        weights w;
        LUMEN_UNROLL
        for (int k = 0; k < 8; ++k) w.q[k] = _mm512_loadu_si512(quants + 64 * k);
        return w;
    }
    static __m512i sums_16(const weights& w, const int8_t* y, __m512i start) {
        __m512i even = start, odd = _mm512_setzero_si512();  // two chains of vpdpbusd
        LUMEN_UNROLL
        for (int k = 0; k < 8; k += 2) {
            even = dpbusd_broadcast(even, w.q[k], y + 4 * k);
            odd = dpbusd_broadcast(odd, w.q[k + 1], y + 4 * k + 4);
        }
        return _mm512_add_epi32(even, odd);
    }
};

// tile_packed leaves the fetching of records to the hardware prefetchers: a group's records are
// one forward stream (18 KiB for 2048 columns of Q4_0), which they follow. Software prefetches on
// top (16 records ahead, needed by the earlier layout: tinyllama Q8_0 33 ms per token without, 24
// with) cost bandwidth on a later Zen 4 host: in-process A/B, alternating every 64 tokens, of
// prefetching 16 ahead against none: stories110M Q4_0 2.02 vs 1.74 ms per token (none faster in 16
// rounds of 16), Q8_0 3.31 vs 3.12 (15/16), tinyllama Q4_0 19.4 vs 18.1 (5/6), Q8_0 34.5 vs 32.0
// (6/6); one thread streaming every layer's w_gate of tinyllama Q4_0, 31 vs 34 GB/s. The same holds
// for the Q6_K tiles (matmul_packed_q6_k.hpp). Repacking: avx2::pack_group with packed_q4_0,
// packed_q8_0.
//
// The 16 rows of group g (rows 16 g ..) and tokens t .. t + T - 1.
template <class Packed, int T>
inline void tile_packed(const matmul_args& a, int64_t g, int64_t t) {
    const q8_activations& x = *a.xq;
    const std::byte* record = a.w_packed + g * x.n_blocks * Packed::record_bytes;
    __m512 acc[T];
    for (int k = 0; k < T; ++k) acc[k] = _mm512_setzero_ps();
    for (int64_t b = 0; b < x.n_blocks; ++b, record += Packed::record_bytes) {
        const __m512 dw = _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(record)));
        const typename Packed::weights w = Packed::load(record + 2 * packed_group_rows);
        LUMEN_UNROLL
        for (int k = 0; k < T; ++k) {
            const __m512i s = Packed::sums_16(w, x.block(t + k, b), _mm512_set1_epi32(Packed::correction(x, t + k, b)));
            const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(x.scale(t + k, b)));
            acc[k] = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_maskz_cvtepi32_ps(all16, s)), acc[k]);
        }
    }
    for (int k = 0; k < T; ++k) _mm512_storeu_ps(a.y + (t + k) * a.y_stride + g * packed_group_rows, acc[k]);
}

// Rows [r0, r1): the whole groups among them that a.w_packed holds through the tiles (16 rows x 4
// tokens, the tokens left over 3, 2 or 1 at a time, in chunks of tokens whose activations stay in
// the L2 cache), the other rows through the unpacked kernels.
template <class Packed>
inline void rows_packed(const matmul_args& a, int64_t r0, int64_t r1) {
    auto unpacked = [&](int64_t begin, int64_t end) { rows_q8<typename Packed::unpacked>(a, begin, end); };
    avx2::split_packed(a, r0, r1, packed_group_rows, unpacked, [&](int64_t g0, int64_t g1) {
        const int64_t chunk = a.n_tokens == 1 ? 1 : avx2::token_chunk(a.cols, 4);
        for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
            const int64_t t1 = std::min(a.n_tokens, t0 + chunk);
            for (int64_t g = g0; g < g1; ++g) {
                int64_t t = t0;
                for (; t + 4 <= t1; t += 4) tile_packed<Packed, 4>(a, g, t);
                switch (t1 - t) {
                    case 3: tile_packed<Packed, 3>(a, g, t); break;
                    case 2: tile_packed<Packed, 2>(a, g, t); break;
                    case 1: tile_packed<Packed, 1>(a, g, t); break;
                    default: break;
                }
            }
        }
    });
}

}  // namespace lumen::cpu::avx512

#endif  // LUMEN_CPU_HAVE_AVX512
