// cmd_convert.cpp: `lumen convert INPUT --tokenizer TOKFILE -o OUT.gguf`: turns a llama2.c
// checkpoint (recognised by its header) and its tokenizer into a GGUF `llama` model.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

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
    {"f32", dtype::f32}, {"f16", dtype::f16}, {"bf16", dtype::bf16}, {"q8_0", dtype::q8_0}, {"q4_0", dtype::q4_0}};

// A SentencePiece model is a protobuf whose first field is a piece (tag 0x0a); a llama2.c
// tokenizer.bin starts with a small u32 max_token_length.
vocabulary read_tokenizer_file(const std::string& path, int32_t n_vocab) {
    const detail::byte_source bytes = detail::byte_source::map_file(path);
    const bool is_protobuf = bytes.size() > 0 && std::to_integer<uint8_t>(bytes.data()[0]) == 0x0a;
    if (path.ends_with(".model") || is_protobuf) return read_sentencepiece_model(path);
    return read_llama2c_tokenizer(path, n_vocab);
}

void run_convert(const convert_args& a) {
    const auto type_it = out_types.find(a.outtype);
    if (type_it == out_types.end()) throw error("--outtype '" + a.outtype + "' is not one of f32, f16, bf16, q8_0, q4_0");
    if (std::filesystem::is_directory(a.input))
        throw error(a.input + ": is a directory; converting Hugging Face folders is not supported yet "
                    "(this version converts llama2.c .bin checkpoints)");
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
    out.set("general.file_type", static_cast<uint32_t>(type_it->second == dtype::f32 ? 0 : type_it->second == dtype::f16 ? 1
                                                       : type_it->second == dtype::q4_0 ? 2 : type_it->second == dtype::q8_0 ? 7 : 32));
    add_vocabulary(out, vocab);
    out.write(a.output);
    std::fprintf(stderr, "lumen: converted %s (llama2.c v%d: dim %d, %d layers, %d heads, %d kv heads, vocab %d) to %s (%s)\n",
                 a.input.c_str(), h.version, h.dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, a.output.c_str(),
                 a.outtype.c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
    auto a = std::make_shared<convert_args>();
    auto* cmd = app.add_subcommand("convert", "Convert a llama2.c checkpoint (.bin) and its tokenizer to GGUF");
    cmd->add_option("input", a->input, "llama2.c checkpoint (.bin, v0 or v1 float32)")->required();
    cmd->add_option("--tokenizer", a->tokenizer_path, "tokenizer.model (SentencePiece) or llama2.c tokenizer.bin");
    cmd->add_option("-o,--output", a->output, "Output GGUF file")->required();
    cmd->add_option("--outtype", a->outtype, "Type of the weight matrices: f32, f16, bf16, q8_0, q4_0")->capture_default_str();
    cmd->add_option("--name", a->name, "general.name to store (default: the input's file name)");
    cmd->callback([a] { run_convert(*a); });
}

}  // namespace lumen::cli
