// test_quant.cpp: half/bfloat16 conversions and the Q8_0/Q4_0 block formats: exact bytes for
// hand-worked blocks, exhaustive fp16 checks, round-trip error bounds and error handling.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/detail/fp16.hpp>
#include <lumen/quant.hpp>

#include "reference_ops.hpp"

using lumen::dtype;
using lumen::detail::bf16_to_fp32;
using lumen::detail::fp16_to_fp32;
using lumen::detail::fp32_to_bf16;
using lumen::detail::fp32_to_fp16;

namespace {

std::vector<uint8_t> quantize_bytes(dtype type, const std::vector<float>& x) {
    std::vector<std::byte> out(static_cast<size_t>(lumen::row_bytes(type, static_cast<int64_t>(x.size()))));
    lumen::quantize_row(type, x.data(), out.data(), static_cast<int64_t>(x.size()));
    std::vector<uint8_t> bytes(out.size());
    std::memcpy(bytes.data(), out.data(), out.size());
    return bytes;
}

std::vector<float> dequantize_bytes(dtype type, const std::vector<uint8_t>& bytes, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    lumen::dequantize_row(type, reinterpret_cast<const std::byte*>(bytes.data()), out.data(), n);
    return out;
}

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
    std::mt19937 gen(seed);
    std::vector<float> x(n);
    for (float& v : x) v = scale * (static_cast<float>(gen()) / 4294967296.0f * 2.0f - 1.0f);
    return x;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// fp16

TEST_CASE("fp16: every half converts to the value its bits define and back to the same bits", "[fp16]") {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        const double expected = ref::half_value(static_cast<uint16_t>(h));
        if (std::isnan(expected)) {
            REQUIRE(std::isnan(f));
            // ggml's reference gives the quiet NaN 0x7e00, sign kept
            REQUIRE(fp32_to_fp16(f) == ((h & 0x8000u) | 0x7e00u));
        } else {
            REQUIRE(static_cast<double>(f) == expected);
            REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));
            REQUIRE(fp32_to_fp16(f) == h);
        }
    }
}

TEST_CASE("fp16: halfway cases round to even, just off them to nearest", "[fp16]") {
    // Every pair of neighbouring finite halves, both signs, subnormals included; the midpoint has
    // 12 significant bits, so it is exact in float.
    for (uint32_t sign : {0u, 0x8000u}) {
        for (uint32_t h = 0; h < 0x7c00; ++h) {
            const uint16_t lo = static_cast<uint16_t>(sign | h), hi = static_cast<uint16_t>(sign | (h + 1));
            // above the largest half (0x7bff = 65504) rounding goes as if 65536 came next
            const double hi_value = h + 1 == 0x7c00 ? (sign ? -65536.0 : 65536.0) : ref::half_value(hi);
            const float mid = static_cast<float>((ref::half_value(lo) + hi_value) / 2.0);
            const uint16_t even = (h & 1u) ? hi : lo;
            REQUIRE(fp32_to_fp16(mid) == even);
            const float toward_lo = std::nextafter(mid, 0.0f);
            const float toward_hi = std::nextafter(mid, sign ? -INFINITY : INFINITY);
            REQUIRE(fp32_to_fp16(toward_lo) == lo);
            REQUIRE(fp32_to_fp16(toward_hi) == hi);
        }
    }
}

