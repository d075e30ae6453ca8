// cpu/matmul.hpp: matrix products of a weight matrix of any supported type with float activations,
// Y (n_tokens, rows) = X (n_tokens, cols) @ W^T: the kernel table by weight type, and the driver
// that prepares the activations once and splits the rows over the thread pool.
//
// The table. Each weight type has one entry per kernel set (portable scalar; AVX2; later WASM
// SIMD128): the activation format its kernel wants (floats, or 8-bit blocks quantized on the fly
// once per product, see quantize_activations.hpp) and the kernel itself. A new weight type
// (Q4_K, Q6_K, ...) adds its kernels and one row per set; a new activation format adds one value
// of activation_format and its preparation in matmul() below. Until a type has its row, any type
// that dequantize_row knows (and tensor.hpp marks supported) runs through the generic kernel: each
// weight row is dequantized to floats once (for all tokens) and goes through the set's F32 kernel.
// Correct, but slow.
//
// Results do not depend on the thread count or on how many tokens are processed at once: matmul of
// n tokens equals n matvecs bit for bit, and the SIMD kernels equal the scalar ones (see simd.hpp
// and matmul_scalar.hpp), so a model computes the same logits on every CPU and in WebAssembly.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "../backend.hpp"
#include "../detail/mapped_file.hpp"
#include "../error.hpp"
#include "../quant.hpp"
#include "../tensor.hpp"
#include "../weight_cache.hpp"
#include "matmul_args.hpp"
#include "matmul_avx2.hpp"
#include "matmul_avx512.hpp"
#include "matmul_kquants.hpp"
#include "matmul_packed.hpp"
#include "matmul_packed_q4_k.hpp"
#include "matmul_packed_q6_k.hpp"
#include "matmul_scalar.hpp"
#include "matmul_wasm.hpp"
#include "quantize_activations.hpp"
#include "thread_pool.hpp"

namespace lumen::cpu {

enum class activation_format {
    f32,  // the float rows as they are
    q8,   // 8-bit blocks of 32 with a float scale (q8_activations)
};

struct matmul_kernel {
    dtype type;
    activation_format input;
    matmul_rows_fn rows;
    bool float_scales = false;  // reads matmul_args::w_scales (made once per weight, kept in matmul_scratch)
    pack_fn pack = nullptr;     // reads matmul_args::w_packed, groups of pack_rows rows repacked by this
    int64_t pack_rows = 0;
};

struct kernel_set {
    const char* name;
    const matmul_kernel* begin;
    const matmul_kernel* end;
    quantize_block_fn quantize_block;  // for activation_format::q8
    matmul_rows_fn generic;            // for the other types dequantize_row knows

    // The dedicated kernel for a weight type, or nullptr.
    const matmul_kernel* find(dtype type) const {
        for (const matmul_kernel* k = begin; k != end; ++k)
            if (k->type == type) return k;
        return nullptr;
    }
};

// Rows dequantized one at a time into a per-thread buffer (grown once), then F32_ROWS.
template <matmul_rows_fn f32_rows>
inline void rows_dequantized(const matmul_args& a, int64_t r0, int64_t r1) {
    thread_local std::vector<float> row;
    if (row.size() < static_cast<size_t>(a.cols)) row.resize(static_cast<size_t>(a.cols));
    matmul_args f = a;
    f.type = dtype::f32;
    f.w = reinterpret_cast<const std::byte*>(row.data());
    f.w_stride = 0;
    for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(a.type, a.w + r * a.w_stride, row.data(), a.cols);
        f.y = a.y + r;
        f32_rows(f, 0, 1);
    }
}

