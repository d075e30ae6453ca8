// convert/hf_llama.hpp: converts a Hugging Face Llama folder (config.json, *.safetensors, the
// tokenizer) into the tensors and metadata of a GGUF `llama` model, named as llama.cpp names them.
//
// Hugging Face name                              GGUF name
//   model.embed_tokens.weight                    token_embd.weight
//   model.layers.N.input_layernorm.weight        blk.N.attn_norm.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj      blk.N.attn_{q,k,v,output}.weight
//   model.layers.N.post_attention_layernorm      blk.N.ffn_norm.weight
//   model.layers.N.mlp.{gate,up,down}_proj       blk.N.ffn_{gate,up,down}.weight
//   model.norm.weight                            output_norm.weight
//   lm_head.weight                               output.weight (absent when tied to the embedding)
//
// Hugging Face applies RoPE with rotate_half: dimension i of a head pairs with i + head_dim/2.
// GGUF `llama` pairs adjacent dimensions (2i, 2i+1), Meta's original layout. So the rows of
// q_proj (and k_proj, with the KV head count) are permuted per head, as convert_hf_to_gguf.py's
// `permute` does: reshape (n_head, 2, head_dim/2, cols) → swap axes 1 and 2 → (n_head*head_dim, cols).
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../gguf_stream_writer.hpp"
#include "../gguf_writer.hpp"
#include "../quant.hpp"
#include "../tensor_names.hpp"
#include "hf_tokenizer.hpp"
#include "json_file.hpp"
#include "safetensors.hpp"
#include "vocabulary_writer.hpp"

