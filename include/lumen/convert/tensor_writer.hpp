// convert/tensor_writer.hpp: stores a float matrix into a GGUF writer in a chosen type,
// falling back to F32 when the rows do not fill whole blocks of that type.
#pragma once

#include <string>
#include <vector>

#include "../gguf_writer.hpp"
#include "../quant.hpp"
#include "../tensor.hpp"

namespace lumen {

// The type a matrix with rows of `cols` elements is stored in when `wanted` was asked for.
inline dtype storable_type(dtype wanted, int64_t cols) {
    return cols % traits_of(wanted).block_size == 0 ? wanted : dtype::f32;
}

// Adds the matrix data (rows, cols), row-major floats, as tensor `name` of ne = {cols, rows}.
inline void add_converted_tensor(gguf_writer& out, const std::string& name, const float* data, int64_t rows,
                                 int64_t cols, dtype wanted) {
    const dtype type = storable_type(wanted, cols);
    const int64_t row_size = row_bytes(type, cols);
    std::vector<std::byte> bytes(static_cast<size_t>(row_size * rows));
    for (int64_t r = 0; r < rows; ++r) quantize_row(type, data + r * cols, bytes.data() + r * row_size, cols);
    out.add_tensor(name, type, {cols, rows}, std::move(bytes));
}

}  // namespace lumen
