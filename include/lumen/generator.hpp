// generator.hpp: a generation one token at a time. generator(ctx, prompt, options) processes the
// prompt; each next() samples a token, runs it through the context and hands back its text.
//
// generate() in session.hpp is a loop over next() with a callback; callers that must return to an
// event loop between tokens (the browser worker, a GUI) hold a generator and call next() instead.
//
//     lumen::generator gen(ctx, "Once upon a time", {});
//     std::string text;
//     while (gen.next(text)) { /* show text, clear it, check for "stop" */ }
#pragma once

#include <chrono>
#include <cstdint>
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
    double generate_seconds = 0;  // time spent in next(): sampling and the forward passes
    bool stopped_at_eos = false;
    bool context_full = false;    // generation stopped because the KV cache was full
};

class generator {
public:
    // Tokenizes the prompt and runs it through a fresh sequence of ctx (the prompt-processing pass).
    // Throws lumen::error when the prompt does not fit in the context.
    generator(context& ctx, std::string_view prompt, const generate_options& options)
        : ctx_(&ctx),
          tok_(&ctx.model().tokenizer()),
          options_(options),
          sampler_(static_cast<int32_t>(ctx.n_vocab()), options.sampling),
          streamer_(*tok_) {
        std::vector<int32_t> tokens = tok_->encode(prompt, options.add_bos);
        if (tokens.empty()) tokens.push_back(tok_->bos());
        if (static_cast<int64_t>(tokens.size()) >= ctx.n_ctx())
            throw error("the prompt has " + std::to_string(tokens.size()) +
                        " tokens, which do not fit in the context of " + std::to_string(ctx.n_ctx()) +
                        " positions (raise n_ctx; in the CLI -c/--ctx-size)");
        stats_.n_prompt_tokens = static_cast<int64_t>(tokens.size());
        for (int32_t t : tokens) sampler_.accept(t);
        for (int32_t t : tokens) streamer_.push(t);  // the prompt's text is the caller's; this sets the state
        (void)streamer_.flush();

        ctx.reset();
        const auto t0 = clock::now();
        logits_ = ctx.decode(tokens);
        stats_.prompt_seconds = seconds_since(t0);
    }

    // Generates one token and appends the text it completes to `out` (often nothing, for a partial
    // UTF-8 character; at the end, whatever the streamer still holds). Returns false once the
    // generation has ended (n_predict reached, end of text, or a full context); then done() is true.
    bool next(std::string& out) {
        if (done_) return false;
        const auto t0 = clock::now();
        const bool more = step(out);
        stats_.generate_seconds += seconds_since(t0);
        return more;
    }

    bool done() const { return done_; }
    const generation_stats& stats() const { return stats_; }

private:
    using clock = std::chrono::steady_clock;
    static double seconds_since(clock::time_point t0) {
        return std::chrono::duration<double>(clock::now() - t0).count();
    }

    bool step(std::string& out) {
        const int32_t n_predict = options_.n_predict;
        if (n_predict >= 0 && stats_.n_generated >= n_predict) return finish(out);
        const int32_t id = sampler_.sample(logits_.data());
        sampler_.accept(id);
        if (!options_.ignore_eos && (id == tok_->eos() || id == tok_->bos())) {
            stats_.stopped_at_eos = true;
            return finish(out);
        }
        ++stats_.n_generated;
        out += streamer_.push(id);
        if (n_predict >= 0 && stats_.n_generated >= n_predict) return finish(out);
        if (ctx_->n_past() >= ctx_->n_ctx()) {
            stats_.context_full = true;
            return finish(out);
        }
        const int32_t next_token[1] = {id};
        logits_ = ctx_->decode(next_token);
        return true;
    }

    bool finish(std::string& out) {
        out += streamer_.flush();
        done_ = true;
        return false;
    }

    context* ctx_;
    const tokenizer* tok_;
    generate_options options_;
    sampler sampler_;
    token_streamer streamer_;
    std::span<const float> logits_;
    generation_stats stats_;
    bool done_ = false;
};

}  // namespace lumen
