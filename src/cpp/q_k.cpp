// K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, one 256-value super-block per lane.
// Without imatrix each follows ggml-quants.c quantize_row_qN_K_ref, with one quantize_row_qN_K_impl
// (the dispatch of quantize_qN_K / ggml_quantize_chunk). Dequantization follows dequantize_row_qN_K.
#include "kernels.h"
#include "quant_helpers.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int QK_K = 256;
// Sub-blocks handled together by one helper call (independent sum chains to overlap, see
// quant_helpers.h), for 16- and 32-value sub-blocks.
constexpr int G16 = 4, G32 = 2;
// make_q3_quants' refinement drops converged groups, so more groups pay off until the working set
// outgrows L1 (measured on Zen 4: 8 for AVX2, 4 for AVX-512).
constexpr int GQ3 = W >= 16 ? 4 : 8;

// Sequential sum of v[0..n) (ggml's `s += v[l]` loops, s starting at 0).
inline vf seq_sum(const vf* v, int n) {
  vf s = zerof();
  for (int i = 0; i < n; ++i) s += v[i];
  return s;
}

// Sum of x^2 over the whole super-block, in element order (sigma2 of the _impl routines).
inline vf sum_x2(const vf* x) {
  vf s = zerof();
  for (int i = 0; i < QK_K; ++i) s += x[i] * x[i];
  return s;
}

// sigma2 of the _impl routines: TWO * sum(x^2) / QK_K (Q2_K has no factor 2).
template <bool TWO>
inline vf sigma2_of(const vf* x) {
  return (TWO ? splat(2.0f) * sum_x2(x) : sum_x2(x)) / splat((float)QK_K);
}

// Importance weights of the _impl routines, qw * sqrtf(sigma2 + x*x), for the G sub-blocks of SUB
// values from sub-block j on, and their sequential sums sw[j..j+G).
template <int SUB, int G>
inline void imatrix_weights(const Group<QK_K>& g, int j, vf sigma2, vf* w, vf* sw) {
  const vf* x = g.x + SUB * j;
  const vf* qw = g.qw + SUB * j;
  for (int i = 0; i < SUB * G; ++i) w[i] = qw[i] * vsqrt(sigma2 + x[i] * x[i]);
  for (int s = 0; s < G; ++s) sw[j + s] = seq_sum(w + SUB * s, SUB);
}

// Requantization of one sub-block with the fp16-rounded scales (the loop after the scale packing):
// affine types l = clamp(nearest_int((x + m)/d), 0, NMAX); lanes with d == 0 keep the search's L.
template <int SUB, int NMAX>
inline void requant_affine(const vf* x, vf d, vf m, vi* L) {
  const vi keep = d == zerof();
  if (all(keep)) return;
  for (int i = 0; i < SUB; ++i) L[i] = sel(keep, L[i], clampi(vnearest_int((x[i] + m) / d), 0, NMAX));
}

// Symmetric types: L = clamp(nearest_int(x/d), LO, HI) - LO.
template <int SUB, int LO, int HI>
inline void requant_symmetric(const vf* x, vf d, vi* L) {
  const vi keep = d == zerof();
  if (all(keep)) return;
  for (int i = 0; i < SUB; ++i) L[i] = sel(keep, L[i], clampi(vnearest_int(x[i] / d), LO, HI) - LO);
}

// qs of Q2_K/Q3_K: four 2-bit levels per byte, elements l, l+32, l+64, l+96 of each 128-half.
inline void put_2bit(vi* ob, int pos, const vi* L) {
  for (int h = 0; h < QK_K; h += 128)
    for (int l = 0; l < 32; ++l)
      ob[pos + h / 4 + l] = L[h + l] | (L[h + l + 32] << 2) | (L[h + l + 64] << 4) | (L[h + l + 96] << 6);
}

