// cpu/matmul_packed_q6_k.hpp: Q6_K weights repacked once for AVX-512, 16 rows' super-blocks side by
// side with one 32-bit lane per row, the matrix-product kernel that reads them, and the row driver
// that the packed k-quant kernels share (rows_packed_kq, also Q4_K's: matmul_packed_q4_k.hpp).
//
// Why. The per-row Q6_K kernel (matmul_kquants.hpp) unpacks a row's 6-bit quants, moves the
// activations' signs onto them (vpmaddubsw wants one unsigned operand), reduces 8 blocks across
// lanes and gathers the row's scales, about 80 instructions per 210 bytes: on an output head that
// is a fifth of a small model's bytes it ran at 2/3 the speed per byte of the Q4_0 kernels.
// Repacked, vpdpbusd multiplies the unsigned quants by the signed activations directly, 16 rows at
// once, each row's sum in its own lane: no sign moves, no reductions, the scales one vector load.
//
// The layout. Rows [0, 16 n_groups) of W (rows, cols), n_super = cols / 256 super-blocks per row:
// group g, super-block sb is the record at (g n_super + sb) 3360 bytes:
//   d        the 16 rows' fp16 d, row order                                            32 bytes
//   scales   16 vectors of 16 int8, vector j = scale j (weights 16 j ..) of rows 0..15  256 bytes
//   quants   per block s = 0..7 (weights 32 s .. 32 s + 31), six 64-byte vectors, lane r (bytes
//            4 r .. 4 r + 3) for row r; element e of the block below means weight 32 s + e:
//              low[k], k = 0..3: byte i = low 4 bits of element 4 k + i,
//                                         | low 4 bits of element 16 + 4 k + i, << 4
//              high[h], h = 0, 1: byte i, bits 2 k, 2 k + 1 = top 2 bits of element 16 h + 4 k + i
//                                                                                        8 x 384 bytes
// 3360 = 16 x 210: a group takes exactly the bytes of its 16 rows in ggml's layout.
//
// The arithmetic. A weight is d sc (q - 32), q in [0, 63], sc one int8 per 16 weights (scale 2 s + h
// for half h of block s). Per half, vpdpbusd of q (unsigned) against the activations' 4 bytes
// broadcast, starting from -32 x the half's activation sum (q8_activations::half_sum), gives
// sum (q - 32) y exactly; times sc (vpmulld) and the halves added, the block's integer sum for the
// 16 rows: what scalar::q6_k_block::isum gives. The float steps are scalar::dot_kq's with rows in
// lanes: per block position s one accumulator, acc[s] = madd(d dx_b, isum_b, acc[s]), and reduce8 of
// the 8 at the end. So the results are the same bits as every other Q6_K kernel's.
//
// No software prefetch: the records are one forward stream per thread, and prefetching 2 records
// ahead halved the speed (one thread streaming tinyllama's 32000 x 2048 output head: 20 GB/s with,
// 31 without; hot in L2 the kernel runs at 52 GB/s).
#pragma once

#include "matmul_kquants.hpp"
#include "matmul_packed.hpp"

#if defined(LUMEN_CPU_HAVE_AVX512)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lumen::cpu::avx512 {

struct packed_q6_k {
    static constexpr int group_rows = packed_group_rows;                 // 16
    static constexpr int64_t super_bytes = block_q6_k_bytes;             // 210
    static constexpr int64_t record_bytes = group_rows * super_bytes;    // 3360
    static constexpr int64_t scales_at = 2 * group_rows;                 // 32
    static constexpr int64_t quants_at = scales_at + 16 * group_rows;    // 288
    static constexpr int64_t block_quant_bytes = 6 * 64;                 // 384