// The tables list the dedicated kernels only; types without one take the set's generic kernel
// above (see matmul_kernel_for).
namespace kernel_tables {

inline constexpr matmul_kernel scalar_table[] = {
    {dtype::f32, activation_format::f32, &scalar::rows_float<scalar::f32_row>},
    {dtype::f16, activation_format::f32, &scalar::rows_float<scalar::f16_row>},
    {dtype::bf16, activation_format::f32, &scalar::rows_float<scalar::bf16_row>},
    {dtype::q8_0, activation_format::q8, &scalar::rows_q8<scalar::q8_0_block>},
    {dtype::q4_0, activation_format::q8, &scalar::rows_q8<scalar::q4_0_block>},
    {dtype::q4_k, activation_format::q8, &scalar::rows_kq<scalar::q4_k_block>},
    {dtype::q6_k, activation_format::q8, &scalar::rows_kq<scalar::q6_k_block>},
};

#if defined(LUMEN_CPU_HAVE_AVX2)
inline constexpr matmul_kernel avx2_table[] = {
    {dtype::f32, activation_format::f32, &avx2::rows_float<avx2::f32_row>},
    {dtype::f16, activation_format::f32, &avx2::rows_float<avx2::f16_row>},
    {dtype::bf16, activation_format::f32, &avx2::rows_float<avx2::bf16_row>},
#if defined(LUMEN_CPU_HAVE_AVX512)
    {dtype::q8_0, activation_format::q8, &avx512::rows_packed<avx512::packed_q8_0>, false,
     &avx2::pack_group<avx512::packed_q8_0>, avx512::packed_group_rows},
    {dtype::q4_0, activation_format::q8, &avx512::rows_packed<avx512::packed_q4_0>, false,
     &avx2::pack_group<avx512::packed_q4_0>, avx512::packed_group_rows},
#else
    {dtype::q8_0, activation_format::q8, &avx2::rows_packed<avx2::q8_0_block>, false,
     &avx2::pack_group<avx2::packed<avx2::q8_0_block>>, avx2::packed_group_rows},
    {dtype::q4_0, activation_format::q8, &avx2::rows_packed<avx2::q4_0_block>, false,
     &avx2::pack_group<avx2::packed<avx2::q4_0_block>>, avx2::packed_group_rows},
#endif
#if defined(LUMEN_CPU_HAVE_AVX512)
    {dtype::q4_k, activation_format::q8, &avx512::rows_packed_q4_k, false, &avx512::packed_q4_k::pack_group,
     avx512::packed_group_rows},
    {dtype::q6_k, activation_format::q8, &avx512::rows_packed_q6_k, false, &avx512::packed_q6_k::pack_group,
     avx512::packed_group_rows},
#else
    {dtype::q4_k, activation_format::q8, &avx2::rows_kq<avx2::q4_k_super>},
    {dtype::q6_k, activation_format::q8, &avx2::rows_kq<avx2::q6_k_super>},
#endif
};
#endif

#if defined(LUMEN_CPU_HAVE_WASM)
inline constexpr matmul_kernel wasm_table[] = {
    {dtype::f32, activation_format::f32, &wasm128::rows_float<wasm128::f32_row>},
    {dtype::f16, activation_format::f32, &wasm128::rows_float<wasm128::f16_row>},
    {dtype::bf16, activation_format::f32, &wasm128::rows_float<wasm128::bf16_row>},
    {dtype::q8_0, activation_format::q8, &wasm128::rows_q8<wasm128::q8_0_block>, true},
    {dtype::q4_0, activation_format::q8, &wasm128::rows_q8<wasm128::q4_0_block>, true},
    {dtype::q4_k, activation_format::q8, &scalar::rows_kq<scalar::q4_k_block>},
    {dtype::q6_k, activation_format::q8, &scalar::rows_kq<scalar::q6_k_block>},
};
#endif

}  // namespace kernel_tables

inline const kernel_set& scalar_kernels() {
    static constexpr kernel_set set{"scalar", std::begin(kernel_tables::scalar_table),
                                    std::end(kernel_tables::scalar_table), &scalar::quantize_block_q8,
                                    &rows_dequantized<&scalar::rows_float<scalar::f32_row>>};
    return set;
}

#if defined(LUMEN_CPU_HAVE_AVX2)
inline const kernel_set& avx2_kernels() {
#if defined(LUMEN_CPU_HAVE_AVX512)
    constexpr const char* name = "AVX2+AVX512-VNNI";
#else
    constexpr const char* name = "AVX2";
#endif
    static constexpr kernel_set set{name, std::begin(kernel_tables::avx2_table),
                                    std::end(kernel_tables::avx2_table), &avx2::quantize_block_q8,
                                    &rows_dequantized<&avx2::rows_float<avx2::f32_row>>};
    return set;
}
#endif

#if defined(LUMEN_CPU_HAVE_WASM)
inline const kernel_set& wasm_kernels() {
    static constexpr kernel_set set{simd_name(), std::begin(kernel_tables::wasm_table),
                                    std::end(kernel_tables::wasm_table), &wasm128::quantize_block_q8,
                                    &rows_dequantized<&wasm128::rows_float<wasm128::f32_row>>};
    return set;
}
#endif

