// Shared pieces of the 8-dimensional lattice quantizers (iq2.cpp: IQ2_XXS/IQ2_XS/IQ2_S, iq1.cpp:
// IQ1_S/IQ1_M), compiled per ISA. These quantizers are searches with data-dependent branches per
// 8-value group, so the kernels run one super-block at a time in ggml's order and vectorise only
// where lanes are independent: the scoring of a neighbour list (one neighbour per lane) and, in
// iq1.cpp, the split candidates. Every float operation of a candidate is ggml's, in ggml's order.
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

// The neighbour search of iq2_find_best_neighbour / iq1_find_best_neighbour2: d2 = sum over the 8
// coordinates of w*diff*diff (sequential), the first neighbour of smallest d2 wins (`d2 < best`, best
// from FLT_MAX). term[i][l] = w_i*diff*diff for level l is computed once by the caller with ggml's
// operations, so each neighbour's d2 is the same chain of the same float values. Lanes score W
// neighbours at a time, each lane keeps its first strict minimum, and the lanes' results reduce to the
// first minimum of the list. Returns the position in the list, or -1 if no d2 < FLT_MAX (ggml aborts).
inline int best_neighbour(const uint16_t* list, const float (*term)[3]) {
  const int n = IqGrid::list_len(list);
  const uint16_t* codes = IqGrid::list_codes(list);
  vf t0[8], t1[8], t2[8];
  for (int i = 0; i < 8; ++i) t0[i] = splat(term[i][0]), t1[i] = splat(term[i][1]), t2[i] = splat(term[i][2]);
  vi lane;
  for (int l = 0; l < PW; ++l) lane[l] = l;
  vf best = splat(FLT_MAX);
  vi bpos = splati(-1);
  for (int j0 = 0; j0 < n; j0 += W) {
    typedef uint16_t vh __attribute__((vector_size(2 * PW)));
    vh h{};
    std::memcpy(&h, codes + j0, 2 * W);  // lists are padded to 16 codes
    const vi c = __builtin_convertvector(h, vi);
    vf d2 = zerof();
    for (int i = 0; i < 8; ++i) {
      const vi l = (c >> (2 * i)) & 3;
      d2 += sel(l == 0, t0[i], sel(l == 1, t1[i], t2[i]));
    }
    const vi pos = lane + j0;
    const vi take = (d2 < best) & (pos < n);
    best = sel(take, d2, best);
    bpos = sel(take, pos, bpos);
  }
  int p = -1;
  float b = FLT_MAX;
  for (int l = 0; l < W; ++l)
    if (bpos[l] >= 0 && (best[l] < b || (best[l] == b && bpos[l] < p))) b = best[l], p = bpos[l];
  return p;
}

// Stable ascending order of n values (ggml sorts (value, index) pairs with glibc's qsort, a merge
// sort: equal values keep their index order). Insertion sort: n <= 32.
template <int N>
inline void sort_index(const float* x, int* idx) {
  for (int j = 0; j < N; ++j) {
    int k = j;
    while (k > 0 && x[idx[k - 1]] > x[j]) idx[k] = idx[k - 1], --k;
    idx[k] = j;
  }
}

// Runs K::quantize_block (one super-block of K::BS values, its importance or null, K::BYTES out) over
// every block of the rows: these kernels work block by block, not in lanes.
template <class K>
void quantize_blocks_rows(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  const int64_t nb_row = n_per_row / K::BS;
  for (int64_t b = 0; b < nrows * nb_row; ++b)
    K::quantize_block(x + b * K::BS, imatrix ? imatrix + (b % nb_row) * K::BS : nullptr, dst + b * K::BYTES);
}

// The lattice types have no bins of one width around a value: no boundary statistics (step 0).
inline void no_steps(float* step, int n) { for (int j = 0; j < n; ++j) step[j] = 0.0f; }

template <QType T, class K>
KernelOps make_block_ops() {
  static_assert(K::BS == traits_of(T).block_size && K::BYTES == traits_of(T).type_size,
                "kernel block layout differs from the type table (types.h)");
  KernelOps o;
  o.quantize = &quantize_blocks_rows<K>;
  o.dequantize = &dequantize_blocks<K>;
  o.error_stats = &error_stats_blocks<K>;
  return o;
}

}}  // namespace prism::PRISM_NS
