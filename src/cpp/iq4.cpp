// Non-linear 4-bit types: IQ4_NL and IQ4_XS. Follows ggml-quants.c: quantize_iq4_nl / quantize_iq4_xs
// (both call quantize_row_iq4_nl_impl with ntry = 7, with or without quant_weights),
// best_index_int8, dequantize_row_iq4_nl / dequantize_row_iq4_xs.
// Lane form: one IQ4_NL block (32 values) or one IQ4_XS super-block (256 values) per lane.
#include <limits>

#include "kernels.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int8_t kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
constexpr int kNTry = 7;              // ggml_quantize_chunk's ntry for both types
constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

inline void store_fp16(uint8_t* p, float v) { const uint16_t h = fp32_to_fp16(v); std::memcpy(p, &h, 2); }
inline float load_fp16(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return fp16_to_fp32(h); }

// best_index_int8(16, kValues, a) per lane, plus q = kValues[l] as float.
// ggml picks l-1 over l iff a - v[l-1] < v[l] - a; for this grid that is exactly a < (v[l-1] + v[l]) / 2:
// the midpoints are representable and, near them, both differences are exact (the half gap is never in
// a higher binade than the midpoint; checked for the 2^21 floats around every midpoint). So l = the
// number of midpoints <= a, including ties (a == midpoint -> upper index) and the clamps at both ends
// (NaN compares false everywhere: 0). The midpoints are sorted, so a four-step binary search over them
// gives the same count with 4 compares instead of 15.
struct NlIndex {
  vi l;
  vf q;
};
constexpr float nl_mid(int k) { return 0.5f * ((float)kValues[k] + (float)kValues[k + 1]); }

// t[idx] per lane for a table of 8 floats (idx in 0..7).
inline vf lookup8(const float (&t)[8], vi idx) {
#if PRISM_W == 8 && defined(__AVX2__)
  return (vf)_mm256_permutevar8x32_ps(_mm256_loadu_ps(t), (__m256i)idx);
#elif PRISM_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_permutexvar_ps((__m512i)idx, _mm512_castps256_ps512(_mm256_loadu_ps(t)));
#else  // scalar and NEON builds: W <= 4 loads
  vf r = zerof();
  for (int i = 0; i < W; ++i) r[i] = t[idx[i] & 7];
  return r;
#endif
}

inline NlIndex nl_index(vf a) {
  static constexpr float kEvenMid[8] = {nl_mid(0), nl_mid(2), nl_mid(4), nl_mid(6),
                                        nl_mid(8), nl_mid(10), nl_mid(12), nl_mid(14)};
  static constexpr float kLow[8] = {kValues[0], kValues[1], kValues[2], kValues[3],
                                    kValues[4], kValues[5], kValues[6], kValues[7]};
  static constexpr float kHigh[8] = {kValues[8], kValues[9], kValues[10], kValues[11],
                                     kValues[12], kValues[13], kValues[14], kValues[15]};
  const vi s8 = a >= splat(nl_mid(7));                                   // l >= 8
  const vi s4 = a >= sel(s8, splat(nl_mid(11)), splat(nl_mid(3)));        // l >= base + 4
  const vf m2 = sel(s8, sel(s4, splat(nl_mid(13)), splat(nl_mid(9))), sel(s4, splat(nl_mid(5)), splat(nl_mid(1))));
  const vi s2 = a >= m2;                                                  // l >= base + 2
  const vi base = (s8 & 8) | (s4 & 4) | (s2 & 2);
  const vi s1 = a >= lookup8(kEvenMid, base >> 1);                        // l >= base + 1
  const vi l = base | (s1 & 1);
  const vi low3 = l & 7;
  return {l, sel(s8, lookup8(kHigh, low3), lookup8(kLow, low3))};
}

// One pass of the candidate loop: sums of w*q*x and w*q*q for the indices of id*x.
inline void nl_sums(const vf* x, const vf* w, vf id, vf& sumqx, vf& sumq2) {
  sumqx = zerof();
  sumq2 = zerof();
  for (int j = 0; j < 32; ++j) {
    const vf q = nl_index(id * x[j]).q;
    const vf wq = w[j] * q;  // C: w*q*x = (w*q)*x, w*q*q = (w*q)*q
    sumqx = sumqx + wq * x[j];
    sumq2 = sumq2 + wq * q;
  }
}

