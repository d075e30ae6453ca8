// test_thread_pool.cpp: parallel_for covers every item exactly once with contiguous chunks, for
// any thread count; it survives heavy reuse, rethrows exceptions on the caller and allocates nothing.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <numeric>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/cpu/thread_pool.hpp>

#include "count_allocations.hpp"  // to show parallel_for allocates nothing

using lumen::cpu::thread_pool;

TEST_CASE("parallel_for covers every item exactly once, for any thread count", "[thread_pool]") {
    for (int n_threads : {1, 2, 3, 4, 8}) {
        thread_pool pool(n_threads);
        CHECK(pool.size() == n_threads);
        for (int64_t n_items : {0, 1, 2, 3, 5, 7, 8, 100, 10007}) {
            INFO("threads " << n_threads << ", items " << n_items);
            std::vector<std::atomic<int>> hits(static_cast<size_t>(n_items));
            std::atomic<int64_t> sum{0};
            std::atomic<int> bad_ranges{0};
            pool.parallel_for(n_items, [&](int64_t begin, int64_t end) {
                if (!(0 <= begin && begin < end && end <= n_items)) bad_ranges.fetch_add(1);
                int64_t local = 0;
                for (int64_t i = begin; i < end; ++i) {
                    hits[static_cast<size_t>(i)].fetch_add(1);
                    local += i * i;
                }
                sum.fetch_add(local);
            });
            int64_t serial = 0;
            for (int64_t i = 0; i < n_items; ++i) serial += i * i;
            CHECK(sum.load() == serial);
            CHECK(bad_ranges.load() == 0);
            for (int64_t i = 0; i < n_items; ++i) REQUIRE(hits[static_cast<size_t>(i)].load() == 1);
        }
    }
}

TEST_CASE("the threads take over each other's items: a slow thread's share goes to the fast ones", "[thread_pool]") {
    thread_pool pool(2);
    for (int64_t n_items : {2, 64, 1000}) {
        INFO("items " << n_items);
        const std::thread::id caller = std::this_thread::get_id();
        std::atomic<int64_t> by_caller{0}, by_worker{0};
        std::vector<std::pair<int64_t, int64_t>> chunks;
        std::mutex m;
        pool.parallel_for(n_items, [&](int64_t begin, int64_t end) {
            {
                std::lock_guard<std::mutex> lock(m);
                chunks.emplace_back(begin, end);
            }
            if (std::this_thread::get_id() == caller) {
                by_caller += end - begin;
            } else {
                by_worker += end - begin;
                std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the worker is slow
            }
        });
        CHECK(by_caller + by_worker == n_items);
        if (n_items >= 64) CHECK(by_caller > n_items * 3 / 4);  // its own half and most of the worker's
        std::sort(chunks.begin(), chunks.end());
        REQUIRE(chunks.front().first == 0);
        REQUIRE(chunks.back().second == n_items);
        for (size_t c = 1; c < chunks.size(); ++c) CHECK(chunks[c].first == chunks[c - 1].second);  // contiguous, disjoint
    }
}

TEST_CASE("parallel_for spreads work over the threads and waits for all of it", "[thread_pool]") {
    thread_pool pool(4);
    std::vector<std::thread::id> who(64);
    std::vector<int> done(64, 0);
    pool.parallel_for(64, [&](int64_t begin, int64_t end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // long enough for workers to join in
        for (int64_t i = begin; i < end; ++i) who[static_cast<size_t>(i)] = std::this_thread::get_id(), done[static_cast<size_t>(i)] = 1;
    });
    CHECK(std::accumulate(done.begin(), done.end(), 0) == 64);  // every write is visible on return
    std::vector<std::thread::id> distinct;
    for (auto id : who)
        if (std::find(distinct.begin(), distinct.end(), id) == distinct.end()) distinct.push_back(id);
    CHECK(distinct.size() >= 2);
    CHECK(distinct.size() <= 4);
}

TEST_CASE("a pool is reused 10000 times", "[thread_pool]") {
    for (int n_threads : {2, 4}) {
        thread_pool pool(n_threads);
        std::vector<int64_t> out(37, 0);
        for (int round = 0; round < 10000; ++round) {
            const int64_t n = 1 + round % 37;
            pool.parallel_for(n, [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) out[static_cast<size_t>(i)] += 1;
            });
        }
        // item i takes part in every round with n > i: rounds where round % 37 >= i
        for (int64_t i = 0; i < 37; ++i) {
            int64_t expected = 0;
            for (int round = 0; round < 10000; ++round) expected += (round % 37) >= i;
            REQUIRE(out[static_cast<size_t>(i)] == expected);
        }
    }
}

