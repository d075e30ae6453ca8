// test_kernels.cpp: every CPU kernel against the xtensor reference ops (tests/reference_ops.hpp) on
// random inputs of odd and even sizes, for every weight type, with the tolerances stated below.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/cpu/kernels.hpp>
#include <lumen/quant.hpp>

#include "reference_ops.hpp"

using lumen::dtype;
using lumen::tensor_view;
using lumen::cpu::thread_pool;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);  // inputs only; results never depend on the library
    std::vector<float> x(n);
    for (float& v : x) v = dist(gen);
    return x;
}

// A weight matrix (rows, cols) stored as `type`, with the floats its stored elements decode to.
struct weight {
    std::vector<std::byte> bytes;
    tensor_view view;
    ref::mat decoded;  // (rows, cols): the stored values, decoded by the reference decoders
};

weight make_weight(dtype type, int64_t rows, int64_t cols, uint32_t seed) {
    const std::vector<float> w = random_floats(static_cast<size_t>(rows * cols), seed);
    weight out;
    const int64_t row_size = lumen::row_bytes(type, cols);
    out.bytes.resize(static_cast<size_t>(row_size * rows));
    for (int64_t r = 0; r < rows; ++r) lumen::quantize_row(type, w.data() + r * cols, out.bytes.data() + r * row_size, cols);
    out.view.name = "test.weight";
    out.view.type = type;
    out.view.n_dims = 2;
    out.view.ne = {cols, rows, 1, 1};
    out.view.data = out.bytes.data();
    out.view.n_bytes = out.bytes.size();
    out.decoded = xt::zeros<double>({static_cast<size_t>(rows), static_cast<size_t>(cols)});
    for (int64_t r = 0; r < rows; ++r) {
        const std::byte* row = out.bytes.data() + r * row_size;
        ref::vec decoded;
        switch (type) {
            case dtype::f32: decoded = ref::from_floats(reinterpret_cast<const float*>(row), cols); break;
            case dtype::q8_0: decoded = ref::dequantize_q8_0(row, cols); break;
            case dtype::q4_0: decoded = ref::dequantize_q4_0(row, cols); break;
            default:
                decoded = xt::zeros<double>({static_cast<size_t>(cols)});
                for (int64_t j = 0; j < cols; ++j) {
                    const uint16_t h = ref::load_u16(row + 2 * j);
                    decoded(j) = type == dtype::f16 ? ref::half_value(h) : ref::bf16_value(h);
                }
        }
        xt::view(out.decoded, r, xt::all()) = decoded;
    }
    return out;
}

// A float dot product of length n with 8 partial sums (n/8 terms each, a 3-level reduction, a
// tail of up to 7 terms, the rounded products): |error| <= (n/8 + 12) * 2^-24 * sum |w x|.
// We allow twice that, plus a floor for sums that cancel to ~0.
double dot_tolerance(int64_t n, double abs_sum) {
    return 2.0 * (static_cast<double>(n) / 8.0 + 12.0) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

const std::vector<dtype> all_types{dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0};

std::vector<int64_t> cols_for(dtype type) {
    if (lumen::traits_of(type).block_size == 32) return {32, 64, 96, 288, 1024};
    return {1, 2, 7, 8, 9, 31, 33, 64, 257, 1000};
}

}  // namespace

TEST_CASE("dot_row matches the reference for every type and odd and even lengths", "[kernels]") {
    for (dtype type : all_types) {
        for (int64_t cols : cols_for(type)) {
            INFO("type " << lumen::dtype_name(type) << ", n " << cols);
            const weight w = make_weight(type, 1, cols, 17 + static_cast<uint32_t>(cols));
            const std::vector<float> x = random_floats(static_cast<size_t>(cols), 5);
            const ref::vec xr = ref::from_floats(x.data(), cols);
            const double expected = ref::matvec(w.decoded, xr)(0);
            const double scale = ref::abs_matvec(w.decoded, xr)(0);
            const float got = lumen::cpu::dot_row(type, w.bytes.data(), x.data(), cols);
            CHECK(std::fabs(static_cast<double>(got) - expected) <= dot_tolerance(cols, scale));
        }
    }
}

