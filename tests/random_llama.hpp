// random_llama.hpp: writes a small random-weight `llama` GGUF of any shape (GQA, partial RoPE, tied
// or separate output, F32 or F16 weights) with a valid SentencePiece-style vocabulary, for tests.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <lumen/gguf_writer.hpp>
#include <lumen/tensor.hpp>
#include <lumen/tensor_names.hpp>

#include "../native/cli/bench_random_model.hpp"

namespace random_llama {

struct spec {
    int64_t dim = 64;
    int64_t n_layers = 2;
    int64_t n_heads = 4;
    int64_t n_kv_heads = 2;
    int64_t hidden_dim = 96;
    int64_t n_vocab = 300;             // rows of token_embd (and of output); at least 260
    int64_t rope_dims = 0;             // rotated leading dims of each head; 0 = head_dim
    float rope_freq_base = 10000.0f;
    float rms_norm_eps = 1e-5f;
    uint32_t context_length = 256;
    bool tied_output = false;          // no output.weight: the head reuses token_embd
    lumen::dtype weight_type = lumen::dtype::f32;  // matrices: F32 or F16; norms are always F32
    uint32_t seed = 1;
    int64_t n_tokens = 0;              // entries of tokenizer.ggml.tokens; 0 = n_vocab
    std::set<std::string> omit;        // metadata keys or tensor names to leave out
};

// IEEE half from float, rounding to nearest even (subnormals and overflow included).
inline uint16_t f32_to_f16(float value) {
    const uint32_t x = std::bit_cast<uint32_t>(value);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7FFFFFFFu;
    if (abs >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));
    if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to infinity
    if (abs < 0x38800000u) {                                                // half subnormal or zero
        const float magnitude = std::bit_cast<float>(abs);
        const auto m = static_cast<uint32_t>(std::nearbyint(magnitude * 16777216.0f));  // units of 2^-24
        return static_cast<uint16_t>(sign | m);
    }
    const uint32_t mantissa = abs & 0x7FFFFFu;
    const uint32_t exponent = (abs >> 23) - 127 + 15;
    uint32_t h = (exponent << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
    return static_cast<uint16_t>(sign | h);
}

// "<unk>", "<s>", "</s>", the 256 byte tokens "<0x00>".."<0xFF>", then normal tokens
// "▁a", "b", "▁c", ...: the vocabulary `lumen bench --shape` writes too.
inline std::vector<std::string> vocabulary(int64_t n) { return lumen::cli::bench::synthetic_vocabulary(n); }

// The GGUF of a random llama model, still open for changes (set() replaces a key, add_tensor adds one).
inline lumen::gguf_writer make_writer(const spec& s) {
    const int64_t head_dim = s.dim / s.n_heads;
    const int64_t q_dim = s.n_heads * head_dim, kv_dim = s.n_kv_heads * head_dim;
    const int64_t n_tokens = s.n_tokens ? s.n_tokens : s.n_vocab;
    const bool keep_all = s.omit.empty();
    auto keep = [&](const std::string& name) { return keep_all || !s.omit.count(name); };

    lumen::gguf_writer w;
    auto set = [&](const std::string& key, lumen::gguf_value v) { if (keep(key)) w.set(key, std::move(v)); };
    set("general.architecture", std::string("llama"));
    set("general.name", std::string("random llama"));
    set("general.file_type", uint32_t{s.weight_type == lumen::dtype::f16 ? 1u : 0u});
    set("llama.context_length", s.context_length);
    set("llama.embedding_length", static_cast<uint32_t>(s.dim));
    set("llama.block_count", static_cast<uint32_t>(s.n_layers));
    set("llama.feed_forward_length", static_cast<uint32_t>(s.hidden_dim));
    set("llama.attention.head_count", static_cast<uint32_t>(s.n_heads));
    set("llama.attention.head_count_kv", static_cast<uint32_t>(s.n_kv_heads));
    set("llama.rope.dimension_count", static_cast<uint32_t>(s.rope_dims ? s.rope_dims : head_dim));
    set("llama.rope.freq_base", s.rope_freq_base);
    set("llama.attention.layer_norm_rms_epsilon", s.rms_norm_eps);

    // The vocabulary: scores fall with the index as in a SentencePiece model; types are
    // 2 unknown, 3 control, 6 byte, 1 normal.
    const std::vector<std::string> tokens = vocabulary(n_tokens);
    std::vector<float> scores(tokens.size(), 0.0f);
    std::vector<int32_t> types(tokens.size(), 1);
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (i == 0) types[i] = 2;
        else if (i < 3) types[i] = 3;
        else if (i < 259) types[i] = 6;
        else scores[i] = -static_cast<float>(i - 258);
    }
    set("tokenizer.ggml.model", std::string("llama"));
    if (keep("tokenizer.ggml.tokens")) w.set_array("tokenizer.ggml.tokens", tokens);
    if (keep("tokenizer.ggml.scores")) w.set_array("tokenizer.ggml.scores", scores);
    if (keep("tokenizer.ggml.token_type")) w.set_array("tokenizer.ggml.token_type", types);
    set("tokenizer.ggml.bos_token_id", uint32_t{1});
    set("tokenizer.ggml.eos_token_id", uint32_t{2});
    set("tokenizer.ggml.unknown_token_id", uint32_t{0});