namespace lumen {

// The hyperparameters of config.json that the `llama` architecture uses.
struct hf_llama_config {
    std::string architecture;        // "LlamaForCausalLM" or "MistralForCausalLM"
    int64_t hidden_size = 0;         // dim
    int64_t intermediate_size = 0;   // SwiGLU width
    int64_t n_layers = 0;            // num_hidden_layers
    int64_t n_heads = 0;             // num_attention_heads
    int64_t n_kv_heads = 0;          // num_key_value_heads (default: n_heads)
    int64_t head_dim = 0;            // hidden_size / n_heads
    int64_t vocab_size = 0;
    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;      // transformers' LlamaConfig default
    double rope_theta = 10000.0;
    bool tie_word_embeddings = false;
    std::string torch_dtype;         // "float32", "float16", "bfloat16" or "" (informational)
};

struct hf_convert_options {
    dtype outtype = dtype::f32;      // type of the 2-D weights (see hf_matrix_type); norms stay F32
    std::string name;                // general.name; empty: the folder's name
    std::string tokenizer_path;      // overrides the folder's tokenizer.model / tokenizer.json
    bool permute_qk = true;          // false only in tests: shows the permutation matters
};

namespace detail {

inline void reject_unsupported_llama_keys(const json_file& cfg, const hf_llama_config& c) {
    if (const nlohmann::json* s = cfg.find("rope_scaling"))
        throw error(cfg.what("rope_scaling") + ": RoPE scaling " + s->dump() + " is not supported yet (expected null)");
    if (const auto act = cfg.find_string("hidden_act"); act && *act != "silu")
        throw error(cfg.what("hidden_act") + ": activation '" + *act + "' is not supported (expected silu)");
    for (const char* key : {"attention_bias", "mlp_bias"})
        if (cfg.find_bool(key).value_or(false)) throw error(cfg.what(key) + ": bias terms are not supported");
    if (cfg.find("quantization_config"))
        throw error(cfg.what("quantization_config") + ": pre-quantized checkpoints (GPTQ, AWQ, bitsandbytes) are not supported");
    if (const auto f = cfg.find_float("partial_rotary_factor"); f && *f != 1.0)
        throw error(cfg.what("partial_rotary_factor") + ": partial RoPE is not supported for LlamaForCausalLM");
    if (c.architecture == "MistralForCausalLM")
        if (const auto w = cfg.find_int("sliding_window"); w && *w < c.max_position_embeddings)
            throw error(cfg.what("sliding_window") + ": sliding-window attention (" + std::to_string(*w) +
                        " < max_position_embeddings " + std::to_string(c.max_position_embeddings) + ") is not supported");
}

inline std::string read_architecture(const json_file& cfg) {
    const nlohmann::json* a = cfg.find("architectures");
    if (!a || !a->is_array() || a->empty() || !(*a)[0].is_string())
        throw error(cfg.what("architectures") + ": missing or not a list of class names");
    const std::string arch = (*a)[0].get<std::string>();
    if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM")
        throw error(cfg.what("architectures") + ": '" + arch +
                    "' is not supported (supported: LlamaForCausalLM, MistralForCausalLM)");
    return arch;
}

}  // namespace detail

// Reads and checks config.json.
inline hf_llama_config read_hf_llama_config(const std::string& path) {
    const json_file cfg = json_file::read(path);
    hf_llama_config c;
    c.architecture = detail::read_architecture(cfg);
    constexpr int64_t max_dim = int64_t{1} << 20;
    c.hidden_size = cfg.get_int("hidden_size", 1, max_dim);
    c.intermediate_size = cfg.get_int("intermediate_size", 1, max_dim);
    c.n_layers = cfg.get_int("num_hidden_layers", 1, 4096);
    c.n_heads = cfg.get_int("num_attention_heads", 1, c.hidden_size);
    c.n_kv_heads = cfg.get_int("num_key_value_heads", 1, c.n_heads, c.n_heads);
    c.vocab_size = cfg.get_int("vocab_size", 1, int64_t{1} << 24);
    c.max_position_embeddings = cfg.get_int("max_position_embeddings", 1, int64_t{1} << 24, 2048);
    if (c.hidden_size % c.n_heads != 0)
        throw error(cfg.what("num_attention_heads") + ": hidden_size " + std::to_string(c.hidden_size) +
                    " is not divisible by " + std::to_string(c.n_heads));
    if (c.n_heads % c.n_kv_heads != 0)
        throw error(cfg.what("num_key_value_heads") + ": num_attention_heads " + std::to_string(c.n_heads) +
                    " is not a multiple of " + std::to_string(c.n_kv_heads));
    c.head_dim = c.hidden_size / c.n_heads;
    if (c.head_dim % 2 != 0) throw error(cfg.what("num_attention_heads") + ": the head size " + std::to_string(c.head_dim) + " is odd");
    if (const auto hd = cfg.find_int("head_dim"); hd && *hd != c.head_dim)
        throw error(cfg.what("head_dim") + ": " + std::to_string(*hd) + " differs from hidden_size / num_attention_heads = " +
                    std::to_string(c.head_dim) + ", which is not supported");
    c.rms_norm_eps = cfg.find_float("rms_norm_eps").value_or(c.rms_norm_eps);
    if (!(c.rms_norm_eps >= 0 && c.rms_norm_eps < 1)) throw error(cfg.what("rms_norm_eps") + ": expected a small non-negative number");
    c.rope_theta = cfg.find_float("rope_theta").value_or(c.rope_theta);
    if (!(c.rope_theta > 0)) throw error(cfg.what("rope_theta") + ": expected a positive number");
    c.tie_word_embeddings = cfg.find_bool("tie_word_embeddings").value_or(false);
    const char* dtype_key = cfg.find("torch_dtype") ? "torch_dtype" : "dtype";
    c.torch_dtype = cfg.find_string(dtype_key).value_or("");
    if (!c.torch_dtype.empty() && c.torch_dtype != "float32" && c.torch_dtype != "float16" && c.torch_dtype != "bfloat16")
        throw error(cfg.what(dtype_key) + ": '" + c.torch_dtype + "' is not supported (float32, float16 or bfloat16)");
    detail::reject_unsupported_llama_keys(cfg, c);
    return c;
}

// Rows of a (n_head * head_dim, cols) projection reordered from Hugging Face's rotate-half layout
// to adjacent pairs: new row (h, i, j) = old row (h, j, i) for i < head_dim/2, j in {0, 1}.
inline std::vector<float> permute_rope_rows(const std::vector<float>& w, int64_t n_head, int64_t head_dim, int64_t cols) {
    std::vector<float> out(w.size());
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_head; ++h)
        for (int64_t i = 0; i < half; ++i)
            for (int64_t j = 0; j < 2; ++j) {
                const float* src = w.data() + ((h * head_dim) + j * half + i) * cols;
                std::copy(src, src + cols, out.data() + ((h * head_dim) + 2 * i + j) * cols);
            }
    return out;
}