// The kernels in use: the best compiled-in SIMD set, or the scalar one under LUMEN_FORCE_SCALAR.
inline const kernel_set& default_kernels() {
#if defined(LUMEN_CPU_HAVE_AVX2) && !defined(LUMEN_FORCE_SCALAR)
    return avx2_kernels();
#elif defined(LUMEN_CPU_HAVE_WASM) && !defined(LUMEN_FORCE_SCALAR)
    return wasm_kernels();
#else
    return scalar_kernels();
#endif
}

// A weight's rows repacked for its kernel (matmul_kernel::pack): rows [0, rows) in groups.
struct packed_weight {
    std::shared_ptr<std::byte> data;  // from a detail::weight_arena; null: could not be made
    int64_t rows = 0;
};

// Memory a matmul needs besides its inputs and outputs, reused: the quantized activations, and
// what some kernels make of a weight on its first product and keep, by the address of its data,
// for the scratch's lifetime:
// - float block scales (the WebAssembly kernels: gathering and converting 4 rows' fp16 scales costs
//   them about as much as the rest of a block's work). 4 bytes per 32 weights: a Q8_0 model grows by
//   an eighth, a Q4_0 one by a fifth.
// - repacked rows (the AVX2 and AVX-512 kernels, matmul_packed.hpp): the same bytes in another
//   order. Once a weight is repacked, the pages of its rows in a mapped model file are released (the
//   kernels no longer read them), so the process holds each weight once, not twice; with `shared`
//   (a model's weight_cache), every context of the model uses the same copy. Off when pack_weights
//   is false (then the kernels read the file's layout, slower).
// Where memory runs out for them, the weight goes without (nullptr: the kernels read W as it is).
struct matmul_scratch {
    q8_buffer q8;
    q8_buffer q8_ahead;  // activations quantized by the phase of a job that makes them, for the next phase (feed_forward)
    bool pack_weights = true;
    std::unordered_map<const std::byte*, std::vector<float>> float_scales;  // empty: could not be made
    std::unordered_map<const std::byte*, std::shared_ptr<packed_weight>> packed;  // null data: could not be made
    weight_cache* shared = nullptr;  // where repacked weights are kept for every context of a model
    detail::weight_arena arena;      // their memory when there is no `shared`

    const float* float_scales_for(const tensor_view& w) {
        auto [it, added] = float_scales.try_emplace(w.data);
        if (added) {
            const dtype_traits& t = traits_of(w.type);
            try {
                it->second = float_block_scales(w.data, w.rows(), w.bytes_per_row(), w.cols() / t.block_size, t.block_bytes);
            } catch (const std::bad_alloc&) {
                it->second.clear();
            } catch (const std::length_error&) {  // more floats than a vector can hold
                it->second.clear();
            }
        }
        return it->second.empty() ? nullptr : it->second.data();
    }

    // w's whole groups of k.pack_rows rows repacked by k.pack (made on the pool, once: in `shared` if
    // set, else in this scratch), or nullptr (also when k does not repack or pack_weights is off).
    const packed_weight* packed_for(const tensor_view& w, const matmul_kernel& k, thread_pool& pool) {
        if (k.pack == nullptr || !pack_weights) return nullptr;
        auto [it, added] = packed.try_emplace(w.data);
        if (added) {
            auto make = [&] { return make_packed(w, k, pool, shared ? shared->arena() : arena); };
            it->second = shared ? shared->get<packed_weight>(w.data, reinterpret_cast<const void*>(k.pack), make) : make();
        }
        return it->second && it->second->data ? it->second.get() : nullptr;
    }

    static std::shared_ptr<packed_weight> make_packed(const tensor_view& w, const matmul_kernel& k, thread_pool& pool,
                                                      detail::weight_arena& memory) {
        auto p = std::make_shared<packed_weight>();
        const int64_t group = k.pack_rows, stride = w.bytes_per_row();
        const int64_t n_groups = w.rows() / group, group_bytes = group * stride;
        const int64_t n_blocks = w.cols() / traits_of(w.type).block_size;
        if (n_groups == 0 || n_groups > std::numeric_limits<int64_t>::max() / group_bytes) return p;
        try {
            const auto bytes = static_cast<size_t>(n_groups * group_bytes);
            p->data = memory.allocate(bytes);
        } catch (const std::bad_alloc&) {
            return p;
        }
        pool.parallel_for(n_groups, [&](int64_t g0, int64_t g1) {
            for (int64_t g = g0; g < g1; ++g) k.pack(w.data + g * group_bytes, stride, n_blocks, p->data.get() + g * group_bytes);
        });
        p->rows = n_groups * group;
        detail::release_file_pages(w.data, static_cast<size_t>(n_groups * group_bytes));
        return p;
    }
};

