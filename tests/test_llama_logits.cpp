// test_llama_logits.cpp: lumen's llama logits against an independent PyTorch forward pass
// (tests/oracle/llama_reference.py) on random models of awkward shapes, token by token and batched.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <lumen/context.hpp>
#include <lumen/model.hpp>

#include "random_llama.hpp"
#include "test_util.hpp"

namespace {

const std::string python = "/usr/bin/python3";

// The PyTorch oracle needs /usr/bin/python3 with torch and numpy: without them this test fails.
void require_torch() {
    static const int rc = test_util::run_command(python + " -c 'import torch, numpy' > /dev/null 2>&1");
    if (rc != 0)
        FAIL("/usr/bin/python3 cannot import torch and numpy, which the logits oracle needs: "
             "run scripts/install-deps.sh (Debian packages python3-torch and python3-numpy)");
}

// Logits (n_tokens, n_vocab) from tests/oracle/llama_reference.py.
std::vector<float> reference_logits(const std::string& model_path, const std::vector<int32_t>& tokens, int64_t n_vocab) {
    require_torch();
    const std::string out = model_path + ".reference.bin";
    std::remove(out.c_str());
    std::string command = python + " " + LUMEN_SOURCE_DIR + "/tests/oracle/llama_reference.py " + model_path + " " + out;
    for (int32_t t : tokens) {
        command += ' ';
        command += std::to_string(t);
    }
    INFO("oracle: " << command);
    REQUIRE(test_util::run_command(command) == 0);
    const std::string bytes = test_util::read_file(out);
    REQUIRE(bytes.size() == tokens.size() * static_cast<size_t>(n_vocab) * sizeof(float));
    std::vector<float> logits(bytes.size() / sizeof(float));
    std::memcpy(logits.data(), bytes.data(), bytes.size());
    return logits;
}

// max |a - b| / max |b| over one row of n_vocab logits.
double relative_error(const float* a, const float* b, int64_t n) {
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < n; ++i) {
        max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
        max_ref = std::max(max_ref, std::abs(static_cast<double>(b[i])));
    }
    return max_diff / max_ref;
}

constexpr double tolerance = 1e-4;

// Every row of `logits` (n_tokens, n_vocab) within `tolerance` of the reference.
void require_rows_close(const float* logits, const std::vector<float>& reference, size_t n_tokens, int64_t n_vocab,
                        const std::string& what) {
    for (size_t t = 0; t < n_tokens; ++t) {
        const double err = relative_error(logits + t * n_vocab, reference.data() + t * n_vocab, n_vocab);
        INFO(what << ", position " << t << ": relative error " << err);
        REQUIRE(err <= tolerance);
    }
}

struct model_case {
    std::string name;
    random_llama::spec spec;
};

random_llama::spec make_spec(int64_t dim, int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t hidden_dim,
                             int64_t n_vocab, int64_t rope_dims, bool tied, lumen::dtype type, uint32_t seed) {
    random_llama::spec s;
    s.dim = dim;
    s.n_layers = n_layers;
    s.n_heads = n_heads;
    s.n_kv_heads = n_kv_heads;
    s.hidden_dim = hidden_dim;
    s.n_vocab = n_vocab;
    s.rope_dims = rope_dims;
    s.tied_output = tied;
    s.weight_type = type;
    s.seed = seed;
    return s;
}