TEST_CASE("an exception inside fn is rethrown on the caller, and the pool keeps working", "[thread_pool]") {
    for (int n_threads : {1, 2, 4}) {
        thread_pool pool(n_threads);
        std::atomic<int64_t> items_run{0};
        CHECK_THROWS_WITH(pool.parallel_for(1000,
                                            [&](int64_t begin, int64_t end) {
                                                items_run.fetch_add(end - begin);
                                                if (begin <= 500 && 500 < end) throw std::runtime_error("item 500 failed");
                                            }),
                          "item 500 failed");
        CHECK(items_run.load() == 1000);  // the other chunks still ran
        // every chunk throwing: one exception comes back
        CHECK_THROWS_AS(pool.parallel_for(64, [](int64_t, int64_t) { throw std::logic_error("all"); }), std::logic_error);
        std::atomic<int64_t> sum{0};
        pool.parallel_for(100, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
        });
        CHECK(sum.load() == 4950);
    }
}

TEST_CASE("a nested parallel_for runs inline on the calling chunk's thread", "[thread_pool]") {
    thread_pool pool(3);
    std::atomic<int64_t> total{0};
    pool.parallel_for(6, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
            pool.parallel_for(10, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    });
    CHECK(total.load() == 60);
}

TEST_CASE("parallel_for allocates nothing per call", "[thread_pool]") {
    thread_pool pool(3);
    std::vector<float> data(4096, 1.0f);
    auto work = [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) data[static_cast<size_t>(i)] *= 1.0001f;
    };
    pool.parallel_for(4096, work);  // warm up
    const long before = test_util::allocations();
    for (int i = 0; i < 1000; ++i) pool.parallel_for(4096, work);
    const long after = test_util::allocations();
    CHECK(after == before);
}

TEST_CASE("pools start and stop cleanly, also while workers sleep", "[thread_pool]") {
    for (int i = 0; i < 50; ++i) {
        thread_pool pool(1 + i % 5);
        if (i % 2) pool.parallel_for(10, [](int64_t, int64_t) {});
        if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // let the workers fall asleep
    }
    CHECK_THROWS_AS(thread_pool(0), lumen::error);
    CHECK_THROWS_AS(thread_pool(-3), lumen::error);
    CHECK_THROWS_AS(thread_pool(thread_pool::max_threads + 1), lumen::error);
}

