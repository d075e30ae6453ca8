// cpu/attention.hpp: causal scaled dot-product attention of a batch of queries over the KV cache,
// with grouped-query heads; one key/value head (and the query heads that share it) per work item.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../backend.hpp"
#include "../detail/fp16.hpp"
#include "kernels.hpp"
#include "matmul.hpp"
#include "simd.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

// A value-cache element as a float: floats as they are, halves (an f16 KV cache) widened exactly.
inline float widen(float x) { return x; }
inline float widen(uint16_t h) { return detail::fp16_to_fp32(h); }

// out (n,) = sum over j < n_rows of a[j] * v_j (n,), v_j = v + j * v_stride, the value rows floats
// or halves (T = float or uint16_t): for each element, acc = madd(a[j], widen(v_j[i]), acc) in
// increasing j from 0 (so every path gives the same bits). weighted_sum_scalar does outputs i0 ..
// n - 1 a block of up to 64 at a time; weighted_sum runs the SIMD path (AVX2: 64 outputs in
// registers while it runs over the rows; WebAssembly SIMD128, float rows: 32) and leaves the rest to it.
template <class T>
inline void weighted_sum_scalar(float* out, const float* a, const T* v, int64_t v_stride, int64_t n_rows, int64_t n,
                                int64_t i0 = 0) {
    for (; i0 < n; i0 += 64) {
        const int64_t m = n - i0 < 64 ? n - i0 : 64;
        float acc[64] = {};
        for (int64_t j = 0; j < n_rows; ++j)
            for (int64_t k = 0; k < m; ++k) acc[k] = madd(a[j], widen(v[j * v_stride + i0 + k]), acc[k]);
        for (int64_t k = 0; k < m; ++k) out[i0 + k] = acc[k];
    }
}

template <class T>
inline void weighted_sum(float* out, const float* a, const T* v, int64_t v_stride, int64_t n_rows, int64_t n) {
    int64_t i = 0;
#if defined(LUMEN_CPU_HAVE_AVX2) && !defined(LUMEN_FORCE_SCALAR)
    auto load8 = [](const T* p) {  // 8 elements as floats
        if constexpr (std::is_same_v<T, float>) return _mm256_loadu_ps(p);
        else return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    };
    for (; i + 64 <= n; i += 64) {
        __m256 acc[8];
        for (__m256& x : acc) x = _mm256_setzero_ps();
        for (int64_t j = 0; j < n_rows; ++j) {
            const __m256 aj = _mm256_set1_ps(a[j]);
            const T* vj = v + j * v_stride + i;
            for (int k = 0; k < 8; ++k) acc[k] = avx2::madd(aj, load8(vj + 8 * k), acc[k]);
        }
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(out + i + 8 * k, acc[k]);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n_rows; ++j) acc = avx2::madd(_mm256_set1_ps(a[j]), load8(v + j * v_stride + i), acc);
        _mm256_storeu_ps(out + i, acc);
    }
#elif defined(LUMEN_CPU_HAVE_WASM) && !defined(LUMEN_FORCE_SCALAR)
    if constexpr (std::is_same_v<T, float>) {
        auto madd4 = [](v128_t x, v128_t y, v128_t c) { return wasm_f32x4_add(wasm_f32x4_mul(x, y), c); };
        for (; i + 32 <= n; i += 32) {
            v128_t acc[8];
            for (v128_t& x : acc) x = wasm_f32x4_splat(0.0f);
            for (int64_t j = 0; j < n_rows; ++j) {
                const v128_t aj = wasm_f32x4_splat(a[j]);
                const float* vj = v + j * v_stride + i;
                for (int k = 0; k < 8; ++k) acc[k] = madd4(aj, wasm_v128_load(vj + 4 * k), acc[k]);
            }
            for (int k = 0; k < 8; ++k) wasm_v128_store(out + i + 4 * k, acc[k]);
        }
        for (; i + 4 <= n; i += 4) {
            v128_t acc = wasm_f32x4_splat(0.0f);
            for (int64_t j = 0; j < n_rows; ++j) acc = madd4(wasm_f32x4_splat(a[j]), wasm_v128_load(v + j * v_stride + i), acc);
            wasm_v128_store(out + i, acc);
        }
    }
#endif
    weighted_sum_scalar(out, a, v, v_stride, n_rows, n, i);
}

// Queries are taken in blocks of this many tokens: the scores of a block against the keys come
// from one matrix product (the keys read once for the block).
inline constexpr int64_t attention_query_block = 9;  // three tiles of the F32 kernel (4 x 3)

// Floats of scratch attention() needs: a block of score rows per head.
inline int64_t attention_scratch_floats(const attention_shape& s) {
    return s.n_heads * attention_query_block * s.n_ctx;
}

