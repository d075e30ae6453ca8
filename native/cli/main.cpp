// main.cpp: the `lumen` command-line tool: subcommands generate, info, tokenize, convert.
// The only place (with the web bindings) where errors become exit codes.
#include <cstdio>
#include <exception>
#include <iostream>

#include <lumen/error.hpp>

#include "commands.hpp"

int main(int argc, char** argv) {
    CLI::App app{"lumen: run GGUF transformer language models (llama family) on the CPU"};
    app.name("lumen");
    app.require_subcommand(1);
    lumen::cli::add_generate_command(app);
    lumen::cli::add_info_command(app);
    lumen::cli::add_tokenize_command(app);
    lumen::cli::add_convert_command(app);
    lumen::cli::add_quantize_command(app);
    lumen::cli::add_perplexity_command(app);
    lumen::cli::add_bench_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const lumen::error& e) {
        std::fflush(stdout);
        std::cerr << "lumen: error: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::cerr << "lumen: error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
