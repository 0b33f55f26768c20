// Per-ISA kernel table: every ISA build (scalar, avx2, avx512, neon) of the family translation units
// fills one KernelTable; dispatch.cpp picks one at run time.
#pragma once
#include <cstdint>

#include "types.h"

namespace prism {

struct ErrorStats {
  double err = 0.0;       // sum w*(x-q)^2
  double signal = 0.0;    // sum w*x^2
  int64_t near_boundary = 0;  // values within `delta` bin widths of a bin boundary
  int64_t counted = 0;        // values with a non-zero bin width (the denominator of the share)
};

struct KernelOps {
  // Quantize nrows rows (n_per_row a multiple of the block size) exactly as ggml_quantize_chunk does;
  // imatrix: n_per_row importance weights or nullptr.
  void (*quantize)(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) = nullptr;
  // Optional one-pass form of quantize for float32 rows without imatrix that also checks the input:
  // returns false if a value is Inf or NaN (dst then holds garbage). It saves the separate finiteness
  // pass, which costs a quarter of the time of the fastest kernels.
  bool (*quantize_checked)(const float* x, uint8_t* dst, int64_t nrows, int64_t n_per_row) = nullptr;
  // ggml's to_float for nblocks consecutive blocks.
  void (*dequantize)(const uint8_t* src, float* y, int64_t nblocks) = nullptr;
  // The fused error kernel's pass for one type over nrows rows of x and their quantized bytes q: sets
  // s->err = sum w*(x - dequantized)^2 and adds the boundary counts (see simd.h: error_stats_blocks).
  void (*error_stats)(const uint8_t* q, const float* x, const float* w, int64_t nrows, int64_t n_per_row,
                      double delta, ErrorStats* s) = nullptr;
};

struct KernelTable {
  const char* isa = "";
  int width = 1;
  KernelOps ops[kNumTypes];
  // sum w x^2 over nrows rows of k, w per column or null: the fused kernel's signal (simd.h).
  double (*weighted_sum_sq)(const float* x, const float* w, int64_t nrows, int64_t k) = nullptr;
  // n F16 (bf16 false) or BF16 values to float32, exact (simd.h).
  void (*half_to_float)(const uint16_t* h, float* d, int64_t n, bool bf16) = nullptr;
};

#define PRISM_DECLARE_ISA(ns) namespace ns { const KernelTable& table(); }
PRISM_DECLARE_ISA(scalar)
PRISM_DECLARE_ISA(avx2)
PRISM_DECLARE_ISA(avx512)
PRISM_DECLARE_ISA(neon)
#undef PRISM_DECLARE_ISA

}  // namespace prism

#ifdef PRISM_W
#include "simd.h"
namespace prism { namespace PRISM_NS {
template <QType T, class K>
KernelOps make_ops() {
  static_assert(K::BS == traits_of(T).block_size && K::BYTES == traits_of(T).type_size,
                "kernel block layout differs from the type table (types.h)");
  KernelOps o;
  if constexpr (QuantizesBlockwise<K>::value) o.quantize = &quantize_blocks_rows<K>;
  else o.quantize = &quantize_rows<K>;
  o.dequantize = &dequantize_blocks<K>;
  o.error_stats = &error_stats_blocks<K>;
  return o;
}
// Each family translation unit registers its types.
void register_k_quants(KernelTable& t);
void register_iq4(KernelTable& t);
void register_legacy(KernelTable& t);
void register_iq2(KernelTable& t);
void register_iq1(KernelTable& t);
}}  // namespace prism::PRISM_NS
#endif