    std::mt19937 rng(s.seed);
    auto uniform = [&](float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); };
    // A matrix (rows, cols) with entries of variance about scale^2 / cols, stored as weight_type.
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
        const float a = scale * std::sqrt(3.0f / static_cast<float>(cols));
        std::vector<float> values(static_cast<size_t>(rows * cols));
        for (float& v : values) v = uniform(-a, a);
        if (!keep(name)) return;
        if (s.weight_type == lumen::dtype::f16) {
            std::vector<std::byte> bytes(values.size() * 2);
            for (size_t i = 0; i < values.size(); ++i) {
                const uint16_t h = f32_to_f16(values[i]);
                std::memcpy(bytes.data() + 2 * i, &h, 2);
            }
            w.add_tensor(name, lumen::dtype::f16, {cols, rows}, std::move(bytes));
        } else {
            w.add_tensor_f32(name, {cols, rows}, values);
        }
    };
    auto norm = [&](const std::string& name) {
        std::vector<float> values(static_cast<size_t>(s.dim));
        for (float& v : values) v = uniform(0.7f, 1.3f);
        if (keep(name)) w.add_tensor_f32(name, {s.dim}, values);
    };

    namespace tn = lumen::tensor_names;
    matrix(tn::token_embd, s.n_vocab, s.dim, std::sqrt(static_cast<float>(s.dim)) * 0.5f);
    norm(tn::output_norm);
    if (!s.tied_output) matrix(tn::output, s.n_vocab, s.dim, 1.0f);
    for (int64_t l = 0; l < s.n_layers; ++l) {
        auto blk = [&](const char* what) { return tn::block(l, what); };
        norm(blk(tn::attn_norm));
        matrix(blk(tn::attn_q), q_dim, s.dim, 1.0f);
        matrix(blk(tn::attn_k), kv_dim, s.dim, 1.0f);
        matrix(blk(tn::attn_v), kv_dim, s.dim, 1.0f);
        matrix(blk(tn::attn_output), s.dim, q_dim, 1.0f);
        norm(blk(tn::ffn_norm));
        matrix(blk(tn::ffn_gate), s.hidden_dim, s.dim, 1.0f);
        matrix(blk(tn::ffn_up), s.hidden_dim, s.dim, 1.0f);
        matrix(blk(tn::ffn_down), s.dim, s.hidden_dim, 1.0f);
    }
    return w;
}

inline void write(const std::string& path, const spec& s) { make_writer(s).write(path); }

}  // namespace random_llama
