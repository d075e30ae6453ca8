// cpu/thread_pool.hpp: a fixed pool of std::thread workers, made once and reused for every
// parallel loop; parallel_for splits [0, n) into contiguous chunks that the caller helps run.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "../error.hpp"

namespace lumen::cpu {

// How it works. A call publishes one job: a type-erased chunk function (a plain function pointer
// plus a pointer to the caller's callable, so nothing is allocated per call) and, for each
// participant (the caller and each worker), an equal share of the items. A participant runs its
// own share front to back in chunks that shrink as it goes (a quarter of what is left each time,
// down to an eighth of the share: long contiguous runs first, short ones last), then takes chunks
// from the back of the others' shares until none are left, and counts what it ran as done, once.
// The caller returns when every item is done. Each share is one atomic word (front, back) on a cache line of its own, so claiming
// from one's own share does not move a line between cores; only the end of a job does, where the
// thread that runs ahead (two rarely run at the same speed on a shared machine) takes over the
// other's last chunks and the last to finish waits for a short one. Equal chunks handed out from
// one shared counter left the threads waiting for each other ~10% of token generation time (long
// jobs: the tail of a quarter of the job) or paid ~0.3 us per extra chunk in line moves (short
// ones). Because the caller runs chunks too, a job completes even if no worker wakes in time.
// Idle workers spin on the job counter for up to spin_time (so the back-to-back calls of a forward
// pass find them awake), then sleep on a condition variable; the caller likewise spins for up to
// spin_time waiting for the last chunks, then sleeps. The spin is bounded by the clock, not by a
// count of polls: a `pause` instruction takes 3 cycles on some CPUs and 140 on others, and on a
// machine shared with other processes a spinning thread takes CPU time from them.
//
// A worker that is still looking for chunks of a finished job (it ran none) may find the next job's
// shares: it runs those chunks with the next job's function (published before the shares) and
// counts them for it, which is correct; a participant that ran chunks of a job counts them before
// it looks at anything else, so no job can finish while a chunk of it is still running or counted.
//
// A job may have several phases (parallel_phases): the items of phase p + 1 are dealt, as shares
// again, by the participant whose count completes phase p, and the others, which found nothing
// left to claim, spin until then. So dependent steps (a product, then the product of its result)
// run as one job: the threads go on to the next step as soon as the last chunk of the step before
// is counted, without the job's end, the caller's return and the next call's publishing in between
// (~2 us per step when the two cores are far apart, as on a VM whose vCPUs sit on different CCDs).
// Each share's word carries its phase, so a claimed chunk always runs with the phase it was dealt for.
//
// Exceptions thrown by fn in any thread are caught; the remaining chunks of the phase still run (the
// phases after it do not), and the first exception is rethrown on the calling thread once the job
// is done. parallel_for called from inside a chunk (nested) runs fn(0, n) serially on that thread
// (parallel_phases: each phase in turn). Calls from several threads at once are serialized.
class thread_pool {
public:
    static constexpr int max_threads = 1024;

