// sampler.hpp: the sampling chain that picks the next token from logits (repetition penalty,
// top-k, top-p, min-p, temperature, then a draw), with a portable seeded random generator.
//
// The generator is xoshiro256** (Blackman & Vigna) seeded through splitmix64, and floats are made
// from its top 24 bits, so a seed gives the same tokens on every compiler, standard library and
// platform (std:: distributions differ between standard libraries and are not used).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "error.hpp"

namespace lumen {

// --- random numbers

// splitmix64 (Steele, Lea & Flood; Vigna's splitmix64.c): advances state and returns the next
// output. From state 1234567 the first output is 6457827717110365317.
inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// xoshiro256** 1.0 (Blackman & Vigna, xoshiro256starstar.c). From state {1, 2, 3, 4} it yields
// 11520, 0, 1509978240, 1215971899390074240, ...
class xoshiro256 {
public:
    // The four state words are the first four splitmix64 outputs from `seed` (never all zero).
    explicit xoshiro256(uint64_t seed) { reseed(seed); }

    void reseed(uint64_t seed) {
        uint64_t sm = seed;
        for (uint64_t& word : s_) word = splitmix64(sm);
    }

    void set_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3) { s_[0] = s0, s_[1] = s1, s_[2] = s2, s_[3] = s3; }

    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    // A float uniform in [0, 1): the top 24 bits of next() times 2^-24 (exact; never 1).
    float next_float() { return static_cast<float>(next() >> 40) * 0x1p-24f; }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

// --- the sampling chain

struct sampler_options {
    float temperature = 0.8f;     // <= 0: greedy (argmax of the penalised logits, lowest id on ties)
    int32_t top_k = 40;           // keep the k most likely tokens; <= 0: off
    float top_p = 0.95f;          // keep the smallest most-likely set with probability >= p; >= 1: off
    float min_p = 0.05f;          // keep tokens with probability >= min_p * the top one's; <= 0: off
    float repeat_penalty = 1.0f;  // penalise the recent tokens; 1: off
    int32_t repeat_last_n = 64;   // how many accepted tokens count as recent; 0: off
    uint64_t seed = 42;           // of the random generator
};

// Picks tokens from logits with the llama.cpp chain, in llama.cpp's order:
//   1. repetition penalty: each distinct token among the last repeat_last_n accepted ones gets
//      logit' = logit / penalty if logit > 0, else logit * penalty (once, however often it recurs)
//   2. top-k: keep the k largest logits (ties: the lower id first)
//   3. top-p: with p_i = softmax(logits) over the kept tokens, sorted by decreasing p_i, keep the
//      shortest prefix whose cumulative sum of p_i reaches top_p
//   4. min-p: keep tokens with logit >= max logit + ln(min_p), i.e. p_i >= min_p * p_max
//   5. temperature: logit' = logit / temperature
//   6. draw: p_i = exp(logit_i - max) / sum_j exp(logit_j - max); with u uniform in [0, 1), pick
//      the first kept token (in the current order) whose cumulative sum of p exceeds u
// With temperature <= 0, step 1 is followed by argmax instead (lowest id on ties); set
// repeat_penalty = 1 for a plain argmax as llama2.c does. NaN logits count as -inf.
// All buffers are allocated by the constructor: sample() and accept() never allocate.
class sampler {
public:
    sampler(int32_t n_vocab, sampler_options options = {})
        : n_vocab_(n_vocab), options_(options), rng_(options.seed) {
        if (n_vocab <= 0) throw error("sampler: the vocabulary size must be positive, got " + std::to_string(n_vocab));
        if (std::isnan(options.temperature) || std::isnan(options.top_p) || std::isnan(options.min_p))
            throw error("sampler: temperature, top-p and min-p must be numbers");
        if (!(options.repeat_penalty > 0.0f) || std::isinf(options.repeat_penalty))
            throw error("sampler: the repeat penalty must be a positive number, got " +
                        std::to_string(options.repeat_penalty));
        if (options.repeat_last_n < 0)
            throw error("sampler: repeat_last_n must be >= 0 (0 = off), got " + std::to_string(options.repeat_last_n));
        candidates_.resize(static_cast<size_t>(n_vocab));
        marked_.assign(static_cast<size_t>(n_vocab), 0);
        history_.resize(static_cast<size_t>(options.repeat_last_n));
    }

    int32_t n_vocab() const { return n_vocab_; }
    const sampler_options& options() const { return options_; }

