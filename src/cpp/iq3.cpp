// 3-bit lattice types: IQ3_XXS and IQ3_S. Follows ggml-quants.c: quantize_iq3_xxs /
// quantize_row_iq3_xxs_impl(256, ..), quantize_iq3_s / quantize_row_iq3_s_impl(32, ..),
// iq3_find_best_neighbour, dequantize_row_iq3_xxs / dequantize_row_iq3_s. The lattices' search
// structures (iq3xs_init_impl) come from iq3_grid.h.
//
// One super-block at a time (K::quantize_block); inside a sub-block, the candidate scales run in SIMD
// lanes (lane_levels, lane_sums). Every float operation keeps ggml's order, and the same source is
// compiled per ISA.
#include <cfloat>

#include "iq3_grid.h"
#include "kernels.h"
#include "quant_tables.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int kMaxQ = 8;  // levels per coordinate

inline void store_fp16(uint8_t* p, float v) { const uint16_t h = fp32_to_fp16(v); std::memcpy(p, &h, 2); }
inline float load_fp16(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return fp16_to_fp32(h); }

// One 32-value sub-block's result: scale >= 0, the grid index of each group of 4, and the sign bits
// of each group of 8 (bit i set: value i negative).
struct SubBlock {
  float scale = 0;
  bool zero = true;
  uint16_t index[8] = {};
  uint8_t signs[4] = {};
};

// W candidate scales of one sub-block at once, one per lane (inverse scale id, scale 1/id; the
// candidate loop of quantize_row_iq3_*_impl): the levels of every element, with each off-grid group
// moved to its best neighbour (iq3_find_best_neighbour), and the sums sum w*x*q, sum w*q*q
// (q = 2L+1) in ggml's element order. Lanes that share an off-grid code
// (neighbouring candidates usually do) scan its neighbour list together, each with its own scale.
// A member's distance is the sum of 4 per-coordinate terms waux*diff*diff, which depend only on
// the coordinate's level: they are tabulated once per group (t[i][l]) and summed in ggml's order.
struct CandidateLanes {
  vi lev[32];
  vi off_grid;  // bit k: group k was off the grid
  vf sumqx, sumq2;
};

// g.map[u] per lane.
inline vi map_lanes(const Iq3Grid& g, vi u) {
#if PRISM_W == 16 && defined(__AVX512F__)
  return (vi)_mm512_i32gather_epi32((__m512i)u, g.map.data(), 4);
#elif PRISM_W == 8 && defined(__AVX2__)
  return (vi)_mm256_i32gather_epi32(g.map.data(), (__m256i)u, 4);
#else
  vi m;
  for (int j = 0; j < PW; ++j) m[j] = g.map[u[j] & (Iq3Grid::kCodes - 1)];
  return m;
#endif
}

