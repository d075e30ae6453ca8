// cpu/matmul_avx2.hpp: the AVX2 + F16C matrix-product kernels (compiled when the target has them,
// see simd.hpp). They give the same bits as the scalar kernels of matmul_scalar.hpp.
//
// Tiles. A kernel computes a tile of R rows x T tokens at once, so that each weight block it
// loads serves T tokens and each activation block serves R rows:
//   float weights:     4 x 1 for generation (one token), 4 x 3 for prompts; one 8-lane
//                      accumulator per (row, token), lanes as in the scalar lane order;
//   quantized weights: 8 x 1 and 2 x 4; per block, the integer dot products of the 8 (row, token)
//                      pairs (vpmaddubsw + vpmaddwd, or vpdpbusd with VNNI) are summed across lanes
//                      into one vector (lane = pair), converted to float once, multiplied by the 8
//                      scale products and added: the float work is per 8 pairs, not per pair.
// Prompts go through the tokens in chunks whose activations stay in the L2 cache while a thread's
// rows stream past them.
#pragma once

#include "simd.hpp"

#if defined(LUMEN_CPU_HAVE_AVX2)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../quant.hpp"
#include "matmul_args.hpp"

namespace lumen::cpu::avx2 {

// Tokens per chunk such that the chunk's activations take about `budget` bytes (a multiple of T).
inline int64_t token_chunk(int64_t bytes_per_token, int64_t tile_tokens, int64_t budget = 128 * 1024) {
    const int64_t n = budget / std::max<int64_t>(bytes_per_token, 1);
    return std::max<int64_t>(tile_tokens, n / tile_tokens * tile_tokens);
}

// --- float weights: 8 elements of a row as floats

struct f32_row {
    static __m256 load(const std::byte* row, int64_t j) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + j); }
    static constexpr int64_t elem_bytes = 4;
};
struct f16_row {
    static __m256 load(const std::byte* row, int64_t j) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j)));
    }
    static constexpr int64_t elem_bytes = 2;
};
struct bf16_row {
    static __m256 load(const std::byte* row, int64_t j) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
    static constexpr int64_t elem_bytes = 2;
};

// The last n mod 8 elements, zero-padded to 8: of a weight row and of an activation row.
template <class Row>
inline __m256 load_partial_row(const std::byte* row, int64_t j, int64_t m) {
    alignas(32) std::byte buf[32] = {};
    std::memcpy(buf, row + j * Row::elem_bytes, static_cast<size_t>(m * Row::elem_bytes));
    return Row::load(buf, 0);
}
inline __m256 load_partial(const float* x, int64_t m) {
    alignas(32) float buf[8] = {};
    std::memcpy(buf, x, static_cast<size_t>(m) * sizeof(float));
    return _mm256_load_ps(buf);
}

// y for rows r .. r + R - 1 and tokens t .. t + T - 1
template <class Row, int R, int T>
inline void tile_float(const matmul_args& a, int64_t r, int64_t t) {
    __m256 acc[R][T];
    for (int i = 0; i < R; ++i)
        LUMEN_UNROLL
        for (int k = 0; k < T; ++k) acc[i][k] = _mm256_setzero_ps();
    const std::byte* w = a.w + r * a.w_stride;
    const float* x = a.x + t * a.x_stride;
    const int64_t n8 = a.cols / 8 * 8;
    // one token: fetch the next tile's rows (they follow these) while this one runs
    const char* next = reinterpret_cast<const char*>(w + R * a.w_stride);
    const int64_t next_step = T == 1 ? R * a.w_stride / std::max<int64_t>(n8 / 8, 1) : 0;
    for (int64_t j = 0; j < n8; j += 8) {
        if constexpr (T == 1)
            for (int64_t k = 0; k < next_step; k += 64) _mm_prefetch(next + j / 8 * next_step + k, _MM_HINT_T0);
        __m256 wv[R];
        for (int i = 0; i < R; ++i) wv[i] = Row::load(w + i * a.w_stride, j);
        LUMEN_UNROLL
        for (int k = 0; k < T; ++k) {
            const __m256 xv = _mm256_loadu_ps(x + k * a.x_stride + j);
            for (int i = 0; i < R; ++i) acc[i][k] = madd(wv[i], xv, acc[i][k]);
        }
    }
    if (const int64_t m = a.cols - n8; m > 0) {  // the tail, zero-padded: lanes >= m add 0 * 0
        __m256 wv[R];
        for (int i = 0; i < R; ++i) wv[i] = load_partial_row<Row>(w + i * a.w_stride, n8, m);
        LUMEN_UNROLL
        for (int k = 0; k < T; ++k) {
            const __m256 xv = load_partial(x + k * a.x_stride + n8, m);
            for (int i = 0; i < R; ++i) acc[i][k] = madd(wv[i], xv, acc[i][k]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int k = 0; k < T; ++k) a.y[(t + k) * a.y_stride + r + i] = reduce8(acc[i][k]);
}

template <class Row>
inline void rows_float(const matmul_args& a, int64_t r0, int64_t r1) {
    constexpr int R = 4, T = 3;
    if (a.n_tokens == 1) {
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) tile_float<Row, 4, 1>(a, r, 0);
        for (; r < r1; ++r) tile_float<Row, 1, 1>(a, r, 0);
        return;
    }
    const int64_t chunk = token_chunk(a.cols * 4, T);
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
        const int64_t t1 = std::min(a.n_tokens, t0 + chunk);
        int64_t r = r0;
        for (; r + R <= r1; r += R) {
            int64_t t = t0;
            for (; t + T <= t1; t += T) tile_float<Row, R, T>(a, r, t);
            if (t + 2 <= t1) {
                tile_float<Row, R, 2>(a, r, t);
                t += 2;
            }
            for (; t < t1; ++t) tile_float<Row, R, 1>(a, r, t);
        }
        for (; r < r1; ++r)
            for (int64_t t = t0; t < t1; ++t) tile_float<Row, 1, 1>(a, r, t);
    }
}

