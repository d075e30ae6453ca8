// quantize.hpp: rewrites a GGUF model with its weight matrices in another type (lumen quantize):
// every metadata key is copied, general.file_type is set to llama.cpp's number for the scheme, and
// the tensors are converted one at a time (rows split over threads) and streamed to the output.
//
// Schemes. A plain type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) stores every matrix in that type
// (what llama-quantize calls --pure). Q4_K_M is llama.cpp's mix: Q4_K, except the output head (and
// the token embedding when the head is tied to it) in Q6_K, and attn_v and ffn_down in Q6_K for the
// layers use_more_bits(i, n) picks (the first and last eighth, and every third in between).
//
// Rules for every scheme, as llama.cpp's llama_tensor_get_type:
//   - tensors of one dimension (norms, biases) are copied as they are (F32 in practice);
//   - a matrix whose rows do not fill whole blocks of the chosen type falls back: Q6_K -> Q8_0
//     (llama.cpp's choice), Q4_K -> Q8_0 (llama.cpp picks Q5_0, which lumen does not compute with;
//     Q8_0 is the next type up that it does), and to F16 when rows are not a multiple of 32 either;
//     Q8_0 and Q4_0 fall back to F16 (llama.cpp refuses those files);
//   - a tensor already in the chosen type is copied byte for byte; others are converted to floats
//     and quantized with ggml's reference rounding (quant.hpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cpu/thread_pool.hpp"
#include "error.hpp"
#include "gguf.hpp"
#include "gguf_stream_writer.hpp"
#include "quant.hpp"
#include "tensor.hpp"
#include "tensor_names.hpp"

