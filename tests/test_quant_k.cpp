// test_quant_k.cpp: the k-quant super-block formats Q4_K and Q6_K: hand-made blocks, an independent
// transcription of ggml's dequantizers as the oracle for the bytes our quantizer writes, exact round
// trips of representable blocks, error bounds on random and real (stories260K) tensors, errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <lumen/quant.hpp>

using lumen::dtype;

namespace {

// --- ggml's dequantizers, transcribed as written in ggml-quants.c (block structs and pointer walks),
// kept apart from include/lumen/quant_k.hpp on purpose: the oracle for the layout.

namespace ggml {

struct block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
};
struct block_q6_K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
};

float half(uint16_t h) {  // IEEE binary16 by its definition
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    return static_cast<float>((h & 0x8000) ? -v : v);  // (no infinities or NaN in these tests)
}

void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

void dequantize_row_q4_K(const block_q4_K* x, float* y, int64_t k) {
    const int nb = static_cast<int>(k / 256);
    for (int i = 0; i < nb; i++) {
        const uint8_t* q = x[i].qs;
        const float d = half(x[i].d);
        const float min = half(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < 256; j += 64) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const volatile float d1 = d * sc;  // volatile: no fused multiply-add, as ggml's C build
            const volatile float m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const volatile float d2 = d * sc;
            const volatile float m2 = min * m;
            for (int l = 0; l < 32; ++l) { volatile float p = d1 * (q[l] & 0xF); *y++ = p - m1; }
            for (int l = 0; l < 32; ++l) { volatile float p = d2 * (q[l] >> 4); *y++ = p - m2; }
            q += 32;
            is += 2;
        }
    }
}

void dequantize_row_q6_K(const block_q6_K* x, float* y, int64_t k) {
    const int64_t nb = k / 256;
    for (int i = 0; i < nb; i++) {
        const float d = half(x[i].d);
        const uint8_t* ql = x[i].ql;
        const uint8_t* qh = x[i].qh;
        const int8_t* sc = x[i].scales;
        for (int n = 0; n < 256; n += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

}  // namespace ggml

// The oracle's floats for a row of blocks (copied into properly typed structs first).
std::vector<float> oracle_dequantize(dtype type, const std::vector<std::byte>& bytes, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n));
    if (type == dtype::q4_k) {
        std::vector<ggml::block_q4_K> blocks(static_cast<size_t>(n / 256));
        static_assert(sizeof(ggml::block_q4_K) == 144);
        std::memcpy(blocks.data(), bytes.data(), bytes.size());
        ggml::dequantize_row_q4_K(blocks.data(), y.data(), n);
    } else {
        std::vector<ggml::block_q6_K> blocks(static_cast<size_t>(n / 256));
        static_assert(sizeof(ggml::block_q6_K) == 210);
        std::memcpy(blocks.data(), bytes.data(), bytes.size());
        ggml::dequantize_row_q6_K(blocks.data(), y.data(), n);
    }
    return y;
}

std::vector<std::byte> quantize(dtype type, const std::vector<float>& x) {
    std::vector<std::byte> out(static_cast<size_t>(lumen::row_bytes(type, static_cast<int64_t>(x.size()))));
    lumen::quantize_row(type, x.data(), out.data(), static_cast<int64_t>(x.size()));
    return out;
}

std::vector<float> dequantize(dtype type, const std::vector<std::byte>& bytes, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n));
    lumen::dequantize_row(type, bytes.data(), y.data(), n);
    return y;
}

// Floats built from integers only (no library math), identical on every platform and flag set.
std::vector<float> random_floats(size_t n, uint32_t seed, float scale) {
    std::mt19937 gen(seed);
    std::vector<float> x(n);
    for (float& v : x) {  // a sum of three uniforms: bell-shaped, with some spread between blocks
        const int32_t a = static_cast<int32_t>(gen()), b = static_cast<int32_t>(gen()), c = static_cast<int32_t>(gen());
        const double s = (static_cast<double>(a) + b + c) * 0x1p-31 / 3.0;
        v = static_cast<float>(s * scale);
    }
    return x;
}

double rms(const float* x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
    return std::sqrt(s / static_cast<double>(n));
}

