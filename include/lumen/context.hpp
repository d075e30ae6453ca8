// context.hpp: one inference sequence over a loaded model: the backend, the KV cache and the
// activations (all allocated here, once), and decode(), which feeds tokens and yields logits.
#pragma once

#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <thread>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "backend.hpp"
#include "cpu/cpu_backend.hpp"
#include "error.hpp"
#include "llama.hpp"
#include "model.hpp"

namespace lumen {

struct context_options {
    int64_t n_ctx = 0;      // positions in the KV cache; 0 = the model's training context, at most 4096
    int64_t n_batch = 512;  // tokens per forward pass while processing a prompt
    int n_threads = 0;      // CPU threads; 0 = all hardware threads
    bool repack = true;     // CPU: repack Q8_0, Q4_0, Q4_K, Q6_K weights for kernels that read another layout
    dtype kv_type = dtype::f32;  // KV cache elements: f32 (exact), or f16 (half the memory and reads; llama.cpp's default)
};

class context {
public:
    explicit context(const model& m, context_options options = {})
        : model_(&m),
          backend_(std::make_unique<cpu::cpu_backend>(resolve_threads(options.n_threads), options.repack, &m.derived_weights())),
          state_(m.config(), resolve_ctx(m, options.n_ctx),
                 std::clamp<int64_t>(options.n_batch, 1, resolve_ctx(m, options.n_ctx)), options.kv_type) {
        for_each_matrix(m.weights(), [&](const tensor_view& w) { backend_->prepare(w); });
    }
    // A context keeps a pointer to its model, so it cannot be made from a temporary.
    context(const lumen::model&&, context_options = {}) = delete;

    const lumen::model& model() const { return *model_; }
    lumen::backend& backend() { return *backend_; }
    int64_t n_ctx() const { return state_.n_ctx(); }
    int64_t n_past() const { return n_past_; }
    int64_t n_vocab() const { return model_->config().n_vocab; }
    dtype kv_type() const { return state_.kv_type; }

    // Forgets the sequence: the next token goes to position 0.
    void reset() { n_past_ = 0; }

    // Feeds tokens at the next positions and returns the logits (n_vocab,) after the last one.
    // Allocates nothing. Throws lumen::error on an unknown token id or a full context.
    std::span<const float> decode(std::span<const int32_t> tokens) {
        run(tokens, nullptr);
        return last_logits();
    }

    // Feeds tokens and returns the logits after every one of them: (tokens.size(), n_vocab).
    xt::xtensor<float, 2> evaluate(std::span<const int32_t> tokens) {
        xt::xtensor<float, 2> out = xt::xtensor<float, 2>::from_shape(
            {tokens.size(), static_cast<size_t>(n_vocab())});
        run(tokens, &out);
        return out;
    }

    // The logits (n_vocab,) after the last token fed (empty before the first decode).
    std::span<const float> last_logits() const {
        if (n_past_ == 0) return {};
        return {state_.logits.data() + last_row_ * n_vocab(), static_cast<size_t>(n_vocab())};
    }

private:
    static int resolve_threads(int n) {
        if (n > 0) return n;
        return std::max(1u, std::thread::hardware_concurrency());
    }
    static int64_t resolve_ctx(const lumen::model& m, int64_t n) {
        if (n < 0) throw error("context size " + std::to_string(n) + " is negative");
        if (n == 0) n = std::min<int64_t>(m.config().n_ctx_train, 4096);
        if (n > (int64_t{1} << 24)) throw error("context size " + std::to_string(n) + " is too large");
        return n;
    }

    // Checks the tokens, then runs them through the model in batches of at most n_batch.
    void run(std::span<const int32_t> tokens, xt::xtensor<float, 2>* all_logits) {
        const int64_t n = static_cast<int64_t>(tokens.size());
        if (n == 0) throw error("decode: no tokens given");
        for (int32_t id : tokens)
            if (id < 0 || id >= n_vocab())
                throw error("decode: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(n_vocab()) + ")");
        if (n_past_ + n > n_ctx())
            throw error("decode: context is full (" + std::to_string(n_past_) + " + " + std::to_string(n) +
                        " tokens > n_ctx " + std::to_string(n_ctx()) + ")");
        const model_config& c = model_->config();
        for (int64_t done = 0; done < n;) {
            const int64_t chunk = std::min(state_.n_batch(), n - done);
            llama_forward(c, model_->weights(), *backend_, state_, tokens.data() + done, chunk, n_past_,
                          all_logits != nullptr);
            if (all_logits) {
                std::copy_n(state_.logits.data(), chunk * n_vocab(), all_logits->data() + done * n_vocab());
                last_row_ = chunk - 1;
            } else {
                last_row_ = 0;
            }
            n_past_ += chunk;
            done += chunk;
        }
    }

    const lumen::model* model_;
    std::unique_ptr<lumen::backend> backend_;
    llama_state state_;
    int64_t n_past_ = 0;
    int64_t last_row_ = 0;
};

}  // namespace lumen