// llama.cpp's general.file_type (enum llama_ftype) for weights stored as `type`.
inline uint32_t llama_file_type(dtype type) {
    switch (type) {
        case dtype::f32: return 0;   // ALL_F32
        case dtype::f16: return 1;   // MOSTLY_F16
        case dtype::q4_0: return 2;  // MOSTLY_Q4_0
        case dtype::q8_0: return 7;  // MOSTLY_Q8_0
        case dtype::q4_k: return 14; // MOSTLY_Q4_K_S, "mostly Q4_K"
        case dtype::q6_k: return 18; // MOSTLY_Q6_K
        case dtype::bf16: return 32; // MOSTLY_BF16
        default: throw error("no llama.cpp file type for weights of type " + std::string(dtype_name(type)));
    }
}

// The type a (rows, cols) matrix is stored in when `wanted` was asked for: `wanted` when its rows
// fill whole blocks; else Q8_0 for Q4_K/Q6_K when they fill Q8_0 blocks, else F16 (the fallbacks
// of lumen quantize; llama.cpp's converter also writes F16 for rows Q8_0 cannot hold).
inline dtype hf_matrix_type(dtype wanted, int64_t cols) {
    if (cols % traits_of(wanted).block_size == 0) return wanted;
    if ((wanted == dtype::q4_k || wanted == dtype::q6_k) && cols % qk8_0 == 0) return dtype::q8_0;
    return dtype::f16;
}

// One tensor of the output: where it comes from and how it is stored.
struct hf_tensor_job {
    const safetensors_tensor* source = nullptr;
    std::string name;         // GGUF name
    int64_t rows = 1, cols = 0;  // a vector when rows == 1 and `is_vector`
    bool is_vector = false;   // 1-D, always F32
    int64_t rope_heads = 0;   // > 0: rows permuted from rotate-half to adjacent pairs
    dtype type = dtype::f32;  // the stored type

    std::vector<int64_t> ne() const { return is_vector ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows}; }
};

// Everything a conversion writes, checked before any tensor data is read: the metadata (with the
// vocabulary) and the tensor list, whose shapes match config.json.
struct hf_llama_conversion {
    hf_llama_config config;
    safetensors_checkpoint checkpoint;
    std::vector<std::pair<std::string, gguf_value>> metadata;
    std::vector<hf_tensor_job> tensors;
};

namespace detail {

// Builds the tensor list from the checkpoint, checking each shape; every checkpoint tensor must be
// used or deliberately skipped.
class hf_tensor_planner {
public:
    hf_tensor_planner(const safetensors_checkpoint& ckpt, dtype outtype) : ckpt_(ckpt), outtype_(outtype) {}

    // A (rows, cols) matrix; with rope_heads > 0, its rows are permuted for RoPE.
    void matrix(const std::string& hf_name, const std::string& name, int64_t rows, int64_t cols, int64_t rope_heads = 0) {
        jobs_.push_back({find(hf_name, {rows, cols}), name, rows, cols, false, rope_heads, hf_matrix_type(outtype_, cols)});
    }
    void vector(const std::string& hf_name, const std::string& name, int64_t n) {
        jobs_.push_back({find(hf_name, {n}), name, 1, n, true, 0, dtype::f32});
    }
    void skip(const std::string& hf_name) { used_.insert(hf_name); }

