// Type-traits table of the quant types prism_native implements, as ggml keeps one (ggml.c type_traits).
// ggml enum values are those of the llama.cpp vendored in llama-cpp-python 0.3.36. Block layouts only: llama-quantize's
// fallback types are a Python table (qtypes.FALLBACK); kernels.h's make_ops static_asserts each kernel's
// block size and bytes against this table.
#pragma once
#include <cstdint>

namespace prism {

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
};

inline constexpr TypeTraits kTypeTraits[] = {
  {QType::Q4_0,   "Q4_0",   32,  18},
  {QType::Q4_1,   "Q4_1",   32,  20},
  {QType::Q5_0,   "Q5_0",   32,  22},
  {QType::Q5_1,   "Q5_1",   32,  24},
  {QType::Q8_0,   "Q8_0",   32,  34},
  {QType::Q2_K,   "Q2_K",   256, 84},
  {QType::Q3_K,   "Q3_K",   256, 110},
  {QType::Q4_K,   "Q4_K",   256, 144},
  {QType::Q5_K,   "Q5_K",   256, 176},
  {QType::Q6_K,   "Q6_K",   256, 210},
  {QType::IQ4_NL, "IQ4_NL", 32,  18},
  {QType::IQ4_XS, "IQ4_XS", 256, 136},
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

inline const TypeTraits* find_traits(int ggml_type) {
  for (const auto& t : kTypeTraits)
    if ((int)t.type == ggml_type) return &t;
  return nullptr;
}

}  // namespace prism