// out (n, n_heads * head_dim) = softmax(q k^T / sqrt(head_dim)) v, where query row t (position
// pos0 + t) sees cache positions 0 .. pos0 + t. Caches: head g, position j at g * kv_head_stride +
// j * kv_stride (attention_shape). scores: scratch of attention_scratch_floats(s) floats.
// The weights that stream through the caches between two layers' attention evict the KV cache, so
// during generation attention reads it from memory. With llama_state's head-major caches a head's
// keys (and values) are one forward stream, which the hardware prefetchers follow; position-major,
// a head read a few hundred bytes every kv_dim floats and waited on memory latency. Cold caches, 12
// heads of 64 at position 64, one thread: 56 -> 40 us per layer; in-model (alternating processes,
// stories110M at positions 0-127) Q4_0 2.22 -> 2.10 ms per token (faster in 8 of 8 rounds), Q8_0
// 3.57 -> 3.46 (5 of 6). Software prefetching of the rows, which helped the position-major caches
// (1.79 -> 1.72 ms), is neutral on the head-major ones (2.07 vs 2.09) and is gone.
// The scores q . k_j come from the F32 matmul kernel, with the keys as its rows and as its
// "tokens" the queries of a block of tokens (no grouped heads) or the query heads of a group, token
// by token; a score does not depend on how it was tiled. Softmax and the weighted sum of values
// follow llama2.c (divisions, not reciprocal products); the weighted sum is vectorised.
// attention_heads: the outputs of the query heads of key/value heads [kv_begin, kv_end) only (a
// thread's part); attention: all of them, the key/value heads spread over the pool.
inline void attention_heads(float* out, const float* q, const void* k_cache, const void* v_cache,
                            const attention_shape& s, float* scores, int64_t kv_begin, int64_t kv_end,
                            const kernel_set& ks = default_kernels()) {
    check_kv_type(s.kv_type);
    const bool f16 = s.kv_type == dtype::f16;
    const int64_t element_bytes = f16 ? 2 : 4;
    const auto* k_bytes = static_cast<const std::byte*>(k_cache);
    constexpr int64_t block = attention_query_block;
    const int64_t group = s.n_heads / s.n_kv_heads;  // query heads per key/value head
    const float sqrt_head_dim = std::sqrt(static_cast<float>(s.head_dim));
    const matmul_rows_fn dot_rows = ks.find(s.kv_type)->rows;  // the F32 or F16 kernel
    // score row of query head h and token t0 + k of the block
    auto score_row = [&](int64_t h, int64_t k) { return scores + (h * block + k) * s.n_ctx; };
    for (int64_t g = kv_begin; g < kv_end; ++g) {
        const int64_t kv_offset = g * s.kv_head_stride;
        matmul_args a;
        a.type = s.kv_type;
        a.w = k_bytes + kv_offset * element_bytes;
        a.w_stride = s.kv_stride * element_bytes;
        a.cols = s.head_dim;
        for (int64_t t0 = 0; t0 < s.n_tokens; t0 += block) {
            const int64_t nt = std::min(block, s.n_tokens - t0);
            // score[h][k][j] = q_(t0 + k, h) . k_j, for j up to the last token's position
            if (group == 1) {
                a.n_tokens = nt;
                a.x = q + (t0 * s.n_heads + g) * s.head_dim;
                a.x_stride = s.n_heads * s.head_dim;
                a.y = score_row(g, 0);
                a.y_stride = s.n_ctx;
                dot_rows(a, 0, s.pos0 + t0 + nt);
            } else {
                for (int64_t k = 0; k < nt; ++k) {
                    a.n_tokens = group;
                    a.x = q + ((t0 + k) * s.n_heads + g * group) * s.head_dim;
                    a.x_stride = s.head_dim;
                    a.y = score_row(g * group, k);
                    a.y_stride = block * s.n_ctx;
                    dot_rows(a, 0, s.pos0 + t0 + k + 1);
                }
            }
            for (int64_t k = 0; k < nt; ++k) {
                const int64_t t = t0 + k;
                const int64_t n_seen = s.pos0 + t + 1;  // causal: positions 0 .. pos0 + t
                for (int64_t h = g * group; h < (g + 1) * group; ++h) {
                    float* score = score_row(h, k);
                    for (int64_t j = 0; j < n_seen; ++j) score[j] = score[j] / sqrt_head_dim;
                    softmax(score, n_seen);  // llama2.c's (kernels.hpp)
                    // out = sum_j softmax_j v_j
                    float* out_h = out + (t * s.n_heads + h) * s.head_dim;
                    if (f16)
                        weighted_sum(out_h, score, static_cast<const uint16_t*>(v_cache) + kv_offset, s.kv_stride, n_seen,
                                     s.head_dim);
                    else
                        weighted_sum(out_h, score, static_cast<const float*>(v_cache) + kv_offset, s.kv_stride, n_seen,
                                     s.head_dim);
                }
            }
        }
    }
}

inline void attention(float* out, const float* q, const void* k_cache, const void* v_cache,
                      const attention_shape& s, float* scores, thread_pool& pool,
                      const kernel_set& ks = default_kernels()) {
    check_kv_type(s.kv_type);
    pool.parallel_for(s.n_kv_heads, [&](int64_t kv_begin, int64_t kv_end) {
        attention_heads(out, q, k_cache, v_cache, s, scores, kv_begin, kv_end, ks);
    });
}

}  // namespace lumen::cpu
