// Legacy 32-value block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (the last four: llama-quantize's fallbacks).
// Follows ggml-quants.c: quantize_row_q8_0_ref (Q8_0 ignores the imatrix, as quantize_q8_0 does);
// quantize_row_q{4,5}_{0,1}_ref without imatrix and quantize_row_q{4,5}_{0,1}_impl with one.
#include "kernels.h"
#include "quant_helpers.h"

namespace prism { namespace PRISM_NS {
namespace {


// (int)roundf(x) per lane, as ggml's `qs = roundf(x)` compiles (roundf, then cvttss2si): truncate, then
// step away from zero when |x - t| >= 0.5. Out of int range (id = 1/d overflows for fp32-subnormal d)
// the conversion gives INT_MIN, i.e. byte 0, and must not be stepped.
inline vi vroundf(vf x) {
  vi t = __builtin_convertvector(x, vi);
  const vf frac = vabs(x - tof(t));
  const vi away = (frac >= splat(0.5f)) & (t != splati(INT32_MIN));
  return t + (away & sel(x < zerof(), splati(-1), splati(1)));
}

struct Q8_0 {
  static constexpr int BS = 32, BYTES = 34;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool /*imatrix ignored by ggml*/, uint8_t* const* out) {
    vf amax = zerof();
    for (int j = 0; j < BS; ++j) amax = vmax(amax, vabs(g.x[j]));
    const vf d = amax / splat(127.0f);
    const vf id = sel(d != zerof(), splat(1.0f) / d, zerof());
    put_fp16(out, 0, vfp16_bits(d));
    for (int j = 0; j < BS; ++j) {
      const vi q = vroundf(g.x[j] * id);
      for (int lane = 0; lane < W; ++lane) out[lane][2 + j] = (uint8_t)(int8_t)q[lane];
    }
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    for (int j = 0; j < BS; ++j) y[j] = (float)(int8_t)b[2 + j] * d;
  }
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    const float d = load_fp16(b);
    for (int j = 0; j < BS; ++j) step[j] = d;
  }
};

// Q4_0, Q5_0 (symmetric: y = (L - 2^(NB-1))*d) and Q4_1, Q5_1 (affine: y = L*d + m), NB-bit levels.
// Layouts: d@0, [m@2 if affine], [qh (uint32, bit e = bit 4 of element e) if NB == 5], qs[16]
// (element j in the low nibble of qs[j], element j+16 in the high nibble).
template <int NB, bool AFFINE>
struct Legacy {
  static constexpr int BS = 32;
  static constexpr int NMAX = (1 << NB) - 1;   // largest level
  static constexpr int HALF = 1 << (NB - 1);   // symmetric zero level (8 or 16)
  static constexpr int QH = AFFINE ? 4 : 2;    // offset of qh (NB == 5) or qs (NB == 4)
  static constexpr int QS = QH + (NB == 5 ? 4 : 0);
  static constexpr int BYTES = QS + 16;
  static constexpr bool kRowSigma2 = true;     // the _impl routines weight with a whole-row sigma2

  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vi L[BS];
    vi hd, hm = zeroi();
    if (!has_qw) {
      vf id, base = zerof();  // level = trunc((x - base)*id + offset)
      float offset;
      if (AFFINE) {  // quantize_row_q4_1_ref / quantize_row_q5_1_ref
        vf min = splat(3.402823466e+38f), max = splat(-3.402823466e+38f);
        for (int j = 0; j < BS; ++j) { min = vmin(g.x[j], min); max = vmax(g.x[j], max); }
        const vf d = (max - min) / splat((float)NMAX);
        id = sel(d != zerof(), splat(1.0f) / d, zerof());
        hd = vfp16_bits(d);
        hm = vfp16_bits(min);
        base = min;
        offset = 0.5f;
      } else {  // quantize_row_q4_0_ref / quantize_row_q5_0_ref (all-zero block: d = +0/-8 = -0)
        vf amax;
        const vf max = first_absmax<BS>(g.x, amax);
        const vf d = max / splat(-(float)HALF);
        id = sel(d != zerof(), splat(1.0f) / d, zerof());
        hd = vfp16_bits(d);
        offset = (float)HALF + 0.5f;
      }
      for (int j = 0; j < BS; ++j) {
        const vf v = (AFFINE ? (g.x[j] - base) * id : g.x[j] * id) + splat(offset);
        // Q5_1: (uint8_t)v; the others: MIN(NMAX, (int8_t)v) stored in a uint8_t
        L[j] = (AFFINE && NB == 5) ? wrap_u8(vtrunc(v)) : wrap_u8(vmini(splati(NMAX), wrap_i8(vtrunc(v))));
      }
    } else {
      vf w[BS];
      for (int j = 0; j < BS; ++j) w[j] = g.qw[j] * vsqrt(g.row_sigma2 + g.x[j] * g.x[j]);
      if (AFFINE) {  // quantize_row_q4_1_impl / quantize_row_q5_1_impl
        vf the_min;
        hd = vfp16_bits(make_qkx_quants<BS, NMAX, false>(g.x, w, L, the_min, -0.9f, 0.05f, 36));
        hm = vfp16_bits(vneg(the_min));
      } else {  // quantize_row_q4_0_impl / quantize_row_q5_0_impl
        hd = vfp16_bits(make_qx_quants<BS, HALF>(g.x, L, w));
      }
    }
    put_fp16(out, 0, hd);
    if (AFFINE) put_fp16(out, 2, hm);
    if (NB == 5) {
      vi qh[4] = {zeroi(), zeroi(), zeroi(), zeroi()};
      for (int j = 0; j < BS; ++j) qh[j / 8] |= ((L[j] >> 4) & 1) << (j % 8);
      for (int k = 0; k < 4; ++k) put_byte(out, QH + k, qh[k]);
      for (int j = 0; j < 16; ++j) put_byte(out, QS + j, (L[j] & 15) | ((L[j + 16] & 15) << 4));
    } else {
      for (int j = 0; j < 16; ++j) put_byte(out, QS + j, L[j] | (L[j + 16] << 4));
    }
  }

  static int level(const uint8_t* b, int e) {
    int v = (b[QS + e % 16] >> (4 * (e / 16))) & 15;
    if (NB == 5) v |= ((b[QH + e / 8] >> (e % 8)) & 1) << 4;
    return v;
  }
  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q{4,5}_{0,1}
    const float d = load_fp16(b);
    if (AFFINE) {
      const float m = load_fp16(b + 2);
      for (int e = 0; e < BS; ++e) y[e] = (float)level(b, e) * d + m;
    } else {
      for (int e = 0; e < BS; ++e) y[e] = (float)(level(b, e) - HALF) * d;
    }
  }
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    const float d = std::fabs(load_fp16(b));
    for (int e = 0; e < BS; ++e) step[e] = d;
  }
};
using Q4_0 = Legacy<4, false>;
using Q4_1 = Legacy<4, true>;
using Q5_0 = Legacy<5, false>;
using Q5_1 = Legacy<5, true>;

}  // namespace

void register_legacy(KernelTable& t) {
  t.ops[type_index(QType::Q8_0)] = make_ops<Q8_0>();
  t.ops[type_index(QType::Q4_0)] = make_ops<Q4_0>();
  t.ops[type_index(QType::Q4_1)] = make_ops<Q4_1>();
  t.ops[type_index(QType::Q5_0)] = make_ops<Q5_0>();
  t.ops[type_index(QType::Q5_1)] = make_ops<Q5_1>();
}

}}  // namespace prism::PRISM_NS
