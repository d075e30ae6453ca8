// cpu/self_attention.hpp: a layer's self-attention (backend::self_attention) as one job of three
// phases: the query, key and value rows, attention by key/value heads, then wo's rows.
//
// Phase 1: each chunk of projection rows also rotates its query and key elements (RoPE) and puts
// its keys and values in the caches, so those steps no longer run on one thread between two jobs.
// Phase 2: attention_heads for a chunk of key/value heads; where wo's kernel takes 8-bit
// activations, the chunk quantizes its heads' outputs while they are in its cache (head_dim a
// multiple of 32). Phase 3: wo's rows. The threads go from phase to phase without the job ends and
// starts between (thread_pool::parallel_phases). Every step keeps its arithmetic, so the results
// are the bits of the separate ops (the default backend::self_attention).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../backend.hpp"
#include "attention.hpp"
#include "kernels.hpp"
#include "matmul.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

// Rotates the pairs among elements [e0, e1) (e0, e1 even) of one row of heads of head_dim (even):
// rope_rotate's arithmetic, for the part of the row a chunk made. cos_sin (rope_dims,) as rope_angles.
inline void rope_rotate_part(float* row, int64_t head_dim, int64_t rope_dims, const float* cos_sin, int64_t e0,
                             int64_t e1) {
    for (int64_t e = e0; e < e1; e += 2) {
        const int64_t i = e % head_dim;
        if (i < rope_dims) rotate_pair(row + e, cos_sin[i], cos_sin[i + 1]);
    }
}

// Elements [e0, e1) of a row of keys or values into the cache (store_kv_elements, backend.hpp),
// rounded to halves as the CPU backend's store_kv does: for the part of the row a chunk made.
inline void store_kv_part(void* cache, dtype cache_type, const float* row, int64_t e0, int64_t e1, int64_t pos,
                          int64_t head_dim, int64_t n_ctx) {
    store_kv_elements(cache, cache_type, row, e0, e1, pos, head_dim, n_ctx,
                      [](uint16_t* to, const float* from, int64_t m) { round_to_fp16(to, from, m); });
}

// Whether self_attention below can take this step: even heads (RoPE's pairs stay in a chunk's rows),
// and heads of whole 32-blocks where wo's kernel wants its input quantized. Otherwise the backend
// runs the separate ops.
inline bool self_attention_in_one_job(const self_attention_step& a, const kernel_set& ks = default_kernels()) {
    const int64_t head_dim = a.shape.head_dim;
    if (head_dim % 2 != 0) return false;
    const matmul_kernel* wo = ks.find(a.wo->type);
    return wo == nullptr || wo->input != activation_format::q8 || head_dim % q8_block == 0;
}

// proj (n, dim) = wo(attention(rope(wq h), rope(wk h), wv h)), storing the batch's roped keys and
// values in the caches first (see the top of this file). rope_table (n, rope_dims): cos, sin of
// positions pos0 .. pos0 + n - 1 (rope_angles); scores: attention_scratch_floats(a.shape) floats.
// Requires self_attention_in_one_job(a, ks); throws lumen::error naming the tensor when a weight's
// shape does not fit the others.
inline void self_attention(float* proj, const float* h, const self_attention_step& a, const float* rope_table,
                           float* scores, thread_pool& pool, matmul_scratch& scratch,
                           const kernel_set& ks = default_kernels()) {
    const attention_shape& s = a.shape;
    const int64_t n = s.n_tokens, head_dim = s.head_dim;
    check_kv_type(s.kv_type);
    check_rope_dims(head_dim, a.rope_dims);
    const int64_t q_dim = s.n_heads * head_dim, kv_dim = s.n_kv_heads * head_dim;
    auto expect_rows = [](const tensor_view& w, int64_t rows) {
        if (w.rows() != rows)
            throw error("self_attention: tensor '" + w.name + "' has " + std::to_string(w.rows()) + " rows, expected " +
                        std::to_string(rows));
    };
    expect_rows(*a.wq, q_dim);
    expect_rows(*a.wk, kv_dim);
    expect_rows(*a.wv, kv_dim);
    if (a.wo->cols() != q_dim)
        throw error("self_attention: tensor '" + a.wo->name + "' has rows of " + std::to_string(a.wo->cols()) +
                    " elements, expected " + std::to_string(q_dim));
    if (!self_attention_in_one_job(a, ks))
        throw error("self_attention: heads of " + std::to_string(head_dim) + " elements need the separate ops");

    const matmul_product qkv[] = {{a.wq, a.q}, {a.wk, a.k}, {a.wv, a.v}};
    prepared_products projections, output;
    if (!projections.prepare(qkv, h, n, pool, scratch, ks)) return;
    const bool quantize_attn = matmul_kernel_for(*a.wo, "self_attention", ks).input == activation_format::q8;
    q8_activations attn_q8;
    if (quantize_attn) attn_q8 = scratch.q8_ahead.view(n, q_dim);  // filled by phase 2
    const matmul_product out[] = {{a.wo, proj}};
    output.prepare(out, a.attn, n, pool, scratch, ks, quantize_attn ? &attn_q8 : nullptr);

    constexpr int64_t group = matmul_row_group;
    int64_t first_group[4] = {0};  // projection i has the row groups [first_group[i], first_group[i + 1])
    for (size_t i = 0; i < 3; ++i) first_group[i + 1] = first_group[i] + (qkv[i].w->rows() + group - 1) / group;
    const int64_t heads_per_kv = s.n_heads / s.n_kv_heads, dim = a.wo->rows();
    const int64_t phase_items[] = {first_group[3], s.n_kv_heads, (dim + group - 1) / group};
    pool.parallel_phases(phase_items, [&](int phase, int64_t i0, int64_t i1) {
        if (phase == 0) {
            for (size_t i = 0; i < 3; ++i) {
                const int64_t r0 = (std::max(i0, first_group[i]) - first_group[i]) * group;
                const int64_t r1 = std::min(qkv[i].w->rows(), (std::min(i1, first_group[i + 1]) - first_group[i]) * group);
                if (r0 >= r1) continue;
                projections.rows(i, r0, r1);
                const int64_t width = qkv[i].w->rows();
                for (int64_t t = 0; t < n; ++t) {
                    float* row = qkv[i].y + t * width;
                    if (i < 2) rope_rotate_part(row, head_dim, a.rope_dims, rope_table + t * a.rope_dims, r0, r1);
                    if (i > 0) store_kv_part(i == 1 ? a.k_cache : a.v_cache, s.kv_type, row, r0, r1, s.pos0 + t, head_dim, s.n_ctx);
                }
            }
        } else if (phase == 1) {
            attention_heads(a.attn, a.q, a.k_cache, a.v_cache, s, scores, i0, i1, ks);
            if (quantize_attn) {
                const int64_t b0 = i0 * heads_per_kv * head_dim / q8_block, b1 = i1 * heads_per_kv * head_dim / q8_block;
                for (int64_t t = 0; t < n; ++t) quantize_blocks(ks.quantize_block, a.attn, attn_q8, t, b0, b1);
            }
        } else {
            output.rows(0, i0 * group, std::min(dim, i1 * group));
        }
    });
}

}  // namespace lumen::cpu
