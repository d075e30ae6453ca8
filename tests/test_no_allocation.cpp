// test_no_allocation.cpp: generating a token allocates nothing: after warm-up, decode(), the
// sampler and the streaming decoder run without a single call to operator new.
#include <catch2/catch.hpp>

// operator new below is malloc and operator delete is free: they match, whatever GCC infers.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <cstdlib>
#include <new>

#include <lumen/convert/llama2c.hpp>
#include <lumen/convert/sentencepiece_model.hpp>
#include <lumen/convert/vocabulary_writer.hpp>
#include <lumen/lumen.hpp>

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
}  // namespace

// Every allocation of the process goes through these while the test binary runs.
void* operator new(std::size_t size) {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size ? size : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

TEST_CASE("decode, sample and stream allocate nothing per generated token", "[memory]") {
    const std::string dir = std::string(LUMEN_REALDATA) + "/stories260K";
    const std::string path = std::string(LUMEN_TEST_TMP) + "/stories260K_noalloc.gguf";
    {
        lumen::gguf_writer out;
        lumen::convert_llama2c_weights(dir + "/stories260K.bin", out, lumen::dtype::f32);
        lumen::add_vocabulary(out, lumen::read_sentencepiece_model(dir + "/tok512.model"));
        out.write(path);
    }
    const lumen::model model = lumen::model::load(path);
    for (int threads : {1, 2}) {
        lumen::context ctx(model, {.n_ctx = 256, .n_threads = threads});
        lumen::sampler_options options;
        options.seed = 7;
        lumen::sampler smp(static_cast<int32_t>(ctx.n_vocab()), options);
        lumen::token_streamer streamer(model.tokenizer());
        const std::vector<int32_t> prompt = model.tokenizer().encode("Once upon a time", true);

        std::span<const float> logits = ctx.decode(prompt);  // warm-up: first calls size thread scratch
        std::string text;
        text.reserve(4096);
        for (int i = 0; i < 120; ++i) {
            if (i == 20) counting = true;
            const int32_t id = smp.sample(logits.data());
            smp.accept(id);
            text += streamer.push(id);
            const int32_t next[1] = {id};
            logits = ctx.decode(next);
        }
        counting = false;
        INFO("threads " << threads << ", text: " << text);
        CHECK(allocations.load() == 0);
        allocations = 0;
    }
}
