// kernel_test.cpp: the WebAssembly kernels (cpu/matmul_wasm.hpp) against the scalar ones, bit for
// bit, compiled once per web build variant (SIMD128, and SIMD128 + relaxed SIMD) and run in
// Chromium by kernel_test.mjs: every weight type of the wasm table, random weights and activations,
// odd and even row counts (rows left over from the tiles of 4), 1 to 5 tokens, and the edge cases
// the relaxed kernels must get right: weight quants of -128, activation quants of +-127, and
// zero, subnormal, infinite and NaN fp16 scales (read from the blocks, and as the float scales
// matmul() gives the kernels that take them). Also every half through half4_to_float, and
// attention's weighted sum of value rows.
// Prints "kernel_test: N checks passed, M failed" and returns 1 on any failure.
#include <lumen/cpu/attention.hpp>
#include <lumen/cpu/matmul.hpp>
#include <lumen/detail/fp16.hpp>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

using namespace lumen;
using namespace lumen::cpu;

namespace {

int passed = 0, failed = 0;

void check(bool ok, const char* what) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
        std::printf("FAILED: %s\n", what);
    }
}

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

void test_halves() {
    int wrong = 0;
    for (uint32_t h = 0; h < 0x10000; h += 4) {
        const v128_t f = wasm128::half4_to_float(wasm_u32x4_make(h, h + 1, h + 2, h + 3));
        float lanes[4];
        wasm_v128_store(lanes, f);
        for (uint32_t i = 0; i < 4; ++i)
            wrong += !same_bits(lanes[i], detail::fp16_to_fp32(static_cast<uint16_t>(h + i)));
    }
    check(wrong == 0, "half4_to_float equals fp16_to_fp32 for all 65536 halves");
}

std::mt19937 rng(7);

// the activation quantizer of the wasm kernel set against the scalar one, on blocks with zeros,
// huge and tiny values, infinities and NaNs mixed in
void test_quantize() {
    int wrong = 0;
    for (int block = 0; block < 2000; ++block) {
        float x[32];
        const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 200) - 100);
        for (float& v : x) v = std::normal_distribution<float>(0.0f, scale)(rng);
        if (block % 5 == 1) x[rng() % 32] = NAN;
        if (block % 7 == 2) x[rng() % 32] = (rng() & 1) ? INFINITY : -INFINITY;
        if (block % 11 == 3) std::fill(std::begin(x), std::end(x), 0.0f);
        if (block % 13 == 4) x[rng() % 32] = 0.5f * scale;  // ties to even after the scaling, now and then
        int8_t q1[32], q2[32];
        float d1, d2;
        int32_t s1, s2, n1, n2, h1, h2;
        wasm_kernels().quantize_block(x, q1, &d1, &s1, &n1, &h1);
        scalar::quantize_block_q8(x, q2, &d2, &s2, &n2, &h2);
        wrong += std::memcmp(q1, q2, 32) != 0 || !same_bits(d1, d2) || s1 != s2 || n1 != n2 || h1 != h2;
    }
    check(wrong == 0, "the wasm activation quantizer equals scalar::quantize_block_q8 on 2000 blocks");
}

uint16_t random_scale(int kind) {
    switch (kind) {
        case 0: return 0x0000;                                               // zero
        case 1: return static_cast<uint16_t>(0x0001 + rng() % 0x3ff);        // subnormal
        case 2: return 0x7c00;                                               // infinity
        case 3: return static_cast<uint16_t>(0x7c01 + rng() % 0x3fe);        // NaN
        default: return static_cast<uint16_t>((rng() & 0x8000) | (0x1c00 + rng() % 0x1400));  // normal
    }
}

// W (rows, cols) of type: random bytes, with the fp16 scale of each block replaced by a usable one
// (special = true: now and then zero, subnormal, infinite or NaN) and, where asked, quants of -128.
std::vector<std::byte> random_weights(dtype type, int64_t rows, int64_t cols, bool special, bool minus_128) {
    const int64_t row_bytes = type == dtype::f32 ? 4 * cols : type == dtype::f16 || type == dtype::bf16 ? 2 * cols
                            : type == dtype::q8_0 ? cols / 32 * block_q8_0_bytes : cols / 32 * block_q4_0_bytes;
    std::vector<std::byte> w(static_cast<size_t>(rows * row_bytes));
    for (auto& b : w) b = static_cast<std::byte>(rng());
    auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&w[at], &v, 2); };
    if (type == dtype::f32) {
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (size_t i = 0; i < w.size(); i += 4) {
            const float v = normal(rng);
            std::memcpy(&w[i], &v, 4);
        }
    } else if (type == dtype::f16 || type == dtype::bf16) {
        for (size_t i = 0; i < w.size(); i += 2) {
            const float v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
            put16(i, type == dtype::f16 ? detail::fp32_to_fp16(v) : static_cast<uint16_t>(std::bit_cast<uint32_t>(v) >> 16));
        }
        if (special)
            for (size_t i = 0; i < w.size(); i += 2 * 37) put16(i, random_scale(static_cast<int>(rng() % 4)));
    } else {
        const int64_t block_bytes = type == dtype::q8_0 ? block_q8_0_bytes : block_q4_0_bytes;
        for (size_t at = 0; at < w.size(); at += static_cast<size_t>(block_bytes)) {
            put16(at, random_scale(special && rng() % 8 == 0 ? static_cast<int>(rng() % 4) : 4));
            if (minus_128 && type == dtype::q8_0)
                for (int k = 0; k < 32; ++k)
                    if (rng() % 4 == 0) w[at + 2 + static_cast<size_t>(k)] = std::byte{0x80};
        }
    }
    return w;
}