// The levels of lanes [0, nvalid) for the groups in `groups` (bit k: group k; the others' levels
// are left unspecified).
inline void lane_levels(const Iq3Grid& g, const float* xval, const float* waux, float amax, vf id, vf scale,
                        int nvalid, uint32_t groups, CandidateLanes& c) {
  // |0.5f*(id*x - 1)| stays far below 2^22 when |id|*amax does (amax = max |x|, which exceeds the
  // scale's max when a flipped value is the largest): then one rounding instruction equals
  // nearest_int (not for an inf or NaN id, from a max or scale near 0)
  const bool small = all(vabs(id) * splat(amax) <= splat(1048576.0f));
  for (int e = 0; e < 32; ++e) {
    const vf a = splat(0.5f) * (id * splat(xval[e]) - splat(1.0f));
    c.lev[e] = clampi(small ? vround_small(a) : vnearest_int(a), 0, kMaxQ - 1);
  }
  vf sq[kMaxQ];  // scale * q for q = 2l+1
  for (int l = 0; l < kMaxQ; ++l) sq[l] = scale * splat((float)(2 * l + 1));
  c.off_grid = zeroi();
  const uint32_t valid = nvalid >= 32 ? ~0u : (1u << nvalid) - 1;
  vi uk[8];
  uint32_t offk[8];
  for (int k = 0; k < 8; ++k) {  // all lookups first: they overlap
    const vi* l = c.lev + 4 * k;
    uk[k] = l[0] | (l[1] << 3) | (l[2] << 6) | (l[3] << 9);
    offk[k] = ((groups >> k) & 1) ? movemask(map_lanes(g, uk[k]) < 0) & valid : 0;
  }
  for (int k = 0; k < 8; ++k) {
    uint32_t off = offk[k];
    if (!off) continue;
    vi* l = c.lev + 4 * k;
    const vi u = uk[k];
    vf t[4][kMaxQ];
    for (int i = 0; i < 4; ++i)
      for (int lv = 0; lv < kMaxQ; ++lv) {
        const vf diff = sq[lv] - splat(xval[4 * k + i]);
        t[i][lv] = splat(waux[4 * k + i]) * diff * diff;
      }
    vi code = u;
    while (off) {
      const int u0 = u[__builtin_ctz(off)];
      const vi same = u == splati(u0);
      off &= ~movemask(same);
      const int at = -g.map[u0] - 1;
      vf best = splat(FLT_MAX);
      vi bc = splati(g.member_code[at + 1]);  // kept only if no distance is finite (ggml asserts)
      for (int s = at + 1; s <= at + g.neighbours[at]; ++s) {
        const uint8_t* ml = &g.level[4 * s];
        // ggml adds to 0 first: the same up to the sign of a zero d2
        const vf d2 = ((t[0][ml[0]] + t[1][ml[1]]) + t[2][ml[2]]) + t[3][ml[3]];
        const vi better = d2 < best;
        best = sel(better, d2, best);
        bc = sel(better, splati(g.member_code[s]), bc);
      }
      code = sel(same, bc, code);
      c.off_grid |= same & (1 << k);
    }
    for (int i = 0; i < 4; ++i) l[i] = (code >> (3 * i)) & 7;
  }
}

// sum w*x*q and sum w*q*q per lane (q = 2L+1), in ggml's element order.
inline void lane_sums(const float* weight, const float* wx, CandidateLanes& c) {
  vf sumqx = zerof(), sumq2 = zerof();
  for (int e = 0; e < 32; ++e) {
    const vf q = tof(c.lev[e] + c.lev[e] + 1);
    sumqx = sumqx + splat(wx[e]) * q;  // C: w*x*q = (w*x)*q
    sumq2 = sumq2 + splat(weight[e]) * q * q;
  }
  c.sumqx = sumqx;
  c.sumq2 = sumq2;
}

// sum w*x*q and sum w*q*q over the sub-block for q = 2L+1.
inline void level_sums(const float* w, const float* xval, const int8_t* L, float& sumqx, float& sumq2) {
  sumqx = 0;
  sumq2 = 0;
  for (int i = 0; i < 32; ++i) {
    const float q = (float)(2 * L[i] + 1);
    sumqx += w[i] * xval[i] * q;
    sumq2 += w[i] * q * q;
  }
}

