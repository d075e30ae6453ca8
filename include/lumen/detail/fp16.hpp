// detail/fp16.hpp: IEEE binary16 (half) and bfloat16 <-> float conversions, bit-exact with ggml's
// reference conversions, written with integer operations only (no dependence on FP rounding mode).
#pragma once

#include <bit>
#include <cstdint>

namespace lumen::detail {

// half -> float, exact for every one of the 65536 halves: zeros, subnormals, normals, infinities;
// a NaN stays a NaN with its payload shifted into the float mantissa. Written without branches
// (the conditions become selects) so that loops over it vectorise.
inline float fp16_to_fp32(uint16_t h) {
    // signed 32-bit arithmetic and masks instead of branches: SIMD units handle these
    const int32_t sign = static_cast<int32_t>(h & 0x8000u) << 16;
    const int32_t magnitude = static_cast<int32_t>(h & 0x7fffu);  // exponent and mantissa
    // normal: shift into place and rebias the exponent from 15 to 127 (add 112 << 23)
    int32_t bits = (magnitude << 13) + 0x38000000;
    // infinity or NaN: exponent 31 must become 255, so add 112 << 23 once more
    const int32_t special = -static_cast<int32_t>(magnitude >= 0x7c00);  // all ones or zero
    bits += 0x38000000 & special;
    // zero or subnormal: mantissa * 2^-24, exact in float
    const int32_t small = -static_cast<int32_t>(magnitude < 0x0400);
    const int32_t subnormal = std::bit_cast<int32_t>(static_cast<float>(magnitude) * 0x1p-24f);
    bits = (subnormal & small) | (bits & ~small);
    return std::bit_cast<float>(sign | bits);
}

// float -> half, rounding to nearest, ties to even (as ggml's GGML_FP32_TO_FP16 reference and the
// F16C instruction do). Magnitudes from 65520 up become infinity; any NaN becomes the quiet NaN
// 0x7e00 with the sign kept, as ggml's reference does.
inline uint16_t fp32_to_fp16(float f) {
    const uint32_t bits = std::bit_cast<uint32_t>(f);
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
    if (magnitude >= 0x38800000u) {  // >= 2^-14: a normal half
        // rebias 127 -> 15, then drop 13 mantissa bits rounding to nearest even; a carry out of
        // the mantissa correctly bumps the exponent
        const uint32_t rebiased = magnitude - 0x38000000u;
        return static_cast<uint16_t>(sign | ((rebiased + 0x0fffu + ((rebiased >> 13) & 1u)) >> 13));
    }
    // a subnormal half (or zero): the result counts units of 2^-24
    const uint32_t exponent = magnitude >> 23;
    if (exponent < 102) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;  // value = mantissa * 2^(exponent-150)
    const uint32_t shift = 126 - exponent;                           // 14..24
    uint32_t q = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t half_unit = 1u << (shift - 1);
    if (rest > half_unit || (rest == half_unit && (q & 1u))) ++q;  // may reach 0x400, the smallest normal
    return static_cast<uint16_t>(sign | q);
}

// bfloat16 -> float: the top 16 bits of the float, exact.
inline float bf16_to_fp32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// float -> bfloat16, rounding to nearest, ties to even, as ggml's ggml_compute_fp32_to_bf16: a NaN
// keeps its top bits and is forced quiet (| 0x40), subnormals are rounded (not flushed), and
// values that round past the largest bf16 become infinity.
inline uint16_t fp32_to_bf16(float f) {
    const uint32_t bits = std::bit_cast<uint32_t>(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
    return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace lumen::detail