// Dequantization is exact up to the final `- ml` (fp16 d times small integers), so these follow
// ggml's dequantize_row_* loops only for speed: each inner loop writes contiguous outputs and
// vectorises. steps: |dl| of the element's sub-block (K::sub_scales gives dl per sub-block).
template <class K>
struct KSteps {
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    float dl[K::NSUB];
    K::sub_scales(b, dl);
    constexpr int SUB = QK_K / K::NSUB;
    for (int j = 0; j < K::NSUB; ++j)
      for (int l = 0; l < SUB; ++l) step[SUB * j + l] = std::fabs(dl[j]);
  }
};

// ------------------------------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16, 2-bit levels, 4-bit scale and min per sub-block.
// Layout (block_q2_K): scales[16]@0 (lo nibble scale, hi nibble min), qs[64]@16, d, dmin.
struct Q2_K : KSteps<Q2_K> {
  static constexpr int BS = QK_K, BYTES = 84, NSUB = 16;
  static constexpr int D = offsetof(block_q2_K, d), DMIN = offsetof(block_q2_K, dmin);
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, vi* ob) {
    vi L[QK_K], sc[NSUB];
    vf scales[NSUB], mins[NSUB];
    vi hd, hm;
    if (!has_qw) {  // quantize_row_q2_K_ref
      vf max_scale = zerof(), max_min = zerof();
      for (int j = 0; j < NSUB; j += G16) {
        vf w[16 * G16];
        for (int l = 0; l < 16 * G16; ++l) w[l] = vabs(g.x[16 * j + l]);
        make_qkx_quants<G16, 16, 3, true>(g.x + 16 * j, w, L + 16 * j, mins + j, scales + j, -0.5f, 0.1f, 15);
      }
      for (int j = 0; j < NSUB; ++j) {
        max_scale = vmax(scales[j], max_scale);
        max_min = vmax(mins[j], max_min);
      }
      const vi has_s = max_scale > zerof(), has_m = max_min > zerof();
      const vf iss = splat(15.f) / max_scale, ism = splat(15.f) / max_min;
      for (int j = 0; j < NSUB; ++j) {
        const vi ls = sel(has_s, vnearest_int(iss * scales[j]), zeroi());
        const vi lm = sel(has_m, vnearest_int(ism * mins[j]), zeroi());
        sc[j] = wrap_u8(ls | (lm << 4));
      }
      hd = vfp16_bits(sel(has_s, max_scale / splat(15.f), zerof()));
      hm = vfp16_bits(sel(has_m, max_min / splat(15.f), zerof()));
    } else {  // quantize_row_q2_K_impl (sigma2 without the factor 2)
      const vf sigma2 = sigma2_of<false>(g.x);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; j += G16) {
        vf w[16 * G16];
        imatrix_weights<16, G16>(g, j, sigma2, w, sw);
        make_qkx_quants<G16, 16, 3, false>(g.x + 16 * j, w, L + 16 * j, mins + j, scales + j, -0.9f, 0.05f, 36);
      }
      vi Ls[NSUB], Lm[NSUB];
      hd = vfp16_bits(make_qp_quants<NSUB, 15>(scales, Ls, sw));
      hm = vfp16_bits(make_qp_quants<NSUB, 15>(mins, Lm, sw));
      for (int j = 0; j < NSUB; ++j) sc[j] = wrap_u8(Ls[j] | (Lm[j] << 4));
    }
    const vf fd = vfp16_value(hd), fm = vfp16_value(hm);
    for (int j = 0; j < NSUB; ++j)
      requant_affine<16, 3>(g.x + 16 * j, fd * tof(sc[j] & 15), fm * tof(sc[j] >> 4), L + 16 * j);
    for (int j = 0; j < NSUB; ++j) ob[j] = sc[j];
    put_2bit(ob, 16, L);
    set_fp16(ob, D, hd);
    set_fp16(ob, DMIN, hm);
  }

  static void sub_scales(const uint8_t* b, float* dl) {
    const float d = load_fp16(b + D);
    for (int j = 0; j < NSUB; ++j) dl[j] = d * (float)(b[j] & 15);
  }
  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q2_K
    const float d = load_fp16(b + D), dmin = load_fp16(b + DMIN);
    for (int j = 0; j < NSUB; ++j) {  // sub-block j: elements 16j.., bits 2*((j/2)%4) of qs[32*(j/8) + 16*(j%2) + l]
      const float dl = d * (float)(b[j] & 15), ml = dmin * (float)(b[j] >> 4);
      const uint8_t* q = b + 16 + 32 * (j / 8) + 16 * (j % 2);
      const int shift = 2 * ((j / 2) % 4);
      for (int l = 0; l < 16; ++l) y[16 * j + l] = dl * (float)((q[l] >> shift) & 3) - ml;
    }
  }
};

