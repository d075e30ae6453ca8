// bench_machine.hpp: what `lumen bench` measures about the machine itself: the CPU's name, the
// memory read bandwidth (the physical limit of token generation), how busy the CPUs are with
// other processes, and the thread pool's cost per parallel_for.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <lumen/cpu/simd.hpp>
#include <lumen/cpu/thread_pool.hpp>

namespace lumen::cli::bench {

using clock = std::chrono::steady_clock;

inline double seconds_since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

// "model name" from /proc/cpuinfo, or "unknown CPU".
inline std::string cpu_name() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
        }
    return "unknown CPU";
}

// The last-level (L3) cache size in bytes, or 0 when unknown.
inline int64_t l3_cache_bytes() {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index3/size");
    std::string s;
    if (!(in >> s) || s.empty()) return 0;
    int64_t v = std::atoll(s.c_str());
    if (s.back() == 'K') v <<= 10;
    else if (s.back() == 'M') v <<= 20;
    return v;
}

// --- memory read bandwidth

struct bandwidth {
    double gb_per_s = 0;  // 1e9 bytes per second
    int64_t buffer_bytes = 0;
    int threads = 0;
    int passes = 0;
};

// Sums the 64-bit words of [p, p + n) with 8 independent accumulators (AVX2 loads where compiled in);
// the result is only there so the loads cannot be optimised away.
inline uint64_t read_words(const uint64_t* p, int64_t n) {
#if defined(LUMEN_CPU_HAVE_AVX2)
    __m256i a[8];
    for (__m256i& v : a) v = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 8; ++k)
            a[k] = _mm256_xor_si256(a[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4 * k)));
    for (int k = 1; k < 8; ++k) a[0] = _mm256_xor_si256(a[0], a[k]);
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a[0]);
    uint64_t s = lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
#else
    uint64_t acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] ^= p[i + k];
    uint64_t s = 0;
    for (uint64_t v : acc) s ^= v;
#endif
    for (; i < n; ++i) s ^= p[i];
    return s;
}

// A buffer of `bytes` (touched once, from the threads that read it) and `threads` threads to read
// it, kept so that the bandwidth can be measured again and again (before each repetition of a test)
// without allocating and touching the buffer each time.
class read_bandwidth_meter {
public:
    read_bandwidth_meter(int threads, int64_t bytes)
        : words_(bytes / 8 / 64 * 64), threads_(threads), share_((words_ / threads + 63) / 64 * 64),
          buf_(static_cast<uint64_t*>(::operator new(static_cast<size_t>(words_) * 8, std::align_val_t{64}))), pool_(threads),
          sink_(static_cast<size_t>(threads)) {
        uint64_t* p = buf_.get();
        for_each_share([&](int64_t, int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) p[i] = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
        });
    }

    // Best-of-`passes` read bandwidth: each thread reads its own contiguous share of the buffer.
    bandwidth measure(int passes) {
        double best = 1e30;
        for (int pass = 0; pass < passes; ++pass) {
            const auto t0 = clock::now();
            for_each_share([&](int64_t t, int64_t begin, int64_t end) {
                sink_[static_cast<size_t>(t)] ^= read_words(buf_.get() + begin, end - begin);
            });
            best = std::min(best, seconds_since(t0));
        }
        uint64_t s = 0;
        for (uint64_t v : sink_) s ^= v;
        if (s == 42) std::fprintf(stderr, " ");  // keeps the sums alive
        return {static_cast<double>(words_ * 8) / best / 1e9, words_ * 8, threads_, passes};
    }

private:
    // f(t, begin, end) for each thread t's share [begin, end) of the words, each on a thread of the pool
    template <class F>
    void for_each_share(F&& f) {
        pool_.parallel_for(threads_, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                const int64_t begin = std::min(words_, t * share_), end = std::min(words_, (t + 1) * share_);
                if (begin < end) f(t, begin, end);
            }
        });
    }

    struct free_aligned {
        void operator()(uint64_t* p) const { ::operator delete(p, std::align_val_t{64}); }
    };
    int64_t words_;
    int threads_;
    int64_t share_;  // words per thread
    std::unique_ptr<uint64_t, free_aligned> buf_;
    cpu::thread_pool pool_;
    std::vector<uint64_t> sink_;
};

// Best-of-`passes` read bandwidth of a buffer of `bytes`, read by `threads` threads, each its own
// contiguous share.
inline bandwidth measure_read_bandwidth(int threads, int64_t bytes, int passes) {
    return read_bandwidth_meter(threads, bytes).measure(passes);
}

// --- how busy the CPUs are

struct cpu_times {
    uint64_t busy = 0;   // jiffies of all CPUs not idle (user nice system irq softirq steal)
    uint64_t total = 0;  // all jiffies
};

inline cpu_times read_proc_stat() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    uint64_t v[10] = {};
    in >> cpu;
    for (uint64_t& x : v) in >> x;
    cpu_times t;
    for (int i = 0; i < 8; ++i) t.total += v[i];  // guest time is already inside user and nice
    t.busy = t.total - v[3] - v[4];                // minus idle and iowait
    return t;
}

// This process's CPU time (user + system), in jiffies.
inline uint64_t read_own_jiffies() {
    std::ifstream in("/proc/self/stat");
    std::string s;
    std::getline(in, s);
    const size_t close = s.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(s.substr(close + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15 are utime and stime
        if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
        if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
    }
    return utime + stime;
}

// Measures, between start() and stop(), how many CPUs other processes kept busy on average.
class other_load_meter {
public:
    void start() {
        sys_ = read_proc_stat();
        own_ = read_own_jiffies();
    }
    // Average CPUs used by everything but this process since start() (0 when unknown).
    double stop() const {
        const cpu_times now = read_proc_stat();
        const uint64_t total = now.total - sys_.total;
        if (total == 0 || n_cpus() == 0) return 0.0;
        const double busy = static_cast<double>(now.busy - sys_.busy);
        const double own = static_cast<double>(read_own_jiffies() - own_);
        return std::max(0.0, busy - own) / static_cast<double>(total) * n_cpus();
    }
    static int n_cpus() { return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN))); }

private:
    cpu_times sys_;
    uint64_t own_ = 0;
};

// Samples the load for `sample_s` seconds at a time until other processes use less than
// `threshold` CPUs or `max_wait_s` has passed. Returns the last sample (CPUs used by others).
inline double wait_for_idle(double threshold, double max_wait_s, double sample_s = 1.0) {
    const auto t0 = clock::now();
    for (;;) {
        other_load_meter m;
        m.start();
        std::this_thread::sleep_for(std::chrono::duration<double>(sample_s));
        const double load = m.stop();
        if (load < threshold || seconds_since(t0) + sample_s > max_wait_s) return load;
    }
}

// --- the thread pool's overhead

// Nanoseconds per parallel_for of `n_items` trivial items on a pool of `threads`, best of 5
// batches of `calls` calls.
inline double pool_overhead_ns(int threads, int64_t n_items, int calls) {
    cpu::thread_pool pool(threads);
    std::vector<int64_t> counts(static_cast<size_t>(n_items) * 16);
    double best = 1e30;
    for (int batch = 0; batch < 6; ++batch) {
        const auto t0 = clock::now();
        for (int c = 0; c < calls; ++c)
            pool.parallel_for(n_items, [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; ++i) ++counts[static_cast<size_t>(i) * 16];
            });
        if (batch > 0) best = std::min(best, seconds_since(t0) / calls * 1e9);  // batch 0 warms up
    }
    return best;
}

}  // namespace lumen::cli::bench
