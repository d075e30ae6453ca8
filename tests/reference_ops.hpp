// reference_ops.hpp: the slow, obviously correct twins of the CPU kernels and of the block
// decoders, as xtensor expressions in double precision; the tests use them as the oracle.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace ref {

using vec = xt::xtensor<double, 1>;
using mat = xt::xtensor<double, 2>;

inline vec from_floats(const float* x, int64_t n) {
    return xt::cast<double>(xt::adapt(x, static_cast<size_t>(n), xt::no_ownership(), std::vector<size_t>{static_cast<size_t>(n)}));
}

inline mat from_floats(const float* x, int64_t rows, int64_t cols) {
    const std::vector<size_t> shape{static_cast<size_t>(rows), static_cast<size_t>(cols)};
    return xt::cast<double>(xt::adapt(x, static_cast<size_t>(rows * cols), xt::no_ownership(), shape));
}

// --- decoders of stored elements, straight from the format definitions

// IEEE binary16 by its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
inline double half_value(uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double sign = s ? -1.0 : 1.0;
    if (e == 0x1f) return m == 0 ? sign * std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
    if (e == 0) return sign * std::ldexp(m / 1024.0, -14);
    return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

// bfloat16 by its definition: the upper half of a binary32.
inline double bf16_value(uint16_t h) {
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t load_u16(const std::byte* p) {
    return static_cast<uint16_t>(std::to_integer<uint16_t>(p[0]) | (std::to_integer<uint16_t>(p[1]) << 8));
}

// Q8_0 blocks (34 bytes: fp16 d, int8 q[32]) -> x = q * d, as a (n,) vector
inline vec dequantize_q8_0(const std::byte* data, int64_t n) {
    const size_t nb = static_cast<size_t>(n / 32);
    mat q = xt::zeros<double>({nb, size_t{32}});
    vec d = xt::zeros<double>({nb});
    for (size_t b = 0; b < nb; ++b) {
        const std::byte* block = data + b * 34;
        d(b) = half_value(load_u16(block));
        for (size_t j = 0; j < 32; ++j) q(b, j) = static_cast<int8_t>(std::to_integer<uint8_t>(block[2 + j]));
    }
    mat x = q * xt::view(d, xt::all(), xt::newaxis());
    return xt::flatten(x);
}

// Q4_0 blocks (18 bytes: fp16 d, 16 bytes of nibbles) -> x[j] = (lo_j - 8) d, x[16 + j] = (hi_j - 8) d
inline vec dequantize_q4_0(const std::byte* data, int64_t n) {
    const size_t nb = static_cast<size_t>(n / 32);
    xt::xtensor<int, 2> bytes = xt::zeros<int>({nb, size_t{16}});
    vec d = xt::zeros<double>({nb});
    for (size_t b = 0; b < nb; ++b) {
        const std::byte* block = data + b * 18;
        d(b) = half_value(load_u16(block));
        for (size_t j = 0; j < 16; ++j) bytes(b, j) = std::to_integer<int>(block[2 + j]);
    }
    xt::xtensor<int, 2> nibbles = xt::concatenate(xt::xtuple(bytes & 0x0f, xt::right_shift(bytes, 4)), 1);
    mat x = xt::cast<double>(nibbles - 8) * xt::view(d, xt::all(), xt::newaxis());
    return xt::flatten(x);
}

// --- the ops

// y (rows,) = W (rows, cols) @ x (cols,)
inline vec matvec(const mat& w, const vec& x) { return xt::sum(w * xt::view(x, xt::newaxis(), xt::all()), {1}); }

// y (rows,) = |W| @ |x|, the scale of the rounding error of a float dot product
inline vec abs_matvec(const mat& w, const vec& x) { return matvec(xt::abs(w), xt::abs(x)); }

// Y (n, rows) = X (n, cols) @ W^T
inline mat matmul(const mat& w, const mat& x) {
    return xt::sum(xt::view(x, xt::all(), xt::newaxis(), xt::all()) * xt::view(w, xt::newaxis(), xt::all(), xt::all()), {2});
}

// x / sqrt(mean(x^2) + eps) * weight
inline vec rmsnorm(const vec& x, const vec& weight, double eps) {
    return x / std::sqrt(xt::mean(x * x)() + eps) * weight;
}

// exp(x - max x) / sum exp(x - max x)
inline vec softmax(const vec& x) {
    vec e = xt::exp(x - xt::amax(x)());
    return e / xt::sum(e)();
}

inline vec silu(const vec& x) { return x / (1.0 + xt::exp(-x)); }

// silu(gate) * up
inline vec swiglu(const vec& gate, const vec& up) { return silu(gate) * up; }

// vec (n_heads, head_dim) with each pair (2i, 2i+1), i < rope_dims/2, turned by
// theta_i = pos * base^(-2i / rope_dims); the rest unchanged.
inline mat rope_adjacent_pairs(const mat& v, int64_t rope_dims, int64_t pos, double base) {
    mat out = v;
    if (rope_dims == 0) return out;
    const vec i2 = xt::arange<double>(0.0, static_cast<double>(rope_dims), 2.0);  // 2i
    const vec theta = static_cast<double>(pos) * xt::pow(base, -i2 / static_cast<double>(rope_dims));
    const auto c = xt::view(xt::cos(theta), xt::newaxis(), xt::all());
    const auto s = xt::view(xt::sin(theta), xt::newaxis(), xt::all());
    const mat even = xt::view(v, xt::all(), xt::range(0, rope_dims, 2));
    const mat odd = xt::view(v, xt::all(), xt::range(1, rope_dims, 2));
    xt::view(out, xt::all(), xt::range(0, rope_dims, 2)) = even * c - odd * s;
    xt::view(out, xt::all(), xt::range(1, rope_dims, 2)) = even * s + odd * c;
    return out;
}

}  // namespace ref