    std::vector<hf_tensor_job> finish(const std::string& architecture) {
        for (const safetensors_tensor* t : ckpt_.tensors()) {
            if (used_.count(t->name) || t->name.ends_with("rotary_emb.inv_freq")) continue;
            throw error(t->what() + " is not part of a " + architecture + " model that lumen converts");
        }
        return std::move(jobs_);
    }

private:
    const safetensors_tensor* find(const std::string& hf_name, const std::vector<int64_t>& shape) {
        const safetensors_tensor& t = ckpt_.get(hf_name);
        if (t.shape != shape) {
            safetensors_tensor expected;
            expected.shape = shape;
            throw error(t.what() + " has shape " + t.shape_string() + ", expected " + expected.shape_string() +
                        " from config.json");
        }
        if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16")
            throw error(t.what() + " has dtype " + t.dtype + ", which cannot be converted (supported: F32, F16, BF16)");
        used_.insert(hf_name);
        return &t;
    }

    const safetensors_checkpoint& ckpt_;
    dtype outtype_;
    std::vector<hf_tensor_job> jobs_;
    std::set<std::string> used_;
};

inline std::vector<hf_tensor_job> plan_llama_tensors(const safetensors_checkpoint& ckpt, const hf_llama_config& c,
                                                     const hf_convert_options& o) {
    namespace tn = tensor_names;
    hf_tensor_planner plan(ckpt, o.outtype);
    const int64_t dim = c.hidden_size, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t q_heads = o.permute_qk ? c.n_heads : 0, k_heads = o.permute_qk ? c.n_kv_heads : 0;
    plan.matrix("model.embed_tokens.weight", tn::token_embd, c.vocab_size, dim);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        auto blk = [&](const char* what) { return tn::block(l, what); };
        plan.vector(p + "input_layernorm.weight", blk(tn::attn_norm), dim);
        plan.matrix(p + "self_attn.q_proj.weight", blk(tn::attn_q), q_dim, dim, q_heads);
        plan.matrix(p + "self_attn.k_proj.weight", blk(tn::attn_k), kv_dim, dim, k_heads);
        plan.matrix(p + "self_attn.v_proj.weight", blk(tn::attn_v), kv_dim, dim);
        plan.matrix(p + "self_attn.o_proj.weight", blk(tn::attn_output), dim, q_dim);
        plan.vector(p + "post_attention_layernorm.weight", blk(tn::ffn_norm), dim);
        plan.matrix(p + "mlp.gate_proj.weight", blk(tn::ffn_gate), c.intermediate_size, dim);
        plan.matrix(p + "mlp.up_proj.weight", blk(tn::ffn_up), c.intermediate_size, dim);
        plan.matrix(p + "mlp.down_proj.weight", blk(tn::ffn_down), dim, c.intermediate_size);
    }
    plan.vector("model.norm.weight", tn::output_norm, dim);
    if (c.tie_word_embeddings)
        plan.skip("lm_head.weight");  // some tied checkpoints still store a copy
    else
        plan.matrix("lm_head.weight", tn::output, c.vocab_size, dim);
    return plan.finish(c.architecture);
}

