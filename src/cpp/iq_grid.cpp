// Follows ggml-quants.c: iq2xs_init_impl (grid map and neighbour lists). ggml decodes compressed
// kgrid_* arrays (2 bits per coordinate) into points 2l+1; we take the level l of each coordinate from
// the format's own grids (quant_tables.h: three distinct byte values per lattice, ranked as signed
// bytes: 8 < 25 < 43 for IQ2, -1 < 0 < 1 for IQ1), which gives the same codes in the same order.
#include "iq_grid.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "quant_tables.h"

namespace prism {

namespace {

struct LatticeDef {
  const uint64_t* points;
  int size;
  int nwant;  // distinct distances kept per neighbour list (ggml: 3 for IQ1, 1 for IQ2_S, else 2)
};

LatticeDef lattice_def(IqLattice l) {
  switch (l) {
    case IqLattice::IQ2_XXS: return {tables::iq2xxs_grid, 256, 2};
    case IqLattice::IQ2_XS: return {tables::iq2xs_grid, 512, 2};
    case IqLattice::IQ2_S: return {tables::iq2s_grid, 1024, 1};
    case IqLattice::IQ1: return {tables::iq1s_grid, 2048, 3};
  }
  throw std::logic_error("unknown IQ lattice");
}

inline int coord(uint64_t p, int i) { return (int8_t)(uint8_t)(p >> (8 * i)); }

IqGrid build(IqLattice lattice) {
  const LatticeDef def = lattice_def(lattice);
  // the three coordinate values, ascending
  std::vector<int> values;
  for (int k = 0; k < def.size; ++k)
    for (int i = 0; i < 8; ++i) values.push_back(coord(def.points[k], i));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  if (values.size() != 3) throw std::logic_error("IQ grid: expected three coordinate values");

  IqGrid g;
  g.size = def.size;
  g.code.resize(def.size);
  g.map.assign(IqGrid::kCodes, IqGrid::kNoList);
  for (int k = 0; k < def.size; ++k) {
    uint32_t c = 0;
    for (int i = 0; i < 8; ++i) {
      const int l = (int)(std::find(values.begin(), values.end(), coord(def.points[k], i)) - values.begin());
      c |= (uint32_t)l << (2 * i);
    }
    if (g.map[c] != IqGrid::kNoList) throw std::logic_error("IQ grid: duplicate point");
    g.code[k] = (uint16_t)c;
    g.map[c] = k;
  }

  // Neighbour lists of the off-grid points with levels 0..2 (ggml also lists points with a level 3,
  // which no quantizer looks up). Squared distances in level units (ggml's, in units of 2l+1, are 4x
  // these: the same order). Points sorted by (distance, index) = one pass per distance in index order.
  constexpr int kMaxD2 = 8 * 4;
  std::vector<uint8_t> lv(8 * (size_t)def.size), d2(def.size);  // lv[i*size + k]: level i of point k
  for (int k = 0; k < def.size; ++k)
    for (int i = 0; i < 8; ++i) lv[i * (size_t)def.size + k] = (uint8_t)((g.code[k] >> (2 * i)) & 3);
  for (uint32_t c = 0; c < (uint32_t)IqGrid::kCodes; ++c) {
    bool valid = true;
    for (int i = 0; i < 8; ++i) valid &= ((c >> (2 * i)) & 3) != 3;
    if (!valid || g.map[c] >= 0) continue;
    std::fill(d2.begin(), d2.end(), 0);
    for (int i = 0; i < 8; ++i) {  // one coordinate over all points: a loop the compiler vectorises
      const uint8_t ci = (uint8_t)((c >> (2 * i)) & 3);
      const uint8_t* li = lv.data() + i * (size_t)def.size;
      for (int k = 0; k < def.size; ++k) {
        const uint8_t diff = (uint8_t)(li[k] > ci ? li[k] - ci : ci - li[k]);
        d2[k] = (uint8_t)(d2[k] + diff * diff);
      }
    }
    int count[kMaxD2 + 1] = {};
    for (int k = 0; k < def.size; ++k) ++count[d2[k]];
    const size_t off = g.lists.size();
    g.map[c] = -(int32_t)off - 1;
    g.lists.push_back(0);
    int n = 0;
    for (int s = 0, have = 0; s <= kMaxD2 && have < def.nwant; ++s) {
      if (!count[s]) continue;
      ++have;
      for (int k = 0; k < def.size; ++k)
        if (d2[k] == s) g.lists.push_back((uint16_t)k), ++n;
    }
    if (n > IqGrid::kMaxList) throw std::logic_error("IQ grid: neighbour list longer than kMaxList");
    g.lists[off] = (uint16_t)n;
    for (int j = 0; j < n; ++j) g.lists.push_back(g.code[g.lists[off + 1 + j]]);
    for (int j = n; j % 16; ++j) g.lists.push_back(0xffff);
  }
  return g;
}

template <IqLattice L>
const IqGrid& grid_of() {
  static const IqGrid g = build(L);  // thread-safe one-time initialisation (C++11 statics)
  return g;
}

}  // namespace

const IqGrid& iq_grid(IqLattice lattice) {
  switch (lattice) {
    case IqLattice::IQ2_XXS: return grid_of<IqLattice::IQ2_XXS>();
    case IqLattice::IQ2_XS: return grid_of<IqLattice::IQ2_XS>();
    case IqLattice::IQ2_S: return grid_of<IqLattice::IQ2_S>();
    case IqLattice::IQ1: return grid_of<IqLattice::IQ1>();
  }
  throw std::logic_error("unknown IQ lattice");
}

}  // namespace prism
