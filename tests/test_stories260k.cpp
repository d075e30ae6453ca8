// test_stories260k.cpp: the golden test: llama2.c's stories260K, converted with `lumen convert`,
// must reproduce llama2.c's exact greedy text from BOS, through the CLI and through the C++ API.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <string>

#include <lumen/convert/llama2c.hpp>
#include <lumen/lumen.hpp>

#include "test_util.hpp"

namespace {

const std::string stories_dir = std::string(LUMEN_REALDATA) + "/stories260K";

// Converts stories260K.bin with the CLI (once per test binary) and returns the GGUF path.
const std::string& converted_model() {
    static const std::string path = [] {
        const std::string out = std::string(LUMEN_TEST_TMP) + "/stories260K_golden_" + std::to_string(::getpid()) + ".gguf";
        const int rc = test_util::run_command(std::string(LUMEN_CLI) + " convert " + stories_dir +
                                              "/stories260K.bin --tokenizer " + stories_dir + "/tok512.model -o " + out);
        if (rc != 0) throw std::runtime_error("lumen convert failed");
        return out;
    }();
    return path;
}

}  // namespace

TEST_CASE("stories260K greedy output through the CLI equals llama2.c's, byte for byte", "[golden][cli]") {
    for (int steps : {200, 256}) {
        const std::string expected = test_util::read_file(stories_dir + "/expected_greedy_" + std::to_string(steps) + "steps.txt");
        const std::string out = std::string(LUMEN_TEST_TMP) + "/stories260K_cli_" + std::to_string(steps) + ".txt";
        const int rc = test_util::run_command(std::string(LUMEN_CLI) + " generate -m " + converted_model() +
                                              " -p '' --temp 0 --repeat-penalty 1 -n " + std::to_string(steps) +
                                              " -t 2 > " + out + " 2>/dev/null");
        REQUIRE(rc == 0);
        CHECK(test_util::read_file(out) == expected);
    }
}

TEST_CASE("stories260K greedy output through the C++ API equals llama2.c's", "[golden][api]") {
    const lumen::model model = lumen::model::load(converted_model());
    for (int steps : {200, 256}) {
        const std::string expected = test_util::read_file(stories_dir + "/expected_greedy_" + std::to_string(steps) + "steps.txt");
        for (int threads : {1, 2}) {
            lumen::context ctx(model, {.n_ctx = 512, .n_threads = threads});
            lumen::generate_options options;
            options.n_predict = steps;
            options.sampling.temperature = 0.0f;
            options.sampling.repeat_penalty = 1.0f;
            std::string text;
            lumen::generate(ctx, "", options, [&](std::string_view piece) {
                text += piece;
                return true;
            });
            CHECK(text == expected);
        }
    }
}

TEST_CASE("stories260K converts from tokenizer.bin as well as tokenizer.model", "[golden][convert]") {
    const std::string out = std::string(LUMEN_TEST_TMP) + "/stories260K_tokbin.gguf";
    REQUIRE(test_util::run_command(std::string(LUMEN_CLI) + " convert " + stories_dir + "/stories260K.bin --tokenizer " +
                                   stories_dir + "/tok512.bin -o " + out + " 2>/dev/null") == 0);
    const lumen::model a = lumen::model::load(out);
    const lumen::model b = lumen::model::load(converted_model());
    REQUIRE(a.tokenizer().n_vocab() == 512);
    const std::string text = "Once upon a time, Lily saw a big red ball.";
    CHECK(a.tokenizer().encode(text, true) == b.tokenizer().encode(text, true));
}

TEST_CASE("the CLI reports bad input with a message and a non-zero exit", "[cli][errors]") {
    const std::string tmp = std::string(LUMEN_TEST_TMP);
    const std::string err = tmp + "/cli_err.txt";
    const std::string cli = std::string(LUMEN_CLI);
    {
        std::ofstream(tmp + "/not_a_model.gguf") << "this is not a GGUF file";
    }
    struct case_t { std::string args; std::string expected; };
    const case_t cases[] = {
        {"info " + tmp + "/not_a_model.gguf", "bad magic"},
        {"info " + tmp, "is a directory"},
        {"info " + tmp + "/does_not_exist.gguf", "cannot open"},
        {"generate -m " + tmp + "/not_a_model.gguf -p hi -n 2", "bad magic"},
        {"tokenize -m " + tmp + "/not_a_model.gguf hello", "bad magic"},
        {"convert " + tmp + "/not_a_model.gguf --tokenizer " + stories_dir + "/tok512.model -o " + tmp + "/x.gguf", "not"},
        {"generate -m " + converted_model() + " -p 'Once upon a time there was a girl' -n 10 -c 4", "context"},
        {"generate -m " + converted_model() + " -p hi -n 10 --top-p 2", "top-p"},
    };
    for (const case_t& c : cases) {
        INFO(c.args);
        const int rc = test_util::run_command(cli + " " + c.args + " > /dev/null 2> " + err);
        CHECK(rc != 0);
        const std::string message = test_util::read_file(err);
        CHECK_THAT(message, Catch::Contains(c.expected));
        CHECK_THAT(message, Catch::Contains("lumen: error:"));
    }
}
