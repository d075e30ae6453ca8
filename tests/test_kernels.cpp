// test_kernels.cpp: every CPU kernel against the xtensor reference ops (tests/reference_ops.hpp) on
// random inputs of odd and even sizes, for every weight type and every compiled-in kernel set
// (portable scalar, AVX2, WebAssembly SIMD128), with the tolerances stated below.
// test_kernels_scalar.cpp compiles this file again with LUMEN_FORCE_SCALAR (the whole path on the
// scalar kernels), test_kernels_no_vnni.cpp with LUMEN_NO_VNNI (AVX2 without vpdpbusd).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/cpu/attention.hpp>
#include <lumen/cpu/cpu_backend.hpp>
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
            case dtype::q4_k:
            case dtype::q6_k: {  // decoded by lumen's own dequantizer, which test_quant_k checks
                std::vector<float> f(static_cast<size_t>(cols));
                lumen::dequantize_row(type, row, f.data(), cols);
                decoded = ref::from_floats(f.data(), cols);
                break;
            }
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

bool is_quantized(dtype type) { return lumen::traits_of(type).block_size > 1; }
bool is_kquant(dtype type) { return lumen::traits_of(type).block_size == 256; }

// The activations x (n_tokens, cols) as the quantized-weight kernels see them, from the definition
// in quantize_activations.hpp written out again here: per block of 32, amax = max |x|,
// q = round-half-even(x * (127 / amax)) in float, d = amax / 127 (float). Returns q * d in
// double (n_tokens, cols), q, and the per-block scales (n_tokens, n_blocks).
struct q8_reference {
    ref::mat values;  // q * d, exactly
    ref::mat quants;  // q
    ref::mat scales;  // d
};
q8_reference quantize_reference(const std::vector<float>& x, int64_t n_tokens, int64_t cols) {
    const int64_t nb = cols / 32;
    q8_reference r;
    r.values = xt::zeros<double>({static_cast<size_t>(n_tokens), static_cast<size_t>(cols)});
    r.quants = r.values;
    r.scales = xt::zeros<double>({static_cast<size_t>(n_tokens), static_cast<size_t>(nb)});
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t b = 0; b < nb; ++b) {
            float amax = 0.0f;
            for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[t * cols + b * 32 + j]));
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            const float d = amax / 127.0f;
            r.scales(t, b) = d;
            for (int j = 0; j < 32; ++j) {
                const float q = std::nearbyint(x[t * cols + b * 32 + j] * id);
                r.quants(t, b * 32 + j) = q;
                r.values(t, b * 32 + j) = static_cast<double>(q) * d;
            }
        }
    return r;
}

// A float dot product of length n with 8 lanes (n/8 + 1 rounded products and sums each, a 3-level
// reduction): |error| <= (2 n/8 + 5) * 2^-24 * sum |w x|. We allow twice that, plus a floor for
// sums that cancel to ~0.
double dot_tolerance(int64_t n, double abs_sum) {
    return 2.0 * (static_cast<double>(n) / 4.0 + 5.0) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

// A quantized dot product: per block of 32 an exact integer sum, two rounded products (the scales,
// then the sum) and one rounded add into the running sum: |error| <= (n_blocks + 4) * 2^-24 * the
// sum of |block terms|, and that sum is at most sum |w q d| (w the stored weights, q d the 8-bit
// activations). We allow twice that, plus a floor. Q4_K has two terms per block (d sc q and
// dmin m), which nearly cancel: their magnitudes reach a few times |w|, so it gets 4 times more.
double q8_tolerance(int64_t n, double abs_sum, dtype type) {
    const double k = type == dtype::q4_k ? 8.0 : 2.0;
    return k * (static_cast<double>(n) / 32.0 + 4.0) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

const std::vector<dtype> all_types{dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k};

std::vector<int64_t> cols_for(dtype type) {
    if (is_kquant(type)) return {256, 512, 1024};
    if (is_quantized(type)) return {32, 64, 96, 288, 1024};
    return {1, 2, 7, 8, 9, 31, 33, 64, 257, 1000};
}

// Every kernel set compiled into this binary: the active one first.
std::vector<const lumen::cpu::kernel_set*> kernel_sets() {
    std::vector<const lumen::cpu::kernel_set*> sets{&lumen::cpu::default_kernels()};
    if (&lumen::cpu::scalar_kernels() != sets[0]) sets.push_back(&lumen::cpu::scalar_kernels());
#if defined(LUMEN_CPU_HAVE_AVX2)
    if (&lumen::cpu::avx2_kernels() != sets[0]) sets.push_back(&lumen::cpu::avx2_kernels());
#endif
#if defined(LUMEN_CPU_HAVE_WASM)
    if (&lumen::cpu::wasm_kernels() != sets[0]) sets.push_back(&lumen::cpu::wasm_kernels());
#endif
    return sets;
}

// y (n_tokens, rows) = x (n_tokens, cols) @ W^T with the given kernel set.
std::vector<float> run_matmul(const weight& w, const std::vector<float>& x, int64_t n_tokens, thread_pool& pool,
                              const lumen::cpu::kernel_set& ks) {
    std::vector<float> y(static_cast<size_t>(n_tokens * w.view.rows()), NAN);
    lumen::cpu::matmul_scratch scratch;
    lumen::cpu::matmul(w.view, x.data(), y.data(), n_tokens, pool, scratch, ks);
    return y;
}

// The arguments a kernel gets for W and n_tokens tokens (activations and outputs still to set).
lumen::cpu::matmul_args kernel_args(const weight& w, int64_t n_tokens) {
    lumen::cpu::matmul_args a;
    a.type = w.view.type;
    a.w = w.view.data;
    a.w_stride = w.view.bytes_per_row();
    a.cols = w.view.cols();
    a.n_tokens = n_tokens;
    a.y_stride = w.view.rows();
    return a;
}

// Checks y against the reference: float types against W x, quantized types against W (x rounded
// to 8 bits as defined above), each with its tolerance.
void check_against_reference(const weight& w, const std::vector<float>& x, int64_t n_tokens, const std::vector<float>& y) {
    const int64_t rows = w.view.rows(), cols = w.view.cols();
    ref::mat xm;
    if (is_quantized(w.view.type)) xm = quantize_reference(x, n_tokens, cols).values;
    else xm = ref::from_floats(x.data(), n_tokens, cols);
    const ref::mat expected = ref::matmul(w.decoded, xm);
    const ref::mat scale = ref::matmul(xt::abs(w.decoded), xt::abs(xm));
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            const double tol = is_quantized(w.view.type) ? q8_tolerance(cols, scale(t, r), w.view.type)
                                                         : dot_tolerance(cols, scale(t, r));
            INFO("token " << t << ", row " << r << ": got " << y[t * rows + r] << ", expected " << expected(t, r));
            REQUIRE(std::fabs(static_cast<double>(y[t * rows + r]) - expected(t, r)) <= tol);
        }
}

}  // namespace

