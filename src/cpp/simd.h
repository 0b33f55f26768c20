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
#include <type_traits>
#include <utility>

#include "types.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

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

// IEEE fp16 -> fp32, exact for every input; branch-free so loops over it vectorise.
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  const uint32_t normal = sign | ((e + 112u) << 23) | (m << 13);
  const uint32_t infnan = sign | 0x7f800000u | (m << 13);
  const uint32_t sub = sign | f2u((float)m * 0x1p-24f);   // zero and subnormals: exact
  return u2f(e == 0 ? sub : (e == 31 ? infnan : normal));
}

inline float fp16_round(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }

// ggml's nearest_int: round half to even through the 1.5*2^23 magic constant (valid for |f| <= 2^22).
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  return (int)(f2u(v) & 0x007fffffu) - 0x00400000;
}

namespace PRISM_NS {

constexpr int W = PRISM_W;
// Physical vector width. A one-lane (scalar-path) build still uses 4-float vectors where 128-bit SIMD
// is baseline: GCC compiles one-element vectors badly (float<->int views go through the stack, and
// GCC 12's VRP miscompiles their masks). Lanes >= W hold don't-care values and are never read.
#if PRISM_W == 1 && (defined(__SSE2__) || defined(__ARM_NEON))
constexpr int PW = 4;
#else
constexpr int PW = W;
#endif
typedef float vf __attribute__((vector_size(4 * PW)));
typedef int32_t vi __attribute__((vector_size(4 * PW)));
typedef uint32_t vu __attribute__((vector_size(4 * PW)));
// Masks are vi with -1 (true) or 0 (false) per lane: the result type of vector comparisons.

// Broadcasts as vector initialisers: a per-lane store loop is not always recognised as a broadcast
// once inlined into a non-unrolled loop (GCC 12 emitted W masked inserts per splat).
template <class V, class T, std::size_t... I>
inline V splat_n(T v, std::index_sequence<I...>) { return V{((void)I, v)...}; }
inline vf splat(float v) { return splat_n<vf>(v, std::make_index_sequence<PW>()); }
inline vi splati(int v) { return splat_n<vi>(v, std::make_index_sequence<PW>()); }
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
// sqrtf per lane; the hardware vector square roots are correctly rounded, like sqrtf.
inline vf vsqrt(vf x) {
#if PRISM_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif PRISM_W == 8 && defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  vf r;
  for (int i = 0; i < PW; ++i) r[i] = std::sqrt(x[i]);
  return r;
#endif
}
inline vf tof(vi v) { return __builtin_convertvector(v, vf); }

// Lane-wise nearest_int (same bit trick as the scalar one).
inline vi vnearest_int(vf f) {
  const vf v = f + splat(12582912.f);
  return ((vi)v & 0x007fffff) - 0x00400000;
}

// nearest_int for |f| <= 4194303 only (cvtps2dq rounds half to even like the magic-constant trick,
// and differs beyond that range); one instruction instead of three.
inline vi vround_small(vf f) {
#if PRISM_W == 16 && defined(__AVX512F__)
  return (vi)_mm512_cvtps_epi32((__m512)f);
#elif PRISM_W == 8 && defined(__AVX__)
  return (vi)_mm256_cvtps_epi32((__m256)f);
#elif PRISM_W == 1 && defined(__SSE2__)  // PW == 4
  return (vi)_mm_cvtps_epi32((__m128)f);
#else
  return vnearest_int(f);
#endif
}

// Lane-wise fp32_to_fp16 / fp16_to_fp32: the scalar functions' arithmetic with selects for branches.
inline vi vfp16_bits(vf f) {
  const vi x = (vi)f;
  const vi sign = (x >> 16) & 0x8000;
  const vi a = x & 0x7fffffff;
  const vi r = a - 0x38000000;
  const vi normal = (r + 0xfff + ((r >> 13) & 1)) >> 13;
  const vf t = ((vf)a * splat(16777216.0f) + splat(8388608.0f)) - splat(8388608.0f);
  vi h = sel(a >= 0x38800000, normal, __builtin_convertvector(t, vi));
  h = sel(a >= 0x477ff000, splati(0x7c00), h);
  h = sel(a > 0x7f800000, splati(0x7e00), h);
  return sign | h;
}
inline vf vfp16_value(vi h) {
  const vi sign = (h & 0x8000) << 16;
  const vi e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const vi sub = (vi)(tof(m) * splat(0x1p-24f));
  vi r = sel(e == 0, sub, ((e + 112) << 23) | (m << 13));
  r = sel(e == 31, 0x7f800000 | (m << 13), r);
  return (vf)(r | sign);
}
inline vf vfp16_round(vf x) { return vfp16_value(vfp16_bits(x)); }

// Interleave of the low (HI = 0) or high halves of a and b: a0 b0 a1 b1 ... (constant indices, so
// GCC >= 12 and clang both take __builtin_shufflevector).
template <int HI, size_t... K>
inline vf zip_half(vf a, vf b, std::index_sequence<K...>) {
  return __builtin_shufflevector(a, b, ((K % 2 ? PW : 0) + HI * (W / 2) + (int)K / 2)...);
}

// In-register transpose of W vectors (log2(W) zip stages): afterwards r[k][i] = old r[i][k].
inline void transpose(vf* r) {
  if (W == 1 || PW != W) return;  // a one-lane group is its own transpose
  for (int s = 1; s < W; s *= 2) {
    vf n[W];
    for (int i = 0; i < W / 2; ++i) {
      n[2 * i] = zip_half<0>(r[i], r[i + W / 2], std::make_index_sequence<PW>());
      n[2 * i + 1] = zip_half<1>(r[i], r[i + W / 2], std::make_index_sequence<PW>());
    }
    for (int i = 0; i < W; ++i) r[i] = n[i];
  }
}

// W floats from an address with only float alignment.
inline vf load_unaligned(const float* p) {
  typedef float vf_unaligned __attribute__((vector_size(4 * PW), aligned(4)));
  if constexpr (PW == W) return *reinterpret_cast<const vf_unaligned*>(p);
  vf v{};
  std::memcpy(&v, p, 4 * W);
  return v;
}

// t[j][lane] = src[lane][j] for j < BS (BS a multiple of W).
template <int BS>
inline void transpose_in(const float* const* src, vf* t) {
  for (int j0 = 0; j0 < BS; j0 += W) {
    vf v[W];
    for (int i = 0; i < W; ++i) v[i] = load_unaligned(src[i] + j0);
    transpose(v);
    for (int k = 0; k < W; ++k) t[j0 + k] = v[k];
  }
}

// n IEEE half (BF16 false) or bfloat16 values to float32, exact (vfp16_value per lane): the model
// reader's F16/BF16 conversion, 3-5x faster here than the baseline-SSE2 scalar loop it replaces.
template <bool BF16>
void half_to_float_impl(const uint16_t* h, float* d, int64_t n) {
  typedef uint16_t vh __attribute__((vector_size(2 * PW)));
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    vh v{};
    std::memcpy(&v, h + j, 2 * W);
    const vi x = __builtin_convertvector(v, vi);
    const vf f = BF16 ? (vf)(x << 16) : vfp16_value(x);
    std::memcpy(d + j, &f, 4 * W);
  }
  for (; j < n; ++j) d[j] = BF16 ? u2f((uint32_t)h[j] << 16) : fp16_to_fp32(h[j]);
}
inline void half_to_float(const uint16_t* h, float* d, int64_t n, bool bf16) {
  (bf16 ? half_to_float_impl<true> : half_to_float_impl<false>)(h, d, n);
}

