// llama.hpp: the `llama` architecture (Llama 1/2/3, TinyLlama, SmolLM, Mistral, stories*): its
// weights, checked against the config at load, and its forward pass, written against backend.hpp.
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "backend.hpp"
#include "error.hpp"
#include "gguf.hpp"
#include "model_config.hpp"
#include "tensor_names.hpp"

namespace lumen {

struct llama_layer {
    const tensor_view* attn_norm;    // (dim,)          F32
    const tensor_view* wq;           // (q_dim, dim)    rows are heads × head_dim, adjacent-pair RoPE layout
    const tensor_view* wk;           // (kv_dim, dim)
    const tensor_view* wv;           // (kv_dim, dim)
    const tensor_view* wo;           // (dim, q_dim)
    const tensor_view* ffn_norm;     // (dim,)          F32
    const tensor_view* w_gate;       // (hidden_dim, dim)   "w1"
    const tensor_view* w_up;         // (hidden_dim, dim)   "w3"
    const tensor_view* w_down;       // (dim, hidden_dim)   "w2"
};

struct llama_weights {
    const tensor_view* token_embd;   // (n_vocab, dim)
    std::vector<llama_layer> layers; // n_layers
    const tensor_view* output_norm;  // (dim,)          F32
    const tensor_view* output;       // (n_vocab, dim); token_embd itself when the head is tied
};

// Calls f(const tensor_view&) on every matrix the forward pass multiplies activations by, in the
// order it does (the layers' projections, then the output head).
template <class F>
inline void for_each_matrix(const llama_weights& w, F&& f) {
    for (const llama_layer& L : w.layers)
        for (const tensor_view* m : {L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down}) f(*m);
    f(*w.output);
}

namespace detail {

// The tensor `name`, which must exist and have shape ne = {cols, rows} (rows = 1 for a vector).
inline const tensor_view* expect_tensor(const gguf_file& file, const std::string& name, int64_t cols, int64_t rows,
                                        bool must_be_f32) {
    const tensor_view& t = file.get_tensor(name);
    const bool is_vector = rows == 1;
    const bool shape_ok = t.ne[0] == cols && t.ne[1] == rows && t.ne[2] == 1 && t.ne[3] == 1 &&
                          (is_vector || t.n_dims == 2);
    if (!shape_ok) {
        std::string got = std::to_string(t.ne[0]);
        for (uint32_t d = 1; d < t.n_dims; ++d) got += " x " + std::to_string(t.ne[d]);
        throw error(file.path() + ": tensor '" + name + "' has shape [" + got + "], expected [" + std::to_string(cols) +
                    (is_vector ? "" : " x " + std::to_string(rows)) + "] (ne0 = row length)");
    }
    if (must_be_f32 && t.type != dtype::f32)
        throw error(file.path() + ": tensor '" + name + "' has type " + std::string(dtype_name(t.type)) + ", expected F32");
    // Kernels read F32 data as floats and the other types as 16-bit words.
    const uintptr_t needed_alignment = t.type == dtype::f32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(t.data) % needed_alignment != 0)
        throw error(file.path() + ": tensor '" + name + "' data is not " + std::to_string(needed_alignment) +
                    "-byte aligned (general.alignment " + std::to_string(file.alignment()) + ")");
    return &t;
}

}  // namespace detail

// Finds and checks every tensor of a llama model; config.n_vocab must already be set.
inline llama_weights load_llama_weights(const gguf_file& file, const model_config& c) {
    namespace tn = tensor_names;
    using detail::expect_tensor;
    llama_weights w;
    w.token_embd = expect_tensor(file, tn::token_embd, c.dim, c.n_vocab, false);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        auto blk = [&](const char* what) { return tn::block(l, what); };
        llama_layer layer;
        layer.attn_norm = expect_tensor(file, blk(tn::attn_norm), c.dim, 1, true);
        layer.wq = expect_tensor(file, blk(tn::attn_q), c.dim, c.q_dim(), false);
        layer.wk = expect_tensor(file, blk(tn::attn_k), c.dim, c.kv_dim(), false);
        layer.wv = expect_tensor(file, blk(tn::attn_v), c.dim, c.kv_dim(), false);
        layer.wo = expect_tensor(file, blk(tn::attn_output), c.q_dim(), c.dim, false);
        layer.ffn_norm = expect_tensor(file, blk(tn::ffn_norm), c.dim, 1, true);
        layer.w_gate = expect_tensor(file, blk(tn::ffn_gate), c.dim, c.hidden_dim, false);
        layer.w_up = expect_tensor(file, blk(tn::ffn_up), c.dim, c.hidden_dim, false);
        layer.w_down = expect_tensor(file, blk(tn::ffn_down), c.hidden_dim, c.dim, false);
        w.layers.push_back(layer);
    }
    w.output_norm = expect_tensor(file, tn::output_norm, c.dim, 1, true);
    w.output = file.find_tensor(tn::output) ? expect_tensor(file, tn::output, c.dim, c.n_vocab, false) : w.token_embd;
    return w;
}