TEST_CASE("8-bit activations: every kernel set rounds exactly as defined", "[kernels]") {
    for (int64_t n_tokens : {1, 3}) {
        for (int64_t cols : {32, 96, 1024}) {
            std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 3 + static_cast<uint32_t>(cols), -3.0f, 3.0f);
            for (int j = 0; j < 32; ++j) x[static_cast<size_t>(j)] = 0.0f;  // an all-zero block
            if (cols >= 64) {  // a tie: amax 127/64 makes 127/amax = 64, and 62.5/64 * 64 = 62.5 -> 62
                x[32] = 127.0f / 64.0f;
                x[33] = 62.5f / 64.0f;
            }
            const q8_reference expected = quantize_reference(x, n_tokens, cols);
            for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
                INFO("kernels " << ks->name << ", tokens " << n_tokens << ", cols " << cols);
                lumen::cpu::q8_buffer buffer;
                const lumen::cpu::q8_activations a = buffer.view(n_tokens, cols);
                lumen::cpu::quantize_tokens(ks->quantize_block, x.data(), a, 0, n_tokens);
                for (int64_t t = 0; t < n_tokens; ++t)
                    for (int64_t b = 0; b < cols / 32; ++b) {
                        REQUIRE(a.scale(t, b) == static_cast<float>(expected.scales(t, b)));
                        int32_t sum = 0, neg_sum = 0, half_sum = 0;
                        for (int j = 0; j < 32; ++j) {
                            REQUIRE(a.block(t, b)[j] == static_cast<int8_t>(expected.quants(t, b * 32 + j)));
                            sum += a.block(t, b)[j];
                            neg_sum += std::min<int32_t>(a.block(t, b)[j], 0);
                            half_sum += j < 16 ? a.block(t, b)[j] : 0;
                        }
                        REQUIRE(a.block_sum(t, b) == sum);
                        REQUIRE(a.block_neg_sum(t, b) == neg_sum);
                        REQUIRE(a.block_half_sum(t, b) == half_sum);
                    }
            }
        }
    }
}

TEST_CASE("matvec matches the reference for every type, kernel set, shape and thread count", "[kernels]") {
    for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
        for (int n_threads : {1, 2, 3}) {
            thread_pool pool(n_threads);
            for (dtype type : all_types) {
                for (int64_t rows : {1, 3, 8, 16, 17, 37}) {
                    for (int64_t cols : cols_for(type)) {
                        INFO("kernels " << ks->name << ", type " << lumen::dtype_name(type) << ", rows " << rows
                                        << ", cols " << cols << ", threads " << n_threads);
                        const weight w = make_weight(type, rows, cols, static_cast<uint32_t>(rows * 1000 + cols));
                        const std::vector<float> x = random_floats(static_cast<size_t>(cols), 8);
                        check_against_reference(w, x, 1, run_matmul(w, x, 1, pool, *ks));
                    }
                }
            }
        }
    }
}

TEST_CASE("matmul matches the reference and equals matvec token by token, bit for bit", "[kernels]") {
    for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
        for (int n_threads : {1, 3}) {
            thread_pool pool(n_threads);
            for (dtype type : all_types) {
                for (int64_t n_tokens : {2, 3, 4, 5, 7, 9, 13}) {
                    for (int64_t rows : {1, 2, 7, 32, 33}) {
                        for (int64_t cols : is_kquant(type)      ? std::vector<int64_t>{256, 512}
                                            : is_quantized(type) ? std::vector<int64_t>{32, 96, 288}
                                                                 : std::vector<int64_t>{5, 45, 64}) {
                            INFO("kernels " << ks->name << ", type " << lumen::dtype_name(type) << ", tokens " << n_tokens
                                            << ", rows " << rows << ", cols " << cols << ", threads " << n_threads);
                            const weight w = make_weight(type, rows, cols, static_cast<uint32_t>(rows + 7 * n_tokens + cols));
                            const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 12);
                            const std::vector<float> y = run_matmul(w, x, n_tokens, pool, *ks);
                            check_against_reference(w, x, n_tokens, y);
                            for (int64_t t = 0; t < n_tokens; ++t) {
                                const std::vector<float> xt(x.begin() + t * cols, x.begin() + (t + 1) * cols);
                                const std::vector<float> y1 = run_matmul(w, xt, 1, pool, *ks);
                                for (int64_t r = 0; r < rows; ++r) REQUIRE(y[t * rows + r] == y1[r]);
                            }
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("large products: prompt-sized batches and model-sized rows match the reference", "[kernels]") {
    thread_pool pool(2);
    for (dtype type : all_types) {
        const int64_t rows = 24, cols = 2048 + 256, n_tokens = 70;  // several token chunks
        INFO("type " << lumen::dtype_name(type));
        const weight w = make_weight(type, rows, cols, 77);
        const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 78);
        check_against_reference(w, x, n_tokens, run_matmul(w, x, n_tokens, pool, lumen::cpu::default_kernels()));
    }
}

TEST_CASE("the generic kernel (dequantize a row, then F32) matches the reference", "[kernels]") {
    // Types without a dedicated kernel run through it; here it is tried on every type.
    thread_pool pool(2);
    for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
        for (dtype type : all_types) {
            for (int64_t n_tokens : {1, 5}) {
                INFO("kernels " << ks->name << ", type " << lumen::dtype_name(type) << ", tokens " << n_tokens);
                const int64_t rows = 11, cols = 256;
                const weight w = make_weight(type, rows, cols, 5);
                const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 6);
                std::vector<float> y(static_cast<size_t>(n_tokens * rows), NAN);
                lumen::cpu::matmul_args a = kernel_args(w, n_tokens);
                a.x = x.data();
                a.x_stride = cols;
                a.y = y.data();
                ks->generic(a, 0, rows);
                const ref::mat xm = ref::from_floats(x.data(), n_tokens, cols);
                const ref::mat expected = ref::matmul(w.decoded, xm);
                const ref::mat scale = ref::matmul(xt::abs(w.decoded), xt::abs(xm));
                for (int64_t t = 0; t < n_tokens; ++t)
                    for (int64_t r = 0; r < rows; ++r)
                        REQUIRE(std::fabs(static_cast<double>(y[t * rows + r]) - expected(t, r)) <= dot_tolerance(cols, scale(t, r)));
            }
        }
    }
}

TEST_CASE("every SIMD kernel set gives the scalar kernels' results bit for bit", "[kernels]") {
    // AVX2 natively, SIMD128 in WebAssembly: so the browser computes what the native build does.
    thread_pool pool(2);
    for (dtype type : all_types) {
        for (int64_t cols : cols_for(type)) {
            for (int64_t n_tokens : {1, 6}) {
                INFO("type " << lumen::dtype_name(type) << ", cols " << cols << ", tokens " << n_tokens);
                const weight w = make_weight(type, 19, cols, static_cast<uint32_t>(cols));
                const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 9, -2.0f, 2.0f);
                const std::vector<float> b = run_matmul(w, x, n_tokens, pool, lumen::cpu::scalar_kernels());
                for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
                    INFO("kernels " << ks->name);
                    const std::vector<float> a = run_matmul(w, x, n_tokens, pool, *ks);
                    REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
                }
            }
        }
    }
}

