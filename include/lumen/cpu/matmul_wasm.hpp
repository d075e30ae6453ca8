// cpu/matmul_wasm.hpp: the WebAssembly SIMD128 matrix-product kernels (compiled with em++ -msimd128,
// see simd.hpp). They give the same bits as the scalar kernels of matmul_scalar.hpp, so the browser
// computes exactly what the native build computes.
//
//   float weights:     the 8 lanes of the scalar lane order as two f32x4 accumulators (lanes 0-3
//                      and 4-7), F16 converted with the integer steps of detail::fp16_to_fp32;
//                      one row at a time for one token, tiles of 2 rows x 2 tokens for several;
//   quantized weights: tiles of 4 rows (8 with relaxed SIMD) x 1 token; per block the exact
//                      integer dot products (i32x4.dot_i16x8_s on sign- or zero-extended quants,
//                      or with relaxed SIMD the 8-bit i32x4.relaxed_dot_i8x16_i7x16_add_s), each 4
//                      rows' sums reduced into one i32x4 (lane i = row i), then the scalar kernels'
//                      float step acc = madd(dw * dx, isum, acc) on 4 rows at once, the 4 dw read as
//                      one vector from the float scales matmul() makes once per weight
//                      (matmul_args::w_scales), or gathered from the blocks and converted.
#pragma once

#include "simd.hpp"

#if defined(LUMEN_CPU_HAVE_WASM)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../quant.hpp"
#include "matmul_args.hpp"
#include "matmul_scalar.hpp"

namespace lumen::cpu::wasm128 {

// --- float weights: 8 elements of a row as two f32x4 (elements j..j+3, j+4..j+7)

struct f32x8 {
    v128_t lo, hi;
};

struct f32_row {
    static f32x8 load(const std::byte* row, int64_t j) { return {wasm_v128_load(row + 4 * j), wasm_v128_load(row + 4 * j + 16)}; }
    static constexpr int64_t elem_bytes = 4;
};

// 4 halves (u32 lanes) -> floats, the same bits as detail::fp16_to_fp32 for every half: the
// exponent and mantissa shifted into a float's places and multiplied by 2^112 (exact: it only
// rebiases the exponent, and turns half subnormals into float normals); a half infinity or NaN
// (exponent 31) comes out >= 2^16 and gets the all-ones exponent; then the sign.
inline v128_t half4_to_float(v128_t h) {
    const v128_t magnitude = wasm_v128_and(h, wasm_i32x4_splat(0x7fff));
    v128_t f = wasm_f32x4_mul(wasm_i32x4_shl(magnitude, 13), wasm_f32x4_splat(0x1p112f));
    const v128_t special = wasm_f32x4_ge(f, wasm_f32x4_splat(0x1p16f));  // a float compare: one instruction in V8
    f = wasm_v128_or(f, wasm_v128_and(special, wasm_i32x4_splat(0x7f800000)));
    return wasm_v128_or(f, wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16));
}

struct f16_row {
    static f32x8 load(const std::byte* row, int64_t j) {
        const v128_t h = wasm_v128_load(row + 2 * j);
        return {half4_to_float(wasm_u32x4_extend_low_u16x8(h)), half4_to_float(wasm_u32x4_extend_high_u16x8(h))};
    }
    static constexpr int64_t elem_bytes = 2;
};

struct bf16_row {
    static f32x8 load(const std::byte* row, int64_t j) {
        const v128_t h = wasm_v128_load(row + 2 * j);
        return {wasm_i32x4_shl(wasm_u32x4_extend_low_u16x8(h), 16), wasm_i32x4_shl(wasm_u32x4_extend_high_u16x8(h), 16)};
    }
    static constexpr int64_t elem_bytes = 2;
};

inline f32x8 madd(const f32x8& a, const f32x8& b, const f32x8& c) {
    return {wasm_f32x4_add(wasm_f32x4_mul(a.lo, b.lo), c.lo), wasm_f32x4_add(wasm_f32x4_mul(a.hi, b.hi), c.hi)};
}

inline float reduce8(const f32x8& v) {
    float lanes[8];
    wasm_v128_store(lanes, v.lo);
    wasm_v128_store(lanes + 4, v.hi);
    return cpu::reduce8(lanes);
}

