// backend.hpp: the small set of operations a compute backend implements; the forward pass of every
// architecture is written once against it. Activations are row-major float arrays.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "detail/fp16.hpp"
#include "error.hpp"
#include "tensor.hpp"

namespace lumen {

// Shapes of one attention call. q holds n_tokens rows for positions pos0 .. pos0 + n_tokens - 1;
// the caches already hold keys and values for positions 0 .. pos0 + n_tokens - 1: the head_dim
// elements (kv_type) of key/value head g at position j start at g * kv_head_stride + j * kv_stride. llama_state
// keeps each head's positions together (kv_stride = head_dim, kv_head_stride = n_ctx * head_dim);
// position-major caches (kv_stride = n_kv_heads * head_dim, kv_head_stride = head_dim) work too.
struct attention_shape {
    int64_t n_tokens;
    int64_t pos0;
    int64_t n_heads;
    int64_t n_kv_heads;      // n_heads / n_kv_heads query heads share one key/value head (GQA)
    int64_t head_dim;
    int64_t kv_stride;       // elements between consecutive positions of one head in the caches
    int64_t n_ctx;           // positions the caches can hold (scratch is sized for it once)
    int64_t kv_head_stride;  // elements between consecutive key/value heads in the caches
    dtype kv_type = dtype::f32;  // the caches' elements: f32, or f16 (half the memory and the reads)
};

// What one layer's self-attention works with (backend::self_attention): its four weights, scratch
// for the projections and the attention output, this layer's caches, and the rotary embedding.
struct self_attention_step {
    const tensor_view* wq;  // (q_dim, dim)
    const tensor_view* wk;  // (kv_dim, dim)
    const tensor_view* wv;  // (kv_dim, dim)
    const tensor_view* wo;  // (dim, q_dim)
    float* q;               // (n, q_dim)   scratch: the queries
    float* k;               // (n, kv_dim)  scratch: this batch's keys and values, before the caches
    float* v;               // (n, kv_dim)
    float* attn;            // (n, q_dim)   scratch: attention's output, before wo
    void* k_cache;          // (n_kv_heads, n_ctx, head_dim) of shape.kv_type
    void* v_cache;
    attention_shape shape;  // n_tokens = n, positions pos0 .. pos0 + n - 1
    int64_t rope_dims;
    float rope_freq_base;
};

// Throws lumen::error unless t is a type a KV cache can hold (f32, f16).
inline void check_kv_type(dtype t) {
    if (t != dtype::f32 && t != dtype::f16)
        throw error("KV cache type " + std::string(dtype_name(t)) + " is not supported (f32, f16)");
}

// Elements [e0, e1) of one row of keys or values (n_kv_heads * head_dim,), of the token at position
// pos, into a head-major cache (n_kv_heads, n_ctx, head_dim) of cache_type (f32, f16): element e of
// head g = e / head_dim goes to (g * n_ctx + pos) * head_dim + e % head_dim; to_halves(to, from, m)
// rounds m floats for an f16 cache. backend::store_kv stores whole rows with it, the CPU's one-job
// self-attention the part of a row each chunk made.
template <class ToHalves>
inline void store_kv_elements(void* cache, dtype cache_type, const float* row, int64_t e0, int64_t e1, int64_t pos,
                              int64_t head_dim, int64_t n_ctx, ToHalves&& to_halves) {
    for (int64_t e = e0; e < e1;) {
        const int64_t g = e / head_dim, d = e % head_dim, m = std::min(e1 - e, head_dim - d);
        const int64_t at = (g * n_ctx + pos) * head_dim + d;
        if (cache_type == dtype::f32)
            std::copy_n(row + e, m, static_cast<float*>(cache) + at);
        else
            to_halves(static_cast<uint16_t*>(cache) + at, row + e, m);
        e += m;
    }
}

// Throws lumen::error unless W_down's rows take the hidden_dim = W_gate.rows() elements of gate.
inline void check_feed_forward_shapes(const tensor_view& w_gate, const tensor_view& w_down) {
    if (w_down.cols() != w_gate.rows())
        throw error("feed_forward: tensor '" + w_down.name + "' has rows of " + std::to_string(w_down.cols()) +
                    " elements, expected " + std::to_string(w_gate.rows()) + " (the rows of '" + w_gate.name + "')");
}

// One of several products that share their input (backend::matmul_many): Y = X @ W^T into y.
struct matmul_product {
    const tensor_view* w;
    float* y;  // (n, w->rows())
};

class backend {
public:
    virtual ~backend() = default;
    virtual std::string_view name() const = 0;
    virtual int n_threads() const = 0;

    // Called once per weight matrix when a context is made, before any product with it: a backend
    // may lay the weight out for its kernels here (the CPU repacks Q8_0/Q4_0, matmul_packed.hpp), so
    // that the first forward pass does not pay for it. Does nothing by default.
    virtual void prepare(const tensor_view& /*w*/) {}