// The scale search of quantize_row_iq4_nl_impl for one 32-value block per lane (ntry > 0):
// returns scales[ib] (0 where the block's max |x| < GROUP_MAX_EPS).
inline vf nl_block_scale(const vf* x, const vf* w) {
  vf amax = zerof(), max = zerof();
  for (int j = 0; j < 32; ++j) {  // first element of largest |x| keeps its sign
    const vf ax = vabs(x[j]);
    const vi m = ax > amax;
    amax = sel(m, ax, amax);
    max = sel(m, x[j], max);
  }
  const vi live = amax >= splat(kGroupMaxEps);
  vf sumqx, sumq2;
  nl_sums(x, w, splat(1.0f) / (vneg(max) / splat((float)kValues[0])), sumqx, sumq2);
  const vi pos0 = sumq2 > zerof();
  vf d = sel(pos0, sumqx / sumq2, zerof());
  vf best = d * sumqx;
  for (int itry = -kNTry; itry <= kNTry; ++itry) {  // strictly sequential: `best` feeds the next test
    nl_sums(x, w, splat((float)(itry + kValues[0])) / max, sumqx, sumq2);
    const vi take = (sumq2 > zerof()) & (sumqx * sumqx > best * sumq2);
    d = sel(take, sumqx / sumq2, d);
    best = sel(take, d * sumqx, best);
  }
  return sel(live, d, zerof());
}

// Element weights of quantize_row_iq4_nl_impl: qw*sqrtf(sigma2 + x*x) with an imatrix, x*x without.
inline void nl_weights(const vf* x, const vf* qw, bool has_qw, vf sigma2, vf* w) {
  for (int j = 0; j < 32; ++j) w[j] = has_qw ? qw[j] * vsqrt(sigma2 + x[j] * x[j]) : x[j] * x[j];
}

// sigma2 = (sum of x*x over the super-block, sequential) * 2/sbs.
template <int N>
inline vf nl_sigma2(const vf* x) {
  vf s = zerof();
  for (int j = 0; j < N; ++j) s = s + x[j] * x[j];
  return s * splat(2.0f / (float)N);
}

// Final indices with the fp32 inverse scale, packed as ggml does: byte j of a 32-block holds element j
// in the low nibble and element j+16 in the high nibble.
inline void nl_pack(const vf* x, vf id, uint8_t* const* out, int off) {
  vi l[32];
  for (int j = 0; j < 32; ++j) l[j] = nl_index(id * x[j]).l;
  for (int lane = 0; lane < W; ++lane)
    for (int j = 0; j < 16; ++j) out[lane][off + j] = (uint8_t)(l[j][lane] | (l[j + 16][lane] << 4));
}

inline vf inv_or_zero(vf d) { return sel(d != zerof(), splat(1.0f) / d, zerof()); }

// Dequantization and bin widths of one 32-value block with scale dl (ggml: dl * kvalues_iq4nl[L]).
inline void nl_dequant32(const uint8_t* qs, float dl, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = dl * (float)kValues[qs[j] & 0xf];
    y[j + 16] = dl * (float)kValues[qs[j] >> 4];
  }
}

// Width of the bin around y on the side where x lies: |dl| * gap to the neighbouring grid value in that
// direction (the grid runs backwards in x when dl < 0). Beyond the outermost grid value the bin is
// unbounded: +inf, so the value counts as far from any boundary. 0 when dl == 0 (no bins).
struct NlGaps {
  // [0][l] = kValues[l] - kValues[l-1], [1][l] = kValues[l+1] - kValues[l]; inf beyond the ends
  float g[2][16];
  constexpr NlGaps() : g() {
    for (int l = 0; l < 16; ++l) {
      g[0][l] = l > 0 ? (float)(kValues[l] - kValues[l - 1]) : std::numeric_limits<float>::infinity();
      g[1][l] = l < 15 ? (float)(kValues[l + 1] - kValues[l]) : std::numeric_limits<float>::infinity();
    }
  }
};
constexpr NlGaps kGaps;

inline float nl_step(int l, float dl, float x) {
  const float y = dl * (float)kValues[l];
  const int up = (x > y) == (dl > 0.0f);  // index arithmetic, not a branch: the side is a coin flip
  return dl == 0.0f ? 0.0f : std::fabs(dl) * kGaps.g[up][l];
}