// Activations and the KV cache of one sequence, allocated once for n_ctx positions and batches
// of up to n_batch tokens.
// The caches keep each key/value head's positions together, so that attention reads one stream per
// head; their elements are floats, or halves (kv_type f16: half the memory and half the reads, at
// 11 bits of precision, as llama.cpp's default cache), in k_cache_f16 / v_cache_f16 then.
struct llama_state {
    dtype kv_type = dtype::f32;
    xt::xtensor<float, 4> k_cache;         // (n_layers, n_kv_heads, n_ctx, head_dim) when kv_type is f32, else empty
    xt::xtensor<float, 4> v_cache;         // (n_layers, n_kv_heads, n_ctx, head_dim)
    xt::xtensor<uint16_t, 4> k_cache_f16;  // (n_layers, n_kv_heads, n_ctx, head_dim) when kv_type is f16, else empty
    xt::xtensor<uint16_t, 4> v_cache_f16;  // (n_layers, n_kv_heads, n_ctx, head_dim)
    xt::xtensor<float, 2> x;        // (n_batch, dim)        the residual stream
    xt::xtensor<float, 2> h;        // (n_batch, dim)        normalised input of a sublayer
    xt::xtensor<float, 2> q;        // (n_batch, q_dim)
    xt::xtensor<float, 2> k;        // (n_batch, kv_dim)     this batch's keys, before they go to the cache
    xt::xtensor<float, 2> v;        // (n_batch, kv_dim)     this batch's values
    xt::xtensor<float, 2> attn;     // (n_batch, q_dim)      attention output, before wo
    xt::xtensor<float, 2> proj;     // (n_batch, dim)        output of wo or w_down
    xt::xtensor<float, 2> gate;     // (n_batch, hidden_dim)
    xt::xtensor<float, 2> up;       // (n_batch, hidden_dim)
    xt::xtensor<float, 2> logits;   // (n_batch, n_vocab)