// ---- in-block ("row form") helpers: the W lanes hold W consecutive elements of ONE block ------------
// Only for kernels whose every operation is elementwise or an exact reduction (min/max), where
// vectorising within the block cannot change a result; see q_legacy.cpp.

// Bit i = mask lane i (lanes < W).
inline uint32_t movemask(vi m) {
#if PRISM_W == 16 && defined(__AVX512DQ__)
  return (uint32_t)_mm512_movepi32_mask((__m512i)m);
#elif PRISM_W == 8 && defined(__AVX__)
  return (uint32_t)_mm256_movemask_ps((__m256)m);
#else
  uint32_t bits = 0;
  for (int i = 0; i < W; ++i) bits |= (uint32_t)(m[i] != 0) << i;
  return bits;
#endif
}

// dst[k*W + i] = v[k][i] for NV vectors whose values are all in 0..255 (saturating packs keep them).
template <int NV>
inline void store_bytes(const vi* v, uint8_t* dst) {
#if PRISM_W == 16 && defined(__AVX512F__)
  for (int k = 0; k < NV; ++k) _mm_storeu_si128((__m128i*)(dst + 16 * k), _mm512_cvtepi32_epi8((__m512i)v[k]));
#elif PRISM_W == 8 && defined(__AVX2__)
  static_assert(NV % 2 == 0, "pairs of 8-lane vectors");
  for (int k = 0; k < NV; k += 2) {  // packs work per 128-bit half: the permute restores the order
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32((__m256i)v[k], (__m256i)v[k + 1]), 0xD8);
    _mm_storeu_si128((__m128i*)(dst + 8 * k),
                     _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
  }
#else
  for (int k = 0; k < NV; ++k)
    for (int i = 0; i < W; ++i) dst[k * W + i] = (uint8_t)v[k][i];
#endif
}

