// bench_random_model.hpp: random-weight `llama` models of the shapes `lumen bench --shape` knows,
// written as GGUF files (lumen::gguf_writer) with a synthetic 32000-token vocabulary, so speed can
// be measured without downloading anything. Weights come from a cheap counter-based generator and
// are quantized in parallel, so a TinyLlama-sized file takes seconds, not minutes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <lumen/cpu/matmul.hpp>
#include <lumen/cpu/thread_pool.hpp>
#include <lumen/error.hpp>
#include <lumen/gguf_writer.hpp>
#include <lumen/quant.hpp>
#include <lumen/tensor.hpp>
#include <lumen/tensor_names.hpp>

namespace lumen::cli::bench {

struct model_shape {
    const char* name;
    int64_t dim, n_layers, n_heads, n_kv_heads, hidden_dim, n_vocab;
};

// The shapes of BENCHMARKS.md (llama.cpp's reference figures use the same).
inline constexpr model_shape known_shapes[] = {
    {"stories260K", 64, 5, 8, 4, 172, 512},
    {"stories15M", 288, 6, 6, 6, 768, 32000},
    {"stories110M", 768, 12, 12, 12, 2048, 32000},
    {"tinyllama-1.1B", 2048, 22, 32, 4, 5632, 32000},
};

inline const model_shape& find_shape(const std::string& name) {
    for (const model_shape& s : known_shapes)
        if (name == s.name) return s;
    std::string names;
    for (const model_shape& s : known_shapes) names += (names.empty() ? "" : ", ") + std::string(s.name);
    throw error("bench: unknown --shape '" + name + "' (known: " + names + ")");
}

// The type of output.weight in a model of `type`, as llama.cpp's llama-quantize picks it by default:
// the quantized types keep the output head at higher precision (Q6_K when the rows are a multiple
// of 256, else Q8_0). Q6_K only where lumen's CPU kernels have a dedicated Q6_K kernel; otherwise
// Q8_0 (a larger file than llama.cpp's, so never an unfair advantage).
inline dtype output_type(dtype type, int64_t dim) {
    if (type == dtype::f32 || type == dtype::f16 || type == dtype::bf16 || type == dtype::q8_0) return type;
    if (dim % 256 == 0 && cpu::default_kernels().find(dtype::q6_k)) return dtype::q6_k;
    return dtype::q8_0;
}

// "<unk>", "<s>", "</s>", the 256 byte tokens "<0x00>".."<0xFF>", then "▁a", "b", "▁c", ...
inline std::vector<std::string> synthetic_vocabulary(int64_t n) {
    std::vector<std::string> tokens{"<unk>", "<s>", "</s>"};
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) tokens.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
    for (int64_t i = 0; static_cast<int64_t>(tokens.size()) < n; ++i) {
        std::string letters;
        for (int64_t k = i + 1; k > 0; k = (k - 1) / 26) letters.insert(letters.begin(), static_cast<char>('a' + (k - 1) % 26));
        tokens.push_back(i % 2 == 0 ? "\xE2\x96\x81" + letters : letters);
    }
    tokens.resize(static_cast<size_t>(n));
    return tokens;
}

// A uniform float in [-1, 1) from (stream, index): splitmix64 of a counter, no state to share
// between threads, so the weights do not depend on the thread count.
inline float uniform_pm1(uint64_t stream, uint64_t index) {
    uint64_t z = stream * 0x9E3779B97F4A7C15ull + index * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * 0x1p-23f - 1.0f;
}

// A matrix (rows, cols) of uniform values in [-scale, scale), stored as `type`.
inline std::vector<std::byte> random_matrix(dtype type, int64_t rows, int64_t cols, float scale, uint64_t stream,
                                            cpu::thread_pool& pool) {
    const int64_t row_size = row_bytes(type, cols);
    std::vector<std::byte> bytes(static_cast<size_t>(row_size * rows));
    pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(cols));
        for (int64_t r = r0; r < r1; ++r) {
            for (int64_t j = 0; j < cols; ++j)
                row[static_cast<size_t>(j)] = scale * uniform_pm1(stream, static_cast<uint64_t>(r * cols + j));
            quantize_row(type, row.data(), bytes.data() + r * row_size, cols);
        }
    });
    return bytes;
}

