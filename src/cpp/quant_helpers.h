// Lane-form versions of ggml-quants.c's scale-search helpers, shared by the K-quant and legacy TUs.
//
// Each function runs the named ggml routine independently in every lane (x[i][lane] is element i of
// the lane's group); every float operation keeps ggml's order and association, and the routine's
// branches become per-lane masks. Arrays hold one vector per element; N (elements) and NMAX are
// template parameters so the loops have fixed trip counts.
#pragma once
#include "simd.h"

namespace prism { namespace PRISM_NS {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

// ---- small lane utilities ------------------------------------------------------------------------

// fp32 -> fp16 bits and back, per lane (once per block, so the scalar per-lane loop is cheap enough).
inline vi vfp16_bits(vf x) { vi r; for (int i = 0; i < W; ++i) r[i] = fp32_to_fp16(x[i]); return r; }
inline vf vfp16_value(vi h) { vf r; for (int i = 0; i < W; ++i) r[i] = fp16_to_fp32((uint16_t)h[i]); return r; }

// C conversions to narrow integer types: (uint8_t)v and (int8_t)v of an int.
inline vi wrap_u8(vi v) { return v & 255; }
inline vi wrap_i8(vi v) { return (v << 24) >> 24; }

// (int)f for a float: truncation toward zero, as cvttps2dq.
inline vi vtrunc(vf f) { return __builtin_convertvector(f, vi); }

inline void put_byte(uint8_t* const* out, int pos, vi v) {
  for (int lane = 0; lane < W; ++lane) out[lane][pos] = (uint8_t)v[lane];
}
inline void put_fp16(uint8_t* const* out, int pos, vi h) {
  for (int lane = 0; lane < W; ++lane) {
    out[lane][pos] = (uint8_t)(h[lane] & 255);
    out[lane][pos + 1] = (uint8_t)((h[lane] >> 8) & 255);
  }
}
inline float load_fp16(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return fp16_to_fp32(h); }

// Signed value of the FIRST element of largest |x| (`if (ax > amax) { amax = ax; max = x; }`).
template <int N>
inline vf first_absmax(const vf* x, vf& amax) {
  vf mx = zerof();
  amax = zerof();
  for (int i = 0; i < N; ++i) {
    const vf ax = vabs(x[i]);
    const vi m = ax > amax;
    amax = sel(m, ax, amax);
    mx = sel(m, x[i], mx);
  }
  return mx;
}

// ---- make_qx_quants (rmse_type = 1) ---------------------------------------------------------------
// Symmetric grid l in [-NMAX, NMAX-1] (L = l + NMAX); weights qw, or x*x when qw is null. 19 scale
// candidates, accepted in order on strict improvement of sumlx^2/suml2. Returns the scale.
template <int N, int NMAX>
inline vf make_qx_quants(const vf* x, vi* L, const vf* qw) {
  vf amax;
  const vf max = first_absmax<N>(x, amax);
  const vi zero = amax < splat(kGroupMaxEps);
  vf w[N];
  for (int i = 0; i < N; ++i) w[i] = qw ? qw[i] : x[i] * x[i];
  vf wx[N];
  for (int i = 0; i < N; ++i) wx[i] = w[i] * x[i];

  vf iscale = splat(-(float)NMAX) / max;
  vf sumlx = zerof(), suml2 = zerof();
  for (int i = 0; i < N; ++i) {
    const vi l = clampi(vnearest_int(iscale * x[i]), -NMAX, NMAX - 1);
    L[i] = l + NMAX;
    const vf fl = tof(l);
    sumlx += wx[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  vf scale = sel(suml2 != zerof(), sumlx / suml2, zerof());
  vf best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = splat(-((float)NMAX + 0.1f * (float)is)) / max;
    vi Laux[N];
    sumlx = suml2 = zerof();
    for (int i = 0; i < N; ++i) {
      const vi l = clampi(vnearest_int(iscale * x[i]), -NMAX, NMAX - 1);
      Laux[i] = l;
      const vf fl = tof(l);
      sumlx += wx[i] * fl;
      suml2 += w[i] * fl * fl;
    }
    const vi acc = (suml2 > zerof()) & (sumlx * sumlx > best * suml2);
    if (!any(acc)) continue;
    for (int i = 0; i < N; ++i) L[i] = sel(acc, Laux[i] + NMAX, L[i]);
    scale = sel(acc, sumlx / suml2, scale);
    best = sel(acc, scale * sumlx, best);
  }
  for (int i = 0; i < N; ++i) L[i] = sel(zero, zeroi(), L[i]);
  return sel(zero, zerof(), scale);
}

// ---- make_q3_quants (do_rmse = true) --------------------------------------------------------------
// One pass like make_qx_quants' first (weights x*x), then up to 5 Gauss-Seidel passes over the
// elements. A lane whose pass changed nothing would stop; running more passes on it is a no-op
// (same state, same decisions), so we stop when no lane changed. L = l + NMAX, or 0 if all-zero.
template <int N, int NMAX>
inline vf make_q3_quants(const vf* x, vi* L) {
  vf amax;
  const vf max = first_absmax<N>(x, amax);
  const vi zero = amax < splat(kGroupMaxEps);
  vf w[N], wx[N];
  for (int i = 0; i < N; ++i) { w[i] = x[i] * x[i]; wx[i] = w[i] * x[i]; }
  const vf iscale = splat(-(float)NMAX) / max;
  vf sumlx = zerof(), suml2 = zerof();
  for (int i = 0; i < N; ++i) {
    const vi l = clampi(vnearest_int(iscale * x[i]), -NMAX, NMAX - 1);
    L[i] = l;
    const vf fl = tof(l);
    sumlx += wx[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    vi changed = zeroi();
    for (int i = 0; i < N; ++i) {
      const vf fl = tof(L[i]);
      vf slx = sumlx - wx[i] * fl;
      const vi pos = (slx > zerof()) & ~zero;
      if (!any(pos)) continue;
      vf sl2 = suml2 - w[i] * fl * fl;
      const vi new_l = clampi(vnearest_int(x[i] * sl2 / slx), -NMAX, NMAX - 1);
      const vf fn = tof(new_l);
      slx += wx[i] * fn;
      sl2 += w[i] * fn * fn;
      const vi acc = pos & (new_l != L[i]) & (sl2 > zerof()) & (slx * slx * suml2 > sumlx * sumlx * sl2);
      L[i] = sel(acc, new_l, L[i]);
      sumlx = sel(acc, slx, sumlx);
      suml2 = sel(acc, sl2, suml2);
      changed |= acc;
    }
    if (!any(changed)) break;
  }
  for (int i = 0; i < N; ++i) L[i] = sel(zero, zeroi(), L[i] + NMAX);
  return sel(zero | ~(suml2 > zerof()), zerof(), sumlx / suml2);
}

// ---- make_qkx2_quants / make_qkx3_quants ----------------------------------------------------------
// Affine grid L in [0, NMAX] with a min <= 0, weights w. The two ggml routines differ only in the
// degenerate test (`max == min` vs `max <= min`), which agree because max >= min always holds
// (callers always pass weights). The candidate loop is sequential: an accepted candidate replaces
// `min`, which every later candidate's iscale and grid use. Writes the_min = -min, returns the scale.
template <int N, int NMAX, bool USE_MAD>
inline vf make_qkx_quants(const vf* x, const vf* w, vi* L, vf& the_min, float rmin, float rdelta, int nstep) {
  vf min = x[0], max = x[0];
  vf sum_w = w[0];
  vf sum_x = sum_w * x[0];
  for (int i = 1; i < N; ++i) {
    min = vmin(x[i], min);
    max = vmax(x[i], max);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  min = sel(min > zerof(), zerof(), min);
  const vi degenerate = max == min;
  const vf min0 = min;

  auto err_term = [](vf diff) { return USE_MAD ? vabs(diff) : diff * diff; };

  vf iscale = splat((float)NMAX) / (max - min);
  vf scale = splat(1.0f) / iscale;
  vf best_error = zerof();
  for (int i = 0; i < N; ++i) {
    const vi l = clampi(vnearest_int(iscale * (x[i] - min)), 0, NMAX);
    L[i] = l;
    const vf diff = scale * tof(l) + min - x[i];
    best_error += w[i] * err_term(diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = splat(rmin + rdelta * (float)is + (float)NMAX) / (max - min);
    vf sum_l = zerof(), sum_l2 = zerof(), sum_xl = zerof();
    vi Laux[N];
    for (int i = 0; i < N; ++i) {
      const vi l = clampi(vnearest_int(iscale * (x[i] - min)), 0, NMAX);
      Laux[i] = l;
      const vf wl = w[i] * tof(l);
      sum_l += wl;
      sum_l2 += wl * tof(l);
      sum_xl += wl * x[i];
    }
    const vf D = sum_w * sum_l2 - sum_l * sum_l;
    const vi pos = D > zerof();
    if (!any(pos)) continue;
    vf this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    vf this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    const vi clip = this_min > zerof();
    this_min = sel(clip, zerof(), this_min);
    this_scale = sel(clip, sum_xl / sum_l2, this_scale);
    vf cur_error = zerof();
    for (int i = 0; i < N; ++i) {
      const vf diff = this_scale * tof(Laux[i]) + this_min - x[i];
      cur_error += w[i] * err_term(diff);
    }
    const vi acc = pos & (cur_error < best_error);
    if (!any(acc)) continue;
    for (int i = 0; i < N; ++i) L[i] = sel(acc, Laux[i], L[i]);
    best_error = sel(acc, cur_error, best_error);
    scale = sel(acc, this_scale, scale);
    min = sel(acc, this_min, min);
  }
  for (int i = 0; i < N; ++i) L[i] = sel(degenerate, zeroi(), L[i]);
  the_min = vneg(sel(degenerate, min0, min));
  return sel(degenerate, zerof(), scale);
}

// ---- make_qp_quants -------------------------------------------------------------------------------
// Second-level quantizer of non-negative scales/mins onto [0, NMAX] with weights w. L is ggml's
// uint8_t array: stores wrap modulo 256 (only reachable with negative inputs), the sums use the int.
template <int N, int NMAX>
inline vf make_qp_quants(const vf* x, vi* L, const vf* w) {
  vf max = zerof();
  for (int i = 0; i < N; ++i) max = vmax(max, x[i]);
  const vi zero = max < splat(kGroupMaxEps);
  vf iscale = splat((float)NMAX) / max;
  for (int i = 0; i < N; ++i) L[i] = wrap_u8(vnearest_int(iscale * x[i]));
  const vf scale = splat(1.0f) / iscale;
  vf best_mse = zerof();
  for (int i = 0; i < N; ++i) {
    const vf diff = x[i] - scale * tof(L[i]);
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const vf iscale_is = splat(0.1f * (float)is + (float)NMAX) / max;
    const vf scale_is = splat(1.0f) / iscale_is;
    vf mse = zerof();
    for (int i = 0; i < N; ++i) {
      const vi l = vmini(vnearest_int(iscale_is * x[i]), splati(NMAX));
      const vf diff = x[i] - scale_is * tof(l);
      mse += w[i] * diff * diff;
    }
    const vi acc = mse < best_mse;
    best_mse = sel(acc, mse, best_mse);
    iscale = sel(acc, iscale_is, iscale);
  }
  vf sumlx = zerof(), suml2 = zerof();
  for (int i = 0; i < N; ++i) {
    const vi l = vmini(vnearest_int(iscale * x[i]), splati(NMAX));
    L[i] = wrap_u8(l);
    const vf fl = tof(l);
    sumlx += w[i] * x[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    vi changed = zeroi();
    for (int i = 0; i < N; ++i) {
      const vf fl = tof(L[i]);
      vf slx = sumlx - w[i] * x[i] * fl;
      vf sl2 = suml2 - w[i] * fl * fl;
      const vi pos = (slx > zerof()) & (sl2 > zerof()) & ~zero;
      if (!any(pos)) continue;
      const vi new_l = vmini(vnearest_int(x[i] * sl2 / slx), splati(NMAX));
      const vf fn = tof(new_l);
      slx += w[i] * x[i] * fn;
      sl2 += w[i] * fn * fn;
      const vi acc = pos & (new_l != L[i]) & (slx * slx * suml2 > sumlx * sumlx * sl2);
      L[i] = sel(acc, wrap_u8(new_l), L[i]);
      sumlx = sel(acc, slx, sumlx);
      suml2 = sel(acc, sl2, suml2);
      changed |= acc;
    }
    if (!any(changed)) break;
  }
  for (int i = 0; i < N; ++i) L[i] = sel(zero, zeroi(), L[i]);
  return sel(zero | ~(suml2 > zerof()), zerof(), sumlx / suml2);
}

}}  // namespace prism::PRISM_NS