TEST_CASE("Q8_0 quants of -128 (never written by quantizers, legal in a file) give the scalar results bit for bit", "[kernels]") {
    // The SIMD kernels move the activations' signs onto the weights; -(-128) does not fit an int8.
    thread_pool pool(2);
    for (int64_t n_tokens : {1, 6}) {
        weight w = make_weight(dtype::q8_0, 21, 96, 5);
        std::mt19937 rng(11);
        for (size_t block = 0; block < w.bytes.size(); block += lumen::block_q8_0_bytes)
            for (size_t k = 0; k < 32; ++k)
                if (rng() % 3 == 0) w.bytes[block + 2 + k] = std::byte{0x80};
        const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * 96), 13, -2.0f, 2.0f);
        const std::vector<float> b = run_matmul(w, x, n_tokens, pool, lumen::cpu::scalar_kernels());
        for (const lumen::cpu::kernel_set* ks : kernel_sets()) {
            INFO("kernels " << ks->name << ", tokens " << n_tokens);
            const std::vector<float> a = run_matmul(w, x, n_tokens, pool, *ks);
            REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("matvec and matmul reject weight types the CPU cannot compute with, naming the tensor", "[kernels]") {
    thread_pool pool(2);
    std::vector<std::byte> bytes(144 * 2);
    tensor_view w;
    w.name = "blk.0.ffn_down.weight";
    w.type = dtype::q3_k;
    w.n_dims = 2;
    w.ne = {256, 2, 1, 1};
    w.data = bytes.data();
    std::vector<float> x(256), y(2);
    CHECK_THROWS_WITH(lumen::cpu::matvec(w, x.data(), y.data(), pool),
                      Catch::Contains("blk.0.ffn_down.weight") && Catch::Contains("Q3_K"));
    CHECK_THROWS_WITH(lumen::cpu::matmul(w, x.data(), y.data(), 1, pool), Catch::Contains("Q3_K"));
    w.type = dtype::q8_0;
    w.ne = {31, 2, 1, 1};
    CHECK_THROWS_AS(lumen::cpu::matvec(w, x.data(), y.data(), pool), lumen::error);
}

TEST_CASE("attention over the KV cache matches the reference, for grouped heads, any thread count and both cache layouts", "[kernels]") {
    struct shape {
        int64_t n_heads, n_kv_heads, head_dim, n_tokens, pos0;
    };
    for (const shape sh : {shape{4, 4, 8, 1, 0}, shape{4, 2, 16, 1, 9}, shape{8, 2, 12, 5, 3}, shape{6, 1, 33, 7, 0},
                           shape{4, 4, 64, 3, 40}, shape{2, 1, 72, 2, 5}, shape{3, 3, 16, 19, 4}, shape{4, 2, 8, 11, 0}}) {
        for (int n_threads : {1, 2, 3})
        for (bool head_major : {false, true})
        for (dtype kv_type : {dtype::f32, dtype::f16}) {
            INFO("heads " << sh.n_heads << "/" << sh.n_kv_heads << ", head_dim " << sh.head_dim << ", tokens "
                          << sh.n_tokens << ", pos0 " << sh.pos0 << ", threads " << n_threads << ", head-major " << head_major
                          << ", cache " << lumen::dtype_name(kv_type));
            thread_pool pool(n_threads);
            const int64_t n_ctx = sh.pos0 + sh.n_tokens + 3, kv_dim = sh.n_kv_heads * sh.head_dim;
            const int64_t q_dim = sh.n_heads * sh.head_dim;
            const std::vector<float> q = random_floats(static_cast<size_t>(sh.n_tokens * q_dim), 61);
            std::vector<float> k = random_floats(static_cast<size_t>(n_ctx * kv_dim), 62);  // (n_ctx, kv_dim)
            std::vector<float> v = random_floats(static_cast<size_t>(n_ctx * kv_dim), 63);
            if (kv_type == dtype::f16)  // the reference sees what the halves hold
                for (std::vector<float>* c : {&k, &v})
                    for (float& e : *c) e = lumen::detail::fp16_to_fp32(lumen::detail::fp32_to_fp16(e));
            std::vector<float> out(static_cast<size_t>(sh.n_tokens * q_dim), NAN);
            // head-major: the same keys and values as (n_kv_heads, n_ctx, head_dim), as llama_state keeps them
            std::vector<float> k_heads(k.size()), v_heads(v.size());
            for (int64_t j = 0; j < n_ctx; ++j)
                for (int64_t i = 0; i < kv_dim; ++i) {
                    const auto to = static_cast<size_t>(((i / sh.head_dim) * n_ctx + j) * sh.head_dim + i % sh.head_dim);
                    k_heads[to] = k[static_cast<size_t>(j * kv_dim + i)];
                    v_heads[to] = v[static_cast<size_t>(j * kv_dim + i)];
                }
            const lumen::attention_shape s =
                head_major ? lumen::attention_shape{sh.n_tokens, sh.pos0, sh.n_heads, sh.n_kv_heads, sh.head_dim, sh.head_dim, n_ctx, n_ctx * sh.head_dim, kv_type}
                           : lumen::attention_shape{sh.n_tokens, sh.pos0, sh.n_heads, sh.n_kv_heads, sh.head_dim, kv_dim, n_ctx, sh.head_dim, kv_type};
            const std::vector<float>& k_in = head_major ? k_heads : k;
            const std::vector<float>& v_in = head_major ? v_heads : v;
            std::vector<uint16_t> k_f16(k_in.size()), v_f16(v_in.size());
            for (size_t i = 0; i < k_in.size(); ++i) {
                k_f16[i] = lumen::detail::fp32_to_fp16(k_in[i]);
                v_f16[i] = lumen::detail::fp32_to_fp16(v_in[i]);
            }
            std::vector<float> scores(static_cast<size_t>(lumen::cpu::attention_scratch_floats(s)));
            if (kv_type == dtype::f16)
                lumen::cpu::attention(out.data(), q.data(), k_f16.data(), v_f16.data(), s, scores.data(), pool);
            else
                lumen::cpu::attention(out.data(), q.data(), k_in.data(), v_in.data(), s, scores.data(), pool);
            const ref::mat km = ref::from_floats(k.data(), n_ctx, kv_dim), vm = ref::from_floats(v.data(), n_ctx, kv_dim);
            const int64_t group = sh.n_heads / sh.n_kv_heads;
            for (int64_t t = 0; t < sh.n_tokens; ++t)
                for (int64_t h = 0; h < sh.n_heads; ++h) {
                    const int64_t n_seen = sh.pos0 + t + 1, c0 = (h / group) * sh.head_dim, c1 = c0 + sh.head_dim;
                    const ref::mat kh = xt::view(km, xt::range(0, n_seen), xt::range(c0, c1));
                    const ref::mat vh = xt::view(vm, xt::range(0, n_seen), xt::range(c0, c1));
                    const ref::vec qh = ref::from_floats(q.data() + (t * sh.n_heads + h) * sh.head_dim, sh.head_dim);
                    const ref::vec p = ref::softmax(ref::matvec(kh, qh) / std::sqrt(static_cast<double>(sh.head_dim)));
                    const ref::vec expected = ref::matvec(xt::transpose(vh), p);  // sum_j p_j v_j
                    for (int64_t i = 0; i < sh.head_dim; ++i)
                        REQUIRE(out[(t * sh.n_heads + h) * sh.head_dim + i] == Approx(expected(i)).margin(1e-5));
                }
        }
    }
}

TEST_CASE("float block scales: 4 rows' scales of a block side by side, made once per weight by the scratch", "[kernels]") {
    for (dtype type : {dtype::q8_0, dtype::q4_0})
        for (int64_t rows : {1, 4, 7, 9}) {
            const int64_t n_blocks = 3, block_bytes = lumen::traits_of(type).block_bytes;
            std::vector<std::byte> bytes(static_cast<size_t>(rows * n_blocks * block_bytes));
            for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 37 + 11);
            const std::vector<float> scales =
                lumen::cpu::float_block_scales(bytes.data(), rows, n_blocks * block_bytes, n_blocks, block_bytes);
            REQUIRE(scales.size() == static_cast<size_t>((rows + 3) / 4 * 4 * n_blocks));
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t b = 0; b < n_blocks; ++b) {
                    uint16_t h;
                    std::memcpy(&h, bytes.data() + (r * n_blocks + b) * block_bytes, 2);
                    const float expected = lumen::detail::fp16_to_fp32(h);
                    const float got = scales[static_cast<size_t>((r / 4) * n_blocks * 4 + b * 4 + r % 4)];
                    CHECK(std::memcmp(&got, &expected, sizeof got) == 0);
                }
            lumen::tensor_view w;
            w.type = type;
            w.n_dims = 2;
            w.ne = {32 * n_blocks, rows, 1, 1};
            w.data = bytes.data();
            lumen::cpu::matmul_scratch scratch;
            const float* first = scratch.float_scales_for(w);
            CHECK(std::memcmp(scales.data(), first, scales.size() * sizeof(float)) == 0);  // (NaN scales too)
            CHECK(scratch.float_scales_for(w) == first);  // kept, not made again
        }
    // where they cannot be made, the weight goes without (the kernels then read the fp16 scales)
    std::vector<std::byte> block(34);
    lumen::tensor_view huge;
    huge.type = dtype::q8_0;
    huge.n_dims = 2;
    huge.ne = {32, int64_t{1} << 62, 1, 1};  // more scales than a vector can hold; never read
    huge.data = block.data();
    lumen::cpu::matmul_scratch scratch;
    CHECK(scratch.float_scales_for(huge) == nullptr);
    CHECK(scratch.float_scales_for(huge) == nullptr);
}

