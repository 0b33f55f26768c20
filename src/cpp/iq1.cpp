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
// Two passes, both exact:
// 1. A start: the best reachable before a candidate is the `best` of some earlier candidate, so at
//    most their maximum; acceptance only gets easier as best decreases, so a candidate that passes
//    against that maximum is accepted by ggml's chain whatever came before, and the chain continues
//    from exactly its state. The first candidate of largest `best` usually is one: if so the chain
//    is picked up there, else from the beginning.
// 2. The chain from the start: a batch in which no candidate beats the current best is skipped
//    whole; otherwise its candidates run through the chain in order.
template <int N, int NK, class Cand>
inline Split split_search(const Cand& cand, float max) {
  Split s;
  s.scale = max;
  vi lane;
  for (int l = 0; l < PW; ++l) lane[l] = l;
  // pass 1: per lane the largest `best`, its first position (batch, lane, k), and that maximum before
  // each batch
  constexpr int kMaxBatches = (N + 1) * (N / W + 2);
  int batch_i1[kMaxBatches], batch_j0[kMaxBatches];
  vf top_before[kMaxBatches], batch_qx[kMaxBatches][NK], batch_q2[kMaxBatches][NK];  // sums kept for pass 2
  vf top = splat(-FLT_MAX);
  vi top_pos = splati(-1);
  int nb = 0;
  for (int i1 = 0; i1 <= N; ++i1)
    for (int j0 = i1; j0 <= N; j0 += W, ++nb) {
      vf* qx = batch_qx[nb];
      vf* q2 = batch_q2[nb];
      cand.sums(i1, j0, qx, q2);
      batch_i1[nb] = i1, batch_j0[nb] = j0, top_before[nb] = top;
      for (int k = 0; k < NK; ++k) {
        const vi live = ((lane + j0) <= N) & (q2[k] > zerof());
        const vf b = sel(live, qx[k] / q2[k] * qx[k], splat(-FLT_MAX));
        const vi take = b > top;
        top = sel(take, b, top);
        top_pos = sel(take, splati(nb * W * NK + k) + lane * NK, top_pos);
      }
    }
  float best = -FLT_MAX;
  int start_b = 0, start_l = -1, start_k = NK;  // no start: the chain from the beginning
  const float tmax = hmax(top, -FLT_MAX);
  if (tmax > -FLT_MAX) {
    int pos = INT32_MAX;
    for (int l = 0; l < W; ++l)
      if (top[l] == tmax && top_pos[l] < pos) pos = top_pos[l];
    const int b0 = pos / (W * NK), l0 = pos % (W * NK) / NK, k0 = pos % NK;
    float pre = hmax(top_before[b0], -FLT_MAX);  // every `best` before the candidate's batch
    const vf* qx = batch_qx[b0];
    const vf* q2 = batch_q2[b0];
    for (int l = 0; l <= l0; ++l)
      for (int k = 0; k < (l < l0 ? NK : k0); ++k)
        if (q2[k][l] > 0) {
          const float b = qx[k][l] / q2[k][l] * qx[k][l];
          pre = b > pre ? b : pre;
        }
    if (qx[k0][l0] * qx[k0][l0] > pre * q2[k0][l0]) {
      start_b = b0, start_l = l0, start_k = k0;
      s.scale = qx[k0][l0] / q2[k0][l0];
      best = s.scale * qx[k0][l0];
      s.i1 = batch_i1[b0], s.i2 = batch_j0[b0] + l0, s.k = k0;
    }
  }
  // pass 2
  for (int b = start_b; b < nb; ++b) {
      const int i1 = batch_i1[b], j0 = batch_j0[b];
      const vf* qx = batch_qx[b];
      const vf* q2 = batch_q2[b];
      vi live[NK];  // lanes in range with sumq2 > 0, after the start
      for (int k = 0; k < NK; ++k) {
        live[k] = ((lane + j0) <= N) & (q2[k] > zerof());
        if (b == start_b) live[k] &= (lane > start_l) | ((lane == start_l) & (k > start_k ? -1 : 0));
      }
      // the first lane with a candidate that beats `best`: run its candidates through the chain,
      // then look again at the later lanes with the new best
      for (vi after = splati(-1);;) {
        vi pass = zeroi();
        for (int k = 0; k < NK; ++k) pass |= live[k] & (qx[k] * qx[k] > splat(best) * q2[k]);
        const uint32_t bits = movemask(pass & (lane > after));
        if (!bits) break;
        const int l = __builtin_ctz(bits);
        for (int k = 0; k < NK; ++k)
          if (live[k][l] && qx[k][l] * qx[k][l] > best * q2[k][l]) {
            s.scale = qx[k][l] / q2[k][l];
            best = s.scale * qx[k][l];
            s.i1 = i1, s.i2 = j0 + l, s.k = k;
          }
        after = splati(l);
      }
  }
  return s;
}

