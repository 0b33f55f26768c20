// 2-bit lattice types IQ2_XXS, IQ2_XS, IQ2_S. Follows ggml-quants.c: quantize_iq2_xxs /
// quantize_row_iq2_xxs_impl, quantize_iq2_xs / quantize_row_iq2_xs_impl, quantize_iq2_s /
// quantize_row_iq2_s_impl, iq2_find_best_neighbour, make_qp_quants, and dequantize_row_iq2_xxs /
// _iq2_xs / _iq2_s. A value is |x| snapped to (2l+1)*scale, l in 0..2, 8 values at a time onto the
// type's grid (an off-grid point goes to its best neighbour), with the signs stored apart.
#include "iq_lattice.h"
#include "quant_helpers.h"
#include "quant_tables.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int QK_K = 256;
constexpr int kMaxQ = 3;

// One sub-block's search state: xval = |x| (one value may be negated, see flip_signs), ggml's
// weight and waux = sqrtf(weight), levels L (0..2) of each value.
template <int N>
struct Sub {
  float xval[N], weight[N], waux[N];
  int8_t L[N];
};

// Signs of group k (8 values) into xval; with EVEN, an odd number of negative values is made even by
// keeping the sign of the value of least weight*x*x (the first such), as IQ2_XXS/IQ2_XS store 7 sign
// bits per group.
template <int N, bool EVEN>
inline uint8_t flip_signs(const float* xb, Sub<N>& s, int k) {
  // branch-free (the signs are random): xval = v >= 0 ? v : -v, as ggml (-0 stays -0)
  typedef float f8 __attribute__((vector_size(32)));
  typedef int32_t i8v __attribute__((vector_size(32)));
  f8 v;
  std::memcpy(&v, xb + 8 * k, 32);
  const i8v neg = v < 0;
  const f8 a = neg ? -v : v;
  std::memcpy(s.xval + 8 * k, &a, 32);
  uint8_t sg = 0;
  for (int i = 0; i < 8; ++i) sg |= (uint8_t)((neg[i] & 1) << i);
  if (EVEN && (__builtin_popcount(sg) & 1)) {
    int imin = 0;
    float min = s.weight[8 * k] * xb[8 * k] * xb[8 * k];
    for (int i = 1; i < 8; ++i) {
      const float ax = s.weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
      if (ax < min) min = ax, imin = i;
    }
    s.xval[8 * k + imin] = -s.xval[8 * k + imin];
    sg ^= (uint8_t)(1 << imin);
  }
  return EVEN ? (uint8_t)(sg & 127) : sg;
}

constexpr float kQ[3] = {1, 3, 5};  // 2l+1

// 2l+1 for the level l in the low two bits of each lane (l <= 2).
inline vf level_values(vi c) {
#if defined(__AVX__) && (PRISM_W == 8 || PRISM_W == 16)
  vf t;  // {1, 3, 5, 5} per 128-bit lane
  for (int l = 0; l < PW; ++l) t[l] = kQ[(l & 3) < 3 ? (l & 3) : 2];
  return term_of(t, c);
#else
  return tof((c & 3) * 2 + 1);
#endif
}

// The grid index (or list offset) of each lane's level code (16 bits).
inline vi grid_indices(const IqGrid& g, vi c) {
#if PRISM_W == 8 && defined(__AVX2__)
  return (vi)_mm256_i32gather_epi32(g.map.data(), (__m256i)c, 4);
#elif PRISM_W == 16 && defined(__AVX512F__)
  return (vi)_mm512_i32gather_epi32((__m512i)c, g.map.data(), 4);
#else
  vi idx;
  for (int l = 0; l < PW; ++l) idx[l] = g.index_of((uint32_t)c[l] & 0xffff);
  return idx;
#endif
}

// Levels of group k for the inverse scale id: clamp(nearest_int(0.5*(id*x - 1)), 0, kMaxQ-1); the
// group is snapped to its best neighbour at `scale` if off the grid. Returns false if it was.
template <int N>
inline bool group_levels(const IqGrid& g, const Sub<N>& s, int k, float id, float scale, int8_t* L) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) {
    int l = nearest_int(0.5f * (id * s.xval[8 * k + i] - 1));
    l = l < 0 ? 0 : l > kMaxQ - 1 ? kMaxQ - 1 : l;
    L[8 * k + i] = (int8_t)l;
    u |= (uint32_t)l << (2 * i);
  }
  if (g.index_of(u) >= 0) return true;
  const uint32_t c = g.code[best_neighbour(g.neighbours(u), s.xval + 8 * k, s.waux + 8 * k, scale, kQ)];
  for (int i = 0; i < 8; ++i) L[8 * k + i] = (int8_t)level(c, i);
  return false;
}