TEST_CASE("store_kv puts each head of each new row at its position in a head-major cache, as floats or halves, the CPU backend's and the default alike", "[kernels]") {
    const int64_t n_kv_heads = 3, head_dim = 11, n_ctx = 7, pos0 = 2, n = 4, kv_dim = n_kv_heads * head_dim;
    std::vector<float> x = random_floats(static_cast<size_t>(n * kv_dim), 81);
    x[5] = 70000.0f;  // beyond the halves' range: infinity
    x[6] = 1e-6f;     // a subnormal half
    lumen::cpu::cpu_backend be(2);
    std::vector<float> cache(static_cast<size_t>(n_kv_heads * n_ctx * head_dim), -1.0f);
    std::vector<uint16_t> cache_f16(cache.size(), 0xabcd);
    be.store_kv(cache.data(), dtype::f32, x.data(), n, pos0, n_kv_heads, head_dim, n_ctx);
    be.store_kv(cache_f16.data(), dtype::f16, x.data(), n, pos0, n_kv_heads, head_dim, n_ctx);
    for (int64_t g = 0; g < n_kv_heads; ++g)
        for (int64_t j = 0; j < n_ctx; ++j)
            for (int64_t i = 0; i < head_dim; ++i) {
                const auto at = static_cast<size_t>((g * n_ctx + j) * head_dim + i);
                const bool written = j >= pos0 && j < pos0 + n;
                const float value = written ? x[static_cast<size_t>((j - pos0) * kv_dim + g * head_dim + i)] : -1.0f;
                INFO("head " << g << ", position " << j << ", element " << i);
                CHECK(cache[at] == value);
                CHECK(cache_f16[at] == (written ? lumen::detail::fp32_to_fp16(value) : uint16_t{0xabcd}));
            }
    // the backend's own implementation (what other backends inherit) puts the same bits in place
    std::vector<float> cache_default(cache.size(), -1.0f);
    std::vector<uint16_t> cache_f16_default(cache.size(), 0xabcd);
    be.lumen::backend::store_kv(cache_default.data(), dtype::f32, x.data(), n, pos0, n_kv_heads, head_dim, n_ctx);
    be.lumen::backend::store_kv(cache_f16_default.data(), dtype::f16, x.data(), n, pos0, n_kv_heads, head_dim, n_ctx);
    CHECK(std::memcmp(cache_default.data(), cache.data(), cache.size() * sizeof(float)) == 0);
    CHECK(cache_f16_default == cache_f16);
    std::vector<std::byte> bytes(64);
    CHECK_THROWS_WITH(be.store_kv(bytes.data(), dtype::q8_0, x.data(), 1, 0, 1, 8, 1),
                      Catch::Contains("KV cache type Q8_0 is not supported"));
    CHECK_THROWS_WITH(be.lumen::backend::store_kv(bytes.data(), dtype::q4_0, x.data(), 1, 0, 1, 8, 1),
                      Catch::Contains("KV cache type Q4_0 is not supported"));
}

