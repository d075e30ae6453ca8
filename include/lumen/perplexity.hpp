// perplexity.hpp: how well a model predicts a text, measured as llama.cpp's llama-perplexity does,
// and how closely a (quantized) model follows a reference model on the same positions.
//
// The method (llama.cpp's perplexity()): the tokenized text (BOS first) is cut into chunks of n_ctx
// tokens; each chunk starts with BOS (its first token is replaced) and is evaluated from an empty
// context; only the second half is scored, so every scored token has at least n_ctx / 2 tokens of
// context: for j in [n_ctx/2, n_ctx - 1), -log p(token[j + 1] | tokens[0..j]). Perplexity is
// exp(mean of those), its error exp(mean) * stderr of the mean.
//
// Against a base model, on the same positions: KL(base || model) = sum_v p_base(v) (log p_base(v) -
// log p_model(v)) of the next-token distributions (mean, its standard error, maximum), and the share
// of positions where both models' most likely token is the same.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "context.hpp"
#include "error.hpp"

namespace lumen {

struct perplexity_options {
    int64_t n_ctx = 512;      // tokens per chunk
    int64_t max_chunks = -1;  // chunks to evaluate; < 0 = all that the text fills
};

struct perplexity_result {
    int64_t n_ctx = 0;
    int64_t n_chunks = 0;   // chunks evaluated so far
    int64_t n_total_chunks = 0;
    int64_t n_scored = 0;   // tokens scored so far
    double ppl = 0, ppl_stderr = 0;
    bool has_base = false;  // the fields below are filled only with a base model
    double base_ppl = 0, base_ppl_stderr = 0;
    double kld_mean = 0, kld_stderr = 0, kld_max = 0;
    double top1_agreement = 0, top1_stderr = 0;  // fractions in [0, 1]
};

namespace detail {

// The normaliser of a logit row, as llama.cpp's log_softmax: the maximum in float, the sum of
// expf(l - max) in double; log p(v) = l[v] - max - log(sum).
struct log_softmax_row {
    float max = 0;
    double log_sum = 0;
    double log_prob(const float* logits, int64_t v) const { return logits[v] - max - log_sum; }
};

inline log_softmax_row log_softmax(const float* logits, int64_t n_vocab) {
    log_softmax_row r;
    r.max = *std::max_element(logits, logits + n_vocab);
    double sum = 0;
    for (int64_t v = 0; v < n_vocab; ++v) sum += std::exp(logits[v] - r.max);
    r.log_sum = std::log(sum);
    return r;
}

// A running mean and the standard error of the mean.
struct mean_meter {
    double sum = 0, sum2 = 0;
    int64_t n = 0;
    void add(double v) { sum += v, sum2 += v * v, ++n; }
    double mean() const { return n ? sum / static_cast<double>(n) : 0.0; }
    double stderr_of_mean() const {
        if (n < 2) return 0.0;
        const double m = mean(), var = sum2 / static_cast<double>(n) - m * m;
        return var > 0 ? std::sqrt(var / static_cast<double>(n - 1)) : 0.0;
    }
};

}  // namespace detail

// Perplexity of ctx's model over `tokens` (the tokenized text, BOS first), and with `base` (may be
// null) the agreement with that model. on_chunk(const perplexity_result&) gets the running figures
// after each chunk. Throws lumen::error when the text is shorter than two chunks or the contexts are
// too small.
template <class OnChunk>
perplexity_result measure_perplexity(context& ctx, context* base, std::span<const int32_t> tokens,
                                     const perplexity_options& options, OnChunk&& on_chunk) {
    const int64_t n_ctx = options.n_ctx;
    if (n_ctx < 4) throw error("perplexity: the chunk size must be at least 4 tokens, got " + std::to_string(n_ctx));
    if (n_ctx > ctx.n_ctx() || (base && n_ctx > base->n_ctx()))
        throw error("perplexity: chunks of " + std::to_string(n_ctx) + " tokens do not fit the context of " +
                    std::to_string(std::min(ctx.n_ctx(), base ? base->n_ctx() : ctx.n_ctx())) + " positions");
    const int64_t n_tokens = static_cast<int64_t>(tokens.size());
    if (n_tokens < 2 * n_ctx)
        throw error("perplexity: the text has " + std::to_string(n_tokens) + " tokens; at least 2 * n_ctx = " +
                    std::to_string(2 * n_ctx) + " are needed (use a longer text or a smaller -c)");
    const int64_t n_vocab = ctx.n_vocab();
    if (base && base->n_vocab() != n_vocab)
        throw error("perplexity: the base model has " + std::to_string(base->n_vocab()) + " tokens, this one " +
                    std::to_string(n_vocab));

    perplexity_result r;
    r.n_ctx = n_ctx;
    r.has_base = base != nullptr;
    r.n_total_chunks = n_tokens / n_ctx;
    if (options.max_chunks >= 0) r.n_total_chunks = std::min(r.n_total_chunks, options.max_chunks);
    const int32_t bos = ctx.model().tokenizer().bos();
    const int64_t first = n_ctx / 2;

    detail::mean_meter nll, base_nll, kld, same_top;
    std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
    for (int64_t c = 0; c < r.n_total_chunks; ++c) {
        const int64_t start = c * n_ctx;
        std::copy_n(tokens.begin() + start, n_ctx, chunk.begin());
        if (bos >= 0) chunk[0] = bos;
        ctx.reset();
        const xt::xtensor<float, 2> logits = ctx.evaluate(chunk);  // (n_ctx, n_vocab)
        xt::xtensor<float, 2> base_logits;
        if (base) {
            base->reset();
            base_logits = base->evaluate(chunk);
        }
        for (int64_t j = first; j < n_ctx - 1; ++j) {
            const int32_t target = tokens[static_cast<size_t>(start + j + 1)];
            const float* row = logits.data() + j * n_vocab;
            const detail::log_softmax_row q = detail::log_softmax(row, n_vocab);
            nll.add(-q.log_prob(row, target));
            if (!base) continue;
            const float* brow = base_logits.data() + j * n_vocab;
            const detail::log_softmax_row b = detail::log_softmax(brow, n_vocab);
            base_nll.add(-b.log_prob(brow, target));
            double k = 0;
            for (int64_t v = 0; v < n_vocab; ++v) {
                const double lb = b.log_prob(brow, v);
                k += std::exp(lb) * (lb - q.log_prob(row, v));
            }
            kld.add(k);
            r.kld_max = std::max(r.kld_max, k);
            const auto top = std::max_element(row, row + n_vocab) - row;
            const auto base_top = std::max_element(brow, brow + n_vocab) - brow;
            same_top.add(top == base_top ? 1.0 : 0.0);
        }
        r.n_chunks = c + 1;
        r.n_scored = nll.n;
        r.ppl = std::exp(nll.mean());
        r.ppl_stderr = r.ppl * nll.stderr_of_mean();
        if (base) {
            r.base_ppl = std::exp(base_nll.mean());
            r.base_ppl_stderr = r.base_ppl * base_nll.stderr_of_mean();
            r.kld_mean = kld.mean();
            r.kld_stderr = kld.stderr_of_mean();
            r.top1_agreement = same_top.mean();
            r.top1_stderr = same_top.stderr_of_mean();
        }
        on_chunk(static_cast<const perplexity_result&>(r));
    }
    return r;
}

inline perplexity_result measure_perplexity(context& ctx, context* base, std::span<const int32_t> tokens,
                                            const perplexity_options& options) {
    return measure_perplexity(ctx, base, tokens, options, [](const perplexity_result&) {});
}

}  // namespace lumen
