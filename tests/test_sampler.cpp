// test_sampler.cpp: the portable random generator against published reference values, and each
// step of the sampling chain (greedy, penalty, top-k, top-p, min-p, temperature, the draw).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/sampler.hpp>

#include "count_allocations.hpp"  // to show sample() and accept() allocate nothing

using lumen::sampler;
using lumen::sampler_options;

namespace {

// Every filter off, temperature 1: a plain draw from softmax(logits).
sampler_options plain(uint64_t seed = 42) {
    sampler_options o;
    o.temperature = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    o.repeat_penalty = 1.0f;
    o.seed = seed;
    return o;
}

sampler_options greedy() {
    sampler_options o = plain();
    o.temperature = 0.0f;
    return o;
}

std::vector<float> log_probs(const std::vector<double>& p) {
    std::vector<float> l;
    for (double v : p) l.push_back(static_cast<float>(std::log(v)));
    return l;
}

std::vector<int> counts(sampler& s, const std::vector<float>& logits, int n_draws) {
    std::vector<int> c(logits.size(), 0);
    for (int i = 0; i < n_draws; ++i) ++c[static_cast<size_t>(s.sample(logits.data()))];
    return c;
}

}  // namespace

TEST_CASE("splitmix64 and xoshiro256** reproduce their published reference outputs", "[sampler][rng]") {
    uint64_t state = 1234567;  // splitmix64.c reference sequence for seed 1234567
    for (uint64_t expected : {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                              4593380528125082431ull, 16408922859458223821ull})
        CHECK(lumen::splitmix64(state) == expected);

    lumen::xoshiro256 rng(0);
    rng.set_state(1, 2, 3, 4);  // the reference vector of xoshiro256starstar.c (as in Rust's rand_xoshiro)
    for (uint64_t expected : {11520ull, 0ull, 1509978240ull, 1215971899390074240ull, 1216172134540287360ull,
                              607988272756665600ull, 16172922978634559625ull, 8476171486693032832ull,
                              10595114339597558777ull, 2904607092377533576ull})
        CHECK(rng.next() == expected);
}

TEST_CASE("seed 42 gives a fixed stream on every platform", "[sampler][rng]") {
    // State = the first four splitmix64 outputs from 42; checked against an independent Python
    // transcription of both algorithms.
    lumen::xoshiro256 rng(42);
    for (uint64_t expected : {1546998764402558742ull, 6990951692964543102ull, 12544586762248559009ull,
                              17057574109182124193ull, 18295552978065317476ull, 14199186830065750584ull})
        CHECK(rng.next() == expected);
    // floats: top 24 bits / 2^24
    lumen::xoshiro256 f(42);
    CHECK(f.next_float() == static_cast<float>(1546998764402558742ull >> 40) * 0x1p-24f);
    CHECK(f.next_float() == Approx(0.37898021936416626).epsilon(1e-7));
    lumen::xoshiro256 range(3);
    for (int i = 0; i < 100000; ++i) {
        const float u = range.next_float();
        REQUIRE(u >= 0.0f);
        REQUIRE(u < 1.0f);
    }
    // and so a uniform draw over 4 tokens with seed 42 picks floor(4u): 0, 1, 2, 3
    sampler s(4, plain(42));
    const std::vector<float> flat(4, 0.5f);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 4; ++i) tokens.push_back(s.sample(flat.data()));
    CHECK(tokens == std::vector<int32_t>{0, 1, 2, 3});
}

TEST_CASE("greedy picks the argmax, the lowest id on ties, NaN counting as -inf", "[sampler]") {
    sampler s(5, greedy());
    const std::vector<float> logits{1.0f, 3.0f, 3.0f, 2.0f, -1.0f};
    CHECK(s.sample(logits.data()) == 1);
    const std::vector<float> with_nan{NAN, 0.5f, 0.25f, NAN, 0.5f};
    CHECK(s.sample(with_nan.data()) == 1);
    sampler_options negative = greedy();
    negative.temperature = -1.0f;
    sampler n(5, negative);
    CHECK(n.sample(logits.data()) == 1);
}

