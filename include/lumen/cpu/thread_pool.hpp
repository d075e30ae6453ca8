// cpu/thread_pool.hpp: a fixed pool of std::thread workers, made once and reused for every
// parallel loop; parallel_for splits [0, n) into contiguous chunks that the caller helps run.
#pragma once

#include <algorithm>
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
// split into contiguous chunks (see chunking). Every participant (the caller and each worker)
// claims chunks from a shared atomic ticket until none are left, then counts the ones it ran as
// done; the caller waits until every chunk has finished. Because the caller claims chunks too, a job completes even if no worker wakes in
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
// How parallel_for cuts its items into chunks:
//   equal      2 per thread, of equal size: the least overhead, for short jobs.
//   shrinking  each chunk 1 / (2 n_threads) of the items still left (at least 1/48 of all): with 2
//              threads 1/4, 3/16, 9/64, ... The threads start on long contiguous runs and end on
//              short ones: a thread that runs ahead (two rarely run at the same speed on a shared
//              machine) takes more of them, and the last to finish waits for a short one, not a
//              quarter of the job. For long jobs (token generation of tinyllama Q4_0: the threads
//              waited for each other ~10% of the time with equal chunks, tokens/s +5% A/B); on short
//              ones (stories110M, ~40 us per product) the extra chunks cost more than they save
//              (~0.3 us each, -6%).
enum class chunking { equal, shrinking };

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
    void parallel_for(int64_t n_items, F&& fn, chunking split = chunking::equal) {
        if (n_items <= 0) return;
        if (n_threads_ == 1 || n_items == 1 || inside_chunk_) {
            fn(int64_t{0}, n_items);
            return;
        }
        using callable = std::remove_reference_t<F>;
        auto call = [](void* context, int64_t begin, int64_t end) { (*static_cast<callable*>(context))(begin, end); };
        run(call, const_cast<void*>(static_cast<const void*>(std::addressof(fn))), n_items, split);
    }

private:
    using chunk_fn = void (*)(void* context, int64_t begin, int64_t end);

    // Chunk c covers [begin[c], begin[c + 1]).
    static constexpr int64_t max_chunks = 48;
    struct job {
        chunk_fn call = nullptr;
        void* context = nullptr;
        int64_t begin[max_chunks + 1] = {};
    };

    // Cuts [0, n_items) into job_.begin as `split` says; returns the number of chunks.
    uint32_t cut_into_chunks(int64_t n_items, chunking split) {
        const int64_t per_thread = 2, n_parts = per_thread * n_threads_;
        uint32_t n_chunks = 0;
        if (split == chunking::equal) {
            n_chunks = static_cast<uint32_t>(std::min(n_items, std::min<int64_t>(n_parts, max_chunks)));
            for (uint32_t c = 0; c <= n_chunks; ++c) job_.begin[c] = n_items * c / n_chunks;
            return n_chunks;
        }
        const int64_t min_size = (n_items + max_chunks - 1) / max_chunks;
        for (int64_t start = 0; start < n_items; ++n_chunks) {
            job_.begin[n_chunks] = start;
            start += std::min(n_items - start, std::max(min_size, (n_items - start + n_parts - 1) / n_parts));
        }
        job_.begin[n_chunks] = n_items;
        return n_chunks;
    }

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

    void run(chunk_fn call, void* context, int64_t n_items, chunking split) {
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        const uint32_t generation = ++generation_;
        job_.call = call;
        job_.context = context;
        const uint32_t n_chunks = cut_into_chunks(n_items, split);
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

    // Claims and runs chunks of job `generation` until none are left (or a newer job replaced it),
    // then counts them done, all at once (one move of done_'s cache line per thread and job).
    void run_chunks(uint32_t generation) {
        uint32_t ran = 0, n_chunks = 0;
        for (;;) {
            uint64_t ticket = ticket_.load(std::memory_order_acquire);
            for (;;) {
                if (generation_of(ticket) != generation || next_chunk_of(ticket) >= n_chunks_of(ticket)) {
                    // The chunks claimed and not yet counted keep the job alive: the caller waits
                    // for them before publishing another.
                    if (ran > 0 && done_.fetch_add(ran, std::memory_order_acq_rel) + ran == n_chunks) {
                        { std::lock_guard<std::mutex> lock(mutex_); }  // the caller is waiting or will see done_
                        done_cv_.notify_one();
                    }
                    return;
                }
                if (ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel,
                                                  std::memory_order_acquire))
                    break;
            }
            const uint32_t chunk = next_chunk_of(ticket);
            n_chunks = n_chunks_of(ticket);
            inside_chunk_ = true;
            try {
                job_.call(job_.context, job_.begin[chunk], job_.begin[chunk + 1]);
            } catch (...) {
                if (!failed_.exchange(true, std::memory_order_acq_rel)) error_ = std::current_exception();
            }
            inside_chunk_ = false;
            ++ran;
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