// Writes a random llama model of `shape` with weight matrices of `type` to `path`. Matrices whose rows
// do not fill the type's blocks (K-quants need rows of 256) are stored as Q8_0.
inline void write_random_model(const std::string& path, const model_shape& s, dtype type) {
    const int64_t head_dim = s.dim / s.n_heads;
    gguf_writer w;
    w.set("general.architecture", std::string("llama"));
    w.set("general.name", std::string(s.name) + " shape, random weights");
    w.set("llama.context_length", uint32_t{4096});
    w.set("llama.embedding_length", static_cast<uint32_t>(s.dim));
    w.set("llama.block_count", static_cast<uint32_t>(s.n_layers));
    w.set("llama.feed_forward_length", static_cast<uint32_t>(s.hidden_dim));
    w.set("llama.attention.head_count", static_cast<uint32_t>(s.n_heads));
    w.set("llama.attention.head_count_kv", static_cast<uint32_t>(s.n_kv_heads));
    w.set("llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
    w.set("llama.rope.freq_base", 10000.0f);
    w.set("llama.attention.layer_norm_rms_epsilon", 1e-5f);

    const std::vector<std::string> tokens = synthetic_vocabulary(s.n_vocab);
    std::vector<float> scores(tokens.size(), 0.0f);
    std::vector<int32_t> types(tokens.size(), 1);  // 1 normal, 2 unknown, 3 control, 6 byte
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (i == 0) types[i] = 2;
        else if (i < 3) types[i] = 3;
        else if (i < 259) types[i] = 6;
        else scores[i] = -static_cast<float>(i - 258);
    }
    w.set("tokenizer.ggml.model", std::string("llama"));
    w.set_array("tokenizer.ggml.tokens", tokens);
    w.set_array("tokenizer.ggml.scores", scores);
    w.set_array("tokenizer.ggml.token_type", types);
    w.set("tokenizer.ggml.bos_token_id", uint32_t{1});
    w.set("tokenizer.ggml.eos_token_id", uint32_t{2});
    w.set("tokenizer.ggml.unknown_token_id", uint32_t{0});

    cpu::thread_pool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    uint64_t stream = 1;
    // entries of variance 1/cols, so activations keep their size through the layers
    auto matrix = [&](const std::string& name, dtype t, int64_t rows, int64_t cols) {
        if (cols % traits_of(t).block_size != 0) t = dtype::q8_0;  // rows that do not fill K-quant blocks
        const float scale = std::sqrt(3.0f / static_cast<float>(cols));
        w.add_tensor(name, t, {cols, rows}, random_matrix(t, rows, cols, scale, stream++, pool));
    };
    auto norm = [&](const std::string& name) {
        std::vector<float> v(static_cast<size_t>(s.dim));
        for (size_t i = 0; i < v.size(); ++i) v[i] = 1.0f + 0.2f * uniform_pm1(stream, i);
        ++stream;
        w.add_tensor_f32(name, {s.dim}, v);
    };
    namespace tn = tensor_names;
    const int64_t q_dim = s.n_heads * head_dim, kv_dim = s.n_kv_heads * head_dim;
    const dtype embd_type = s.dim % traits_of(type).block_size == 0 ? type : dtype::q8_0;
    w.add_tensor(tn::token_embd, embd_type, {s.dim, s.n_vocab}, random_matrix(embd_type, s.n_vocab, s.dim, 1.0f, stream++, pool));
    norm(tn::output_norm);
    matrix(tn::output, output_type(type, s.dim), s.n_vocab, s.dim);
    for (int64_t l = 0; l < s.n_layers; ++l) {
        auto blk = [&](const char* what) { return tn::block(l, what); };
        norm(blk(tn::attn_norm));
        matrix(blk(tn::attn_q), type, q_dim, s.dim);
        matrix(blk(tn::attn_k), type, kv_dim, s.dim);
        matrix(blk(tn::attn_v), type, kv_dim, s.dim);
        matrix(blk(tn::attn_output), type, s.dim, q_dim);
        norm(blk(tn::ffn_norm));
        matrix(blk(tn::ffn_gate), type, s.hidden_dim, s.dim);
        matrix(blk(tn::ffn_up), type, s.hidden_dim, s.dim);
        matrix(blk(tn::ffn_down), type, s.dim, s.hidden_dim);
    }
    w.write(path);
}

}  // namespace lumen::cli::bench