TEST_CASE("a quantized row's dot product equals the F32 dot product of its dequantized row, bit for bit", "[kernels]") {
    for (dtype type : all_types) {
        for (int64_t cols : cols_for(type)) {
            const weight w = make_weight(type, 1, cols, 99);
            const std::vector<float> x = random_floats(static_cast<size_t>(cols), 6);
            std::vector<float> decoded(static_cast<size_t>(cols));
            lumen::dequantize_row(type, w.bytes.data(), decoded.data(), cols);
            const float as_f32 = lumen::cpu::dot_row(dtype::f32, reinterpret_cast<const std::byte*>(decoded.data()), x.data(), cols);
            CHECK(lumen::cpu::dot_row(type, w.bytes.data(), x.data(), cols) == as_f32);
        }
    }
}

TEST_CASE("matvec matches the reference for every type, shape and thread count", "[kernels]") {
    for (int n_threads : {1, 2, 3, 4}) {
        thread_pool pool(n_threads);
        for (dtype type : all_types) {
            for (int64_t rows : {1, 3, 16, 37}) {
                for (int64_t cols : cols_for(type)) {
                    INFO("type " << lumen::dtype_name(type) << ", rows " << rows << ", cols " << cols << ", threads " << n_threads);
                    const weight w = make_weight(type, rows, cols, static_cast<uint32_t>(rows * 1000 + cols));
                    const std::vector<float> x = random_floats(static_cast<size_t>(cols), 8);
                    std::vector<float> y(static_cast<size_t>(rows), NAN);
                    lumen::cpu::matvec(w.view, x.data(), y.data(), pool);
                    const ref::vec xr = ref::from_floats(x.data(), cols);
                    const ref::vec expected = ref::matvec(w.decoded, xr);
                    const ref::vec scale = ref::abs_matvec(w.decoded, xr);
                    for (int64_t r = 0; r < rows; ++r)
                        REQUIRE(std::fabs(static_cast<double>(y[r]) - expected(r)) <= dot_tolerance(cols, scale(r)));
                    // and each row is exactly dot_row
                    for (int64_t r = 0; r < rows; ++r)
                        REQUIRE(y[r] == lumen::cpu::dot_row(type, w.view.row(r), x.data(), cols));
                }
            }
        }
    }
}