// The weights of stories260K.bin: the token embedding (512 x 64) then the 5 layers' wq (64 x 64 each)
// follow a 28-byte header and the 5 attention norms (64 each).
std::vector<float> stories_weights() {
    const std::string path = std::string(LUMEN_REALDATA) + "/stories260K/stories260K.bin";
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    std::vector<float> all(512 * 64 + 5 * 64 + 5 * 64 * 64);
    in.seekg(28);
    in.read(reinterpret_cast<char*>(all.data()), static_cast<std::streamsize>(all.size() * sizeof(float)));
    std::vector<float> w(all.begin(), all.begin() + 512 * 64);
    w.insert(w.end(), all.begin() + 512 * 64 + 5 * 64, all.end());
    return w;
}

void put16(std::vector<std::byte>& b, size_t at, uint16_t v) { std::memcpy(b.data() + at, &v, 2); }

}  // namespace

// ------------------------------------------------------------------------------------------------
// layouts

TEST_CASE("Q4_K/Q6_K: block sizes and traits are ggml's", "[quant][q4_k][q6_k]") {
    CHECK(lumen::traits_of(dtype::q4_k).block_size == 256);
    CHECK(lumen::traits_of(dtype::q4_k).block_bytes == 144);
    CHECK(lumen::traits_of(dtype::q6_k).block_size == 256);
    CHECK(lumen::traits_of(dtype::q6_k).block_bytes == 210);
    CHECK(lumen::traits_of(dtype::q4_k).supported);
    CHECK(lumen::traits_of(dtype::q6_k).supported);
    CHECK(lumen::row_bytes(dtype::q4_k, 512) == 288);
    CHECK(lumen::row_bytes(dtype::q6_k, 768) == 630);
}

TEST_CASE("Q4_K: the 6-bit scales and mins unpack from their 12 packed bytes", "[quant][q4_k]") {
    // sub-block s gets scale 10 + 6 s and min 60 - 7 s (both need the 6th bit for some s)
    uint8_t sc[8], mn[8];
    for (int s = 0; s < 8; ++s) sc[s] = static_cast<uint8_t>(10 + 6 * s), mn[s] = static_cast<uint8_t>(60 - 7 * s);
    uint8_t packed[12] = {};
    for (int s = 0; s < 4; ++s) packed[s] = sc[s] | static_cast<uint8_t>((sc[s + 4] >> 4) << 6);
    for (int s = 0; s < 4; ++s) packed[s + 4] = mn[s] | static_cast<uint8_t>((mn[s + 4] >> 4) << 6);
    for (int s = 4; s < 8; ++s) packed[s + 4] = static_cast<uint8_t>((sc[s] & 15) | ((mn[s] & 15) << 4));
    for (int s = 0; s < 8; ++s) {
        uint8_t a, b;
        lumen::quant::q4_k_scale_min(s, packed, a, b);
        CHECK(int(a) == sc[s]);
        CHECK(int(b) == mn[s]);
    }
}

TEST_CASE("Q4_K: a hand-made block dequantizes to d * sc * q - dmin * m, element by element", "[quant][q4_k]") {
    std::vector<std::byte> b(144, std::byte{0});
    put16(b, 0, 0x3800);  // d = 0.5
    put16(b, 2, 0x3400);  // dmin = 0.25
    // scales: sub-block s has sc = s + 1, m = 2 s (all below 16: no high bits)
    for (int s = 0; s < 4; ++s) {
        b[4 + s] = std::byte(static_cast<uint8_t>(s + 1));
        b[4 + s + 4] = std::byte(static_cast<uint8_t>(2 * s));
    }
    for (int s = 4; s < 8; ++s) b[4 + s + 4] = std::byte(static_cast<uint8_t>((s + 1) | ((2 * s) << 4)));
    // element i = 64 c + 32 h + l sits in qs[32 c + l], low nibble for h = 0; give it q = (i * 7) % 16
    for (int i = 0; i < 256; ++i) {
        const int c = i / 64, h = (i % 64) / 32, l = i % 32;
        const uint8_t q = static_cast<uint8_t>((i * 7) % 16);
        auto& byte = b[16 + 32 * c + l];
        byte |= std::byte(static_cast<uint8_t>(h ? q << 4 : q));
    }
    const std::vector<float> y = dequantize(dtype::q4_k, b, 256);
    for (int i = 0; i < 256; ++i) {
        const int s = i / 32;
        const double expected = 0.5 * (s + 1) * ((i * 7) % 16) - 0.25 * (2 * s);
        REQUIRE(static_cast<double>(y[static_cast<size_t>(i)]) == expected);
    }
    CHECK(oracle_dequantize(dtype::q4_k, b, 256) == y);
}

