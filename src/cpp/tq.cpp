// Ternary and binary types: TQ1_0, TQ2_0 (ternary, d = max |x|), Q2_0 (levels -1..2, d = max |x|) and
// Q1_0 (sign bits, d = mean |x|). Follows ggml-quants.c: quantize_row_tq1_0_ref, quantize_row_tq2_0_ref,
// quantize_row_q2_0_ref, quantize_row_q1_0_ref and dequantize_row_{tq1_0,tq2_0,q2_0,q1_0}. None of them
// uses importance weights: quantize_tq{1,2}_0 ignore quant_weights and quantize_q{1,2}_0 run the _ref
// routine row by row with them, so every imatrix gives the bytes of none.
// Lane form: one block per lane; all work is elementwise except Q1_0's sequential sum of |x|.
#include <limits>

#include "kernels.h"
#include "quant_helpers.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int QK_K = 256;

// max |x| over a block: ggml's `amax = MAX(amax, fabsf(v))` and `if (a > amax) amax = a` are both exact
// maxima from +0.
template <int N>
inline vf block_amax(const vf* x) {
  vf amax = zerof();
  for (int j = 0; j < N; ++j) amax = vmax(amax, vabs(x[j]));
  return amax;
}

// lroundf(p) + 1 and (int)roundf(p) + 1 for p = x*id with |p| <= 1 + 2^-23 (|x| <= d, id = RN(1/d)):
// halves round away from zero. When 1/d overflows (d <= 2^-128), p is +-inf or NaN: lroundf then gives
// LONG_MIN and `int xi = lroundf(.) + 1` keeps its low 32 bits, 1 (TQ*: the zero level), whereas
// (int)roundf gives INT_MIN, clamped to level 0 (Q2_0).
template <bool Q2>
inline vi round_level(vf p) {
  const vi finite = vabs(p) <= splat(2.0f);
  const vi up = finite & (p >= splat(0.5f)), down = finite & (p <= splat(-0.5f));
  const vi level = splati(1) - up + down;  // masks are -1 where true
  return Q2 ? sel(finite, level, zeroi()) : level;
}

// Levels of a block with scale d = max |x| (TQ1_0, TQ2_0: `d ? 1/d : 0`; Q2_0 `d > 0 ? 1/d : 0`, the same
// for d >= 0).
template <int N, bool Q2>
inline vf amax_levels(const vf* x, vi* L) {
  const vf d = block_amax<N>(x);
  const vf id = sel(d != zerof(), splat(1.0f) / d, zerof());
  for (int j = 0; j < N; ++j) L[j] = round_level<Q2>(x[j] * id);
  return d;
}

// Bin width of symmetric grids with step |d| (0 when d == 0: no bins). Values never lie beyond the
// outermost level (d is the block's max |x|).
inline void uniform_steps(float d, float* step, int n) {
  for (int j = 0; j < n; ++j) step[j] = std::fabs(d);
}

// ---- TQ2_0: qs[64]@0, d@64; byte 32h + m holds elements 128h + m + 32n at bits 2n ----------------
struct TQ2_0 {
  static constexpr int BS = QK_K, BYTES = 66;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    vi L[BS];
    const vf d = amax_levels<BS, false>(g.x, L);
    for (int h = 0; h < 2; ++h)
      for (int m = 0; m < 32; ++m) {
        const vi* l = L + 128 * h + m;
        ob[32 * h + m] = l[0] | (l[32] << 2) | (l[64] << 4) | (l[96] << 6);
      }
    set_fp16(ob, 64, vfp16_bits(d));
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b + 64);
    for (int h = 0; h < 2; ++h)
      for (int n = 0; n < 4; ++n)
        for (int m = 0; m < 32; ++m) y[128 * h + 32 * n + m] = (float)(((b[32 * h + m] >> (2 * n)) & 3) - 1) * d;
  }
  static void steps(const uint8_t* b, const float*, float* step) { uniform_steps(load_fp16(b + 64), step, BS); }
};

// ---- TQ1_0: qs[48]@0 (5 trits a byte), qh[4]@48 (4 trits a byte), d@52 ---------------------------
// A byte stores its trits t0..t4 (t0 most significant) as ceil(256 * sum t_n 3^(4-n) / 243), so that
// the top trit is (byte*3) >> 8 and each further one follows by multiplying the byte by 3 (mod 256).
// Groups: bytes 0..31 hold elements m + 32n, bytes 32..47 elements 160 + m + 16n, qh[j] elements
// 240 + j + 4n (n = 0..3, the fifth trit 0).
constexpr int tq1_pack(int v) { return (v * 8631 + 8043) >> 13; }  // (v*256 + 242)/243 for v in 0..242
constexpr bool tq1_pack_exact() {
  for (int v = 0; v < 243; ++v)
    if (tq1_pack(v) != (v * 256 + 242) / 243) return false;
  return true;
}
static_assert(tq1_pack_exact(), "TQ1_0 byte packing constant");