// Levels of the split: sorted positions [0, i1) -> 0, [i1, i2) -> 1, [i2, N) -> 2.
template <int N>
inline void split_levels(const int* idx, const Split& s, int8_t* L) {
  for (int j = 0; j < N; ++j) L[idx[j]] = (int8_t)(j < s.i1 ? 0 : j < s.i2 ? 1 : 2);
}

// Grid index of group k of L at `scale` with level values xx: on the grid as is, else
// iq1_find_best_neighbour2 (term = w*diff*diff, diff = scale*xx[l] - x). Sets *off if snapped.
inline int group_index(const IqGrid& g, const float* xb, const float* w, const int8_t* L, float scale,
                       const float* xx, bool* off) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) u |= (uint32_t)L[i] << (2 * i);
  const int gi = g.index_of(u);
  if (gi >= 0) return gi;
  *off = true;
  return best_neighbour(g.neighbours(u), xb, w, scale, xx);
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
  bool off = false;
  for (int j = 0; j < N / 8; ++j)
    index[j] = group_index(g, xb + 8 * j, w + 8 * j, L + 8 * j, *scale, Cand::values(*k, j), &off);
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
  // IQ1_S candidates for one i1 and i2 = j0 + lane: k = 0 with x_p, k = 1 with x_m.
  struct Cand {
    static constexpr int N = IQ1_S::N, NK = 2;
    float sumx[N + 1 + 16], sumw[N + 1 + 16];  // padded: lanes past N read don't-care values
    void fill(const float* xb, const float* w, const int* idx) {
      float ax = 0, aw = 0;  // running sums in registers (sumx[0] = sumw[0] = 0)
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < N; ++j) {
        sumx[j + 1] = ax = ax + w[idx[j]] * xb[idx[j]];
        sumw[j + 1] = aw = aw + w[idx[j]];
      }
      for (int j = N + 1; j < N + 1 + 16; ++j) sumx[j] = sumw[j] = 0;
    }
    static const float* values(int k, int) { return k == 0 ? kXp : kXm; }
    void sums(int i1, int j0, vf* qx, vf* q2) const {
      const float ax = sumx[i1] - sumx[0], aw = sumw[i1] - sumw[0];
      vf sx, sw;
      std::memcpy(&sx, sumx + j0, 4 * W);
      std::memcpy(&sw, sumw + j0, 4 * W);
      const vf bx = sx - splat(sumx[i1]), cx = splat(sumx[N]) - sx;
      const vf bw = sw - splat(sumw[i1]), cw = splat(sumw[N]) - sw;
      for (int k = 0; k < 2; ++k) {
        const float* v = k ? kXm : kXp;
        qx[k] = (splat(ax * v[0]) + bx * splat(v[1])) + cx * splat(v[2]);
        q2[k] = (splat(aw * v[0] * v[0]) + bw * splat(v[1]) * splat(v[1])) + cw * splat(v[2]) * splat(v[2]);
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
  // search with them: sumqx = T*v[2] - px[i1] - px[i2] per half, and the matching sumq2.
  struct Cand {
    static constexpr int N = IQ1_M::N, NK = 4;
    float px[2][N + 1 + 16], pw[2][N + 1 + 16];
    float txs[2], tws[2];
    void fill(const float* xb, const float* w, const int* idx) {
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
        for (int j = N + 1; j < N + 1 + 16; ++j) px[h][j] = pw[h][j] = 0;
        txs[h] = px[h][N], tws[h] = pw[h][N];
      }
    }
    // level values of group (half) j with sign pattern k
    static const float* values(int k, int j) { return (j == 0 ? k < 2 : k % 2 == 0) ? kXp : kXm; }
    void sums(int i1, int j0, vf* qx, vf* q2) const {
      vf qx_p[2], qx_m[2], q2_p[2], q2_m[2];
      for (int h = 0; h < 2; ++h) {
        vf x2, w2;
        std::memcpy(&x2, px[h] + j0, 4 * W);
        std::memcpy(&w2, pw[h] + j0, 4 * W);
        const vf sx = splat(px[h][i1]) + x2;
        qx_p[h] = splat(txs[h] * kXp[2]) - sx;
        qx_m[h] = splat(txs[h] * kXm[2]) - sx;
        q2_p[h] = (splat(tws[h] * kXp[2] * kXp[2]) + splat(pw[h][i1] * kCp1)) + w2 * splat(kCp2);
        q2_m[h] = (splat(tws[h] * kXm[2] * kXm[2]) + splat(pw[h][i1] * kCm1)) + w2 * splat(kCm2);
      }
      qx[0] = qx_p[0] + qx_p[1], q2[0] = q2_p[0] + q2_p[1];
      qx[1] = qx_p[0] + qx_m[1], q2[1] = q2_p[0] + q2_m[1];
      qx[2] = qx_m[0] + qx_p[1], q2[2] = q2_m[0] + q2_p[1];
      qx[3] = qx_m[0] + qx_m[1], q2[3] = q2_m[0] + q2_m[1];
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
