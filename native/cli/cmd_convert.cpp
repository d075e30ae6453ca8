// cmd_convert.cpp: `lumen convert INPUT -o OUT.gguf [--outtype TYPE]`: turns a Hugging Face Llama
// folder (config.json, *.safetensors, tokenizer.model or tokenizer.json), or a llama2.c checkpoint
// (recognised by its header) and its tokenizer, into a GGUF `llama` model.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <lumen/convert/hf_llama.hpp>
#include <lumen/convert/llama2c.hpp>
#include <lumen/convert/llama2c_tokenizer.hpp>
#include <lumen/convert/sentencepiece_model.hpp>
#include <lumen/convert/vocabulary_writer.hpp>
#include <lumen/detail/mapped_file.hpp>
#include <lumen/gguf_writer.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

struct convert_args {
    std::string input;
    std::string tokenizer_path;
    std::string output;
    std::string outtype = "f32";
    std::string name;
};

const std::map<std::string, dtype> out_types{
    {"f32", dtype::f32},   {"f16", dtype::f16},   {"bf16", dtype::bf16}, {"q8_0", dtype::q8_0},
    {"q4_0", dtype::q4_0}, {"q4_k", dtype::q4_k}, {"q6_k", dtype::q6_k}};

// A SentencePiece model is a protobuf whose first field is a piece (tag 0x0a); a llama2.c
// tokenizer.bin starts with a small u32 max_token_length.
vocabulary read_tokenizer_file(const std::string& path, int32_t n_vocab) {
    const detail::byte_source bytes = detail::byte_source::map_file(path);
    const bool is_protobuf = bytes.size() > 0 && std::to_integer<uint8_t>(bytes.data()[0]) == 0x0a;
    if (path.ends_with(".model") || is_protobuf) return read_sentencepiece_model(path);
    return read_llama2c_tokenizer(path, n_vocab);
}

void convert_hf_folder(const convert_args& a, dtype outtype) {
    hf_convert_options options;
    options.outtype = outtype;
    options.name = a.name;
    options.tokenizer_path = a.tokenizer_path;
    const hf_llama_config c = convert_hf_llama_file(a.input, a.output, options);
    std::fprintf(stderr,
                 "lumen: converted %s (%s, %s: dim %lld, %lld layers, %lld heads, %lld kv heads, vocab %lld) to %s (%s)\n",
                 a.input.c_str(), c.architecture.c_str(), c.torch_dtype.empty() ? "dtype unknown" : c.torch_dtype.c_str(),
                 static_cast<long long>(c.hidden_size), static_cast<long long>(c.n_layers),
                 static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads),
                 static_cast<long long>(c.vocab_size), a.output.c_str(), a.outtype.c_str());
}

void run_convert(const convert_args& a) {
    const auto type_it = out_types.find(a.outtype);
    if (type_it == out_types.end())
        throw error("--outtype '" + a.outtype + "' is not one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k");
    if (std::filesystem::is_directory(a.input)) return convert_hf_folder(a, type_it->second);
    {
        const detail::byte_source bytes = detail::byte_source::map_file(a.input);
        if (!looks_like_llama2c(bytes.data(), bytes.size()))
            throw error(a.input + ": not a recognised checkpoint (expected a llama2.c .bin: a header of 7 int32 "
                        "hyperparameters, or the 'ak42' magic of version 1)");
    }
    if (a.tokenizer_path.empty()) throw error("--tokenizer is required for a llama2.c checkpoint (tokenizer.bin or tokenizer.model)");

    gguf_writer out;
    const llama2c_header h = convert_llama2c_weights(a.input, out, type_it->second);
    vocabulary vocab = read_tokenizer_file(a.tokenizer_path, h.vocab_size);
    if (vocab.size() != h.vocab_size)
        throw error(a.tokenizer_path + ": the tokenizer has " + std::to_string(vocab.size()) + " tokens but " + a.input +
                    " has a vocabulary of " + std::to_string(h.vocab_size));
    out.set_string("general.name", a.name.empty() ? std::filesystem::path(a.input).stem().string() : a.name);
    out.set("general.file_type", llama_file_type(type_it->second));
    add_vocabulary(out, vocab);
    out.write(a.output);
    std::fprintf(stderr, "lumen: converted %s (llama2.c v%d: dim %d, %d layers, %d heads, %d kv heads, vocab %d) to %s (%s)\n",
                 a.input.c_str(), h.version, h.dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, a.output.c_str(),
                 a.outtype.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
    auto a = std::make_shared<convert_args>();
    auto* cmd = app.add_subcommand(
        "convert",
        "Convert a Hugging Face Llama/Mistral folder, or a llama2.c checkpoint (.bin) and its tokenizer, to GGUF");
    cmd->footer(
        "\nHugging Face: INPUT is a folder with config.json (LlamaForCausalLM, or MistralForCausalLM without a\n"
        "sliding window), model.safetensors or model-*-of-*.safetensors with model.safetensors.index.json\n"
        "(F32, F16 or BF16), and tokenizer.model or a SentencePiece-style tokenizer.json (BPE with\n"
        "byte_fallback), plus tokenizer_config.json if present. Q/K rows are permuted to GGUF's RoPE layout.\n"
        "  lumen convert ./TinyLlama-1.1B-Chat-v1.0 -o tinyllama.gguf --outtype q8_0\n"
        "llama2.c: INPUT is a .bin checkpoint (v0 or v1 float32) and --tokenizer is required.\n"
        "  lumen convert stories260K.bin --tokenizer tok512.model -o stories260K.gguf");
    cmd->add_option("input", a->input, "Hugging Face model folder, or llama2.c checkpoint (.bin)")->required();
    cmd->add_option("--tokenizer", a->tokenizer_path,
                    "tokenizer.model (SentencePiece), tokenizer.json, or llama2.c tokenizer.bin; for a folder, "
                    "overrides its own tokenizer");
    cmd->add_option("-o,--output", a->output, "Output GGUF file")->required();
    cmd->add_option("--outtype", a->outtype,
                    "Type of the weight matrices: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k (rows that do not fill "
                    "the type's blocks: q4_k/q6_k -> q8_0, then f16; for llama2.c input: f32)")->capture_default_str();
    cmd->add_option("--name", a->name, "general.name to store (default: the input's folder or file name)");
    cmd->callback([a] { run_convert(*a); });
}

}  // namespace lumen::cli