// --- quantized weights against 8-bit activations
//
// Each block type says how to prepare a weight block and an activation block for the integer dot
// product, how to take it (lane i = sum over bytes 4i..4i+3), and what to add to the lanes' sum
// (correction) to make it the block's exact integer dot product; and the same for the prompt tiles
// (prompt_*, with the corrections of 4 tokens at once).

// sum w y = sum |y| (w ^ m) - sum_{y<0} y, m = -1 where y < 0: ~w = -w - 1 turns w |y| into w y - |y|
// where y < 0, and w ^ m is an int8 for every w (sign(w, y) is not: -(-128) wraps); the pairs stay
// within int16 (|y| <= 127, |w ^ m| <= 128).
struct q8_0_block {
    static constexpr int64_t bytes = block_q8_0_bytes;
    struct act {
        __m256i abs_y, negative;
    };
    static __m256i weights(const std::byte* block) { return weights_at(block + 2); }
    static __m256i weights_at(const std::byte* quants) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(quants)); }
    static act activations(const int8_t* y) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
        return {_mm256_abs_epi8(v), _mm256_cmpgt_epi8(_mm256_setzero_si256(), v)};
    }
    static __m256i dot(__m256i w, const act& y) { return dot_u8s8(y.abs_y, _mm256_xor_si256(w, y.negative)); }
    // what the block's dot product lacks: -sum_{y<0} y
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -x.block_neg_sum(t, b); }

    // Prompts (2 rows x 4 tokens): the signs go the other way, sum w y = sum |w| sign(y, w), exact
    // as well (|w| <= 128 unsigned, |y| <= 127) and cheaper there: |w| once per row, nothing per token.
    struct prompt_weights_t {
        __m256i abs_w, w;
    };
    static prompt_weights_t prompt_weights_at(const std::byte* quants) {
        const __m256i w = weights_at(quants);
        return {_mm256_abs_epi8(w), w};
    }
    using prompt_act = __m256i;
    static prompt_act prompt_activations(const int8_t* y) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y)); }
    static __m256i prompt_dot(const prompt_weights_t& w, prompt_act y) { return dot_u8s8(w.abs_w, _mm256_sign_epi8(y, w.w)); }
    static __m128i prompt_corrections_4(const q8_activations&, int64_t, int64_t) { return _mm_setzero_si128(); }
};