// The sub-block search of quantize_row_iq3_*_impl for 32 values xb with importance qw (or null).
template <class R>
void search_sub_block(const float* xb, const float* qw, float sigma2, SubBlock& r) {
  const Iq3Grid& g = R::search_grid();
  float weight[32], waux[32], xval[32], wx[32];
  for (int i = 0; i < 32; ++i) weight[i] = qw ? qw[i] * sqrtf(sigma2 + xb[i] * xb[i]) : xb[i] * xb[i];
  for (int i = 0; i < 32; ++i) waux[i] = sqrtf(weight[i]);
  for (int k = 0; k < 4; ++k) {
    uint8_t s = 0;
    int nflip = 0;
    for (int i = 0; i < 8; ++i) {
      const float v = xb[8 * k + i];
      if (v >= 0) {
        xval[8 * k + i] = v;
      } else {
        xval[8 * k + i] = -v;
        ++nflip;
        s |= (uint8_t)(1 << i);
      }
    }
    if (R::kEvenSigns && nflip % 2) {  // flip the value that costs least: first smallest w*x*x
      int imin = 0;
      float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
      for (int i = 1; i < 8; ++i) {
        const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
        if (ax < min) {
          min = ax;
          imin = i;
        }
      }
      xval[8 * k + imin] = -xval[8 * k + imin];
      s ^= (uint8_t)(1 << imin);
    }
    r.signs[k] = R::kEvenSigns ? (uint8_t)(s & 127) : s;
  }
  float max = xval[0];
  for (int i = 1; i < 32; ++i) max = max > xval[i] ? max : xval[i];
  r.zero = R::zero(max);
  if (r.zero) return;
  for (int i = 0; i < 32; ++i) wx[i] = weight[i] * xval[i];
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = amax > std::fabs(xval[i]) ? amax : std::fabs(xval[i]);

  int8_t L[32] = {};
  bool on_grid[8];
  for (bool& b : on_grid) b = !R::kRefineAll;
  float best = 0, scale = max / (2 * kMaxQ - 1);
  constexpr int kCand = 2 * R::kNTry + 1;
  CandidateLanes c;
  for (int c0 = 0; c0 < kCand; c0 += W) {
    vf id = zerof(), this_scale = zerof();
    const int nvalid = kCand - c0 < W ? kCand - c0 : W;
    for (int j = 0; j < nvalid; ++j) {
      const int is = c0 + j - R::kNTry;
      id[j] = (2 * kMaxQ - 1 + is * 0.2f) / max;
      this_scale[j] = 1 / id[j];
    }
    lane_levels(g, xval, waux, amax, id, this_scale, nvalid, 0xff, c);
    lane_sums(weight, wx, c);
    int taken = -1;  // the last lane accepted, in candidate order: `best` feeds the next test
    for (int j = 0; j < nvalid; ++j) {
      const float sumqx = c.sumqx[j], sumq2 = c.sumq2[j];
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        scale = sumqx / sumq2;
        best = scale * sumqx;
        taken = j;
      }
    }
    if (taken >= 0) {
      for (int e = 0; e < 32; ++e) L[e] = (int8_t)c.lev[e][taken];
      for (int k = 0; k < 8; ++k) on_grid[k] = !((c.off_grid[taken] >> k) & 1);
    }
  }
  bool any_off = false;
  for (bool b : on_grid) any_off |= !b;
  if (any_off && scale > 0) {  // re-pick the groups at the final scale (lane 0)
    uint32_t groups = 0;
    for (int k = 0; k < 8; ++k) groups |= (uint32_t)(R::kRefineAll || !on_grid[k]) << k;
    lane_levels(g, xval, waux, amax, splat(1 / scale), splat(scale), 1, groups, c);
    for (int e = 0; e < 32; ++e)
      if ((groups >> (e / 4)) & 1) L[e] = (int8_t)c.lev[e][0];
    float sumqx, sumq2;
    level_sums(weight, xval, L, sumqx, sumq2);
    if (sumq2 > 0) scale = sumqx / sumq2;
  }
  if (scale < 0) {  // ggml: "should never happen"; flip the scale and the signs
    scale = -scale;
    for (uint8_t& s : r.signs) s = R::kEvenSigns ? (uint8_t)(~s & 127) : (uint8_t)~s;
  }
  for (int k = 0; k < 8; ++k) {
    int u = 0;
    for (int i = 0; i < 4; ++i) u |= L[4 * k + i] << (3 * i);
    r.index[k] = (uint16_t)g.map[u];  // on the grid by construction
  }
  r.scale = scale;
}

// Shared by both: weights' sigma2 = 2 * sum(x^2) / 256 (sequential) and the 8 sub-block searches.
// Returns max_scale.
template <class R>
float search_super_block(const float* x, const float* qw, SubBlock* sub) {
  float sumx2 = 0;
  for (int i = 0; i < 256; ++i) sumx2 += x[i] * x[i];
  const float sigma2 = 2 * sumx2 / 256;
  float max_scale = 0;
  for (int ib = 0; ib < 8; ++ib) {
    search_sub_block<R>(x + 32 * ib, qw ? qw + 32 * ib : nullptr, sigma2, sub[ib]);
    max_scale = max_scale > sub[ib].scale ? max_scale : sub[ib].scale;
  }
  return max_scale;
}

// 4-bit sub-block scale of the super-block scale d: nearest_int(0.5f*(id*scale - 1)) in [0, 15].
inline int scale_code(float id, float scale) {
  const int l = nearest_int(0.5f * (id * scale - 1));
  return l < 0 ? 0 : (l > 15 ? 15 : l);
}

