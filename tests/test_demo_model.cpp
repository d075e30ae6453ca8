// test_demo_model.cpp: the demo model the project trained and committed (models/demo-kjv.gguf, see
// models/README.md) is what the README says it is, and `make demo`'s command prints the README's text.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>

#include <lumen/lumen.hpp>

#include "test_util.hpp"

namespace {

const std::string demo_model = std::string(LUMEN_SOURCE_DIR) + "/models/demo-kjv.gguf";
const std::string golden = std::string(LUMEN_SOURCE_DIR) + "/tests/golden/demo-kjv-and-it-came-to-pass.txt";

}  // namespace

TEST_CASE("the demo model has the shape, size and types models/README.md states", "[demo]") {
    const lumen::model model = lumen::model::load(demo_model);
    const lumen::model_config& c = model.config();
    CHECK(c.architecture == "llama");
    CHECK(c.n_vocab == 4096);
    CHECK(c.dim == 256);
    CHECK(c.n_layers == 6);
    CHECK(c.hidden_dim == 768);
    CHECK(c.n_heads == 4);
    CHECK(c.n_kv_heads == 2);
    CHECK(c.n_ctx_train == 256);
    CHECK(model.n_params() == 5770496);
    CHECK(model.weights().output == model.weights().token_embd);  // tied embeddings
    CHECK(test_util::read_file(demo_model).size() == 6238432u);
}

TEST_CASE("make demo's command prints the README's sample, byte for byte", "[demo][golden][cli]") {
    const std::string expected = test_util::read_file(golden);
    REQUIRE(expected.rfind("And it came to pass", 0) == 0);
    for (int threads : {1, 2}) {
        const std::string out = std::string(LUMEN_TEST_TMP) + "/demo_kjv_" + std::to_string(threads) + ".txt";
        const int rc = test_util::run_command(std::string(LUMEN_CLI) + " generate -m " + demo_model +
                                              " -p 'And it came to pass' -n 200 --temp 0.8 -s 42 -t " +
                                              std::to_string(threads) + " > " + out + " 2>/dev/null");
        REQUIRE(rc == 0);
        CHECK(test_util::read_file(out) == expected);
    }
}

TEST_CASE("the demo model's sample through the C++ API equals the CLI's", "[demo][golden][api]") {
    const lumen::model model = lumen::model::load(demo_model);
    lumen::context ctx(model, {.n_ctx = 256, .n_threads = 2});
    lumen::generate_options options;
    options.n_predict = 200;
    options.sampling.temperature = 0.8f;
    options.sampling.seed = 42;
    std::string text = "And it came to pass";
    lumen::generate(ctx, "And it came to pass", options, [&](std::string_view piece) {
        text += piece;
        return true;
    });
    CHECK(text == test_util::read_file(golden));
}