// ------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, levels -4..3 (2 low bits + high bit), signed 6-bit scales.
// Layout (block_q3_K): hmask[32]@0, qs[64]@32, scales[12]@96, d.
struct Q3_K : KSteps<Q3_K> {
  static constexpr int BS = QK_K, BYTES = 110, NSUB = 16;
  static constexpr int D = offsetof(block_q3_K, d);
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, vi* ob) {
    vi L[QK_K], ls[NSUB];  // ls: 6-bit scale code 0..63 (scale = ls - 32)
    vi hd;
    vf scales[NSUB];
    if (!has_qw) {  // quantize_row_q3_K_ref
      vf amax = zerof(), max_scale = zerof();
      for (int j = 0; j < NSUB; j += GQ3) make_q3_quants<GQ3, 16, 4>(g.x + 16 * j, L + 16 * j, scales + j);
      for (int j = 0; j < NSUB; ++j) {
        const vi m = vabs(scales[j]) > amax;
        amax = sel(m, vabs(scales[j]), amax);
        max_scale = sel(m, scales[j], max_scale);
      }
      const vi nz = max_scale != zerof();
      const vf iscale = splat(-32.f) / max_scale;
      for (int j = 0; j < NSUB; ++j)
        ls[j] = sel(nz, clampi(wrap_i8(vnearest_int(iscale * scales[j])), -32, 31) + 32, zeroi());
      hd = vfp16_bits(sel(nz, splat(1.0f) / iscale, zerof()));
    } else {  // quantize_row_q3_K_impl
      const vf sigma2 = sigma2_of<true>(g.x);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; j += G16) {
        vf w[16 * G16];
        imatrix_weights<16, G16>(g, j, sigma2, w, sw);
        make_qx_quants<G16, 16, 4>(g.x + 16 * j, L + 16 * j, w, scales + j);
      }
      vf d_block;
      make_qx_quants<1, NSUB, 32>(scales, ls, sw, &d_block);
      hd = vfp16_bits(d_block);
    }
    const vf fd = vfp16_value(hd);
    for (int j = 0; j < NSUB; ++j) requant_symmetric<16, -4, 3>(g.x + 16 * j, fd * tof(ls[j] - 32), L + 16 * j);

    for (int m = 0; m < 32; ++m) {  // high bit of element 32k+m in bit k of hmask[m]
      vi h = zeroi();
      for (int k = 0; k < 8; ++k) h |= (L[32 * k + m] > 3) & (1 << k);
      ob[m] = h;
    }
    for (int e = 0; e < QK_K; ++e) L[e] = sel(L[e] > 3, L[e] - 4, L[e]);
    put_2bit(ob, 32, L);
    vi sb[12];
    for (int k = 0; k < 12; ++k) sb[k] = zeroi();
    for (int j = 0; j < NSUB; ++j) {
      if (j < 8) sb[j] = ls[j] & 15;
      else sb[j - 8] |= (ls[j] & 15) << 4;
      sb[8 + j % 4] |= (ls[j] >> 4) << (2 * (j / 4));
    }
    for (int k = 0; k < 12; ++k) ob[96 + k] = sb[k];
    set_fp16(ob, D, hd);
  }

  static void sub_scales(const uint8_t* b, float* dl) {
    const float d = load_fp16(b + D);
    const uint8_t* s = b + 96;
    for (int j = 0; j < NSUB; ++j) {
      const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
      dl[j] = d * (float)((lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    }
  }
  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q3_K
    float dl[NSUB];
    sub_scales(b, dl);
    for (int j = 0; j < NSUB; ++j) {  // element 16j+l: low bits as Q2_K, high bit (e/32) of hmask[e%32]
      const int off = 16 * (j % 2), shift = 2 * ((j / 2) % 4), hbit = j / 2;
      const uint8_t* q = b + 32 + 32 * (j / 8) + off;
      const uint8_t* hm = b + off;
      for (int l = 0; l < 16; ++l)
        y[16 * j + l] = dl[j] * (float)(((q[l] >> shift) & 3) - ((hm[l] >> hbit) & 1 ? 0 : 4));
    }
  }
};

