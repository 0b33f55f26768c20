// Type-traits table of the quant types prism_native implements, as ggml keeps one (ggml.c type_traits).
// ggml enum values are those of the llama.cpp vendored in llama-cpp-python 0.3.36. Block layouts only: llama-quantize's
// fallback types are a Python table (qtypes.FALLBACK); kernels.h's make_ops static_asserts each kernel's
// block size and bytes against this table, and the block structs below are static_asserted against it too.
#pragma once
#include <cstddef>
#include <cstdint>

namespace prism {

// The blocks whose fp16 scale fields ggml_validate_row_data checks (ggml-common.h layouts); Python reads the
// fields' offsets from the table (qtypes.QType.f16_offsets) instead of repeating them.
using ggml_half = uint16_t;   // fp16 bits
struct block_q4_0 { ggml_half d; uint8_t qs[16]; };
struct block_q4_1 { ggml_half d; ggml_half m; uint8_t qs[16]; };
struct block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; };
struct block_q5_1 { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16]; };
struct block_q8_0 { ggml_half d; int8_t qs[32]; };
struct block_q2_K { uint8_t scales[16]; uint8_t qs[64]; ggml_half d; ggml_half dmin; };
struct block_q3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; ggml_half d; };
struct block_q4_K { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct block_q5_K { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; };
struct block_iq4_nl { ggml_half d; uint8_t qs[16]; };
struct block_iq4_xs { ggml_half d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };

enum class QType : int {
  Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  IQ1_M = 29, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};

struct TypeTraits {
  QType type;
  const char* name;       // as llama-quantize's ftype/--tensor-type names spell it
  int block_size;         // values per block
  int type_size;          // bytes per block
  bool requires_imatrix = false;  // ggml_quantize_requires_imatrix: ggml_quantize_chunk refuses it without one
  int f16_offsets[2] = {-1, -1};  // byte offsets of the block's fp16 scales (d first; -1: none or not listed)
};

inline constexpr TypeTraits kTypeTraits[] = {
  {QType::Q4_0,   "Q4_0",   32,  18, false, {offsetof(block_q4_0, d), -1}},
  {QType::Q4_1,   "Q4_1",   32,  20, false, {offsetof(block_q4_1, d), offsetof(block_q4_1, m)}},
  {QType::Q5_0,   "Q5_0",   32,  22, false, {offsetof(block_q5_0, d), -1}},
  {QType::Q5_1,   "Q5_1",   32,  24, false, {offsetof(block_q5_1, d), offsetof(block_q5_1, m)}},
  {QType::Q8_0,   "Q8_0",   32,  34, false, {offsetof(block_q8_0, d), -1}},
  {QType::Q2_K,   "Q2_K",   256, 84, false, {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)}},
  {QType::Q3_K,   "Q3_K",   256, 110, false, {offsetof(block_q3_K, d), -1}},
  {QType::Q4_K,   "Q4_K",   256, 144, false, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}},
  {QType::Q5_K,   "Q5_K",   256, 176, false, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}},
  {QType::Q6_K,   "Q6_K",   256, 210, false, {offsetof(block_q6_K, d), -1}},
  {QType::IQ4_NL, "IQ4_NL", 32,  18, false, {offsetof(block_iq4_nl, d), -1}},
  {QType::IQ4_XS, "IQ4_XS", 256, 136, false, {offsetof(block_iq4_xs, d), -1}},
  {QType::IQ3_S,  "IQ3_S",  256, 110},
  {QType::IQ3_XXS,"IQ3_XXS",256, 98},
  {QType::IQ2_S,  "IQ2_S",  256, 82},
  {QType::IQ2_XS, "IQ2_XS", 256, 74, true},
  {QType::IQ2_XXS,"IQ2_XXS",256, 66, true},
  {QType::IQ1_M,  "IQ1_M",  256, 56},
  {QType::IQ1_S,  "IQ1_S",  256, 50, true},
  {QType::TQ2_0,  "TQ2_0",  256, 66},
  {QType::TQ1_0,  "TQ1_0",  256, 54},
  {QType::Q2_0,   "Q2_0",   64,  18},
  {QType::Q1_0,   "Q1_0",   128, 18},
  {QType::MXFP4,  "MXFP4",  32,  17},
  {QType::NVFP4,  "NVFP4",  64,  36},
};
constexpr int kNumTypes = sizeof(kTypeTraits) / sizeof(kTypeTraits[0]);

constexpr int type_index(QType t) {
  for (int i = 0; i < kNumTypes; ++i)
    if (kTypeTraits[i].type == t) return i;
  return -1;
}

constexpr const TypeTraits& traits_of(QType t) { return kTypeTraits[type_index(t)]; }

static_assert(sizeof(block_q4_0) == traits_of(QType::Q4_0).type_size, "block_q4_0: ggml-common.h's size");
static_assert(sizeof(block_q4_1) == traits_of(QType::Q4_1).type_size, "block_q4_1: ggml-common.h's size");
static_assert(sizeof(block_q5_0) == traits_of(QType::Q5_0).type_size, "block_q5_0: ggml-common.h's size");
static_assert(sizeof(block_q5_1) == traits_of(QType::Q5_1).type_size, "block_q5_1: ggml-common.h's size");
static_assert(sizeof(block_q8_0) == traits_of(QType::Q8_0).type_size, "block_q8_0: ggml-common.h's size");
static_assert(sizeof(block_q2_K) == traits_of(QType::Q2_K).type_size, "block_q2_K: ggml-common.h's size");
static_assert(sizeof(block_q3_K) == traits_of(QType::Q3_K).type_size, "block_q3_K: ggml-common.h's size");
static_assert(sizeof(block_q4_K) == traits_of(QType::Q4_K).type_size, "block_q4_K: ggml-common.h's size");
static_assert(sizeof(block_q5_K) == traits_of(QType::Q5_K).type_size, "block_q5_K: ggml-common.h's size");
static_assert(sizeof(block_q6_K) == traits_of(QType::Q6_K).type_size, "block_q6_K: ggml-common.h's size");
static_assert(sizeof(block_iq4_nl) == traits_of(QType::IQ4_NL).type_size, "block_iq4_nl: ggml-common.h's size");
static_assert(sizeof(block_iq4_xs) == traits_of(QType::IQ4_XS).type_size, "block_iq4_xs: ggml-common.h's size");
// the fp16 fields where ggml-common.h puts them (its own static_asserts check the same sizes)
static_assert(offsetof(block_q4_1, m) == 2 && offsetof(block_q5_1, m) == 2, "legacy m after d");
static_assert(offsetof(block_q2_K, d) == 80 && offsetof(block_q2_K, dmin) == 82, "block_q2_K d, dmin");
static_assert(offsetof(block_q3_K, d) == 108, "block_q3_K d");
static_assert(offsetof(block_q4_K, dmin) == 2 && offsetof(block_q5_K, dmin) == 2, "K4/K5 dmin after d");
static_assert(offsetof(block_q6_K, d) == 208, "block_q6_K d");

inline const TypeTraits* find_traits(int ggml_type) {
  for (const auto& t : kTypeTraits)
    if ((int)t.type == ggml_type) return &t;
  return nullptr;
}

}  // namespace prism
