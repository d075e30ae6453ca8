// cpu/cpu_backend.hpp: the CPU backend, always present (also what WebAssembly uses): the op
// interface of backend.hpp on top of the kernels and one reusable thread pool. Its scratch memory
// (quantized activations, attention scores) is sized on first use and then reused.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../backend.hpp"
#include "../quant.hpp"
#include "attention.hpp"
#include "kernels.hpp"
#include "self_attention.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

class cpu_backend final : public backend {
public:
    // repack: let the kernels that read weights in a layout of their own (matmul_packed.hpp) repack
    // them (see matmul_scratch), in `shared` if given (a model's derived_weights(), which must outlive
    // this backend), else in this backend's own scratch.
    explicit cpu_backend(int n_threads, bool repack = true, weight_cache* shared = nullptr)
        : pool_(n_threads < 1 ? 1 : n_threads) {
        scratch_.pack_weights = repack;
        scratch_.shared = shared;
    }

    std::string_view name() const override { return "cpu"; }
    int n_threads() const override { return pool_.size(); }
    thread_pool& pool() { return pool_; }

    void prepare(const tensor_view& w) override { cpu::prepare_weight(w, pool_, scratch_); }
    void matmul(const tensor_view& w, const float* x, float* y, int64_t n) override {
        cpu::matmul(w, x, y, n, pool_, scratch_);
    }
    void matmul_many(std::span<const matmul_product> products, const float* x, int64_t n) override {
        cpu::matmul_many(products, x, n, pool_, scratch_);
    }
    void matmul_swiglu(const tensor_view& w_gate, const tensor_view& w_up, const float* x, float* gate, float* up,
                       int64_t n) override {
        cpu::matmul_swiglu(w_gate, w_up, x, gate, up, n, pool_, scratch_);
    }
    void feed_forward(const tensor_view& w_gate, const tensor_view& w_up, const tensor_view& w_down, const float* x,
                      float* gate, float* up, float* out, int64_t n) override {
        cpu::feed_forward(w_gate, w_up, w_down, x, gate, up, out, n, pool_, scratch_);
    }
    void rmsnorm(float* out, const float* x, const float* weight, int64_t n, int64_t dim, float eps) override {
        parallel_if_large(n, n * dim, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) cpu::rmsnorm(out + t * dim, x + t * dim, weight, dim, eps);
        });
    }
    // The angles come from rope_table (computed once per positions, for every layer of a pass).
    void rope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rope_dims, int64_t pos0,
              float freq_base) override {
        cpu::check_rope_dims(head_dim, rope_dims);
        const float* table = rope_table(n, rope_dims, pos0, freq_base);
        for (int64_t t = 0; t < n; ++t) cpu::rope_rotate(x + t * n_heads * head_dim, n_heads, head_dim, rope_dims, table + t * rope_dims);
    }
    // The projections, RoPE, the cache stores, attention and wo as one job (cpu/self_attention.hpp),
    // where the shapes allow; otherwise the separate ops.
    void self_attention(float* proj, const float* h, const self_attention_step& a) override {
        if (a.shape.n_tokens > cpu::one_job_max_tokens || !cpu::self_attention_in_one_job(a)) {
            backend::self_attention(proj, h, a);
            return;
        }
        cpu::check_rope_dims(a.shape.head_dim, a.rope_dims);
        const float* table = rope_table(a.shape.n_tokens, a.rope_dims, a.shape.pos0, a.rope_freq_base);
        cpu::self_attention(proj, h, a, table, attention_scores(a.shape), pool_, scratch_);
    }
    // backend::store_kv, rounding to halves with F16C where the CPU has it (the same bits)
    void store_kv(void* cache, dtype cache_type, const float* x, int64_t n, int64_t pos0, int64_t n_kv_heads,
                  int64_t head_dim, int64_t n_ctx) override {
        store_kv_with(cache, cache_type, x, n, pos0, n_kv_heads, head_dim, n_ctx,
                      [](uint16_t* to, const float* from, int64_t m) { cpu::round_to_fp16(to, from, m); });
    }
    void attention(float* out, const float* q, const void* k_cache, const void* v_cache,
                   const attention_shape& shape) override {
        cpu::attention(out, q, k_cache, v_cache, shape, attention_scores(shape), pool_);
    }
    void swiglu(float* out, const float* gate, const float* up, int64_t n) override {
        parallel_if_large(n, n, [&](int64_t i0, int64_t i1) { cpu::swiglu(out + i0, gate + i0, up + i0, i1 - i0); });
    }
    void add(float* x, const float* y, int64_t n) override {
        parallel_if_large(n, n, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) x[i] += y[i];
        });
    }
    void get_rows(float* out, const tensor_view& table, const int32_t* ids, int64_t n) override {
        const int64_t cols = table.cols();
        for (int64_t t = 0; t < n; ++t) dequantize_row(table.type, table.row(ids[t]), out + t * cols, cols);
    }

private:
    // Scratch for attention's scores: sized on the first call for the whole context, then reused.
    float* attention_scores(const attention_shape& shape) {
        const auto needed = static_cast<size_t>(attention_scratch_floats(shape));
        if (scores_.size() < needed) scores_.resize(needed);
        return scores_.data();
    }
    // The angles of positions pos0 .. pos0 + n - 1, (n, rope_dims): computed on the first call for
    // them and reused by the calls after it with the same positions (every layer of a pass).
    const float* rope_table(int64_t n, int64_t rope_dims, int64_t pos0, float freq_base) {
        const rope_key key{pos0, n, rope_dims, freq_base};
        if (!(key == rope_key_)) {
            rope_key_ = {};  // invalid until the table is complete (pos0 = -1 never matches)
            rope_table_.resize(static_cast<size_t>(n * rope_dims));
            for (int64_t t = 0; t < n; ++t) cpu::rope_angles(rope_table_.data() + t * rope_dims, rope_dims, pos0 + t, freq_base);
            rope_key_ = key;
        }
        return rope_table_.data();
    }

    // fn(begin, end) over [0, n_items): on the pool when the step touches enough elements to pay for
    // waking it (a prompt), inline otherwise (one token). Element-wise, so the result is the same.
    template <class F>
    void parallel_if_large(int64_t n_items, int64_t n_elements, F&& fn) {
        if (n_elements >= 16384) pool_.parallel_for(n_items, fn);
        else fn(int64_t{0}, n_items);
    }

    thread_pool pool_;
    matmul_scratch scratch_;     // quantized activations, grown to the largest batch once; repacked weights
    std::vector<float> scores_;  // (n_heads, attention_query_block, n_ctx) attention scores
    struct rope_key {
        int64_t pos0 = -1, n = 0, rope_dims = 0;
        float freq_base = 0.0f;
        bool operator==(const rope_key&) const = default;
    };
    rope_key rope_key_;              // the positions rope_table_ holds
    std::vector<float> rope_table_;  // (n, rope_dims) cos, sin of each pair's angle, by rope_angles
};

}  // namespace lumen::cpu