// Level codes (2 bits per value) of group k for W inverse scales id: ggml's clamp(nearest_int(
// 0.5*(p - 1)), 0, 2) of p = id*x. For |p| < 2^22 (SMALL) that is (p > 2) + (p >= 4): p - 1 is exact
// on [1, 4), 0.5 and 1.5 round to even, and rounding is monotone beyond. Larger p (a scale estimate
// far below the values, IQ2_XXS) take ggml's rounding trick, out-of-range answers included.
template <int N, bool SMALL>
inline vi level_code(const Sub<N>& s, int k, vf id) {
  vi code = zeroi();
  for (int i = 0; i < 8; ++i) {
    const vf p = id * splat(s.xval[8 * k + i]);
    if (SMALL)
      code -= (vi)((vu)((p > splat(2.0f)) + (p >= splat(4.0f))) << (2 * i));  // masks are -1
    else
      code |= clampi(vnearest_int(splat(0.5f) * (p - splat(1.0f))), 0, kMaxQ - 1) << (2 * i);
  }
  return code;
}

// sum w*x*q and w*q*q over the sub-block for q = 2L+1, sequential as ggml.
template <int N>
inline void level_sums(const Sub<N>& s, const int8_t* L, float& sumqx, float& sumq2) {
  sumqx = sumq2 = 0;
  for (int i = 0; i < N; ++i) {
    const float w = s.weight[i];
    const float q = (float)(2 * L[i] + 1);
    sumqx += w * s.xval[i] * q;
    sumq2 += w * q * q;
  }
}

