// cmd_quantize.cpp: `lumen quantize IN.gguf OUT.gguf TYPE`: rewrites a model with its matrices in
// another type (include/lumen/quantize.hpp), one line per tensor, like llama-quantize.
#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include <lumen/quantize.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

struct quantize_args {
    std::string input;
    std::string output;
    std::string type;
    int threads = 0;
};

std::string shape_of(const tensor_view& t) {
    std::string s;
    for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? " x " : "") + std::to_string(t.ne[d]);
    return s;
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

void run_quantize(const quantize_args& a) {
    const quantize_scheme& scheme = find_quantize_scheme(a.type);
    quantize_options options;
    options.n_threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::printf("lumen: quantizing %s to %s as %s (file type %u), %d threads\n", a.input.c_str(), a.output.c_str(),
                std::string(scheme.name).c_str(), scheme.file_type, options.n_threads);
    const quantize_summary s = quantize_model(a.input, a.output, scheme, options, [](const quantize_tensor_report& r) {
        const tensor_view& t = *r.plan->source;
        std::printf("[%3zu/%3zu] %-32s %-14s %-5s -> %-5s %10llu -> %10llu bytes%s%s\n", r.index + 1, r.count,
                    t.name.c_str(), shape_of(t).c_str(), std::string(dtype_name(t.type)).c_str(),
                    std::string(dtype_name(r.plan->type)).c_str(), static_cast<unsigned long long>(r.bytes_in),
                    static_cast<unsigned long long>(r.bytes_out), r.plan->reason.empty() ? "" : "  (",
                    r.plan->reason.empty() ? "" : (r.plan->reason + ")").c_str());
        std::fflush(stdout);
    });
    std::printf("lumen: tensor data %.2f MiB -> %.2f MiB, file %.2f MiB -> %.2f MiB (%.1f%%), %zu tensors, %zu fallbacks, "
                "%.2f s\n",
                mib(s.bytes_in), mib(s.bytes_out), mib(s.file_bytes_in), mib(s.file_bytes_out),
                s.file_bytes_in ? 100.0 * static_cast<double>(s.file_bytes_out) / static_cast<double>(s.file_bytes_in) : 0.0,
                s.n_tensors, s.n_fallback, s.seconds);
}

}  // namespace

void add_quantize_command(CLI::App& app) {
    auto a = std::make_shared<quantize_args>();
    std::string types;
    for (const quantize_scheme& s : quantize_schemes) types += (types.empty() ? "" : ", ") + std::string(s.name);
    auto* cmd = app.add_subcommand("quantize", "Rewrite a GGUF model with its weight matrices in another type");
    cmd->add_option("input", a->input, "Input GGUF file")->required();
    cmd->add_option("output", a->output, "Output GGUF file")->required();
    cmd->add_option("type", a->type, "Target: " + types + " (Q4_K_M: llama.cpp's mix)")->required();
    cmd->add_option("-t,--threads", a->threads, "Threads (0 = all)")->capture_default_str();
    cmd->callback([a] { run_quantize(*a); });
}

}  // namespace lumen::cli
