// quant_k.hpp: ggml's "k-quant" super-block formats Q4_K and Q6_K, byte for byte: the block layouts,
// the dequantizers (ggml's dequantize_row_q4_K / _q6_K) and the reference quantizers (ggml's
// quantize_row_q4_K_ref / _q6_K_ref, which llama-quantize uses when no importance matrix is given),
// rewritten from the rules of ggml-quants.c: the same search over candidate scales, the same
// float operations in the same order, the same rounding (nearest_int: round half to even).
//
// Both formats cover QK_K = 256 elements per super-block; all values little-endian, no padding.
//
//   Q4_K  144 bytes: fp16 d, fp16 dmin, uint8 scales[12], uint8 qs[128]
//         8 sub-blocks of 32; sub-block s has a 6-bit scale sc[s] and a 6-bit min m[s], packed:
//           s < 4:  sc = scales[s] & 63,                               m = scales[s + 4] & 63
//           s >= 4: sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4,
//                   m  = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4
//         qs holds 4 chunks of 64 elements as 32 bytes each: low nibbles are the chunk's first 32
//         elements (sub-block 2c), high nibbles its last 32 (sub-block 2c + 1).
//         x = d * sc[s] * q - dmin * m[s],  q in [0, 15]
//   Q6_K  210 bytes: uint8 ql[128], uint8 qh[64], int8 scales[16], fp16 d
//         16 sub-blocks of 16 with an int8 scale each; q in [0, 63] is 4 low bits (ql) and 2 high
//         bits (qh). Per half of 128 elements (ql += 64, qh += 32, scales += 8), for l < 32:
//           q[l]      = (ql[l]      & 15) | ((qh[l] >> 0) & 3) << 4
//           q[l + 32] = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4
//           q[l + 64] = (ql[l]      >> 4) | ((qh[l] >> 4) & 3) << 4
//           q[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4
//         x[i] = d * scales[i / 16] * (q[i] - 32)
//
// Floating-point contraction: ggml's reference is C compiled with -std=c11, where GCC does not fuse
// a * b + c into an FMA. The functions below that must round like it are marked
// LUMEN_QK_NO_CONTRACT, which turns contraction off for them whatever the build flags (GCC: the
// optimize attribute; Clang: the fp pragma), so the bytes do not change with -march or -mfma.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "detail/fp16.hpp"
#include "error.hpp"

#if defined(__clang__)
#define LUMEN_QK_NO_CONTRACT
#define LUMEN_QK_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define LUMEN_QK_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define LUMEN_QK_NO_CONTRACT_BODY
#else
#define LUMEN_QK_NO_CONTRACT
#define LUMEN_QK_NO_CONTRACT_BODY
#endif