TEST_CASE("fp16: special values and the edges of the range", "[fp16]") {
    CHECK(fp32_to_fp16(0.0f) == 0x0000);
    CHECK(fp32_to_fp16(-0.0f) == 0x8000);
    CHECK(fp32_to_fp16(1.0f) == 0x3c00);
    CHECK(fp32_to_fp16(-2.0f) == 0xc000);
    CHECK(fp32_to_fp16(65504.0f) == 0x7bff);        // largest half
    CHECK(fp32_to_fp16(65519.996f) == 0x7bff);      // below the midpoint to 65536
    CHECK(fp32_to_fp16(65520.0f) == 0x7c00);        // the midpoint rounds to even: infinity
    CHECK(fp32_to_fp16(1e10f) == 0x7c00);
    CHECK(fp32_to_fp16(-INFINITY) == 0xfc00);
    CHECK(fp32_to_fp16(INFINITY) == 0x7c00);
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);  // half of it: tie, to even (zero)
    CHECK(fp32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
    CHECK(fp32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 units: tie, to even (2)
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
    CHECK(fp32_to_fp16(from_bits(0x00000001)) == 0x0000);  // float subnormals vanish
    CHECK(fp32_to_fp16(from_bits(0x7fc00000)) == 0x7e00);
    CHECK(fp32_to_fp16(from_bits(0xff800001)) == 0xfe00);
    CHECK(std::isinf(fp16_to_fp32(0x7c00)));
    CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(fp16_to_fp32(0x3555) == Approx(0.333251953125).epsilon(0));
}

#if defined(__FLT16_MAX__)
TEST_CASE("fp16: agrees with the compiler's _Float16 conversions on random floats", "[fp16]") {
    std::mt19937 gen(7);
    for (int i = 0; i < 2000000; ++i) {
        // bias toward the half range: random sign and mantissa, exponent in [-30, 17]
        const uint32_t bits = (gen() & 0x807fffffu) | (static_cast<uint32_t>(97 + gen() % 48) << 23);
        const float f = from_bits(i % 4 == 0 ? gen() : bits);
        if (std::isnan(f)) continue;
        const _Float16 h = static_cast<_Float16>(f);
        REQUIRE(fp32_to_fp16(f) == std::bit_cast<uint16_t>(h));
    }
    for (uint32_t h = 0; h < 65536; ++h) {
        const float expected = static_cast<float>(std::bit_cast<_Float16>(static_cast<uint16_t>(h)));
        if (!std::isnan(expected)) REQUIRE(std::bit_cast<uint32_t>(fp16_to_fp32(static_cast<uint16_t>(h))) == std::bit_cast<uint32_t>(expected));
    }
}
#endif

// ------------------------------------------------------------------------------------------------
// bf16

TEST_CASE("bf16: round to nearest even, NaN made quiet, like ggml_compute_fp32_to_bf16", "[bf16]") {
    CHECK(fp32_to_bf16(1.0f) == 0x3f80);
    CHECK(fp32_to_bf16(from_bits(0x3f808000)) == 0x3f80);  // tie between 0x3f80 and 0x3f81: to even
    CHECK(fp32_to_bf16(from_bits(0x3f818000)) == 0x3f82);  // tie between 0x3f81 and 0x3f82: to even
    CHECK(fp32_to_bf16(from_bits(0x3f808001)) == 0x3f81);  // just above the tie
    CHECK(fp32_to_bf16(from_bits(0x3f807fff)) == 0x3f80);  // just below
    CHECK(fp32_to_bf16(from_bits(0xbf818000)) == 0xbf82);  // negative tie
    CHECK(fp32_to_bf16(INFINITY) == 0x7f80);
    CHECK(fp32_to_bf16(-INFINITY) == 0xff80);
    CHECK(fp32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80);  // the largest float rounds to infinity
    CHECK(fp32_to_bf16(from_bits(0x00008000)) == 0x0000);  // subnormal tie to even, not flushed
    CHECK(fp32_to_bf16(from_bits(0x00018000)) == 0x0002);
    CHECK(fp32_to_bf16(from_bits(0x00010001)) == 0x0001);
    CHECK(fp32_to_bf16(from_bits(0x7f800001)) == 0x7fc0);  // signalling NaN: top bits, quiet bit set
    CHECK(fp32_to_bf16(from_bits(0xff812345)) == 0xffc1);
    CHECK(fp32_to_bf16(-0.0f) == 0x8000);
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = bf16_to_fp32(static_cast<uint16_t>(h));
        CHECK((static_cast<double>(f) == ref::bf16_value(static_cast<uint16_t>(h)) || std::isnan(f)));
        if (!std::isnan(f)) REQUIRE(fp32_to_bf16(f) == h);
    }
}

// ------------------------------------------------------------------------------------------------
// Q8_0: d = amax / 127 (fp16), q = roundf(x / d), half away from zero

