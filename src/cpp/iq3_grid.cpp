// Builds the IQ3 lattices' search structures (see iq3_grid.h); follows ggml-quants.c iq3xs_init_impl.
// Integer arithmetic only, so it is compiled once, not per ISA.
#include "iq3_grid.h"

#include <algorithm>
#include <stdexcept>

#include "quant_tables.h"

namespace prism {

Iq3Grid build_iq3_grid(const uint32_t* grid, int size, int nwant) {
  constexpr int D = Iq3Grid::kDim;
  // The levels: the distinct stored byte values in increasing order (IQ3_XXS 4, 12, .., 62; IQ3_S
  // 1, 3, .., 15). ggml's kgrid arrays hold these ranks directly.
  std::vector<int> values;
  for (int k = 0; k < size; ++k)
    for (int i = 0; i < D; ++i) values.push_back((int)((grid[k] >> (8 * i)) & 0xff));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  if ((int)values.size() != Iq3Grid::kLevels) throw std::logic_error("IQ3 grid: not 8 levels per coordinate");

  Iq3Grid g;
  g.size = size;
  g.code.resize(size);
  g.map.assign(Iq3Grid::kCodes, -1);
  std::vector<int> pos(size * D);  // search positions 2l+1
  for (int k = 0; k < size; ++k) {
    int u = 0;
    for (int i = 0; i < D; ++i) {
      const int v = (int)((grid[k] >> (8 * i)) & 0xff);
      const int l = (int)(std::lower_bound(values.begin(), values.end(), v) - values.begin());
      pos[k * D + i] = 2 * l + 1;
      u |= l << (3 * i);
    }
    if (g.map[u] >= 0) throw std::logic_error("IQ3 grid: repeated point");
    g.code[k] = (uint16_t)u;
    g.map[u] = k;
  }

  // Neighbour lists in code order (ggml's offsets are assigned in the same order). The members are
  // the points at the nwant smallest distinct squared distances, in (distance, index) order, which is
  // ggml's qsort order with iq3_compare_func. Distances are < 4 * 14^2 + 1, so a bucket pass sorts.
  constexpr int kMaxD2 = D * 14 * 14 + 1;
  std::vector<int> d2(size);
  std::vector<int> count(kMaxD2);
  for (int u = 0; u < Iq3Grid::kCodes; ++u) {
    if (g.map[u] >= 0) continue;
    std::fill(count.begin(), count.end(), 0);
    for (int k = 0; k < size; ++k) {
      int s = 0;
      for (int i = 0; i < D; ++i) {
        const int diff = pos[k * D + i] - (2 * ((u >> (3 * i)) & 7) + 1);
        s += diff * diff;
      }
      d2[k] = s;
      ++count[s];
    }
    g.map[u] = -(1 + (int32_t)g.neighbours.size());
    const size_t at = g.neighbours.size();
    g.neighbours.push_back(0);
    int have = 0;
    for (int dist = 0; dist < kMaxD2 && have < nwant; ++dist) {
      if (!count[dist]) continue;
      ++have;
      for (int k = 0; k < size; ++k)
        if (d2[k] == dist) g.neighbours.push_back((uint16_t)k);
    }
    g.neighbours[at] = (uint16_t)(g.neighbours.size() - at - 1);
  }
  g.member_code.assign(g.neighbours.size(), 0);
  g.level.assign(4 * g.neighbours.size(), 0);
  for (int u = 0; u < Iq3Grid::kCodes; ++u) {
    if (g.map[u] >= 0) continue;
    const size_t at = (size_t)(-g.map[u] - 1);
    for (size_t s = at + 1; s <= at + g.neighbours[at]; ++s) {
      g.member_code[s] = g.code[g.neighbours[s]];
      for (int i = 0; i < D; ++i) g.level[4 * s + i] = (uint8_t)((g.member_code[s] >> (3 * i)) & 7);
    }
  }
  return g;
}

const Iq3Grid& iq3xxs_search_grid() {
  static const Iq3Grid g = build_iq3_grid(tables::iq3xxs_grid, 256, 2);
  return g;
}

const Iq3Grid& iq3s_search_grid() {
  static const Iq3Grid g = build_iq3_grid(tables::iq3s_grid, 512, 3);
  return g;
}

}  // namespace prism
