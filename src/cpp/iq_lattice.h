// Shared pieces of the 8-dimensional lattice quantizers (iq2.cpp: IQ2_XXS/IQ2_XS/IQ2_S, iq1.cpp:
// IQ1_S/IQ1_M), compiled per ISA. These quantizers are searches with data-dependent branches per
// 8-value group, so the kernels run one super-block at a time in ggml's order and vectorise only
// where lanes are independent: the scoring of a neighbour list (one neighbour per lane), the scale
// candidates (iq2.cpp) and the split candidates (iq1.cpp). Every float operation of a candidate is
// ggml's, in ggml's order; only the accept chains between candidates run in order.
#pragma once
#include <cfloat>

#include "iq_grid.h"
#include "kernels.h"

namespace prism { namespace PRISM_NS {

inline void put_fp16(uint8_t* p, float v) { const uint16_t h = fp32_to_fp16(v); std::memcpy(p, &h, 2); }
inline float get_fp16(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return fp16_to_fp32(h); }
inline uint16_t get_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Level of coordinate i in a level code (2 bits per coordinate).
inline int level(uint32_t code, int i) { return (code >> (2 * i)) & 3; }

template <int S, size_t... K>
inline vf rotate_lanes(vf a, std::index_sequence<K...>) { return __builtin_shufflevector(a, a, ((K + S) % PW)...); }

// Smallest of the W lanes (exact: min is a comparison).
inline float hmin(vf v) {
  if constexpr (W >= 16) v = vmin(v, rotate_lanes<8>(v, std::make_index_sequence<PW>()));
  if constexpr (W >= 8) v = vmin(v, rotate_lanes<4>(v, std::make_index_sequence<PW>()));
  if constexpr (W >= 4) {
    v = vmin(v, rotate_lanes<2>(v, std::make_index_sequence<PW>()));
    v = vmin(v, rotate_lanes<1>(v, std::make_index_sequence<PW>()));
  }
  return v[0];
}

// Largest of the W lanes and r (exact).
inline float hmax(vf v, float r) {
  if constexpr (W >= 16) v = vmax(v, rotate_lanes<8>(v, std::make_index_sequence<PW>()));
  if constexpr (W >= 8) v = vmax(v, rotate_lanes<4>(v, std::make_index_sequence<PW>()));
  if constexpr (W >= 4) {
    v = vmax(v, rotate_lanes<2>(v, std::make_index_sequence<PW>()));
    v = vmax(v, rotate_lanes<1>(v, std::make_index_sequence<PW>()));
  }
  return v[0] > r ? v[0] : r;
}

// term[i][l] for the 2-bit levels of c (bits 2i..2i+1 of each lane's code), from t = the vector of
// {term[i][0], term[i][1], term[i][2], term[i][3]} repeated per 128-bit lane: vpermilps reads only the
// low two bits of each index.
inline vf term_of(vf t, vi c) {
#if PRISM_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_permutevar_ps((__m512)t, (__m512i)c);
#elif PRISM_W == 8 && defined(__AVX__)
  return (vf)_mm256_permutevar_ps((__m256)t, (__m256i)c);
#else
  const vi l = c & 3;
  return sel(l == 0, splat(t[0]), sel(l == 1, splat(t[1]), sel(l == 2, splat(t[2]), splat(t[3]))));
#endif
}

// W level codes of a neighbour list, widened to lanes (lists are padded to 16 codes).
inline vi list_codes_at(const uint16_t* codes) {
#if PRISM_W == 16 && defined(__AVX512F__)
  return (vi)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)codes));
#elif PRISM_W == 8 && defined(__AVX2__)
  return (vi)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)codes));
#else
  typedef uint16_t vh __attribute__((vector_size(2 * PW)));
  vh h{};
  std::memcpy(&h, codes, 2 * W);
  return __builtin_convertvector(h, vi);
#endif
}

// Prefetch of the first LINES cache lines of a neighbour list (the lists, 0.2-1.4 MB, mostly miss
// L1/L2); a fixed count: a count read from the list would wait for the miss it is meant to hide.
template <int LINES>
inline void prefetch_list(const uint16_t* list) {
  for (int j = 0; j < LINES; ++j) __builtin_prefetch(list + 32 * j);
}

