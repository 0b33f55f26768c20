// 1-bit lattice types IQ1_S and IQ1_M. Follows ggml-quants.c: quantize_iq1_s /
// quantize_row_iq1_s_impl, quantize_iq1_m / quantize_row_iq1_m_impl, iq1_find_best_neighbour2, and
// dequantize_row_iq1_s / dequantize_row_iq1_m. Each value is one of three levels {-1, 0, 1} + delta
// (delta = +-IQ1S_DELTA per sub-block or half), times a sub-block scale; the best split of the sorted
// values into the three levels is found exhaustively, then each group of 8 is snapped to the grid.
#include "iq_lattice.h"
#include "quant_tables.h"

namespace prism { namespace PRISM_NS {
namespace {

constexpr int QK_K = 256;
constexpr float kDelta = 0.125f;  // IQ1S_DELTA = IQ1M_DELTA
constexpr float kXp[3] = {-1 + kDelta, kDelta, 1 + kDelta};
constexpr float kXm[3] = {-1 - kDelta, -kDelta, 1 - kDelta};

inline float block_sigma2(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < QK_K; ++i) sumx2 += x[i] * x[i];
  return 2 * sumx2 / QK_K;
}

inline float abs_max(const float* x, int n) {
  float max = std::fabs(x[0]);
  for (int i = 1; i < n; ++i) max = max > std::fabs(x[i]) ? max : std::fabs(x[i]);
  return max;
}

// The winning split of the exhaustive search: besti1 <= besti2 positions in sorted order, the
// candidate (sign pattern) and its scale; i1 < 0 if nothing was accepted.
struct Split {
  int i1 = -1, i2 = -1, k = -1;
  float scale = 0;
};

// The accept chain of the split search: candidates (i1, i2 = i1.., k = 0..NK-1) in ggml's order, a
// candidate accepted when sumq2 > 0 and sumqx^2 > best*sumq2, best = (sumqx/sumq2)*sumqx. Their sums
// do not depend on earlier decisions, so W values of i2 are computed at once (Cand::sums, lanes = i2).

// Runs the candidates of one batch (lanes = i2 from j0, `valid` lanes) through the chain in order,
// from lane l0's candidates after k0 (k0 = -1: all of them) on. The vector test leaves out sumq2 > 0:
// a lane it lets through is tested again exactly.
template <int NK>
inline void chain_batch(const vf* qx, const vf* q2, int i1, int j0, uint32_t valid, int l0, int k0, float& best,
                        Split& s) {
  auto accept = [&](int l, int k) {
    if (q2[k][l] > 0 && qx[k][l] * qx[k][l] > best * q2[k][l]) {
      s.scale = qx[k][l] / q2[k][l];
      best = s.scale * qx[k][l];
      s.i1 = i1, s.i2 = j0 + l, s.k = k;
    }
  };
  if (k0 >= 0) {
    for (int k = k0 + 1; k < NK; ++k) accept(l0, k);
    valid &= ~((2u << l0) - 1);
  } else {
    valid &= ~((1u << l0) - 1);
  }
  while (valid) {
    vi pass = zeroi();
    for (int k = 0; k < NK; ++k) pass |= qx[k] * qx[k] > splat(best) * q2[k];
    const uint32_t bits = movemask(pass) & valid;
    if (!bits) break;
    const int l = __builtin_ctz(bits);
    for (int k = 0; k < NK; ++k) accept(l, k);
    valid &= ~((2u << l) - 1);
  }
}

// Three passes, all exact:
// 1. Every candidate's `best` value b (with sumq2 > 0), as ggml would compute it on accepting it; per
//    batch the largest per lane.
// 2. A start: the best reachable before a candidate is the b of some earlier candidate, so at most
//    their maximum; acceptance only gets easier as best decreases, so a candidate that passes against
//    that maximum is accepted by ggml's chain whatever came before, and the chain continues from
//    exactly its state. The first candidate of largest b usually is one (else: the whole chain).
// 3. The chain from the start. A candidate passes only if its b is at least best*(1 - 2^-21) (the
//    test and b round four times), and best only drifts down by as much per accept (at most 1122
//    candidates), so with the start's b as best, batches whose b all lie below b*(1 - 2^-10) are
//    skipped without their sums.
template <int N, int NK, class Cand>
inline Split split_search(const Cand& cand, float max) {
  Split s;
  s.scale = max;
  constexpr int kMaxBatches = (N + 1) * (N / W + 2);
  vf bmax[kMaxBatches];
  vf qx[NK], q2[NK];
  vi lane;
  for (int l = 0; l < PW; ++l) lane[l] = l;
  auto valid_bits = [](int j0) { return N - j0 + 1 < W ? (1u << (N - j0 + 1)) - 1 : (1u << W) - 1; };
  // b of the lanes, unmasked: a lane with sumq2 < 0 or -0 (Cand pads the lanes past N with a
  // negative sumq2) has b <= 0 or NaN, which never beats a b > 0; sumq2 = +0 gives +inf (or NaN), and
  // a +inf maximum falls back to the whole chain.
  auto batch_b = [&](int k) { return qx[k] / q2[k] * qx[k]; };
  // pass 1
  vf top = splat(-FLT_MAX);
  int nb = 0;
  for (int i1 = 0; i1 <= N; ++i1)
    for (int j0 = i1; j0 <= N; j0 += W, ++nb) {
      cand.sums(i1, j0, qx, q2);
      vf bm = splat(-FLT_MAX);
      for (int k = 0; k < NK; ++k) bm = vmax(batch_b(k), bm);  // a NaN b leaves bm
      bmax[nb] = bm;
      top = vmax(top, bm);
    }
  float best = -FLT_MAX;
  const float tmax = hmax(top, -FLT_MAX);
  if (tmax > 0 && tmax < FLT_MAX) {
    // pass 2: the first candidate with b == tmax, and the largest b before it
    int b0 = 0, i1 = 0, j0 = 0;
    vf pre_v = splat(-FLT_MAX);
    for (;; ++b0) {
      if (movemask(bmax[b0] == splat(tmax))) break;
      pre_v = vmax(pre_v, bmax[b0]);
      if ((j0 += W) > N) j0 = ++i1;
    }
    float pre = hmax(pre_v, -FLT_MAX);
    cand.sums(i1, j0, qx, q2);
    vf b[NK];
    for (int k = 0; k < NK; ++k) b[k] = batch_b(k);
    int l0 = 0, k0 = 0;
    for (;; ++l0) {
      for (k0 = 0; k0 < NK && b[k0][l0] != tmax; ++k0) pre = b[k0][l0] > pre ? b[k0][l0] : pre;  // NaN: skipped
      if (k0 < NK) break;
    }
    if (qx[k0][l0] * qx[k0][l0] > pre * q2[k0][l0]) {
      s.scale = qx[k0][l0] / q2[k0][l0];
      best = s.scale * qx[k0][l0];
      s.i1 = i1, s.i2 = j0 + l0, s.k = k0;
      // pass 3. The rounding bounds hold for normal floats: every candidate's sumq2 is at least
      // 1/81 of the start's (all levels are non-zero: (1/8)^2 vs (9/8)^2 of the same weights), so
      // with the start's sumqx^2 >= 1e-30 every product the test compares is normal. Below that
      // (sub-blocks near GROUP_MAX_EPS) no batch is skipped.
      const float thr = qx[k0][l0] * qx[k0][l0] >= 1e-30f ? best * (1.0f - 0x1p-10f) : -FLT_MAX;
      chain_batch<NK>(qx, q2, i1, j0, valid_bits(j0), l0, k0, best, s);
      for (int b1 = b0 + 1; (j0 += W) <= N || (j0 = ++i1) <= N; ++b1)
        if (movemask(bmax[b1] >= splat(thr))) {
          cand.sums(i1, j0, qx, q2);
          chain_batch<NK>(qx, q2, i1, j0, valid_bits(j0), 0, -1, best, s);
        }
      return s;
    }
  }
  // the whole chain
  for (int i1 = 0; i1 <= N; ++i1)
    for (int j0 = i1; j0 <= N; j0 += W) {
      cand.sums(i1, j0, qx, q2);
      chain_batch<NK>(qx, q2, i1, j0, valid_bits(j0), 0, -1, best, s);
    }
  return s;
}

// Terms of the padding lanes (i2 > N): sumqx about 1e18 and sumq2 about -1e18, so b = -1e18 or so:
// never picked by split_search, and no subnormal on the way (they cost microcode assists).
constexpr float kPadQX = 1e18f, kPadQ2 = -1e18f;

// Levels of the split: sorted positions [0, i1) -> 0, [i1, i2) -> 1, [i2, N) -> 2.
template <int N>
inline void split_levels(const int* idx, const Split& s, int8_t* L) {
  for (int j = 0; j < N; ++j) L[idx[j]] = (int8_t)(j < s.i1 ? 0 : j < s.i2 ? 1 : 2);
}

// The map entry of group k of L (grid index, or < 0: its neighbour list), and a prefetch of the list.
inline int32_t group_entry(const IqGrid& g, const int8_t* L) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) u |= (uint32_t)L[i] << (2 * i);
  const int32_t m = g.index_of(u);
  if (m < 0) prefetch_list<5>(g.list_at(m));  // 70 neighbours on average: about 300 bytes
  return m;
}