// The scale search shared by the three types on a sub-block of N values (N/8 groups): candidate
// inverse scales id = (2*kMaxQ-1 + 0.1*is)/ref for is in [-IS, IS], levels snapped to the grid,
// accepted in order on strict improvement of sumqx^2/sumq2; then the levels again at the winning
// scale and a refitted scale. RECOMPUTE_ALL (IQ2_XXS) redoes every group at the end; otherwise
// (IQ2_XS, IQ2_S) only the groups the winner had snapped off the grid. Returns the scale, L set.
// The candidates do not depend on each other: W of them run at once (lanes = is), and only the
// accept chain runs in order.
template <int N, int IS, bool RECOMPUTE_ALL>
inline float search_scale(const IqGrid& g, Sub<N>& s, float ref, float scale) {
  constexpr int NG = N / 8, NC = 2 * IS + 1;
  bool on_grid[NG], have = false;
  uint32_t win[NG];  // the accepted candidate's level codes
  for (int k = 0; k < NG; ++k) on_grid[k] = true;
  constexpr int NB = (NC + W - 1) / W;  // batches of W candidates
  float best = 0, xmax = 0;
  for (int i = 0; i < N; ++i) xmax = xmax > std::fabs(s.xval[i]) ? xmax : std::fabs(s.xval[i]);
  vi lane;
  for (int l = 0; l < PW; ++l) lane[l] = l;
  // Every batch's levels and grid look-ups first, then a prefetch of every neighbour list to be
  // scored: the map and the lists (0.3-0.5 MB) mostly miss L1/L2, and their loads now overlap.
  vf this_scale[NB];
  vi code[NB][NG], idx[NB][NG];  // lanes' level codes of each group (snapped to the grid below)
  uint32_t off[NB][NG];          // lanes off the grid
  for (int b = 0; b < NB; ++b) {
    const vf id = (splat((float)(2 * kMaxQ - 1)) + tof(lane + (b * W - IS)) * splat(0.1f)) / splat(ref);
    this_scale[b] = splat(1.0f) / id;
    const bool small = hmax(id, 0.0f) * xmax < 0x1p22f;  // every |id*x| below 2^22
    const uint32_t valid = NC - b * W < W ? (1u << (NC - b * W)) - 1 : (1u << W) - 1;
    for (int k = 0; k < NG; ++k) {
      code[b][k] = small ? level_code<N, true>(s, k, id) : level_code<N, false>(s, k, id);
      idx[b][k] = grid_indices(g, code[b][k]);
      off[b][k] = movemask(idx[b][k] < 0) & valid;
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int k = 0; k < NG; ++k)
      for (uint32_t o = off[b][k]; o; o &= o - 1) prefetch_list<2>(g.list_at(idx[b][k][__builtin_ctz(o)]));
  for (int b = 0; b < NB; ++b) {
    for (int k = 0; k < NG; ++k)
      for (uint32_t o = off[b][k]; o; o &= o - 1) {
        const int l = __builtin_ctz(o);
        const uint16_t* list = g.list_at(idx[b][k][l]);
        code[b][k][l] = IqGrid::list_codes(list)[best_neighbour_pos(list, s.xval + 8 * k, s.waux + 8 * k,
                                                                    this_scale[b][l], kQ)];
      }
    vf sumqx = zerof(), sumq2 = zerof();
    for (int i = 0; i < N; ++i) {  // w*x*q = (w*x)*q, w*q*q = (w*q)*q
      const vf q = level_values(code[b][i / 8] >> (2 * (i % 8)));
      sumqx += splat(s.weight[i] * s.xval[i]) * q;
      sumq2 += splat(s.weight[i]) * q * q;
    }
    // the accept chain visits only the lanes that pass against the current best (the vector test
    // leaves out sumq2 > 0, tested again exactly); an accept changes best: test the later lanes again.
    // Each lane's scale and best, were it accepted, are computed beforehand, off the chain.
    const vf lane_scale = sumqx / sumq2, lane_best = lane_scale * sumqx;
    for (uint32_t valid = NC - b * W < W ? (1u << (NC - b * W)) - 1 : (1u << W) - 1; valid;) {
      const uint32_t lanes = movemask(sumqx * sumqx > splat(best) * sumq2) & valid;
      if (!lanes) break;
      const int l = __builtin_ctz(lanes);
      if (sumq2[l] > 0 && sumqx[l] * sumqx[l] > best * sumq2[l]) {
        scale = lane_scale[l];
        best = lane_best[l];
        for (int k = 0; k < NG; ++k) win[k] = (uint32_t)code[b][k][l], on_grid[k] = !(off[b][k] >> l & 1);
        have = true;
      }
      valid &= ~((2u << l) - 1);
    }
  }
  if (have)
    for (int i = 0; i < N; ++i) s.L[i] = (int8_t)level(win[i / 8], i % 8);
  bool redo = RECOMPUTE_ALL;
  for (int k = 0; k < NG; ++k) redo |= !on_grid[k];
  if (redo && scale > 0) {
    const float id = 1 / scale;
    for (int k = 0; k < NG; ++k)
      if (RECOMPUTE_ALL || !on_grid[k]) group_levels(g, s, k, id, scale, s.L);
    float sumqx, sumq2;
    level_sums(s, s.L, sumqx, sumq2);
    if (sumq2 > 0) scale = sumqx / sumq2;
  }
  return scale;
}

// Grid index of group k of the final levels (always on the grid).
template <int N>
inline int group_index(const IqGrid& g, const Sub<N>& s, int k) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) u |= (uint32_t)s.L[8 * k + i] << (2 * i);
  return g.index_of(u);
}

inline float block_sigma2(const float* x, float factor) {
  float sumx2 = 0;
  for (int i = 0; i < QK_K; ++i) sumx2 += x[i] * x[i];
  return factor * sumx2 / QK_K;
}

// 4-bit sub-block scale: clamp(nearest_int(0.5*(id*scale - 1)), 0, 15).
inline int sub_scale(float id, float scale) {
  const int l = nearest_int(0.5f * (id * scale - 1));
  return l < 0 ? 0 : l > 15 ? 15 : l;
}

// Dequantization of a group of 8: dl * grid value * sign (ggml: db * grid[j] * (+-1.f)).
inline void dequant_group(const uint64_t* grid, int index, uint8_t signs, float dl, float* y) {
  const uint64_t p = grid[index];
  for (int j = 0; j < 8; ++j)
    y[j] = dl * (float)(uint8_t)(p >> (8 * j)) * (signs & tables::kmask_iq2xs[j] ? -1.f : 1.f);
}