// lane i = reduce8(v[i]), the same adds in the same order, for 4 accumulators at once:
// pairs (v0+v1, v2+v3, v4+v5, v6+v7) of each, then the pairs of pairs, then the halves.
inline v128_t reduce8_4(const f32x8 (&v)[4]) {
    auto pairs = [](v128_t a, v128_t b) {  // (a0+a1, a2+a3, b0+b1, b2+b3)
        return wasm_f32x4_add(wasm_i32x4_shuffle(a, b, 0, 2, 4, 6), wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
    };
    const v128_t p0 = pairs(v[0].lo, v[0].hi), p1 = pairs(v[1].lo, v[1].hi), p2 = pairs(v[2].lo, v[2].hi),
                 p3 = pairs(v[3].lo, v[3].hi);
    return pairs(pairs(p0, p1), pairs(p2, p3));
}

// y for rows r .. r + R - 1 and tokens t .. t + T - 1; the tail n mod 8 is zero-padded
template <class Row, int R, int T>
inline void tile_float(const matmul_args& a, int64_t r, int64_t t) {
    f32x8 acc[R][T];
    for (int i = 0; i < R; ++i)
        for (int k = 0; k < T; ++k) acc[i][k] = {wasm_f32x4_splat(0.0f), wasm_f32x4_splat(0.0f)};
    const std::byte* w = a.w + r * a.w_stride;
    const float* x = a.x + t * a.x_stride;
    const int64_t n8 = a.cols / 8 * 8;
    for (int64_t j = 0; j < n8; j += 8) {
        f32x8 wv[R];
        for (int i = 0; i < R; ++i) wv[i] = Row::load(w + i * a.w_stride, j);
        for (int k = 0; k < T; ++k) {
            const f32x8 xv{wasm_v128_load(x + k * a.x_stride + j), wasm_v128_load(x + k * a.x_stride + j + 4)};
            for (int i = 0; i < R; ++i) acc[i][k] = madd(wv[i], xv, acc[i][k]);
        }
    }
    if (const int64_t m = a.cols - n8; m > 0) {
        for (int i = 0; i < R; ++i) {
            alignas(16) std::byte wbuf[32] = {};
            std::memcpy(wbuf, w + i * a.w_stride + n8 * Row::elem_bytes, static_cast<size_t>(m * Row::elem_bytes));
            const f32x8 wv = Row::load(wbuf, 0);
            for (int k = 0; k < T; ++k) {
                alignas(16) float xbuf[8] = {};
                std::memcpy(xbuf, x + k * a.x_stride + n8, static_cast<size_t>(m) * sizeof(float));
                acc[i][k] = madd(wv, f32x8{wasm_v128_load(xbuf), wasm_v128_load(xbuf + 4)}, acc[i][k]);
            }
        }
    }
    if constexpr (R == 4 && T == 1) {
        const f32x8 rows[4] = {acc[0][0], acc[1][0], acc[2][0], acc[3][0]};
        wasm_v128_store(a.y + t * a.y_stride + r, reduce8_4(rows));  // consecutive in y
    } else {
        for (int i = 0; i < R; ++i)
            for (int k = 0; k < T; ++k) a.y[(t + k) * a.y_stride + r + i] = reduce8(acc[i][k]);
    }
}

// Rows of at most this many elements are short: for one token, the sum of a row's lanes costs as
// much as the row, and the rows (attention's keys, one head of the cache) are few and in cache.
inline constexpr int64_t short_row_cols = 256;

template <class Row>
inline void rows_float(const matmul_args& a, int64_t r0, int64_t r1) {
    if (a.n_tokens == 1) {
        // one row at a time: one stream of weights, which the hardware prefetcher follows (wasm has
        // no prefetch instruction); 2 rows at once run 2.5x slower on a model larger than the cache.
        // Short rows go 4 at a time, their sums reduced together.
        int64_t r = r0;
        if (a.cols <= short_row_cols)
            for (; r + 4 <= r1; r += 4) tile_float<Row, 4, 1>(a, r, 0);
        for (; r < r1; ++r) tile_float<Row, 1, 1>(a, r, 0);
        return;
    }
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) {
        int64_t t = 0;
        for (; t + 2 <= a.n_tokens; t += 2) tile_float<Row, 2, 2>(a, r, t);
        for (; t < a.n_tokens; ++t) tile_float<Row, 2, 1>(a, r, t);
    }
    for (; r < r1; ++r)
        for (int64_t t = 0; t < a.n_tokens; ++t) tile_float<Row, 1, 1>(a, r, t);
}