// A group of up to W blocks, transposed: x[j][lane] is element j of block `lane`.
// qw is the importance (imatrix) of each element, or unused when the caller has none.
template <int BS>
struct Group {
  vf x[BS];
  vf qw[BS];
  vf row_sigma2;   // sum(x^2)/n_per_row of the lane's row (Q4_0..Q5_1 imatrix paths use it)
  int n;           // valid lanes
};

// out[lane][p] = (uint8_t)b[p][lane] for p < NB. Four byte rows are packed into one 32-bit word per
// lane, W word rows are transposed, and every lane then stores up to 4*W contiguous bytes at once.
template <int NB>
inline void transpose_out_bytes(const vi* b, uint8_t* const* out) {
  for (int p0 = 0; p0 < NB; p0 += 4 * W) {
    const int n = NB - p0 < 4 * W ? NB - p0 : 4 * W;
    vf v[W];
    for (int k = 0; k < W; ++k) {
      vi word = zeroi();
      for (int c = 0; c < 4; ++c) {
        const int p = p0 + 4 * k + c;
        if (p < NB) word |= (b[p] & 255) << (8 * c);
      }
      v[k] = (vf)word;
    }
    transpose(v);
    for (int lane = 0; lane < W; ++lane) std::memcpy(out[lane] + p0, &v[lane], n);
  }
}

// Input of the padding lanes of a last, partial group: x = 0, imatrix = 1.
constexpr int kMaxBlock = 256;
struct PaddingBlocks {
  alignas(64) float zeros[kMaxBlock] = {};
  alignas(64) float ones[kMaxBlock] = {};
  constexpr PaddingBlocks() { for (float& v : ones) v = 1.0f; }
};
inline constexpr PaddingBlocks kPadding{};

// True when K::quantize fills the lane-form byte image (vi* ob) rather than writing through out[lane].
template <class K, class = void>
struct WritesByteImage : std::false_type {};
template <class K>
struct WritesByteImage<K, std::void_t<decltype(K::quantize(std::declval<const Group<K::BS>&>(), true,
                                                           std::declval<vi*>()))>> : std::true_type {};

