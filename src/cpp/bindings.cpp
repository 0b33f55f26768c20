// Thin nanobind layer: argument checks, GIL release, numpy arrays in and out.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/optional.h>

#include <cstdlib>
#include <new>
#include <stdexcept>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "dispatch.h"
#include "iq3_grid.h"

namespace nb = nanobind;
using namespace prism;

namespace {

// Output buffer of `count` T, owned by `owner`. Large ones are 2 MiB-aligned and marked for transparent
// huge pages, as numpy does for its own arrays: with 4 KiB pages the first-touch page faults made a
// 14336x4096 float32 copy 30-40% slower than numpy's own F16 cast.
template <class T>
T* alloc_output(size_t count, nb::capsule& owner) {
  const size_t bytes = count ? count * sizeof(T) : 1;
  void* p = nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes >= 2 * kHuge) {
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    p = std::aligned_alloc(kHuge, rounded);
    if (p) madvise(p, rounded, MADV_HUGEPAGE);
  }
#endif
  if (!p) p = std::malloc(bytes);
  if (!p) throw std::bad_alloc();
  owner = nb::capsule(p, [](void* q) noexcept { std::free(q); });
  return static_cast<T*>(p);
}

// Destination of n floats: the caller's reusable buffer `out` (at least n; a fresh tensor-sized buffer
// per call cost 0.1-0.7 s of page faults and huge-page compaction for a 100-500 MB tensor), or a new one.
using F32Out = nb::ndarray<float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
float* float_output(std::optional<F32Out>& out, size_t n, nb::capsule& owner) {
  if (!out) return alloc_output<float>(n, owner);
  if (out->size() < n) throw nb::value_error("out buffer is too small");
  return out->data();
}
// The 2-D result: a new array owning the buffer, or None when it went to `out`.
nb::object float_result(const std::optional<F32Out>& out, float* buf, size_t rows, size_t cols, nb::capsule& owner) {
  if (out) return nb::none();
  return nb::cast(nb::ndarray<nb::numpy, float, nb::ndim<2>>(buf, {rows, cols}, owner));
}

using AnyArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;  // read-only views of a memory map are fine
using F32Matrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Vec = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using I64Vec = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using U8Array = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;

QType check_type(int t) {
  const TypeTraits* tr = find_traits(t);
  if (!tr) throw nb::value_error(("unsupported quant type (ggml enum " + std::to_string(t) + ")").c_str());
  return tr->type;
}

// x: 2-D float32 / float16, or uint16 holding bfloat16 bits when bf16=True.
Matrix as_matrix(const AnyArray& x, bool bf16) {
  if (x.ndim() != 2) throw nb::value_error("x must be a 2-D array (rows x n_per_row)");
  if (x.shape(0) == 0 || x.shape(1) == 0) throw nb::value_error("x is empty");
  const auto dt = x.dtype();
  DType d;
  if (dt == nb::dtype<float>()) d = DType::F32;
  else if (dt == nb::dtype<uint16_t>() && bf16) d = DType::BF16;
  else if (dt.code == (uint8_t)nb::dlpack::dtype_code::Float && dt.bits == 16 && !bf16) d = DType::F16;
  else throw nb::value_error("x must be float32, float16, or uint16 bfloat16 bits with bf16=True");
  return Matrix{x.data(), d, (int64_t)x.shape(0), (int64_t)x.shape(1)};
}

const float* check_imatrix(const std::optional<F32Vec>& im, int64_t n_per_row) {
  if (!im) return nullptr;
  if ((int64_t)im->shape(0) != n_per_row)
    throw nb::value_error(("imatrix has " + std::to_string(im->shape(0)) + " values, rows have " +
                           std::to_string(n_per_row)).c_str());
  const float* p = im->data();
  for (int64_t i = 0; i < n_per_row; ++i)
    if (!std::isfinite(p[i]) || p[i] < 0.0f) throw nb::value_error("imatrix values must be finite and >= 0");
  return p;
}