TEST_CASE("Q8_0: hand-worked blocks give ggml's exact bytes", "[quant][q8_0]") {
    SECTION("amax 127: d = 1, q = round half away from zero") {
        std::vector<float> x(32, 0.0f);
        x[0] = 127.0f;  // amax -> d = 1.0 (fp16 0x3c00), 1/d = 1
        x[1] = 2.5f;    // -> 3
        x[2] = -2.5f;   // -> -3
        x[3] = 0.49f;   // -> 0
        x[4] = -126.5f; // -> -127
        x[5] = 3.5f;    // -> 4
        x[6] = -0.5f;   // -> -1
        std::vector<uint8_t> expected(34, 0);
        expected[0] = 0x00, expected[1] = 0x3c;
        expected[2] = 127, expected[3] = 3, expected[4] = 0xfd, expected[5] = 0, expected[6] = 0x81, expected[7] = 4,
        expected[8] = 0xff;
        CHECK(quantize_bytes(dtype::q8_0, x) == expected);
    }
    SECTION("negative extreme: only the magnitude matters") {
        std::vector<float> x(32, 0.0f);
        x[31] = -63.5f;  // amax 63.5 -> d = 0.5 (0x3800), 1/d = 2
        x[0] = 1.25f;    // 2.5 -> 3
        x[1] = -0.75f;   // -1.5 -> -2
        x[2] = 0.2f;     // 0.4 -> 0
        std::vector<uint8_t> expected(34, 0);
        expected[0] = 0x00, expected[1] = 0x38, expected[2] = 3, expected[3] = 0xfe, expected[33] = 0x81;
        CHECK(quantize_bytes(dtype::q8_0, x) == expected);
    }
    SECTION("zero block: d = +0, all q = 0") {
        CHECK(quantize_bytes(dtype::q8_0, std::vector<float>(32, 0.0f)) == std::vector<uint8_t>(34, 0));
    }
    SECTION("a tiny block gets a subnormal fp16 scale") {
        std::vector<float> x(32, 0.0f);
        x[0] = 127.0f * std::ldexp(1.0f, -20);  // d = 2^-20 = 16 * 2^-24 -> fp16 0x0010
        x[1] = -std::ldexp(1.0f, -20);          // -> -1
        std::vector<uint8_t> expected(34, 0);
        expected[0] = 0x10, expected[2] = 127, expected[3] = 0xff;
        CHECK(quantize_bytes(dtype::q8_0, x) == expected);
    }
    SECTION("two blocks are independent and dequantize to q * d") {
        std::vector<float> x(64, 0.0f);
        x[0] = 127.0f, x[1] = 2.5f;
        x[32] = -63.5f, x[33] = 1.25f;
        const std::vector<uint8_t> bytes = quantize_bytes(dtype::q8_0, x);
        REQUIRE(bytes.size() == 68);
        const std::vector<float> y = dequantize_bytes(dtype::q8_0, bytes, 64);
        CHECK(y[0] == 127.0f);
        CHECK(y[1] == 3.0f);
        CHECK(y[32] == -63.5f);
        CHECK(y[33] == 1.5f);
        CHECK(y[2] == 0.0f);
    }
}

// ------------------------------------------------------------------------------------------------
// Q4_0: max = the element of largest magnitude with its sign, d = max / -8, q = min(15, trunc(x/d + 8.5))

