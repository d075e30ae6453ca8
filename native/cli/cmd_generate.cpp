// cmd_generate.cpp: `lumen generate`: streams a continuation of a prompt to stdout (the prompt,
// then the generated text, nothing else); load time and speeds go to stderr.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include <lumen/lumen.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

struct generate_args {
    std::string model_path;
    std::string prompt;
    std::string prompt_file;
    int32_t n_predict = 128;
    int64_t seed = -1;
    int threads = 0;
    int64_t ctx_size = 0;
    int64_t batch_size = 512;
    bool no_bos = false;
    bool ignore_eos = false;
    bool no_repack = false;
    std::string cache_type = "f32";
    sampler_options sampling;
};

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw error(path + ": cannot open the prompt file");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void check_sampling(const sampler_options& s) {
    if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) throw error("--top-p must be in (0, 1], got " + std::to_string(s.top_p));
    if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) throw error("--min-p must be in [0, 1], got " + std::to_string(s.min_p));
    if (s.top_k < 0) throw error("--top-k must be >= 0 (0 = off), got " + std::to_string(s.top_k));
    if (!(s.repeat_penalty > 0.0f)) throw error("--repeat-penalty must be > 0, got " + std::to_string(s.repeat_penalty));
    if (!(s.temperature >= 0.0f)) throw error("--temp must be >= 0, got " + std::to_string(s.temperature));
}

void run_generate(generate_args& a) {
    if (!a.prompt_file.empty()) a.prompt = read_text_file(a.prompt_file);
    check_sampling(a.sampling);
    if (a.seed < 0) a.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    a.sampling.seed = static_cast<uint64_t>(a.seed);

    const auto t0 = std::chrono::steady_clock::now();
    const model m = model::load(a.model_path);
    context ctx(m, {.n_ctx = a.ctx_size, .n_batch = a.batch_size, .n_threads = a.threads, .repack = !a.no_repack,
                    .kv_type = parse_cache_type(a.cache_type)});
    const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "lumen: %s: %s, %.2f M parameters, n_ctx %lld, %d threads, seed %lld, loaded in %.3f s\n",
                 a.model_path.c_str(), m.config().architecture.c_str(), static_cast<double>(m.n_params()) / 1e6,
                 static_cast<long long>(ctx.n_ctx()), ctx.backend().n_threads(), static_cast<long long>(a.seed),
                 load_seconds);

    generate_options options;
    options.n_predict = a.n_predict;
    options.sampling = a.sampling;
    options.add_bos = !a.no_bos;
    options.ignore_eos = a.ignore_eos;

    std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
    std::fflush(stdout);
    const generation_stats stats = generate(ctx, a.prompt, options, [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
    });
    std::fprintf(stderr, "\n");
    if (stats.context_full) std::fprintf(stderr, "lumen: stopped: the context of %lld positions is full\n", static_cast<long long>(ctx.n_ctx()));
    auto rate = [](int64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
    std::fprintf(stderr, "lumen: load %.3f s | prompt %lld tokens, %.3f s, %.1f tokens/s | generation %lld tokens, %.3f s, %.1f tokens/s\n",
                 load_seconds, static_cast<long long>(stats.n_prompt_tokens), stats.prompt_seconds,
                 rate(stats.n_prompt_tokens, stats.prompt_seconds), static_cast<long long>(stats.n_generated),
                 stats.generate_seconds, rate(stats.n_generated, stats.generate_seconds));
}

}  // namespace

void add_generate_command(CLI::App& app) {
    auto a = std::make_shared<generate_args>();
    auto* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt and stream it to stdout");
    cmd->add_option("-m,--model", a->model_path, "GGUF model file")->required();
    cmd->add_option("-p,--prompt", a->prompt, "Prompt text (may be empty: start from BOS)");
    cmd->add_option("-f,--file", a->prompt_file, "Read the prompt from a file");
    cmd->add_option("-n,--n-predict", a->n_predict, "Tokens to generate (-1 = until end of text or a full context)")->capture_default_str();
    cmd->add_option("-s,--seed", a->seed, "Random seed (-1 = random; printed to stderr)")->capture_default_str();
    cmd->add_option("-t,--threads", a->threads, "CPU threads (0 = all)")->capture_default_str();
    cmd->add_option("-c,--ctx-size", a->ctx_size, "Context size in tokens (0 = the model's, at most 4096)")->capture_default_str();
    cmd->add_option("-b,--batch-size", a->batch_size, "Prompt tokens per forward pass")->capture_default_str();
    cmd->add_option("--temp", a->sampling.temperature, "Temperature (0 = greedy)")->capture_default_str();
    cmd->add_option("--top-k", a->sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
    cmd->add_option("--top-p", a->sampling.top_p, "Keep the smallest set with this much probability (1 = off)")->capture_default_str();
    cmd->add_option("--min-p", a->sampling.min_p, "Drop tokens less likely than min-p × the most likely (0 = off)")->capture_default_str();
    cmd->add_option("--repeat-penalty", a->sampling.repeat_penalty, "Penalise tokens seen in the last --repeat-last-n (1 = off)")->capture_default_str();
    cmd->add_option("--repeat-last-n", a->sampling.repeat_last_n, "How many recent tokens the penalty looks at")->capture_default_str();
    cmd->add_flag("--no-bos", a->no_bos, "Do not start the prompt with the BOS token");
    cmd->add_flag("--no-repack", a->no_repack, "Kernels read the weights as stored: Q8_0, Q4_0 (AVX2, AVX-512), Q4_K and Q6_K (AVX-512) are not repacked");
    cmd->add_option("--cache-type", a->cache_type, cache_type_help)->capture_default_str();
    cmd->add_flag("--ignore-eos", a->ignore_eos, "Keep generating after the end-of-sequence token");
    cmd->callback([a] { run_generate(*a); });
}

}  // namespace lumen::cli
