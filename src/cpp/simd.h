// Lane abstraction for bit-exact block quantizers.
//
// ggml's quantizers are sequences of float32 operations whose order decides the bytes. We keep that
// order by vectorising ACROSS blocks: lane i of every vector belongs to block i of a group of W
// blocks and runs exactly the scalar algorithm; data-dependent branches become per-lane masks.
// The same source is compiled once per ISA with PRISM_W = 1 (scalar path), 8 (AVX2), 16 (AVX-512)
// or 4 (NEON), using GCC/Clang vector extensions, so every path gives the same bytes by construction.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "types.h"

#ifndef PRISM_W
#define PRISM_W 1
#endif
#ifndef PRISM_NS
#define PRISM_NS scalar
#endif

namespace prism {

inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// IEEE fp32 -> fp16, round to nearest even, subnormals kept, overflow -> inf (ggml's GGML_FP32_TO_FP16
// semantics for every finite input; NaN never reaches us, inputs are validated).
inline uint16_t fp32_to_fp16(float f) {
  const uint32_t x = f2u(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;          // rounds to >= 65520: infinity
  if (a >= 0x38800000u) {                                // |f| >= 2^-14: normal fp16
    const uint32_t r = a - 0x38000000u;                  // re-bias exponent 127 -> 15
    return sign | (uint16_t)((r + 0xfffu + ((r >> 13) & 1u)) >> 13);
  }
  // subnormal fp16 (unit 2^-24): scale exactly, round half-even with the 2^23 trick
  const float s = u2f(a) * 16777216.0f;
  const float t = (s + 8388608.0f) - 8388608.0f;
  return sign | (uint16_t)t;
}

inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) { const float v = (float)m * 0x1p-24f; return sign ? -v : v; }  // exact
  if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
  return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

inline float fp16_round(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

// ggml's nearest_int: round half to even through the 1.5*2^23 magic constant (valid for |f| <= 2^22).
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  return (int)(f2u(v) & 0x007fffffu) - 0x00400000;
}

namespace PRISM_NS {

constexpr int W = PRISM_W;
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef uint32_t vu __attribute__((vector_size(4 * W)));
// Masks are vi with -1 (true) or 0 (false) per lane: the result type of vector comparisons.

// Broadcasts as vector initialisers: a per-lane store loop is not always recognised as a broadcast
// once inlined into a non-unrolled loop (GCC 12 emitted W masked inserts per splat).
template <class V, class T, std::size_t... I>
inline V splat_n(T v, std::index_sequence<I...>) { return V{((void)I, v)...}; }
inline vf splat(float v) { return splat_n<vf>(v, std::make_index_sequence<W>()); }
inline vi splati(int v) { return splat_n<vi>(v, std::make_index_sequence<W>()); }
inline vf zerof() { return splat(0.0f); }
inline vi zeroi() { return splati(0); }

inline vf sel(vi m, vf a, vf b) { return m ? a : b; }
inline vi sel(vi m, vi a, vi b) { return m ? a : b; }
inline bool any(vi m) { for (int i = 0; i < W; ++i) if (m[i]) return true; return false; }
inline bool all(vi m) { for (int i = 0; i < W; ++i) if (!m[i]) return false; return true; }

inline vf vabs(vf x) { return (vf)((vu)x & 0x7fffffffu); }
inline vf vneg(vf x) { return (vf)((vu)x ^ 0x80000000u); }
// C's MAX(a,b) = a > b ? a : b and MIN(a,b) = a < b ? a : b, including their +-0 behaviour.
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vi vmaxi(vi a, vi b) { return a > b ? a : b; }
inline vi vmini(vi a, vi b) { return a < b ? a : b; }
inline vi clampi(vi v, int lo, int hi) { return vmini(vmaxi(v, splati(lo)), splati(hi)); }
inline vf vsqrt(vf x) { vf r; for (int i = 0; i < W; ++i) r[i] = std::sqrt(x[i]); return r; }
inline vf tof(vi v) { return __builtin_convertvector(v, vf); }

// Lane-wise nearest_int (same bit trick as the scalar one).
inline vi vnearest_int(vf f) {
  const vf v = f + splat(12582912.f);
  return ((vi)v & 0x007fffff) - 0x00400000;
}

// fp16 rounding per lane (scale quantization happens once per block, so scalar per lane is fine).
inline vf vfp16_round(vf x) { vf r; for (int i = 0; i < W; ++i) r[i] = fp16_round(x[i]); return r; }

// A group of up to W blocks, transposed: x[j][lane] is element j of block `lane`.
// qw is the importance (imatrix) of each element, or unused when the caller has none.
template <int BS>
struct Group {
  vf x[BS];
  vf qw[BS];
  vf row_sigma2;   // sum(x^2)/n_per_row of the lane's row (Q4_0..Q5_1 imatrix paths use it)
  int n;           // valid lanes
};

// Runs K::quantize over every block of nrows x n_per_row, W blocks at a time.
// K provides: BS, BYTES, kRowSigma2 (bool), and
//   static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out);  // out[lane]: BYTES
template <class K>
void quantize_rows(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  constexpr int BS = K::BS;
  const int64_t nb_row = n_per_row / BS;
  const int64_t nblocks = nrows * nb_row;
  alignas(64) Group<BS> g;
  alignas(64) uint8_t scratch[W][K::BYTES];
  uint8_t* out[W];
  int64_t cur_row = -1;
  float cur_sigma2 = 0.0f;
  for (int64_t b0 = 0; b0 < nblocks; b0 += W) {
    const int n = (int)((nblocks - b0) < W ? (nblocks - b0) : W);
    g.n = n;
    for (int lane = 0; lane < W; ++lane) {
      if (lane >= n) {  // padding lanes: zeros, results discarded
        for (int j = 0; j < BS; ++j) { g.x[j][lane] = 0.0f; g.qw[j][lane] = 1.0f; }
        g.row_sigma2[lane] = 0.0f;
        out[lane] = scratch[lane];
        continue;
      }
      const int64_t b = b0 + lane, row = b / nb_row, col = (b % nb_row) * BS;
      const float* xb = x + row * n_per_row + col;
      for (int j = 0; j < BS; ++j) g.x[j][lane] = xb[j];
      if (imatrix) for (int j = 0; j < BS; ++j) g.qw[j][lane] = imatrix[col + j];
      if (K::kRowSigma2 && imatrix) {
        if (row != cur_row) {  // sequential float sum over the whole row, as ggml does
          const float* xr = x + row * n_per_row;
          float s = 0.0f;
          for (int64_t j = 0; j < n_per_row; ++j) s += xr[j] * xr[j];
          cur_sigma2 = s / n_per_row;
          cur_row = row;
        }
        g.row_sigma2[lane] = cur_sigma2;
      }
      out[lane] = dst + b * K::BYTES;
    }
    K::quantize(g, imatrix != nullptr, out);
  }
}

template <class K>
void dequantize_blocks(const uint8_t* src, float* y, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b) K::dequantize(src + b * K::BYTES, y + b * K::BS);
}

// Local bin width of every element (for boundary density): K::steps(block, y, step) writes, for each
// element, the distance between the two grid values around its dequantized value y (the width of
// the quantization bin the element falls in); 0 where the block's scale is 0.
template <class K>
void steps_blocks(const uint8_t* src, const float* x, float* step, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b) K::steps(src + b * K::BYTES, x + b * K::BS, step + b * K::BS);
}

}  // namespace PRISM_NS
}  // namespace prism
