// cpu/thread_pool.hpp: a fixed pool of std::thread workers, made once and reused for every
// parallel loop; parallel_for splits [0, n) into contiguous chunks that the caller helps run.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "../error.hpp"

namespace lumen::cpu {

// How it works. A call publishes one job: a type-erased chunk function (a plain function pointer
// plus a pointer to the caller's callable, so nothing is allocated per call) and the item count,
// split into n_chunks contiguous chunks. Every participant (the caller and each worker) claims
// chunks from a shared atomic ticket until none are left; the caller then waits until every chunk
// has finished. Because the caller claims chunks too, a job completes even if no worker wakes in
// time. Idle workers spin on the ticket for up to spin_time (so the back-to-back calls of a forward
// pass find them awake), then sleep on a condition variable; the caller likewise spins for up to
// spin_time waiting for the last chunks, then sleeps. The spin is bounded by the clock, not by a
// count of polls: a `pause` instruction takes 3 cycles on some CPUs and 140 on others, and on a
// machine shared with other processes a spinning thread takes CPU time from them.
//
// The ticket packs (generation << 32) | (n_chunks << 16) | next_chunk, so a worker that wakes late
// for an old job can never claim a chunk of a newer one: its claim fails on the generation.
//
// Exceptions thrown by fn in any thread are caught; the remaining chunks still run, and the first
// exception is rethrown on the calling thread once the whole job is done. parallel_for called from
// inside a chunk (nested) runs fn(0, n) serially on that thread. Calls from several threads at once
// are serialized.
class thread_pool {
public:
    static constexpr int max_threads = 1024;

    // n_threads counts the calling thread: 1 = no workers, everything runs on the caller.
    explicit thread_pool(int n_threads) : n_threads_(n_threads) {
        if (n_threads < 1 || n_threads > max_threads)
            throw error("thread_pool: the thread count must be in [1, " + std::to_string(max_threads) + "], got " +
                        std::to_string(n_threads));
        try {
            workers_.reserve(static_cast<size_t>(n_threads - 1));
            for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_main(); });
        } catch (const std::exception& e) {
            shut_down();
            throw error("thread_pool: cannot start " + std::to_string(n_threads - 1) + " worker threads: " + e.what());
        }
    }

    ~thread_pool() { shut_down(); }

    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    int size() const { return n_threads_; }

    // Calls fn(begin, end) on contiguous chunks covering [0, n_items), spread over the pool's threads
    // (the caller runs chunks too), and returns when all are done. fn must be safe to call
    // concurrently on disjoint ranges. Allocates nothing.
    template <class F>
    void parallel_for(int64_t n_items, F&& fn) {
        if (n_items <= 0) return;
        if (n_threads_ == 1 || n_items == 1 || inside_chunk_) {
            fn(int64_t{0}, n_items);
            return;
        }
        using callable = std::remove_reference_t<F>;
        auto call = [](void* context, int64_t begin, int64_t end) { (*static_cast<callable*>(context))(begin, end); };
        run(call, const_cast<void*>(static_cast<const void*>(std::addressof(fn))), n_items);
    }