// The kernel for w's type: its own, else the generic one for types lumen can load (dtype_traits
// supported); throws lumen::error naming the tensor for the others.
inline matmul_kernel matmul_kernel_for(const tensor_view& w, const char* what, const kernel_set& ks) {
    if (const matmul_kernel* k = ks.find(w.type)) return *k;
    const dtype_traits* t = find_dtype(static_cast<uint32_t>(w.type));
    if (t && t->supported) return {w.type, activation_format::f32, ks.generic};
    std::string supported;
    for (const dtype_traits& d : all_dtypes)
        if (d.supported) supported += (supported.empty() ? "" : ", ") + std::string(d.name);
    throw error(std::string(what) + ": " + (w.name.empty() ? "" : "tensor '" + w.name + "': ") + "type " +
                (t ? std::string(t->name) : std::to_string(static_cast<uint32_t>(w.type))) +
                " is not supported by the CPU kernels (" + supported + ")");
}

inline constexpr size_t max_products = 8;

// What matmul_many and matmul_swiglu (kernels.hpp) share: for up to max_products weights W_i (rows_i,
// cols) of one input X (n_tokens, cols), each product's kernel and arguments (Y_i into products[i].y,
// (n_tokens, rows_i)), the activations quantized once where a kernel wants them (or taken as given,
// already quantized). args[i].xq points into the struct: it stays where it was made.
struct prepared_products {
    size_t n = 0;
    std::array<matmul_kernel, max_products> kernels{};
    std::array<matmul_args, max_products> args{};
    q8_activations xq;

    // False when there is nothing to compute (no tokens or no products); throws lumen::error for bad
    // shapes, types and counts. x_q8: X already quantized (for x's shape), or nullptr.
    bool prepare(std::span<const matmul_product> products, const float* x, int64_t n_tokens, thread_pool& pool,
                 matmul_scratch& scratch, const kernel_set& ks, const q8_activations* x_q8 = nullptr) {
        if (products.size() > max_products)
            throw error("matmul: at most " + std::to_string(max_products) + " products at once, got " + std::to_string(products.size()));
        n = products.size();
        for (size_t i = 0; i < n; ++i) kernels[i] = matmul_kernel_for(*products[i].w, "matmul", ks);
        if (n_tokens < 0) throw error("matmul: negative token count " + std::to_string(n_tokens));
        if (n_tokens == 0 || products.empty()) return false;

        const int64_t cols = products[0].w->cols();
        bool q8_input = false;
        for (size_t i = 0; i < n; ++i) {
            const tensor_view& w = *products[i].w;
            const matmul_kernel& k = kernels[i];
            if (w.cols() != cols)
                throw error("matmul: tensor '" + w.name + "' has rows of " + std::to_string(w.cols()) +
                            " elements, the input " + std::to_string(cols));
            matmul_args& a = args[i];
            a.type = w.type;
            a.w = w.data;
            a.w_stride = w.bytes_per_row();  // throws unless rows are whole blocks
            a.cols = cols;
            a.n_tokens = n_tokens;
            a.x = x;
            a.x_stride = cols;
            a.y = products[i].y;
            a.y_stride = w.rows();
            if (k.float_scales) a.w_scales = scratch.float_scales_for(w);
            if (const packed_weight* p = scratch.packed_for(w, k, pool)) {
                a.w_packed = p->data.get();
                a.packed_rows = p->rows;
            }
            if (k.input == activation_format::q8) {
                if (cols % q8_block != 0)
                    throw error("matmul: tensor '" + w.name + "': rows of " + std::to_string(cols) +
                                " elements cannot be cut into blocks of 32");
                q8_input = true;
            }
        }
        if (q8_input) {
            if (x_q8 != nullptr) {
                if (x_q8->n_tokens != n_tokens || x_q8->cols != cols)
                    throw error("matmul: the quantized activations have shape (" + std::to_string(x_q8->n_tokens) + ", " +
                                std::to_string(x_q8->cols) + "), the input (" + std::to_string(n_tokens) + ", " +
                                std::to_string(cols) + ")");
                xq = *x_q8;
            } else {
                xq = scratch.q8.view(n_tokens, cols);
                pool.parallel_for(n_tokens, [&](int64_t t0, int64_t t1) { quantize_tokens(ks.quantize_block, x, xq, t0, t1); });
            }
            for (size_t i = 0; i < n; ++i)
                if (kernels[i].input == activation_format::q8) args[i].xq = &xq;
        }
        return true;
    }

