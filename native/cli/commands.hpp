// commands.hpp: the subcommands of the `lumen` tool. Each lives in its own file and registers
// itself with CLI11; main.cpp turns lumen::error into a message and a non-zero exit.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include <lumen/error.hpp>
#include <lumen/tensor.hpp>

namespace lumen::cli {

// The KV cache type of --cache-type: "f32" or "f16".
inline dtype parse_cache_type(const std::string& name) {
    if (name == "f32") return dtype::f32;
    if (name == "f16") return dtype::f16;
    throw error("--cache-type: expected f32 or f16, got '" + name + "'");
}
inline constexpr const char* cache_type_help =
    "KV cache type: f32 (exact) or f16 (half the memory and the reads, as llama.cpp's default)";

void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace lumen::cli