private:
    using chunk_fn = void (*)(void* context, int64_t begin, int64_t end);

    struct job {
        chunk_fn call = nullptr;
        void* context = nullptr;
        int64_t n_items = 0;
    };

    // Finer than one chunk per thread, to even out the load when a thread is slowed, but not much
    // finer: every claim moves the ticket's cache line between cores, and every new chunk starts a
    // new stream of weights that the prefetching has to catch up with. With the repacked kernels,
    // 2 rather than 4 chunks made token generation 4-5% faster on stories110M Q4_0 (2 threads, A/B
    // runs of the two builds), 8 another 5-10% slower.
    static constexpr int chunks_per_thread = 2;
    static constexpr std::chrono::microseconds spin_time{200};  // before a waiting thread sleeps

    // Polls `ready` (with a pause between polls) until it returns true or spin_time has passed.
    template <class Ready>
    static bool spin_until(Ready&& ready) {
        const auto deadline = std::chrono::steady_clock::now() + spin_time;
        for (;;) {
            for (int i = 0; i < 64; ++i) {
                if (ready()) return true;
                cpu_relax();
            }
            if (std::chrono::steady_clock::now() >= deadline) return ready();
        }
    }

    static uint32_t generation_of(uint64_t ticket) { return static_cast<uint32_t>(ticket >> 32); }
    static uint32_t n_chunks_of(uint64_t ticket) { return static_cast<uint32_t>(ticket >> 16) & 0xffffu; }
    static uint32_t next_chunk_of(uint64_t ticket) { return static_cast<uint32_t>(ticket) & 0xffffu; }

    static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    void run(chunk_fn call, void* context, int64_t n_items) {
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        const int64_t max_chunks = static_cast<int64_t>(n_threads_) * chunks_per_thread;
        const uint32_t n_chunks = static_cast<uint32_t>(n_items < max_chunks ? n_items : max_chunks);
        const uint32_t generation = ++generation_;

        job_ = job{call, context, n_items};
        done_.store(0, std::memory_order_relaxed);
        failed_.store(false, std::memory_order_relaxed);
        ticket_.store((static_cast<uint64_t>(generation) << 32) | (static_cast<uint64_t>(n_chunks) << 16),
                      std::memory_order_release);
        { std::lock_guard<std::mutex> lock(mutex_); }  // a worker about to sleep sees the new ticket
        wake_cv_.notify_all();

        run_chunks(generation);

        const bool finished = spin_until([&] { return done_.load(std::memory_order_acquire) == n_chunks; });
        if (!finished) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_cv_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == n_chunks; });
        }
        if (failed_.load(std::memory_order_acquire)) {
            std::exception_ptr e = std::move(error_);
            error_ = nullptr;
            std::rethrow_exception(e);
        }
    }

    // Claims and runs chunks of job `generation` until none are left (or a newer job replaced it).
    void run_chunks(uint32_t generation) {
        for (;;) {
            uint64_t ticket = ticket_.load(std::memory_order_acquire);
            for (;;) {
                if (generation_of(ticket) != generation || next_chunk_of(ticket) >= n_chunks_of(ticket)) return;
                if (ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel,
                                                  std::memory_order_acquire))
                    break;
            }
            // The claimed chunk keeps the job alive: the caller waits for it before publishing another.
            const uint32_t chunk = next_chunk_of(ticket);
            const uint32_t n_chunks = n_chunks_of(ticket);
            const job j = job_;
            const int64_t base = j.n_items / n_chunks;
            const int64_t extra = j.n_items % n_chunks;  // the first `extra` chunks get one more item
            const int64_t begin = chunk * base + (chunk < extra ? chunk : extra);
            const int64_t end = begin + base + (chunk < extra ? 1 : 0);
            inside_chunk_ = true;
            try {
                j.call(j.context, begin, end);
            } catch (...) {
                if (!failed_.exchange(true, std::memory_order_acq_rel)) error_ = std::current_exception();
            }
            inside_chunk_ = false;
            if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_chunks) {
                { std::lock_guard<std::mutex> lock(mutex_); }  // the caller is waiting or will see done_
                done_cv_.notify_one();
            }
        }
    }

    void worker_main() noexcept {
        try {
            uint32_t seen = 0;
            for (;;) {
                auto has_news = [&] {
                    return stop_.load(std::memory_order_acquire) ||
                           generation_of(ticket_.load(std::memory_order_acquire)) != seen;
                };
                if (!spin_until(has_news)) {
                    std::unique_lock<std::mutex> lock(mutex_);
                    wake_cv_.wait(lock, has_news);
                }
                if (stop_.load(std::memory_order_acquire)) return;
                seen = generation_of(ticket_.load(std::memory_order_acquire));
                run_chunks(seen);
            }
        } catch (...) {
            // Only the pool's own locking could throw here; the callers finish every job without this
            // worker, so it just stops.
        }
    }

    void shut_down() noexcept {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_.store(true, std::memory_order_release);
        }
        wake_cv_.notify_all();
        for (std::thread& t : workers_)
            if (t.joinable()) t.join();
        workers_.clear();
    }

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;  // one parallel_for at a time
    std::mutex mutex_;       // guards the sleeping of workers and of the caller
    std::condition_variable wake_cv_;
    std::condition_variable done_cv_;
    std::atomic<uint64_t> ticket_{0};
    std::atomic<uint32_t> done_{0};  // chunks of the current job that have finished
    std::atomic<bool> stop_{false};
    std::atomic<bool> failed_{false};
    std::exception_ptr error_;  // the first exception of the current job
    job job_;
    uint32_t generation_ = 0;  // guarded by call_mutex_

    static inline thread_local bool inside_chunk_ = false;
};

}  // namespace lumen::cpu
