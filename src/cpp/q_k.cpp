// K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, one 256-value super-block per lane.
// Without imatrix each follows ggml-quants.c quantize_row_qN_K_ref, with one quantize_row_qN_K_impl
// (the dispatch of quantize_qN_K / ggml_quantize_chunk). Dequantization follows dequantize_row_qN_K.
#include "kernels.h"
#include "quant_helpers.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int QK_K = 256;

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

// Importance weights of the _impl routines: qw * sqrtf(sigma2 + x*x).
inline void imatrix_weights(const vf* x, const vf* qw, vf sigma2, vf* w, int n) {
  for (int i = 0; i < n; ++i) w[i] = qw[i] * vsqrt(sigma2 + x[i] * x[i]);
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
inline void put_2bit(uint8_t* const* out, int pos, const vi* L) {
  for (int h = 0; h < QK_K; h += 128)
    for (int l = 0; l < 32; ++l)
      put_byte(out, pos + h / 4 + l, L[h + l] | (L[h + l + 32] << 2) | (L[h + l + 64] << 4) | (L[h + l + 96] << 6));
}

// Scalar decoding shared by dequantize and steps: per sub-block scale dl and min ml, per element the
// level q, so that y = dl*q - ml (ml = 0 for the symmetric types: x - (+0) == x for every x).
template <int SUB>
inline void affine_dequant(const float* dl, const float* ml, const int* q, float* y) {
  for (int e = 0; e < QK_K; ++e) y[e] = dl[e / SUB] * (float)q[e] - ml[e / SUB];
}
template <int SUB>
inline void scale_steps(const float* dl, float* step) {
  for (int e = 0; e < QK_K; ++e) step[e] = std::fabs(dl[e / SUB]);
}

// Generic dequantize/steps given K::decode(block, dl, ml, q).
template <class K>
struct KDecode {
  static void dequantize(const uint8_t* b, float* y) {
    float dl[K::NSUB], ml[K::NSUB];
    int q[QK_K];
    K::decode(b, dl, ml, q);
    affine_dequant<QK_K / K::NSUB>(dl, ml, q, y);
  }
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    float dl[K::NSUB], ml[K::NSUB];
    int q[QK_K];
    K::decode(b, dl, ml, q);
    scale_steps<QK_K / K::NSUB>(dl, step);
  }
};