// sum w*q*x and w*q*q over a group of 8 with q = xx[level] * mult (ggml's operation order).
inline void group_sums(const IqGrid& g, int gi, const float* xb, const float* w, const float* xx, float mult,
                       float& sumqx, float& sumq2) {
  const uint32_t c = g.code[gi];
  for (int j = 0; j < 8; ++j) {
    const float q = xx[level(c, j)] * mult;  // mult 1 (IQ1_S, IQ1_M's sub-block refit) is exact
    sumqx += w[j] * q * xb[j];
    sumq2 += w[j] * q * q;
  }
}

// One sub-block of Cand::N values after its weights: the exhaustive split search over the sorted
// values (Cand: the candidates' sums, NK sign patterns k, the level values of group j), the levels,
// each group on the grid (or its best neighbour, then a refitted scale). Returns false for a sub-block
// ggml leaves empty (max |x| < eps, or no candidate accepted); else the groups' grid indices, the
// scale (>= 0) and the pattern k (the one of the mirrored levels when the fitted scale was < 0).
template <class Cand>
inline bool fit_sub_block(const IqGrid& g, const float* xb, const float* w, float eps, int* index, float* scale,
                          int* k) {
  constexpr int N = Cand::N, NK = Cand::NK;
  const float max = abs_max(xb, N);
  if (max < eps) return false;
  int idx[N];
  sort_index<N>(xb, idx);
  Cand c;  // fill sets every entry the search reads
  c.fill(xb, w, idx);
  const Split s = split_search<N, NK>(c, max);
  if (s.i1 < 0) return false;
  int8_t L[N];
  split_levels<N>(idx, s, L);
  *scale = s.scale, *k = s.k;
  if (*scale < 0) {
    for (int j = 0; j < N; ++j) L[j] = (int8_t)(2 - L[j]);
    *scale = -*scale, *k = NK - 1 - *k;
  }
  // each group on the grid as is, else iq1_find_best_neighbour2 (term = w*diff*diff, diff =
  // scale*xx[l] - x); every group's list is fetched before the first search
  bool off = false;
  int32_t m[N / 8];
  for (int j = 0; j < N / 8; ++j) m[j] = group_entry(g, L + 8 * j);
  for (int j = 0; j < N / 8; ++j) {
    off |= m[j] < 0;
    index[j] = m[j] >= 0 ? m[j] : best_neighbour(g.list_at(m[j]), xb + 8 * j, w + 8 * j, *scale, Cand::values(*k, j));
  }
  if (off) {
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < N / 8; ++j)
      group_sums(g, index[j], xb + 8 * j, w + 8 * j, Cand::values(*k, j), 1.0f, sumqx, sumq2);
    if (sumqx > 0 && sumq2 > 0) *scale = sumqx / sumq2;
  }
  return true;
}