// Bin width of a value stored as +-db*v[l] (v: the lattice's 8 coordinate values, both signs):
// the gap to the next value in x's direction; towards zero from the smallest magnitude, the gap to
// its negative; none (inf) beyond the largest.
inline float lattice_step(const uint8_t* v, int l, float db, float y, float x) {
  if (db == 0.0f) return 0.0f;
  const bool outward = std::fabs(x) > std::fabs(y);
  if (outward) return l == kMaxQ - 1 ? INFINITY : std::fabs(db) * (float)(v[l + 1] - v[l]);
  return std::fabs(db) * (float)(l == 0 ? 2 * v[0] : v[l] - v[l - 1]);
}

// Coordinate values and the level of each stored byte value, from the format grid.
struct Levels {
  uint8_t value[kMaxQ];
  int8_t level[256];
};
template <size_t N>
Levels make_levels(const uint32_t (&grid)[N]) {
  Levels t{};
  bool seen[256] = {};
  for (uint32_t p : grid)
    for (int i = 0; i < 4; ++i) seen[(p >> (8 * i)) & 0xff] = true;
  int n = 0;
  for (int v = 0; v < 256; ++v) {
    t.level[v] = seen[v] ? (int8_t)n : (int8_t)-1;
    if (seen[v] && n < kMaxQ) t.value[n++] = (uint8_t)v;
  }
  return t;
}

// One stored sub-block: its scale db, the grid index of each group of 4, the sign byte of each 8
// values (bit i: value i negative).
struct StoredSubBlock {
  float db;
  int idx[8];
  uint8_t sg[4];
};

// to_float (y) and the bin widths (step, for x) of a block of K, from K::decode of each sub-block:
// y = db * grid value * (+-1), as dequantize_row_iq3_* computes it.
template <class K>
void lattice_values(const uint8_t* b, float* y, const float* x, float* step) {
  static const Levels lv = make_levels(K::grid());
  const float d = load_fp16(b);
  for (int ib = 0; ib < 8; ++ib) {
    StoredSubBlock s;
    K::decode(b, ib, d, s);
    for (int k = 0; k < 8; ++k) {
      const uint32_t p = K::grid()[s.idx[k]];
      for (int i = 0; i < 4; ++i) {
        const int e = 32 * ib + 4 * k + i;
        const uint8_t v = (uint8_t)(p >> (8 * i));
        const float val = s.db * (float)v * ((s.sg[e % 32 / 8] & tables::kmask_iq2xs[e % 8]) ? -1.f : 1.f);
        if (y) y[e] = val;
        if (step) step[e] = lattice_step(lv.value, lv.level[v], s.db, val, x[e]);
      }
    }
  }
}

// quantize_row_iq3_*_impl for one super-block of K: the sub-block searches (K's rules), then K::pack.
template <class K>
void lattice_quantize(const float* x, const float* qw, uint8_t* out) {
  SubBlock sub[8];
  const float max_scale = search_super_block<K>(x, qw, sub);
  std::memset(out, 0, K::BYTES);
  K::pack(sub, max_scale, out);
}

// block_iq3_xxs: d (fp16) @0, qs[64] @2 (grid index per group of 4), scales_and_signs (u32 x 8) @66:
// bits 7j..7j+6 = signs of the j-th 8 values (ksigns_iq2xs: the 8th sign makes the parity even),
// bits 28..31 = the 4-bit sub-block scale s, db = d * (0.5 + s) * 0.5.
struct IQ3_XXS {
  static constexpr int BS = 256, BYTES = 98;
  // search rules of quantize_row_iq3_xxs_impl
  static constexpr int kNTry = 15;
  static constexpr bool kEvenSigns = true;   // 7 stored sign bits per 8 values: the 8th makes the parity even
  static constexpr bool kRefineAll = false;  // the final pass re-picks only groups that were off the grid
  static bool zero(float max) { return max < 1e-8f; }  // GROUP_MAX_EPS_IQ3_XXS
  static const Iq3Grid& search_grid() { return iq3xxs_search_grid(); }