    // q in [0, 63] of weight e (0..255) of a super-block in ggml's layout (quant_k.hpp)
    static int quant(const uint8_t* super, int e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        const int low = (super[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
        const int high = (super[128 + 32 * h + l] >> (2 * k)) & 3;
        return low | high << 4;
    }

    // Repacks the 16 rows at w (w_stride bytes apart, n_super super-blocks each) into the group's
    // records (a pack_fn).
    static void pack_group(const std::byte* w, int64_t w_stride, int64_t n_super, std::byte* out) {
        for (int64_t sb = 0; sb < n_super; ++sb) {
            auto* record = reinterpret_cast<uint8_t*>(out + sb * record_bytes);
            std::memset(record + quants_at, 0, static_cast<size_t>(record_bytes - quants_at));
            for (int r = 0; r < group_rows; ++r) {
                const auto* super = reinterpret_cast<const uint8_t*>(w + r * w_stride + sb * super_bytes);
                std::memcpy(record + 2 * r, super + 208, 2);
                for (int j = 0; j < 16; ++j) record[scales_at + 16 * j + r] = super[192 + j];
                for (int e = 0; e < 256; ++e) {
                    const int s = e / 32, x = e % 32, h = x / 16, k = (x % 16) / 4, i = x % 4;
                    const int q = quant(super, e);
                    uint8_t* quants = record + quants_at + s * block_quant_bytes;
                    quants[64 * k + 4 * r + i] |= static_cast<uint8_t>((q & 0x0f) << (4 * h));
                    quants[256 + 64 * h + 4 * r + i] |= static_cast<uint8_t>((q >> 4) << (2 * k));
                }
            }
        }
    }

    // The quants of one block for the 16 rows, as bytes in [0, 63]: q[k] holds elements 4 k ..
    // 4 k + 3, q[4 + k] elements 16 + 4 k .. 16 + 4 k + 3.
    static void load_block(const std::byte* quants, __m512i q[8]) {
        const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
        const __mmask32 all32 = 0xffffffffu;
        const __m512i high0 = load_once(quants + 256), high1 = load_once(quants + 320);
        // bits 2 k, 2 k + 1 of the high bytes moved to bits 4, 5 (16-bit shifts: what crosses bytes is masked off)
        const __m512i high[2][4] = {
            {_mm512_maskz_slli_epi16(all32, high0, 4), _mm512_maskz_slli_epi16(all32, high0, 2), high0, _mm512_maskz_srli_epi16(all32, high0, 2)},
            {_mm512_maskz_slli_epi16(all32, high1, 4), _mm512_maskz_slli_epi16(all32, high1, 2), high1, _mm512_maskz_srli_epi16(all32, high1, 2)}};
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            const __m512i low = load_once(quants + 64 * k);
            constexpr int a_or_b_and_c = 0xf8;  // vpternlog: a | (b & c)
            q[k] = _mm512_ternarylogic_epi32(_mm512_and_si512(low, low4), high[0][k], bits45, a_or_b_and_c);
            q[4 + k] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_maskz_srli_epi16(all32, low, 4), low4), high[1][k], bits45,
                                                 a_or_b_and_c);
        }
    }

    // The 16 rows' integer sums of block b (its quants q, from load_block) against token t, times their
    // scales sc_low, sc_high (halves 0, 1).
    static __m512i isum_16(const __m512i q[8], __m512i sc_low, __m512i sc_high, const q8_activations& x, int64_t t, int64_t b) {
        const int8_t* y = x.block(t, b);
        const int32_t y_low = x.block_half_sum(t, b), y_high = x.block_sum(t, b) - y_low;
        __m512i low = _mm512_set1_epi32(-32 * y_low), high = _mm512_set1_epi32(-32 * y_high);
        LUMEN_UNROLL
        for (int k = 0; k < 4; ++k) {
            low = dpbusd_broadcast(low, q[k], y + 4 * k);
            high = dpbusd_broadcast(high, q[4 + k], y + 16 + 4 * k);
        }
        return _mm512_add_epi32(_mm512_mullo_epi32(low, sc_low), _mm512_mullo_epi32(high, sc_high));
    }
};

