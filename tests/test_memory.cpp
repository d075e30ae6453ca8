// test_memory.cpp: what generating with a model costs in resident memory: about the mapped file, the
// KV cache and small buffers. Kernels that repack weights for themselves (AVX2, AVX-512) release the file
// pages of what they repacked, so a weight is never resident twice. (Not in the sanitizer build:
// ASan's shadow memory swamps resident sizes.)
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <lumen/lumen.hpp>

#include "../native/cli/bench_random_model.hpp"

namespace {

// The value of `key` (in kB) in the /proc file at `path`, in bytes; -1 where it does not say.
int64_t proc_bytes(const std::string& path, const std::string& key) {
    std::ifstream file(path);
    std::string word;
    while (file >> word) {
        if (word == key) {
            int64_t kib = 0;
            file >> kib;
            return kib * 1024;
        }
        std::getline(file, word);
    }
    return -1;
}

// The resident set of this process in bytes.
int64_t resident_bytes() { return proc_bytes("/proc/self/status", "VmRSS:"); }

// AnonHugePages of this process, in bytes (-1 where /proc/self/smaps_rollup does not say).
int64_t anon_huge_bytes() { return proc_bytes("/proc/self/smaps_rollup", "AnonHugePages:"); }

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

TEST_CASE("weight_arena cuts small weights from shared huge-page chunks and gives large ones their own", "[memory]") {
    std::shared_ptr<std::byte> a, b, large;
    {
        lumen::detail::weight_arena arena;
        a = arena.allocate(1000);
        b = arena.allocate(100);
        large = arena.allocate(lumen::detail::huge_page_bytes);
        REQUIRE(a);
        REQUIRE(b);
        REQUIRE(large);
        CHECK(reinterpret_cast<uintptr_t>(a.get()) % lumen::detail::huge_page_bytes == 0);  // a fresh chunk
        CHECK(b.get() == a.get() + 1024);                                                 // 64-byte steps
        CHECK(reinterpret_cast<uintptr_t>(large.get()) % lumen::detail::huge_page_bytes == 0);
        CHECK((large.get() < a.get() || large.get() >= a.get() + lumen::detail::weight_arena::chunk_bytes));
        // 1 MiB weights fill the rest of the chunk (31 fit after a and b), then a new chunk begins
        std::vector<std::shared_ptr<std::byte>> fill;
        for (int i = 0; i < 31; ++i) {
            fill.push_back(arena.allocate(size_t{1} << 20));
            CHECK(fill.back().get() == a.get() + 1152 + (size_t{1} << 20) * static_cast<size_t>(i));
        }
        std::shared_ptr<std::byte> next = arena.allocate(size_t{1} << 20);
        CHECK((next.get() < a.get() || next.get() >= a.get() + lumen::detail::weight_arena::chunk_bytes));
        CHECK(reinterpret_cast<uintptr_t>(next.get()) % lumen::detail::huge_page_bytes == 0);
    }
    // the weights outlive the arena: the chunk lives while any weight cut from it does
    std::memset(a.get(), 0x5a, 1000);
    std::memset(b.get(), 0xa5, 100);
    CHECK(static_cast<unsigned char>(a.get()[999]) == 0x5a);
    CHECK(static_cast<unsigned char>(b.get()[0]) == 0xa5);
}


TEST_CASE("a small model's repacked weights land on huge pages where Linux offers them", "[memory]") {
    std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string setting;
    std::getline(thp, setting);
    if (setting.find("[never]") != std::string::npos || setting.empty()) {
        WARN("transparent huge pages are off on this machine (" << setting << "): nothing to check");
        return;
    }
    if (lumen::cpu::default_kernels().find(lumen::dtype::q8_0)->pack == nullptr) {
        WARN("these kernels do not repack Q8_0: nothing to check");
        return;
    }
    const std::string path = std::string(LUMEN_TEST_TMP) + "/memory_huge_stories15M_q8_0.gguf";
    namespace bench = lumen::cli::bench;
    bench::write_random_model(path, bench::find_shape("stories15M"), lumen::dtype::q8_0);
    {
        const int64_t before = anon_huge_bytes();
        const lumen::model m = lumen::model::load(path);
        lumen::context ctx(m, {.n_ctx = 64, .n_threads = 2});
        ctx.decode(std::vector<int32_t>{1, 2, 3});
        // every matrix of stories15M is under 2 MiB; repacked, the layers' Q8_0 matrices take ~16 MB
        const int64_t grown = anon_huge_bytes() - before;
        INFO("THP setting '" << setting << "', AnonHugePages grew by " << grown << " B");
        CHECK(grown >= (int64_t{8} << 20));
    }
    std::filesystem::remove(path);
}
