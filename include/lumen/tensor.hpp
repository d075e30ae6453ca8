// tensor.hpp: element types of GGUF tensors (ggml's numbering and block sizes) and tensor_view,
// a typed, shaped window onto tensor bytes that live elsewhere (usually mapped file memory).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "error.hpp"

namespace lumen {

// ggml's type ids, as stored in GGUF tensor infos.
enum class dtype : uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q8_1 = 9,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    q8_k = 15,
    i8 = 24,
    i16 = 25,
    i32 = 26,
    i64 = 27,
    f64 = 28,
    bf16 = 30,
};

struct dtype_traits {
    dtype type;
    std::string_view name;
    int64_t block_size;   // elements per block (1 for plain types)
    int64_t block_bytes;  // bytes per block
    bool supported;       // lumen can compute with it
};

inline constexpr std::array<dtype_traits, 20> all_dtypes{{
    {dtype::f32, "F32", 1, 4, true},
    {dtype::f16, "F16", 1, 2, true},
    {dtype::q4_0, "Q4_0", 32, 18, true},
    {dtype::q4_1, "Q4_1", 32, 20, false},
    {dtype::q5_0, "Q5_0", 32, 22, false},
    {dtype::q5_1, "Q5_1", 32, 24, false},
    {dtype::q8_0, "Q8_0", 32, 34, true},
    {dtype::q8_1, "Q8_1", 32, 36, false},
    {dtype::q2_k, "Q2_K", 256, 84, false},
    {dtype::q3_k, "Q3_K", 256, 110, false},
    {dtype::q4_k, "Q4_K", 256, 144, true},
    {dtype::q5_k, "Q5_K", 256, 176, false},
    {dtype::q6_k, "Q6_K", 256, 210, true},
    {dtype::q8_k, "Q8_K", 256, 292, false},
    {dtype::i8, "I8", 1, 1, false},
    {dtype::i16, "I16", 1, 2, false},
    {dtype::i32, "I32", 1, 4, false},
    {dtype::i64, "I64", 1, 8, false},
    {dtype::f64, "F64", 1, 8, false},
    {dtype::bf16, "BF16", 1, 2, true},
}};

// The traits of a raw ggml type id, or nullptr when the id is not a known type.
inline const dtype_traits* find_dtype(uint32_t raw_type) {
    for (const auto& t : all_dtypes)
        if (static_cast<uint32_t>(t.type) == raw_type) return &t;
    return nullptr;
}

inline const dtype_traits& traits_of(dtype type) {
    const dtype_traits* t = find_dtype(static_cast<uint32_t>(type));
    if (!t) throw error("unknown tensor type id " + std::to_string(static_cast<uint32_t>(type)));
    return *t;
}

inline std::string_view dtype_name(dtype type) { return traits_of(type).name; }

// Bytes taken by a row of n_elements of this type; the row must hold whole blocks.
inline int64_t row_bytes(dtype type, int64_t n_elements) {
    const dtype_traits& t = traits_of(type);
    if (n_elements % t.block_size != 0)
        throw error("a row of " + std::to_string(n_elements) + " elements does not fill whole " +
                    std::string(t.name) + " blocks of " + std::to_string(t.block_size));
    return n_elements / t.block_size * t.block_bytes;
}

// A tensor as GGUF describes it. ne[0] is the fastest-moving dimension (the row length), as in
// ggml: a matrix with `rows` rows of `cols` elements has ne = {cols, rows}.
struct tensor_view {
    std::string name;
    dtype type = dtype::f32;
    uint32_t n_dims = 0;
    std::array<int64_t, 4> ne{1, 1, 1, 1};
    const std::byte* data = nullptr;  // n_bytes of tensor data, laid out as ggml does
    uint64_t n_bytes = 0;

    int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    int64_t cols() const { return ne[0]; }                   // row length
    int64_t rows() const { return ne[1] * ne[2] * ne[3]; }   // number of rows
    int64_t bytes_per_row() const { return row_bytes(type, ne[0]); }
    const std::byte* row(int64_t r) const { return data + r * bytes_per_row(); }
    // The data of an F32 tensor as floats (the loader checks type and alignment first).
    const float* data_as_f32() const { return reinterpret_cast<const float*>(data); }
};

}  // namespace lumen
