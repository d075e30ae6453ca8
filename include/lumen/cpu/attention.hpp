// cpu/attention.hpp: causal scaled dot-product attention of a batch of queries over the KV cache,
// with grouped-query heads; one query head per work item.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../backend.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

// out (n, n_heads * head_dim) = softmax(q k^T / sqrt(head_dim)) v, where query row t (position
// pos0 + t) sees cache positions 0 .. pos0 + t. Caches: (positions, n_kv_heads * head_dim), rows
// kv_stride floats apart. scores: scratch of n_heads × n_ctx floats (one row per head).
// Divisions (not reciprocal products) as in llama2.c, so greedy outputs match it token for token.
inline void attention(float* out, const float* q, const float* k_cache, const float* v_cache,
                      const attention_shape& s, float* scores, thread_pool& pool) {
    const int64_t group = s.n_heads / s.n_kv_heads;  // query heads per key/value head
    const float sqrt_head_dim = std::sqrt(static_cast<float>(s.head_dim));
    pool.parallel_for(s.n_heads, [&](int64_t head_begin, int64_t head_end) {
        for (int64_t h = head_begin; h < head_end; ++h) {
            float* score = scores + h * s.n_ctx;
            const int64_t kv_offset = (h / group) * s.head_dim;
            for (int64_t t = 0; t < s.n_tokens; ++t) {
                const int64_t n_seen = s.pos0 + t + 1;  // causal: positions 0 .. pos0 + t
                const float* q_h = q + (t * s.n_heads + h) * s.head_dim;
                // score[j] = q . k_j / sqrt(head_dim)
                float max_score = -INFINITY;
                for (int64_t j = 0; j < n_seen; ++j) {
                    const float* k_j = k_cache + j * s.kv_stride + kv_offset;
                    float dot = 0.0f;
                    for (int64_t i = 0; i < s.head_dim; ++i) dot += q_h[i] * k_j[i];
                    score[j] = dot / sqrt_head_dim;
                    if (score[j] > max_score) max_score = score[j];
                }
                // softmax(score)
                float sum = 0.0f;
                for (int64_t j = 0; j < n_seen; ++j) {
                    score[j] = std::exp(score[j] - max_score);
                    sum += score[j];
                }
                // out = sum_j softmax_j v_j
                float* out_h = out + (t * s.n_heads + h) * s.head_dim;
                for (int64_t i = 0; i < s.head_dim; ++i) out_h[i] = 0.0f;
                for (int64_t j = 0; j < n_seen; ++j) {
                    const float* v_j = v_cache + j * s.kv_stride + kv_offset;
                    const float a = score[j] / sum;
                    for (int64_t i = 0; i < s.head_dim; ++i) out_h[i] += a * v_j[i];
                }
            }
        }
    });
}

}  // namespace lumen::cpu