// --- quantized weights
//
// A block type knows how to take one weight block's exact integer dot product with an activation
// block (the 32 quants of x.block(t, b)) as an i32x4 whose 4 lanes sum to it, up to a correction
// that is the same for every row:
//   act                      what it reads from the activation block, once per tile
//   load_act(y)              that, from the activation quants y[32]
//   dot(block, act)          the i32x4 for one weight block
//   correction(x, t, b)      the integer added to every row's sum (Q4_0: -8 sum y)
// and its isum() is the same integer for scalar::dot_q8, which takes the rows left over from the
// tiles. The fp16 scale sits in the block's first 2 bytes.
//
// SIMD128 has no 8-bit dot product: the quants are widened to int16 and multiplied in pairs
// (i32x4.dot_i16x8_s). The relaxed-SIMD builds (LUMEN_CPU_HAVE_WASM_RELAXED, see simd.hpp) use
// i32x4.relaxed_dot_i8x16_i7x16_add_s instead: 4 products of an int8 by a 7-bit (0..127) value
// summed into each lane, one instruction (vpdpbusd) where the CPU has AVX-VNNI. Its result is
// defined only when the second operand is in 0..127, and then it is exact; the kernels keep it so.

// A Q4_0 block's 32 nibbles as bytes: elements 0..15 (the low nibbles) and 16..31 (the high ones).
struct nibbles {
    v128_t lo, hi;
};
inline nibbles load_nibbles(const std::byte* block) {
    const v128_t q = wasm_v128_load(block + 2);
    return {wasm_v128_and(q, wasm_i8x16_splat(0x0f)), wasm_u8x16_shr(q, 4)};
}

#if defined(LUMEN_CPU_HAVE_WASM_RELAXED)

// c + (lane i: a[4i] b[4i] + ... + a[4i+3] b[4i+3]), a int8, b in 0..127: the relaxed-SIMD
// instruction i32x4.relaxed_dot_i8x16_i7x16_add_s. Clang 14 (Debian's Emscripten) has no builtin
// for it, so this emits f32x4.relaxed_fma, which no other code of the relaxed build uses, and the
// build rewrites every one of them in the linked module (web/scripts/relaxed_dot.mjs).
inline v128_t dot_i8x16_i7x16_add(v128_t a, v128_t b, v128_t c) {
    return reinterpret_cast<v128_t>(__builtin_wasm_fma_f32x4(reinterpret_cast<__f32x4>(a), reinterpret_cast<__f32x4>(b),
                                                             reinterpret_cast<__f32x4>(c)));
}

