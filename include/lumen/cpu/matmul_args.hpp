// cpu/matmul_args.hpp: what a matrix-product kernel is given, and the signature every weight
// type's kernel has. A kernel computes y[t, r] = W[r] . x[t] for the rows r in [r0, r1) and every
// token t; the driver (matmul.hpp) splits the rows over threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../tensor.hpp"
#include "quantize_activations.hpp"

namespace lumen::cpu {

struct matmul_args {
    dtype type = dtype::f32;        // of W's elements
    const std::byte* w = nullptr;   // row r of W starts at w + r * w_stride
    int64_t w_stride = 0;           // bytes
    int64_t cols = 0;               // elements per row (the dot product length)
    int64_t n_tokens = 0;
    const float* x = nullptr;       // float activations: token t at x + t * x_stride (float kernels)
    int64_t x_stride = 0;           // floats
    const q8_activations* xq = nullptr;  // 8-bit activations (kernels of quantized weights)
    float* y = nullptr;             // y[t * y_stride + r]
    int64_t y_stride = 0;           // floats
};

// Computes y for rows [r0, r1) and every token.
using matmul_rows_fn = void (*)(const matmul_args& a, int64_t r0, int64_t r1);

}  // namespace lumen::cpu
