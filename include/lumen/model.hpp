// model.hpp: a loaded model: the mapped GGUF file, its hyperparameters, its tokenizer and its
// weights, all checked at load so that inference cannot fail afterwards.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "error.hpp"
#include "gguf.hpp"
#include "llama.hpp"
#include "model_config.hpp"
#include "tokenizer.hpp"
#include "weight_cache.hpp"

namespace lumen {

class model {
public:
    // Maps a GGUF file and checks everything inference needs. Throws lumen::error.
    static model load(const std::string& path) { return model(gguf_file::open(path)); }

    explicit model(gguf_file file)
        : file_(std::move(file)),
          config_(read_model_config(check_architecture(file_))),
          tokenizer_(vocabulary_from_gguf(file_)) {
        const tensor_view& embd = file_.get_tensor(tensor_names::token_embd);
        config_.n_vocab = embd.rows();
        if (tokenizer_.n_vocab() != config_.n_vocab)
            throw error(file_.what("tokenizer.ggml.tokens") + ": the vocabulary has " +
                        std::to_string(tokenizer_.n_vocab()) + " tokens but tensor '" + tensor_names::token_embd +
                        "' has " + std::to_string(config_.n_vocab) + " rows");
        weights_ = load_llama_weights(file_, config_);
    }

    // The weights point into the file's tensor table: a model moves, but is never copied.
    model(const model&) = delete;
    model& operator=(const model&) = delete;
    model(model&&) noexcept = default;
    model& operator=(model&&) noexcept = default;

    const gguf_file& file() const { return file_; }
    const model_config& config() const { return config_; }
    const lumen::tokenizer& tokenizer() const { return tokenizer_; }
    const llama_weights& weights() const { return weights_; }
    // What backends derive from the weights for their kernels, shared by every context on this model
    // (so N contexts hold one repacked copy, not N) and freed with it.
    weight_cache& derived_weights() const { return *derived_; }

    // Number of weights (elements of all tensors).
    int64_t n_params() const {
        int64_t n = 0;
        for (const tensor_view& t : file_.tensors()) n += t.n_elements();
        return n;
    }
    // Bytes of all tensor data.
    uint64_t n_weight_bytes() const {
        uint64_t n = 0;
        for (const tensor_view& t : file_.tensors()) n += t.n_bytes;
        return n;
    }

private:
    static const gguf_file& check_architecture(const gguf_file& f) {
        const std::string arch = f.get_string("general.architecture");
        if (arch != "llama")
            throw error(f.what("general.architecture") + ": architecture '" + arch + "' is not supported (supported: llama)");
        return f;
    }

    gguf_file file_;
    model_config config_;
    lumen::tokenizer tokenizer_;
    llama_weights weights_;
    std::unique_ptr<weight_cache> derived_ = std::make_unique<weight_cache>();
};

}  // namespace lumen