// The neighbour search of iq2_find_best_neighbour / iq1_find_best_neighbour2 for a group of 8 values
// x with weights w at `scale`, level l standing for the value q[l]: d2 = sum over the coordinates of
// w*diff*diff with diff = scale*q[l] - x (sequential), the first neighbour of smallest d2 wins
// (`d2 < best`, best from FLT_MAX). The 24 terms w_i*diff*diff are computed once with ggml's
// operations, so each neighbour's d2 is the same chain of the same float values (ggml's 0 + first
// term differs only in the sign of a zero, which compares alike). Lanes score W neighbours at a time.
// The padding codes (0xffff, level 3) meet the term of scale*inf: their d2 is inf or NaN, never below
// FLT_MAX, so no lane needs a bounds test. Returns the winner's position in the list (the first if no
// d2 < FLT_MAX, where ggml aborts or scans the whole grid).
inline int best_neighbour_pos(const uint16_t* list, const float* x, const float* w, float scale, const float* q) {
  const int n = IqGrid::list_len(list);
  if (n == 1) return 0;  // the only candidate wins (ggml scores it anyway)
  vf qv, tab[8];  // tab[i]: {term[i][0..2], inf or NaN} per 128-bit lane
  for (int l = 0; l < PW; ++l) qv[l] = (l & 3) < 3 ? q[l & 3] : INFINITY;
  const vf sq = splat(scale) * qv;
  for (int i = 0; i < 8; ++i) {
    const vf diff = sq - splat(x[i]);
    tab[i] = splat(w[i]) * diff * diff;
  }
  const uint16_t* codes = IqGrid::list_codes(list);
  auto dist = [&](int j0) {
    const vi c = list_codes_at(codes + j0);
    vf d2 = term_of(tab[0], c);
    for (int i = 1; i < 8; ++i) d2 += term_of(tab[i], c >> (2 * i));
    return d2;
  };
  // the running minimum per lane (inf and NaN never enter), then the first position holding it
  vf m = splat(FLT_MAX);
  if (W >= 4 && n <= W) {
    const vf d2 = vmin(dist(0), m);
    const float mn = hmin(d2);
    return mn < FLT_MAX ? __builtin_ctz(movemask(d2 == splat(mn))) : 0;
  }
  if (W >= 4 && n <= 16) {  // most lists: a fixed number of vectors, no loop to mispredict
    constexpr int P = W >= 4 ? 16 / W : 1;
    vf d2[P];
    for (int p = 0; p < P; ++p) m = vmin(d2[p] = dist(p * W), m);
    const float mn = hmin(m);
    uint32_t eq = 0;
    for (int p = 0; p < P; ++p) eq |= movemask(d2[p] == splat(mn)) << (p * W);
    return mn < FLT_MAX ? __builtin_ctz(eq) : 0;
  }
  vf d2[IqGrid::kMaxList / W + 1];
  const int np = (n + W - 1) / W;
  for (int p = 0; p < np; ++p) m = vmin(d2[p] = dist(p * W), m);
  const float mn = hmin(m);
  if (!(mn < FLT_MAX)) return 0;
  for (int p = 0;; ++p)
    if (const uint32_t eq = movemask(d2[p] == splat(mn))) return p * W + __builtin_ctz(eq);
}

// The grid index of the best neighbour (best_neighbour_pos).
inline int best_neighbour(const uint16_t* list, const float* x, const float* w, float scale, const float* q) {
  return IqGrid::list_index(list)[best_neighbour_pos(list, x, w, scale, q)];
}

// Any lane of a mask set (movemask: one instruction on AVX2/AVX-512).
inline bool any_lane(vi m) { return movemask(m) != 0; }

// Stable ascending order of N values (ggml sorts (value, index) pairs with glibc's qsort, a merge
// sort: equal values, -0 and +0 included, keep their index order). The rank of value i is the number
// of values below it plus the equal ones before it, counted W values i at a time against every j.
// Keys: x + 0.0f turns -0 into +0, and flipping the bits of negative floats (and the sign bit of
// the others) makes signed integer order the float order.
template <int N>
inline void sort_index(const float* x, int* idx) {
  static_assert(N % W == 0, "whole vectors of values");
  int32_t key[N];
  for (int j = 0; j < N; ++j) {
    const uint32_t u = f2u(x[j] + 0.0f);
    key[j] = (int32_t)(u ^ ((u >> 31) ? 0x7fffffffu : 0u));
  }
  vi lane;
  for (int l = 0; l < PW; ++l) lane[l] = l;
  for (int v = 0; v < N / W; ++v) {
    vi kv, rank = zeroi();
    std::memcpy(&kv, key + v * W, 4 * W);
    const vi pos = lane + v * W;
    for (int j = 0; j < N; ++j) {
      const vi kj = splati(key[j]);
      rank -= (kj < kv) | ((kj == kv) & (pos > j));  // masks are -1
    }
    for (int l = 0; l < W; ++l) idx[rank[l]] = v * W + l;
  }
}

// The lattice types have no bins of one width around a value: no boundary statistics (step 0).
inline void no_steps(float* step, int n) { for (int j = 0; j < n; ++j) step[j] = 0.0f; }

}}  // namespace prism::PRISM_NS