// The 16 rows' 8 lane sums of a k-quant tile as the scalar kernel's reduce8 does them, lane by
// lane, into y (16 floats): the last step of every packed k-quant tile.
inline void store_reduce8(const __m512 v[8], float* y) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(v[0], v[1]), _mm512_add_ps(v[2], v[3])),
                                     _mm512_add_ps(_mm512_add_ps(v[4], v[5]), _mm512_add_ps(v[6], v[7])));
    _mm512_storeu_ps(y, sum);
}

// The 16 rows of group g (rows 16 g ..) and tokens t .. t + T - 1.
template <int T>
inline void tile_packed_q6_k(const matmul_args& a, int64_t g, int64_t t) {
    using P = packed_q6_k;
    const q8_activations& x = *a.xq;
    const int64_t n_super = x.n_blocks / 8;
    const std::byte* record = a.w_packed + g * n_super * P::record_bytes;
    __m512 acc[T][8];  // [token][block position s]: 16 rows in lanes
    for (auto& token : acc)
        for (__m512& v : token) v = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < n_super; ++sb, record += P::record_bytes) {
        const __m512 d = _mm512_maskz_cvtph_ps(all16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(record)));
        LUMEN_UNROLL
        for (int s = 0; s < 8; ++s) {
            const std::byte* quants = record + P::quants_at + s * P::block_quant_bytes;
            __m512i q[8];
            P::load_block(quants, q);
            auto scales = [&](int j) {
                return _mm512_maskz_cvtepi8_epi32(all16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(record + P::scales_at + 16 * j)));
            };
            const __m512i sc_low = scales(2 * s), sc_high = scales(2 * s + 1);
            const int64_t b = 8 * sb + s;
            LUMEN_UNROLL
            for (int k = 0; k < T; ++k) {
                const __m512i isum = P::isum_16(q, sc_low, sc_high, x, t + k, b);
                const __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(x.scale(t + k, b)));
                acc[k][s] = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_maskz_cvtepi32_ps(all16, isum)), acc[k][s]);
            }
        }
    }
    for (int k = 0; k < T; ++k) store_reduce8(acc[k], a.y + (t + k) * a.y_stride + g * packed_group_rows);
}

// Rows [r0, r1) of a k-quant weight repacked in 16-row groups: the whole groups among them that
// a.w_packed holds through Tile (16 rows x max_tile tokens, 4 or 2, the tokens left over 2 or 1 at
// a time, in chunks of tokens whose activations stay in the L2 cache), the other rows through the
// per-row kernel of Unpacked (avx2::q4_k_super, avx2::q6_k_super).
template <class Unpacked, template <int> class Tile, int max_tile = 2>
inline void rows_packed_kq(const matmul_args& a, int64_t r0, int64_t r1) {
    auto unpacked = [&](int64_t begin, int64_t end) { avx2::rows_kq<Unpacked>(a, begin, end); };
    avx2::split_packed(a, r0, r1, packed_group_rows, unpacked, [&](int64_t g0, int64_t g1) {
        const int64_t chunk = a.n_tokens == 1 ? 1 : avx2::token_chunk(a.cols, max_tile);
        for (int64_t t0 = 0; t0 < a.n_tokens; t0 += chunk) {
            const int64_t t1 = std::min(a.n_tokens, t0 + chunk);
            for (int64_t g = g0; g < g1; ++g) {
                int64_t t = t0;
                if constexpr (max_tile == 4)
                    for (; t + 4 <= t1; t += 4) Tile<4>::run(a, g, t);
                for (; t + 2 <= t1; t += 2) Tile<2>::run(a, g, t);
                if (t < t1) Tile<1>::run(a, g, t);
            }
        }
    });
}

template <int T>
struct q6_k_tile {
    static void run(const matmul_args& a, int64_t g, int64_t t) { tile_packed_q6_k<T>(a, g, t); }
};

inline void rows_packed_q6_k(const matmul_args& a, int64_t r0, int64_t r1) { rows_packed_kq<avx2::q6_k_super, q6_k_tile>(a, r0, r1); }

}  // namespace lumen::cpu::avx512

#endif  // LUMEN_CPU_HAVE_AVX512
