// cmd_perplexity.cpp: `lumen perplexity -m FILE -f TEXT [-c CTX]`: perplexity over a text file as
// llama.cpp's llama-perplexity computes it (include/lumen/perplexity.hpp), with the running value
// after each chunk; with --kl-base REF.gguf also the KL divergence from that reference model and how
// often both pick the same most likely token.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <lumen/lumen.hpp>
#include <lumen/perplexity.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

struct perplexity_args {
    std::string model_path;
    std::string text_path;
    std::string base_path;
    int64_t ctx_size = 0;
    int64_t batch_size = 512;
    int64_t chunks = -1;
    int threads = 0;
    std::string cache_type = "f32";
};

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw error(path + ": cannot open the text file");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void run_perplexity(const perplexity_args& a) {
    const model m = model::load(a.model_path);
    // llama.cpp's default chunk is 512 tokens; a model trained on less gets its own context length
    const int64_t n_ctx = a.ctx_size > 0 ? a.ctx_size : std::min<int64_t>(512, m.config().n_ctx_train);
    const dtype kv_type = parse_cache_type(a.cache_type);
    context ctx(m, {.n_ctx = n_ctx, .n_batch = a.batch_size, .n_threads = a.threads, .kv_type = kv_type});
    std::unique_ptr<model> base_model;
    std::unique_ptr<context> base_ctx;
    if (!a.base_path.empty()) {
        base_model = std::make_unique<model>(model::load(a.base_path));
        base_ctx = std::make_unique<context>(*base_model, context_options{.n_ctx = n_ctx, .n_batch = a.batch_size,
                                                                          .n_threads = a.threads, .kv_type = kv_type});
    }

    const std::string text = read_text(a.text_path);
    const std::vector<int32_t> tokens = m.tokenizer().encode(text, true);
    if (base_model && base_model->tokenizer().encode(text, true) != tokens)
        throw error(a.base_path + ": its tokenizer splits the text differently from " + a.model_path + "'s");
    std::printf("perplexity: %s: %zu tokens, %lld chunks of n_ctx=%lld (the second half of each scored), %d threads%s%s\n",
                a.text_path.c_str(), tokens.size(), static_cast<long long>(static_cast<int64_t>(tokens.size()) / n_ctx),
                static_cast<long long>(n_ctx), ctx.backend().n_threads(), base_model ? ", base " : "",
                base_model ? a.base_path.c_str() : "");
    if (base_model) std::printf("chunk         PPL    base PPL    mean KLD   same top-1\n");
    std::fflush(stdout);

    perplexity_options options;
    options.n_ctx = n_ctx;
    options.max_chunks = a.chunks;
    const auto t0 = std::chrono::steady_clock::now();
    const perplexity_result r = measure_perplexity(ctx, base_ctx.get(), tokens, options, [&](const perplexity_result& p) {
        if (p.has_base)
            std::printf("%5lld %11.4f %11.4f %11.6f %11.2f%%\n", static_cast<long long>(p.n_chunks), p.ppl, p.base_ppl,
                        p.kld_mean, 100.0 * p.top1_agreement);
        else
            std::printf("[%lld]%.4f,", static_cast<long long>(p.n_chunks), p.ppl);
        std::fflush(stdout);
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!r.has_base) std::printf("\n");
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
    if (r.has_base) {
        std::printf("Base PPL: %.4f +/- %.5f\n", r.base_ppl, r.base_ppl_stderr);
        std::printf("Mean KLD: %.6g +/- %.3g\n", r.kld_mean, r.kld_stderr);
        std::printf("Maximum KLD: %.6g\n", r.kld_max);
        std::printf("Same top-1: %.3f +/- %.3f %%\n", 100.0 * r.top1_agreement, 100.0 * r.top1_stderr);
    }
    std::fprintf(stderr, "perplexity: %lld tokens scored in %lld chunks, %.2f s\n", static_cast<long long>(r.n_scored),
                 static_cast<long long>(r.n_chunks), seconds);
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
    auto a = std::make_shared<perplexity_args>();
    auto* cmd = app.add_subcommand("perplexity", "Perplexity of a model over a text file (llama.cpp's method); "
                                                 "with --kl-base, KL divergence from a reference model");
    cmd->add_option("-m,--model", a->model_path, "GGUF model file")->required();
    cmd->add_option("-f,--file", a->text_path, "Text file")->required();
    cmd->add_option("-c,--ctx-size", a->ctx_size, "Tokens per chunk (0 = 512, or the model's context if smaller)")
        ->capture_default_str();
    cmd->add_option("-b,--batch-size", a->batch_size, "Tokens per forward pass")->capture_default_str();
    cmd->add_option("--chunks", a->chunks, "Chunks to evaluate (-1 = all)")->capture_default_str();
    cmd->add_option("-t,--threads", a->threads, "CPU threads (0 = all)")->capture_default_str();
    cmd->add_option("--cache-type", a->cache_type, cache_type_help)->capture_default_str();
    cmd->add_option("--kl-base", a->base_path, "Reference model (e.g. the F32 or F16 original) for KL divergence");
    cmd->callback([a] { run_perplexity(*a); });
}

}  // namespace lumen::cli
