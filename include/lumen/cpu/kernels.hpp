// cpu/kernels.hpp: the CPU compute kernels of the forward pass: the matrix products (matmul.hpp,
// for every weight type and instruction set) and the element-wise steps: rmsnorm, softmax, SwiGLU
// (also fused with the products before it) and rotary embeddings.
//
// The element-wise helpers follow llama2.c's run.c operation for operation, so greedy outputs can
// match it token for token; they are a small share of the time, and plain loops.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../detail/fp16.hpp"
#include "../error.hpp"
#include "exp.hpp"
#include "matmul.hpp"

namespace lumen::cpu {

// out (n,) = x (n,) rounded to halves, to nearest even (F16C where the AVX2 kernels are built: the
// same bits as detail::fp32_to_fp16 for every number; NaNs stay NaNs).
inline void round_to_fp16(uint16_t* out, const float* x, int64_t n) {
    int64_t i = 0;
#if defined(LUMEN_CPU_HAVE_AVX2) && !defined(LUMEN_FORCE_SCALAR)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; ++i) out[i] = detail::fp32_to_fp16(x[i]);
}

// out (n,) = x / sqrt(mean(x^2) + eps) * weight, as llama2.c's rmsnorm: the sum of squares
// accumulates in float in index order. out may be x.
inline void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
    if (n <= 0) throw error("rmsnorm: the vector length must be positive, got " + std::to_string(n));
    float ss = 0.0f;
    for (int64_t j = 0; j < n; ++j) ss += x[j] * x[j];
    ss /= static_cast<float>(n);
    ss += eps;
    ss = 1.0f / std::sqrt(ss);
    for (int64_t j = 0; j < n; ++j) out[j] = weight[j] * (ss * x[j]);
}