TEST_CASE("a pool used from several threads serializes the calls", "[thread_pool]") {
    thread_pool pool(3);
    std::atomic<int64_t> total{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 3; ++c)
        callers.emplace_back([&] {
            for (int r = 0; r < 200; ++r)
                pool.parallel_for(50, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
        });
    for (auto& t : callers) t.join();
    CHECK(total.load() == 3 * 200 * 50);
}

TEST_CASE("parallel_phases runs every item of every phase once, and no phase before the one ahead of it is done", "[thread_pool]") {
    for (int n_threads : {1, 2, 3, 4, 8}) {
        thread_pool pool(n_threads);
        struct phase_sizes {
            size_t count;
            int64_t n[4];
        };
        const phase_sizes jobs[] = {{1, {1}}, {2, {5, 7}}, {3, {100, 0, 3}}, {2, {0, 0}}, {4, {1, 1, 1, 1}}, {4, {10007, 64, 513, 2}}};
        for (int round = 0; round < 200; ++round) {
            const phase_sizes& job = jobs[static_cast<size_t>(round) % std::size(jobs)];
            const std::span<const int64_t> sizes(job.n, job.count);
            INFO("threads " << n_threads << ", round " << round);
            std::vector<size_t> first(sizes.size() + 1, 0);  // phase p's items are hits[first[p] ..]
            for (size_t p = 0; p < sizes.size(); ++p) first[p + 1] = first[p] + static_cast<size_t>(sizes[p]);
            std::vector<std::atomic<int>> hits(first.back());
            std::vector<std::atomic<int64_t>> finished(sizes.size());  // items of each phase returned
            std::atomic<int> early{0}, bad_ranges{0};
            pool.parallel_phases(sizes, [&](int phase, int64_t begin, int64_t end) {
                const auto p = static_cast<size_t>(phase);
                if (!(0 <= begin && begin < end && end <= sizes[p])) bad_ranges.fetch_add(1);
                for (size_t q = 0; q < p; ++q)  // every earlier phase is complete
                    if (finished[q].load() != sizes[q]) early.fetch_add(1);
                for (int64_t i = begin; i < end; ++i) hits[first[p] + static_cast<size_t>(i)].fetch_add(1);
                finished[p].fetch_add(end - begin);
            });
            REQUIRE(early.load() == 0);
            REQUIRE(bad_ranges.load() == 0);
            for (const std::atomic<int>& h : hits) REQUIRE(h.load() == 1);
        }
    }
}

TEST_CASE("parallel_phases: a slow thread holds up the phase it is in, not the others' progress; exceptions stop the later phases", "[thread_pool]") {
    thread_pool pool(2);
    // the worker sleeps inside its first chunk of phase 0: phase 1 waits for it, then runs
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<int64_t> phase1_items{0};
    std::atomic<bool> phase0_done_late{false};
    std::atomic<int64_t> phase0_items{0};
    const int64_t sizes[] = {64, 64};
    pool.parallel_phases(sizes, [&](int phase, int64_t begin, int64_t end) {
        if (phase == 0) {
            if (std::this_thread::get_id() != caller && begin == 32) std::this_thread::sleep_for(std::chrono::milliseconds(20));
            phase0_items.fetch_add(end - begin);
        } else {
            if (phase0_items.load() != 64) phase0_done_late.store(true);
            phase1_items.fetch_add(end - begin);
        }
    });
    CHECK(!phase0_done_late.load());
    CHECK(phase1_items.load() == 64);

    for (int n_threads : {1, 2, 4}) {
        thread_pool p(n_threads);
        std::atomic<int64_t> later{0};
        const int64_t three[] = {100, 50, 20};
        CHECK_THROWS_WITH(p.parallel_phases(three,
                                            [&](int phase, int64_t begin, int64_t end) {
                                                if (phase == 1 && begin == 0) throw std::runtime_error("phase 1 failed");
                                                if (phase == 2) later.fetch_add(end - begin);
                                            }),
                          "phase 1 failed");
        CHECK(later.load() == 0);
        std::atomic<int64_t> sum{0};
        p.parallel_for(100, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
        });
        CHECK(sum.load() == 4950);
    }
    // too many phases, or too many items in one, are refused before anything runs
    const int64_t five[] = {1, 1, 1, 1, 1};
    CHECK_THROWS_WITH(pool.parallel_phases(five, [](int, int64_t, int64_t) {}), Catch::Contains("at most 4 phases"));
    const int64_t huge[] = {thread_pool::max_job_items + 1};
    CHECK_THROWS_WITH(pool.parallel_phases(huge, [](int, int64_t, int64_t) {}), Catch::Contains("items"));
}

TEST_CASE("parallel_phases and parallel_for alternate 10000 times, and a phased job allocates nothing", "[thread_pool]") {
    for (int n_threads : {2, 3}) {
        thread_pool pool(n_threads);
        std::vector<int64_t> a(40, 0), b(40, 0);
        for (int round = 0; round < 10000; ++round) {
            const int64_t n = 1 + round % 40;
            const int64_t sizes[] = {n, 40 - n + 1};
            pool.parallel_phases(sizes, [&](int phase, int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) (phase == 0 ? a : b)[static_cast<size_t>(i)] += 1;
            });
            pool.parallel_for(n, [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) a[static_cast<size_t>(i)] -= 1;
            });
        }
        for (int64_t i = 0; i < 40; ++i) {
            REQUIRE(a[static_cast<size_t>(i)] == 0);
            int64_t expected = 0;
            for (int round = 0; round < 10000; ++round) expected += i < 40 - (1 + round % 40) + 1;
            REQUIRE(b[static_cast<size_t>(i)] == expected);
        }
        const int64_t sizes[] = {512, 512};
        std::vector<float> data(512, 1.0f);
        auto work = [&](int, int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) data[static_cast<size_t>(i)] *= 1.0001f;
        };
        pool.parallel_phases(sizes, work);
        const long before = test_util::allocations();
        for (int i = 0; i < 1000; ++i) pool.parallel_phases(sizes, work);
        CHECK(test_util::allocations() == before);
    }
}
