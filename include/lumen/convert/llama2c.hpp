// convert/llama2c.hpp: reads a llama2.c checkpoint (`.bin`, legacy v0 or version 1 float32) and
// turns it into the tensors and metadata of a GGUF `llama` model.
//
// v0: 7 × i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
//     vocab_size means an unshared classifier), then f32 arrays: token embedding, attention norms,
//     wq, wk, wv, wo, ffn norms, w1, w2, w3, final norm, two RoPE tables (seq_len × head_size/2
//     each, unused), then the classifier if unshared.
// v1: u32 magic "ak42", i32 version 1, the same 7 × i32, u8 shared_classifier, zero padding to
//     256 bytes; then f32: attention norms, ffn norms, final norm, token embedding, wq, wk, wv,
//     wo, w1, w2, w3, then the classifier if unshared.
// Matrices are (out rows × in columns) and Q/K rows are in Meta order (RoPE on adjacent pairs),
// the layout of GGUF `llama`, so no permutation is needed.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "../detail/mapped_file.hpp"
#include "../error.hpp"
#include "../gguf_writer.hpp"
#include "../tensor_names.hpp"
#include "tensor_writer.hpp"

namespace lumen {

struct llama2c_header {
    int version = 0;       // 0 (legacy) or 1
    int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
    bool shared_classifier = true;
    size_t weights_offset = 0;  // bytes before the first float
};

inline constexpr uint32_t llama2c_magic = 0x616b3432;  // "ak42"

// True when the bytes start like a llama2.c checkpoint (v0 header with sane numbers, or "ak42").
inline bool looks_like_llama2c(const std::byte* data, size_t size) {
    if (size < 28) return false;
    uint32_t magic;
    std::memcpy(&magic, data, 4);
    if (magic == llama2c_magic) return true;
    int32_t h[7];
    std::memcpy(h, data, sizeof h);
    return h[0] > 0 && h[1] > 0 && h[2] > 0 && h[3] > 0 && h[4] > 0 && h[6] > 0 && h[5] != 0 &&
           h[0] <= (1 << 16) && h[1] <= (1 << 18) && h[2] <= 1024 && h[3] <= h[0] && h[4] <= h[3];
}

inline llama2c_header read_llama2c_header(const std::string& path, const std::byte* data, size_t size) {
    llama2c_header h;
    if (size < 28) throw error(path + ": too small for a llama2.c checkpoint header (" + std::to_string(size) + " bytes)");
    uint32_t magic;
    std::memcpy(&magic, data, 4);
    const std::byte* p = data;
    if (magic == llama2c_magic) {
        int32_t version;
        if (size < 256) throw error(path + ": truncated llama2.c v1 header");
        std::memcpy(&version, data + 4, 4);
        if (version != 1)
            throw error(path + ": llama2.c checkpoint version " + std::to_string(version) +
                        " is not supported (only v0 and the float32 v1; v2 is int8 with llama2.c's own groups)");
        h.version = 1;
        p = data + 8;
        h.weights_offset = 256;
    } else {
        h.weights_offset = 28;
    }
    int32_t v[7];
    std::memcpy(v, p, sizeof v);
    h.dim = v[0]; h.hidden_dim = v[1]; h.n_layers = v[2]; h.n_heads = v[3]; h.n_kv_heads = v[4];
    h.vocab_size = v[5]; h.seq_len = v[6];
    if (h.version == 0) {
        h.shared_classifier = h.vocab_size > 0;
        if (h.vocab_size < 0) h.vocab_size = -h.vocab_size;
    } else {
        h.shared_classifier = std::to_integer<uint8_t>(data[36]) != 0;
    }
    auto bad = [&](const std::string& what) {
        return error(path + ": not a valid llama2.c checkpoint: " + what);
    };
    if (h.dim <= 0 || h.dim > (1 << 16)) throw bad("dim " + std::to_string(h.dim));
    if (h.hidden_dim <= 0 || h.hidden_dim > (1 << 18)) throw bad("hidden_dim " + std::to_string(h.hidden_dim));
    if (h.n_layers <= 0 || h.n_layers > 1024) throw bad("n_layers " + std::to_string(h.n_layers));
    if (h.n_heads <= 0 || h.dim % h.n_heads != 0) throw bad("n_heads " + std::to_string(h.n_heads) + " does not divide dim");
    if (h.n_kv_heads <= 0 || h.n_heads % h.n_kv_heads != 0) throw bad("n_kv_heads " + std::to_string(h.n_kv_heads));
    if (h.vocab_size <= 0 || h.vocab_size > (1 << 22)) throw bad("vocab_size " + std::to_string(h.vocab_size));
    if (h.seq_len <= 0 || h.seq_len > (1 << 24)) throw bad("seq_len " + std::to_string(h.seq_len));
    return h;
}

// Adds the `llama.*` hyperparameters and every tensor of the checkpoint to `out`, stored as
// `matrix_type` (norms stay F32). The vocabulary is added by the caller.
inline llama2c_header convert_llama2c_weights(const std::string& path, gguf_writer& out, dtype matrix_type) {
    const detail::byte_source bytes = detail::byte_source::map_file(path);
    const llama2c_header h = read_llama2c_header(path, bytes.data(), bytes.size());
    const int64_t dim = h.dim, hidden = h.hidden_dim, L = h.n_layers, vocab = h.vocab_size;
    const int64_t head_size = dim / h.n_heads, kv_dim = h.n_kv_heads * head_size;

    // Sizes in floats of every array, in file order.
    const int64_t rope_tables = h.version == 0 ? int64_t{h.seq_len} * head_size : 0;  // two halves
    const int64_t n_floats = vocab * dim + L * dim * 2 + dim + L * dim * (dim + 2 * kv_dim) + L * dim * dim +
                             L * 3 * dim * hidden + rope_tables + (h.shared_classifier ? 0 : vocab * dim);
    const uint64_t expected = h.weights_offset + static_cast<uint64_t>(n_floats) * 4;
    if (bytes.size() != expected)
        throw error(path + ": llama2.c checkpoint has " + std::to_string(bytes.size()) + " bytes, expected " +
                    std::to_string(expected) + " for dim " + std::to_string(dim) + ", " + std::to_string(L) +
                    " layers, vocab " + std::to_string(vocab) + ": truncated or not a llama2.c file");

    const float* base = reinterpret_cast<const float*>(bytes.data() + h.weights_offset);
    const float* p = base;
    auto take = [&](int64_t n) { const float* at = p; p += n; return at; };

    const float *embd, *att_norm, *ffn_norm, *final_norm, *wq, *wk, *wv, *wo, *w1, *w2, *w3;
    if (h.version == 0) {
        embd = take(vocab * dim);
        att_norm = take(L * dim);
        wq = take(L * dim * dim);
        wk = take(L * dim * kv_dim);
        wv = take(L * dim * kv_dim);
        wo = take(L * dim * dim);
        ffn_norm = take(L * dim);
        w1 = take(L * dim * hidden);
        w2 = take(L * hidden * dim);
        w3 = take(L * dim * hidden);
        final_norm = take(dim);
        take(rope_tables);  // freq_cis_real and freq_cis_imag, recomputed at run time
    } else {
        att_norm = take(L * dim);
        ffn_norm = take(L * dim);
        final_norm = take(dim);
        embd = take(vocab * dim);
        wq = take(L * dim * dim);
        wk = take(L * dim * kv_dim);
        wv = take(L * dim * kv_dim);
        wo = take(L * dim * dim);
        w1 = take(L * dim * hidden);
        w2 = take(L * hidden * dim);
        w3 = take(L * dim * hidden);
    }
    const float* classifier = h.shared_classifier ? nullptr : take(vocab * dim);

    const std::string a = "llama.";
    out.set_string("general.architecture", "llama");
    out.set(a + "context_length", uint32_t(h.seq_len));
    out.set(a + "embedding_length", uint32_t(dim));
    out.set(a + "block_count", uint32_t(L));
    out.set(a + "feed_forward_length", uint32_t(hidden));
    out.set(a + "attention.head_count", uint32_t(h.n_heads));
    out.set(a + "attention.head_count_kv", uint32_t(h.n_kv_heads));
    out.set(a + "rope.dimension_count", uint32_t(head_size));
    out.set(a + "rope.freq_base", 10000.0f);
    out.set(a + "attention.layer_norm_rms_epsilon", 1e-5f);

    namespace tn = tensor_names;
    // A matrix (rows, cols) of floats; vectors (1-D) always stay F32.
    auto matrix = [&](const std::string& name, const float* data, int64_t rows, int64_t cols) {
        add_converted_tensor(out, name, data, rows, cols, matrix_type);
    };
    auto vector = [&](const std::string& name, const float* data, int64_t n) {
        out.add_tensor_f32(name, {n}, std::span<const float>(data, static_cast<size_t>(n)));
    };
    matrix(tn::token_embd, embd, vocab, dim);
    for (int64_t l = 0; l < L; ++l) {
        vector(tn::block(l, tn::attn_norm), att_norm + l * dim, dim);
        matrix(tn::block(l, tn::attn_q), wq + l * dim * dim, dim, dim);
        matrix(tn::block(l, tn::attn_k), wk + l * dim * kv_dim, kv_dim, dim);
        matrix(tn::block(l, tn::attn_v), wv + l * dim * kv_dim, kv_dim, dim);
        matrix(tn::block(l, tn::attn_output), wo + l * dim * dim, dim, dim);
        vector(tn::block(l, tn::ffn_norm), ffn_norm + l * dim, dim);
        matrix(tn::block(l, tn::ffn_gate), w1 + l * dim * hidden, hidden, dim);
        matrix(tn::block(l, tn::ffn_down), w2 + l * hidden * dim, dim, hidden);
        matrix(tn::block(l, tn::ffn_up), w3 + l * dim * hidden, hidden, dim);
    }
    vector(tn::output_norm, final_norm, dim);
    if (classifier) matrix(tn::output, classifier, vocab, dim);
    return h;
}

}  // namespace lumen