// Q8_0: with m = -1 where y < 0 (else 0), (w ^ m) |y| = w y - |y| where y < 0 (as ~w = -w - 1), and
// w ^ m is an int8 for every w, -128 included; so sum w y = sum (w ^ m) |y| - sum_{y<0} y, the last
// term (the correction) kept by the activation quantizer (q8_activations::neg_sum). |y| and m depend
// on the activations only: rows_q8 works them out once per call (prepared_acts), not once per tile.
struct q8_0_block : scalar::q8_0_block {
    static constexpr int64_t bytes = block_q8_0_bytes;
    static constexpr int tile_rows = 8;
    struct act {
        v128_t abs[2], negative[2];
    };
    static act load_act(const int8_t* y) {
        const v128_t y0 = wasm_v128_load(y), y1 = wasm_v128_load(y + 16);
        const v128_t a0 = wasm_i8x16_abs(y0), a1 = wasm_i8x16_abs(y1);
        return {{a0, a1}, {wasm_i8x16_lt(y0, a0), wasm_i8x16_lt(y1, a1)}};  // y < |y|: y < 0
    }
    static v128_t dot(const std::byte* block, const act& y) {
        const v128_t w0 = wasm_v128_load(block + 2), w1 = wasm_v128_load(block + 18);
        return dot_i8x16_i7x16_add(wasm_v128_xor(w1, y.negative[1]), y.abs[1],
                                   dot_i8x16_i7x16_add(wasm_v128_xor(w0, y.negative[0]), y.abs[0], wasm_i32x4_splat(0)));
    }
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -x.block_neg_sum(t, b); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t /*y_sum*/) {
        int32_t negative = 0;
        for (int k = 0; k < 32; ++k) negative += y[k] < 0 ? y[k] : 0;
        return sum_lanes(dot(row + b * bytes, load_act(y))) - negative;
    }

    // the act of the blocks of tokens t0 .. t1 - 1, grown as needed
    struct prepared_acts {
        int64_t t0 = 0, n_blocks = 0;
        std::vector<act> acts;
        void prepare(const q8_activations& x, int64_t first, int64_t last) {
            t0 = first;
            n_blocks = x.n_blocks;
            const auto n = static_cast<size_t>((last - first) * x.n_blocks);
            if (acts.size() < n) acts.resize(n);
            for (int64_t t = first; t < last; ++t)
                for (int64_t b = 0; b < x.n_blocks; ++b) acts[static_cast<size_t>((t - first) * n_blocks + b)] = load_act(x.block(t, b));
        }
        const act& at(int64_t t, int64_t b) const { return acts[static_cast<size_t>((t - t0) * n_blocks + b)]; }
    };
};

// Q4_0: the nibbles (0..15) are the 7-bit operand, the activation quants the int8 one.
struct q4_0_block : scalar::q4_0_block {
    static constexpr int64_t bytes = block_q4_0_bytes;
    static constexpr int tile_rows = 8;
    struct act {
        v128_t y[2];
    };
    static act load_act(const int8_t* y) { return {{wasm_v128_load(y), wasm_v128_load(y + 16)}}; }
    static v128_t dot(const std::byte* block, const act& y) {
        const nibbles q = load_nibbles(block);
        return dot_i8x16_i7x16_add(y.y[1], q.hi, dot_i8x16_i7x16_add(y.y[0], q.lo, wasm_i32x4_splat(0)));
    }
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -8 * x.block_sum(t, b); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t y_sum) {
        return sum_lanes(dot(row + b * bytes, load_act(y))) - 8 * y_sum;
    }
};

#else  // SIMD128 only

// the activation quants 0-7, 8-15, 16-23, 24-31 as int16
struct act16 {
    v128_t y[4];
};

inline act16 load_act16(const int8_t* y) {
    const v128_t y0 = wasm_v128_load(y), y1 = wasm_v128_load(y + 16);
    return {{wasm_i16x8_extend_low_i8x16(y0), wasm_i16x8_extend_high_i8x16(y0), wasm_i16x8_extend_low_i8x16(y1),
             wasm_i16x8_extend_high_i8x16(y1)}};
}

// the 32 quants of a block as 4 int16x8 against act16
inline v128_t dot_i16(const v128_t (&w)[4], const act16& y) {
    return wasm_i32x4_add(wasm_i32x4_add(wasm_i32x4_dot_i16x8(w[0], y.y[0]), wasm_i32x4_dot_i16x8(w[1], y.y[1])),
                          wasm_i32x4_add(wasm_i32x4_dot_i16x8(w[2], y.y[2]), wasm_i32x4_dot_i16x8(w[3], y.y[3])));
}

struct q8_0_block : scalar::q8_0_block {
    static constexpr int64_t bytes = block_q8_0_bytes;
    static constexpr int tile_rows = 4;
    using act = act16;
    static act load_act(const int8_t* y) { return load_act16(y); }
    static v128_t dot(const std::byte* block, const act& y) {
        const v128_t w0 = wasm_v128_load(block + 2), w1 = wasm_v128_load(block + 18);
        const v128_t w[4] = {wasm_i16x8_extend_low_i8x16(w0), wasm_i16x8_extend_high_i8x16(w0),
                             wasm_i16x8_extend_low_i8x16(w1), wasm_i16x8_extend_high_i8x16(w1)};
        return dot_i16(w, y);
    }
    static int32_t correction(const q8_activations&, int64_t, int64_t) { return 0; }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t /*y_sum*/) {
        return sum_lanes(dot(row + b * bytes, load_act(y)));
    }
};

