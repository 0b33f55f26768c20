// Run-time ISA selection, F16/BF16 input conversion, row-parallel drivers and the fused error kernel.
#include "dispatch.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "simd.h"

namespace prism {

namespace {

struct IsaEntry {
  const char* name;
  const KernelTable& (*table)();
  bool (*usable)();
};

bool always() { return true; }
#if defined(__x86_64__) || defined(_M_X64)
bool has_avx2() { return __builtin_cpu_supports("avx2"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif

// Narrowest first; the default is the last usable one.
const std::vector<IsaEntry>& isa_list() {
  static const std::vector<IsaEntry> v = {
      {"scalar", &scalar::table, &always},
#ifdef PRISM_HAVE_NEON
      {"neon", &neon::table, &always},
#endif
#ifdef PRISM_HAVE_AVX2
      {"avx2", &avx2::table, &has_avx2},
#endif
#ifdef PRISM_HAVE_AVX512
      {"avx512", &avx512::table, &has_avx512},
#endif
  };
  return v;
}

size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }

bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;  // exponent all ones = inf or nan; branch-free so it vectorises
  for (int64_t j = 0; j < n; ++j) bad |= ((f2u(x[j]) & 0x7f800000u) == 0x7f800000u);
  return !bad;
}

// Rows [r0, r0+n) (or the listed rows) of m converted to float32 into dst.
void convert_rows(const KernelTable& t, const Matrix& m, const int64_t* rows, int64_t r0, int64_t n, float* dst) {
  const int64_t k = m.n_per_row;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = rows ? rows[r0 + i] : r0 + i;
    const uint8_t* src = static_cast<const uint8_t*>(m.data) + (size_t)r * k * dtype_size(m.dtype);
    if (m.dtype == DType::F32)
      std::memcpy(dst + i * k, src, (size_t)k * 4);
    else
      t.half_to_float(reinterpret_cast<const uint16_t*>(src), dst + i * k, k, m.dtype == DType::BF16);
  }
}

// Float32 rows [r0, r0+n) (or the listed rows) of m: a pointer into m itself when they are contiguous
// F32 rows, else converted into `scratch`. Returns nullptr on a non-finite value.
const float* load_rows(const KernelTable& t, const Matrix& m, const int64_t* rows, int64_t r0, int64_t n,
                       std::vector<float>& scratch) {
  const int64_t k = m.n_per_row;
  if (m.dtype == DType::F32 && !rows) {
    const float* p = static_cast<const float*>(m.data) + (size_t)r0 * k;
    return all_finite(p, n * k) ? p : nullptr;
  }
  scratch.resize((size_t)(n * k));
  convert_rows(t, m, rows, r0, n, scratch.data());
  return all_finite(scratch.data(), n * k) ? scratch.data() : nullptr;
}

// Rows per work item: fixed by the shape only, so results never depend on the thread count.
int64_t chunk_rows(int64_t n_per_row) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, n_per_row)); }

template <class F>
void parallel_chunks(int64_t nchunks, int nthreads, F&& fn) {
  if (nthreads <= 0) nthreads = (int)std::max(1u, std::thread::hardware_concurrency());
  nthreads = (int)std::min<int64_t>(nthreads, nchunks);
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t c; (c = next.fetch_add(1)) < nchunks;) fn(c);
  };
  if (nthreads <= 1) { worker(); return; }
  std::vector<std::thread> pool;
  pool.reserve(nthreads - 1);
  for (int i = 1; i < nthreads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

const KernelOps& ops_for(const KernelTable& t, QType type) {
  const int i = type_index(type);
  if (i < 0 || !t.ops[i].quantize) throw std::invalid_argument("quant type not implemented");
  return t.ops[i];
}

const TypeTraits& traits_for(QType type, int64_t n_per_row) {
  const TypeTraits& tr = kTypeTraits[type_index(type)];
  if (n_per_row <= 0 || n_per_row % tr.block_size != 0)
    throw std::invalid_argument(std::string("row length ") + std::to_string(n_per_row) +
                                " is not a positive multiple of " + tr.name + "'s block size " +
                                std::to_string(tr.block_size));
  return tr;
}

// ggml_quantize_chunk refuses the types of ggml_quantize_requires_imatrix without importance weights.
void require_imatrix(const TypeTraits& tr, const float* imatrix) {
  if (tr.requires_imatrix && !imatrix)
    throw std::invalid_argument(std::string(tr.name) + " needs importance weights (an imatrix): ggml refuses to "
                                "quantize it without an importance matrix");
}

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> v;
  for (const auto& e : isa_list()) v.push_back(e.name);
  return v;
}

std::vector<std::string> usable_isas() {
  std::vector<std::string> v;
  for (const auto& e : isa_list())
    if (e.usable()) v.push_back(e.name);
  return v;
}

const KernelTable& get_table(const std::string& isa_in) {
  std::string isa = isa_in;
  if (isa.empty()) {
    const char* env = std::getenv("PRISM_ISA");
    if (env && *env) isa = env;
  }
  const IsaEntry* pick = nullptr;
  for (const auto& e : isa_list()) {
    if (!e.usable()) continue;
    if (isa.empty() || isa == e.name) pick = &e;
  }
  if (!pick) throw std::invalid_argument("ISA '" + isa + "' is not available on this CPU/build");
  return pick->table();
}

