// Search structures of the 8-dimensional IQ lattices (IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S/IQ1_M), built at
// first use from the grids of src/cpp/data/quant_tables.txt, as ggml-quants.c's iq2xs_init_impl builds
// them: the map from a point (8 levels of 2 bits) to its grid index, and for every point off the grid
// its neighbour list (the grid points at the nwant smallest squared distances, by distance then index).
// Not ISA-specific: compiled once; the kernels only read it.
#pragma once
#include <cstdint>
#include <vector>

namespace prism {

enum class IqLattice : int { IQ2_XXS, IQ2_XS, IQ2_S, IQ1 };  // IQ1_S and IQ1_M share one grid

struct IqGrid {
  // Level code of a point: 2 bits per coordinate, level l in 0..2 (ggml stores the point as 2l+1).
  static constexpr int kCodes = 1 << 16;
  static constexpr int32_t kNoList = INT32_MIN;
  static constexpr int kMaxList = 512;  // longest neighbour list the kernels accept (IQ2_XS's: 292)
  int size = 0;                    // grid points
  std::vector<uint16_t> code;      // [size] level code of each grid point
  // [kCodes]: grid index of a point on the grid (>= 0), else -(offset + 1) of its neighbour list in
  // `lists`; kNoList for codes with a level 3 (never looked up: the quantizers clamp levels to 0..2).
  std::vector<int32_t> map;
  // A neighbour list at offset o: lists[o] = n, lists[o+1 .. o+n] = grid indices (ascending distance,
  // then index), then the same n points' level codes, padded with 0xffff to a multiple of 16 entries.
  std::vector<uint16_t> lists;

  int index_of(uint32_t c) const { return map[c]; }
  const uint16_t* neighbours(uint32_t c) const { return list_at(map[c]); }
  // the list of an off-grid point from its map entry (< 0)
  const uint16_t* list_at(int32_t m) const { return lists.data() + (-m - 1); }
  static int list_len(const uint16_t* l) { return l[0]; }
  static const uint16_t* list_index(const uint16_t* l) { return l + 1; }
  static const uint16_t* list_codes(const uint16_t* l) { return l + 1 + l[0]; }
};

// The lattice's structures (thread-safe, built once).
const IqGrid& iq_grid(IqLattice lattice);

}  // namespace prism
