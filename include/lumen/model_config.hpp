// model_config.hpp: the hyperparameters of a transformer, read from GGUF metadata
// (`<arch>.embedding_length`, `<arch>.attention.head_count`, ...) and checked for consistency.
#pragma once

#include <cstdint>
#include <string>

#include "error.hpp"
#include "gguf.hpp"

namespace lumen {

struct model_config {
    std::string architecture;   // general.architecture, e.g. "llama"
    std::string name;           // general.name, if any
    int64_t n_vocab = 0;        // rows of the token embedding
    int64_t dim = 0;            // embedding_length: width of the residual stream
    int64_t n_layers = 0;       // block_count
    int64_t hidden_dim = 0;     // feed_forward_length: width of the SwiGLU layer
    int64_t n_heads = 0;        // attention.head_count
    int64_t n_kv_heads = 0;     // attention.head_count_kv (grouped-query attention when < n_heads)
    int64_t head_dim = 0;       // dim / n_heads
    int64_t rope_dims = 0;      // rope.dimension_count: leading dims of each head that are rotated
    float rope_freq_base = 10000.0f;
    float rms_norm_eps = 1e-5f;
    int64_t n_ctx_train = 0;    // context_length the model was trained with

    int64_t q_dim() const { return n_heads * head_dim; }
    int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads the `<arch>.*` hyperparameters. n_vocab is filled in from the embedding by the loader.
inline model_config read_model_config(const gguf_file& file) {
    model_config c;
    c.architecture = file.get_string("general.architecture");
    c.name = file.find_string("general.name").value_or("");
    const std::string a = c.architecture + ".";
    constexpr int64_t max_dim = int64_t{1} << 20;
    c.dim = file.get_int(a + "embedding_length", 1, max_dim);
    c.n_layers = file.get_int(a + "block_count", 1, 4096);
    c.hidden_dim = file.get_int(a + "feed_forward_length", 1, max_dim);
    c.n_heads = file.get_int(a + "attention.head_count", 1, c.dim);
    c.n_kv_heads = file.find(a + "attention.head_count_kv") ? file.get_int(a + "attention.head_count_kv", 1, c.n_heads)
                                                              : c.n_heads;
    if (c.dim % c.n_heads != 0)
        throw error(file.what(a + "attention.head_count") + ": embedding_length " + std::to_string(c.dim) +
                    " is not divisible by head_count " + std::to_string(c.n_heads));
    if (c.n_heads % c.n_kv_heads != 0)
        throw error(file.what(a + "attention.head_count_kv") + ": head_count " + std::to_string(c.n_heads) +
                    " is not a multiple of head_count_kv " + std::to_string(c.n_kv_heads));
    c.head_dim = c.dim / c.n_heads;
    c.rope_dims = file.find(a + "rope.dimension_count") ? file.get_int(a + "rope.dimension_count", 0, c.head_dim)
                                                         : c.head_dim;
    if (c.rope_dims % 2 != 0)
        throw error(file.what(a + "rope.dimension_count") + ": " + std::to_string(c.rope_dims) + " is odd, expected even");
    if (auto base = file.find_float(a + "rope.freq_base")) {
        if (!(*base > 0)) throw error(file.what(a + "rope.freq_base") + ": expected a positive number");
        c.rope_freq_base = static_cast<float>(*base);
    }
    if (auto eps = file.find_float(a + "attention.layer_norm_rms_epsilon")) {
        if (!(*eps >= 0 && *eps < 1)) throw error(file.what(a + "attention.layer_norm_rms_epsilon") + ": expected a small non-negative number");
        c.rms_norm_eps = static_cast<float>(*eps);
    }
    c.n_ctx_train = file.find(a + "context_length") ? file.get_int(a + "context_length", 1, int64_t{1} << 24) : 2048;
    return c;
}

}  // namespace lumen