TEST_CASE("greedy equals a plain argmax on vocabularies of any size with ties, infinities and NaN", "[sampler]") {
    std::mt19937 gen(11);
    const float specials[] = {NAN, INFINITY, -INFINITY, 2.0f, -0.0f, 0.0f};
    for (int32_t n : {1, 2, 3, 4, 5, 7, 8, 9, 31, 32000}) {
        for (int trial = 0; trial < 20; ++trial) {
            std::vector<float> logits(static_cast<size_t>(n));
            for (float& l : logits) l = static_cast<float>(gen() % 5) * 0.5f;  // many ties
            for (int k = 0; k < trial % 4; ++k) logits[gen() % static_cast<size_t>(n)] = specials[gen() % 6];
            if (trial == 17) std::fill(logits.begin(), logits.end(), NAN);
            if (trial == 18) std::fill(logits.begin(), logits.end(), -INFINITY);
            if (trial == 19) logits[static_cast<size_t>(n) - 1] = 100.0f;  // the best in the tail
            int32_t expected = 0;  // first of the largest, NaN as -inf
            auto value = [&](int32_t i) { return std::isnan(logits[static_cast<size_t>(i)]) ? -INFINITY : logits[static_cast<size_t>(i)]; };
            for (int32_t i = 1; i < n; ++i)
                if (value(i) > value(expected)) expected = i;
            sampler s(n, greedy());
            CHECK(s.sample(logits.data()) == expected);
        }
    }
}

TEST_CASE("the same seed gives the same tokens, another seed other tokens, reset() starts over", "[sampler]") {
    std::mt19937 gen(5);
    std::vector<float> logits(100);
    for (float& l : logits) l = static_cast<float>(gen() % 1000) / 250.0f;
    sampler_options o;  // the defaults: penalty, top-k, top-p, min-p, temperature
    o.seed = 7;
    sampler a(100, o), b(100, o);
    o.seed = 8;
    sampler c(100, o);
    std::vector<int32_t> ta, tb, tc;
    for (int i = 0; i < 200; ++i) {
        ta.push_back(a.sample(logits.data()));
        tb.push_back(b.sample(logits.data()));
        tc.push_back(c.sample(logits.data()));
        a.accept(ta.back()), b.accept(tb.back()), c.accept(tc.back());
    }
    CHECK(ta == tb);
    CHECK(ta != tc);
    a.reset();
    std::vector<int32_t> again;
    for (int i = 0; i < 200; ++i) {
        again.push_back(a.sample(logits.data()));
        a.accept(again.back());
    }
    CHECK(again == ta);
}

TEST_CASE("top-k = 1 is greedy", "[sampler]") {
    std::mt19937 gen(9);
    std::normal_distribution<float> dist(0.0f, 3.0f);  // input data only
    sampler_options o = plain(3);
    o.top_k = 1;
    o.temperature = 0.8f;
    sampler s(1000, o), g(1000, greedy());
    for (int round = 0; round < 50; ++round) {
        std::vector<float> logits(1000);
        for (float& l : logits) l = dist(gen);
        REQUIRE(s.sample(logits.data()) == g.sample(logits.data()));
    }
}

TEST_CASE("top-k, top-p and min-p keep exactly the tokens they should", "[sampler]") {
    // p = 0.5, 0.3, 0.15, 0.05 (shuffled over ids so order is not by id)
    const std::vector<float> logits = log_probs({0.15, 0.5, 0.05, 0.3});
    auto seen = [&](sampler_options o) {
        sampler s(4, o);
        const std::vector<int> c = counts(s, logits, 20000);
        std::set<int> ids;
        for (int i = 0; i < 4; ++i)
            if (c[i] > 0) ids.insert(i);
        return ids;
    };
    sampler_options o = plain(11);
    CHECK(seen(o) == std::set<int>{0, 1, 2, 3});
    SECTION("top-k 2 keeps the two largest") {
        o.top_k = 2;
        CHECK(seen(o) == std::set<int>{1, 3});
    }
    SECTION("top-p 0.75: 0.5 < 0.75 <= 0.5 + 0.3, so the two most likely") {
        o.top_p = 0.75f;
        CHECK(seen(o) == std::set<int>{1, 3});
        o.top_p = 0.85f;  // 0.8 < 0.85 <= 0.95
        CHECK(seen(o) == std::set<int>{0, 1, 3});
    }
    SECTION("min-p 0.2: p >= 0.2 * 0.5 = 0.1 keeps three, whatever the temperature") {
        o.min_p = 0.2f;
        CHECK(seen(o) == std::set<int>{0, 1, 3});
        o.temperature = 10.0f;  // applied after min-p: flattens, but cannot bring token 2 back
        CHECK(seen(o) == std::set<int>{0, 1, 3});
        o.min_p = 0.7f;  // p >= 0.35: only the top one
        CHECK(seen(o) == std::set<int>{1});
    }
    SECTION("the chain composes: top-k 3 then min-p 0.5 (p >= 0.25)") {
        o.top_k = 3;
        o.min_p = 0.5f;
        CHECK(seen(o) == std::set<int>{1, 3});
    }
}