inline void nl_steps32(const uint8_t* qs, float dl, const float* x, float* step) {
  for (int j = 0; j < 16; ++j) {
    step[j] = nl_step(qs[j] & 0xf, dl, x[j]);
    step[j + 16] = nl_step(qs[j] >> 4, dl, x[j + 16]);
  }
}

// block_iq4_nl: d (fp16) @0, qs[16] @2.
struct IQ4_NL {
  static constexpr int BS = 32, BYTES = 18;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vf w[32];
    nl_weights(g.x, g.qw, has_qw, nl_sigma2<32>(g.x), w);
    const vf d = nl_block_scale(g.x, w);
    for (int lane = 0; lane < W; ++lane) store_fp16(out[lane], d[lane]);
    nl_pack(g.x, inv_or_zero(d), out, 2);  // the fp32 scale, not the stored fp16 one
  }
  static void dequantize(const uint8_t* b, float* y) { nl_dequant32(b + 2, load_fp16(b), y); }
  static void steps(const uint8_t* b, const float* x, float* step) { nl_steps32(b + 2, load_fp16(b), x, step); }
};

// block_iq4_xs: d (fp16) @0, scales_h (u16) @2, scales_l[4] @4, qs[128] @8; 8 sub-blocks of 32 with
// 6-bit scales ls, dl = d * (ls - 32).
struct IQ4_XS {
  static constexpr int BS = 256, BYTES = 136, NSUB = 8;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    const vf sigma2 = nl_sigma2<BS>(g.x);
    vf scales[NSUB];
    vf amax_scale = zerof(), max_scale = zerof();
    for (int ib = 0; ib < NSUB; ++ib) {
      vf w[32];
      nl_weights(g.x + 32 * ib, g.qw + 32 * ib, has_qw, sigma2, w);
      scales[ib] = nl_block_scale(g.x + 32 * ib, w);
      const vf ad = vabs(scales[ib]);
      const vi m = ad > amax_scale;  // first sub-block of largest |scale|
      amax_scale = sel(m, ad, amax_scale);
      max_scale = sel(m, scales[ib], max_scale);
    }
    const vf d = vneg(max_scale) / splat(32.0f);  // all-zero super-block: -0 (fp16 0x8000)
    const vf id = inv_or_zero(d);
    vi ls[NSUB];
    for (int ib = 0; ib < NSUB; ++ib) {
      const vi l = clampi(vnearest_int(id * scales[ib]), -32, 31);
      ls[ib] = l + splati(32);
      // re-quantize with the fp32 sub-block scale d*l (ggml does not use the fp16-rounded d here)
      nl_pack(g.x + 32 * ib, inv_or_zero(d * tof(l)), out, 8 + 16 * ib);
    }
    for (int lane = 0; lane < W; ++lane) {
      uint8_t* o = out[lane];
      store_fp16(o, d[lane]);
      uint16_t sh = 0;
      for (int ib = 0; ib < NSUB; ++ib) sh |= (uint16_t)((ls[ib][lane] >> 4) << (2 * ib));
      std::memcpy(o + 2, &sh, 2);
      for (int k = 0; k < NSUB / 2; ++k)
        o[4 + k] = (uint8_t)((ls[2 * k][lane] & 0xf) | ((ls[2 * k + 1][lane] & 0xf) << 4));
    }
  }
  static int sub_scale(const uint8_t* b, int ib) {
    uint16_t sh;
    std::memcpy(&sh, b + 2, 2);
    return ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    for (int ib = 0; ib < NSUB; ++ib) nl_dequant32(b + 8 + 16 * ib, d * (float)(sub_scale(b, ib) - 32), y + 32 * ib);
  }
  static void steps(const uint8_t* b, const float* x, float* step) {
    const float d = load_fp16(b);
    for (int ib = 0; ib < NSUB; ++ib)
      nl_steps32(b + 8 + 16 * ib, d * (float)(sub_scale(b, ib) - 32), x + 32 * ib, step + 32 * ib);
  }
};

}  // namespace

void register_iq4(KernelTable& t) {
  t.ops[type_index(QType::IQ4_NL)] = make_ops<QType::IQ4_NL, IQ4_NL>();
  t.ops[type_index(QType::IQ4_XS)] = make_ops<QType::IQ4_XS, IQ4_XS>();
}

}}  // namespace prism::PRISM_NS