namespace lumen {

inline constexpr int64_t qk_k = 256;  // elements per k-quant super-block

// --- block layouts (documentation and size checks; the code copies bytes, so no alignment is assumed)

struct block_q4_k {
    uint16_t d;            // super-block scale of the sub-block scales, IEEE half
    uint16_t dmin;         // super-block scale of the sub-block mins, IEEE half
    uint8_t scales[12];    // 8 scales and 8 mins, 6 bits each, packed as described above
    uint8_t qs[qk_k / 2];  // 4-bit quants
};
static_assert(sizeof(block_q4_k) == 144, "block_q4_K must be 144 bytes, as in ggml");

struct block_q6_k {
    uint8_t ql[qk_k / 2];      // low 4 bits of the quants
    uint8_t qh[qk_k / 4];      // high 2 bits of the quants
    int8_t scales[qk_k / 16];  // sub-block scales
    uint16_t d;                // super-block scale, IEEE half
};
static_assert(sizeof(block_q6_k) == 210, "block_q6_K must be 210 bytes, as in ggml");

inline constexpr int64_t block_q4_k_bytes = sizeof(block_q4_k);
inline constexpr int64_t block_q6_k_bytes = sizeof(block_q6_k);

namespace quant {

// ggml's nearest_int: adding 1.5 * 2^23 leaves round(x) (half to even) in the low mantissa bits.
// Exact for |x| < 2^22; beyond that the result is what ggml's trick gives, without undefined behaviour.
LUMEN_QK_NO_CONTRACT inline int nearest_int(float x) {
    LUMEN_QK_NO_CONTRACT_BODY
    const float v = x + 12582912.0f;
    int32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

// The 6-bit scale and min of sub-block j of a Q4_K block (ggml's get_scale_min_k4).
inline void q4_k_scale_min(int j, const uint8_t* scales, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = scales[j] & 63;
        m = scales[j + 4] & 63;
    } else {
        sc = static_cast<uint8_t>((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
        m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

inline void check_finite_superblock(const float* x, const char* type) {
    for (int64_t j = 0; j < qk_k; ++j)
        if (!std::isfinite(x[j]))
            throw error(std::string("quantize_row: cannot quantize a NaN or infinite value to ") + type);
}

// ggml's make_qkx2_quants: the scale and min (x ~ scale * L - the_min, L in [0, nmax]) that
// minimise the weighted squared error over nstep + 1 candidate scales (nmax + rmin + rdelta * is)
// / (max - min), each refined by weighted least squares; the min is kept <= 0 (the_min >= 0).
// n <= 32.
LUMEN_QK_NO_CONTRACT inline float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                                                   float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
    LUMEN_QK_NO_CONTRACT_BODY
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = static_cast<uint8_t>(l < 0 ? 0 : l > nmax ? nmax : l);
        const float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = static_cast<uint8_t>(l);
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// ggml's make_qx_quants with rmse_type 1 and no importance weights (the weights are x^2): the
// signed scale for L in [-nmax, nmax - 1] (stored as L + nmax) that maximises (sum w x l)^2 / sum w l^2
// over the candidates -(nmax + 0.1 is) / max, is in [-9, 9]. An all-(near-)zero group gives 0.
LUMEN_QK_NO_CONTRACT inline float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
    LUMEN_QK_NO_CONTRACT_BODY
    constexpr float group_max_eps = 1e-15f;
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < group_max_eps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    auto clamp = [nmax](int l) { return l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l; };
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clamp(nearest_int(iscale * x[i]));
        L[i] = static_cast<int8_t>(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clamp(nearest_int(iscale * x[i]));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clamp(nearest_int(iscale * x[i])));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// --- Q4_K

// out[0..256) = d * sc[s] * q - dmin * m[s], as ggml's dequantize_row_q4_K.
LUMEN_QK_NO_CONTRACT inline void dequantize_block_q4_k(const std::byte* block, float* out) {
    LUMEN_QK_NO_CONTRACT_BODY
    block_q4_k b;
    std::memcpy(&b, block, sizeof b);
    const float d = detail::fp16_to_fp32(b.d);
    const float min = detail::fp16_to_fp32(b.dmin);
    const uint8_t* q = b.qs;
    for (int j = 0, is = 0; j < qk_k; j += 64, is += 2, q += 32) {
        uint8_t sc, m;
        q4_k_scale_min(is, b.scales, sc, m);
        const float d1 = d * sc, m1 = min * m;
        q4_k_scale_min(is + 1, b.scales, sc, m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; ++l) out[j + l] = d1 * (q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; ++l) out[j + 32 + l] = d2 * (q[l] >> 4) - m2;
    }
}

// ggml's quantize_row_q4_K_ref for one super-block: per sub-block of 32, make_qkx2_quants with
// weights av_x + |x| (av_x = rms of the sub-block) and 21 candidates (rmin -1, step 0.1); the 8
// scales and mins are quantized to 6 bits against their maxima (d = max_scale / 63, dmin =
// max_min / 63, as fp16), then every element is requantized with the stored scales:
// q = clamp(nearest_int((x + dmin * m) / (d * sc)), 0, 15).
LUMEN_QK_NO_CONTRACT inline void quantize_block_q4_k(const float* x, std::byte* block) {
    LUMEN_QK_NO_CONTRACT_BODY
    check_finite_superblock(x, "Q4_K");
    block_q4_k y{};
    uint8_t L[qk_k];
    uint8_t Laux[32];
    float weights[32];
    float mins[qk_k / 32];
    float scales[qk_k / 32];

    float max_scale = 0;  // as the min is subtracted, scales are positive
    float max_min = 0;
    for (int j = 0; j < qk_k / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }

    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < qk_k / 32; ++j) {
        uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));  // truncated to 8 bits first, as ggml
        uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            y.scales[j] = ls;
            y.scales[j + 4] = lm;
        } else {
            y.scales[j + 4] = static_cast<uint8_t>((ls & 0x0f) | ((lm & 0x0f) << 4));
            y.scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
            y.scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
        }
    }
    y.d = detail::fp32_to_fp16(max_scale / 63.0f);
    y.dmin = detail::fp32_to_fp16(max_min / 63.0f);

    for (int j = 0; j < qk_k / 32; ++j) {
        uint8_t sc, m;
        q4_k_scale_min(j, y.scales, sc, m);
        const float d = detail::fp16_to_fp32(y.d) * sc;
        if (d == 0.0f) continue;  // keep make_qkx2_quants' levels
        const float dm = detail::fp16_to_fp32(y.dmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = static_cast<uint8_t>(l < 0 ? 0 : l > 15 ? 15 : l);
        }
    }

    uint8_t* q = y.qs;
    for (int j = 0; j < qk_k; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    std::memcpy(block, &y, sizeof y);
}

// --- Q6_K

// out[i] = d * scales[i / 16] * (q[i] - 32), as ggml's dequantize_row_q6_K.
LUMEN_QK_NO_CONTRACT inline void dequantize_block_q6_k(const std::byte* block, float* out) {
    LUMEN_QK_NO_CONTRACT_BODY
    block_q6_k b;
    std::memcpy(&b, block, sizeof b);
    const float d = detail::fp16_to_fp32(b.d);
    float ds[qk_k / 16];  // d * scale, the first product of ggml's d * sc[is] * q
    for (int s = 0; s < qk_k / 16; ++s) ds[s] = d * b.scales[s];
    // Element n + 32 k + l (half n, quarter k, l < 32): low bits in ql[n/2 + l + 32 (k & 1)]
    // (high nibble when k >= 2), high bits at bit 2 k of qh[n/4 + l]. Written in output order.
    for (int n = 0; n < qk_k; n += 128) {
        const uint8_t* ql = b.ql + n / 2;
        const uint8_t* qh = b.qh + n / 4;
        for (int k = 0; k < 4; ++k) {
            const uint8_t* lo = ql + 32 * (k & 1);
            const int shift = 4 * (k >> 1);
            const float* s = ds + n / 16 + 2 * k;
            float* y = out + n + 32 * k;
            for (int l = 0; l < 32; ++l) {
                const int q = ((lo[l] >> shift) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4);
                y[l] = s[l / 16] * static_cast<float>(q - 32);
            }
        }
    }
}

// ggml's quantize_row_q6_K_ref for one super-block: per sub-block of 16, make_qx_quants (nmax 32);
// the scale of largest magnitude (with its sign) sets iscale = -128 / max_scale, d = 1 / iscale
// (fp16) and the int8 sub-block scales min(127, nearest_int(iscale * scale)); every element is then
// requantized: q = clamp(nearest_int(x / (d * scale)), -32, 31) + 32. A block whose scales are all
// below 1e-15 is all zeros.
LUMEN_QK_NO_CONTRACT inline void quantize_block_q6_k(const float* x, std::byte* block) {
    LUMEN_QK_NO_CONTRACT_BODY
    check_finite_superblock(x, "Q6_K");
    block_q6_k y{};
    int8_t L[qk_k];
    float scales[qk_k / 16];

    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < qk_k / 16; ++ib) {
        const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        const float abs_scale = std::fabs(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < 1e-15f) {  // ggml's GROUP_MAX_EPS: an all-zero block, d = +0
        std::memcpy(block, &y, sizeof y);
        return;
    }

    const float iscale = -128.0f / max_scale;
    y.d = detail::fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < qk_k / 16; ++ib) {
        const int s = nearest_int(iscale * scales[ib]);
        y.scales[ib] = static_cast<int8_t>(s < 127 ? s : 127);
    }

    for (int j = 0; j < qk_k / 16; ++j) {
        const float d = detail::fp16_to_fp32(y.d) * y.scales[j];
        if (d == 0.0f) continue;  // keep make_qx_quants' levels
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int(x[16 * j + ii] / d);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            L[16 * j + ii] = static_cast<int8_t>(l + 32);
        }
    }

    uint8_t* ql = y.ql;
    uint8_t* qh = y.qh;
    for (int j = 0; j < qk_k; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0x0f;
            const uint8_t q2 = L[j + l + 32] & 0x0f;
            const uint8_t q3 = L[j + l + 64] & 0x0f;
            const uint8_t q4 = L[j + l + 96] & 0x0f;
            ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
            ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
            qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                         ((L[j + l + 96] >> 4) << 6));
        }
    }
    std::memcpy(block, &y, sizeof y);
}

}  // namespace quant
}  // namespace lumen

#undef LUMEN_QK_NO_CONTRACT
#undef LUMEN_QK_NO_CONTRACT_BODY