// ------------------------------------------------------------------------------------------------
// Q4_K / Q5_K: 8 sub-blocks of 32, 4/5-bit levels, 6-bit scales and mins packed in 12 bytes.
// Layout: d@0, dmin@2, scales[12]@4, then Q4_K qs[128]@16; Q5_K qh[32]@16, qs[128]@48.

// The 12-byte scale/min packing of quantize_row_q4_K_ref/_impl (uint8 semantics kept, so that values
// above 63, reachable only through make_qp_quants' wrap, decode exactly as in ggml).
inline void pack_k4(const vi* ls, const vi* lm, vi* sb) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sb[j] = ls[j];
      sb[j + 4] = lm[j];
    } else {
      sb[j + 4] = (ls[j] & 15) | ((lm[j] & 15) << 4);
      sb[j - 4] = wrap_u8(sb[j - 4] | ((ls[j] >> 4) << 6));
      sb[j] = wrap_u8(sb[j] | ((lm[j] >> 4) << 6));
    }
  }
}
// get_scale_min_k4, lane form and scalar.
inline void unpack_k4(int j, const vi* sb, vi& sc, vi& m) {
  if (j < 4) { sc = sb[j] & 63; m = sb[j + 4] & 63; return; }
  sc = (sb[j + 4] & 15) | ((sb[j - 4] >> 6) << 4);
  m = (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
}
inline void unpack_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) { sc = q[j] & 63; m = q[j + 4] & 63; return; }
  sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
  m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
}

struct Q4KParams {
  static constexpr int NMAX = 15, BYTES = 144;
  static constexpr float rmin = -1.0f, rdelta = 0.1f;
  static constexpr int nstep = 20;
  static constexpr bool kClampImatrixScales = false;  // quantize_row_q4_K_impl packs Ls as is
};
struct Q5KParams {
  static constexpr int NMAX = 31, BYTES = 176;
  static constexpr float rmin = -0.5f, rdelta = 0.1f;
  static constexpr int nstep = 15;
  static constexpr bool kClampImatrixScales = true;  // quantize_row_q5_K_impl: MIN(63, Ls)
};

