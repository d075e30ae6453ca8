// cpu/kernels.hpp: the CPU compute kernels of the forward pass: the matrix products (matmul.hpp,
// for every weight type and instruction set) and the element-wise steps: rmsnorm, softmax, SwiGLU
// and rotary embeddings.
//
// The element-wise helpers follow llama2.c's run.c operation for operation, so greedy outputs can
// match it token for token; they are a small share of the time, and plain loops.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../error.hpp"
#include "matmul.hpp"

namespace lumen::cpu {

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
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - max_val);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

// silu(x) = x * sigmoid(x) = x * (1 / (1 + exp(-x)))   // F.silu
inline float silu(float x) { return x * (1.0f / (1.0f + std::exp(-x))); }

// x (n,) <- silu(x), in place
inline void silu(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}

// out (n,) = silu(gate) * up   // F.silu(self.w1(x)) * self.w3(x); out may alias gate or up
inline void swiglu(float* out, const float* gate, const float* up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

// vec (n_heads, head_dim) <- RoPE at position pos, on adjacent pairs (Meta / llama2.c layout):
// for each head and i < rope_dims / 2, the pair (v[2i], v[2i+1]) turns by
// theta_i = pos * freq_base^(-2i / rope_dims), computed in float exactly as llama2.c's run.c
// (freq = 1 / powf(base, 2i / (float)rope_dims); val = pos * freq; cosf, sinf). Elements at
// rope_dims and beyond are left untouched.
inline void rope_adjacent_pairs(float* vec, int64_t n_heads, int64_t head_dim, int64_t rope_dims, int64_t pos,
                                float freq_base) {
    if (rope_dims < 0 || rope_dims % 2 != 0 || rope_dims > head_dim)
        throw error("rope_adjacent_pairs: rope_dims must be even and in [0, head_dim = " + std::to_string(head_dim) +
                    "], got " + std::to_string(rope_dims));
    for (int64_t i = 0; i < rope_dims; i += 2) {
        const float freq = 1.0f / std::pow(freq_base, static_cast<float>(i) / static_cast<float>(rope_dims));
        const float val = static_cast<float>(pos) * freq;
        const float fcr = std::cos(val);
        const float fci = std::sin(val);
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = vec + h * head_dim + i;
            const float v0 = v[0];
            const float v1 = v[1];
            v[0] = rounded(v0 * fcr) - rounded(v1 * fci);  // unfused, as llama2.c (see simd.hpp)
            v[1] = rounded(v0 * fci) + rounded(v1 * fcr);
        }
    }
}

}  // namespace lumen::cpu
