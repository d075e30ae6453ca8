// session.hpp: the high-level API: generate() tokenizes a prompt, runs it through a context and
// streams the sampled continuation as UTF-8 text pieces to a callback.
//
//     lumen::model model = lumen::model::load("model.gguf");
//     lumen::context ctx(model, {.n_ctx = 512});
//     lumen::generate(ctx, "Once upon a time", {}, [](std::string_view piece) {
//         std::cout << piece << std::flush;
//         return true;  // false stops the generation
//     });
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "context.hpp"
#include "error.hpp"
#include "sampler.hpp"
#include "tokenizer.hpp"

namespace lumen {

struct generate_options {
    int32_t n_predict = 128;   // tokens to generate; < 0 = until end of text or a full context
    sampler_options sampling;  // temperature, top-k, top-p, min-p, repetition penalty, seed
    bool add_bos = true;       // start the prompt with the beginning-of-sequence token
    bool ignore_eos = false;   // keep generating past the end-of-sequence token
};

struct generation_stats {
    int64_t n_prompt_tokens = 0;
    int64_t n_generated = 0;
    double prompt_seconds = 0;    // time to process the prompt (one batched forward pass per n_batch)
    double generate_seconds = 0;  // time spent generating the continuation
    bool stopped_at_eos = false;
    bool context_full = false;    // generation stopped because the KV cache was full
};

// Generates a continuation of `prompt` in a fresh sequence of `ctx`. on_text(std::string_view) gets
// each piece of text as soon as it forms complete UTF-8; returning false stops the generation.
template <class OnText>
generation_stats generate(context& ctx, std::string_view prompt, const generate_options& options, OnText&& on_text) {
    using clock = std::chrono::steady_clock;
    const lumen::tokenizer& tok = ctx.model().tokenizer();
    generation_stats stats;

    std::vector<int32_t> tokens = tok.encode(prompt, options.add_bos);
    if (tokens.empty()) tokens.push_back(tok.bos());
    if (static_cast<int64_t>(tokens.size()) >= ctx.n_ctx())
        throw error("the prompt has " + std::to_string(tokens.size()) + " tokens, which do not fit in the context of " +
                    std::to_string(ctx.n_ctx()) + " positions (raise -c/--ctx-size)");
    stats.n_prompt_tokens = static_cast<int64_t>(tokens.size());

    sampler smp(static_cast<int32_t>(ctx.n_vocab()), options.sampling);
    for (int32_t t : tokens) smp.accept(t);
    token_streamer streamer(tok);
    for (int32_t t : tokens) streamer.push(t);  // the prompt's text is the caller's; this sets the state
    (void)streamer.flush();

    ctx.reset();
    const auto t0 = clock::now();
    std::span<const float> logits = ctx.decode(tokens);
    const auto t1 = clock::now();
    stats.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

    bool keep_going = true;
    while (keep_going && (options.n_predict < 0 || stats.n_generated < options.n_predict)) {
        const int32_t id = smp.sample(logits.data());
        smp.accept(id);
        if (!options.ignore_eos && (id == tok.eos() || id == tok.bos())) {
            stats.stopped_at_eos = true;
            break;
        }
        ++stats.n_generated;
        const std::string piece = streamer.push(id);
        if (!piece.empty()) keep_going = on_text(piece);
        if (!keep_going || (options.n_predict >= 0 && stats.n_generated >= options.n_predict)) break;
        if (ctx.n_past() >= ctx.n_ctx()) {
            stats.context_full = true;
            break;
        }
        const int32_t next[1] = {id};
        logits = ctx.decode(next);
    }
    const std::string rest = streamer.flush();
    if (!rest.empty() && keep_going) on_text(rest);
    stats.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return stats;
}

}  // namespace lumen