TEST_CASE("matmul matches the reference and equals matvec token by token, bit for bit", "[kernels]") {
    for (int n_threads : {1, 3, 4}) {
        thread_pool pool(n_threads);
        for (dtype type : all_types) {
            for (int64_t n_tokens : {1, 2, 5}) {
                for (int64_t rows : {1, 7, 32}) {
                    const int64_t cols = lumen::traits_of(type).block_size == 32 ? 96 : 45;
                    INFO("type " << lumen::dtype_name(type) << ", tokens " << n_tokens << ", rows " << rows << ", threads " << n_threads);
                    const weight w = make_weight(type, rows, cols, static_cast<uint32_t>(rows + 7 * n_tokens));
                    const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 12);
                    std::vector<float> y(static_cast<size_t>(n_tokens * rows), NAN);
                    lumen::cpu::matmul(w.view, x.data(), y.data(), n_tokens, pool);
                    const ref::mat xm = ref::from_floats(x.data(), n_tokens, cols);
                    const ref::mat expected = ref::matmul(w.decoded, xm);
                    const ref::mat scale = ref::matmul(xt::abs(w.decoded), xt::abs(xm));
                    std::vector<float> y1(static_cast<size_t>(rows));
                    for (int64_t t = 0; t < n_tokens; ++t) {
                        lumen::cpu::matvec(w.view, x.data() + t * cols, y1.data(), pool);
                        for (int64_t r = 0; r < rows; ++r) {
                            REQUIRE(std::fabs(static_cast<double>(y[t * rows + r]) - expected(t, r)) <=
                                    dot_tolerance(cols, scale(t, r)));
                            REQUIRE(y[t * rows + r] == y1[r]);
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("matvec and matmul reject weight types the CPU cannot compute with, naming the tensor", "[kernels]") {
    thread_pool pool(2);
    std::vector<std::byte> bytes(144 * 2);
    tensor_view w;
    w.name = "blk.0.ffn_down.weight";
    w.type = dtype::q4_k;
    w.n_dims = 2;
    w.ne = {256, 2, 1, 1};
    w.data = bytes.data();
    std::vector<float> x(256), y(2);
    CHECK_THROWS_WITH(lumen::cpu::matvec(w, x.data(), y.data(), pool),
                      Catch::Contains("blk.0.ffn_down.weight") && Catch::Contains("Q4_K"));
    CHECK_THROWS_WITH(lumen::cpu::matmul(w, x.data(), y.data(), 1, pool), Catch::Contains("Q4_K"));
    CHECK_THROWS_AS(lumen::cpu::dot_row(dtype::q8_0, bytes.data(), x.data(), 31), lumen::error);
}

TEST_CASE("rmsnorm, softmax, silu and swiglu match the reference", "[kernels]") {
    for (int64_t n : {1, 2, 7, 64, 257, 4096}) {
        INFO("n " << n);
        const std::vector<float> x = random_floats(static_cast<size_t>(n), 21, -4.0f, 4.0f);
        const std::vector<float> w = random_floats(static_cast<size_t>(n), 22, 0.5f, 1.5f);
        const ref::vec xr = ref::from_floats(x.data(), n), wr = ref::from_floats(w.data(), n);
        const double rel = 1e-5;  // float ops over n <= 4096 sequential terms stay well inside 1e-5 relative

        std::vector<float> out(static_cast<size_t>(n));
        lumen::cpu::rmsnorm(out.data(), x.data(), w.data(), n, 1e-5f);
        const ref::vec expected_norm = ref::rmsnorm(xr, wr, 1e-5);
        for (int64_t i = 0; i < n; ++i) REQUIRE(out[i] == Approx(expected_norm(i)).epsilon(rel).margin(1e-6));
        std::vector<float> in_place = x;
        lumen::cpu::rmsnorm(in_place.data(), in_place.data(), w.data(), n, 1e-5f);
        CHECK(in_place == out);

        std::vector<float> sm = x;
        lumen::cpu::softmax(sm.data(), n);
        const ref::vec expected_sm = ref::softmax(xr);
        double total = 0;
        for (int64_t i = 0; i < n; ++i) {
            REQUIRE(sm[i] == Approx(expected_sm(i)).epsilon(rel).margin(1e-9));
            total += sm[i];
        }
        CHECK(total == Approx(1.0).epsilon(1e-5));

        std::vector<float> s = x;
        lumen::cpu::silu(s.data(), n);
        const ref::vec expected_silu = ref::silu(xr);
        for (int64_t i = 0; i < n; ++i) REQUIRE(s[i] == Approx(expected_silu(i)).epsilon(rel).margin(1e-7));

        std::vector<float> sw(static_cast<size_t>(n));
        lumen::cpu::swiglu(sw.data(), x.data(), w.data(), n);
        const ref::vec expected_sw = ref::swiglu(xr, wr);
        for (int64_t i = 0; i < n; ++i) REQUIRE(sw[i] == Approx(expected_sw(i)).epsilon(rel).margin(1e-7));
    }
    // softmax is shift invariant and survives huge logits
    std::vector<float> big{1000.0f, 999.0f, -1000.0f};
    lumen::cpu::softmax(big.data(), 3);
    CHECK(big[0] == Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
    CHECK(big[2] == 0.0f);
    CHECK(lumen::cpu::silu(0.0f) == 0.0f);
    CHECK(lumen::cpu::silu(-100.0f) == Approx(0.0).margin(1e-30));
}

TEST_CASE("rope_adjacent_pairs matches the reference rotation", "[kernels]") {
    struct shape {
        int64_t n_heads, head_dim, rope_dims;
    };
    for (const shape s : {shape{1, 2, 2}, shape{3, 8, 8}, shape{6, 48, 48}, shape{4, 64, 32}, shape{2, 10, 6}, shape{2, 16, 0}}) {
        for (int64_t pos : {0, 1, 5, 37, 200}) {
            INFO("heads " << s.n_heads << ", head_dim " << s.head_dim << ", rope_dims " << s.rope_dims << ", pos " << pos);
            const int64_t n = s.n_heads * s.head_dim;
            std::vector<float> v = random_floats(static_cast<size_t>(n), 31);
            const ref::mat before = ref::from_floats(v.data(), s.n_heads, s.head_dim);
            lumen::cpu::rope_adjacent_pairs(v.data(), s.n_heads, s.head_dim, s.rope_dims, pos, 10000.0f);
            const ref::mat expected = ref::rope_adjacent_pairs(before, s.rope_dims, pos, 10000.0);
            // theta is computed in float: its error grows with pos (about pos * 2^-23 rad)
            const double tol = 1e-6 + 4.0 * static_cast<double>(pos) * std::ldexp(1.0, -23);
            for (int64_t h = 0; h < s.n_heads; ++h)
                for (int64_t j = 0; j < s.head_dim; ++j) {
                    REQUIRE(std::fabs(static_cast<double>(v[h * s.head_dim + j]) - expected(h, j)) <= tol);
                    if (j >= s.rope_dims) REQUIRE(static_cast<double>(v[h * s.head_dim + j]) == before(h, j));
                }
        }
    }
    std::vector<float> v(16);
    CHECK_THROWS_AS(lumen::cpu::rope_adjacent_pairs(v.data(), 2, 8, 3, 1, 10000.0f), lumen::error);
    CHECK_THROWS_AS(lumen::cpu::rope_adjacent_pairs(v.data(), 2, 8, 10, 1, 10000.0f), lumen::error);
}

TEST_CASE("rope_adjacent_pairs is bit-identical to llama2.c's loop", "[kernels]") {
    // llama2.c run.c, forward(): for (i = 0; i < dim; i += 2) { head_dim = i % head_size;
    // freq = 1.0f / powf(10000.0f, head_dim / (float)head_size); val = pos * freq; ... }
    const int n_heads = 6, head_size = 48, dim = n_heads * head_size;
    for (int pos : {0, 1, 2, 17, 255, 511}) {
        std::vector<float> q = random_floats(static_cast<size_t>(dim), 41 + static_cast<uint32_t>(pos));
        std::vector<float> expected = q;
        for (int i = 0; i < dim; i += 2) {
            const int head_dim = i % head_size;
            const float freq = 1.0f / powf(10000.0f, static_cast<float>(head_dim) / static_cast<float>(head_size));
            const float val = static_cast<float>(pos) * freq;
            const float fcr = cosf(val);
            const float fci = sinf(val);
            const float v0 = expected[i];
            const float v1 = expected[i + 1];
            expected[i] = v0 * fcr - v1 * fci;
            expected[i + 1] = v0 * fci + v1 * fcr;
        }
        lumen::cpu::rope_adjacent_pairs(q.data(), n_heads, head_size, head_size, pos, 10000.0f);
        CHECK(q == expected);
    }
}

TEST_CASE("rmsnorm and softmax are bit-identical to llama2.c's", "[kernels]") {
    const int size = 288;
    const std::vector<float> x = random_floats(size, 51, -3.0f, 3.0f);
    const std::vector<float> weight = random_floats(size, 52);
    // llama2.c rmsnorm(o, x, weight, size)
    std::vector<float> o(size);
    float ss = 0.0f;
    for (int j = 0; j < size; j++) ss += x[j] * x[j];
    ss /= size;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
    std::vector<float> got(size);
    lumen::cpu::rmsnorm(got.data(), x.data(), weight.data(), size, 1e-5f);
    CHECK(got == o);
    // llama2.c softmax(x, size)
    std::vector<float> s = x;
    float max_val = s[0];
    for (int i = 1; i < size; i++)
        if (s[i] > max_val) max_val = s[i];
    float sum = 0.0f;
    for (int i = 0; i < size; i++) {
        s[i] = expf(s[i] - max_val);
        sum += s[i];
    }
    for (int i = 0; i < size; i++) s[i] /= sum;
    std::vector<float> mine = x;
    lumen::cpu::softmax(mine.data(), size);
    CHECK(mine == s);
}