template <class P>
struct Q45_K : KSteps<Q45_K<P>> {
  static constexpr int BS = QK_K, BYTES = P::BYTES, NSUB = 8, NMAX = P::NMAX;
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, vi* ob) {
    vi L[QK_K], ls[NSUB], lm[NSUB];
    vf scales[NSUB], mins[NSUB];
    vi hd, hm;
    if (!has_qw) {  // quantize_row_q4_K_ref / quantize_row_q5_K_ref
      vf max_scale = zerof(), max_min = zerof();
      for (int j = 0; j < NSUB; j += G32) {
        vf w[32 * G32];
        for (int s = 0; s < G32; ++s) {
          const vf* x = g.x + 32 * (j + s);
          vf s2 = zerof();
          for (int l = 0; l < 32; ++l) s2 += x[l] * x[l];
          const vf av_x = vsqrt(s2 / splat(32.0f));
          for (int l = 0; l < 32; ++l) w[32 * s + l] = av_x + vabs(x[l]);
        }
        make_qkx_quants<G32, 32, NMAX, false>(g.x + 32 * j, w, L + 32 * j, mins + j, scales + j, P::rmin, P::rdelta,
                                              P::nstep);
      }
      for (int j = 0; j < NSUB; ++j) {
        max_scale = vmax(scales[j], max_scale);
        max_min = vmax(mins[j], max_min);
      }
      const vf inv_scale = sel(max_scale > zerof(), splat(63.f) / max_scale, zerof());
      const vf inv_min = sel(max_min > zerof(), splat(63.f) / max_min, zerof());
      for (int j = 0; j < NSUB; ++j) {  // uint8_t ls = nearest_int(..); ls = MIN(63, ls)
        ls[j] = vmini(wrap_u8(vnearest_int(inv_scale * scales[j])), splati(63));
        lm[j] = vmini(wrap_u8(vnearest_int(inv_min * mins[j])), splati(63));
      }
      hd = vfp16_bits(max_scale / splat(63.f));
      hm = vfp16_bits(max_min / splat(63.f));
    } else {  // quantize_row_q4_K_impl / quantize_row_q5_K_impl
      const vf sigma2 = sigma2_of<true>(g.x);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; j += G32) {
        vf w[32 * G32];
        imatrix_weights<32, G32>(g, j, sigma2, w, sw);
        make_qkx_quants<G32, 32, NMAX, false>(g.x + 32 * j, w, L + 32 * j, mins + j, scales + j, -0.9f, 0.05f, 36);
      }
      hd = vfp16_bits(make_qp_quants<NSUB, 63>(scales, ls, sw));
      hm = vfp16_bits(make_qp_quants<NSUB, 63>(mins, lm, sw));
      if (P::kClampImatrixScales)
        for (int j = 0; j < NSUB; ++j) { ls[j] = vmini(ls[j], splati(63)); lm[j] = vmini(lm[j], splati(63)); }
    }
    vi sb[12];
    pack_k4(ls, lm, sb);
    const vf fd = vfp16_value(hd), fm = vfp16_value(hm);
    for (int j = 0; j < NSUB; ++j) {
      vi sc, m;
      unpack_k4(j, sb, sc, m);
      requant_affine<32, NMAX>(g.x + 32 * j, fd * tof(sc), fm * tof(m), L + 32 * j);
    }
    set_fp16(ob, 0, hd);
    set_fp16(ob, 2, hm);
    for (int k = 0; k < 12; ++k) ob[4 + k] = sb[k];
    if (NMAX == 15) {
      for (int h = 0; h < 4; ++h)
        for (int l = 0; l < 32; ++l) ob[16 + 32 * h + l] = L[64 * h + l] | (L[64 * h + l + 32] << 4);
    } else {
      for (int l = 0; l < 32; ++l) {
        vi qh = zeroi();
        for (int h = 0; h < 4; ++h)
          qh |= (((L[64 * h + l] >> 4) & 1) << (2 * h)) | (((L[64 * h + l + 32] >> 4) & 1) << (2 * h + 1));
        ob[16 + l] = qh;
      }
      for (int h = 0; h < 4; ++h)
        for (int l = 0; l < 32; ++l)
          ob[48 + 32 * h + l] = (L[64 * h + l] & 15) | ((L[64 * h + l + 32] & 15) << 4);
    }
  }

  static void sub_scales(const uint8_t* b, float* dl) {
    const float d = load_fp16(b);
    for (int j = 0; j < NSUB; ++j) {
      int sc, m;
      unpack_k4(j, b + 4, sc, m);
      dl[j] = d * (float)sc;
    }
  }
  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q4_K / dequantize_row_q5_K
    const float d = load_fp16(b), dmin = load_fp16(b + 2);
    const uint8_t* qs = b + (NMAX == 15 ? 16 : 48);
    for (int j = 0; j < NSUB; ++j) {  // sub-block j: nibble j%2 of qs[32*(j/2) + l], 5th bit j of qh[l]
      int sc, m;
      unpack_k4(j, b + 4, sc, m);
      const float dl = d * (float)sc, ml = dmin * (float)m;
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 15;
        if (NMAX == 31) v += (b[16 + l] >> j) & 1 ? 16 : 0;
        y[32 * j + l] = dl * (float)v - ml;
      }
    }
  }
};
using Q4_K = Q45_K<Q4KParams>;
using Q5_K = Q45_K<Q5KParams>;