std::vector<model_case> model_cases() {
    using lumen::dtype;
    std::vector<model_case> cases{
        // dim, layers, heads, kv heads, hidden, vocab, rope dims, tied, type, seed
        {"gqa_f32_untied", make_spec(64, 2, 8, 2, 96, 300, 0, false, dtype::f32, 11)},
        {"odd_dims_partial_rope_tied", make_spec(40, 2, 5, 5, 67, 300, 6, true, dtype::f32, 12)},
        {"f16_gqa_partial_rope_untied", make_spec(48, 3, 6, 3, 80, 283, 4, false, dtype::f16, 13)},
        {"f16_multi_query_tied", make_spec(32, 2, 4, 1, 50, 270, 0, true, dtype::f16, 14)},
        {"one_layer_mha_rope_2", make_spec(24, 1, 3, 3, 37, 261, 2, false, dtype::f32, 15)},
    };
    random_llama::spec llama3 = make_spec(64, 3, 4, 2, 160, 320, 0, false, dtype::f32, 16);
    llama3.rope_freq_base = 500000.0f;
    llama3.rms_norm_eps = 1e-6f;
    cases.push_back({"llama3_rope_base_eps", llama3});
    return cases;
}

// ~12 ids spread over the vocabulary: BOS, byte tokens, normal tokens, the last id, a repeat.
std::vector<int32_t> test_tokens(int64_t n_vocab) {
    const auto last = static_cast<int32_t>(n_vocab - 1);
    return {1, 72, 259, 104, last, 3, 260, 42, 200, 104, 258, last - 1};
}

}  // namespace

TEST_CASE("the PyTorch oracle is available", "[logits]") { require_torch(); }

TEST_CASE("llama logits equal the PyTorch reference, token by token and batched", "[logits]") {
    for (const model_case& mc : model_cases()) {
        DYNAMIC_SECTION(mc.name) {
            const std::string path = std::string(LUMEN_TEST_TMP) + "/logits_" + mc.name + ".gguf";
            random_llama::write(path, mc.spec);
            const lumen::model model = lumen::model::load(path);
            const int64_t n_vocab = model.config().n_vocab;
            REQUIRE(n_vocab == mc.spec.n_vocab);
            const std::vector<int32_t> tokens = test_tokens(n_vocab);
            const size_t n = tokens.size();
            const std::vector<float> reference = reference_logits(path, tokens, n_vocab);

            // n_batch 1: token by token through the KV cache; 5: two full batches and a partial one;
            // 16: the whole sequence in one batch.
            for (int64_t n_batch : {1, 5, 16}) {
                lumen::context ctx(model, {.n_ctx = 64, .n_batch = n_batch, .n_threads = 2});
                const xt::xtensor<float, 2> logits = ctx.evaluate(tokens);
                REQUIRE(logits.shape(0) == n);
                REQUIRE(logits.shape(1) == static_cast<size_t>(n_vocab));
                require_rows_close(logits.data(), reference, n, n_vocab, mc.name + ", evaluate, n_batch " + std::to_string(n_batch));
                CHECK(ctx.n_past() == static_cast<int64_t>(n));

                // last_logits() after evaluate is its last row.
                const auto last = ctx.last_logits();
                REQUIRE(last.size() == static_cast<size_t>(n_vocab));
                CHECK(std::equal(last.begin(), last.end(), logits.data() + (n - 1) * n_vocab));

                // decode() computes only the last row's logits; they equal evaluate()'s last row.
                lumen::context dec(model, {.n_ctx = 64, .n_batch = n_batch, .n_threads = 2});
                const auto decoded = dec.decode(tokens);
                REQUIRE(decoded.size() == static_cast<size_t>(n_vocab));
                const double err_last = relative_error(decoded.data(), logits.data() + (n - 1) * n_vocab, n_vocab);
                INFO("decode vs evaluate last row, n_batch " << n_batch << ": " << err_last);
                CHECK(err_last <= 1e-5);
                require_rows_close(decoded.data(), std::vector<float>(reference.end() - n_vocab, reference.end()), 1,
                                   n_vocab, mc.name + ", decode, n_batch " + std::to_string(n_batch));

                // After reset() the same sequence gives the same logits again.
                ctx.reset();
                const xt::xtensor<float, 2> again = ctx.evaluate(tokens);
                CHECK(std::equal(again.begin(), again.end(), logits.begin()));
            }

            // decode() one token at a time: every step's logits equal the reference row.
            lumen::context step(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1});
            for (size_t t = 0; t < n; ++t) {
                const auto row = step.decode(std::span<const int32_t>(&tokens[t], 1));
                const std::vector<float> ref_row(reference.begin() + static_cast<std::ptrdiff_t>(t * n_vocab),
                                                 reference.begin() + static_cast<std::ptrdiff_t>((t + 1) * n_vocab));
                require_rows_close(row.data(), ref_row, 1, n_vocab, mc.name + ", decode step " + std::to_string(t));
            }

            // An f16 KV cache (half the memory and the reads): keys and values rounded to 11 bits keep
            // the logits within 1e-2 of the reference, token by token and batched, and do move them.
            lumen::context exact(model, {.n_ctx = 64, .n_batch = 16, .n_threads = 2});
            const xt::xtensor<float, 2> exact_logits = exact.evaluate(tokens);
            for (int64_t n_batch : {1, 16}) {
                lumen::context half(model, {.n_ctx = 64, .n_batch = n_batch, .n_threads = 2, .kv_type = lumen::dtype::f16});
                CHECK(half.kv_type() == lumen::dtype::f16);
                const xt::xtensor<float, 2> logits = half.evaluate(tokens);
                double largest = 0;
                for (size_t t = 0; t < n; ++t) {
                    const double err = relative_error(logits.data() + t * n_vocab, reference.data() + t * n_vocab, n_vocab);
                    INFO(mc.name << ", f16 KV cache, n_batch " << n_batch << ", position " << t << ": relative error " << err);
                    REQUIRE(err <= 1e-2);
                    largest = std::max(largest, relative_error(logits.data() + t * n_vocab, exact_logits.data() + t * n_vocab, n_vocab));
                }
                CHECK(largest > 0);
            }
            CHECK_THROWS_WITH(lumen::context(model, {.n_ctx = 64, .kv_type = lumen::dtype::q8_0}),
                              Catch::Contains("KV cache type Q8_0 is not supported (f32, f16)"));
        }
    }
}

