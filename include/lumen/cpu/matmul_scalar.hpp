// cpu/matmul_scalar.hpp: the portable matrix-product kernels, for every weight type; always
// compiled, and the ones in use when no SIMD path is (or when LUMEN_FORCE_SCALAR is defined).
//
// They define the arithmetic that the SIMD kernels reproduce bit for bit (see simd.hpp):
//   float weights (F32, F16, BF16): y = reduce8(acc) where lane l accumulates
//     acc[l] = madd(w[j], x[j], acc[l]) for j = l mod 8, in increasing j;
//   quantized weights (Q8_0, Q4_0, Q4_K, Q6_K) against 8-bit activations (quantize_activations.hpp):
//     y = sum over blocks b, in order, of acc = madd(dw_b * dx_b, isum_b, acc), where isum_b is the
//     exact integer dot product of the block's quants (Q4_0: nibble - 8) with the activation quants
//     (and for Q4_K a second term for its minimum, see matmul_kquants.hpp).
// So a result never depends on how rows and tokens are tiled or split over threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../detail/fp16.hpp"
#include "../quant.hpp"
#include "matmul_args.hpp"
#include "simd.hpp"

namespace lumen::cpu::scalar {

// --- float weights

struct f32_row {
    static float at(const std::byte* row, int64_t j) {
        float v;
        std::memcpy(&v, row + 4 * j, 4);
        return v;
    }
};
struct f16_row {
    static float at(const std::byte* row, int64_t j) {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        return detail::fp16_to_fp32(h);
    }
};
struct bf16_row {
    static float at(const std::byte* row, int64_t j) {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        return detail::bf16_to_fp32(h);
    }
};

// row (n,) . x (n,) in the lane order above
template <class Row>
inline float dot_float(const std::byte* row, const float* x, int64_t n) {
    float acc[8] = {};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) acc[l] = madd(Row::at(row, j + l), x[j + l], acc[l]);
    for (int l = 0; j + l < n; ++l) acc[l] = madd(Row::at(row, j + l), x[j + l], acc[l]);
    return reduce8(acc);
}

template <class Row>
inline void rows_float(const matmul_args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t t = 0; t < a.n_tokens; ++t)
            a.y[t * a.y_stride + r] = dot_float<Row>(a.w + r * a.w_stride, a.x + t * a.x_stride, a.cols);
}

// --- quantized weights
//
// A block type describes activation block b (elements 32 b .. 32 b + 31) of a weight row:
//   scale(row, b)               the float that multiplies the block's integer dot product
//   isum(row, b, y, y_sum)      that exact integer dot product with the activation quants y[32]
//                               (y_sum = their sum)
// and, for types with a per-block minimum (Q4_K), has_min with min_scale(row, b) and
// min_isum(row, b, y_sum), a second term accumulated after the first.

// Q8_0 block (fp16 d, int8 q[32]) . y[32]
struct q8_0_block {
    static constexpr bool has_min = false;
    static float scale(const std::byte* row, int64_t b) { return quant::load_scale(row + b * block_q8_0_bytes); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t /*y_sum*/) {
        const auto* q = reinterpret_cast<const int8_t*>(row + b * block_q8_0_bytes + 2);
        int32_t s = 0;
        for (int k = 0; k < 32; ++k) s += q[k] * y[k];
        return s;
    }
};

// Q4_0 block (fp16 d, 16 bytes of nibbles: low = elements 0..15, high = 16..31) . y[32], as
// sum (nibble - 8) y = sum nibble y - 8 sum y
struct q4_0_block {
    static constexpr bool has_min = false;
    static float scale(const std::byte* row, int64_t b) { return quant::load_scale(row + b * block_q4_0_bytes); }
    static int32_t isum(const std::byte* row, int64_t b, const int8_t* y, int32_t y_sum) {
        const auto* q = reinterpret_cast<const uint8_t*>(row + b * block_q4_0_bytes + 2);
        int32_t s = 0;  // two simple loops: compilers vectorise them
        for (int k = 0; k < 16; ++k) s += (q[k] & 0x0f) * y[k];
        for (int k = 0; k < 16; ++k) s += (q[k] >> 4) * y[k + 16];
        return s - 8 * y_sum;
    }
};

// row . x[t]: acc = madd(scale * dx, isum, acc) block by block (then the min term, if any)
template <class Block>
inline float dot_q8(const std::byte* row, const q8_activations& x, int64_t t) {
    float acc = 0.0f;
    for (int64_t b = 0; b < x.n_blocks; ++b) {
        const float dx = x.scale(t, b);
        const int32_t s = Block::isum(row, b, x.block(t, b), x.block_sum(t, b));
        acc = madd(Block::scale(row, b) * dx, static_cast<float>(s), acc);
        if constexpr (Block::has_min)
            acc = madd(Block::min_scale(row, b) * dx, static_cast<float>(Block::min_isum(row, b, x.block_sum(t, b))), acc);
    }
    return acc;
}

template <class Block>
inline void rows_q8(const matmul_args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t t = 0; t < a.n_tokens; ++t) a.y[t * a.y_stride + r] = dot_q8<Block>(a.w + r * a.w_stride, *a.xq, t);
}

}  // namespace lumen::cpu::scalar