TEST_CASE("attention's weighted sum of value rows equals the scalar one bit for bit", "[kernels]") {
    for (int64_t n : {1, 7, 8, 9, 48, 64, 65, 128, 200})
        for (int64_t n_rows : {1, 3, 70}) {
            INFO("rows " << n_rows << " of " << n);
            const int64_t stride = n + 3;
            const std::vector<float> v = random_floats(static_cast<size_t>(n_rows * stride), 64);
            const std::vector<float> a = random_floats(static_cast<size_t>(n_rows), 65);
            std::vector<float> out(static_cast<size_t>(n)), expected(static_cast<size_t>(n));
            lumen::cpu::weighted_sum(out.data(), a.data(), v.data(), stride, n_rows, n);
            lumen::cpu::weighted_sum_scalar(expected.data(), a.data(), v.data(), stride, n_rows, n);
            CHECK(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
            // value rows of halves (an f16 KV cache): the same, on the widened values
            std::vector<uint16_t> v_f16(v.size());
            std::vector<float> widened(v.size());
            for (size_t i = 0; i < v.size(); ++i) {
                v_f16[i] = lumen::detail::fp32_to_fp16(v[i]);
                widened[i] = lumen::detail::fp16_to_fp32(v_f16[i]);
            }
            lumen::cpu::weighted_sum(out.data(), a.data(), v_f16.data(), stride, n_rows, n);
            lumen::cpu::weighted_sum_scalar(expected.data(), a.data(), widened.data(), stride, n_rows, n);
            CHECK(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
            lumen::cpu::weighted_sum_scalar(out.data(), a.data(), v_f16.data(), stride, n_rows, n);
            CHECK(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
        }
}

TEST_CASE("round_to_fp16 gives fp32_to_fp16's bits", "[kernels]") {
    std::vector<float> x = random_floats(1000, 91, -70000.0f, 70000.0f);
    for (float special : {0.0f, -0.0f, 1e-8f, -3e-6f, 6.1e-5f, 65504.0f, 65519.0f, 65520.0f, -1e30f, 1.0f / 3.0f})
        x.push_back(special);
    for (int64_t n : {int64_t{0}, int64_t{5}, static_cast<int64_t>(x.size())}) {
        std::vector<uint16_t> got(x.size(), 0x1234);
        lumen::cpu::round_to_fp16(got.data(), x.data(), n);
        for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) {
            INFO("x = " << x[static_cast<size_t>(i)] << ", n " << n);
            CHECK(got[static_cast<size_t>(i)] == (i < n ? lumen::detail::fp32_to_fp16(x[static_cast<size_t>(i)]) : uint16_t{0x1234}));
        }
    }
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

TEST_CASE("the CPU backend's rope reuses its angles only for the same positions, with rope_adjacent_pairs' bits", "[kernels]") {
    const int64_t n_heads = 3, head_dim = 8, rope_dims = 6, dim = n_heads * head_dim;
    lumen::cpu::cpu_backend be(1);
    struct call {
        int64_t pos0, n;
        float freq_base;
    };
    // repeated positions (reuse), new positions, another batch size and another base (recompute)
    for (const call c : {call{3, 2, 10000.0f}, call{3, 2, 10000.0f}, call{4, 2, 10000.0f}, call{0, 5, 10000.0f},
                         call{0, 5, 500000.0f}, call{3, 2, 10000.0f}, call{3, 1, 10000.0f}}) {
        INFO("pos0 " << c.pos0 << ", n " << c.n << ", base " << c.freq_base);
        const std::vector<float> x = random_floats(static_cast<size_t>(c.n * dim), 71);
        std::vector<float> got = x, expected = x;
        be.rope(got.data(), c.n, n_heads, head_dim, rope_dims, c.pos0, c.freq_base);
        for (int64_t t = 0; t < c.n; ++t)
            lumen::cpu::rope_adjacent_pairs(expected.data() + t * dim, n_heads, head_dim, rope_dims, c.pos0 + t, c.freq_base);
        CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
    }
    std::vector<float> v(16);
    CHECK_THROWS_AS(be.rope(v.data(), 1, 2, 8, 3, 0, 10000.0f), lumen::error);
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

// exp8 (cpu/exp.hpp) is glibc's expf 8 lanes at a time; where it is compiled in, it must give
// std::exp's bits for every float (checked exhaustively over [-104, 89] when it was written; here
// every 97th float of that range, the special cases, and the edges of glibc's fast path).
TEST_CASE("exp_minus, swiglu and softmax give std::exp's bits, vectorised or not", "[kernels]") {
    std::vector<float> x;
    for (const float special : {0.0f, -0.0f, 1.0f, -1.0f, 88.0f, -88.0f, 0x1.62e42ep6f, 0x1.62e430p6f, -0x1.9fe368p6f,
                                -0x1.9fe36ap6f, -0x1.9d1d9ep6f, -103.0f, -87.99f, 87.99f, 1e-30f, -1e-30f, 1e-45f, INFINITY,
                                -INFINITY, NAN, 3.4e38f, -3.4e38f})
        x.push_back(special);
    const float lo = -104.0f, hi = 89.0f;
    uint32_t a, b;
    std::memcpy(&a, &hi, 4);
    for (uint32_t u = 0; u < a; u += 97) {  // [0, 89)
        float f;
        std::memcpy(&f, &u, 4);
        x.push_back(f);
    }
    std::memcpy(&b, &lo, 4);
    for (uint32_t u = 0x80000000u; u < b; u += 97) {  // (-104, -0]
        float f;
        std::memcpy(&f, &u, 4);
        x.push_back(f);
    }
    std::vector<float> got = x;
    lumen::cpu::exp_minus(got.data(), static_cast<int64_t>(got.size()), 0.0f);
    size_t differ = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const float want = std::exp(x[i] - 0.0f);
        if (std::memcmp(&got[i], &want, 4) != 0 && !(std::isnan(want) && std::isnan(got[i]))) {
            if (differ++ < 5) UNSCOPED_INFO("exp(" << x[i] << "): got " << got[i] << ", std::exp " << want);
        }
    }
    CHECK(differ == 0);
    // swiglu against silu * up, in place as matmul_swiglu calls it, every tail length
    for (int64_t n : {1, 7, 8, 9, 23, 64, 1000}) {
        std::vector<float> gate = random_floats(static_cast<size_t>(n), 91, -30.0f, 30.0f);
        const std::vector<float> up = random_floats(static_cast<size_t>(n), 92);
        std::vector<float> expected(gate.size());
        for (size_t i = 0; i < gate.size(); ++i) expected[i] = lumen::cpu::silu(gate[i]) * up[i];
        lumen::cpu::swiglu(gate.data(), gate.data(), up.data(), n);
        CHECK(std::memcmp(gate.data(), expected.data(), gate.size() * sizeof(float)) == 0);
    }
#if defined(LUMEN_CPU_HAVE_EXP8)
    SUCCEED("exp8 compiled in (AVX2 + FMA, glibc)");
#else
    SUCCEED("exp8 not compiled in: std::exp throughout");
#endif
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

// A Q6_K weight of random bytes (every quant, high-bit pattern and int8 scale, -128 included), with
// fp16 d of random sign and size.
weight random_q6_k_weight(int64_t rows, int64_t cols, uint32_t seed) {
    weight w = make_weight(dtype::q6_k, rows, cols, seed);
    std::mt19937 rng(seed);
    for (size_t super = 0; super < w.bytes.size(); super += lumen::block_q6_k_bytes) {
        for (size_t i = 0; i < 208; ++i) w.bytes[super + i] = static_cast<std::byte>(rng());
        const uint16_t d = static_cast<uint16_t>(0x1000 + rng() % 0x2000 + (rng() & 1) * 0x8000);
        std::memcpy(&w.bytes[super + 208], &d, 2);
    }
    return w;
}

// A Q4_K weight of random bytes (every nibble and every 6-bit scale and min, 63 included), with
// fp16 d and dmin of random sign and size.
weight random_q4_k_weight(int64_t rows, int64_t cols, uint32_t seed) {
    weight w = make_weight(dtype::q4_k, rows, cols, seed);
    std::mt19937 rng(seed);
    for (size_t super = 0; super < w.bytes.size(); super += lumen::block_q4_k_bytes) {
        for (size_t half = 0; half < 2; ++half) {
            const uint16_t d = static_cast<uint16_t>(0x1000 + rng() % 0x2000 + (rng() & 1) * 0x8000);
            std::memcpy(&w.bytes[super + 2 * half], &d, 2);
        }
        for (size_t i = 4; i < lumen::block_q4_k_bytes; ++i) w.bytes[super + i] = static_cast<std::byte>(rng());
    }
    return w;
}

TEST_CASE("repacked Q8_0, Q4_0 (AVX-512: 16-row groups, AVX2: 8), Q4_K and Q6_K (AVX-512) weights give the scalar results bit for bit", "[kernels]") {
#if !defined(LUMEN_CPU_HAVE_AVX2)
    SUCCEED("no AVX2 or AVX-512 kernels in this build: nothing is repacked");
#else
    thread_pool pool(2);
    const lumen::cpu::kernel_set& ks = lumen::cpu::avx2_kernels();  // (the default set, unless forced scalar)
    for (dtype type : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
        const lumen::cpu::matmul_kernel& k = *ks.find(type);
        const bool k_quant = type == dtype::q4_k || type == dtype::q6_k;
#if defined(LUMEN_CPU_HAVE_AVX512)
        REQUIRE(k.pack != nullptr);
#else
        if (k_quant) {
            CHECK(k.pack == nullptr);  // repacked on AVX-512 only
            continue;
        }
        REQUIRE(k.pack != nullptr);
#endif
        for (int64_t rows : {16, 35, 64})
            for (int64_t cols : k_quant ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{32, 96, 320})
                for (int64_t n_tokens : {1, 2, 3, 4, 5, 9}) {
                    INFO("type " << lumen::dtype_name(type) << ", rows " << rows << ", cols " << cols << ", tokens " << n_tokens);
                    const uint32_t seed = static_cast<uint32_t>(rows * cols + n_tokens);
                    const weight w = !k_quant || n_tokens % 3 != 0 ? make_weight(type, rows, cols, seed)
                                     : type == dtype::q4_k              ? random_q4_k_weight(rows, cols, seed)
                                                                        : random_q6_k_weight(rows, cols, seed);
                    const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 17, -2.0f, 2.0f);
                    const std::vector<float> expected = run_matmul(w, x, n_tokens, pool, lumen::cpu::scalar_kernels());

                    lumen::cpu::matmul_scratch scratch;
                    if (n_tokens % 2 == 0) {  // made ahead (a context does it for every weight), or on first use
                        lumen::cpu::prepare_weight(w.view, pool, scratch, ks);
                        REQUIRE(scratch.packed.size() == 1);
                    }
                    std::vector<float> y(expected.size(), NAN);
                    lumen::cpu::matmul(w.view, x.data(), y.data(), n_tokens, pool, scratch, ks);
                    REQUIRE(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)) == 0);
                    REQUIRE(scratch.packed.size() == 1);  // made once, for the whole groups only
                    const lumen::cpu::packed_weight* p = scratch.packed_for(w.view, k, pool);
                    REQUIRE(p != nullptr);
                    CHECK(p->rows == rows / k.pack_rows * k.pack_rows);

                    // any row range: partial groups at either end go through the unpacked kernels
                    lumen::cpu::q8_buffer buffer;
                    const lumen::cpu::q8_activations xq = buffer.view(n_tokens, cols);
                    lumen::cpu::quantize_tokens(ks.quantize_block, x.data(), xq, 0, n_tokens);
                    lumen::cpu::matmul_args a = kernel_args(w, n_tokens);
                    a.xq = &xq;
                    a.w_packed = p->data.get();
                    a.packed_rows = p->rows;
                    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{5, rows}, {0, rows - 3}, {3, 19}, {16, 32}, {8, 24}}) {
                        r1 = std::min(r1, rows);
                        if (r1 <= r0) continue;
                        std::vector<float> part(y.size(), NAN);
                        a.y = part.data();
                        k.rows(a, r0, r1);
                        for (int64_t t = 0; t < n_tokens; ++t)
                            for (int64_t r = r0; r < r1; ++r) {
                                const size_t i = static_cast<size_t>(t * rows + r);
                                INFO("rows [" << r0 << ", " << r1 << "), row " << r << ", token " << t);
                                REQUIRE(std::memcmp(&part[i], &expected[i], sizeof(float)) == 0);
                            }
                    }

                    // repacking off: the kernels read the stored layout, same results, nothing kept
                    lumen::cpu::matmul_scratch unpacked;
                    unpacked.pack_weights = false;
                    std::fill(y.begin(), y.end(), NAN);
                    lumen::cpu::matmul(w.view, x.data(), y.data(), n_tokens, pool, unpacked, ks);
                    REQUIRE(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)) == 0);
                    CHECK(unpacked.packed.empty());
                }
    }
    // Q8_0 quants of -128 become 0 once stored + 128: still the scalar results
    weight w = make_weight(dtype::q8_0, 32, 64, 3);
    for (size_t block = 0; block < w.bytes.size(); block += lumen::block_q8_0_bytes)
        for (size_t j = 0; j < 32; j += 3) w.bytes[block + 2 + j] = std::byte{0x80};
    const std::vector<float> x = random_floats(2 * 64, 19, -2.0f, 2.0f);
    CHECK(run_matmul(w, x, 2, pool, ks) == run_matmul(w, x, 2, pool, lumen::cpu::scalar_kernels()));