// sum (nibble - 8) y = sum nibble y - 8 sum y
struct q4_0_block {
    static constexpr int64_t bytes = block_q4_0_bytes;
    using act = __m256i;
    // the 32 nibbles as bytes 0..15 (low nibbles, elements 0..15) and 16..31 (high nibbles)
    static __m256i weights(const std::byte* block) { return weights_at(block + 2); }
    static __m256i weights_at(const std::byte* quants) {
        const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(quants)));
        return _mm256_and_si256(_mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0f));
    }
    static act activations(const int8_t* y) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y)); }
    static __m256i dot(__m256i w, act y) { return dot_u8s8(w, y); }  // nibbles <= 15: no pair leaves int16
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -8 * x.block_sum(t, b); }

    // prompts: the same steps, and the corrections of 4 tokens at once
    using prompt_weights_t = __m256i;
    static __m256i prompt_weights_at(const std::byte* quants) { return weights_at(quants); }
    using prompt_act = act;
    static act prompt_activations(const int8_t* y) { return activations(y); }
    static __m256i prompt_dot(__m256i w, act y) { return dot(w, y); }
    static __m128i prompt_corrections_4(const q8_activations& x, int64_t t, int64_t b) {
        const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.sum + b * x.n_tokens + t));
        return _mm_slli_epi32(_mm_sub_epi32(_mm_setzero_si128(), sums), 3);
    }
};

inline uint16_t load_u16(const std::byte* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return h;
}

// One (row, token) pair, block by block: the same arithmetic as scalar::dot_q8.
template <class Block>
inline float dot_q8(const std::byte* row, const q8_activations& x, int64_t t) {
    float acc = 0.0f;
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        const std::byte* block = row + b * Block::bytes;
        const int32_t s =
            sum_lanes(Block::dot(Block::weights(block), Block::activations(x.block(t, b)))) + Block::correction(x, t, b);
        acc = cpu::madd(_cvtsh_ss(load_u16(block)) * x.scale(t, b), static_cast<float>(s), acc);
    }
    return acc;
}

// The scales of 8 blocks ws bytes apart (8 rows' block b) times the activations' dx: the tiles' dw * dx.
inline __m256 scales_8(const std::byte* block, int64_t ws, float dx) {
    const __m128i dw_h = _mm_setr_epi16(
        static_cast<int16_t>(load_u16(block)), static_cast<int16_t>(load_u16(block + ws)),
        static_cast<int16_t>(load_u16(block + 2 * ws)), static_cast<int16_t>(load_u16(block + 3 * ws)),
        static_cast<int16_t>(load_u16(block + 4 * ws)), static_cast<int16_t>(load_u16(block + 5 * ws)),
        static_cast<int16_t>(load_u16(block + 6 * ws)), static_cast<int16_t>(load_u16(block + 7 * ws)));
    return _mm256_mul_ps(_mm256_cvtph_ps(dw_h), _mm256_set1_ps(dx));
}

// The 8 rows of the next tile follow a tile's 8 in memory: each block's step of the tile fetches
// its share of them (rows of quantized weights are too short, ~1 KiB, for the hardware prefetchers
// to ramp up on). share: 8 rows' bytes / the blocks per row.
inline void prefetch_share(const char* next, int64_t b, int64_t share) {
    for (int64_t k = 0; k < share + 63; k += 64) _mm_prefetch(next + b * share + k, _MM_HINT_T0);
}

// The integer dot products of 8 rows' blocks (at wb, ws bytes apart) with the activation block y,
// lane i = row i, before the correction: the block type's own sums_8 where it has one (the AVX-512
// blocks, matmul_avx512.hpp), else one dot per row and their lanes summed.
template <class Block>
inline __m256i sums_8(const std::byte* wb, int64_t ws, const typename Block::act& y) {
    if constexpr (requires { Block::sums_8(wb, ws, y); }) {
        return Block::sums_8(wb, ws, y);
    } else {
        __m256i v[8];
        LUMEN_UNROLL
        for (int i = 0; i < 8; ++i) v[i] = Block::dot(Block::weights(wb + i * ws), y);
        return sum_lanes_8(v);
    }
}

// Rows r .. r + 7, one token t: lane i of the accumulator is row r + i.
template <class Block>
inline void tile_q8_8x1(const matmul_args& a, int64_t r, int64_t t) {
    const q8_activations& x = *a.xq;
    const std::byte* w = a.w + r * a.w_stride;
    const int64_t ws = a.w_stride;
    const char* next = reinterpret_cast<const char*>(w + 8 * ws);
    const int64_t share = 8 * ws / std::max<int64_t>(x.n_blocks, 1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        prefetch_share(next, b, share);
        const typename Block::act y = Block::activations(x.block(t, b));
        const std::byte* wb = w + b * Block::bytes;
        const __m256i s = _mm256_add_epi32(sums_8<Block>(wb, ws, y), _mm256_set1_epi32(Block::correction(x, t, b)));
        acc = madd(scales_8(wb, ws, x.scale(t, b)), _mm256_cvtepi32_ps(s), acc);
    }
    _mm256_storeu_ps(a.y + t * a.y_stride + r, acc);
}