// ------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, levels -32..31, signed 8-bit scales.
// Layout (block_q6_K): ql[128]@0, qh[64]@128, scales[16]@192 (int8), d.
struct Q6_K : KSteps<Q6_K> {
  static constexpr int BS = QK_K, BYTES = 210, NSUB = 16;
  static constexpr int D = offsetof(block_q6_K, d);
  static constexpr bool kRowSigma2 = false;

  // quantize_row_q6_K_ref, and quantize_row_q6_K_impl (raw imatrix weights, no sigma2 term).
  static void quantize(const Group<BS>& g, bool has_qw, vi* ob) {
    vi L[QK_K], sc[NSUB];
    vf scales[NSUB];
    vf max_abs = zerof(), max_scale = zerof();
    for (int j = 0; j < NSUB; j += G16)
      make_qx_quants<G16, 16, 32>(g.x + 16 * j, L + 16 * j, has_qw ? g.qw + 16 * j : nullptr, scales + j);
    for (int j = 0; j < NSUB; ++j) {
      const vi m = vabs(scales[j]) > max_abs;
      max_abs = sel(m, vabs(scales[j]), max_abs);
      max_scale = sel(m, scales[j], max_scale);
    }
    const vi zero = max_abs < splat(kGroupMaxEps);  // whole block stored as zeros
    const vf iscale = splat(-128.f) / max_scale;
    const vi hd = sel(zero, zeroi(), vfp16_bits(splat(1.0f) / iscale));
    for (int j = 0; j < NSUB; ++j) sc[j] = wrap_i8(vmini(vnearest_int(iscale * scales[j]), splati(127)));
    const vf fd = vfp16_value(hd);
    for (int j = 0; j < NSUB; ++j) requant_symmetric<16, -32, 31>(g.x + 16 * j, fd * tof(sc[j]), L + 16 * j);

    for (int h = 0; h < 2; ++h) {
      const vi* Lh = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ob[64 * h + l] = (Lh[l] & 15) | ((Lh[l + 64] & 15) << 4);
        ob[64 * h + l + 32] = (Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4);
        ob[128 + 32 * h + l] = (Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6);
      }
    }
    for (int j = 0; j < NSUB; ++j) ob[192 + j] = sc[j];
    set_fp16(ob, D, hd);
    for (int p = 0; p < BYTES; ++p) ob[p] = sel(zero, zeroi(), ob[p]);
  }

  static void sub_scales(const uint8_t* b, float* dl) {
    const float d = load_fp16(b + D);
    for (int j = 0; j < NSUB; ++j) dl[j] = d * (float)(int8_t)b[192 + j];
  }
  static void dequantize(const uint8_t* b, float* y) {  // dequantize_row_q6_K
    float dl[NSUB];
    sub_scales(b, dl);
    for (int j = 0; j < NSUB; ++j) {  // e = 128h + 32g + l': low nibble g/2 of ql[64h + 32(g%2) + l'], high 2 bits 2g of qh[32h + l']
      const int h = j / 8, g = (j / 2) % 4, l0 = 16 * (j % 2);
      const uint8_t* ql = b + 64 * h + 32 * (g % 2) + l0;
      const uint8_t* qh = b + 128 + 32 * h + l0;
      for (int l = 0; l < 16; ++l)
        y[16 * j + l] = dl[j] * (float)((((ql[l] >> (4 * (g / 2))) & 15) | (((qh[l] >> (2 * g)) & 3) << 4)) - 32);
    }
  }
};

}  // namespace

void register_k_quants(KernelTable& t) {
  t.ops[type_index(QType::Q2_K)] = make_ops<QType::Q2_K, Q2_K>();
  t.ops[type_index(QType::Q3_K)] = make_ops<QType::Q3_K, Q3_K>();
  t.ops[type_index(QType::Q4_K)] = make_ops<QType::Q4_K, Q4_K>();
  t.ops[type_index(QType::Q5_K)] = make_ops<QType::Q5_K, Q5_K>();
  t.ops[type_index(QType::Q6_K)] = make_ops<QType::Q6_K, Q6_K>();
}

}}  // namespace prism::PRISM_NS