// Runs K::quantize over every block of nrows x n_per_row, W blocks at a time.
// K provides: BS, BYTES, kRowSigma2 (bool), and either
//   static void quantize(const Group<BS>& g, bool has_qw, vi* ob);  // ob[p][lane]: byte p of the lane's block
// (preferred: stored through transposes) or
//   static void quantize(const Group<BS>& g, bool has_qw, uint8_t* const* out);  // out[lane]: BYTES
template <class K>
void quantize_rows(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  constexpr int BS = K::BS;
  const int64_t nb_row = n_per_row / BS;
  const int64_t nblocks = nrows * nb_row;
  alignas(64) Group<BS> g;
  alignas(64) uint8_t scratch[W][K::BYTES];
  alignas(64) vi ob[K::BYTES];
  static_assert(BS <= kMaxBlock && BS % W == 0, "block size");
  uint8_t* out[W];
  const float* xs[W];
  const float* qs[W];
  // Row sigma2 = sum(x^2)/n_per_row (sequential per row, as ggml): W rows at a time, one chain each.
  float sig[W] = {};
  int64_t sig_row0 = -W;
  g.row_sigma2 = vf{};
  for (int64_t b0 = 0; b0 < nblocks; b0 += W) {
    const int n = (int)((nblocks - b0) < W ? (nblocks - b0) : W);
    g.n = n;
    for (int lane = 0; lane < W; ++lane) {
      const int64_t b = b0 + lane;
      const bool real = lane < n;  // padding lanes: zeros, results discarded
      xs[lane] = real ? x + b * BS : kPadding.zeros;  // consecutive blocks are contiguous in memory
      qs[lane] = real && imatrix ? imatrix + (b % nb_row) * BS : kPadding.ones;
      out[lane] = real ? dst + b * K::BYTES : scratch[lane];
      if (K::kRowSigma2 && imatrix && real) {
        const int64_t row = b / nb_row;
        if (row >= sig_row0 + W) {
          sig_row0 = row;
          const float* xr[W];  // rows past the end repeat the last one (fixed trip count: registers)
          for (int r = 0; r < W; ++r) xr[r] = x + (row + r < nrows ? row + r : nrows - 1) * n_per_row;
          float acc[W] = {};
          for (int64_t j = 0; j < n_per_row; ++j)
            for (int r = 0; r < W; ++r) acc[r] += xr[r][j] * xr[r][j];
          for (int r = 0; r < W; ++r) sig[r] = acc[r] / n_per_row;
        }
        g.row_sigma2[lane] = sig[row - sig_row0];
      }
    }
    transpose_in<BS>(xs, g.x);
    if (imatrix) transpose_in<BS>(qs, g.qw);
    if constexpr (WritesByteImage<K>::value) {
      K::quantize(g, imatrix != nullptr, ob);
      transpose_out_bytes<K::BYTES>(ob, out);
    } else {
      K::quantize(g, imatrix != nullptr, out);
    }
  }
}

// Runs K::quantize_block (one block of K::BS values, its importance or null, K::BYTES out) over every
// block of the rows, for kernels that work block by block rather than in lanes (iq1.cpp, iq2.cpp).
template <class K>
void quantize_blocks_rows(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  const int64_t nb_row = n_per_row / K::BS;
  for (int64_t b = 0; b < nrows * nb_row; ++b)
    K::quantize_block(x + b * K::BS, imatrix ? imatrix + (b % nb_row) * K::BS : nullptr, dst + b * K::BYTES);
}
template <class K, class = void>
struct QuantizesBlockwise : std::false_type {};
template <class K>
struct QuantizesBlockwise<K, std::void_t<decltype(&K::quantize_block)>> : std::true_type {};

template <class K>
void dequantize_blocks(const uint8_t* src, float* y, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b) K::dequantize(src + b * K::BYTES, y + b * K::BS);
}


// Sums in double over 8 partial sums, partial sum l taking the columns = l mod 8: kept as two 4-wide
// double vectors (columns 0-3, 4-7) whatever the ISA's width, so they are elementwise vector operations
// with the same bits on every path (no FMA), and stay in registers (GCC spilled a 64-byte vector to the
// stack on AVX2 at every step).
typedef float f4 __attribute__((vector_size(16)));
typedef double d4 __attribute__((vector_size(32)));
struct Sum8 {
  d4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
  double fold() const { return ((lo[0] + lo[1]) + (lo[2] + lo[3])) + ((hi[0] + hi[1]) + (hi[2] + hi[3])); }
};
// (double) of 4 floats; an out-parameter, as returning a 32-byte vector changes the ABI without AVX.
inline void load_d4(const float* p, d4& out) {
  f4 v;
  std::memcpy(&v, p, 16);
  out = __builtin_convertvector(v, d4);
}
// s += w * d * d for d = x - y (HAS_Y false: d = x) and w = 1 (HAS_W false), over 8 consecutive values.
template <bool HAS_W, bool HAS_Y>
inline void add_sq8(Sum8& s, const float* x, const float* y, const float* w) {
  d4 dl, dh, t, wl = {1, 1, 1, 1}, wh = {1, 1, 1, 1};
  load_d4(x, dl);
  load_d4(x + 4, dh);
  if (HAS_Y) {
    load_d4(y, t);
    dl -= t;
    load_d4(y + 4, t);
    dh -= t;
  }
  if (HAS_W) {
    load_d4(w, wl);
    load_d4(w + 4, wh);
  }
  s.lo += wl * dl * dl;
  s.hi += wh * dh * dh;
}