TEST_CASE("Q4_0: hand-worked blocks give ggml's exact bytes", "[quant][q4_0]") {
    auto pack = [](uint16_t d, const std::vector<int>& q) {  // q[32] -> 18 bytes
        std::vector<uint8_t> b(18);
        b[0] = static_cast<uint8_t>(d & 0xff), b[1] = static_cast<uint8_t>(d >> 8);
        for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
        return b;
    };
    SECTION("negative max: d = -8 / -8 = 1, 1/d = 1") {
        std::vector<float> x(32, 0.0f);
        std::vector<int> q(32, 8);  // 0 -> trunc(8.5) = 8
        x[0] = -8.0f, q[0] = 0;     // 0.5 -> 0: the extreme maps to -8 d
        x[1] = 7.0f, q[1] = 15;     // 15.5 -> 15
        x[2] = 7.9f, q[2] = 15;     // 16.4 -> 16 -> clamped to 15
        x[3] = -0.5f, q[3] = 8;     // 8.0 -> 8
        x[4] = -0.6f, q[4] = 7;     // 7.9 -> 7
        x[5] = 0.49f, q[5] = 8;     // 8.99 -> 8
        x[16] = 0.5f, q[16] = 9;    // 9.0 -> 9: high nibble of byte 0
        x[17] = -3.0f, q[17] = 5;   // 5.5 -> 5
        x[31] = -7.5f, q[31] = 1;   // 1.0 -> 1
        CHECK(quantize_bytes(dtype::q4_0, x) == pack(0x3c00, q));
    }
    SECTION("positive max: d = 8 / -8 = -1, 1/d = -1") {
        std::vector<float> x(32, 0.0f);
        std::vector<int> q(32, 8);
        x[0] = 8.0f, q[0] = 0;     // -8 + 8.5 = 0.5 -> 0
        x[1] = -7.5f, q[1] = 15;   // 16.0 -> 16 -> 15
        x[2] = 1.0f, q[2] = 7;     // 7.5 -> 7
        x[20] = -2.0f, q[20] = 10;  // 10.5 -> 10
        CHECK(quantize_bytes(dtype::q4_0, x) == pack(0xbc00, q));
    }
    SECTION("equal magnitudes: the first one sets the sign of max") {
        std::vector<float> x(32, 0.0f);
        std::vector<int> q(32, 8);
        x[0] = 4.0f, q[0] = 0;    // max = 4, d = -0.5 (0xb800), 1/d = -2: -8 + 8.5 -> 0
        x[5] = -4.0f, q[5] = 15;  // 8 + 8.5 = 16.5 -> 16 -> 15
        CHECK(quantize_bytes(dtype::q4_0, x) == pack(0xb800, q));
        std::swap(x[0], x[5]);    // now max = -4, d = 0.5 (0x3800), 1/d = 2
        q[0] = 0, q[5] = 15;      // x[0] = -4 -> 0.5 -> 0; x[5] = 4 -> 16.5 -> 15
        CHECK(quantize_bytes(dtype::q4_0, x) == pack(0x3800, q));
    }
    SECTION("zero block: d = 0 / -8 = -0 (fp16 0x8000), every q = trunc(8.5) = 8") {
        CHECK(quantize_bytes(dtype::q4_0, std::vector<float>(32, 0.0f)) == pack(0x8000, std::vector<int>(32, 8)));
        const std::vector<float> y = dequantize_bytes(dtype::q4_0, pack(0x8000, std::vector<int>(32, 8)), 32);
        for (float v : y) CHECK(v == 0.0f);
    }
    SECTION("dequantize: low nibbles are elements 0..15, high nibbles 16..31, value (q - 8) d") {
        std::vector<int> q(32);
        for (int j = 0; j < 32; ++j) q[j] = j % 16;
        const std::vector<float> y = dequantize_bytes(dtype::q4_0, pack(0x3800, q), 32);  // d = 0.5
        for (int j = 0; j < 32; ++j) CHECK(y[j] == static_cast<float>((j % 16) - 8) * 0.5f);
    }
}

// ------------------------------------------------------------------------------------------------
// Round trips and the oracle decoders

TEST_CASE("round trip error stays within each type's bound", "[quant]") {
    const int64_t n = 32 * 37;
    for (float scale : {1e-3f, 1.0f, 300.0f}) {
        std::vector<float> x = random_floats(static_cast<size_t>(n), scale, 11);
        x[5] = 0.0f;
        for (int j = 64; j < 96; ++j) x[j] = 0.0f;  // one all-zero block
        SECTION("F32 is exact, scale " + std::to_string(scale)) {
            CHECK(dequantize_bytes(dtype::f32, quantize_bytes(dtype::f32, x), n) == x);
        }
        SECTION("F16: |err| <= 2^-11 |x| (normal range), scale " + std::to_string(scale)) {
            const std::vector<float> y = dequantize_bytes(dtype::f16, quantize_bytes(dtype::f16, x), n);
            for (int64_t i = 0; i < n; ++i) {
                const double bound = std::max(std::ldexp(std::fabs(static_cast<double>(x[i])), -11), std::ldexp(1.0, -25));  // subnormals: half a unit
                REQUIRE(std::fabs(static_cast<double>(y[i]) - x[i]) <= bound);
            }
        }
        SECTION("BF16: |err| <= 2^-8 |x|, scale " + std::to_string(scale)) {
            const std::vector<float> y = dequantize_bytes(dtype::bf16, quantize_bytes(dtype::bf16, x), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(std::fabs(static_cast<double>(y[i]) - x[i]) <= std::ldexp(std::fabs(x[i]), -8));
        }
        // fp16(d) is off d by at most 2^-11 d, or 2^-25 where d is a subnormal half
        auto fp16_error = [](double d) { return std::max(d * std::ldexp(1.0, -11), std::ldexp(1.0, -25)); };
        SECTION("Q8_0: |err| <= d/2 + 127 |d - fp16(d)|, d = amax/127, scale " + std::to_string(scale)) {
            const std::vector<float> y = dequantize_bytes(dtype::q8_0, quantize_bytes(dtype::q8_0, x), n);
            for (int64_t b = 0; b < n / 32; ++b) {
                double amax = 0;
                for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(static_cast<double>(x[b * 32 + j])));
                const double d = amax / 127.0;
                const double bound = d / 2 + 127 * fp16_error(d) + 1e-12;
                for (int j = 0; j < 32; ++j) REQUIRE(std::fabs(static_cast<double>(y[b * 32 + j]) - x[b * 32 + j]) <= bound);
            }
        }
        SECTION("Q4_0: |err| <= |d| + 8 |d - fp16(d)|, |d| = amax/8; the clamp at 15 costs up to one step, scale " +
                std::to_string(scale)) {
            const std::vector<float> y = dequantize_bytes(dtype::q4_0, quantize_bytes(dtype::q4_0, x), n);
            for (int64_t b = 0; b < n / 32; ++b) {
                double amax = 0;
                for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(static_cast<double>(x[b * 32 + j])));
                const double bound = amax / 8 + 8 * fp16_error(amax / 8) + 1e-12;
                for (int j = 0; j < 32; ++j) REQUIRE(std::fabs(static_cast<double>(y[b * 32 + j]) - x[b * 32 + j]) <= bound);
            }
        }
    }
}