// block_iq1_s: d (fp16) @0, qs[32] @2 (grid index low bytes), qh uint16[8] @34: per 32-value
// sub-block the index bits 8-10 of its 4 groups (3 bits each), the 3-bit scale << 12 and the sign of
// delta (bit 15). imatrix required.
struct IQ1_S {
  static constexpr int BS = 256, BYTES = 50, N = 32;
  // IQ1_S candidates for one i1 and i2 = j0 + lane: k = 0 with x_p, k = 1 with x_m. ggml's sums are
  // (A*v0 + B*v1) + C*v2 (and the same with w and v*v) for A = the sum up to i1, B from i1 to i2, C
  // from i2 on; the products with C depend on i2 only and are computed once per sub-block (cxv, cwv).
  struct Cand {
    static constexpr int N = IQ1_S::N, NK = 2, kPad = N + 1 + 16;  // lanes past N read don't-care values
    float sumx[kPad], sumw[kPad], cxv[NK][kPad], cwv[NK][kPad];
    void fill(const float* xb, const float* w, const int* idx) {
      float ax = 0, aw = 0;  // running sums in registers (sumx[0] = sumw[0] = 0)
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < N; ++j) {
        sumx[j + 1] = ax = ax + w[idx[j]] * xb[idx[j]];
        sumw[j + 1] = aw = aw + w[idx[j]];
      }
      for (int j = N + 1; j < kPad; ++j) sumx[j] = sumw[j] = 0;
      for (int k = 0; k < NK; ++k) {
        const float v2 = values(k, 0)[2];
        for (int j = 0; j < kPad; ++j) {
          cxv[k][j] = j <= N ? (sumx[N] - sumx[j]) * v2 : kPadQX;
          cwv[k][j] = j <= N ? (sumw[N] - sumw[j]) * v2 * v2 : kPadQ2;
        }
      }
    }
    static const float* values(int k, int) { return k == 0 ? kXp : kXm; }
    void sums(int i1, int j0, vf* qx, vf* q2) const {
      const float ax = sumx[i1] - sumx[0], aw = sumw[i1] - sumw[0];
      const vf bx = load_unaligned(sumx + j0) - splat(sumx[i1]), bw = load_unaligned(sumw + j0) - splat(sumw[i1]);
      for (int k = 0; k < NK; ++k) {
        const float* v = values(k, 0);
        qx[k] = (splat(ax * v[0]) + bx * splat(v[1])) + load_unaligned(cxv[k] + j0);
        q2[k] = (splat(aw * v[0] * v[0]) + bw * splat(v[1]) * splat(v[1])) + load_unaligned(cwv[k] + j0);
      }
    }
  };
  static void quantize_block(const float* x, const float* qw, uint8_t* out) {
    const IqGrid& g = iq_grid(IqLattice::IQ1);
    std::memset(out, 0, BYTES);
    float scales[8];
    int shifts[8];
    float max_scale = 0;
    const float sigma2 = block_sigma2(x);
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = x + N * ib;
      float weight[N];
      for (int i = 0; i < N; ++i) weight[i] = qw[N * ib + i] * std::sqrt(sigma2 + xb[i] * xb[i]);
      scales[ib] = 0, shifts[ib] = 1;
      int index[4], k;
      float scale;
      if (!fit_sub_block<Cand>(g, xb, weight, 1e-12f, index, &scale, &k)) continue;  // GROUP_MAX_EPS_IQ1_S
      const int shift = k == 0 ? 1 : -1;
      uint16_t h = 0;
      for (int k = 0; k < 4; ++k) {
        out[2 + 4 * ib + k] = (uint8_t)(index[k] & 255);
        h |= (uint16_t)((index[k] >> 8) << (3 * k));
      }
      put_u16(out + 34 + 2 * ib, h);
      scales[ib] = scale, shifts[ib] = shift;
      max_scale = max_scale > scale ? max_scale : scale;
    }
    if (!max_scale) return;
    const float d = max_scale / 15;
    put_fp16(out, d * 1.125f);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
      int l = nearest_int(0.5f * (id * scales[ib] - 1));
      l = l < 0 ? 0 : l > 7 ? 7 : l;
      if (shifts[ib] == -1) l |= 8;
      put_u16(out + 34 + 2 * ib, (uint16_t)(get_u16(out + 34 + 2 * ib) | (l << 12)));
    }
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = get_fp16(b);
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = get_u16(b + 34 + 2 * ib);
      const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
      const float delta = qh & 0x8000 ? -kDelta : kDelta;
      for (int l = 0; l < 4; ++l) {
        const uint64_t p = tables::iq1s_grid[b[2 + 4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)];
        for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = dl * ((float)(int8_t)(p >> (8 * j)) + delta);
      }
    }
  }
  static void steps(const uint8_t*, const float*, float* step) { no_steps(step, BS); }
};