#endif
}

TEST_CASE("matmul_swiglu (the feed-forward's products with silu * up fused) equals matmul then swiglu, bit for bit", "[kernels]") {
    for (int n_threads : {1, 2, 3}) {
        thread_pool pool(n_threads);
        for (dtype type : {dtype::f32, dtype::q8_0, dtype::q4_0, dtype::q6_k})
            for (int64_t hidden : {16, 40, 96})
                for (int64_t n_tokens : {1, 2, 5}) {
                    const int64_t cols = type == dtype::q6_k ? 256 : 64;
                    INFO("type " << lumen::dtype_name(type) << ", hidden " << hidden << ", tokens " << n_tokens << ", threads " << n_threads);
                    const weight w_gate = make_weight(type, hidden, cols, static_cast<uint32_t>(hidden + n_tokens));
                    const weight w_up = make_weight(type, hidden, cols, static_cast<uint32_t>(3 * hidden + n_tokens));
                    const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 23, -2.0f, 2.0f);
                    std::vector<float> expected = run_matmul(w_gate, x, n_tokens, pool, lumen::cpu::default_kernels());
                    const std::vector<float> up = run_matmul(w_up, x, n_tokens, pool, lumen::cpu::default_kernels());
                    lumen::cpu::swiglu(expected.data(), expected.data(), up.data(), n_tokens * hidden);

                    std::vector<float> gate(expected.size(), NAN), up_fused(expected.size(), NAN);
                    lumen::cpu::matmul_scratch scratch;
                    lumen::cpu::matmul_swiglu(w_gate.view, w_up.view, x.data(), gate.data(), up_fused.data(), n_tokens, pool, scratch);
                    REQUIRE(std::memcmp(gate.data(), expected.data(), gate.size() * sizeof(float)) == 0);
                    REQUIRE(std::memcmp(up_fused.data(), up.data(), up.size() * sizeof(float)) == 0);
                }
    }
    // the two weights must have as many rows: the error names both
    thread_pool pool(2);
    const weight a = make_weight(dtype::q8_0, 32, 64, 1), b = make_weight(dtype::q8_0, 48, 64, 2);
    std::vector<float> x(64, 1.0f), gate(48), up(48);
    lumen::cpu::matmul_scratch scratch;
    REQUIRE_THROWS_WITH(lumen::cpu::matmul_swiglu(a.view, b.view, x.data(), gate.data(), up.data(), 1, pool, scratch),
                        Catch::Contains("test.weight") && Catch::Contains("32 and 48"));
}