    llama_state(const model_config& c, int64_t n_ctx, int64_t n_batch, dtype cache_type = dtype::f32) : kv_type(cache_type) {
        check_kv_type(cache_type);
        const auto ctx = static_cast<size_t>(n_ctx), b = static_cast<size_t>(n_batch);
        const std::array<size_t, 4> cache_shape{static_cast<size_t>(c.n_layers), static_cast<size_t>(c.n_kv_heads), ctx,
                                                static_cast<size_t>(c.head_dim)};
        if (kv_type == dtype::f32) {
            k_cache = xt::xtensor<float, 4>::from_shape(cache_shape);
            v_cache = xt::xtensor<float, 4>::from_shape(cache_shape);
        } else {
            k_cache_f16 = xt::xtensor<uint16_t, 4>::from_shape(cache_shape);
            v_cache_f16 = xt::xtensor<uint16_t, 4>::from_shape(cache_shape);
        }
        k = xt::xtensor<float, 2>::from_shape({b, static_cast<size_t>(c.kv_dim())});
        v = xt::xtensor<float, 2>::from_shape(k.shape());
        x = xt::xtensor<float, 2>::from_shape({b, static_cast<size_t>(c.dim)});
        h = xt::xtensor<float, 2>::from_shape(x.shape());
        proj = xt::xtensor<float, 2>::from_shape(x.shape());
        q = xt::xtensor<float, 2>::from_shape({b, static_cast<size_t>(c.q_dim())});
        attn = xt::xtensor<float, 2>::from_shape(q.shape());
        gate = xt::xtensor<float, 2>::from_shape({b, static_cast<size_t>(c.hidden_dim)});
        up = xt::xtensor<float, 2>::from_shape(gate.shape());
        logits = xt::xtensor<float, 2>::from_shape({b, static_cast<size_t>(c.n_vocab)});
    }
    int64_t n_ctx() const { return static_cast<int64_t>(kv_type == dtype::f32 ? k_cache.shape(2) : k_cache_f16.shape(2)); }
    int64_t n_batch() const { return static_cast<int64_t>(x.shape(0)); }
    // Layer l's key (value) cache, (n_kv_heads, n_ctx, head_dim) elements of kv_type.
    void* k_layer(int64_t l) { return layer_of(k_cache, k_cache_f16, l); }
    void* v_layer(int64_t l) { return layer_of(v_cache, v_cache_f16, l); }

private:
    template <class T>
    static T* layer_of(xt::xtensor<T, 4>& cache, int64_t l) {
        return cache.data() + l * static_cast<int64_t>(cache.size() / cache.shape(0));
    }
    void* layer_of(xt::xtensor<float, 4>& f32, xt::xtensor<uint16_t, 4>& f16, int64_t l) {
        return kv_type == dtype::f32 ? static_cast<void*>(layer_of(f32, l)) : layer_of(f16, l);
    }
};

// Runs tokens (n,) at positions pos0 .. pos0 + n - 1 through the model, appending their keys and
// values to the cache. Writes logits (n, n_vocab) for every token, or (1, n_vocab) for the last
// one only. The caller checks n <= n_batch and pos0 + n <= n_ctx.
inline void llama_forward(const model_config& c, const llama_weights& w, backend& be, llama_state& s,
                          const int32_t* tokens, int64_t n, int64_t pos0, bool all_logits) {
    const int64_t dim = c.dim, n_ctx = s.n_ctx();
    float* x = s.x.data();
    float* h = s.h.data();
    float* q = s.q.data();
    float* k = s.k.data();
    float* v = s.v.data();
    float* attn = s.attn.data();
    float* proj = s.proj.data();
    float* gate = s.gate.data();
    float* up = s.up.data();
    const attention_shape shape{n, pos0, c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim, n_ctx, n_ctx * c.head_dim, s.kv_type};

    be.get_rows(x, *w.token_embd, tokens, n);                              // x = embed(tokens)
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const llama_layer& L = w.layers[static_cast<size_t>(l)];
        void* k_cache = s.k_layer(l);                                       // (n_kv_heads, n_ctx, head_dim)
        void* v_cache = s.v_layer(l);

        // Attention: x = x + wo(attention(rope(wq h), rope(wk h), wv h)), h = rmsnorm(x)
        be.rmsnorm(h, x, L.attn_norm->data_as_f32(), n, dim, c.rms_norm_eps);
        const self_attention_step step{L.wq, L.wk, L.wv, L.wo, q, k, v, attn, k_cache, v_cache, shape, c.rope_dims, c.rope_freq_base};
        be.self_attention(proj, h, step);  // proj (n, dim); the keys and values of positions pos0 .. pos0 + n - 1 into the caches
        be.add(x, proj, n * dim);

        // Feed-forward: x = x + w_down(silu(w_gate h) * w_up h), h = rmsnorm(x)
        be.rmsnorm(h, x, L.ffn_norm->data_as_f32(), n, dim, c.rms_norm_eps);
        be.feed_forward(*L.w_gate, *L.w_up, *L.w_down, h, gate, up, proj, n);  // proj = w_down(silu(w_gate h) * w_up h) (n, dim)
        be.add(x, proj, n * dim);
    }

    // logits = output(rmsnorm(x)), for every row or only the last
    const int64_t first = all_logits ? 0 : n - 1;
    const int64_t n_out = n - first;
    be.rmsnorm(h, x + first * dim, w.output_norm->data_as_f32(), n_out, dim, c.rms_norm_eps);
    be.matmul(*w.output, h, s.logits.data(), n_out);
}

}  // namespace lumen
