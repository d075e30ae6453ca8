// quant.hpp: ggml's tensor element formats, byte for byte: the block layouts of the quantized
// types and row conversions float <-> F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K with ggml's reference
// rounding (the k-quant super-block formats Q4_K and Q6_K live in quant_k.hpp).
//
// A quantized row is a run of blocks; each block covers `block_size` consecutive elements with one
// fp16 scale d. The formats (all little-endian, blocks packed with no padding):
//   Q8_0  34 bytes / 32 elements: fp16 d, int8 qs[32];  x[j] = qs[j] * d
//   Q4_0  18 bytes / 32 elements: fp16 d, uint8 qs[16]; x[j]      = ((qs[j] & 0x0f) - 8) * d,
//                                                       x[j + 16] = ((qs[j] >> 4)   - 8) * d
// A new format (Q5_K, ...) adds its block struct, a block dequantizer, a block quantizer, and
// one case in each switch at the bottom of this file.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "detail/fp16.hpp"
#include "error.hpp"
#include "quant_k.hpp"
#include "tensor.hpp"

namespace lumen {

// --- block layouts (documentation and size checks; the code reads bytes, so no alignment is assumed)

inline constexpr int64_t qk8_0 = 32;  // elements per Q8_0 block
inline constexpr int64_t qk4_0 = 32;  // elements per Q4_0 block

struct block_q8_0 {
    uint16_t d;       // scale, IEEE half
    int8_t qs[qk8_0];  // quants
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes, as in ggml");

struct block_q4_0 {
    uint16_t d;            // scale, IEEE half
    uint8_t qs[qk4_0 / 2];  // nibbles: low = elements 0..15, high = elements 16..31
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes, as in ggml");

inline constexpr int64_t block_q8_0_bytes = sizeof(block_q8_0);
inline constexpr int64_t block_q4_0_bytes = sizeof(block_q4_0);

namespace quant {

// The fp16 scale at the start of a block, as a float.
inline float load_scale(const std::byte* block) {
    uint16_t h;
    std::memcpy(&h, block, sizeof h);
    return detail::fp16_to_fp32(h);
}

inline void store_scale(std::byte* block, float d) {
    const uint16_t h = detail::fp32_to_fp16(d);
    std::memcpy(block, &h, sizeof h);
}

inline void check_finite_block(const float* x, int64_t n, std::string_view type) {
    for (int64_t j = 0; j < n; ++j)
        if (!std::isfinite(x[j]))
            throw error("quantize_row: cannot quantize a NaN or infinite value to " + std::string(type));
}

// --- Q8_0

// out[0..32) = qs[j] * d
inline void dequantize_block_q8_0(const std::byte* block, float* out) {
    const float d = load_scale(block);
    const auto* qs = reinterpret_cast<const uint8_t*>(block + 2);
    for (int64_t j = 0; j < qk8_0; ++j) out[j] = static_cast<float>(static_cast<int8_t>(qs[j])) * d;
}

// ggml's quantize_row_q8_0_ref: d = amax / 127 (stored as fp16), q = roundf(x / d) using the
// unrounded d; an all-zero block gets d = 0 and q = 0.
inline void quantize_block_q8_0(const float* x, std::byte* block) {
    check_finite_block(x, qk8_0, "Q8_0");
    float amax = 0.0f;
    for (int64_t j = 0; j < qk8_0; ++j) {
        const float a = std::fabs(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_scale(block, d);
    auto* qs = reinterpret_cast<uint8_t*>(block + 2);
    for (int64_t j = 0; j < qk8_0; ++j)
        qs[j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));  // |x * id| <= 127
}

// --- Q4_0

// out[j] = ((qs[j] & 0x0f) - 8) * d, out[j + 16] = ((qs[j] >> 4) - 8) * d
inline void dequantize_block_q4_0(const std::byte* block, float* out) {
    const float d = load_scale(block);
    const auto* qs = reinterpret_cast<const uint8_t*>(block + 2);
    for (int64_t j = 0; j < qk4_0 / 2; ++j) {
        out[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
        out[j + qk4_0 / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
}

// x * id + 8.5f with the product rounded to float before the add, whatever the compiler's
// floating-point contraction setting (an FMA would change the truncation below at its edges).
inline float shifted_q4(float x, float id) {
    volatile float product = x * id;
    return product + 8.5f;
}

// ggml's quantize_row_q4_0_ref: max = the element of largest magnitude, with its sign (the first one
// on ties); d = max / -8 (stored as fp16), q = min(15, trunc(x / d + 8.5)) using the unrounded d.
// So the extreme element maps to q = 0 (value -8 d = max) and the other sign reaches at most 15.
inline void quantize_block_q4_0(const float* x, std::byte* block) {
    check_finite_block(x, qk4_0, "Q4_0");
    float amax = 0.0f;
    float max = 0.0f;
    for (int64_t j = 0; j < qk4_0; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_scale(block, d);
    auto* qs = reinterpret_cast<uint8_t*>(block + 2);
    for (int64_t j = 0; j < qk4_0 / 2; ++j) {
        // x * id + 8.5 lies in [0.5, 16.5] up to rounding, so truncation toward zero is in range
        const int q0 = static_cast<int>(shifted_q4(x[j], id));
        const int q1 = static_cast<int>(shifted_q4(x[j + qk4_0 / 2], id));
        qs[j] = static_cast<uint8_t>((q0 < 15 ? q0 : 15) | ((q1 < 15 ? q1 : 15) << 4));
    }
}

// --- whole rows

inline void check_row(const char* what, dtype type, int64_t n) {
    if (n < 0) throw error(std::string(what) + ": negative element count " + std::to_string(n));
    (void)row_bytes(type, n);  // throws unless n fills whole blocks
}

[[noreturn]] inline void unsupported(const char* what, dtype type) {
    const dtype_traits* t = find_dtype(static_cast<uint32_t>(type));
    const std::string name = t ? std::string(t->name) : "id " + std::to_string(static_cast<uint32_t>(type));
    throw error(std::string(what) + ": tensor type " + name +
                " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
}

}  // namespace quant

// dst[0..n) = the n elements of type `type` stored at src, as floats. n must fill whole blocks.
inline void dequantize_row(dtype type, const std::byte* src, float* dst, int64_t n) {
    switch (type) {
        case dtype::f32:
            quant::check_row("dequantize_row", type, n);
            if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
            return;
        case dtype::f16:
            quant::check_row("dequantize_row", type, n);
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, src + 2 * i, 2);
                dst[i] = detail::fp16_to_fp32(h);
            }
            return;
        case dtype::bf16:
            quant::check_row("dequantize_row", type, n);
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, src + 2 * i, 2);
                dst[i] = detail::bf16_to_fp32(h);
            }
            return;
        case dtype::q8_0:
            quant::check_row("dequantize_row", type, n);
            for (int64_t b = 0; b < n / qk8_0; ++b)
                quant::dequantize_block_q8_0(src + b * block_q8_0_bytes, dst + b * qk8_0);
            return;
        case dtype::q4_0:
            quant::check_row("dequantize_row", type, n);
            for (int64_t b = 0; b < n / qk4_0; ++b)
                quant::dequantize_block_q4_0(src + b * block_q4_0_bytes, dst + b * qk4_0);
            return;
        case dtype::q4_k:
            quant::check_row("dequantize_row", type, n);
            for (int64_t b = 0; b < n / qk_k; ++b)
                quant::dequantize_block_q4_k(src + b * block_q4_k_bytes, dst + b * qk_k);
            return;
        case dtype::q6_k:
            quant::check_row("dequantize_row", type, n);
            for (int64_t b = 0; b < n / qk_k; ++b)
                quant::dequantize_block_q6_k(src + b * block_q6_k_bytes, dst + b * qk_k);
            return;
        default:
            quant::unsupported("dequantize_row", type);
    }
}

// dst = the n floats at src stored as type `type` (row_bytes(type, n) bytes), rounding exactly as
// ggml's reference quantizers do, so the bytes equal what llama.cpp writes for the same input.
// NaN or infinite inputs to the block types throw lumen::error (ggml's result for them is undefined).
inline void quantize_row(dtype type, const float* src, std::byte* dst, int64_t n) {
    switch (type) {
        case dtype::f32:
            quant::check_row("quantize_row", type, n);
            if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
            return;
        case dtype::f16:
            quant::check_row("quantize_row", type, n);
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = detail::fp32_to_fp16(src[i]);
                std::memcpy(dst + 2 * i, &h, 2);
            }
            return;
        case dtype::bf16:
            quant::check_row("quantize_row", type, n);
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = detail::fp32_to_bf16(src[i]);
                std::memcpy(dst + 2 * i, &h, 2);
            }
            return;
        case dtype::q8_0:
            quant::check_row("quantize_row", type, n);
            for (int64_t b = 0; b < n / qk8_0; ++b)
                quant::quantize_block_q8_0(src + b * qk8_0, dst + b * block_q8_0_bytes);
            return;
        case dtype::q4_0:
            quant::check_row("quantize_row", type, n);
            for (int64_t b = 0; b < n / qk4_0; ++b)
                quant::quantize_block_q4_0(src + b * qk4_0, dst + b * block_q4_0_bytes);
            return;
        case dtype::q4_k:
            quant::check_row("quantize_row", type, n);
            for (int64_t b = 0; b < n / qk_k; ++b)
                quant::quantize_block_q4_k(src + b * qk_k, dst + b * block_q4_k_bytes);
            return;
        case dtype::q6_k:
            quant::check_row("quantize_row", type, n);
            for (int64_t b = 0; b < n / qk_k; ++b)
                quant::quantize_block_q6_k(src + b * qk_k, dst + b * block_q6_k_bytes);
            return;
        default:
            quant::unsupported("quantize_row", type);
    }
}

}  // namespace lumen