template <class F>
auto translate(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw nb::value_error(e.what());
  }
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "prism_native C++ core: bit-exact ggml block quantizers and the fused error kernel";

  m.def("cpu_features", [] {
    nb::dict d;
    const KernelTable& t = get_table("");
    d["active"] = std::string(t.isa);
    d["width"] = t.width;
    d["compiled"] = compiled_isas();
    d["usable"] = usable_isas();
    return d;
  }, "Kernels compiled into this build, those this CPU can run, and the active one ($PRISM_ISA overrides).");

  m.def("type_traits", [] {
    nb::list out;
    for (const auto& t : kTypeTraits) {
      nb::dict d;
      d["ggml_type"] = (int)t.type;
      d["name"] = t.name;
      d["block_size"] = t.block_size;
      d["type_size"] = t.type_size;
      d["requires_imatrix"] = t.requires_imatrix;
      nb::list f16;
      for (int off : t.f16_offsets)
        if (off >= 0) f16.append(off);
      d["f16_offsets"] = f16;
      d["implemented"] = get_table("").ops[type_index(t.type)].quantize != nullptr;
      out.append(d);
    }
    return out;
  }, "The native type-traits table (ggml enum, block size, bytes per block, fp16 scale offsets, implemented).");

  m.def("quantize", [](const AnyArray& x, int type, std::optional<F32Vec> imatrix, bool bf16, int nthreads,
                       const std::string& isa) {
    const QType qt = check_type(type);
    const Matrix mat = as_matrix(x, bf16);
    const float* im = check_imatrix(imatrix, mat.n_per_row);
    const TypeTraits& tr = kTypeTraits[type_index(qt)];
    if (mat.n_per_row % tr.block_size)
      throw nb::value_error(("row length " + std::to_string(mat.n_per_row) + " is not a multiple of " +
                             tr.name + "'s block size " + std::to_string(tr.block_size)).c_str());
    const size_t row_bytes = (size_t)(mat.n_per_row / tr.block_size) * tr.type_size;
    nb::capsule owner;
    uint8_t* buf = alloc_output<uint8_t>(row_bytes * mat.nrows, owner);
    translate([&] {
      const KernelTable& t = get_table(isa);
      nb::gil_scoped_release nogil;
      prism::quantize(t, qt, mat, im, buf, nthreads);
      return 0;
    });
    return nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>>(buf, {(size_t)mat.nrows, row_bytes}, owner);
  }, nb::arg("x"), nb::arg("type"), nb::arg("imatrix") = nb::none(), nb::arg("bf16") = false,
     nb::arg("nthreads") = 0, nb::arg("isa") = "");

  m.def("to_float32", [](const AnyArray& x, bool bf16, int nthreads, std::optional<F32Out> out) {
    const Matrix mat = as_matrix(x, bf16);
    nb::capsule owner;
    float* buf = float_output(out, (size_t)mat.nrows * mat.n_per_row, owner);
    {
      nb::gil_scoped_release nogil;
      prism::to_float32(get_table(""), mat, buf, nthreads);
    }
    return float_result(out, buf, (size_t)mat.nrows, (size_t)mat.n_per_row, owner);
  }, nb::arg("x"), nb::arg("bf16") = false, nb::arg("nthreads") = 0, nb::arg("out") = nb::none(),
     "Exact float32 copy of a 2-D float16 (or uint16 bfloat16 bits with bf16=True) array, in parallel;\n"
     "into the first elements of `out` (1-D float32, returns None) when given.");

  m.def("line_norms", [](const F32Matrix& x) {
    const size_t rows = x.shape(0), k = x.shape(1);
    nb::capsule row_owner, col_owner;
    double* row_sq = alloc_output<double>(rows, row_owner);
    double* col_sq = alloc_output<double>(k, col_owner);
    {
      nb::gil_scoped_release nogil;
      prism::line_norms(x.data(), (int64_t)rows, (int64_t)k, row_sq, col_sq);
    }
    return nb::make_tuple(nb::ndarray<nb::numpy, double, nb::ndim<1>>(row_sq, {rows}, row_owner),
                          nb::ndarray<nb::numpy, double, nb::ndim<1>>(col_sq, {k}, col_owner));
  }, nb::arg("x"), "(row, column) squared L2 norms of a C-contiguous float32 matrix, in double.");

  m.def("dequantize", [](const U8Array& q, int type, int64_t nrows, int64_t n_per_row, int nthreads,
                         const std::string& isa, std::optional<F32Out> out) {
    const QType qt = check_type(type);
    const TypeTraits& tr = kTypeTraits[type_index(qt)];
    if (nrows <= 0 || n_per_row <= 0 || n_per_row % tr.block_size)
      throw nb::value_error("shape does not fit the type's block size");
    const size_t need = (size_t)nrows * (size_t)(n_per_row / tr.block_size) * tr.type_size;
    if (q.size() != need)
      throw nb::value_error(("expected " + std::to_string(need) + " bytes, got " + std::to_string(q.size())).c_str());
    nb::capsule owner;
    float* buf = float_output(out, (size_t)nrows * n_per_row, owner);
    translate([&] {
      const KernelTable& t = get_table(isa);
      nb::gil_scoped_release nogil;
      prism::dequantize(t, qt, q.data(), nrows, n_per_row, buf, nthreads);
      return 0;
    });
    return float_result(out, buf, (size_t)nrows, (size_t)n_per_row, owner);
  }, nb::arg("q"), nb::arg("type"), nb::arg("nrows"), nb::arg("n_per_row"), nb::arg("nthreads") = 0,
     nb::arg("isa") = "", nb::arg("out") = nb::none());

  m.def("quant_errors", [](const AnyArray& x, std::vector<int> types, std::optional<F32Vec> imatrix,
                           std::optional<I64Vec> rows, double delta, bool bf16, int nthreads,
                           const std::string& isa) {
    const Matrix mat = as_matrix(x, bf16);
    const float* im = check_imatrix(imatrix, mat.n_per_row);
    std::vector<QType> qts;
    for (int t : types) qts.push_back(check_type(t));
    const int64_t* rp = rows ? rows->data() : nullptr;
    const int64_t nsel = rows ? (int64_t)rows->shape(0) : 0;
    std::vector<ErrorStats> res = translate([&] {
      const KernelTable& t = get_table(isa);
      nb::gil_scoped_release nogil;
      return prism::quant_errors(t, qts, mat, rp, nsel, im, delta, nthreads);
    });
    nb::list out;
    for (const auto& s : res) out.append(nb::make_tuple(s.err, s.signal, s.near_boundary, s.counted));
    return out;
  }, nb::arg("x"), nb::arg("types"), nb::arg("imatrix") = nb::none(), nb::arg("rows") = nb::none(),
     nb::arg("delta") = 0.1, nb::arg("bf16") = false, nb::arg("nthreads") = 0, nb::arg("isa") = "",
     "Per type: (sum w(x-q)^2, sum w x^2, values near a bin boundary, values with a bin).");

  m.def("iq3_grid", [](int size) {
    if (size != 256 && size != 512) throw nb::value_error("IQ3 grids have 256 or 512 points");
    const Iq3Grid& g = size == 256 ? iq3xxs_search_grid() : iq3s_search_grid();
    return nb::make_tuple(g.code, g.map, g.neighbours);
  }, nb::arg("size"), "The IQ3 lattice search structures (tests): (point codes, code map, neighbour lists).");
}