namespace lumen {

// A target of lumen quantize: a plain type, or llama.cpp's Q4_K_M mix.
struct quantize_scheme {
    std::string_view name;
    dtype type;          // the type of most matrices
    uint32_t file_type;  // llama.cpp's LLAMA_FTYPE_* for general.file_type
    bool k_mix;          // Q4_K_M: Q6_K for the output head and some attn_v / ffn_down
};

inline constexpr quantize_scheme quantize_schemes[] = {
    {"F32", dtype::f32, 0, false},      // LLAMA_FTYPE_ALL_F32
    {"F16", dtype::f16, 1, false},      // LLAMA_FTYPE_MOSTLY_F16
    {"BF16", dtype::bf16, 32, false},   // LLAMA_FTYPE_MOSTLY_BF16
    {"Q8_0", dtype::q8_0, 7, false},    // LLAMA_FTYPE_MOSTLY_Q8_0
    {"Q4_0", dtype::q4_0, 2, false},    // LLAMA_FTYPE_MOSTLY_Q4_0
    {"Q4_K", dtype::q4_k, 14, false},   // LLAMA_FTYPE_MOSTLY_Q4_K_S ("mostly Q4_K")
    {"Q6_K", dtype::q6_k, 18, false},   // LLAMA_FTYPE_MOSTLY_Q6_K
    {"Q4_K_M", dtype::q4_k, 15, true},  // LLAMA_FTYPE_MOSTLY_Q4_K_M
};

// The scheme called `name` (any case); throws lumen::error listing the known ones.
inline const quantize_scheme& find_quantize_scheme(std::string_view name) {
    std::string upper(name);
    for (char& c : upper) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    std::string known;
    for (const quantize_scheme& s : quantize_schemes) {
        if (s.name == upper) return s;
        known += (known.empty() ? "" : ", ") + std::string(s.name);
    }
    throw error("unknown quantization type '" + std::string(name) + "' (known: " + known + ")");
}

// llama.cpp's use_more_bits: layers that Q4_K_M gives Q6_K for attn_v and ffn_down.
inline bool use_more_bits(int64_t i_layer, int64_t n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// What happens to one tensor.
struct tensor_plan {
    const tensor_view* source = nullptr;
    dtype type = dtype::f32;  // the type written
    dtype wanted = dtype::f32;  // the type the scheme asked for, before any fallback
    std::string reason;       // why type differs from the scheme's type ("" when it does not)
};

namespace detail {

// The type a matrix falls back to when its rows of `cols` elements do not fill blocks of `type`.
inline dtype fallback_type(dtype type, int64_t cols) {
    if (cols % traits_of(type).block_size == 0) return type;
    if ((type == dtype::q4_k || type == dtype::q6_k) && cols % qk8_0 == 0) return dtype::q8_0;
    return dtype::f16;
}

}  // namespace detail

// Decides the type of every tensor of `file` under `scheme`, in file order.
inline std::vector<tensor_plan> plan_quantization(const gguf_file& file, const quantize_scheme& scheme) {
    namespace tn = tensor_names;
    const bool has_output = file.find_tensor(tn::output) != nullptr;
    int64_t n_attn_v = 0, n_ffn_down = 0;
    for (const tensor_view& t : file.tensors()) {
        n_attn_v += t.name.ends_with(tn::attn_v);
        n_ffn_down += t.name.ends_with(tn::ffn_down);
    }
    int64_t i_attn_v = 0, i_ffn_down = 0;
    std::vector<tensor_plan> plans;
    for (const tensor_view& t : file.tensors()) {
        tensor_plan p;
        p.source = &t;
        if (t.n_dims < 2) {
            p.type = p.wanted = t.type;
            if (t.type != scheme.type) p.reason = "1-D, kept";
            plans.push_back(p);
            continue;
        }
        dtype wanted = scheme.type;
        std::string why;
        if (scheme.k_mix) {
            if (t.name == tn::output || (!has_output && t.name == tn::token_embd)) {
                // llama.cpp: Q6_K, or Q8_0 when the rows do not fill Q4_K's blocks
                wanted = t.cols() % qk_k != 0 ? dtype::q8_0 : dtype::q6_k;
                why = wanted == dtype::q6_k ? "Q4_K_M: output head"
                                            : "Q4_K_M: output head, rows of " + std::to_string(t.cols()) +
                                                  " do not fill Q4_K blocks: Q8_0 as llama.cpp";
            } else if (t.name.ends_with(tn::attn_v)) {
                if (use_more_bits(i_attn_v++, n_attn_v)) wanted = dtype::q6_k, why = "Q4_K_M: use_more_bits layer";
            } else if (t.name.ends_with(tn::ffn_down)) {
                if (use_more_bits(i_ffn_down++, n_ffn_down)) wanted = dtype::q6_k, why = "Q4_K_M: use_more_bits layer";
            }
        }
        p.wanted = wanted;
        p.type = detail::fallback_type(wanted, t.cols());
        if (p.type != wanted)
            why = "rows of " + std::to_string(t.cols()) + " do not fill " + std::string(dtype_name(wanted)) + " blocks of " +
                  std::to_string(traits_of(wanted).block_size) + ": fallback";
        p.reason = why;
        plans.push_back(p);
    }
    return plans;
}

// One converted tensor, as reported to the caller's callback.
struct quantize_tensor_report {
    size_t index = 0;  // 0-based
    size_t count = 0;
    const tensor_plan* plan = nullptr;
    uint64_t bytes_in = 0, bytes_out = 0;
    bool copied = false;  // stored as it was, byte for byte
};

struct quantize_summary {
    size_t n_tensors = 0;
    size_t n_fallback = 0;  // matrices whose rows did not fit the type asked for
    uint64_t bytes_in = 0, bytes_out = 0;  // tensor data
    uint64_t file_bytes_in = 0, file_bytes_out = 0;
    double seconds = 0;
};

struct quantize_options {
    int n_threads = 1;
};

// Converts the model at `in_path` into `out_path` under `scheme`; on_tensor(const
// quantize_tensor_report&) is called after each tensor. Throws lumen::error (the output file is then
// not created).
template <class OnTensor>
quantize_summary quantize_model(const std::string& in_path, const std::string& out_path, const quantize_scheme& scheme,
                                const quantize_options& options, OnTensor&& on_tensor) {
    const auto t0 = std::chrono::steady_clock::now();
    const gguf_file in = gguf_file::open(in_path);
    const std::vector<tensor_plan> plans = plan_quantization(in, scheme);

    std::vector<std::pair<std::string, gguf_value>> metadata = in.metadata();
    auto set_key = [&](const std::string& key, gguf_value v) {
        for (auto& kv : metadata)
            if (kv.first == key) { kv.second = std::move(v); return; }
        metadata.emplace_back(key, std::move(v));
    };
    set_key("general.file_type", scheme.file_type);
    set_key("general.quantization_version", uint32_t{2});  // ggml's GGML_QNT_VERSION

    std::vector<gguf_stream_writer::tensor_info> infos;
    for (const tensor_plan& p : plans) {
        const tensor_view& t = *p.source;
        infos.push_back({t.name, p.type, std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims)});
    }
    gguf_stream_writer out(out_path, metadata, infos);

    cpu::thread_pool pool(std::max(1, options.n_threads));
    quantize_summary summary;
    summary.n_tensors = plans.size();
    summary.file_bytes_in = in.file_size();
    std::vector<std::byte> buffer;
    for (size_t i = 0; i < plans.size(); ++i) {
        const tensor_plan& p = plans[i];
        const tensor_view& t = *p.source;
        quantize_tensor_report r;
        r.index = i;
        r.count = plans.size();
        r.plan = &p;
        r.bytes_in = t.n_bytes;
        if (p.type == t.type) {
            r.copied = true;
            out.write_tensor({t.data, static_cast<size_t>(t.n_bytes)});
            r.bytes_out = t.n_bytes;
        } else {
            const int64_t cols = t.cols();
            const int64_t in_row = t.bytes_per_row();
            const int64_t out_row = row_bytes(p.type, cols);
            buffer.resize(static_cast<size_t>(out_row * t.rows()));
            pool.parallel_for(t.rows(), [&](int64_t begin, int64_t end) {
                std::vector<float> row(static_cast<size_t>(cols));
                for (int64_t k = begin; k < end; ++k) {
                    dequantize_row(t.type, t.data + k * in_row, row.data(), cols);
                    try {
                        quantize_row(p.type, row.data(), buffer.data() + k * out_row, cols);
                    } catch (const error& e) {
                        throw error(in_path + ": tensor '" + t.name + "' row " + std::to_string(k) + ": " + e.what());
                    }
                }
            });
            out.write_tensor(buffer);
            r.bytes_out = buffer.size();
        }
        summary.bytes_in += r.bytes_in;
        summary.bytes_out += r.bytes_out;
        if (p.type != p.wanted) ++summary.n_fallback;
        on_tensor(static_cast<const quantize_tensor_report&>(r));
    }
    summary.file_bytes_out = out.bytes_written();
    out.finish();
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return summary;
}

inline quantize_summary quantize_model(const std::string& in_path, const std::string& out_path,
                                       const quantize_scheme& scheme, const quantize_options& options = {}) {
    return quantize_model(in_path, out_path, scheme, options, [](const quantize_tensor_report&) {});
}

}  // namespace lumen
