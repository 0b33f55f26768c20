// 4-bit float types: MXFP4 (32 E2M1 values, one E8M0 scale) and NVFP4 (64 values, four sub-blocks of 16
// with UE4M3 scales). Follows ggml-quants.c: quantize_row_mxfp4_ref, quantize_row_nvfp4_ref,
// best_index_mxfp4, dequantize_row_mxfp4, dequantize_row_nvfp4, and ggml-impl.h's
// ggml_e8m0_to_fp32_half, ggml_fp32_to_ue4m3, ggml_ue4m3_to_fp32. quantize_mxfp4 / quantize_nvfp4
// ignore quant_weights. The value table is tables::kvalues_fp4 (ggml's kvalues_mxfp4).
// Lane form: one block per lane.
#include <limits>

#include "kernels.h"
#include "quant_helpers.h"
#include "quant_tables.h"

namespace prism { namespace PRISM_NS {
namespace {

using tables::kvalues_fp4;
// Index k < 8 holds the magnitude kvalues_fp4[k] (ascending from 0), index k + 8 its negative.
constexpr bool fp4_table_ok() {
  for (int k = 0; k < 8; ++k) {
    if (kvalues_fp4[k + 8] != -kvalues_fp4[k]) return false;
    if (k > 0 && kvalues_fp4[k] <= kvalues_fp4[k - 1]) return false;
  }
  return kvalues_fp4[0] == 0;
}
static_assert(fp4_table_ok(), "kvalues_fp4: 8 ascending magnitudes from 0, then their negatives");

// best_index_mxfp4(x, d) per lane, given m[k] = kvalues_fp4[k]*d (exact: d is a power of two or a
// 4-bit-mantissa float, the values have at most 4 bits). ggml scans the 16 values for the first
// strictly smallest |v*d - x|. A candidate of the other sign than x has an error >= |x| = the error of
// index 0 and never wins, nor does index 8 (-0 ties with 0), so the scan over the magnitudes of |x| in
// index order, with the same rounded errors, picks the same value; x < 0 then takes index k + 8 (k > 0).
inline vi fp4_signed(vf x, vi k) { return k | ((x < zerof()) & (k != zeroi()) & 8); }
inline vi fp4_index_scan(vf x, const vf* m) {
  const vf ax = vabs(x);
  vf best = ax;
  vi idx = zeroi();
  for (int k = 1; k < 8; ++k) {
    const vf err = vabs(m[k] - ax);
    const vi take = err < best;
    best = sel(take, err, best);
    idx = sel(take, splati(k), idx);
  }
  return fp4_signed(x, idx);
}

// The same index from the midpoints: the magnitude k is the number of midpoints (v[k-1] + v[k])/2 * d
// strictly below |x|. Exact when d > 0 and every |x| <= 2*v[7]*d: then |x| - v[k-1]*d and v[k]*d - |x|
// of the bracketing pair are exact (Sterbenz: neighbours are at most a factor 2 apart), except
// d - |x| for |x| < d/2, where index 0 wins either way; ties go to the lower index as in the scan; and
// every other candidate's rounded error is strictly larger (the values are >= d apart). The midpoints
// have at most 5 significant bits, so mid*d is exact too (d >= 2^-128 for MXFP4, >= 2^-10 for NVFP4).
constexpr float fp4_mid(int k) { return 0.5f * (float)(kvalues_fp4[k - 1] + kvalues_fp4[k]); }
inline vi fp4_index_mid(vf x, const vf* md) {
  const vf ax = vabs(x);
  vi k = zeroi();
  for (int j = 1; j < 8; ++j) k -= ax > md[j];  // masks are -1
  return fp4_signed(x, k);
}

// Nibbles of n values of one block per lane with scale d and max |x| amax: byte j holds x[j] (low) and
// x[n/2 + j] (high). d == 0 makes every candidate tie: index 0.
template <int n>
inline void fp4_pack(const vf* x, vf d, vf amax, vi* ob) {
  const vi live = d > zerof();
  vf m[8];
  for (int k = 0; k < 8; ++k) m[k] = splat((float)kvalues_fp4[k]) * d;
  if (any(live & (amax > splat(2.0f) * m[7]))) {  // NVFP4 scales clamped at 448: ggml's scan
    for (int j = 0; j < n / 2; ++j)
      ob[j] = fp4_index_scan(x[j], m) | (fp4_index_scan(x[n / 2 + j], m) << 4);
    return;
  }
  vf md[8];
  for (int k = 1; k < 8; ++k) md[k] = splat(fp4_mid(k)) * d;
  for (int j = 0; j < n / 2; ++j)
    ob[j] = (fp4_index_mid(x[j], md) | (fp4_index_mid(x[n / 2 + j], md) << 4)) & live;
}

inline void fp4_unpack(const uint8_t* qs, float d, int n, float* y) {
  for (int j = 0; j < n / 2; ++j) {
    y[j] = (float)kvalues_fp4[qs[j] & 0xf] * d;
    y[n / 2 + j] = (float)kvalues_fp4[qs[j] >> 4] * d;
  }
}

// Bin width around a value of grid index l: d times the gap to the neighbouring magnitude on the side
// of |x| (0 has +-kvalues_fp4[1] on both sides); inf beyond the largest; 0 when d == 0. Table lookups
// instead of branches: the side is a coin flip, and mispredicted branches had made this pass 20x slower
// than the quantizer.
inline void fp4_steps(const uint8_t* qs, float d, const float* x, int n, float* step) {
  const float ad = std::fabs(d);
  if (ad == 0.0f) {
    for (int j = 0; j < n; ++j) step[j] = 0.0f;
    return;
  }
  float y[8], gap[16];  // gap[k]: towards 0, gap[8 + k]: away from 0
  for (int k = 0; k < 8; ++k) {
    y[k] = ad * (float)kvalues_fp4[k];
    gap[k] = ad * (float)(k == 0 ? kvalues_fp4[1] : kvalues_fp4[k] - kvalues_fp4[k - 1]);
    gap[8 + k] = k == 7 ? std::numeric_limits<float>::infinity()
                        : ad * (float)(kvalues_fp4[k + 1] - kvalues_fp4[k]);
  }
  for (int j = 0; j < n; ++j) {
    const int k = (qs[j % (n / 2)] >> (j < n / 2 ? 0 : 4)) & 7;
    step[j] = gap[k + 8 * (std::fabs(x[j]) > y[k])];
  }
}

template <int N>
inline vf block_amax(const vf* x) {  // `if (amax < fabsf(v)) amax = fabsf(v)` from 0
  vf amax = zerof();
  for (int j = 0; j < N; ++j) amax = vmax(vabs(x[j]), amax);
  return amax;
}

// ---- E8M0 -------------------------------------------------------------------------------------------
// ggml_e8m0_to_fp32_half: 2^(e-128), with the two subnormal patterns for e < 2.
inline float e8m0_half(int e) { return u2f(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23); }
inline vf ve8m0_half(vi e) { return (vf)sel(e < splati(2), splati(0x00200000) << e, (e - 1) << 23); }

// quantize_row_mxfp4_ref's exponent: (uint8_t)(floorf(log2f(amax)) - 2 + 127), 0 for amax == 0. The float
// is converted through a 32-bit int (x86-64's cvttss2si), so tiny amax wraps (e.g. 2^-149 -> 232). log2f
// is libm's, as ggml's: only a mantissa within 2^-11 of 2 (or a subnormal) can round log2f up to the next
// integer, so the exponent bits answer for the others.
inline int mxfp4_exponent(float amax) {
  if (!(amax > 0.0f)) return 0;
  const uint32_t u = f2u(amax);
  const int biased = (int)(u >> 23);
  const float fl = biased != 0 && (u & 0x7fffffu) < 0x7ff000u ? (float)(biased - 127) : std::floor(std::log2(amax));
  return (uint8_t)(int32_t)(fl - 2.0f + 127.0f);
}

// ---- UE4M3 ------------------------------------------------------------------------------------------
// ggml_ue4m3_to_fp32: 0 and 0x7F are zero; exponent field 0 is subnormal (man * 2^-9); the value is halved.
inline float ue4m3_value(int u) {
  if (u == 0 || u == 0x7f) return 0.0f;
  const int e = (u >> 3) & 0xf, m = u & 7;
  const float raw = e == 0 ? (float)m * 0x1p-9f : (float)(8 + m) * u2f((uint32_t)(e - 10 + 127) << 23);
  return raw * 0.5f;
}
inline vf vue4m3_value(vi u) {
  const vi e = (u >> 3) & 0xf, m = u & 7;
  const vf raw = sel(e == zeroi(), tof(m) * splat(0x1p-9f), tof(m + 8) * (vf)((e - 10 + 127) << 23));
  return sel((u == zeroi()) | (u == splati(0x7f)), zerof(), raw * splat(0.5f));
}

// ggml_fp32_to_ue4m3 per lane: 0 unless x > 0; x clamped to 448; below 2^-6 the subnormal code
// (int)(x*512 + 0.5f) clamped to 1..7 (0 below 1); else the top 3 mantissa bits rounded up on bit 19
// (half away, no sticky bits), with the carry into the exponent; exponent 15 and up saturate at 0x7E.
inline vi vue4m3_code(vf x) {
  const vi pos = x > zerof();
  x = sel(x > splat(448.0f), splat(448.0f), x);
  const vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 127 + 7;
  const vi sub_m = vmini(vtrunc(x * splat(512.0f) + splat(0.5f)), splati(7));
  const vi sub = sel(sub_m < splati(1), zeroi(), sub_m);
  vi m = ((bits >> 20) & 7) + ((bits >> 19) & 1);
  const vi carry = m > splati(7);
  m = sel(carry, zeroi(), m);
  e = e - carry;  // carry is -1 where true
  vi code = sel(e >= splati(15), splati(0x7e), (e << 3) | m);
  code = sel(((bits >> 23) & 0xff) - 127 + 7 <= zeroi(), sub, code);
  return sel(pos, code, zeroi());
}

// ---- MXFP4: e@0, qs[16]@1 ---------------------------------------------------------------------------
struct MXFP4 {
  static constexpr int BS = 32, BYTES = 17;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    const vf amax = block_amax<BS>(g.x);
    vi e = zeroi();
    for (int lane = 0; lane < W; ++lane) e[lane] = mxfp4_exponent(amax[lane]);
    ob[0] = e;
    fp4_pack<BS>(g.x, ve8m0_half(e), amax, ob + 1);
  }
  static void dequantize(const uint8_t* b, float* y) { fp4_unpack(b + 1, e8m0_half(b[0]), BS, y); }
  // e = 0 is what an all-zero block gets (and blocks of max |x| in [2^-125, 2^-124)): no bins
  static void steps(const uint8_t* b, const float* x, float* step) {
    fp4_steps(b + 1, b[0] ? e8m0_half(b[0]) : 0.0f, x, BS, step);
  }
};

// ---- NVFP4: d[4]@0 (UE4M3 of amax/6 per sub-block of 16), qs[32]@4 (8 bytes per sub-block) ----------
struct NVFP4 {
  static constexpr int BS = 64, BYTES = 36, SUB = 16;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    for (int s = 0; s < BS / SUB; ++s) {
      const vf* xb = g.x + SUB * s;
      const vf amax = block_amax<SUB>(xb);
      const vi u = vue4m3_code(amax / splat(6.0f));
      ob[s] = u;
      fp4_pack<SUB>(xb, vue4m3_value(u), amax, ob + 4 + SUB / 2 * s);
    }
  }
  static void dequantize(const uint8_t* b, float* y) {
    for (int s = 0; s < BS / SUB; ++s) fp4_unpack(b + 4 + SUB / 2 * s, ue4m3_value(b[s]), SUB, y + SUB * s);
  }
  static void steps(const uint8_t* b, const float* x, float* step) {
    for (int s = 0; s < BS / SUB; ++s)
      fp4_steps(b + 4 + SUB / 2 * s, ue4m3_value(b[s]), x + SUB * s, SUB, step + SUB * s);
  }
};

}  // namespace

void register_fp4(KernelTable& t) {
  t.ops[type_index(QType::MXFP4)] = make_ops_no_imatrix<QType::MXFP4, MXFP4>();
  t.ops[type_index(QType::NVFP4)] = make_ops_no_imatrix<QType::NVFP4, NVFP4>();
}

}}  // namespace prism::PRISM_NS