TEST_CASE("Q6_K: a hand-made block dequantizes to d * scale * (q - 32), element by element", "[quant][q6_k]") {
    std::vector<std::byte> b(210, std::byte{0});
    put16(b, 208, 0xb400);  // d = -0.25
    for (int s = 0; s < 16; ++s) b[192 + s] = std::byte(static_cast<uint8_t>(static_cast<int8_t>(s % 2 ? -(s + 1) : s + 1)));
    // element i = 128 h + 32 k + l: its low 4 bits in ql[64 h + l + 32 (k & 1)] (high nibble when k >= 2),
    // its high 2 bits at bit 2 k of qh[32 h + l]; give it q = (i * 5 + 3) % 64
    for (int i = 0; i < 256; ++i) {
        const int h = i / 128, k = (i % 128) / 32, l = i % 32;
        const int q = (i * 5 + 3) % 64;
        b[static_cast<size_t>(64 * h + l + 32 * (k & 1))] |= std::byte(static_cast<uint8_t>(k >= 2 ? (q & 15) << 4 : q & 15));
        b[static_cast<size_t>(128 + 32 * h + l)] |= std::byte(static_cast<uint8_t>((q >> 4) << (2 * k)));
    }
    const std::vector<float> y = dequantize(dtype::q6_k, b, 256);
    for (int i = 0; i < 256; ++i) {
        const int s = i / 16;
        const int scale = s % 2 ? -(s + 1) : s + 1;
        const double expected = -0.25 * scale * (((i * 5 + 3) % 64) - 32);
        REQUIRE(static_cast<double>(y[static_cast<size_t>(i)]) == expected);
    }
    CHECK(oracle_dequantize(dtype::q6_k, b, 256) == y);
}

TEST_CASE("Q4_K/Q6_K: dequantize equals the transcription of ggml on random bytes", "[quant][q4_k][q6_k]") {
    std::mt19937 gen(17);
    for (dtype type : {dtype::q4_k, dtype::q6_k}) {
        const int64_t n = 256 * 40;
        std::vector<std::byte> b(static_cast<size_t>(lumen::row_bytes(type, n)));
        for (auto& v : b) v = std::byte(static_cast<uint8_t>(gen()));
        const int64_t bb = lumen::traits_of(type).block_bytes;
        for (int64_t k = 0; k < n / 256; ++k) {  // finite fp16 scales: exponent field below 31
            auto fix = [&](size_t at) { b[at + 1] &= std::byte{0xbb}; };
            if (type == dtype::q4_k) fix(static_cast<size_t>(k * bb)), fix(static_cast<size_t>(k * bb + 2));
            else fix(static_cast<size_t>(k * bb + 208));
        }
        CHECK(dequantize(type, b, n) == oracle_dequantize(type, b, n));
    }
}

// ------------------------------------------------------------------------------------------------
// the quantizers

TEST_CASE("Q4_K/Q6_K: what the quantizer writes, ggml's dequantizer reads back identically", "[quant][q4_k][q6_k]") {
    const int64_t n = 256 * 24;
    for (float scale : {1e-4f, 1.0f, 1000.0f}) {
        std::vector<float> x = random_floats(static_cast<size_t>(n), 5, scale);
        for (int i = 256; i < 512; ++i) x[static_cast<size_t>(i)] = 0.0f;              // an all-zero block
        for (int i = 512; i < 768; ++i) x[static_cast<size_t>(i)] = std::fabs(x[static_cast<size_t>(i)]);  // all >= 0
        for (int i = 768; i < 1024; ++i) x[static_cast<size_t>(i)] = -std::fabs(x[static_cast<size_t>(i)]); // all <= 0
        for (int i = 1024; i < 1056; ++i) x[static_cast<size_t>(i)] = 0.0f;            // one zero sub-block
        for (dtype type : {dtype::q4_k, dtype::q6_k}) {
            const std::vector<std::byte> bytes = quantize(type, x);
            CHECK(dequantize(type, bytes, n) == oracle_dequantize(type, bytes, n));
        }
    }
}