    // Y (n, rows) = X (n, cols) @ W^T for a weight W (rows, cols) of any supported dtype.
    virtual void matmul(const tensor_view& w, const float* x, float* y, int64_t n) = 0;
    // The same for several weights of the same input (a layer's query, key and value projections):
    // each product's Y (n, rows_i) = X (n, cols) @ W_i^T. A backend may run them as one job.
    virtual void matmul_many(std::span<const matmul_product> products, const float* x, int64_t n) {
        for (const matmul_product& p : products) matmul(*p.w, x, p.y, n);
    }
    // gate (n, hidden) = silu(X @ W_gate^T) * (X @ W_up^T) for W_gate, W_up (hidden, cols), X (n, cols);
    // up (n, hidden) is scratch. A backend may fuse the steps (the CPU applies swiglu to each chunk
    // of rows as soon as both products have it).
    virtual void matmul_swiglu(const tensor_view& w_gate, const tensor_view& w_up, const float* x, float* gate, float* up,
                               int64_t n) {
        const matmul_product products[] = {{&w_gate, gate}, {&w_up, up}};
        matmul_many(products, x, n);
        swiglu(gate, gate, up, n * w_gate.rows());
    }
    // proj (n, dim) = wo(attention(rope(wq h), rope(wk h), wv h)) for h (n, dim): a layer's
    // self-attention, which first appends the batch's roped keys and values to the caches (positions
    // pos0 .. pos0 + n - 1). A backend may fuse the steps (the CPU runs them as one job of three phases).
    virtual void self_attention(float* proj, const float* h, const self_attention_step& a) {
        const attention_shape& s = a.shape;
        const int64_t n = s.n_tokens;
        const matmul_product qkv[] = {{a.wq, a.q}, {a.wk, a.k}, {a.wv, a.v}};
        matmul_many(qkv, h, n);  // q = wq h (n, q_dim); k = wk h, v = wv h (n, kv_dim)
        rope(a.q, n, s.n_heads, s.head_dim, a.rope_dims, s.pos0, a.rope_freq_base);
        rope(a.k, n, s.n_kv_heads, s.head_dim, a.rope_dims, s.pos0, a.rope_freq_base);
        store_kv(a.k_cache, s.kv_type, a.k, n, s.pos0, s.n_kv_heads, s.head_dim, s.n_ctx);
        store_kv(a.v_cache, s.kv_type, a.v, n, s.pos0, s.n_kv_heads, s.head_dim, s.n_ctx);
        attention(a.attn, a.q, a.k_cache, a.v_cache, s);
        matmul(*a.wo, a.attn, proj, n);  // proj (n, dim)
    }
    // out (n, rows) = gate @ W_down^T with gate = silu(X @ W_gate^T) * (X @ W_up^T) (n, hidden): a
    // layer's feed-forward; gate and up (n, hidden) are scratch. A backend may fuse the steps (the CPU
    // quantizes gate for W_down in the job that makes it).
    virtual void feed_forward(const tensor_view& w_gate, const tensor_view& w_up, const tensor_view& w_down, const float* x,
                              float* gate, float* up, float* out, int64_t n) {
        check_feed_forward_shapes(w_gate, w_down);
        matmul_swiglu(w_gate, w_up, x, gate, up, n);
        matmul(w_down, gate, out, n);
    }
    // out (n, dim) = x / sqrt(mean(x^2) + eps) * weight (dim,), row by row.
    virtual void rmsnorm(float* out, const float* x, const float* weight, int64_t n, int64_t dim, float eps) = 0;
    // Rotates adjacent pairs (2i, 2i+1) of the first rope_dims of each head of x (n, n_heads * head_dim);
    // row t is at position pos0 + t.
    virtual void rope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rope_dims, int64_t pos0,
                      float freq_base) = 0;
    // Stores rows x (n, n_kv_heads * head_dim) of new keys or values in a cache of cache_type (f32,
    // or f16: rounded to nearest) laid out as (n_kv_heads, n_ctx, head_dim): head g of row t goes to
    // element (g * n_ctx + pos0 + t) * head_dim.
    virtual void store_kv(void* cache, dtype cache_type, const float* x, int64_t n, int64_t pos0, int64_t n_kv_heads,
                          int64_t head_dim, int64_t n_ctx) {
        store_kv_with(cache, cache_type, x, n, pos0, n_kv_heads, head_dim, n_ctx, [](uint16_t* to, const float* from, int64_t m) {
            for (int64_t i = 0; i < m; ++i) to[i] = detail::fp32_to_fp16(from[i]);
        });
    }
    // out (n, n_heads * head_dim) = softmax(q k^T / sqrt(head_dim), causal) v over the caches, whose
    // elements are shape.kv_type.
    virtual void attention(float* out, const float* q, const void* k_cache, const void* v_cache,
                           const attention_shape& shape) = 0;
    // out (n,) = silu(gate) * up
    virtual void swiglu(float* out, const float* gate, const float* up, int64_t n) = 0;
    // x (n,) += y (n,)
    virtual void add(float* x, const float* y, int64_t n) = 0;
    // out (n, cols) = rows ids[0..n) of table (n_rows, cols), dequantized
    virtual void get_rows(float* out, const tensor_view& table, const int32_t* ids, int64_t n) = 0;

protected:
    // store_kv's placement, with to_halves(to, from, m) rounding m floats to halves for an f16 cache
    // (a backend passes its own, e.g. F16C's; the bits are fp32_to_fp16's either way).
    template <class ToHalves>
    static void store_kv_with(void* cache, dtype cache_type, const float* x, int64_t n, int64_t pos0, int64_t n_kv_heads,
                              int64_t head_dim, int64_t n_ctx, ToHalves&& to_halves) {
        check_kv_type(cache_type);
        const int64_t kv_dim = n_kv_heads * head_dim;
        for (int64_t t = 0; t < n; ++t)
            store_kv_elements(cache, cache_type, x + t * kv_dim, 0, kv_dim, pos0 + t, head_dim, n_ctx, to_halves);
    }
};

}  // namespace lumen