// Q4_0: sum (nibble - 8) y = sum nibble y - 8 sum y
struct q4_0_block : scalar::q4_0_block {
    static constexpr int64_t bytes = block_q4_0_bytes;
    static constexpr int tile_rows = 4;
    using act = act16;
    static act load_act(const int8_t* y) { return load_act16(y); }
    static v128_t dot(const std::byte* block, const act& y) {
        const nibbles q = load_nibbles(block);
        const v128_t w[4] = {wasm_u16x8_extend_low_u8x16(q.lo), wasm_u16x8_extend_high_u8x16(q.lo),
                             wasm_u16x8_extend_low_u8x16(q.hi), wasm_u16x8_extend_high_u8x16(q.hi)};
        return dot_i16(w, y);
    }
    static int32_t correction(const q8_activations& x, int64_t t, int64_t b) { return -8 * x.block_sum(t, b); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t y_sum) {
        return sum_lanes(dot(row + b * bytes, load_act(y))) - 8 * y_sum;
    }
};

#endif  // LUMEN_CPU_HAVE_WASM_RELAXED

// lane i = the sum of v[i]'s lanes (integer adds: exact in any order)
inline v128_t sum_lanes_4(v128_t v0, v128_t v1, v128_t v2, v128_t v3) {
    const v128_t a = wasm_i32x4_add(wasm_i32x4_shuffle(v0, v1, 0, 4, 1, 5), wasm_i32x4_shuffle(v0, v1, 2, 6, 3, 7));
    const v128_t b = wasm_i32x4_add(wasm_i32x4_shuffle(v2, v3, 0, 4, 1, 5), wasm_i32x4_shuffle(v2, v3, 2, 6, 3, 7));
    // a = (v0: 0+2, v1: 0+2, v0: 1+3, v1: 1+3), b likewise for v2, v3
    return wasm_i32x4_add(wasm_i32x4_shuffle(a, b, 0, 1, 4, 5), wasm_i32x4_shuffle(a, b, 2, 3, 6, 7));
}

// the fp16 scales of 4 blocks, ws bytes apart, as floats (exact)
inline v128_t scales_4(const std::byte* block, int64_t ws) {
    v128_t h = wasm_i32x4_splat(0);
    h = wasm_v128_load16_lane(block, h, 0);
    h = wasm_v128_load16_lane(block + ws, h, 2);
    h = wasm_v128_load16_lane(block + 2 * ws, h, 4);
    h = wasm_v128_load16_lane(block + 3 * ws, h, 6);
    return half4_to_float(h);
}

// The activation blocks as a block type takes them: straight from x, or (a block type with
// prepared_acts) worked out once per call of rows_q8.
template <class Block>
struct direct_acts {
    const q8_activations& x;
    void prepare(const q8_activations&, int64_t, int64_t) {}
    typename Block::act at(int64_t t, int64_t b) const { return Block::load_act(x.block(t, b)); }
};

template <class Block>
concept has_prepared_acts = requires { typename Block::prepared_acts; };

// Loads one byte of every 64-byte line of [p, p + bytes) and drops it: WebAssembly has no prefetch
// instruction, but such a load brings the line into the cache all the same (and a wasm load may
// trap, so no engine removes it).
inline void touch_lines(const std::byte* p, int64_t bytes) {
    for (int64_t k = 0; k < bytes; k += 64) (void)*reinterpret_cast<const volatile std::byte*>(p + k);
}