    // The next token given logits (n_vocab,). Does not accept it: call accept() for that.
    int32_t sample(const float* logits) {
        if (options_.temperature <= 0.0f && (options_.repeat_penalty == 1.0f || history_size_ == 0))
            return argmax(logits, n_vocab_);
        // Candidates in id order, with the penalised logits.
        for (int32_t i = 0; i < n_vocab_; ++i)
            candidates_[static_cast<size_t>(i)] = {i, std::isnan(logits[i]) ? -INFINITY : logits[i]};
        apply_repeat_penalty();
        if (options_.temperature <= 0.0f) return argmax();

        size_t size = candidates_.size();
        bool sorted = false;
        // top-k: the k best, sorted by decreasing logit
        if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < size) {
            std::partial_sort(candidates_.begin(), candidates_.begin() + options_.top_k, candidates_.end(), better);
            size = static_cast<size_t>(options_.top_k);
            sorted = true;
        }
        // top-p over softmax(logits), in decreasing order
        if (options_.top_p < 1.0f) {
            if (!sorted) std::sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(size), better);
            sorted = true;
            const float max_logit = candidates_[0].logit;
            float sum = 0.0f;
            for (size_t i = 0; i < size; ++i) sum += std::exp(candidates_[i].logit - max_logit);
            float cumulative = 0.0f;
            for (size_t i = 0; i < size; ++i) {
                cumulative += std::exp(candidates_[i].logit - max_logit) / sum;
                if (cumulative >= options_.top_p) {
                    size = i + 1;
                    break;
                }
            }
        }
        // min-p: logit >= max + ln(min_p)  <=>  p >= min_p * p_max
        if (options_.min_p > 0.0f) {
            float max_logit = candidates_[0].logit;
            if (!sorted)
                for (size_t i = 1; i < size; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
            const float min_logit = max_logit + std::log(options_.min_p);
            size_t kept = 0;
            for (size_t i = 0; i < size; ++i)
                if (candidates_[i].logit >= min_logit) candidates_[kept++] = candidates_[i];
            if (kept > 0) size = kept;
        }
        // temperature
        for (size_t i = 0; i < size; ++i) candidates_[i].logit /= options_.temperature;
        return draw(size);
    }

    // Records a token as generated (or as part of the prompt) for the repetition penalty.
    void accept(int32_t token) {
        if (token < 0 || token >= n_vocab_)
            throw error("sampler: token id " + std::to_string(token) + " is outside the vocabulary of " +
                        std::to_string(n_vocab_));
        if (history_.empty()) return;
        history_[history_next_] = token;
        history_next_ = (history_next_ + 1) % history_.size();
        if (history_size_ < history_.size()) ++history_size_;
    }

    // Forgets the accepted tokens and restarts the random generator from the seed.
    void reset() {
        history_size_ = 0;
        history_next_ = 0;
        rng_.reseed(options_.seed);
    }

private:
    struct candidate {
        int32_t id;
        float logit;
    };

    // Strict total order: larger logit first, then lower id.
    static bool better(const candidate& a, const candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    }

    void apply_repeat_penalty() {
        const float penalty = options_.repeat_penalty;
        if (penalty == 1.0f || history_size_ == 0) return;
        // candidates_ is in id order here; each distinct recent token is penalised once
        for (size_t i = 0; i < history_size_; ++i) {
            const size_t t = static_cast<size_t>(history_[i]);  // accept() checked 0 <= id < n_vocab
            if (marked_[t]) continue;
            marked_[t] = 1;
            float& logit = candidates_[t].logit;
            logit = logit > 0.0f ? logit / penalty : logit * penalty;
        }
        for (size_t i = 0; i < history_size_; ++i) marked_[static_cast<size_t>(history_[i])] = 0;
    }

    // The first id of the largest logit (NaN counts as -inf; all -inf: id 0), straight from the
    // logits: the largest value first, in 4 running maxima without branches, then its first id.
    static int32_t argmax(const float* logits, int32_t n) {
        float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        int32_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int k = 0; k < 4; ++k) m[k] = logits[i + k] > m[k] ? logits[i + k] : m[k];  // NaN: kept out
        for (; i < n; ++i) m[0] = logits[i] > m[0] ? logits[i] : m[0];
        const float max_logit = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
        if (max_logit == -INFINITY) return 0;
        i = 0;
        while (logits[i] != max_logit) ++i;
        return i;
    }

    int32_t argmax() const {
        size_t best = 0;
        for (size_t i = 1; i < candidates_.size(); ++i)
            if (candidates_[i].logit > candidates_[best].logit) best = i;
        return candidates_[best].id;
    }

    // Draws one of candidates_[0 .. size) with probability softmax(logit).
    int32_t draw(size_t size) {
        float max_logit = candidates_[0].logit;
        for (size_t i = 1; i < size; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
        const float u = rng_.next_float();  // drawn even when the choice is forced, to keep the stream aligned
        if (!std::isfinite(max_logit)) {  // every logit is -inf, or some are +inf: the first of the largest
            size_t i = 0;
            while (i + 1 < size && candidates_[i].logit != max_logit) ++i;
            return candidates_[i].id;
        }
        float sum = 0.0f;
        for (size_t i = 0; i < size; ++i) sum += std::exp(candidates_[i].logit - max_logit);
        const float target = u * sum;
        float cumulative = 0.0f;
        size_t last_possible = 0;
        for (size_t i = 0; i < size; ++i) {
            const float p = std::exp(candidates_[i].logit - max_logit);
            if (p > 0.0f) last_possible = i;
            cumulative += p;
            if (target < cumulative) return candidates_[i].id;
        }
        return candidates_[last_possible].id;  // rounding left target at the very end
    }

    int32_t n_vocab_;
    sampler_options options_;
    xoshiro256 rng_;
    std::vector<candidate> candidates_;  // (n_vocab,) working set of the chain
    std::vector<uint8_t> marked_;        // (n_vocab,) scratch for the repetition penalty
    std::vector<int32_t> history_;       // (repeat_last_n,) ring buffer of accepted tokens
    size_t history_next_ = 0;
    size_t history_size_ = 0;
};

}  // namespace lumen