// x (n,) <- softmax(x) = exp(x - max x) / sum exp(x - max x), in place, as llama2.c's softmax.
inline void softmax(float* x, int64_t n) {
    if (n <= 0) return;
    float max_val = x[0];
    for (int64_t i = 1; i < n; ++i)
        if (x[i] > max_val) max_val = x[i];
    exp_minus(x, n, max_val);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

// silu(x) = x * sigmoid(x) = x * (1 / (1 + exp(-x)))   // F.silu
inline float silu(float x) { return x * (1.0f / (1.0f + std::exp(-x))); }

// x (n,) <- silu(x), in place
inline void silu(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}

// out (n,) = silu(gate) * up   // F.silu(self.w1(x)) * self.w3(x); out may alias gate or up.
// The same operations 8 at a time where exp8 is there (exp.hpp): the same bits.
inline void swiglu(float* out, const float* gate, const float* up, int64_t n) {
    int64_t i = 0;
#if defined(LUMEN_CPU_HAVE_EXP8)
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(gate + i);
        const __m256 sigmoid = _mm256_div_ps(one, _mm256_add_ps(one, avx2::exp8(_mm256_xor_ps(x, sign))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(x, sigmoid), _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

// The most tokens a layer's steps run as phases of one job for (feed_forward, self_attention): what
// that saves is a few us per step, which matters for a token's short products, not a prompt's long
// ones: for a 512-token prompt the separate ops were faster (stories110M Q4_0, 8 of 8 runs, 2-17%).
inline constexpr int64_t one_job_max_tokens = 8;

// Rows [r0, r1) of gate = silu(X @ W_gate^T) * (X @ W_up^T), for every token: p holds the two
// products (gate, up); up keeps X @ W_up^T. With gate_q8, also quantizes those gate elements (whole
// blocks of 32: r0 and r1 multiples of 32, or r1 = hidden) while they are in this thread's cache.
inline void swiglu_rows(const prepared_products& p, float* gate, const float* up, int64_t hidden, int64_t n_tokens,
                        int64_t r0, int64_t r1, const q8_activations* gate_q8, quantize_block_fn quantize_block) {
    p.rows(0, r0, r1);
    p.rows(1, r0, r1);
    for (int64_t t = 0; t < n_tokens; ++t) {
        swiglu(gate + t * hidden + r0, gate + t * hidden + r0, up + t * hidden + r0, r1 - r0);
        if (gate_q8) quantize_blocks(quantize_block, gate, *gate_q8, t, r0 / q8_block, r1 / q8_block);
    }
}

inline void check_swiglu_shapes(const tensor_view& w_gate, const tensor_view& w_up) {
    if (w_gate.rows() != w_up.rows())
        throw error("matmul_swiglu: tensors '" + w_gate.name + "' and '" + w_up.name + "' must have as many rows, got " +
                    std::to_string(w_gate.rows()) + " and " + std::to_string(w_up.rows()));
}

// gate (n_tokens, hidden) = silu(X @ W_gate^T) * (X @ W_up^T) for W_gate, W_up (hidden, cols) and
// X (n_tokens, cols); up (n_tokens, hidden) holds X @ W_up^T after. One job: each chunk of rows
// computes both products for its rows and applies swiglu to them at once, so the element-wise step
// (an exp per element: ~7 us for one token of stories110M, 20 us of TinyLlama, on one thread while
// the others waited) is spread over the threads at no extra wait. The same bits as matmul_many then
// swiglu.
inline void matmul_swiglu(const tensor_view& w_gate, const tensor_view& w_up, const float* x, float* gate, float* up,
                          int64_t n_tokens, thread_pool& pool, matmul_scratch& scratch,
                          const kernel_set& ks = default_kernels()) {
    check_swiglu_shapes(w_gate, w_up);
    const matmul_product products[] = {{&w_gate, gate}, {&w_up, up}};
    prepared_products p;
    if (!p.prepare(products, x, n_tokens, pool, scratch, ks)) return;
    const int64_t hidden = w_gate.rows(), group = matmul_row_group;
    pool.parallel_for((hidden + group - 1) / group, [&](int64_t g0, int64_t g1) {
        swiglu_rows(p, gate, up, hidden, n_tokens, g0 * group, std::min(hidden, g1 * group), nullptr, nullptr);
    });
}

// out (n_tokens, rows) = gate @ W_down^T, gate = silu(X @ W_gate^T) * (X @ W_up^T): a layer's
// feed-forward, with gate and up (n_tokens, hidden) as scratch. Where W_down's kernel takes 8-bit
// activations, it is one job of two phases (thread_pool::parallel_phases): the swiglu rows, each
// chunk quantizing the gate elements it made while they are in its cache, then W_down's rows. So
// W_down starts as soon as the last gate rows are counted: no job end, return and new job between
// (~2 us when the two cores are far apart), and no pass over gate on one thread while the others
// wait, reading the rows the others made from their caches (1-4 us per layer of stories110M).
// The same bits as matmul_swiglu then matmul.
inline void feed_forward(const tensor_view& w_gate, const tensor_view& w_up, const tensor_view& w_down, const float* x,
                         float* gate, float* up, float* out, int64_t n_tokens, thread_pool& pool, matmul_scratch& scratch,
                         const kernel_set& ks = default_kernels()) {
    check_swiglu_shapes(w_gate, w_up);
    check_feed_forward_shapes(w_gate, w_down);
    const int64_t hidden = w_gate.rows();
    const matmul_product down[] = {{&w_down, out}};
    if (n_tokens > one_job_max_tokens || matmul_kernel_for(w_down, "feed_forward", ks).input != activation_format::q8 ||
        hidden % q8_block != 0) {
        matmul_swiglu(w_gate, w_up, x, gate, up, n_tokens, pool, scratch, ks);  // float activations for W_down
        matmul_many(down, gate, n_tokens, pool, scratch, ks);
        return;
    }
    const matmul_product gate_up[] = {{&w_gate, gate}, {&w_up, up}};
    prepared_products first, second;
    if (!first.prepare(gate_up, x, n_tokens, pool, scratch, ks)) return;
    const q8_activations gate_q8 = scratch.q8_ahead.view(n_tokens, hidden);  // filled by the first phase
    second.prepare(down, gate, n_tokens, pool, scratch, ks, &gate_q8);
    const int64_t group = matmul_row_group, rows = w_down.rows();
    const int64_t phase_items[] = {hidden / q8_block, (rows + group - 1) / group};  // blocks of gate rows; W_down's row groups
    pool.parallel_phases(phase_items, [&](int phase, int64_t i0, int64_t i1) {
        if (phase == 0)
            swiglu_rows(first, gate, up, hidden, n_tokens, i0 * q8_block, i1 * q8_block, &gate_q8, ks.quantize_block);
        else
            second.rows(0, i0 * group, std::min(rows, i1 * group));
    });
}

// vec (n_heads, head_dim) <- RoPE at position pos, on adjacent pairs (Meta / llama2.c layout):
// for each head and i < rope_dims / 2, the pair (v[2i], v[2i+1]) turns by
// theta_i = pos * freq_base^(-2i / rope_dims), computed in float exactly as llama2.c's run.c
// (freq = 1 / powf(base, 2i / (float)rope_dims); val = pos * freq; cosf, sinf). Elements at
// rope_dims and beyond are left untouched. In two steps: rope_angles, rope_rotate.

// Throws lumen::error unless rope_dims is even and in [0, head_dim].
inline void check_rope_dims(int64_t head_dim, int64_t rope_dims) {
    if (rope_dims < 0 || rope_dims % 2 != 0 || rope_dims > head_dim)
        throw error("rope_adjacent_pairs: rope_dims must be even and in [0, head_dim = " + std::to_string(head_dim) +
                    "], got " + std::to_string(rope_dims));
}

// The rotation of pair i (i = 0 .. rope_dims / 2 - 1) at position pos: cos_sin (rope_dims,) gets
// cos, sin of pos * freq_base^(-2i / rope_dims), as llama2.c computes them. The same for every head
// and every layer at that position, so a forward pass computes them once per token.
inline void rope_angles(float* cos_sin, int64_t rope_dims, int64_t pos, float freq_base) {
    for (int64_t i = 0; i < rope_dims; i += 2) {
        const float freq = 1.0f / std::pow(freq_base, static_cast<float>(i) / static_cast<float>(rope_dims));
        const float val = static_cast<float>(pos) * freq;
        cos_sin[i] = std::cos(val);
        cos_sin[i + 1] = std::sin(val);
    }
}

// Rotates the first rope_dims of each head of vec (n_heads * head_dim,) by the angles of rope_angles.
// The pair (v[0], v[1]) turned by the angle whose cos, sin are fcr, fci.
inline void rotate_pair(float* v, float fcr, float fci) {
    const float v0 = v[0];
    const float v1 = v[1];
    v[0] = rounded(v0 * fcr) - rounded(v1 * fci);  // unfused, as llama2.c (see simd.hpp)
    v[1] = rounded(v0 * fci) + rounded(v1 * fcr);
}

inline void rope_rotate(float* vec, int64_t n_heads, int64_t head_dim, int64_t rope_dims, const float* cos_sin) {
    for (int64_t i = 0; i < rope_dims; i += 2)
        for (int64_t h = 0; h < n_heads; ++h) rotate_pair(vec + h * head_dim + i, cos_sin[i], cos_sin[i + 1]);
}

// Both at once, for one vector (tests, one-off use).
inline void rope_adjacent_pairs(float* vec, int64_t n_heads, int64_t head_dim, int64_t rope_dims, int64_t pos,
                                float freq_base) {
    check_rope_dims(head_dim, rope_dims);
    std::vector<float> cos_sin(static_cast<size_t>(rope_dims));
    rope_angles(cos_sin.data(), rope_dims, pos, freq_base);
    rope_rotate(vec, n_heads, head_dim, rope_dims, cos_sin.data());
}

}  // namespace lumen::cpu
