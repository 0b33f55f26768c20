// Run-time ISA choice, input conversion (F32/F16/BF16), row-parallel drivers and the fused error kernel.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels.h"

namespace prism {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 30 };  // ggml enum values

// ISAs compiled into this build, and those this CPU can run (widest last).
std::vector<std::string> compiled_isas();
std::vector<std::string> usable_isas();
// The table for `isa` ("" = widest usable, or $PRISM_ISA when set); throws std::invalid_argument.
const KernelTable& get_table(const std::string& isa);

struct Matrix {
  const void* data;
  DType dtype;
  int64_t nrows, n_per_row;
};

// Quantize every row (or the rows listed in `rows`) into dst (row after row); throws
// std::invalid_argument on non-finite input. Thread count <= 0 means hardware concurrency.
void quantize(const KernelTable& t, QType type, const Matrix& m, const float* imatrix, uint8_t* dst,
              int nthreads);
// F32/F16/BF16 rows to float32 (exact), in parallel.
void to_float32(const KernelTable& t, const Matrix& m, float* dst, int nthreads);
// Squared L2 norms of every row and column of a row-major float32 matrix, in double, one pass on one
// thread (fixed summation order: the same result on every machine).
void line_norms(const float* x, int64_t nrows, int64_t k, double* row_sq, double* col_sq);
void dequantize(const KernelTable& t, QType type, const uint8_t* src, int64_t nrows, int64_t n_per_row,
                float* dst, int nthreads);

// One pass over the (selected rows of the) matrix: each chunk of rows is converted to float once and
// quantized/dequantized to every type in `types`. imatrix (n_per_row weights) is both the quantizer's
// importance and the error weight w; w = 1 without it. Results do not depend on nthreads.
std::vector<ErrorStats> quant_errors(const KernelTable& t, const std::vector<QType>& types, const Matrix& m,
                                     const int64_t* rows, int64_t nsel, const float* imatrix, double delta,
                                     int nthreads);

}  // namespace prism