// block_iq2_xxs: d (fp16) @0, then per 32-value sub-block two uint32: 4 grid indices (bytes), and
// 4 x 7 sign bits (an index into ksigns_iq2xs) | 4-bit scale << 28. imatrix required.
struct IQ2_XXS {
  static constexpr int BS = 256, BYTES = 66;
  static void quantize_block(const float* x, const float* qw, uint8_t* out) {
    const IqGrid& g = iq_grid(IqLattice::IQ2_XXS);
    uint32_t q2[16] = {};
    float scales[8];
    float max_scale = 0;
    const float sigma2 = block_sigma2(x, 1.0f);
    Sub<32> sub[8];
    uint8_t signs[8][4];
    // make_qp_quants (lanes = sub-blocks) gives each sub-block's first scale estimate
    vf qpx[32], qpw[32];
    vi qpl[32];
    float qp_scale[8 + W];
    for (int ib = 0; ib < 8; ++ib) {
      Sub<32>& s = sub[ib];
      const float* xb = x + 32 * ib;
      for (int i = 0; i < 32; ++i) s.weight[i] = qw[32 * ib + i] * std::sqrt(sigma2 + xb[i] * xb[i]);
      for (int i = 0; i < 32; ++i) s.waux[i] = std::sqrt(s.weight[i]);
      for (int k = 0; k < 4; ++k) signs[ib][k] = flip_signs<32, true>(xb, s, k);
    }
    for (int ib0 = 0; ib0 < 8; ib0 += W) {
      for (int i = 0; i < 32; ++i) {
        qpx[i] = qpw[i] = zerof();
        for (int l = 0; l < W && ib0 + l < 8; ++l) qpx[i][l] = sub[ib0 + l].xval[i], qpw[i][l] = sub[ib0 + l].weight[i];
      }
      const vf sc = make_qp_quants<32, kMaxQ + 1>(qpx, qpl, qpw);
      for (int l = 0; l < W; ++l) qp_scale[ib0 + l] = sc[l];
    }
    for (int ib = 0; ib < 8; ++ib) {
      Sub<32>& s = sub[ib];
      float max = s.xval[0];
      for (int i = 1; i < 32; ++i) max = max > s.xval[i] ? max : s.xval[i];
      scales[ib] = 0;
      if (max < kGroupMaxEps) continue;
      const float eff_max = qp_scale[ib] * kMaxQ;
      if (eff_max <= 0) continue;
      float scale = search_scale<32, 6, true>(g, s, eff_max, qp_scale[ib]);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[ib][k] = (uint8_t)(~signs[ib][k] & 127);
      }
      for (int k = 0; k < 4; ++k) {
        q2[2 * ib] |= (uint32_t)group_index(g, s, k) << (8 * k);
        q2[2 * ib + 1] |= (uint32_t)signs[ib][k] << (7 * k);
      }
      scales[ib] = scale;
      max_scale = max_scale > scale ? max_scale : scale;
    }
    put_fp16(out, 0.f);
    if (!max_scale) {
      std::memset(out + 2, 0, 64);
      return;
    }
    const float d = max_scale / 31;
    put_fp16(out, d);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) q2[2 * ib + 1] |= (uint32_t)sub_scale(id, scales[ib]) << 28;
    std::memcpy(out + 2, q2, 64);
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = get_fp16(b);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux[2];
      std::memcpy(aux, b + 2 + 8 * ib, 8);
      const float db = d * (0.5f + (float)(aux[1] >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l)
        dequant_group(tables::iq2xxs_grid, (aux[0] >> (8 * l)) & 255, tables::ksigns_iq2xs[(aux[1] >> (7 * l)) & 127],
                      db, y + 32 * ib + 8 * l);
    }
  }
  static void steps(const uint8_t*, const float*, float* step) { no_steps(step, BS); }
};

