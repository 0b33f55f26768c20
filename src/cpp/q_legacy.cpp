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
  static void quantize(const Group<BS>& g, bool /*imatrix ignored by ggml*/, vi* ob) {
    vf amax = zerof();
    for (int j = 0; j < BS; ++j) amax = vmax(amax, vabs(g.x[j]));
    const vf d = amax / splat(127.0f);
    const vf id = sel(d != zerof(), splat(1.0f) / d, zerof());
    set_fp16(ob, 0, vfp16_bits(d));
    for (int j = 0; j < BS; ++j) {
      const vi q = vroundf(g.x[j] * id);
      ob[2 + j] = q;  // stored as (int8_t): the low byte
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

  static void quantize(const Group<BS>& g, bool has_qw, vi* ob) {
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
        vf the_min, d;
        make_qkx_quants<1, BS, NMAX, false>(g.x, w, L, &the_min, &d, -0.9f, 0.05f, 36);
        hd = vfp16_bits(d);
        hm = vfp16_bits(vneg(the_min));
      } else {  // quantize_row_q4_0_impl / quantize_row_q5_0_impl
        vf d;
        make_qx_quants<1, BS, HALF>(g.x, L, w, &d);
        hd = vfp16_bits(d);
      }
    }
    set_fp16(ob, 0, hd);
    if (AFFINE) set_fp16(ob, 2, hm);
    if (NB == 5) {
      vi qh[4] = {zeroi(), zeroi(), zeroi(), zeroi()};
      for (int j = 0; j < BS; ++j) qh[j / 8] |= ((L[j] >> 4) & 1) << (j % 8);
      for (int k = 0; k < 4; ++k) ob[QH + k] = qh[k];
      for (int j = 0; j < 16; ++j) ob[QS + j] = (L[j] & 15) | ((L[j + 16] & 15) << 4);
    } else {
      for (int j = 0; j < 16; ++j) ob[QS + j] = L[j] | (L[j + 16] << 4);
    }
  }

  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q{4,5}_{0,1}
    const float d = load_fp16(b);
    const float m = AFFINE ? load_fp16(b + 2) : 0.0f;
    uint32_t qh = 0;
    if (NB == 5) std::memcpy(&qh, b + QH, 4);
    const uint8_t* qs = b + QS;
    for (int h = 0; h < 2; ++h)  // element 16h + j: nibble h of qs[j], 5th bit 16h + j of qh
      for (int j = 0; j < 16; ++j) {
        int v = (qs[j] >> (4 * h)) & 15;
        if (NB == 5) v |= ((qh >> (16 * h + j)) & 1) << 4;
        y[16 * h + j] = AFFINE ? (float)v * d + m : (float)(v - HALF) * d;
      }
  }
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    const float d = std::fabs(load_fp16(b));
    for (int e = 0; e < BS; ++e) step[e] = d;
  }
};
// Row form of the no-imatrix paths: a block's 32 values sit in the lanes of NV = 32/W vectors.
// quantize_row_q{4,5}_{0,1}_ref take only elementwise steps and min/max reductions, so this changes no
// result while it skips the lane form's transposes (the lane form stays for W = 1 and for the imatrix
// paths, whose sums are order-dependent). W blocks go together: their per-lane extremes are transposed
// so that the per-block scalars (d, 1/d, fp16 bits) take one vector operation per group, which also
// keeps the long division chain off each block's path.
template <int NB, bool AFFINE>
struct LegacyRowForm {
  using K = Legacy<NB, AFFINE>;
  static constexpr int NV = K::BS / W;