TEST_CASE("the oracle is sensitive: a different token sequence gives different logits", "[logits]") {
    // Guards against a vacuous comparison (e.g. both sides ignoring attention or position).
    const std::string path = std::string(LUMEN_TEST_TMP) + "/logits_sensitivity.gguf";
    random_llama::write(path, make_spec(32, 1, 4, 2, 48, 270, 0, false, lumen::dtype::f32, 21));
    const std::vector<int32_t> a{1, 100, 200, 150};
    const std::vector<int32_t> b{1, 200, 100, 150};  // same tokens, different order
    const std::vector<float> ra = reference_logits(path, a, 270);
    const std::vector<float> rb = reference_logits(path, b, 270);
    CHECK(relative_error(ra.data() + 3 * 270, rb.data() + 3 * 270, 270) > 1e-3);
    // The first position is the same in both: it sees only BOS.
    CHECK(relative_error(ra.data(), rb.data(), 270) < 1e-6);
}

TEST_CASE("real GGUF files written by other tools agree with the PyTorch oracle", "[logits][realdata]") {
    // ollama-tiny: F16 matrices, separate output head, the 32000-token Llama 2 vocabulary.
    const std::string path = std::string(LUMEN_REALDATA) + "/ollama-tiny/llama-2-tiny-random.gguf";
    const lumen::model model = lumen::model::load(path);
    REQUIRE(model.config().n_vocab == 32000);
    const std::vector<int32_t> tokens = model.tokenizer().encode("Hello world, this is lumen.", true);
    REQUIRE(tokens.size() >= 5);
    const std::vector<float> expected = reference_logits(path, tokens, 32000);
    lumen::context ctx(model, {.n_ctx = 64, .n_threads = 2});
    const xt::xtensor<float, 2> logits = ctx.evaluate(tokens);
    for (size_t t = 0; t < tokens.size(); ++t) {
        INFO("position " << t);
        CHECK(relative_error(logits.data() + t * 32000, expected.data() + t * 32000, 32000) <= tolerance);
    }
}