TEST_CASE("feed_forward (swiglu and w_down as two phases of one job, gate quantized in the first) equals matmul_swiglu then matmul, bit for bit", "[kernels]") {
    for (int n_threads : {1, 2, 3}) {
        thread_pool pool(n_threads);
        // w_down's type decides whether gate is quantized ahead (8-bit kernels) or not (F32, F16)
        for (dtype down_type : {dtype::q4_0, dtype::q8_0, dtype::q6_k, dtype::q4_k, dtype::f32, dtype::f16})
            for (int64_t hidden : {256, 288, 40})
                for (int64_t n_tokens : {1, 2, 5, 12}) {  // 12: more than one_job_max_tokens, the separate ops
                    const bool k_quant = down_type == dtype::q6_k || down_type == dtype::q4_k;
                    if (hidden % (k_quant ? 256 : 32) != 0 && down_type != dtype::f32 && down_type != dtype::f16) continue;
                    const int64_t cols = 64, rows = 48;
                    INFO("w_down " << lumen::dtype_name(down_type) << ", hidden " << hidden << ", tokens " << n_tokens << ", threads " << n_threads);
                    const weight w_gate = make_weight(dtype::q8_0, hidden, cols, static_cast<uint32_t>(hidden + n_tokens));
                    const weight w_up = make_weight(dtype::q4_0, hidden, cols, static_cast<uint32_t>(5 * hidden + n_tokens));
                    const weight w_down = make_weight(down_type, rows, hidden, static_cast<uint32_t>(7 * hidden + n_tokens));
                    const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 29, -2.0f, 2.0f);
                    const auto n = static_cast<size_t>(n_tokens * hidden);
                    std::vector<float> gate(n, NAN), up(n, NAN);
                    lumen::cpu::matmul_scratch scratch;
                    lumen::cpu::matmul_swiglu(w_gate.view, w_up.view, x.data(), gate.data(), up.data(), n_tokens, pool, scratch);
                    const std::vector<float> expected = run_matmul(w_down, gate, n_tokens, pool, lumen::cpu::default_kernels());

                    std::vector<float> gate2(n, NAN), up2(n, NAN), out(expected.size(), NAN);
                    lumen::cpu::feed_forward(w_gate.view, w_up.view, w_down.view, x.data(), gate2.data(), up2.data(), out.data(),
                                             n_tokens, pool, scratch);
                    REQUIRE(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
                    REQUIRE(std::memcmp(gate2.data(), gate.data(), n * sizeof(float)) == 0);
                }
    }
    thread_pool pool(2);
    lumen::cpu::matmul_scratch scratch;
    const weight w_gate = make_weight(dtype::q8_0, 64, 64, 1), w_up = make_weight(dtype::q8_0, 64, 64, 2);
    std::vector<float> x(64, 1.0f), gate(64), up(64), out(64);
    // w_down must take rows of hidden elements: the error names it
    const weight w_down_bad = make_weight(dtype::q4_0, 64, 96, 3);
    REQUIRE_THROWS_WITH(lumen::cpu::feed_forward(w_gate.view, w_up.view, w_down_bad.view, x.data(), gate.data(), up.data(),
                                                 out.data(), 1, pool, scratch),
                        Catch::Contains("test.weight") && Catch::Contains("96") && Catch::Contains("64"));
    // activations quantized for another shape are refused, not read out of bounds
    lumen::cpu::q8_buffer buffer;
    const lumen::cpu::q8_activations wrong = buffer.view(2, 64);
    const lumen::matmul_product p{&w_gate.view, out.data()};
    lumen::cpu::prepared_products prepared;
    REQUIRE_THROWS_WITH(prepared.prepare({&p, 1}, x.data(), 1, pool, scratch, lumen::cpu::default_kernels(), &wrong),
                        Catch::Contains("quantized activations") && Catch::Contains("(2, 64)"));
}