    // Rows [r0, r1) of product i, every token.
    void rows(size_t i, int64_t r0, int64_t r1) const { kernels[i].rows(args[i], r0, r1); }
};

// Rows go to the pool in groups of this many (whole tiles of every kernel).
inline constexpr int64_t matmul_row_group = 16;

// Y_i (n_tokens, rows_i) = X (n_tokens, cols) @ W_i^T for up to max_products weights W_i (rows_i,
// cols) of any type in the table that share the input X: the activations are quantized once, and
// the rows of all the products go to the pool as one job, in groups of 16 (whole tiles), so the
// threads wait for each other once rather than once per product. Allocates only when `scratch` must
// grow (or makes a weight's repacked copy or float scales, once).
inline void matmul_many(std::span<const matmul_product> products, const float* x, int64_t n_tokens, thread_pool& pool,
                        matmul_scratch& scratch, const kernel_set& ks = default_kernels()) {
    prepared_products p;
    if (!p.prepare(products, x, n_tokens, pool, scratch, ks)) return;
    constexpr int64_t group = matmul_row_group;
    std::array<int64_t, max_products + 1> first_group{};  // product i has the groups [first_group[i], first_group[i + 1])
    for (size_t i = 0; i < p.n; ++i) first_group[i + 1] = first_group[i] + (products[i].w->rows() + group - 1) / group;
    pool.parallel_for(first_group[p.n], [&](int64_t g0, int64_t g1) {
        for (size_t i = 0; i < p.n; ++i) {
            const int64_t lo = std::max(g0, first_group[i]) - first_group[i];
            const int64_t hi = std::min(g1, first_group[i + 1]) - first_group[i];
            if (lo < hi) p.rows(i, lo * group, std::min(p.args[i].y_stride, hi * group));
        }
    });
}

// Makes now what the products with w would make on first use (a repacked copy, float scales), for
// the kernel set's kernel of w's type; nothing for types without a kernel (matmul throws for them).
inline void prepare_weight(const tensor_view& w, thread_pool& pool, matmul_scratch& scratch,
                           const kernel_set& ks = default_kernels()) {
    const matmul_kernel* k = ks.find(w.type);
    if (k == nullptr) return;
    if (k->float_scales) (void)scratch.float_scales_for(w);
    (void)scratch.packed_for(w, *k, pool);
}

// X (n_tokens, cols) @ W^T -> Y (n_tokens, rows) for W (rows, cols) of any type in the table.
inline void matmul(const tensor_view& w, const float* x, float* y, int64_t n_tokens, thread_pool& pool,
                   matmul_scratch& scratch, const kernel_set& ks = default_kernels()) {
    const matmul_product p{&w, y};
    matmul_many({&p, 1}, x, n_tokens, pool, scratch, ks);
}

// The same for one token: W (rows, cols) @ x (cols,) -> y (rows,).
inline void matvec(const tensor_view& w, const float* x, float* y, thread_pool& pool, matmul_scratch& scratch,
                   const kernel_set& ks = default_kernels()) {
    matmul(w, x, y, 1, pool, scratch, ks);
}

// Conveniences with a scratch of their own (they allocate: for tests and one-off use).
inline void matmul(const tensor_view& w, const float* x, float* y, int64_t n_tokens, thread_pool& pool) {
    matmul_scratch scratch;
    matmul(w, x, y, n_tokens, pool, scratch);
}
inline void matvec(const tensor_view& w, const float* x, float* y, thread_pool& pool) {
    matmul_scratch scratch;
    matmul(w, x, y, 1, pool, scratch);
}

}  // namespace lumen::cpu