// Two rows and tokens t .. t + 3: lane 4 j + k of the result is (row j, token t + k). Rows::quants(b, j)
// is where row j's quants of block b start, Rows::scales(b) the two rows' fp16 scales of block b (row
// 0's in the low half): rows as stored (tile_q8_2x4) or repacked (matmul_packed.hpp).
template <class Block, class Rows>
inline __m256 dot_2x4(const q8_activations& x, const Rows& rows, int64_t t) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        const typename Block::prompt_weights_t q0 = Block::prompt_weights_at(rows.quants(b, 0));
        const typename Block::prompt_weights_t q1 = Block::prompt_weights_at(rows.quants(b, 1));
        __m256i v[8];
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            const typename Block::prompt_act y = Block::prompt_activations(x.block(t + k, b));
            v[k] = Block::prompt_dot(q0, y);
            v[4 + k] = Block::prompt_dot(q1, y);
        }
        const __m256i s = _mm256_add_epi32(sum_lanes_8(v), _mm256_broadcastsi128_si256(Block::prompt_corrections_4(x, t, b)));
        const __m256 dw = _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(rows.scales(b))))), dup);
        const __m256 dx = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x.d + b * x.n_tokens + t));
        acc = madd(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(s), acc);
    }
    return acc;
}

// y of rows r, r + 1 and tokens t .. t + 3 from dot_2x4's result
inline void store_2x4(const matmul_args& a, int64_t r, int64_t t, __m256 acc) {
    alignas(32) float out[8];
    _mm256_store_ps(out, acc);
    LUMEN_UNROLL
    for (int k = 0; k < 4; ++k) {
        a.y[(t + k) * a.y_stride + r] = out[k];
        a.y[(t + k) * a.y_stride + r + 1] = out[4 + k];
    }
}

// Rows r, r + 1 and tokens t .. t + 3, as stored.
template <class Block>
inline void tile_q8_2x4(const matmul_args& a, int64_t r, int64_t t) {
    struct stored_rows {
        const std::byte* w0;
        const std::byte* w1;
        const std::byte* quants(int64_t b, int j) const { return (j == 0 ? w0 : w1) + b * Block::bytes + 2; }
        uint32_t scales(int64_t b) const { return load_u16(w0 + b * Block::bytes) | (uint32_t{load_u16(w1 + b * Block::bytes)} << 16); }
    };
    const std::byte* w0 = a.w + r * a.w_stride;
    store_2x4(a, r, t, dot_2x4<Block>(*a.xq, stored_rows{w0, w0 + a.w_stride}, t));
}

using tile_fn = void (*)(const matmul_args& a, int64_t r, int64_t t);
using dot_q8_fn = float (*)(const std::byte* row, const q8_activations& x, int64_t t);

// The driver of the quantized kernels: one token = tiles of 8 rows x 1 (rows left over: one at a
// time); several = 2 rows x 4 tokens, chunk by chunk of tokens, the tokens left over as one token.
template <tile_fn tile_8x1, tile_fn tile_2x4, dot_q8_fn dot>
inline void rows_tiled(const matmul_args& a, int64_t r0, int64_t r1) {
    const q8_activations& x = *a.xq;
    auto one_token = [&](int64_t t) {
        int64_t r = r0;
        for (; r + 8 <= r1; r += 8) tile_8x1(a, r, t);
        for (; r < r1; ++r) a.y[t * a.y_stride + r] = dot(a.w + r * a.w_stride, x, t);
    };
    if (a.n_tokens == 1) {
        one_token(0);
        return;
    }
    const int64_t chunk = token_chunk(a.cols, 4);
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
        const int64_t t1 = std::min(a.n_tokens, t0 + chunk), t4 = t0 + (t1 - t0) / 4 * 4;
        int64_t r = r0;
        for (; r + 2 <= r1; r += 2)
            for (int64_t t = t0; t < t4; t += 4) tile_2x4(a, r, t);
        for (; r < r1; ++r)
            for (int64_t t = t0; t < t4; ++t) a.y[t * a.y_stride + r] = dot(a.w + r * a.w_stride, x, t);
        for (int64_t t = t4; t < t1; ++t) one_token(t);
    }
}

template <class Block>
inline void rows_q8(const matmul_args& a, int64_t r0, int64_t r1) {
    rows_tiled<&tile_q8_8x1<Block>, &tile_q8_2x4<Block>, &dot_q8<Block>>(a, r0, r1);
}

}  // namespace lumen::cpu::avx2

#endif  // LUMEN_CPU_HAVE_AVX2
