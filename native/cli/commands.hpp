// commands.hpp: the subcommands of the `lumen` tool. Each lives in its own file and registers
// itself with CLI11; main.cpp turns lumen::error into a message and a non-zero exit.
#pragma once

#include <CLI/CLI.hpp>

namespace lumen::cli {

void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace lumen::cli