// sum w x^2 over nrows rows of k (a multiple of 8), w per column or null (w = 1).
template <bool HAS_W>
double weighted_sum_sq_impl(const float* x, const float* w, int64_t nrows, int64_t k) {
  Sum8 acc;
  for (int64_t i = 0; i < nrows; ++i)
    for (int64_t j = 0; j < k; j += 8) add_sq8<HAS_W, false>(acc, x + i * k + j, nullptr, HAS_W ? w + j : w);
  return acc.fold();
}
inline double weighted_sum_sq(const float* x, const float* w, int64_t nrows, int64_t k) {
  if (k % 8) {  // not from the kernels (rows are whole blocks): the same pattern, scalar
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < nrows; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const double v = x[i * k + j];
        acc[j & 7] += (w ? (double)w[j] : 1.0) * v * v;
      }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
  return w ? weighted_sum_sq_impl<true>(x, w, nrows, k) : weighted_sum_sq_impl<false>(x, w, nrows, k);
}

// The fused error kernel's pass for one type, one block at a time: ggml's to_float (K::dequantize) and
// the bin widths (K::steps: for each element, the distance between the two grid values around its
// dequantized value, 0 where the block's scale is 0) go to L1 buffers; then it sums w*(x - y)^2 as
// weighted_sum_sq sums w x^2, and counts the values near a boundary. A value is near one when its
// distance to it, 0.5 - |x - y| / step bin widths, lies in [0, delta); values with step 0 (zero scale)
// or inf (beyond the outermost grid value) have none and are not counted (the test below is the
// division-free form). One pass instead of four over chunk-sized buffers, which had cost 1.4-3.3 ns
// per value and type.
template <class K, bool HAS_W>
void error_stats_impl(const uint8_t* q, const float* x, const float* w, int64_t nrows, int64_t k, double delta,
                      ErrorStats* s) {
  static_assert(K::BS % 8 == 0, "blocks of whole partial-sum groups");
  alignas(64) float y[K::BS], step[K::BS];
  Sum8 acc;
  const float lo = (float)(0.5 - delta);
  int64_t near = 0, counted = 0;
  const int64_t nb_row = k / K::BS;
  for (int64_t i = 0; i < nrows; ++i)
    for (int64_t b = 0; b < nb_row; ++b) {
      const uint8_t* blk = q + (i * nb_row + b) * K::BYTES;
      const float* xb = x + i * k + b * K::BS;
      K::dequantize(blk, y);
      K::steps(blk, xb, step);
      const float* wb = HAS_W ? w + b * K::BS : w;  // no offset on a null pointer
      for (int e = 0; e < K::BS; e += 8) add_sq8<HAS_W, true>(acc, xb + e, y + e, HAS_W ? wb + e : wb);
      int32_t bn = 0, bc = 0;  // 32-bit per block: the loop vectorises without widening
      for (int e = 0; e < K::BS; ++e) {
        const float d = std::fabs(xb[e] - y[e]), st = step[e];
        const int32_t has = st > 0.0f;
        bc += has;
        bn += has & (d <= 0.5f * st) & (d > lo * st);
      }
      counted += bc;
      near += bn;
    }
  s->err = acc.fold();
  s->near_boundary += near;
  s->counted += counted;
}
template <class K>
void error_stats_blocks(const uint8_t* q, const float* x, const float* w, int64_t nrows, int64_t k, double delta,
                        ErrorStats* s) {
  (w ? error_stats_impl<K, true> : error_stats_impl<K, false>)(q, x, w, nrows, k, delta, s);
}

}  // namespace PRISM_NS
}  // namespace prism