  static void quantize_block(const float* x, const float* qw, uint8_t* out) { lattice_quantize<IQ3_XXS>(x, qw, out); }
  static void pack(const SubBlock* sub, float max_scale, uint8_t* out) {
    if (!max_scale) return;  // d = +0, everything 0
    const float d = max_scale / 31;
    store_fp16(out, d * 1.0125f);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t ss = 0;
      if (!sub[ib].zero) {
        for (int k = 0; k < 8; ++k) out[2 + 8 * ib + k] = (uint8_t)sub[ib].index[k];
        for (int j = 0; j < 4; ++j) ss |= (uint32_t)sub[ib].signs[j] << (7 * j);
      }
      ss |= (uint32_t)scale_code(id, sub[ib].scale) << 28;
      std::memcpy(out + 66 + 4 * ib, &ss, 4);
    }
  }
  static const auto& grid() { return tables::iq3xxs_grid; }
  static void decode(const uint8_t* b, int ib, float d, StoredSubBlock& s) {
    uint32_t ss;
    std::memcpy(&ss, b + 66 + 4 * ib, 4);
    s.db = d * (0.5f + (float)(ss >> 28)) * 0.5f;
    for (int k = 0; k < 8; ++k) s.idx[k] = b[2 + 8 * ib + k];
    for (int j = 0; j < 4; ++j) s.sg[j] = tables::ksigns_iq2xs[(ss >> (7 * j)) & 127];
  }
  static void dequantize(const uint8_t* b, float* y) { lattice_values<IQ3_XXS>(b, y, nullptr, nullptr); }
  static void steps(const uint8_t* b, const float* x, float* step) { lattice_values<IQ3_XXS>(b, nullptr, x, step); }
};

// block_iq3_s: d (fp16) @0, qs[64] @2 (low 8 bits of the grid index per group of 4), qh[8] @66 (bit k of
// qh[ib]: bit 8 of group k of sub-block ib), signs[32] @74 (one byte per 8 values), scales[4] @106
// (sub-block 2j in the low nibble of byte j, 2j+1 in the high one; db = d * (1 + 2s)).
struct IQ3_S {
  static constexpr int BS = 256, BYTES = 110;
  // search rules of quantize_row_iq3_s_impl
  static constexpr int kNTry = 9;
  static constexpr bool kEvenSigns = false;
  static constexpr bool kRefineAll = true;
  static bool zero(float max) { return !max; }
  static const Iq3Grid& search_grid() { return iq3s_search_grid(); }

  static void quantize_block(const float* x, const float* qw, uint8_t* out) { lattice_quantize<IQ3_S>(x, qw, out); }
  static void pack(const SubBlock* sub, float max_scale, uint8_t* out) {
    // ggml advances its qs and signs cursors only past non-zero sub-blocks, so the groups of later
    // sub-blocks move down over a zero one (qh and scales are indexed by sub-block).
    int at = 0;
    for (int ib = 0; ib < 8; ++ib) {
      if (sub[ib].zero) continue;
      for (int k = 0; k < 8; ++k) {
        out[2 + 8 * at + k] = (uint8_t)(sub[ib].index[k] & 255);
        out[66 + ib] |= (uint8_t)((sub[ib].index[k] >> 8) << k);
      }
      std::memcpy(out + 74 + 4 * at, sub[ib].signs, 4);
      ++at;
    }
    if (!max_scale) return;  // d = +0, scales 0
    const float d = max_scale / 31;
    store_fp16(out, d * 1.033f);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ib += 2)
      out[106 + ib / 2] = (uint8_t)(scale_code(id, sub[ib].scale) | (scale_code(id, sub[ib + 1].scale) << 4));
  }
  static const auto& grid() { return tables::iq3s_grid; }
  static void decode(const uint8_t* b, int ib, float d, StoredSubBlock& s) {
    s.db = d * (float)(1 + 2 * ((b[106 + ib / 2] >> (4 * (ib % 2))) & 0xf));
    for (int k = 0; k < 8; ++k) s.idx[k] = b[2 + 8 * ib + k] | (((b[66 + ib] >> k) & 1) << 8);
    std::memcpy(s.sg, b + 74 + 4 * ib, 4);
  }
  static void dequantize(const uint8_t* b, float* y) { lattice_values<IQ3_S>(b, y, nullptr, nullptr); }
  static void steps(const uint8_t* b, const float* x, float* step) { lattice_values<IQ3_S>(b, nullptr, x, step); }
};

}  // namespace

void register_iq3(KernelTable& t) {
  t.ops[type_index(QType::IQ3_XXS)] = make_ops<QType::IQ3_XXS, IQ3_XXS>();
  t.ops[type_index(QType::IQ3_S)] = make_ops<QType::IQ3_S, IQ3_S>();
}

}}  // namespace prism::PRISM_NS