TEST_CASE("the repetition penalty divides positive and multiplies negative logits of recent tokens", "[sampler]") {
    sampler_options o = greedy();
    o.repeat_penalty = 1.1f;
    o.repeat_last_n = 3;
    SECTION("positive logit: 2.0 / 1.1 = 1.82 < 1.9") {
        sampler s(4, o);
        const std::vector<float> logits{2.0f, 1.9f, 0.0f, -5.0f};
        CHECK(s.sample(logits.data()) == 0);
        s.accept(0);
        CHECK(s.sample(logits.data()) == 1);
        // once three other tokens are accepted, token 0 is out of the window again
        s.accept(2), s.accept(2), s.accept(3);
        CHECK(s.sample(logits.data()) == 0);
    }
    SECTION("negative logit: -1.0 * 1.1 = -1.1 < -1.05") {
        sampler s(4, o);
        const std::vector<float> logits{-1.0f, -1.05f, -3.0f, -4.0f};
        s.accept(0);
        CHECK(s.sample(logits.data()) == 1);
    }
    SECTION("a token repeated in the window is penalised once") {
        sampler s(2, o);
        const std::vector<float> logits{2.0f, 1.75f};  // once: 1.82 > 1.75; twice would be 1.65
        s.accept(0), s.accept(0);
        CHECK(s.sample(logits.data()) == 0);
    }
    SECTION("penalty 1 or window 0 turn it off; reset() forgets") {
        const std::vector<float> logits{2.0f, 1.9f};
        o.repeat_last_n = 0;
        sampler off(2, o);
        off.accept(0);
        CHECK(off.sample(logits.data()) == 0);
        o.repeat_last_n = 3;
        sampler s(2, o);
        s.accept(0);
        CHECK(s.sample(logits.data()) == 1);
        s.reset();
        CHECK(s.sample(logits.data()) == 0);
    }
}

TEST_CASE("draw frequencies match softmax(logits / temperature)", "[sampler]") {
    const std::vector<float> logits{1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
    for (float temperature : {1.0f, 0.7f, 2.0f}) {
        INFO("temperature " << temperature);
        sampler_options o = plain(2024);
        o.temperature = temperature;
        sampler s(5, o);
        const int n = 200000;
        const std::vector<int> c = counts(s, logits, n);
        double z = 0;
        std::vector<double> p;
        for (float l : logits) p.push_back(std::exp(l / temperature)), z += p.back();
        double chi2 = 0;
        for (size_t i = 0; i < p.size(); ++i) {
            const double expected = n * p[i] / z;
            chi2 += (c[i] - expected) * (c[i] - expected) / expected;
        }
        // 4 degrees of freedom: P(chi2 > 25) is about 5e-5 for a correct sampler
        CHECK(chi2 < 25.0);
    }
}

TEST_CASE("sample() and accept() allocate nothing", "[sampler]") {
    std::vector<float> logits(32000);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 7919) % 1000) / 100.0f;
    sampler s(32000, sampler_options{});  // the default chain: every step active
    sampler_options tp;
    tp.top_k = 0;  // top-p sorts the whole vocabulary
    sampler t(32000, tp);
    const long before = test_util::allocations();
    for (int i = 0; i < 20; ++i) {
        s.accept(s.sample(logits.data()));
        t.accept(t.sample(logits.data()));
    }
    const long after = test_util::allocations();
    CHECK(after == before);
}

TEST_CASE("bad sampler input throws lumen::error", "[sampler]") {
    CHECK_THROWS_AS(sampler(0, sampler_options{}), lumen::error);
    sampler_options o;
    o.repeat_last_n = -1;
    CHECK_THROWS_AS(sampler(10, o), lumen::error);
    o = sampler_options{};
    o.repeat_penalty = 0.0f;
    CHECK_THROWS_AS(sampler(10, o), lumen::error);
    o = sampler_options{};
    o.temperature = NAN;
    CHECK_THROWS_AS(sampler(10, o), lumen::error);
    sampler s(10, sampler_options{});
    CHECK_THROWS_WITH(s.accept(10), Catch::Contains("10"));
    CHECK_THROWS_AS(s.accept(-1), lumen::error);
}