void quantize(const KernelTable& t, QType type, const Matrix& m, const float* imatrix, uint8_t* dst,
              int nthreads) {
  const KernelOps& ops = ops_for(t, type);
  const TypeTraits& tr = traits_for(type, m.n_per_row);
  require_imatrix(tr, imatrix);
  const size_t row_bytes = (size_t)(m.n_per_row / tr.block_size) * tr.type_size;
  const int64_t cr = chunk_rows(m.n_per_row), nchunks = (m.nrows + cr - 1) / cr;
  std::atomic<bool> bad{false};
  parallel_chunks(nchunks, nthreads, [&](int64_t c) {
    const int64_t r0 = c * cr, n = std::min(cr, m.nrows - r0);
    if (!imatrix && ops.quantize_checked && m.dtype == DType::F32) {
      const float* xr = static_cast<const float*>(m.data) + r0 * m.n_per_row;
      if (!ops.quantize_checked(xr, dst + r0 * row_bytes, n, m.n_per_row)) bad = true;
      return;
    }
    std::vector<float> scratch;
    const float* xr = load_rows(t, m, nullptr, r0, n, scratch);
    if (!xr) { bad = true; return; }
    ops.quantize(xr, dst + r0 * row_bytes, n, m.n_per_row, imatrix);
  });
  if (bad) throw std::invalid_argument("input contains NaN or Inf");
}

void to_float32(const KernelTable& t, const Matrix& m, float* dst, int nthreads) {
  const int64_t cr = chunk_rows(m.n_per_row), nchunks = (m.nrows + cr - 1) / cr;
  parallel_chunks(nchunks, nthreads, [&](int64_t c) {
    const int64_t r0 = c * cr;
    convert_rows(t, m, nullptr, r0, std::min(cr, m.nrows - r0), dst + r0 * m.n_per_row);
  });
}

void line_norms(const float* x, int64_t nrows, int64_t k, double* row_sq, double* col_sq) {
  std::fill(col_sq, col_sq + k, 0.0);
  for (int64_t i = 0; i < nrows; ++i) {
    const float* r = x + i * k;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= k; j += 8)
      for (int l = 0; l < 8; ++l) {
        const double v = (double)r[j + l] * (double)r[j + l];
        acc[l] += v;
        col_sq[j + l] += v;
      }
    for (; j < k; ++j) {
      const double v = (double)r[j] * (double)r[j];
      acc[j & 7] += v;
      col_sq[j] += v;
    }
    row_sq[i] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
}

void dequantize(const KernelTable& t, QType type, const uint8_t* src, int64_t nrows, int64_t n_per_row,
                float* dst, int nthreads) {
  const KernelOps& ops = ops_for(t, type);
  const TypeTraits& tr = traits_for(type, n_per_row);
  const int64_t nb_row = n_per_row / tr.block_size;
  const int64_t cr = chunk_rows(n_per_row), nchunks = (nrows + cr - 1) / cr;
  parallel_chunks(nchunks, nthreads, [&](int64_t c) {
    const int64_t r0 = c * cr, n = std::min(cr, nrows - r0);
    ops.dequantize(src + r0 * nb_row * tr.type_size, dst + r0 * n_per_row, n * nb_row);
  });
}

std::vector<ErrorStats> quant_errors(const KernelTable& t, const std::vector<QType>& types, const Matrix& m,
                                     const int64_t* rows, int64_t nsel, const float* imatrix, double delta,
                                     int nthreads) {
  std::vector<const KernelOps*> ops;
  std::vector<const TypeTraits*> trs;
  for (QType ty : types) {
    ops.push_back(&ops_for(t, ty));
    trs.push_back(&traits_for(ty, m.n_per_row));
    require_imatrix(*trs.back(), imatrix);
  }
  const int64_t total = rows ? nsel : m.nrows;
  if (rows)
    for (int64_t i = 0; i < nsel; ++i)
      if (rows[i] < 0 || rows[i] >= m.nrows) throw std::invalid_argument("row index out of range");
  const int64_t k = m.n_per_row;
  const int64_t cr = chunk_rows(k), nchunks = (total + cr - 1) / cr;
  const size_t nt = types.size();
  std::vector<ErrorStats> per_chunk((size_t)nchunks * nt);
  std::atomic<bool> bad{false};
  parallel_chunks(nchunks, nthreads, [&](int64_t c) {
    const int64_t r0 = c * cr, n = std::min(cr, total - r0);
    std::vector<float> scratch;
    std::vector<uint8_t> q;
    const float* x = load_rows(t, m, rows, r0, n, scratch);
    if (!x) { bad = true; return; }
    const double signal = t.weighted_sum_sq(x, imatrix, n, k);  // the same for every type
    for (size_t ti = 0; ti < nt; ++ti) {
      const TypeTraits& tr = *trs[ti];
      const int64_t nblocks = n * (k / tr.block_size);
      q.resize((size_t)nblocks * tr.type_size);
      ops[ti]->quantize(x, q.data(), n, k, imatrix);
      ErrorStats& s = per_chunk[(size_t)c * nt + ti];
      ops[ti]->error_stats(q.data(), x, imatrix, n, k, delta, &s);
      s.signal = signal;
    }
  });
  if (bad) throw std::invalid_argument("input contains NaN or Inf");
  std::vector<ErrorStats> out(nt);
  for (int64_t c = 0; c < nchunks; ++c)  // fixed reduction order
    for (size_t ti = 0; ti < nt; ++ti) {
      const ErrorStats& s = per_chunk[(size_t)c * nt + ti];
      out[ti].err += s.err;
      out[ti].signal += s.signal;
      out[ti].near_boundary += s.near_boundary;
      out[ti].counted += s.counted;
    }
  return out;
}

}  // namespace prism