// IQ2_XS and IQ2_S: 16-value sub-blocks of two groups, 19 candidate scales from max/5.
//   IQ2_XS: sigma2 = sum x^2/256, imatrix required, 7 sign bits per group (an even count),
//           eps GROUP_MAX_EPS, d = max_scale/31.
//   IQ2_S:  sigma2 = 2 sum x^2/256, weights 0.25*sigma2 + x*x without imatrix, 8 sign bits,
//           eps GROUP_MAX_EPS_IQ2_S, d = max_scale/31 * 0.9875 (stored), scales from max_scale/31.
// Layouts (d fp16 @0):
//   block_iq2_xs: qs uint16[32] @2 (grid index | signs << 9), scales[8] @66 (4 bits per sub-block)
//   block_iq2_s:  qs[32] @2 (grid index low byte), signs[32] @34, qh[8] @66 (index bits 8-9, 2 per
//                 group), scales[8] @74
template <bool S>
struct IQ2_16 {
  static constexpr int BS = 256, BYTES = S ? 82 : 74;
  static constexpr IqLattice kLattice = S ? IqLattice::IQ2_S : IqLattice::IQ2_XS;
  static constexpr int kScales = S ? 74 : 66;
  static void quantize_block(const float* x, const float* qw, uint8_t* out) {
    const IqGrid& g = iq_grid(kLattice);
    std::memset(out, 0, BYTES);
    float scales[16];
    float max_scale = 0;
    const float sigma2 = block_sigma2(x, S ? 2.0f : 1.0f);
    for (int ib = 0; ib < 16; ++ib) {
      Sub<16> s;
      const float* xb = x + 16 * ib;
      for (int i = 0; i < 16; ++i)
        s.weight[i] = qw ? qw[16 * ib + i] * std::sqrt(sigma2 + xb[i] * xb[i]) : 0.25f * sigma2 + xb[i] * xb[i];
      for (int i = 0; i < 16; ++i) s.waux[i] = std::sqrt(s.weight[i]);
      uint8_t signs[2];
      for (int k = 0; k < 2; ++k) signs[k] = flip_signs<16, !S>(xb, s, k);
      float max = s.xval[0];
      for (int i = 1; i < 16; ++i) max = max > s.xval[i] ? max : s.xval[i];
      std::memset(s.L, 0, 16);
      scales[ib] = 0;
      if (max < (S ? 1e-8f : kGroupMaxEps)) continue;  // GROUP_MAX_EPS_IQ2_S / GROUP_MAX_EPS
      float scale = search_scale<16, 9, false>(g, s, max, max / (2 * kMaxQ - 1));
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k) signs[k] = S ? (uint8_t)~signs[k] : (uint8_t)(~signs[k] & 127);
      }
      for (int k = 0; k < 2; ++k) {
        const int gi = group_index(g, s, k), i8 = 2 * ib + k;
        if (S) {
          out[2 + i8] = (uint8_t)(gi & 255);
          out[66 + i8 / 4] |= (uint8_t)((gi >> 8) << (2 * (i8 % 4)));
          out[34 + i8] = signs[k];
        } else {
          put_u16(out + 2 + 2 * i8, (uint16_t)(gi | (signs[k] << 9)));
        }
      }
      scales[ib] = scale;
      max_scale = max_scale > scale ? max_scale : scale;
    }
    if (!max_scale) {
      if (!S) std::memset(out + 2, 0, 64);
      return;
    }
    const float d = max_scale / 31;
    put_fp16(out, S ? d * 0.9875f : d);
    const float id = 1 / d;
    for (int ib = 0; ib < 16; ++ib) out[kScales + ib / 2] |= (uint8_t)(sub_scale(id, scales[ib]) << (4 * (ib % 2)));
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = get_fp16(b);
    for (int ib = 0; ib < 8; ++ib) {
      const float db[2] = {d * (0.5f + (float)(b[kScales + ib] & 0xf)) * 0.25f,
                           d * (0.5f + (float)(b[kScales + ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l) {
        const int i8 = 4 * ib + l;
        if (S) {
          const int index = b[2 + i8] | ((b[66 + ib] << (8 - 2 * l)) & 0x300);
          dequant_group(tables::iq2s_grid, index, b[34 + i8], db[l / 2], y + 8 * i8);
        } else {
          const uint16_t q = get_u16(b + 2 + 2 * i8);
          dequant_group(tables::iq2xs_grid, q & 511, tables::ksigns_iq2xs[q >> 9], db[l / 2], y + 8 * i8);
        }
      }
    }
  }
  static void steps(const uint8_t*, const float*, float* step) { no_steps(step, BS); }
};

}  // namespace

void register_iq2(KernelTable& t) {
  t.ops[type_index(QType::IQ2_XXS)] = make_ops<QType::IQ2_XXS, IQ2_XXS>();
  t.ops[type_index(QType::IQ2_XS)] = make_ops<QType::IQ2_XS, IQ2_16<false>>();
  t.ops[type_index(QType::IQ2_S)] = make_ops<QType::IQ2_S, IQ2_16<true>>();
}

}}  // namespace prism::PRISM_NS
