// cpu/matmul_args.hpp: what a matrix-product kernel is given, and the signature every weight
// type's kernel has. A kernel computes y[t, r] = W[r] . x[t] for the rows r in [r0, r1) and every
// token t; the driver (matmul.hpp) splits the rows over threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../detail/fp16.hpp"
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
    // Optional, for the kernels that ask for it (matmul_kernel::float_scales): the fp16 scales of
    // W's blocks as floats, 4 rows' scales of a block side by side (see float_block_scales).
    const float* w_scales = nullptr;
    // Optional, for the kernels that ask for it (matmul_kernel::pack): the rows [0, packed_rows) of
    // W repacked by the kernel's pack function (see matmul_packed.hpp); the kernels read those rows
    // there and the others at w.
    const std::byte* w_packed = nullptr;
    int64_t packed_rows = 0;
};

// The fp16 scales of a quantized W (rows, cols), one in the first 2 bytes of each block of
// block_bytes, as floats: the scale of row r, block b at [(r / 4) * n_blocks * 4 + b * 4 + r % 4],
// so that a kernel reads the scales of 4 rows for one block as one vector (and the scales of one
// group of rows in order). Rows past the last whole group of 4 fill part of theirs, the rest is 0.
inline std::vector<float> float_block_scales(const std::byte* w, int64_t rows, int64_t w_stride, int64_t n_blocks,
                                             int64_t block_bytes) {
    std::vector<float> scales(static_cast<size_t>((rows + 3) / 4 * 4 * n_blocks), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < n_blocks; ++b) {
            uint16_t h;
            std::memcpy(&h, w + r * w_stride + b * block_bytes, sizeof h);
            scales[static_cast<size_t>((r / 4) * n_blocks * 4 + b * 4 + r % 4)] = detail::fp16_to_fp32(h);
        }
    return scales;
}

// Computes y for rows [r0, r1) and every token.
using matmul_rows_fn = void (*)(const matmul_args& a, int64_t r0, int64_t r1);

// Repacks one group of pack_rows rows (at w, w_stride bytes apart, n_blocks blocks each) into the
// same number of bytes at out, in the layout of the kernel that asks for it.
using pack_fn = void (*)(const std::byte* w, int64_t w_stride, int64_t n_blocks, std::byte* out);

}  // namespace lumen::cpu