  // ggml's own scans, for the rare blocks whose extreme is a zero or a +-a tie: the first occurrence
  // decides the sign.
  static float first_min(const float* x) {
    float m = 3.402823466e+38f;
    for (int j = 0; j < K::BS; ++j) if (x[j] < m) m = x[j];
    return m;
  }
  static float first_max(const float* x) {
    float m = -3.402823466e+38f;
    for (int j = 0; j < K::BS; ++j) if (x[j] > m) m = x[j];
    return m;
  }
  static float first_absmax(const float* x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < K::BS; ++j) if (amax < std::fabs(x[j])) { amax = std::fabs(x[j]); max = x[j]; }
    return max;
  }

  // W blocks (padding lanes point at zeros); returns (x - x) OR-ed over them: nonzero where a value is
  // Inf or NaN.
  static vi group(const float* const* xs, uint8_t* const* outs) {
    vf lo[W], hi[W];
    vi nonfinite = zeroi();
    for (int b = 0; b < W; ++b) {
      lo[b] = hi[b] = load_unaligned(xs[b]);
      nonfinite |= (vi)(lo[b] - lo[b]);
      for (int k = 1; k < NV; ++k) {
        const vf v = load_unaligned(xs[b] + k * W);
        nonfinite |= (vi)(v - v);
        lo[b] = vmin(v, lo[b]);
        hi[b] = vmax(v, hi[b]);
      }
    }
    transpose(lo);  // lo[k][b]: lane k's partial minimum of block b
    transpose(hi);
    vf mn = lo[0], mx = hi[0];
    for (int k = 1; k < W; ++k) { mn = vmin(lo[k], mn); mx = vmax(hi[k], mx); }

    vf d, base = zerof();
    vi hm = zeroi();
    if (AFFINE) {  // quantize_row_q{4,5}_1_ref
      if (any((mn == zerof()) | (mx == zerof())))
        for (int b = 0; b < W; ++b) {
          if (mn[b] == 0.0f) mn[b] = first_min(xs[b]);
          if (mx[b] == 0.0f) mx[b] = first_max(xs[b]);
        }
      d = (mx - mn) / splat((float)K::NMAX);
      base = mn;
      hm = vfp16_bits(mn);
    } else {  // quantize_row_q{4,5}_0_ref: max = the first element of largest |x|, +0 if all are zero
      // the larger of mx and -mn: no element is then its negative, so the value is unique
      vf max = sel(mx > vneg(mn), mx, mn);
      const vi tie = mx == vneg(mn);
      if (any(tie))
        for (int b = 0; b < W; ++b) if (tie[b]) max[b] = first_absmax(xs[b]);
      d = max / splat(-(float)K::HALF);
    }
    const vf id = sel(d != zerof(), splat(1.0f) / d, zerof());
    const vi hd = vfp16_bits(d);

    const float offset = AFFINE ? 0.5f : (float)K::HALF + 0.5f;
    for (int b = 0; b < W; ++b) {
      uint8_t* out = outs[b];
      const uint16_t h[2] = {(uint16_t)hd[b], (uint16_t)hm[b]};
      std::memcpy(out, h, AFFINE ? 4 : 2);
      // t lies in [0, NMAX + 1.5] unless id is infinite (d below 1/FLT_MAX), where trunc gives INT_MIN
      // and ggml's (int8_t)/(uint8_t) casts give 0: so max(trunc(t), 0), then MIN(NMAX, .) except for
      // Q5_1's plain (uint8_t), reproduces them.
      vi q[NV];
      for (int k = 0; k < NV; ++k) {
        const vf v = load_unaligned(xs[b] + k * W);
        const vf t = (AFFINE ? (v - splat(base[b])) * splat(id[b]) : v * splat(id[b])) + splat(offset);
        q[k] = vmaxi(vtrunc(t), zeroi());
        if (!(AFFINE && NB == 5)) q[k] = vmini(q[k], splati(K::NMAX));
      }
      if (NB == 5) {  // qh bit e = bit 4 of element e
        uint32_t qh = 0;
        for (int k = 0; k < NV; ++k) qh |= movemask((q[k] & 16) != zeroi()) << (k * W);
        std::memcpy(out + K::QH, &qh, 4);
      }
      vi packed[NV / 2];  // byte j: element j (low nibble), element j + 16 (high nibble)
      for (int k = 0; k < NV / 2; ++k)
        packed[k] = NB == 5 ? (q[k] & 15) | ((q[k + NV / 2] & 15) << 4) : q[k] | (q[k + NV / 2] << 4);
      store_bytes<NV / 2>(packed, out + K::QS);
    }
    return nonfinite;
  }

  static bool rows_checked(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row) {
    const int64_t nblocks = nrows * (n_per_row / K::BS);
    alignas(64) uint8_t scratch[W][K::BYTES];
    vi nonfinite = zeroi();
    for (int64_t b0 = 0; b0 < nblocks; b0 += W) {
      const float* xs[W];
      uint8_t* outs[W];
      for (int b = 0; b < W; ++b) {
        const bool real = b0 + b < nblocks;
        xs[b] = real ? x + (b0 + b) * K::BS : kPadding.zeros;
        outs[b] = real ? dst + (b0 + b) * K::BYTES : scratch[b];
      }
      nonfinite |= group(xs, outs);
    }
    return !any(nonfinite);
  }
  static void rows(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
    if (imatrix) return quantize_rows<K>(x, dst, nrows, n_per_row, imatrix);
    rows_checked(x, dst, nrows, n_per_row);  // the caller has checked the input
  }
};

template <QType T, int NB, bool AFFINE>
KernelOps legacy_ops() {
  KernelOps o = make_ops<T, Legacy<NB, AFFINE>>();
  if constexpr (W >= 4 && PW == W) {  // W = 1 keeps the lane form: the scalar cross-check path
    o.quantize = &LegacyRowForm<NB, AFFINE>::rows;
    o.quantize_checked = &LegacyRowForm<NB, AFFINE>::rows_checked;
  }
  return o;
}

}  // namespace

void register_legacy(KernelTable& t) {
  t.ops[type_index(QType::Q8_0)] = make_ops_no_imatrix<QType::Q8_0, Q8_0>();  // quantize_q8_0 ignores it
  t.ops[type_index(QType::Q4_0)] = legacy_ops<QType::Q4_0, 4, false>();
  t.ops[type_index(QType::Q4_1)] = legacy_ops<QType::Q4_1, 4, true>();
  t.ops[type_index(QType::Q5_0)] = legacy_ops<QType::Q5_0, 5, false>();
  t.ops[type_index(QType::Q5_1)] = legacy_ops<QType::Q5_1, 5, true>();
}

}}  // namespace prism::PRISM_NS
