// cmd_bench.cpp: `lumen bench`: prompt processing (ppN) and token generation (tgN) speed, as
// llama-bench measures them, on a GGUF file or on a random-weight model of a named shape; with the
// effective memory bandwidth of token generation next to the machine's measured read bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <lumen/lumen.hpp>

#include "bench_machine.hpp"
#include "bench_random_model.hpp"
#include "commands.hpp"

namespace lumen::cli {
namespace {

using namespace lumen::cli::bench;

struct bench_args {
    std::string model_path;
    std::string shape;
    std::string type = "q4_0";
    std::vector<int> n_prompt{512};
    std::vector<int> n_gen{128};
    std::vector<int> threads;
    int repetitions = 5;
    int batch_size = 512;
    bool keep = false;
    std::string output = "md";
    double idle_threshold = 0.25;
    double idle_wait = 30;
    bool no_bandwidth = false;
    int bandwidth_passes = 10;
    int bandwidth_mib = 0;
    bool pool = false;
    bool no_repack = false;
    std::string cache_type = "f32";
};

struct stats {
    double mean = 0, stddev = 0, median = 0;
};

stats summarize(std::vector<double> v) {
    stats s;
    if (v.empty()) return s;
    for (double x : v) s.mean += x;
    s.mean /= static_cast<double>(v.size());
    for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
    s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

dtype parse_type(const std::string& name) {
    std::string upper = name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const dtype_traits& t : all_dtypes)
        if (t.name == upper) {
            if (!t.supported) throw error("bench: --type " + name + ": lumen cannot compute with " + upper);
            if (!cpu::default_kernels().find(t.type))
                std::fprintf(stderr, "lumen bench: note: %s has no dedicated CPU kernel yet; it runs through the generic "
                             "(dequantize, then F32) kernel\n", upper.c_str());
            return t.type;
        }
    throw error("bench: unknown --type '" + name + "' (f32, f16, bf16, q8_0, q4_0, ...)");
}

// The model's type as llama-bench names it (from the file type): the type of the layers' matrices.
std::string main_type(const model& m) { return std::string(dtype_name(m.weights().layers.at(0).w_gate->type)); }

// Bytes of weights one generated token reads: every tensor once, but of the embedding table one
// row (unless it is also the output head).
uint64_t bytes_per_token(const model& m) {
    const tensor_view& embd = *m.weights().token_embd;
    uint64_t n = m.n_weight_bytes() - embd.n_bytes + static_cast<uint64_t>(embd.bytes_per_row());
    if (m.weights().output == &embd) n += embd.n_bytes;
    return n;
}

std::string human_bytes(double b) {
    char buf[32];
    if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
    return buf;
}

std::string human_count(double n) {
    char buf[32];
    if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
    else std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
    return buf;
}

struct row {
    std::string test;
    int threads;
    stats tps;
    double gbps = 0;      // tg only: bytes per token * median t/s
    double read_gbps = 0;  // tg only: the median of the read bandwidths measured before each repetition
    double bw_fraction = 0;  // tg only: the median over repetitions of its tg GB/s / the bandwidth before it
    double other_load = 0;
};

// One timed run: pp = the prompt in batches of n_batch, from an empty cache; tg = n tokens one by one
// from an empty cache. Tokens are random (BOS first); nothing is sampled or detokenized.
double run_once(context& ctx, bool prompt, int n, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(ctx.n_vocab() - 1));
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int32_t& t : tokens) t = pick(rng);
    tokens[0] = ctx.model().tokenizer().bos();
    ctx.reset();
    const auto t0 = clock::now();
    if (prompt) {
        (void)ctx.decode(tokens);
    } else {
        for (int32_t t : tokens) (void)ctx.decode(std::span<const int32_t>(&t, 1));
    }
    return seconds_since(t0);
}

void print_pool_overhead(const std::vector<int>& thread_counts) {
    std::printf("thread pool: time per parallel_for (best of 5 x 20000 calls, trivial items)\n\n");
    std::printf("| threads | items | ns per call |\n|---:|---:|---:|\n");
    for (int t : thread_counts)
        for (int64_t items : {int64_t{1}, int64_t{t}, int64_t{64}})
            std::printf("| %d | %lld | %.0f |\n", t, static_cast<long long>(items), pool_overhead_ns(t, items, 20000));
    std::printf("\n");
}