struct TQ1_0 {
  static constexpr int BS = QK_K, BYTES = 54;
  static constexpr bool kRowSigma2 = false;
  // (first element, element stride, trits) of byte p
  struct Slot { int e0, stride, n; };
  static constexpr Slot slot(int p) {
    return p < 32 ? Slot{p, 32, 5} : p < 48 ? Slot{160 + (p - 32), 16, 5} : Slot{240 + (p - 48), 4, 4};
  }
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    vi L[BS];
    const vf d = amax_levels<BS, false>(g.x, L);
    for (int p = 0; p < 52; ++p) {
      const Slot s = slot(p);
      vi v = zeroi();
      for (int n = 0; n < s.n; ++n) v = v * 3 + L[s.e0 + s.stride * n];
      if (s.n == 4) v = v * 3;  // the first trit to the most significant place
      ob[p] = (v * 8631 + 8043) >> 13;
    }
    set_fp16(ob, 52, vfp16_bits(d));
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b + 52);
    for (int p = 0; p < 52; ++p) {
      const Slot s = slot(p);
      uint8_t q = b[p];
      for (int n = 0; n < s.n; ++n, q = (uint8_t)(q * 3))
        y[s.e0 + s.stride * n] = (float)((((uint16_t)q * 3) >> 8) - 1) * d;
    }
  }
  static void steps(const uint8_t* b, const float*, float* step) { uniform_steps(load_fp16(b + 52), step, BS); }
};

// ---- Q2_0: d@0, qs[16]@2; element j in bits 2(j%4) of qs[j/4]; y = (L - 1)*d ------------------------
struct Q2_0 {
  static constexpr int BS = 64, BYTES = 18;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    vi L[BS];
    set_fp16(ob, 0, vfp16_bits(amax_levels<BS, true>(g.x, L)));
    for (int k = 0; k < 16; ++k) ob[2 + k] = L[4 * k] | (L[4 * k + 1] << 2) | (L[4 * k + 2] << 4) | (L[4 * k + 3] << 6);
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    for (int j = 0; j < BS; ++j) y[j] = (float)(((b[2 + j / 4] >> (2 * (j % 4))) & 3) - 1) * d;
  }
  static void steps(const uint8_t* b, const float*, float* step) { uniform_steps(load_fp16(b), step, BS); }
};

// ---- Q1_0: d@0, qs[16]@2; bit j%8 of qs[j/8] set iff x >= 0 (so -0 too); y = +-d, d = sum|x|/128 -----
struct Q1_0 {
  static constexpr int BS = 128, BYTES = 18;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool, vi* ob) {
    vf sum = zerof();  // sequential, as ggml's loop
    for (int j = 0; j < BS; ++j) sum += vabs(g.x[j]);
    set_fp16(ob, 0, vfp16_bits(sum / splat((float)BS)));
    for (int k = 0; k < 16; ++k) {
      vi byte = zeroi();
      for (int b = 0; b < 8; ++b) byte |= (g.x[8 * k + b] >= zerof()) & (1 << b);
      ob[2 + k] = byte;
    }
  }
  // Table lookups, not branches, in both: the bits are coin flips (mispredictions had made the error
  // pass 20x slower than the quantizer).
  static void dequantize(const uint8_t* b, float* y) {
    float d = load_fp16(b);
    if (d != d) d = u2f(f2u(d) | 0x00400000u);  // ggml's fp16 conversion quiets a NaN (copied, not computed, here)
    const float level[2] = {-d, d};
    for (int j = 0; j < BS; ++j) y[j] = level[(b[2 + j / 8] >> (j % 8)) & 1];
  }
  // The one boundary is 0, 2|d| from the other level; values beyond +-|d| have none (inf).
  static void steps(const uint8_t* b, const float* x, float* step) {
    const float ad = std::fabs(load_fp16(b));
    const float width[2] = {ad == 0.0f ? 0.0f : 2.0f * ad, ad == 0.0f ? 0.0f : std::numeric_limits<float>::infinity()};
    for (int j = 0; j < BS; ++j) step[j] = width[std::fabs(x[j]) > ad];
  }
};

}  // namespace

void register_tq(KernelTable& t) {
  t.ops[type_index(QType::TQ1_0)] = make_ops_no_imatrix<QType::TQ1_0, TQ1_0>();
  t.ops[type_index(QType::TQ2_0)] = make_ops_no_imatrix<QType::TQ2_0, TQ2_0>();
  t.ops[type_index(QType::Q2_0)] = make_ops_no_imatrix<QType::Q2_0, Q2_0>();
  t.ops[type_index(QType::Q1_0)] = make_ops_no_imatrix<QType::Q1_0, Q1_0>();
}

}}  // namespace prism::PRISM_NS