void test_matmul(dtype type, int64_t rows, int64_t cols, int64_t n_tokens, bool special, bool minus_128) {
    const std::vector<std::byte> w = random_weights(type, rows, cols, special, minus_128);
    const int64_t w_stride = static_cast<int64_t>(w.size()) / rows;
    std::vector<float> x(static_cast<size_t>(n_tokens * cols));
    for (auto& v : x) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
    for (int64_t t = 0; t < n_tokens; ++t) x[static_cast<size_t>(t * cols + rng() % cols)] = 40.0f;  // quants of +-127
    q8_buffer buffer;
    q8_activations xq = buffer.view(n_tokens, cols);
    const bool quantized = type == dtype::q8_0 || type == dtype::q4_0;
    if (quantized)
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t b = 0; b < cols / 32; ++b)
                scalar::quantize_block_q8(&x[static_cast<size_t>(t * cols + 32 * b)], xq.qs + t * cols + 32 * b,
                                          &xq.d[b * n_tokens + t], &xq.sum[b * n_tokens + t],
                                          &xq.neg_sum[b * n_tokens + t], &xq.half_sum[b * n_tokens + t]);
    std::vector<float> y_wasm(static_cast<size_t>(n_tokens * rows), -1.0f), y_scalar = y_wasm;
    matmul_args a;
    a.type = type;
    a.w = w.data();
    a.w_stride = w_stride;
    a.cols = cols;
    a.n_tokens = n_tokens;
    a.x = x.data();
    a.x_stride = cols;
    a.xq = &xq;
    a.y_stride = rows;
    const matmul_kernel* wasm = wasm_kernels().find(type);
    const matmul_kernel* scalar = scalar_kernels().find(type);
    a.y = y_scalar.data();
    scalar->rows(a, 0, rows);
    // the wasm kernel without float scales, and with them where it takes them (as matmul() gives them)
    std::vector<float> scales;
    for (bool float_scales : {false, true}) {
        if (float_scales && !wasm->float_scales) break;
        if (float_scales) {
            scales = float_block_scales(w.data(), rows, w_stride, cols / 32, w_stride / (cols / 32));
            a.w_scales = scales.data();
        }
        std::fill(y_wasm.begin(), y_wasm.end(), -1.0f);
        a.y = y_wasm.data();
        wasm->rows(a, 0, rows);
        int64_t differing = 0;
        for (size_t i = 0; i < y_wasm.size(); ++i) differing += !same_bits(y_wasm[i], y_scalar[i]);
        char what[200];
        std::snprintf(what, sizeof what, "%s %lld x %lld, %lld tokens%s%s%s: %lld of %zu outputs differ from the scalar kernel",
                      std::string(dtype_name(type)).c_str(), static_cast<long long>(rows), static_cast<long long>(cols),
                      static_cast<long long>(n_tokens), special ? ", special scales" : "", minus_128 ? ", quants of -128" : "",
                      float_scales ? ", float scales" : "", static_cast<long long>(differing), y_wasm.size());
        check(differing == 0, what);
    }
}

// attention's weighted sum of value rows (SIMD128 for whole vectors) against the scalar one
void test_weighted_sum() {
    for (int64_t n : {1, 3, 4, 7, 31, 32, 33, 48, 64, 100, 128})
        for (int64_t n_rows : {1, 2, 9, 70}) {
            const int64_t stride = n + 5;
            std::vector<float> v(static_cast<size_t>(n_rows * stride)), weights(static_cast<size_t>(n_rows));
            for (float& x : v) x = std::normal_distribution<float>(0.0f, 1.0f)(rng);
            for (float& x : weights) x = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
            std::vector<float> out(static_cast<size_t>(n)), expected(static_cast<size_t>(n));
            weighted_sum(out.data(), weights.data(), v.data(), stride, n_rows, n);
            weighted_sum_scalar(expected.data(), weights.data(), v.data(), stride, n_rows, n);
            int64_t differing = 0;
            for (size_t i = 0; i < out.size(); ++i) differing += !same_bits(out[i], expected[i]);
            char what[120];
            std::snprintf(what, sizeof what, "weighted_sum of %lld rows of %lld: %lld outputs differ from the scalar one",
                          static_cast<long long>(n_rows), static_cast<long long>(n), static_cast<long long>(differing));
            check(differing == 0, what);
        }
}

}  // namespace

int main() {
    std::printf("kernel_test: %s\n", simd_name());
    test_halves();
    test_quantize();
    test_weighted_sum();
    for (dtype type : {dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0})
        for (int64_t rows : {1, 4, 7, 12, 64, 67})
            for (int64_t cols : {32, 96, 288})
                for (int64_t n_tokens : {1, 2, 5}) {
                    test_matmul(type, rows, cols, n_tokens, false, false);
                    test_matmul(type, rows, cols, n_tokens, true, type == dtype::q8_0);
                }
    for (dtype type : {dtype::f32, dtype::f16, dtype::bf16})  // float rows of any length
        for (int64_t cols : {1, 7, 9, 33})
            for (int64_t n_tokens : {1, 3}) test_matmul(type, 5, cols, n_tokens, false, false);
    std::printf("kernel_test: %d checks passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