// Rows r .. r + 4 G - 1, token t: lane i of acc[g] is row r + 4 g + i. (One token at a time: a
// tile of 2 tokens needs more than V8's 16 SIMD registers and is slower. G = 2, 8 rows, only for
// the relaxed block types, whose dot products need few registers.) With FloatScales, the blocks'
// scales come from a.w_scales (r a multiple of 4), else from the blocks' fp16 bits. Given `next`
// (the rows of the next tile), each block's step also touches a share of them, so that they are in
// the cache when their turn comes (the rows of a tile are too short for the hardware prefetchers to
// ramp up on): 1.8x faster on a matrix larger than the cache, 8% slower on one inside it.
template <class Block, int G, bool FloatScales, class Acts>
inline void tile_q8(const matmul_args& a, const Acts& acts, int64_t r, int64_t t, const std::byte* next) {
    const q8_activations& x = *a.xq;
    const std::byte* w = a.w + r * a.w_stride;
    const int64_t ws = a.w_stride;
    const float* w_scales = FloatScales ? a.w_scales + r * x.n_blocks : nullptr;  // (r / 4) * n_blocks * 4
    v128_t acc[G];
    for (int g = 0; g < G; ++g) acc[g] = wasm_f32x4_splat(0.0f);
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        if (next) touch_lines(next + b * 4 * G * Block::bytes, 4 * G * Block::bytes);  // rows are n_blocks blocks
        const typename Block::act y = acts.at(t, b);
        const v128_t correction = wasm_i32x4_splat(Block::correction(x, t, b));
        const v128_t dx = wasm_f32x4_splat(x.scale(t, b));
        for (int g = 0; g < G; ++g) {
            const std::byte* wb = w + 4 * g * ws + b * Block::bytes;
            const v128_t s = wasm_i32x4_add(sum_lanes_4(Block::dot(wb, y), Block::dot(wb + ws, y), Block::dot(wb + 2 * ws, y),
                                                        Block::dot(wb + 3 * ws, y)),
                                            correction);
            const v128_t dw = FloatScales ? wasm_v128_load(w_scales + (g * x.n_blocks + b) * 4) : scales_4(wb, ws);
            const v128_t scale = wasm_f32x4_mul(dw, dx);
            acc[g] = wasm_f32x4_add(wasm_f32x4_mul(scale, wasm_f32x4_convert_i32x4(s)), acc[g]);
        }
    }
    for (int g = 0; g < G; ++g) wasm_v128_store(a.y + t * a.y_stride + r + 4 * g, acc[g]);  // consecutive in y
}

// Tiles of 8 (relaxed) or 4 rows, then 4, then the rows left over one by one (scalar::dot_q8
// with Block::isum), in chunks of tokens whose activations stay in cache while the rows go by.
template <class Block>
inline void rows_q8(const matmul_args& a, int64_t r0, int64_t r1) {
    const q8_activations& x = *a.xq;
    const int64_t chunk = std::max<int64_t>(1, 64 * 1024 / std::max<int64_t>(a.cols, 1));
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
        const int64_t t1 = std::min(a.n_tokens, t0 + chunk);
        auto tiles_with = [&]<bool FloatScales>(auto& acts) {
            int64_t r = r0;
            // the next tile's rows, to touch while the first token goes through this one
            auto next = [&](int64_t r_next, int64_t t) { return t == t0 && r_next + 8 <= r1 ? a.w + r_next * a.w_stride : nullptr; };
            if constexpr (Block::tile_rows == 8)
                for (; r + 8 <= r1; r += 8)
                    for (int64_t t = t0; t < t1; ++t) tile_q8<Block, 2, FloatScales>(a, acts, r, t, next(r + 8, t));
            for (; r + 4 <= r1; r += 4)
                for (int64_t t = t0; t < t1; ++t) tile_q8<Block, 1, FloatScales>(a, acts, r, t, next(r + 4, t));
            for (; r < r1; ++r)
                for (int64_t t = t0; t < t1; ++t) a.y[t * a.y_stride + r] = scalar::dot_q8<Block>(a.w + r * a.w_stride, x, t);
        };
        auto tiles = [&](auto& acts) {
            acts.prepare(x, t0, t1);
            if (a.w_scales && r0 % 4 == 0) tiles_with.template operator()<true>(acts);
            else tiles_with.template operator()<false>(acts);
        };
        if constexpr (has_prepared_acts<Block>) {
#if defined(__EMSCRIPTEN_PTHREADS__)
            thread_local typename Block::prepared_acts acts;
#else
            static typename Block::prepared_acts acts;  // (a thread_local needs atomics in wasm-ld)
#endif
            tiles(acts);
        } else {
            direct_acts<Block> acts{x};
            tiles(acts);
        }
    }
}

}  // namespace lumen::cpu::wasm128

#endif  // LUMEN_CPU_HAVE_WASM