TEST_CASE("self_attention in one job (RoPE and the cache stores in the projections' chunks, wo's input quantized by attention's) equals the separate ops, bit for bit", "[kernels]") {
    struct config {
        int64_t n_heads, n_kv_heads, head_dim, rope_dims;
        dtype weights, wo;
    };
    const config configs[] = {
        {4, 4, 64, 64, dtype::q4_0, dtype::q4_0}, {8, 2, 32, 16, dtype::q8_0, dtype::q8_0}, {4, 2, 64, 64, dtype::q4_0, dtype::f32},
        {6, 3, 8, 8, dtype::f32, dtype::f16},  // heads of 8: in one job, wo takes floats
        {8, 4, 8, 8, dtype::q8_0, dtype::q8_0},  // heads of 8 with an 8-bit wo: the separate ops
    };
    for (int n_threads : {1, 2, 3})
        for (const config& c : configs)
            for (dtype cache_type : {dtype::f32, dtype::f16})
                for (int64_t n : {1, 3, 10})
                    for (int64_t pos0 : {0, 5}) {
                        INFO("threads " << n_threads << ", heads " << c.n_heads << "/" << c.n_kv_heads << " of " << c.head_dim
                                        << ", weights " << lumen::dtype_name(c.weights) << ", wo " << lumen::dtype_name(c.wo)
                                        << ", cache " << lumen::dtype_name(cache_type) << ", tokens " << n << " at " << pos0);
                        const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim, dim = 64, n_ctx = 20;
                        const auto seed = static_cast<uint32_t>(c.head_dim + 7 * n + 31 * pos0);
                        const weight wq = make_weight(c.weights, q_dim, dim, seed), wk = make_weight(c.weights, kv_dim, dim, seed + 1);
                        const weight wv = make_weight(c.weights, kv_dim, dim, seed + 2), wo = make_weight(c.wo, dim, q_dim, seed + 3);
                        const std::vector<float> h = random_floats(static_cast<size_t>(n * dim), seed + 4, -2.0f, 2.0f);
                        // two sets of caches and scratch, the earlier positions filled alike
                        const size_t cache_elements = static_cast<size_t>(c.n_kv_heads * n_ctx * c.head_dim);
                        const std::vector<float> earlier = random_floats(2 * cache_elements, seed + 5);
                        struct run {
                            std::vector<float> k_f32, v_f32, q, k, v, attn, proj;
                            std::vector<uint16_t> k_f16, v_f16;
                        } fused, separate;
                        for (run* r : {&fused, &separate}) {
                            r->k_f32.assign(earlier.begin(), earlier.begin() + static_cast<long>(cache_elements));
                            r->v_f32.assign(earlier.begin() + static_cast<long>(cache_elements), earlier.end());
                            for (float x : r->k_f32) r->k_f16.push_back(lumen::detail::fp32_to_fp16(x));
                            for (float x : r->v_f32) r->v_f16.push_back(lumen::detail::fp32_to_fp16(x));
                            r->q.assign(static_cast<size_t>(n * q_dim), NAN);
                            r->k.assign(static_cast<size_t>(n * kv_dim), NAN);
                            r->v = r->k;
                            r->attn = r->q;
                            r->proj.assign(static_cast<size_t>(n * dim), NAN);
                        }
                        auto step = [&](run& r) {
                            const bool f16 = cache_type == dtype::f16;
                            const lumen::attention_shape shape{n, pos0, c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim,
                                                               n_ctx, n_ctx * c.head_dim, cache_type};
                            return lumen::self_attention_step{&wq.view, &wk.view, &wv.view, &wo.view, r.q.data(), r.k.data(),
                                                              r.v.data(), r.attn.data(),
                                                              f16 ? static_cast<void*>(r.k_f16.data()) : r.k_f32.data(),
                                                              f16 ? static_cast<void*>(r.v_f16.data()) : r.v_f32.data(),
                                                              shape, c.rope_dims, 10000.0f};
                        };
                        lumen::cpu::cpu_backend be(n_threads);
                        const lumen::self_attention_step fused_step = step(fused);
                        if (lumen::cpu::self_attention_in_one_job(fused_step)) {  // as one job, for any batch
                            std::vector<float> table(static_cast<size_t>(n * c.rope_dims));
                            for (int64_t t = 0; t < n; ++t)
                                lumen::cpu::rope_angles(table.data() + t * c.rope_dims, c.rope_dims, pos0 + t, 10000.0f);
                            std::vector<float> scores(static_cast<size_t>(lumen::cpu::attention_scratch_floats(fused_step.shape)));
                            lumen::cpu::matmul_scratch scratch;
                            thread_pool pool(n_threads);
                            lumen::cpu::self_attention(fused.proj.data(), h.data(), fused_step, table.data(), scores.data(), pool,
                                                       scratch);
                        } else {
                            be.self_attention(fused.proj.data(), h.data(), fused_step);  // the separate ops
                        }
                        be.lumen::backend::self_attention(separate.proj.data(), h.data(), step(separate));
                        auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
                            return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
                        };
                        REQUIRE(same(fused.proj, separate.proj));
                        REQUIRE(same(fused.attn, separate.attn));
                        REQUIRE(same(fused.q, separate.q));  // roped alike
                        REQUIRE(same(fused.k_f32, separate.k_f32));
                        REQUIRE(same(fused.v_f32, separate.v_f32));
                        REQUIRE(fused.k_f16 == separate.k_f16);
                        REQUIRE(fused.v_f16 == separate.v_f16);
                        if (n == 1) {  // and the CPU backend's own call (one job up to one_job_max_tokens)
                            run again = separate;
                            std::fill(again.proj.begin(), again.proj.end(), NAN);
                            be.self_attention(again.proj.data(), h.data(), step(again));
                            REQUIRE(same(again.proj, separate.proj));
                        }
                    }
    // a weight whose shape does not fit the heads is named
    thread_pool pool(2);
    lumen::cpu::matmul_scratch scratch;
    const weight wq = make_weight(dtype::q8_0, 128, 64, 1), wk_bad = make_weight(dtype::q8_0, 96, 64, 2);
    const weight wv = make_weight(dtype::q8_0, 64, 64, 3), wo = make_weight(dtype::q8_0, 64, 128, 4);
    std::vector<float> h(64, 1.0f), q(128), k(64), v(64), attn(128), proj(64), k_cache(64 * 4), v_cache(64 * 4), table(64, 1.0f);
    std::vector<float> scores(2 * lumen::cpu::attention_query_block * 4);
    const lumen::attention_shape shape{1, 0, 2, 1, 64, 64, 4, 4 * 64, dtype::f32};
    const lumen::self_attention_step bad{&wq.view, &wk_bad.view, &wv.view, &wo.view, q.data(), k.data(), v.data(), attn.data(),
                                         k_cache.data(), v_cache.data(), shape, 64, 10000.0f};
    REQUIRE_THROWS_WITH(lumen::cpu::self_attention(proj.data(), h.data(), bad, table.data(), scores.data(), pool, scratch),
                        Catch::Contains("test.weight") && Catch::Contains("96 rows, expected 64"));
}