TEST_CASE("dequantize_row equals the reference decoders exactly", "[quant]") {
    const int64_t n = 32 * 9;
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 5.0f, 3);
    for (dtype type : {dtype::q8_0, dtype::q4_0, dtype::f16, dtype::bf16}) {
        const std::vector<uint8_t> bytes = quantize_bytes(type, x);
        const auto* data = reinterpret_cast<const std::byte*>(bytes.data());
        ref::vec expected;
        if (type == dtype::q8_0) expected = ref::dequantize_q8_0(data, n);
        else if (type == dtype::q4_0) expected = ref::dequantize_q4_0(data, n);
        else {
            expected = xt::zeros<double>({static_cast<size_t>(n)});
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = ref::load_u16(data + 2 * i);
                expected(i) = type == dtype::f16 ? ref::half_value(h) : ref::bf16_value(h);
            }
        }
        const std::vector<float> y = dequantize_bytes(type, bytes, n);
        for (int64_t i = 0; i < n; ++i) REQUIRE(static_cast<double>(y[i]) == expected(i));
    }
}

TEST_CASE("quantizing is deterministic and insensitive to the alignment of the buffers", "[quant]") {
    const int64_t n = 64;
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 2.0f, 5);
    for (dtype type : {dtype::q8_0, dtype::q4_0, dtype::f16}) {
        const std::vector<uint8_t> aligned = quantize_bytes(type, x);
        std::vector<std::byte> shifted(aligned.size() + 1);
        lumen::quantize_row(type, x.data(), shifted.data() + 1, n);  // odd address
        CHECK(std::memcmp(shifted.data() + 1, aligned.data(), aligned.size()) == 0);
        std::vector<float> y(static_cast<size_t>(n));
        lumen::dequantize_row(type, shifted.data() + 1, y.data(), n);
        CHECK(y == dequantize_bytes(type, aligned, n));
    }
}

TEST_CASE("bad rows throw lumen::error naming the problem", "[quant]") {
    std::vector<float> x(64, 1.0f);
    std::vector<std::byte> out(1024);
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q8_0, x.data(), out.data(), 33), Catch::Contains("Q8_0"));
    CHECK_THROWS_WITH(lumen::dequantize_row(dtype::q4_0, out.data(), x.data(), 31), Catch::Contains("Q4_0"));
    CHECK_THROWS_WITH(lumen::dequantize_row(dtype::q5_k, out.data(), x.data(), 256), Catch::Contains("Q5_K"));
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q2_k, x.data(), out.data(), 256), Catch::Contains("Q2_K"));
    CHECK_THROWS_WITH(lumen::dequantize_row(dtype::i32, out.data(), x.data(), 4), Catch::Contains("I32"));
    CHECK_THROWS_AS(lumen::dequantize_row(static_cast<dtype>(99), out.data(), x.data(), 4), lumen::error);
    CHECK_THROWS_AS(lumen::dequantize_row(dtype::f32, out.data(), x.data(), -1), lumen::error);
    x[7] = NAN;
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q4_0, x.data(), out.data(), 64), Catch::Contains("NaN"));
    x[7] = INFINITY;
    CHECK_THROWS_AS(lumen::quantize_row(dtype::q8_0, x.data(), out.data(), 64), lumen::error);
    CHECK_NOTHROW(lumen::quantize_row(dtype::f16, x.data(), out.data(), 64));  // F16 stores infinity
}