void run_bench(bench_args& a) {
    if (a.pool && a.model_path.empty() && a.shape.empty()) {  // only the pool overhead
        if (a.threads.empty()) a.threads = {1, 2};
        print_pool_overhead(a.threads);
        return;
    }
    if (a.model_path.empty() == a.shape.empty()) throw error("bench: give either -m FILE or --shape NAME");
    if (a.repetitions < 1) throw error("bench: -r must be at least 1");
    if (a.threads.empty()) a.threads = {static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
    for (int t : a.threads)
        if (t < 1) throw error("bench: thread counts must be at least 1");
    for (int n : a.n_prompt)
        if (n < 0) throw error("bench: -p values must be >= 0");
    for (int n : a.n_gen)
        if (n < 0) throw error("bench: -n values must be >= 0");
    const bool md = a.output == "md";
    if (!md && a.output != "csv") throw error("bench: -o must be md or csv");

    if (a.pool) print_pool_overhead(a.threads);

    // The model: a file, or a random model of a named shape written to $TMPDIR.
    std::string path = a.model_path, label;
    bool remove_after = false;
    if (!a.shape.empty()) {
        const model_shape& shape = find_shape(a.shape);
        const dtype type = parse_type(a.type);
        const char* tmp = std::getenv("TMPDIR");
        std::string name = "lumen-bench-" + std::string(shape.name) + "-" + std::string(dtype_name(type));
        if (!a.keep) name += "-" + std::to_string(getpid());
        path = (std::filesystem::path(tmp && *tmp ? tmp : "/tmp") / (name + ".gguf")).string();
        if (!(a.keep && std::filesystem::exists(path))) {
            const auto t0 = clock::now();
            std::fprintf(stderr, "lumen bench: writing a random %s model (%s) to %s ...\n", shape.name,
                         std::string(dtype_name(type)).c_str(), path.c_str());
            write_random_model(path, shape, type);
            std::fprintf(stderr, "lumen bench: written in %.1f s\n", seconds_since(t0));
        }
        remove_after = !a.keep;
        label = std::string(shape.name) + " shape";
    }
    struct remover {
        std::string path;
        bool active;
        ~remover() {
            std::error_code ec;
            if (active) std::filesystem::remove(path, ec);
        }
    } cleanup{path, remove_after};

    const model m = model::load(path);
    if (label.empty()) label = m.config().name.empty() ? std::filesystem::path(path).filename().string() : m.config().name;
    const uint64_t per_token = bytes_per_token(m);

    // The machine: is it idle, and what read bandwidth does it have?
    const double load = wait_for_idle(a.idle_threshold, a.idle_wait);
    if (load >= a.idle_threshold)
        std::fprintf(stderr,
                     "lumen bench: WARNING: THE MACHINE IS BUSY: other processes use %.2f of %d CPUs (waited up to %.0f s "
                     "for them to finish). Figures below are slowed down and noisy; see the 'other CPUs' column.\n",
                     load, other_load_meter::n_cpus(), a.idle_wait);
    // The read bandwidth at the start, with the most threads of any test (and again before each tg
    // repetition, with the test's).
    const int64_t bw_bytes = a.bandwidth_mib > 0 ? int64_t{a.bandwidth_mib} << 20
                                                 : std::max<int64_t>(int64_t{1} << 30, 4 * l3_cache_bytes());
    const bandwidth bw = a.no_bandwidth ? bandwidth{}
                                        : measure_read_bandwidth(*std::max_element(a.threads.begin(), a.threads.end()),
                                                                 bw_bytes, a.bandwidth_passes);

    std::printf("lumen bench: %s, %d CPUs, kernels %s, load of other processes before start %.2f CPUs\n",
                cpu_name().c_str(), other_load_meter::n_cpus(), cpu::simd_name(), load);
    if (bw.gb_per_s > 0)
        std::printf("memory read bandwidth: %.1f GB/s (%d threads, %s buffer, best of %d)\n", bw.gb_per_s, bw.threads,
                    human_bytes(static_cast<double>(bw.buffer_bytes)).c_str(), bw.passes);
    std::printf("weights read per generated token: %s\n\n", human_bytes(static_cast<double>(per_token)).c_str());
    if (md) {
        std::printf("| model | type | size | params | backend | threads | test | t/s | median t/s | tg GB/s | read GB/s | %% of read BW | other CPUs |\n");
        std::printf("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        std::printf("model,type,size_bytes,params,backend,threads,test,tps_mean,tps_stddev,tps_median,tg_gbps,bw_gbps,other_cpus,bw_fraction\n");
    }
    std::fflush(stdout);

    const std::string type = main_type(m);
    const dtype kv_type = parse_cache_type(a.cache_type);
    const std::string backend = std::string("CPU ") + cpu::simd_name() + (a.no_repack ? " no-repack" : "") +
                                (kv_type == dtype::f16 ? " f16-KV" : "");
    std::mt19937 rng(1234);
    for (int threads : a.threads) {
        const int max_p = a.n_prompt.empty() ? 0 : *std::max_element(a.n_prompt.begin(), a.n_prompt.end());
        const int max_n = a.n_gen.empty() ? 0 : *std::max_element(a.n_gen.begin(), a.n_gen.end());
        context ctx(m, {.n_ctx = std::max(16, std::max(max_p, max_n)), .n_batch = a.batch_size, .n_threads = threads,
                                 .repack = !a.no_repack, .kv_type = kv_type});
        std::vector<std::pair<bool, int>> tests;
        for (int p : a.n_prompt)
            if (p > 0) tests.push_back({true, p});
        for (int n : a.n_gen)
            if (n > 0) tests.push_back({false, n});
        for (const auto& [prompt, n] : tests) {
            // tg: the read bandwidth again just before each repetition, so that each repetition's
            // t/s is compared with the bandwidth of the same moment (a shared machine's drifts by
            // tens of percent within minutes)
            std::optional<read_bandwidth_meter> bw_meter;
            if (!prompt && !a.no_bandwidth) bw_meter.emplace(threads, bw_bytes);
            (void)run_once(ctx, prompt, prompt ? n : std::min(n, 4), rng);  // warm-up: pages in, scratch sized
            other_load_meter meter;
            meter.start();
            std::vector<double> tps, read_gbps, fractions;
            for (int r = 0; r < a.repetitions; ++r) {
                if (bw_meter) read_gbps.push_back(bw_meter->measure(a.bandwidth_passes).gb_per_s);
                tps.push_back(n / run_once(ctx, prompt, n, rng));
                if (bw_meter) fractions.push_back(static_cast<double>(per_token) * tps.back() / 1e9 / read_gbps.back());
            }
            row rw;
            rw.test = (prompt ? "pp" : "tg") + std::to_string(n);
            rw.threads = threads;
            rw.tps = summarize(tps);
            rw.other_load = meter.stop();
            if (!prompt) rw.gbps = static_cast<double>(per_token) * rw.tps.median / 1e9;
            rw.read_gbps = summarize(read_gbps).median;
            rw.bw_fraction = summarize(fractions).median;
            if (rw.other_load >= a.idle_threshold)
                std::fprintf(stderr, "lumen bench: WARNING: other processes used %.2f CPUs during %s (%d threads)\n",
                             rw.other_load, rw.test.c_str(), threads);
            const double size = static_cast<double>(m.n_weight_bytes());
            if (md) {
                char gb[32] = "", read[32] = "", frac[32] = "";
                if (!prompt) std::snprintf(gb, sizeof gb, "%.1f", rw.gbps);
                if (rw.read_gbps > 0) {
                    std::snprintf(read, sizeof read, "%.1f", rw.read_gbps);
                    std::snprintf(frac, sizeof frac, "%.0f%%", 100.0 * rw.bw_fraction);
                }
                std::printf("| %s | %s | %s | %s | %s | %d | %s | %.2f ± %.2f | %.2f | %s | %s | %s | %.2f |\n",
                            label.c_str(), type.c_str(), human_bytes(size).c_str(),
                            human_count(static_cast<double>(m.n_params())).c_str(), backend.c_str(), threads,
                            rw.test.c_str(), rw.tps.mean, rw.tps.stddev, rw.tps.median, gb, read, frac, rw.other_load);
            } else {
                std::printf("%s,%s,%.0f,%lld,%s,%d,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f\n", label.c_str(), type.c_str(), size,
                            static_cast<long long>(m.n_params()), backend.c_str(), threads, rw.test.c_str(), rw.tps.mean,
                            rw.tps.stddev, rw.tps.median, rw.gbps, rw.read_gbps, rw.other_load, rw.bw_fraction);
            }
            std::fflush(stdout);
        }
    }
}

}  // namespace

void add_bench_command(CLI::App& app) {
    auto a = std::make_shared<bench_args>();
    auto* cmd = app.add_subcommand("bench", "Measure prompt processing and token generation speed (like llama-bench)");
    cmd->footer(
        "Tests: ppN processes an N-token prompt in batches of -b from an empty cache; tgN generates N tokens one at\n"
        "a time from an empty cache. Tokens are random; tokenization and sampling are not timed. Each test runs once\n"
        "to warm up, then -r times; t/s is mean ± sample standard deviation, and the median.\n"
        "tg GB/s = bytes of weights read per token (every tensor once, one row of the embedding) x median t/s;\n"
        "'read GB/s' is the memory read bandwidth, the limit of tg, measured in-process just before each tg\n"
        "repetition (AVX2 loads, the test's thread count, a buffer of max(1 GiB, 4 x L3), best of\n"
        "--bandwidth-passes; the column shows the median), and '% of read BW' the median over repetitions of\n"
        "bytes per token x the repetition's t/s / the bandwidth measured just before it (csv: bw_fraction).\n"
        "Models that fit in the last-level cache can exceed 100%.\n"
        "Busy machines: before measuring, the CPU load of other processes is sampled each second (/proc/stat) for up\n"
        "to --idle-wait s until it falls below --idle-threshold CPUs; if it does not, a warning goes to stderr. The\n"
        "'other CPUs' column is the load of other processes during each test.\n"
        "--shape writes a random-weight llama model with that shape (vocabulary 32000) to $TMPDIR (default /tmp)\n"
        "and removes it afterwards (--keep keeps and reuses it). With a quantized --type, output.weight is stored as\n"
        "llama.cpp's llama-quantize stores it: Q6_K when rows are a multiple of 256 and the kernels have Q6_K, else Q8_0.\n"
        "Examples:\n"
        "  lumen bench -m model.gguf -p 512 -n 128 -t 2 -r 5\n"
        "  lumen bench --shape tinyllama-1.1B --type q4_0 -t 1,2\n"
        "  lumen bench --shape stories15M --type f32 --pool");
    cmd->add_option("-m,--model", a->model_path, "GGUF model file");
    cmd->add_option("--shape", a->shape, "Random-weight model of this shape: stories260K, stories15M, stories110M, tinyllama-1.1B");
    cmd->add_option("--type", a->type, "Weight type of the --shape model: f32, f16, bf16, q8_0, q4_0 (and any type the kernels support)")
        ->capture_default_str();
    cmd->add_option("-p,--n-prompt", a->n_prompt, "Prompt lengths for ppN tests (comma-separated; 0 = none)")
        ->delimiter(',')->capture_default_str();
    cmd->add_option("-n,--n-gen", a->n_gen, "Generated tokens for tgN tests (comma-separated; 0 = none)")
        ->delimiter(',')->capture_default_str();
    cmd->add_option("-t,--threads", a->threads, "Thread counts (comma-separated; default: all hardware threads)")->delimiter(',');
    cmd->add_option("-r,--repetitions", a->repetitions, "Timed repetitions of each test")->capture_default_str();
    cmd->add_option("-b,--batch-size", a->batch_size, "Prompt tokens per forward pass")->capture_default_str();
    cmd->add_option("-o,--output", a->output, "Table format: md or csv")->capture_default_str();
    cmd->add_flag("--keep", a->keep, "Keep the --shape model in $TMPDIR and reuse it next time");
    cmd->add_option("--idle-threshold", a->idle_threshold, "CPUs other processes may use for the machine to count as idle")
        ->capture_default_str();
    cmd->add_option("--idle-wait", a->idle_wait, "Seconds to wait for an idle machine before measuring anyway")->capture_default_str();
    cmd->add_flag("--no-bandwidth", a->no_bandwidth, "Do not measure the memory read bandwidth");
    cmd->add_option("--bandwidth-passes", a->bandwidth_passes, "Passes over the buffer (best one counts)")->capture_default_str();
    cmd->add_option("--bandwidth-mib", a->bandwidth_mib, "Bandwidth buffer size in MiB (default max(1 GiB, 4 x L3))");
    cmd->add_flag("--no-repack", a->no_repack, "Kernels read the weights as stored: Q8_0, Q4_0 (AVX2, AVX-512), Q4_K and Q6_K (AVX-512) are not repacked");
    cmd->add_option("--cache-type", a->cache_type, cache_type_help)->capture_default_str();
    cmd->add_flag("--pool", a->pool, "Also print the thread pool's time per parallel_for");
    cmd->callback([a] { run_bench(*a); });
}

}  // namespace lumen::cli