// block_iq1_m: qs[32] @0 (grid index low bytes), qh[16] @32 (per 16-value sub-block: index bits 8-10
// of its two groups in the low and high nibble, bit 3 / bit 7 the sign of each group's delta),
// scales uint16[4] @48 (16 x 3-bit sub-block scales, and the fp16 super-block scale in the top 4
// bits of each). The two halves of a sub-block may take different deltas: 4 sign patterns k
// (bit 1: first half x_m, bit 0: second half x_m).
struct IQ1_M {
  static constexpr int BS = 256, BYTES = 56, N = 16;
  static constexpr float kCp1 = kXp[0] * kXp[0] - kXp[1] * kXp[1], kCp2 = kXp[1] * kXp[1] - kXp[2] * kXp[2];
  static constexpr float kCm1 = kXm[0] * kXm[0] - kXm[1] * kXm[1], kCm2 = kXm[1] * kXm[1] - kXm[2] * kXm[2];
  // Prefix sums per half of the sub-block (in sorted order) and the candidates of ggml's split
  // search with them: sumqx = T*v[2] - px[i1] - px[i2] per half, and the matching sumq2
  // (T_w*v[2]*v[2] + pw[i1]*c1) + pw[i2]*c2, whose two parts are computed once per sub-block:
  // q2row per i1, q2col per i2 (index 0: x_p, 1: x_m).
  struct Cand {
    static constexpr int N = IQ1_M::N, NK = 4, kPad = N + 1 + 16;  // lanes past N read don't-care values
    float px[2][kPad], q2row[2][2][kPad], q2col[2][2][kPad];
    float tx[2][2];  // T*v[2] per half and sign
    void fill(const float* xb, const float* w, const int* idx) {
      float pw[2][kPad];
      float ax[2] = {0, 0}, aw[2] = {0, 0};  // running sums per half, in registers
      for (int h = 0; h < 2; ++h) px[h][0] = pw[h][0] = 0;
      for (int j = 0; j < N; ++j) {
        const int i = idx[j];
        const bool h1 = i >= N / 2;
        const float sx = (h1 ? ax[1] : ax[0]) + w[i] * xb[i], sw = (h1 ? aw[1] : aw[0]) + w[i];
        ax[0] = h1 ? ax[0] : sx, ax[1] = h1 ? sx : ax[1];
        aw[0] = h1 ? aw[0] : sw, aw[1] = h1 ? sw : aw[1];
        for (int h = 0; h < 2; ++h) px[h][j + 1] = ax[h], pw[h][j + 1] = aw[h];
      }
      for (int h = 0; h < 2; ++h) {
        for (int j = N + 1; j < kPad; ++j) px[h][j] = -kPadQX, pw[h][j] = 0;
        const float txs = px[h][N], tws = pw[h][N];
        tx[h][0] = txs * kXp[2], tx[h][1] = txs * kXm[2];
        const float t0 = tws * kXp[2] * kXp[2], t1 = tws * kXm[2] * kXm[2];
        for (int j = 0; j < kPad; ++j) {
          q2row[h][0][j] = t0 + pw[h][j] * kCp1;
          q2row[h][1][j] = t1 + pw[h][j] * kCm1;
          q2col[h][0][j] = j <= N ? pw[h][j] * kCp2 : kPadQ2;
          q2col[h][1][j] = j <= N ? pw[h][j] * kCm2 : kPadQ2;
        }
      }
    }
    // level values of group (half) j with sign pattern k
    static const float* values(int k, int j) { return (j == 0 ? k < 2 : k % 2 == 0) ? kXp : kXm; }
    void sums(int i1, int j0, vf* qx, vf* q2) const {
      vf hx[2][2], h2[2][2];  // [half][sign]
      for (int h = 0; h < 2; ++h) {
        const vf sx = splat(px[h][i1]) + load_unaligned(px[h] + j0);
        for (int m = 0; m < 2; ++m) {
          hx[h][m] = splat(tx[h][m]) - sx;
          h2[h][m] = splat(q2row[h][m][i1]) + load_unaligned(q2col[h][m] + j0);
        }
      }
      for (int k = 0; k < NK; ++k) {  // k = 2*(first half x_m) + (second half x_m)
        qx[k] = hx[0][k >> 1] + hx[1][k & 1];
        q2[k] = h2[0][k >> 1] + h2[1][k & 1];
      }
    }
  };
  static void quantize_block(const float* x, const float* qw, uint8_t* out) {
    const IqGrid& g = iq_grid(IqLattice::IQ1);
    std::memset(out, 0, BYTES);
    float scales[16], weight[QK_K];
    int shifts[16];
    float max_scale = 0;
    const float sigma2 = block_sigma2(x);
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = x + N * ib;
      float* w = weight + N * ib;
      for (int i = 0; i < N; ++i) w[i] = qw ? qw[N * ib + i] * std::sqrt(sigma2 + xb[i] * xb[i]) : xb[i] * xb[i];
      scales[ib] = 0, shifts[ib] = 0;
      int index[2], shift;
      float scale;
      if (!fit_sub_block<Cand>(g, xb, w, 1e-7f, index, &scale, &shift)) continue;  // GROUP_MAX_EPS_IQ1_M
      out[2 * ib] = (uint8_t)(index[0] & 255);
      out[2 * ib + 1] = (uint8_t)(index[1] & 255);
      out[32 + ib] = (uint8_t)((index[0] >> 8) | ((index[1] >> 8) << 4));
      scales[ib] = scale, shifts[ib] = shift;
      max_scale = max_scale > scale ? max_scale : scale;
    }
    if (!max_scale) return;
    static constexpr uint8_t kMasks[4] = {0x00, 0x80, 0x08, 0x88};
    uint16_t sc[4] = {};
    float d = max_scale / 15;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < 16; ++ib) {
      int l = nearest_int(0.5f * (id * scales[ib] - 1));
      l = l < 0 ? 0 : l > 7 ? 7 : l;
      sc[ib / 4] |= (uint16_t)(l << (3 * (ib % 4)));
      out[32 + ib] |= kMasks[shifts[ib]];
      // the super-block scale refit over the stored grid points, with the sub-block scales 2l+1
      for (int k = 0; k < 2; ++k) {
        const int gi = out[2 * ib + k] + ((out[32 + ib] << (8 - 4 * k)) & 0x700);
        group_sums(g, gi, x + N * ib + 8 * k, weight + N * ib + 8 * k, Cand::values(shifts[ib], k),
                   (float)(2 * l + 1), sumqx, sumq2);
      }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    const uint16_t s = fp32_to_fp16(d * 1.1125f);
    sc[0] |= (uint16_t)((s & 0x000f) << 12);
    sc[1] |= (uint16_t)((s & 0x00f0) << 8);
    sc[2] |= (uint16_t)((s & 0x0f00) << 4);
    sc[3] |= (uint16_t)(s & 0xf000);
    std::memcpy(out + 48, sc, 8);
  }
  static void dequantize(const uint8_t* b, float* y) {
    uint16_t sc[4];
    std::memcpy(sc, b + 48, 8);
    const uint16_t s = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    const float d = fp16_to_fp32(s);
    for (int ib = 0; ib < 16; ++ib) {  // 16-value sub-block ib: scale bits 3*(ib%4) of sc[ib/4]
      const float dl = d * (float)(2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1);
      const uint8_t qh = b[32 + ib];
      for (int k = 0; k < 2; ++k) {
        const int gi = b[2 * ib + k] | ((qh << (8 - 4 * k)) & 0x700);
        const float delta = qh & (k ? 0x80 : 0x08) ? -kDelta : kDelta;
        const uint64_t p = tables::iq1s_grid[gi];
        for (int j = 0; j < 8; ++j) y[N * ib + 8 * k + j] = dl * ((float)(int8_t)(p >> (8 * j)) + delta);
      }
    }
  }
  static void steps(const uint8_t*, const float*, float* step) { no_steps(step, BS); }
};

}  // namespace

void register_iq1(KernelTable& t) {
  t.ops[type_index(QType::IQ1_S)] = make_ops<QType::IQ1_S, IQ1_S>();
  t.ops[type_index(QType::IQ1_M)] = make_ops<QType::IQ1_M, IQ1_M>();
}

}}  // namespace prism::PRISM_NS