    // n_threads counts the calling thread: 1 = no workers, everything runs on the caller.
    explicit thread_pool(int n_threads) : n_threads_(n_threads) {
        if (n_threads < 1 || n_threads > max_threads)
            throw error("thread_pool: the thread count must be in [1, " + std::to_string(max_threads) + "], got " +
                        std::to_string(n_threads));
        shares_ = std::make_unique<share[]>(static_cast<size_t>(n_threads));
        try {
            workers_.reserve(static_cast<size_t>(n_threads - 1));
            for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
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
        for (int64_t offset = 0; offset < n_items; offset += max_job_items) {  // shares count items in 28 bits
            const int64_t n = std::min(max_job_items, n_items - offset);
            auto shifted = [&](int /*phase*/, int64_t begin, int64_t end) { fn(offset + begin, offset + end); };
            run(&call_with_phase<decltype(shifted)>, &shifted, {&n, 1});
        }
    }

    // Runs the phases one after another as one job: fn(p, begin, end) on contiguous chunks covering
    // [0, n_items[p]) for p = 0, 1, ..., spread over the threads as parallel_for does; no chunk of
    // phase p + 1 starts before every chunk of phase p has returned. At most max_phases phases, each
    // of at most max_job_items items (empty ones are skipped). Allocates nothing.
    template <class F>
    void parallel_phases(std::span<const int64_t> n_items, F&& fn) {
        if (n_items.size() > static_cast<size_t>(max_phases))
            throw error("thread_pool: at most " + std::to_string(max_phases) + " phases in a job, got " +
                        std::to_string(n_items.size()));
        for (const int64_t n : n_items)
            if (n < 0 || n > max_job_items)
                throw error("thread_pool: a phase must have 0 to " + std::to_string(max_job_items) + " items, got " +
                            std::to_string(n));
        if (n_threads_ == 1 || inside_chunk_) {
            for (size_t p = 0; p < n_items.size(); ++p)
                if (n_items[p] > 0) fn(static_cast<int>(p), int64_t{0}, n_items[p]);
            return;
        }
        run(&call_with_phase<std::remove_reference_t<F>>, const_cast<void*>(static_cast<const void*>(std::addressof(fn))),
            n_items);
    }

    static constexpr int max_phases = 4;
    static constexpr int64_t max_job_items = (int64_t{1} << 28) - 1;

private:
    using chunk_fn = void (*)(void* context, int phase, int64_t begin, int64_t end);
    static constexpr std::chrono::microseconds spin_time{200};  // before a waiting thread sleeps

    template <class F>
    static void call_with_phase(void* context, int phase, int64_t begin, int64_t end) {
        (*static_cast<F*>(context))(phase, begin, end);
    }

    struct job {
        chunk_fn call = nullptr;
        void* context = nullptr;
        int n_phases = 0;
        std::array<int64_t, max_phases> n_items{};
    };
    // A participant's items of one phase not yet claimed: [front, back), packed with the phase as
    // phase << 56 | front << 28 | back.
    struct alignas(64) share {
        std::atomic<uint64_t> bounds{0};
        // an eighth of the share as dealt: no chunk is shorter (unless less is left). Atomic because
        // a participant of the phase before may still read it, with bounds its CAS will find changed.
        std::atomic<int64_t> min_chunk{1};
    };
    static uint64_t pack(int phase, int64_t front, int64_t back) {
        return static_cast<uint64_t>(phase) << 56 | static_cast<uint64_t>(front) << 28 | static_cast<uint64_t>(back);
    }
    static int phase_of(uint64_t b) { return static_cast<int>(b >> 56); }
    static int64_t front_of(uint64_t b) { return static_cast<int64_t>(b >> 28 & max_job_items); }
    static int64_t back_of(uint64_t b) { return static_cast<int64_t>(b & max_job_items); }

    // Claims a quarter (at least min_chunk) of what is left in share i: from the front (its owner)
    // or from the back (another participant). False when it is empty.
    bool claim(int i, bool from_front, int& phase, int64_t& begin, int64_t& end) {
        share& sh = shares_[static_cast<size_t>(i)];
        uint64_t b = sh.bounds.load(std::memory_order_acquire);
        for (;;) {
            const int64_t front = front_of(b), back = back_of(b);
            if (front >= back) return false;
            const int64_t size = std::min(back - front, std::max(sh.min_chunk.load(std::memory_order_relaxed), (back - front) / 4));
            begin = from_front ? front : back - size;
            end = begin + size;
            phase = phase_of(b);
            if (sh.bounds.compare_exchange_weak(b, from_front ? pack(phase, end, back) : pack(phase, front, begin),
                                                std::memory_order_acq_rel, std::memory_order_acquire))
                return true;
        }
    }

    // Deals phase p's items, or the first non-empty phase after it, as shares and counts it started;
    // past the last phase, marks the job finished. Run by the caller at the start and by the
    // participant whose count completes a phase; after a failure, deals nothing more. Everything it
    // needs from job_ is read before the first store: once the phase is out, the others may finish the
    // job and the caller publish the next one. A sleeping caller is woken (caller_sleeping_ and these
    // stores are seq_cst, as are the loads of the caller's predicate: one side sees the other).
    void start_phase(int p) {
        const int n_phases = job_.n_phases;
        if (failed_.load(std::memory_order_acquire)) p = n_phases;
        while (p < n_phases && job_.n_items[static_cast<size_t>(p)] == 0) ++p;
        const bool finish = p >= n_phases;
        if (!finish) {
            const int64_t n = job_.n_items[static_cast<size_t>(p)];
            done_.store(0, std::memory_order_relaxed);  // released with the shares
            for (int i = 0; i < n_threads_; ++i) {
                share& sh = shares_[static_cast<size_t>(i)];
                const int64_t front = n * i / n_threads_, back = n * (i + 1) / n_threads_;
                sh.min_chunk.store(std::max<int64_t>(1, (back - front) / 8), std::memory_order_relaxed);
                sh.bounds.store(pack(p, front, back), std::memory_order_release);
            }
        }
        if (finish)
            finished_.store(true, std::memory_order_seq_cst);
        else
            phases_started_.fetch_add(1, std::memory_order_seq_cst);
        if (caller_sleeping_.load(std::memory_order_seq_cst)) {
            { std::lock_guard<std::mutex> lock(mutex_); }  // the caller is in wait() or sees the change
            done_cv_.notify_one();
        }
    }

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

    static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    void run(chunk_fn call, void* context, std::span<const int64_t> n_items) {
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        job_.call = call;
        job_.context = context;
        job_.n_phases = static_cast<int>(n_items.size());
        std::copy(n_items.begin(), n_items.end(), job_.n_items.begin());
        failed_.store(false, std::memory_order_relaxed);
        finished_.store(false, std::memory_order_relaxed);
        start_phase(0);  // publishes the job with phase 0's shares
        generation_.fetch_add(1, std::memory_order_release);
        { std::lock_guard<std::mutex> lock(mutex_); }  // a worker about to sleep sees the new generation
        wake_cv_.notify_all();

        run_chunks(0);

        if (failed_.load(std::memory_order_acquire)) {
            std::exception_ptr e = std::move(error_);
            error_ = nullptr;
            std::rethrow_exception(e);
        }
    }

    // Participant self's part of the current job, phase after phase: its own share from the front,
    // then the others' from the back; what it ran is counted done, and the count that completes a
    // phase starts the next. With nothing left to claim, it waits for the next phase: the caller
    // until the job is done, a worker for up to spin_time (then the others finish without it).
    void run_chunks(int self) {
        for (;;) {
            const int started = phases_started_.load(std::memory_order_acquire);
            if (finished_.load(std::memory_order_acquire)) return;
            int64_t ran = 0;
            int phase = 0;
            auto run_one = [&](int p, int64_t begin, int64_t end) {
                const job& j = job_;  // published before the share the chunk came from
                inside_chunk_ = true;
                try {
                    j.call(j.context, p, begin, end);
                } catch (...) {
                    if (!failed_.exchange(true, std::memory_order_acq_rel)) error_ = std::current_exception();
                }
                inside_chunk_ = false;
                ran += end - begin;
                phase = p;  // every chunk claimed before the count is of one phase: the next waits for it
            };
            int p;
            int64_t begin, end;
            while (claim(self, true, p, begin, end)) run_one(p, begin, end);
            for (int k = 1; k < n_threads_; ++k)
                while (claim((self + k) % n_threads_, false, p, begin, end)) run_one(p, begin, end);
            if (ran > 0) {
                const int64_t n = job_.n_items[static_cast<size_t>(phase)];
                if (done_.fetch_add(ran, std::memory_order_acq_rel) + ran == n) start_phase(phase + 1);
                continue;
            }
            auto moved_on = [&] {
                return phases_started_.load(std::memory_order_seq_cst) != started || finished_.load(std::memory_order_seq_cst);
            };
            if (spin_until(moved_on)) continue;
            if (self != 0) return;  // a worker leaves the rest to the others
            std::unique_lock<std::mutex> lock(mutex_);
            caller_sleeping_.store(true, std::memory_order_seq_cst);
            done_cv_.wait(lock, moved_on);
            caller_sleeping_.store(false, std::memory_order_relaxed);
        }
    }

    void worker_main(int self) noexcept {
        try {
            uint64_t seen = 0;
            for (;;) {
                auto has_news = [&] {
                    return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
                };
                if (!spin_until(has_news)) {
                    std::unique_lock<std::mutex> lock(mutex_);
                    wake_cv_.wait(lock, has_news);
                }
                if (stop_.load(std::memory_order_acquire)) return;
                seen = generation_.load(std::memory_order_acquire);
                run_chunks(self);
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
    std::unique_ptr<share[]> shares_;  // one per participant: 0 the caller, i the worker i
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;  // one parallel_for at a time
    std::mutex mutex_;       // guards the sleeping of workers and of the caller
    std::condition_variable wake_cv_;
    std::condition_variable done_cv_;
    std::atomic<uint64_t> generation_{0};  // jobs published so far
    std::atomic<int64_t> done_{0};         // items of the current phase run and counted
    std::atomic<int> phases_started_{0};   // phases dealt so far, over all jobs (a waiter sees each start)
    std::atomic<bool> finished_{false};    // every phase of the current job is done
    std::atomic<bool> caller_sleeping_{false};
    std::atomic<bool> stop_{false};
    std::atomic<bool> failed_{false};
    std::exception_ptr error_;  // the first exception of the current job
    job job_;

    static inline thread_local bool inside_chunk_ = false;
};

}  // namespace lumen::cpu