inline void add_llama_metadata(gguf_writer& out, const hf_llama_config& c, const std::string& name, dtype outtype) {
    const std::string a = "llama.";
    out.set_string("general.architecture", "llama");
    out.set_string("general.type", "model");
    out.set_string("general.name", name);
    out.set("general.file_type", llama_file_type(outtype));
    out.set("general.quantization_version", uint32_t{2});
    out.set(a + "vocab_size", static_cast<uint32_t>(c.vocab_size));
    out.set(a + "context_length", static_cast<uint32_t>(c.max_position_embeddings));
    out.set(a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
    out.set(a + "block_count", static_cast<uint32_t>(c.n_layers));
    out.set(a + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
    out.set(a + "attention.head_count", static_cast<uint32_t>(c.n_heads));
    out.set(a + "attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
    out.set(a + "rope.freq_base", static_cast<float>(c.rope_theta));
    out.set(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
    out.set(a + "rope.dimension_count", static_cast<uint32_t>(c.head_dim));
}

inline std::string folder_name(const std::string& folder) {
    std::filesystem::path p = std::filesystem::path(folder).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    return p.filename().string();
}

}  // namespace detail

// Reads config.json, the tokenizer and the safetensors headers of a Hugging Face Llama folder and
// plans the output; reads no tensor data.
inline hf_llama_conversion plan_hf_llama(const std::string& folder, const hf_convert_options& o = {}) {
    namespace fs = std::filesystem;
    if (!fs::is_directory(folder)) throw error(folder + ": not a directory (expected a Hugging Face model folder)");
    const std::string config_path = (fs::path(folder) / "config.json").string();
    if (!fs::exists(config_path)) throw error(folder + ": no config.json (expected a Hugging Face model folder)");
    hf_llama_conversion conv{read_hf_llama_config(config_path), safetensors_checkpoint::open_folder(folder), {}, {}};
    vocabulary vocab = read_hf_vocabulary(folder, o.tokenizer_path);
    pad_vocabulary(vocab, conv.config.vocab_size, config_path);
    conv.tensors = detail::plan_llama_tensors(conv.checkpoint, conv.config, o);
    gguf_writer meta;
    detail::add_llama_metadata(meta, conv.config, o.name.empty() ? detail::folder_name(folder) : o.name, o.outtype);
    add_vocabulary(meta, vocab);
    conv.metadata = meta.metadata();
    return conv;
}

// The bytes of one output tensor: read as floats, permuted if asked, stored as job.type.
inline std::vector<std::byte> convert_hf_tensor(const hf_tensor_job& job) {
    std::vector<float> w = read_safetensors_floats(*job.source);
    if (job.rope_heads > 0) w = permute_rope_rows(w, job.rope_heads, job.rows / job.rope_heads, job.cols);
    const int64_t row_size = row_bytes(job.type, job.cols);
    std::vector<std::byte> bytes(static_cast<size_t>(row_size * job.rows));
    for (int64_t r = 0; r < job.rows; ++r)
        quantize_row(job.type, w.data() + r * job.cols, bytes.data() + r * row_size, job.cols);
    return bytes;
}

// Converts the folder into `out` (in memory).
inline hf_llama_config convert_hf_llama(const std::string& folder, gguf_writer& out, const hf_convert_options& o = {}) {
    const hf_llama_conversion conv = plan_hf_llama(folder, o);
    for (const auto& [key, value] : conv.metadata) out.set(key, value);
    for (const hf_tensor_job& job : conv.tensors) out.add_tensor(job.name, job.type, job.ne(), convert_hf_tensor(job));
    return conv.config;
}

// Converts the folder into the GGUF file `path`, one tensor at a time (memory: one tensor), so
// models larger than memory convert. The file appears only when complete.
inline hf_llama_config convert_hf_llama_file(const std::string& folder, const std::string& path,
                                             const hf_convert_options& o = {}) {
    const hf_llama_conversion conv = plan_hf_llama(folder, o);
    std::vector<gguf_stream_writer::tensor_info> infos;
    for (const hf_tensor_job& job : conv.tensors) infos.push_back({job.name, job.type, job.ne()});
    gguf_stream_writer out(path, conv.metadata, std::move(infos));
    for (const hf_tensor_job& job : conv.tensors) out.write_tensor(convert_hf_tensor(job));
    out.finish();
    return conv.config;
}

}  // namespace lumen
