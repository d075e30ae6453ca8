// cpu/kernels.hpp: the CPU compute kernels of the forward pass: dot products and matrix products
// over F32/F16/BF16/Q8_0/Q4_0 weight rows, rmsnorm, softmax, SwiGLU and rotary embeddings.
//
// Plain loops written so that the compiler can vectorise them without -ffast-math (SIMD versions
// come later). Dot products keep 8 partial sums (lane l takes the elements j = l mod 8) and add the
// leftover n mod 8 products at the end; every weight type goes through that same order, so a
// quantized row gives bit-for-bit the dot product of its dequantized floats, and matmul over a
// batch gives exactly what matvec gives token by token. The element-wise helpers follow llama2.c's
// run.c operation for operation, so greedy outputs can match it token for token.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../detail/fp16.hpp"
#include "../error.hpp"
#include "../quant.hpp"
#include "../tensor.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

namespace kernel_detail {

inline constexpr int lanes = 8;
inline constexpr int64_t chunk = 32;  // elements converted at a time for F16/BF16 rows

// Eight running partial sums of products.
struct lane_sums {
    float v[lanes] = {};

    // v[l] += a[j] * x[j] for j = l mod 8, j < n; n must be a multiple of 8
    void add(const float* a, const float* x, int64_t n) {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 1  // unrolled fully, GCC -O3 would turn the lanes into scalar code
#endif
        for (int64_t j = 0; j < n; j += lanes)
            for (int l = 0; l < lanes; ++l) v[l] += a[j + l] * x[j + l];
    }
    float total() const { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
};

// sum_j a[j] * x[j] in the lane order described at the top of this file
inline float dot_f32(const float* a, const float* x, int64_t n) {
    const int64_t n8 = n - n % lanes;
    lane_sums sums;
    sums.add(a, x, n8);
    float tail = 0.0f;
    for (int64_t j = n8; j < n; ++j) tail += a[j] * x[j];
    return sums.total() + tail;
}

// The same for a row of 16-bit floats (F16 or BF16), converted `chunk` elements at a time.
template <float (*to_f32)(uint16_t)>
inline float dot_half(const std::byte* row, const float* x, int64_t n) {
    const int64_t n8 = n - n % lanes;
    lane_sums sums;
    float buf[chunk];
    uint16_t raw[chunk];
    int64_t j = 0;
    for (; j + chunk <= n8; j += chunk) {  // whole chunks: fixed sizes, so the loops vectorise
        std::memcpy(raw, row + 2 * j, sizeof raw);
        for (int64_t k = 0; k < chunk; ++k) buf[k] = to_f32(raw[k]);
        sums.add(buf, x + j, chunk);
    }
    const int64_t m = n8 - j;  // a last partial chunk of whole lanes
    std::memcpy(raw, row + 2 * j, static_cast<size_t>(m) * 2);
    for (int64_t k = 0; k < m; ++k) buf[k] = to_f32(raw[k]);
    sums.add(buf, x + j, m);
    float tail = 0.0f;
    for (j = n8; j < n; ++j) {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        tail += to_f32(h) * x[j];
    }
    return sums.total() + tail;
}

// The same for a row of quantized blocks of 32 elements, dequantized one block at a time.
template <void (*dequantize_block)(const std::byte*, float*), int64_t block_bytes>
inline float dot_blocks(const std::byte* row, const float* x, int64_t n) {
    lane_sums sums;
    float buf[32];
    for (int64_t b = 0; b < n / 32; ++b) {
        dequantize_block(row + b * block_bytes, buf);
        sums.add(buf, x + b * 32, 32);
    }
    return sums.total() + 0.0f;
}

inline float dot_row_f32(const std::byte* row, const float* x, int64_t n) {
    return dot_f32(reinterpret_cast<const float*>(row), x, n);
}

using dot_fn = float (*)(const std::byte* row, const float* x, int64_t n);

// The dot-product kernel for a weight type; throws for types the CPU kernels cannot compute with.
inline dot_fn dot_kernel(dtype type, const char* what, const std::string& tensor_name) {
    switch (type) {
        case dtype::f32: return dot_row_f32;
        case dtype::f16: return dot_half<detail::fp16_to_fp32>;
        case dtype::bf16: return dot_half<detail::bf16_to_fp32>;
        case dtype::q8_0: return dot_blocks<quant::dequantize_block_q8_0, block_q8_0_bytes>;
        case dtype::q4_0: return dot_blocks<quant::dequantize_block_q4_0, block_q4_0_bytes>;
        default: {
            const dtype_traits* t = find_dtype(static_cast<uint32_t>(type));
            throw error(std::string(what) + ": " + (tensor_name.empty() ? "" : "tensor '" + tensor_name + "': ") +
                        "type " + (t ? std::string(t->name) : std::to_string(static_cast<uint32_t>(type))) +
                        " is not supported by the CPU kernels (F32, F16, BF16, Q8_0, Q4_0)");
        }
    }
}

}  // namespace kernel_detail

// row (n,) of type `type` . x (n,) -> scalar; n must fill whole blocks of the type. For Q8_0/Q4_0
// each block is dequantized on the fly and the products accumulate in float.
inline float dot_row(dtype type, const std::byte* row, const float* x, int64_t n) {
    const kernel_detail::dot_fn dot = kernel_detail::dot_kernel(type, "dot_row", "");
    (void)row_bytes(type, n);  // throws unless n fills whole blocks
    return dot(row, x, n);
}

// W (rows, cols) @ x (cols,) -> y (rows,); rows split across the pool's threads.
inline void matvec(const tensor_view& w, const float* x, float* y, thread_pool& pool) {
    const kernel_detail::dot_fn dot = kernel_detail::dot_kernel(w.type, "matvec", w.name);
    const int64_t cols = w.cols();
    const int64_t stride = w.bytes_per_row();
    const std::byte* data = w.data;
    pool.parallel_for(w.rows(), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) y[r] = dot(data + r * stride, x, cols);
    });
}

// X (n_tokens, cols) @ W^T -> Y (n_tokens, rows), i.e. y[t] = W @ x[t] for every token t; rows
// split across the pool's threads. Each weight row is converted to floats once and used for all
// tokens; the result equals matvec token by token, bit for bit.
inline void matmul(const tensor_view& w, const float* x, float* y, int64_t n_tokens, thread_pool& pool) {
    (void)kernel_detail::dot_kernel(w.type, "matmul", w.name);  // type check
    if (n_tokens < 0) throw error("matmul: negative token count " + std::to_string(n_tokens));
    const int64_t rows = w.rows();
    const int64_t cols = w.cols();
    const int64_t stride = w.bytes_per_row();
    const std::byte* data = w.data;
    const dtype type = w.type;
    pool.parallel_for(rows, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> scratch;  // one weight row; grows once per thread
        if (type != dtype::f32 && scratch.size() < static_cast<size_t>(cols)) scratch.resize(static_cast<size_t>(cols));
        for (int64_t r = begin; r < end; ++r) {
            const float* w_row = reinterpret_cast<const float*>(data + r * stride);
            if (type != dtype::f32) {
                dequantize_row(type, data + r * stride, scratch.data(), cols);
                w_row = scratch.data();
            }
            for (int64_t t = 0; t < n_tokens; ++t) y[t * rows + r] = kernel_detail::dot_f32(w_row, x + t * cols, cols);
        }
    });
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
            v[0] = v0 * fcr - v1 * fci;
            v[1] = v0 * fci + v1 * fcr;
        }
    }
}

}  // namespace lumen::cpu
