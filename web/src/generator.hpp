// generator.hpp: lumen::generate (session.hpp) turned inside out: the same steps, one token per
// call to next(), so that a browser worker can return to its event loop between tokens (to hear
// "stop", to post the text) instead of blocking inside a callback.
//
// Every step mirrors session.hpp line for line (prompt checks, sampler and streamer state, EOS/BOS
// handling, context-full stop, final flush), so the tokens and the text are identical to generate();
// the tests compare the two on real and random models. If the core grows a pull-style generator,
// this file goes away.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lumen/lumen.hpp>

namespace lumen::web {

class generator {
public:
    // Tokenizes the prompt and runs it through ctx (the prompt-processing pass).
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
                        " positions (raise n_ctx)");
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

}  // namespace lumen::web
