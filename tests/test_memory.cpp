// test_memory.cpp: what generating with a model costs in resident memory: about the mapped file, the
// KV cache and small buffers. Kernels that repack weights for themselves (AVX2, AVX-512) release the file
// pages of what they repacked, so a weight is never resident twice. (Not in the sanitizer build:
// ASan's shadow memory swamps resident sizes.)
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <lumen/lumen.hpp>

#include "../native/cli/bench_random_model.hpp"

namespace {

// The resident set of this process in bytes (VmRSS of /proc/self/status).
int64_t resident_bytes() {
    std::ifstream status("/proc/self/status");
    std::string key;
    while (status >> key) {
        if (key == "VmRSS:") {
            int64_t kib = 0;
            status >> kib;
            return kib * 1024;
        }
        std::getline(status, key);
    }
    return -1;
}

}  // namespace

TEST_CASE("generating holds about the model file, the KV cache and small buffers, not a second copy of the weights", "[memory]") {
    REQUIRE(resident_bytes() > 0);
    const std::string path = std::string(LUMEN_TEST_TMP) + "/memory_stories15M_q8_0.gguf";
    namespace bench = lumen::cli::bench;
    bench::write_random_model(path, bench::find_shape("stories15M"), lumen::dtype::q8_0);
    const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(path));

    for (bool repack : {true, false}) {
        INFO("repack " << repack);
        const int64_t before = resident_bytes();
        {
            const lumen::model m = lumen::model::load(path);
            lumen::context ctx(m, {.n_ctx = 64, .n_threads = 2, .repack = repack});
            std::vector<int32_t> prompt(16);
            for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(1 + 37 * i);
            ctx.decode(prompt);  // a prompt, then tokens one by one: every kernel path and every weight
            for (int32_t t = 0; t < 8; ++t) ctx.decode(std::vector<int32_t>{100 + t});
            const lumen::model_config& c = m.config();
            const int64_t kv_cache = 2 * c.n_layers * ctx.n_ctx() * c.kv_dim() * int64_t{sizeof(float)};
            const int64_t grown = resident_bytes() - before;
            INFO("file " << file_bytes << " B, KV cache " << kv_cache << " B, resident growth " << grown << " B");
            // the Q8_0 matrices that get repacked are 16 MB of the 26 MB file: holding them twice
            // would exceed this bound by about 8 MB
            CHECK(grown <= file_bytes + kv_cache + (int64_t{8} << 20));
        }
    }

    // contexts on one model share its repacked weights: a second one adds its KV cache, not a copy
    {
        const lumen::model m = lumen::model::load(path);
        const int64_t before = resident_bytes();
        lumen::context first(m, {.n_ctx = 64, .n_threads = 2});
        first.decode(std::vector<int32_t>{1, 2, 3});
        const int64_t one = resident_bytes();
        lumen::context second(m, {.n_ctx = 64, .n_threads = 2});
        second.decode(std::vector<int32_t>{1, 2, 3});  // the same tokens: the same logits next
        const int64_t grown = resident_bytes() - one;
        INFO("resident growth with the first context " << one - before << " B, with the second " << grown << " B");
        CHECK(grown <= (int64_t{4} << 20));
        CHECK(first.decode(std::vector<int32_t>{7})[0] == second.decode(std::vector<int32_t>{7})[0]);
    }
    std::filesystem::remove(path);
}
