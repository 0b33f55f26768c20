// Lane-form versions of ggml-quants.c's scale-search helpers, shared by the K-quant and legacy TUs.
//
// Each function runs the named ggml routine independently in every lane (x[i][lane] is element i of
// the lane's group); every float operation keeps ggml's order and association, and the routine's
// branches become per-lane masks. Arrays hold one vector per element; N (elements) and NMAX are
// template parameters so the loops have fixed trip counts.
//
// Every routine handles G independent groups at once (group s at x + s*N, results in out[s]): its
// float sums are sequential chains, so the loops run `for element i: for group s`, which gives the
// CPU G independent chains to overlap. Per group the operations are exactly ggml's.
#pragma once
#include "simd.h"

namespace prism { namespace PRISM_NS {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

// ---- small lane utilities ------------------------------------------------------------------------

// C conversions to narrow integer types: (uint8_t)v and (int8_t)v of an int.
inline vi wrap_u8(vi v) { return v & 255; }
inline vi wrap_i8(vi v) { return (vi)((vu)v << 24) >> 24; }

// (int)f for a float: truncation toward zero, as cvttps2dq.
inline vi vtrunc(vf f) { return __builtin_convertvector(f, vi); }

// The two bytes of an fp16 value at byte p of the lane-form block image.
inline void set_fp16(vi* ob, int p, vi h) { ob[p] = h & 255; ob[p + 1] = (h >> 8) & 255; }
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
// candidates, accepted in order on strict improvement of sumlx^2/suml2. Writes the scales.
template <int G, int N, int NMAX>
inline void make_qx_quants(const vf* x, vi* L, const vf* qw, vf* scale) {
  vf max[G], w[G * N], wx[G * N], sumlx[G], suml2[G], best[G], iscale[G];
  vi Laux[G * N], zero[G];
  for (int s = 0; s < G; ++s) {
    vf amax;
    max[s] = first_absmax<N>(x + s * N, amax);
    zero[s] = amax < splat(kGroupMaxEps);
  }
  for (int k = 0; k < G * N; ++k) {
    w[k] = qw ? qw[k] : x[k] * x[k];
    wx[k] = w[k] * x[k];
  }
  // Sums over the grid of iscale, levels (l + NMAX) into Lout.
  auto candidate = [&](vi* Lout) {
    for (int s = 0; s < G; ++s) sumlx[s] = suml2[s] = zerof();
    for (int i = 0; i < N; ++i)
      for (int s = 0; s < G; ++s) {
        const int k = s * N + i;
        // |iscale*x| <= NMAX + 0.9 (|x| <= |max|, |max| >= 1e-15 in non-zero groups): vround_small is exact
        const vi l = clampi(vround_small(iscale[s] * x[k]), -NMAX, NMAX - 1);
        Lout[k] = l + NMAX;
        const vf fl = tof(l);
        sumlx[s] += wx[k] * fl;
        suml2[s] += w[k] * fl * fl;
      }
  };
  for (int s = 0; s < G; ++s) iscale[s] = splat(-(float)NMAX) / max[s];
  candidate(L);
  for (int s = 0; s < G; ++s) {
    scale[s] = sel(suml2[s] != zerof(), sumlx[s] / suml2[s], zerof());
    best[s] = scale[s] * sumlx[s];
  }
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const vf num = splat(-((float)NMAX + 0.1f * (float)is));
    for (int s = 0; s < G; ++s) iscale[s] = num / max[s];
    candidate(Laux);
    for (int s = 0; s < G; ++s) {
      const vi acc = (suml2[s] > zerof()) & (sumlx[s] * sumlx[s] > best[s] * suml2[s]);
      if (!any(acc)) continue;
      for (int i = 0; i < N; ++i) L[s * N + i] = sel(acc, Laux[s * N + i], L[s * N + i]);
      scale[s] = sel(acc, sumlx[s] / suml2[s], scale[s]);
      best[s] = sel(acc, scale[s] * sumlx[s], best[s]);
    }
  }
  for (int s = 0; s < G; ++s) {
    for (int i = 0; i < N; ++i) L[s * N + i] = sel(zero[s], zeroi(), L[s * N + i]);
    scale[s] = sel(zero[s], zerof(), scale[s]);
  }
}

// Gauss-Seidel refinement shared by make_q3_quants and make_qp_quants: up to 5 passes; for each i
// the level is re-picked from the other elements' sums and kept on strict improvement of
// sumlx^2/suml2. A lane whose pass changed nothing would stop; more passes on it are no-ops (same
// state, same decisions), so a group is dropped once none of its lanes changed.
//   Q3: slx > 0 gates the update, clamp to [-NMAX, NMAX-1], accept needs sl2 > 0, L signed.
//   QP: slx > 0 && sl2 > 0 gate it, only MIN(NMAX, .), L stored as uint8_t (wrap).
template <int G, int N, int NMAX, bool QP>
inline void refine_levels(const vf* x, const vf* w, const vf* wx, vi* L, vf* sumlx, vf* suml2, const vi* skip) {
  bool active[G];
  vf sq[G];  // sumlx*sumlx, kept with sumlx (the accepted slx*slx is the same product)
  for (int s = 0; s < G; ++s) {
    active[s] = true;
    sq[s] = sumlx[s] * sumlx[s];
  }
  for (int itry = 0; itry < 5; ++itry) {
    vi changed[G];
    for (int s = 0; s < G; ++s) changed[s] = zeroi();
    for (int i = 0; i < N; ++i)
      for (int s = 0; s < G; ++s) {
        if (!active[s]) continue;
        const int k = s * N + i;
        const vf fl = tof(L[k]);
        vf slx = sumlx[s] - wx[k] * fl;
        vf sl2 = suml2[s] - w[k] * fl * fl;
        vi pos = slx > zerof();
        if (QP) pos &= sl2 > zerof();
        const vi q = vnearest_int(x[k] * sl2 / slx);
        const vi new_l = QP ? vmini(q, splati(NMAX)) : clampi(q, -NMAX, NMAX - 1);
        const vf fn = tof(new_l);
        slx += wx[k] * fn;
        sl2 += w[k] * fn * fn;
        const vf slx2 = slx * slx;
        vi acc = pos & (new_l != L[k]) & (slx2 * suml2[s] > sq[s] * sl2);
        if (!QP) acc &= sl2 > zerof();
        L[k] = sel(acc, QP ? wrap_u8(new_l) : new_l, L[k]);
        sumlx[s] = sel(acc, slx, sumlx[s]);
        suml2[s] = sel(acc, sl2, suml2[s]);
        sq[s] = sel(acc, slx2, sq[s]);
        changed[s] |= acc;
      }
    bool more = false;  // skipped (all-zero) lanes may churn: their results are discarded anyway
    for (int s = 0; s < G; ++s) more |= (active[s] = active[s] && any(changed[s] & ~skip[s]));
    if (!more) break;
  }
}

// ---- make_q3_quants (do_rmse = true) --------------------------------------------------------------
// One pass like make_qx_quants' first (weights x*x), then the Gauss-Seidel refinement.
// L = l + NMAX, or 0 for an all-zero group.
template <int G, int N, int NMAX>
inline void make_q3_quants(const vf* x, vi* L, vf* scale) {
  vf w[G * N], wx[G * N], sumlx[G], suml2[G], iscale[G];
  vi zero[G];
  for (int s = 0; s < G; ++s) {
    vf amax;
    const vf max = first_absmax<N>(x + s * N, amax);
    zero[s] = amax < splat(kGroupMaxEps);
    iscale[s] = splat(-(float)NMAX) / max;
    sumlx[s] = suml2[s] = zerof();
  }
  for (int k = 0; k < G * N; ++k) {
    w[k] = x[k] * x[k];
    wx[k] = w[k] * x[k];
  }
  for (int i = 0; i < N; ++i)
    for (int s = 0; s < G; ++s) {
      const int k = s * N + i;
      const vi l = clampi(vround_small(iscale[s] * x[k]), -NMAX, NMAX - 1);  // exact, as in make_qx_quants
      L[k] = l;
      const vf fl = tof(l);
      sumlx[s] += wx[k] * fl;
      suml2[s] += w[k] * fl * fl;
    }
  refine_levels<G, N, NMAX, false>(x, w, wx, L, sumlx, suml2, zero);
  for (int s = 0; s < G; ++s) {
    for (int i = 0; i < N; ++i) L[s * N + i] = sel(zero[s], zeroi(), L[s * N + i] + NMAX);
    scale[s] = sel(zero[s] | ~(suml2[s] > zerof()), zerof(), sumlx[s] / suml2[s]);
  }
}

// ---- make_qkx2_quants / make_qkx3_quants ----------------------------------------------------------
// Affine grid L in [0, NMAX] with a min <= 0, weights w. The two ggml routines differ only in the
// degenerate test (`max == min` vs `max <= min`), which agree because max >= min always holds
// (callers always pass weights). The candidate loop is sequential: an accepted candidate replaces
// `min`, which every later candidate's iscale and grid use. Writes the_min = -min and the scale.
// Work saved without changing a result: levels are kept as floats (small integers, converted once),
// and nearest_int takes one instruction (vround_small) when a bound on |iscale * (x - min)| shows
// every lane in its exact range (degenerate lanes are discarded anyway).
template <int G, int N, int NMAX, bool USE_MAD>
inline void make_qkx_quants(const vf* x, const vf* w, vi* L, vf* the_min, vf* scale, float rmin, float rdelta,
                            int nstep) {
  vf min[G], max[G], xmin[G], sum_w[G], sum_x[G], min0[G], best_error[G], iscale[G];
  vf sum_l[G], sum_l2[G], sum_xl[G], this_scale[G], this_min[G], cur_error[G];
  vi degenerate[G], pos[G];
  vf Lf[G * N], Laux[G * N];  // levels as floats
  auto err_term = [](vf diff) { return USE_MAD ? vabs(diff) : diff * diff; };
  for (int s = 0; s < G; ++s) {
    const vf* xs = x + s * N;
    const vf* ws = w + s * N;
    min[s] = max[s] = xs[0];
    sum_w[s] = ws[0];
    sum_x[s] = sum_w[s] * xs[0];
    for (int i = 1; i < N; ++i) {
      min[s] = vmin(xs[i], min[s]);
      max[s] = vmax(xs[i], max[s]);
      sum_w[s] += ws[i];
      sum_x[s] += ws[i] * xs[i];
    }
    xmin[s] = min[s];
    min[s] = sel(min[s] > zerof(), zerof(), min[s]);
    degenerate[s] = max[s] == min[s];
    min0[s] = min[s];
    iscale[s] = splat((float)NMAX) / (max[s] - min[s]);
    scale[s] = splat(1.0f) / iscale[s];
    best_error[s] = zerof();
  }
  for (int i = 0; i < N; ++i)
    for (int s = 0; s < G; ++s) {
      const int k = s * N + i;
      Lf[k] = tof(clampi(vnearest_int(iscale[s] * (x[k] - min[s])), 0, NMAX));
      best_error[s] += w[k] * err_term(scale[s] * Lf[k] + min[s] - x[k]);
    }
  // The candidate's levels and sums; FAST: every lane's |iscale * (x - min)| <= 4194303, where vround_small
  // rounds exactly like nearest_int.
  auto levels = [&](auto fast) {
    for (int i = 0; i < N; ++i)
      for (int s = 0; s < G; ++s) {
        const int k = s * N + i;
        const vf f = iscale[s] * (x[k] - min[s]);
        const vf fl = tof(clampi(decltype(fast)::value ? vround_small(f) : vnearest_int(f), 0, NMAX));
        Laux[k] = fl;
        const vf wl = w[k] * fl;
        sum_l[s] += wl;
        sum_l2[s] += wl * fl;
        sum_xl[s] += wl * x[k];
      }
  };
  for (int is = 0; is <= nstep; ++is) {
    const vf c = splat(rmin + rdelta * (float)is + (float)NMAX);
    bool fast = true;
    for (int s = 0; s < G; ++s) {
      iscale[s] = c / (max[s] - min[s]);
      sum_l[s] = sum_l2[s] = sum_xl[s] = zerof();
      // xmin <= x <= max and rounding is monotonic, so |fl(x - min)| <= span and
      // |fl(iscale * fl(x - min))| <= fl(|iscale| * span)
      const vf span = vmax(vabs(max[s] - min[s]), vabs(xmin[s] - min[s]));
      fast = fast && all((vabs(iscale[s]) * span <= splat(4194303.0f)) | degenerate[s]);
    }
    if (fast) levels(std::true_type{});
    else levels(std::false_type{});
    vi any_pos = zeroi();
    for (int s = 0; s < G; ++s) {
      const vf D = sum_w[s] * sum_l2[s] - sum_l[s] * sum_l[s];
      pos[s] = D > zerof();
      any_pos |= pos[s];
      this_scale[s] = (sum_w[s] * sum_xl[s] - sum_x[s] * sum_l[s]) / D;
      this_min[s] = (sum_l2[s] * sum_x[s] - sum_l[s] * sum_xl[s]) / D;
      const vi clip = this_min[s] > zerof();
      this_min[s] = sel(clip, zerof(), this_min[s]);
      this_scale[s] = sel(clip, sum_xl[s] / sum_l2[s], this_scale[s]);
      cur_error[s] = zerof();
    }
    if (!any(any_pos)) continue;
    for (int i = 0; i < N; ++i)
      for (int s = 0; s < G; ++s) {
        const int k = s * N + i;
        cur_error[s] += w[k] * err_term(this_scale[s] * Laux[k] + this_min[s] - x[k]);
      }
    for (int s = 0; s < G; ++s) {
      const vi acc = pos[s] & (cur_error[s] < best_error[s]);
      if (!any(acc)) continue;
      for (int i = 0; i < N; ++i) Lf[s * N + i] = sel(acc, Laux[s * N + i], Lf[s * N + i]);
      best_error[s] = sel(acc, cur_error[s], best_error[s]);
      scale[s] = sel(acc, this_scale[s], scale[s]);
      min[s] = sel(acc, this_min[s], min[s]);
    }
  }
  for (int s = 0; s < G; ++s) {
    for (int i = 0; i < N; ++i) L[s * N + i] = sel(degenerate[s], zeroi(), vtrunc(Lf[s * N + i]));
    the_min[s] = vneg(sel(degenerate[s], min0[s], min[s]));
    scale[s] = sel(degenerate[s], zerof(), scale[s]);
  }
}

// ---- make_qp_quants -------------------------------------------------------------------------------
// Second-level quantizer of non-negative scales/mins onto [0, NMAX] with weights w (one group).
// L is ggml's uint8_t array: stores wrap modulo 256 (only reachable with negative inputs), the sums
// use the int.
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
  vf wx[N], sumlx = zerof(), suml2 = zerof();
  for (int i = 0; i < N; ++i) {
    wx[i] = w[i] * x[i];
    const vi l = vmini(vnearest_int(iscale * x[i]), splati(NMAX));
    L[i] = wrap_u8(l);
    const vf fl = tof(l);
    sumlx += wx[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  refine_levels<1, N, NMAX, true>(x, w, wx, L, &sumlx, &suml2, &zero);
  for (int i = 0; i < N; ++i) L[i] = sel(zero, zeroi(), L[i]);
  return sel(zero | ~(suml2 > zerof()), zerof(), sumlx / suml2);
}

}}  // namespace prism::PRISM_NS