TEST_CASE("Q4_K: a block of exactly representable values round-trips exactly, with ggml's bytes", "[quant][q4_k]") {
    // x = (63 / 1024) q - 63 / 256 with q covering 0..15 in every sub-block: the best fit is that
    // scale and min, so d = 2^-10 (fp16 0x1400), dmin = 2^-8 (0x1c00), all 6-bit scales and mins 63.
    std::vector<float> x(256);
    for (int i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = 63.0f / 1024.0f * static_cast<float>((i * 11) % 16) - 63.0f / 256.0f;
    const std::vector<std::byte> b = quantize(dtype::q4_k, x);
    std::vector<uint8_t> head(16);
    std::memcpy(head.data(), b.data(), 16);
    CHECK(head == std::vector<uint8_t>{0x00, 0x14, 0x00, 0x1c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff});
    for (int i = 0; i < 256; ++i) {  // the nibbles are q
        const int c = i / 64, h = (i % 64) / 32, l = i % 32;
        const auto byte = std::to_integer<int>(b[static_cast<size_t>(16 + 32 * c + l)]);
        REQUIRE((h ? byte >> 4 : byte & 15) == (i * 11) % 16);
    }
    CHECK(dequantize(dtype::q4_k, b, 256) == x);
}

TEST_CASE("Q6_K: a block of exactly representable values round-trips exactly, with ggml's bytes", "[quant][q6_k]") {
    // x = q / 4, q in [-32, 31], every sub-block reaching -32: make_qx_quants finds scale 1/4 in each,
    // so iscale = -128 / 0.25, d = -1/512 (fp16 0x9800) and every int8 scale is -128.
    std::vector<float> x(256);
    for (int i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = i % 16 == 0 ? -8.0f : static_cast<float>((i * 13) % 64 - 32) / 4.0f;
    const std::vector<std::byte> b = quantize(dtype::q6_k, x);
    CHECK(std::to_integer<int>(b[208]) == 0x00);
    CHECK(std::to_integer<int>(b[209]) == 0x98);
    for (int s = 0; s < 16; ++s) CHECK(std::to_integer<int>(b[static_cast<size_t>(192 + s)]) == 0x80);
    CHECK(dequantize(dtype::q6_k, b, 256) == x);
}

TEST_CASE("Q4_K/Q6_K: an all-zero block quantizes to all-zero bytes", "[quant][q4_k][q6_k]") {
    const std::vector<float> zeros(256, 0.0f);
    // Q6_K: ggml writes a zeroed block. Q4_K: every sub-block gives scale 0 and min 0, the quants stay 0.
    CHECK(quantize(dtype::q6_k, zeros) == std::vector<std::byte>(210, std::byte{0}));
    CHECK(quantize(dtype::q4_k, zeros) == std::vector<std::byte>(144, std::byte{0}));
    for (float v : dequantize(dtype::q4_k, quantize(dtype::q4_k, zeros), 256)) CHECK(v == 0.0f);
}

// Round-trip error. Neither quantizer guarantees a per-element bound as simple as Q8_0's (they fit
// scales by least squares and clamp the outliers), so the bounds are on the error relative to the
// rms of each super-block, measured on bell-shaped random data and on stories260K's trained weights:
//   Q6_K: rms error <= 0.025 rms(x), max error <= 0.12 rms(x) per super-block
//   Q4_K: rms error <= 0.10  rms(x), max error <= 0.45 rms(x) per super-block
// (measured worst: Q6_K 0.018-0.021 / 0.047-0.074, Q4_K 0.078-0.087 / 0.21-0.28), and the types
// rank Q8_0 < Q6_K < Q4_K < Q4_0.
// The bounds need the fp16 super-block scales to be normal numbers (d >= 2^-14): Q6_K's d is about
// amax / 4096, so for groups with amax below ~0.25 it becomes a subnormal half and loses relative
// precision (ggml's format does the same: at amax ~ 1e-3 the error reaches ~7% rms).
namespace {
struct error_stats {
    double worst_rms = 0, worst_max = 0, total_rms = 0;
};
error_stats measure(dtype type, const std::vector<float>& x) {
    const int64_t n = static_cast<int64_t>(x.size());
    const std::vector<float> y = dequantize(type, quantize(type, x), n);
    error_stats s;
    double se = 0, sx = 0;
    for (int64_t b = 0; b < n / 256; ++b) {
        const double r = rms(x.data() + b * 256, 256);
        if (r == 0) continue;
        double e2 = 0, emax = 0;
        for (int64_t i = b * 256; i < (b + 1) * 256; ++i) {
            const double e = static_cast<double>(y[static_cast<size_t>(i)]) - x[static_cast<size_t>(i)];
            e2 += e * e, emax = std::max(emax, std::fabs(e));
            sx += static_cast<double>(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
        }
        se += e2;
        s.worst_rms = std::max(s.worst_rms, std::sqrt(e2 / 256) / r);
        s.worst_max = std::max(s.worst_max, emax / r);
    }
    s.total_rms = std::sqrt(se / sx);
    return s;
}
}  // namespace

TEST_CASE("Q4_K/Q6_K: round-trip error bounds on random tensors, and the ranking of the types", "[quant][q4_k][q6_k]") {
    for (float scale : {1.0f, 50.0f}) {
        const std::vector<float> x = random_floats(256 * 64, 23, scale);
        const error_stats q6 = measure(dtype::q6_k, x), q4 = measure(dtype::q4_k, x);
        INFO("scale " << scale << ": Q6_K " << q6.worst_rms << " / " << q6.worst_max << ", Q4_K " << q4.worst_rms << " / " << q4.worst_max);
        CHECK(q6.worst_rms <= 0.025);
        CHECK(q6.worst_max <= 0.12);
        CHECK(q4.worst_rms <= 0.10);
        CHECK(q4.worst_max <= 0.45);
        const double q8 = measure(dtype::q8_0, x).total_rms, q40 = measure(dtype::q4_0, x).total_rms;
        CHECK(q8 < q6.total_rms);
        CHECK(q6.total_rms < q4.total_rms);
        CHECK(q4.total_rms < q40);
    }
}

TEST_CASE("Q4_K/Q6_K: round-trip error bounds on stories260K's trained weights", "[quant][q4_k][q6_k][realdata]") {
    const std::vector<float> w = stories_weights();
    REQUIRE(w.size() == 512 * 64 + 5 * 64 * 64);  // the real data must be present
    const error_stats q6 = measure(dtype::q6_k, w), q4 = measure(dtype::q4_k, w);
    INFO("Q6_K " << q6.worst_rms << " / " << q6.worst_max << " (" << q6.total_rms << "), Q4_K " << q4.worst_rms << " / "
                 << q4.worst_max << " (" << q4.total_rms << ")");
    CHECK(q6.worst_rms <= 0.025);
    CHECK(q6.worst_max <= 0.12);
    CHECK(q4.worst_rms <= 0.10);
    CHECK(q4.worst_max <= 0.45);
    CHECK(measure(dtype::q8_0, w).total_rms < q6.total_rms);
    CHECK(q6.total_rms < q4.total_rms);
    CHECK(q4.total_rms < measure(dtype::q4_0, w).total_rms);
}

TEST_CASE("Q4_K/Q6_K: quantizing is deterministic and insensitive to buffer alignment", "[quant][q4_k][q6_k]") {
    const std::vector<float> x = random_floats(512, 9, 3.0f);
    for (dtype type : {dtype::q4_k, dtype::q6_k}) {
        const std::vector<std::byte> a = quantize(type, x);
        CHECK(quantize(type, x) == a);
        std::vector<std::byte> shifted(a.size() + 1);
        lumen::quantize_row(type, x.data(), shifted.data() + 1, 512);
        CHECK(std::memcmp(shifted.data() + 1, a.data(), a.size()) == 0);
        std::vector<float> y(512);
        lumen::dequantize_row(type, shifted.data() + 1, y.data(), 512);
        CHECK(y == dequantize(type, a, 512));
    }
}

TEST_CASE("Q4_K/Q6_K: bad rows throw lumen::error naming the type", "[quant][q4_k][q6_k]") {
    std::vector<float> x(512, 1.0f);
    std::vector<std::byte> out(1024);
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q4_k, x.data(), out.data(), 255), Catch::Contains("Q4_K"));
    CHECK_THROWS_WITH(lumen::dequantize_row(dtype::q6_k, out.data(), x.data(), 32), Catch::Contains("Q6_K"));
    x[300] = NAN;
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q4_k, x.data(), out.data(), 512), Catch::Contains("NaN"));
    x[300] = -INFINITY;
    CHECK_THROWS_WITH(lumen::quantize_row(dtype::q6_k, x.data(), out.data(), 512), Catch::Contains("Q6_K"));
}