// ------------------------------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16, 2-bit levels, 4-bit scale and min per sub-block.
// Layout: scales[16]@0 (lo nibble scale, hi nibble min), qs[64]@16, d@80, dmin@82.
struct Q2_K : KDecode<Q2_K> {
  static constexpr int BS = QK_K, BYTES = 84, NSUB = 16;
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vi L[QK_K], sc[NSUB];
    vf scales[NSUB], mins[NSUB];
    vi hd, hm;
    if (!has_qw) {  // quantize_row_q2_K_ref
      vf max_scale = zerof(), max_min = zerof();
      for (int j = 0; j < NSUB; ++j) {
        vf w[16];
        for (int l = 0; l < 16; ++l) w[l] = vabs(g.x[16 * j + l]);
        scales[j] = make_qkx_quants<16, 3, true>(g.x + 16 * j, w, L + 16 * j, mins[j], -0.5f, 0.1f, 15);
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
      const vf sigma2 = sum_x2(g.x) / splat((float)QK_K);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; ++j) {
        vf w[16];
        imatrix_weights(g.x + 16 * j, g.qw + 16 * j, sigma2, w, 16);
        sw[j] = seq_sum(w, 16);
        scales[j] = make_qkx_quants<16, 3, false>(g.x + 16 * j, w, L + 16 * j, mins[j], -0.9f, 0.05f, 36);
      }
      vi Ls[NSUB], Lm[NSUB];
      hd = vfp16_bits(make_qp_quants<NSUB, 15>(scales, Ls, sw));
      hm = vfp16_bits(make_qp_quants<NSUB, 15>(mins, Lm, sw));
      for (int j = 0; j < NSUB; ++j) sc[j] = wrap_u8(Ls[j] | (Lm[j] << 4));
    }
    const vf fd = vfp16_value(hd), fm = vfp16_value(hm);
    for (int j = 0; j < NSUB; ++j)
      requant_affine<16, 3>(g.x + 16 * j, fd * tof(sc[j] & 15), fm * tof(sc[j] >> 4), L + 16 * j);
    for (int j = 0; j < NSUB; ++j) put_byte(out, j, sc[j]);
    put_2bit(out, 16, L);
    put_fp16(out, 80, hd);
    put_fp16(out, 82, hm);
  }

  static void decode(const uint8_t* b, float* dl, float* ml, int* q) {  // dequantize_row_q2_K
    const float d = load_fp16(b + 80), dmin = load_fp16(b + 82);
    for (int j = 0; j < NSUB; ++j) { dl[j] = d * (float)(b[j] & 15); ml[j] = dmin * (float)(b[j] >> 4); }
    for (int e = 0; e < QK_K; ++e) q[e] = (b[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
  }
};

// ------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, levels -4..3 (2 low bits + high bit), signed 6-bit scales.
// Layout: hmask[32]@0, qs[64]@32, scales[12]@96, d@108.
struct Q3_K : KDecode<Q3_K> {
  static constexpr int BS = QK_K, BYTES = 110, NSUB = 16;
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vi L[QK_K], ls[NSUB];  // ls: 6-bit scale code 0..63 (scale = ls - 32)
    vi hd;
    vf scales[NSUB];
    if (!has_qw) {  // quantize_row_q3_K_ref
      vf amax = zerof(), max_scale = zerof();
      for (int j = 0; j < NSUB; ++j) {
        scales[j] = make_q3_quants<16, 4>(g.x + 16 * j, L + 16 * j);
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
      const vf sigma2 = splat(2.0f) * sum_x2(g.x) / splat((float)QK_K);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; ++j) {
        vf w[16];
        imatrix_weights(g.x + 16 * j, g.qw + 16 * j, sigma2, w, 16);
        sw[j] = seq_sum(w, 16);
        scales[j] = make_qx_quants<16, 4>(g.x + 16 * j, L + 16 * j, w);
      }
      hd = vfp16_bits(make_qx_quants<NSUB, 32>(scales, ls, sw));
    }
    const vf fd = vfp16_value(hd);
    for (int j = 0; j < NSUB; ++j) requant_symmetric<16, -4, 3>(g.x + 16 * j, fd * tof(ls[j] - 32), L + 16 * j);

    for (int m = 0; m < 32; ++m) {  // high bit of element 32k+m in bit k of hmask[m]
      vi h = zeroi();
      for (int k = 0; k < 8; ++k) h |= (L[32 * k + m] > 3) & (1 << k);
      put_byte(out, m, h);
    }
    for (int e = 0; e < QK_K; ++e) L[e] = sel(L[e] > 3, L[e] - 4, L[e]);
    put_2bit(out, 32, L);
    vi sb[12];
    for (int k = 0; k < 12; ++k) sb[k] = zeroi();
    for (int j = 0; j < NSUB; ++j) {
      if (j < 8) sb[j] = ls[j] & 15;
      else sb[j - 8] |= (ls[j] & 15) << 4;
      sb[8 + j % 4] |= (ls[j] >> 4) << (2 * (j / 4));
    }
    for (int k = 0; k < 12; ++k) put_byte(out, 96 + k, sb[k]);
    put_fp16(out, 108, hd);
  }

  static void decode(const uint8_t* b, float* dl, float* ml, int* q) {  // dequantize_row_q3_K
    const float d = load_fp16(b + 108);
    const uint8_t* s = b + 96;
    for (int j = 0; j < NSUB; ++j) {
      const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
      const int code = lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
      dl[j] = d * (float)(code - 32);
      ml[j] = 0.0f;
    }
    for (int e = 0; e < QK_K; ++e) {
      const int low = (b[32 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      q[e] = low - ((b[e % 32] >> (e / 32)) & 1 ? 0 : 4);
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
struct Q45_K : KDecode<Q45_K<P>> {
  static constexpr int BS = QK_K, BYTES = P::BYTES, NSUB = 8, NMAX = P::NMAX;
  static constexpr bool kRowSigma2 = false;

  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vi L[QK_K], ls[NSUB], lm[NSUB];
    vf scales[NSUB], mins[NSUB];
    vi hd, hm;
    if (!has_qw) {  // quantize_row_q4_K_ref / quantize_row_q5_K_ref
      vf max_scale = zerof(), max_min = zerof();
      for (int j = 0; j < NSUB; ++j) {
        const vf* x = g.x + 32 * j;
        vf s2 = zerof();
        for (int l = 0; l < 32; ++l) s2 += x[l] * x[l];
        const vf av_x = vsqrt(s2 / splat(32.0f));
        vf w[32];
        for (int l = 0; l < 32; ++l) w[l] = av_x + vabs(x[l]);
        scales[j] = make_qkx_quants<32, NMAX, false>(x, w, L + 32 * j, mins[j], P::rmin, P::rdelta, P::nstep);
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
      const vf sigma2 = splat(2.0f) * sum_x2(g.x) / splat((float)QK_K);
      vf sw[NSUB];
      for (int j = 0; j < NSUB; ++j) {
        vf w[32];
        imatrix_weights(g.x + 32 * j, g.qw + 32 * j, sigma2, w, 32);
        sw[j] = seq_sum(w, 32);
        scales[j] = make_qkx_quants<32, NMAX, false>(g.x + 32 * j, w, L + 32 * j, mins[j], -0.9f, 0.05f, 36);
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
    put_fp16(out, 0, hd);
    put_fp16(out, 2, hm);
    for (int k = 0; k < 12; ++k) put_byte(out, 4 + k, sb[k]);
    if (NMAX == 15) {
      for (int h = 0; h < 4; ++h)
        for (int l = 0; l < 32; ++l) put_byte(out, 16 + 32 * h + l, L[64 * h + l] | (L[64 * h + l + 32] << 4));
    } else {
      for (int l = 0; l < 32; ++l) {
        vi qh = zeroi();
        for (int h = 0; h < 4; ++h)
          qh |= (((L[64 * h + l] >> 4) & 1) << (2 * h)) | (((L[64 * h + l + 32] >> 4) & 1) << (2 * h + 1));
        put_byte(out, 16 + l, qh);
      }
      for (int h = 0; h < 4; ++h)
        for (int l = 0; l < 32; ++l)
          put_byte(out, 48 + 32 * h + l, (L[64 * h + l] & 15) | ((L[64 * h + l + 32] & 15) << 4));
    }
  }

  static void decode(const uint8_t* b, float* dl, float* ml, int* q) {  // dequantize_row_q4_K / q5_K
    const float d = load_fp16(b), dmin = load_fp16(b + 2);
    for (int j = 0; j < NSUB; ++j) {
      int sc, m;
      unpack_k4(j, b + 4, sc, m);
      dl[j] = d * (float)sc;
      ml[j] = dmin * (float)m;
    }
    const uint8_t* qs = b + (NMAX == 15 ? 16 : 48);
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 64, l = e % 32, hi = (e % 64) >= 32;
      int v = (qs[32 * h + l] >> (4 * hi)) & 15;
      if (NMAX == 31) v |= ((b[16 + l] >> (2 * h + hi)) & 1) << 4;
      q[e] = v;
    }
  }
};
using Q4_K = Q45_K<Q4KParams>;
using Q5_K = Q45_K<Q5KParams>;

// ------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, levels -32..31, signed 8-bit scales.
// Layout: ql[128]@0, qh[64]@128, scales[16]@192 (int8), d@208.
struct Q6_K : KDecode<Q6_K> {
  static constexpr int BS = QK_K, BYTES = 210, NSUB = 16;
  static constexpr bool kRowSigma2 = false;

  // quantize_row_q6_K_ref, and quantize_row_q6_K_impl (raw imatrix weights, no sigma2 term).
  static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out) {
    vi L[QK_K], sc[NSUB];
    vf scales[NSUB];
    vf max_abs = zerof(), max_scale = zerof();
    for (int j = 0; j < NSUB; ++j) {
      scales[j] = make_qx_quants<16, 32>(g.x + 16 * j, L + 16 * j, has_qw ? g.qw + 16 * j : nullptr);
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
        put_byte(out, 64 * h + l, (Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
        put_byte(out, 64 * h + l + 32, (Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
        put_byte(out, 128 + 32 * h + l,
                 (Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
      }
    }
    for (int j = 0; j < NSUB; ++j) put_byte(out, 192 + j, sc[j]);
    put_fp16(out, 208, hd);
    for (int lane = 0; lane < W; ++lane)
      if (zero[lane]) std::memset(out[lane], 0, BYTES);
  }

  static void decode(const uint8_t* b, float* dl, float* ml, int* q) {  // dequantize_row_q6_K
    const float d = load_fp16(b + 208);
    for (int j = 0; j < NSUB; ++j) { dl[j] = d * (float)(int8_t)b[192 + j]; ml[j] = 0.0f; }
    for (int e = 0; e < QK_K; ++e) {
      const int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
      const int low = (b[64 * h + l + 32 * (g & 1)] >> (4 * (g >> 1))) & 15;
      const int high = (b[128 + 32 * h + l] >> (2 * g)) & 3;
      q[e] = (low | (high << 4)) - 32;
    }
  }
};

}  // namespace

void register_k_quants(KernelTable& t) {
  t.ops[type_index(QType::Q2_K)] = make_ops<Q2_K>();
  t.ops[type_index(QType::Q3_K)] = make_ops<Q3_K>();
  t.ops[type_index(QType::Q4_K)] = make_ops<Q4_K>();
  t.ops[type_index(QType::Q5_K)] = make_ops<Q5_K>();
  t.ops[type_index(QType::Q6_K)] = make_ops<Q6_K>();
}

}}  // namespace prism::PRISM_NS
