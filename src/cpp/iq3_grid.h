// Search structures of the two 4-dimensional IQ3 lattices (IQ3_XXS: 256 points, IQ3_S: 512 points),
// built once from the format grids of quant_tables.h, as ggml-quants.c's iq3xs_init_impl builds them
// from its compressed kgrid_256 / kgrid_512 arrays: the same point -> index map and the same
// neighbour lists (same members, ordered by squared distance, ties by index).
//
// Coordinates are levels l in 0..7 (the rank of a stored byte value among the grid's 8 distinct
// values), searched at odd positions 2l+1; a point's code u packs l_i in bits 3i..3i+2.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace prism {

struct Iq3Grid {
  static constexpr int kDim = 4, kLevels = 8, kCodes = 1 << (3 * kDim);
  int size = 0;                      // grid points
  std::vector<uint16_t> code;        // index -> code u
  // u -> index (>= 0) for points on the grid, else -(1 + offset of u's neighbour list in `neighbours`)
  std::vector<int32_t> map;
  // Neighbour lists of the off-grid codes: the count n, then n grid indices. A code's list holds
  // every grid point at one of the `nwant` smallest squared distances from it.
  std::vector<uint16_t> neighbours;
  // Per slot s of `neighbours` holding a member (count slots unused): its code, and its 4 levels
  // at level[4s..4s+3].
  std::vector<uint16_t> member_code;
  std::vector<uint8_t> level;

  const uint16_t* list(int u) const { return neighbours.data() + (-map[u] - 1); }
};

// The lattices, built on first use (thread-safe), iq3xs_init_impl(256) and iq3xs_init_impl(512).
const Iq3Grid& iq3xxs_search_grid();
const Iq3Grid& iq3s_search_grid();

// The generic builder: `grid` holds `size` points, byte i (little endian) = the value of coordinate i;
// nwant = how many distinct distances each neighbour list spans (ggml: 2 for 256 points, 3 for 512).
Iq3Grid build_iq3_grid(const uint32_t* grid, int size, int nwant);

}  // namespace prism
