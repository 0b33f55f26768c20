// Standalone driver for cross-architecture golden checks (tests/test_arm64_qemu.py): built together
// with the kernel translation units of ONE ISA (-DPRISM_W=.. -DPRISM_NS=..), no Python involved.
//
//   golden_driver NROWS N_PER_ROW X.bin IMATRIX.bin OUTDIR TYPE...
//
// X.bin: float32 NROWS x N_PER_ROW, IMATRIX.bin: float32 N_PER_ROW (raw, little endian). For every TYPE
// (ggml spelling, e.g. Q4_K) it writes OUTDIR/q__TYPE__{none,imat}.bin (ggml bytes) and
// OUTDIR/y__TYPE__{none,imat}.bin (their dequantization; no `none` case for the types ggml quantizes
// only with importance weights), and prints "ok TYPE", or "skip TYPE" when
// this build has no kernel for it. Exit status 2 on a usage or I/O error.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

namespace {

bool read_file(const std::string& path, void* dst, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t got = std::fread(dst, 1, bytes, f);
  const bool at_end = std::fgetc(f) == EOF;
  std::fclose(f);
  return got == bytes && at_end;
}

bool write_file(const std::string& path, const void* src, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(src, 1, bytes, f) == bytes;
  return std::fclose(f) == 0 && ok;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "golden_driver: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) return fail("usage: golden_driver NROWS N_PER_ROW X.bin IMATRIX.bin OUTDIR TYPE...");
  const long long nrows = std::atoll(argv[1]), n_per_row = std::atoll(argv[2]);
  if (nrows <= 0 || n_per_row <= 0) return fail("bad shape");
  std::vector<float> x((size_t)(nrows * n_per_row)), im((size_t)n_per_row);
  if (!read_file(argv[3], x.data(), x.size() * 4)) return fail(std::string("cannot read ") + argv[3]);
  if (!read_file(argv[4], im.data(), im.size() * 4)) return fail(std::string("cannot read ") + argv[4]);
  const std::string outdir = argv[5];
  const prism::KernelTable& table = prism::PRISM_NS::table();
  for (int a = 6; a < argc; ++a) {
    const prism::TypeTraits* tr = nullptr;
    for (const auto& t : prism::kTypeTraits)
      if (std::strcmp(t.name, argv[a]) == 0) tr = &t;
    if (!tr) return fail(std::string("unknown type ") + argv[a]);
    const prism::KernelOps& ops = table.ops[prism::type_index(tr->type)];
    if (!ops.quantize || n_per_row % tr->block_size) {
      std::printf("skip %s\n", tr->name);
      continue;
    }
    const long long nblocks = nrows * (n_per_row / tr->block_size);
    std::vector<uint8_t> q((size_t)(nblocks * tr->type_size));
    std::vector<float> y(x.size());
    for (const char* kase : {"none", "imat"}) {
      const bool with_im = std::strcmp(kase, "imat") == 0;
      if (!with_im && tr->requires_imatrix) continue;  // ggml_quantize_chunk refuses it: no case to compare
      ops.quantize(x.data(), q.data(), nrows, n_per_row, with_im ? im.data() : nullptr);
      ops.dequantize(q.data(), y.data(), nblocks);
      const std::string stem = std::string("__") + tr->name + "__" + kase + ".bin";
      if (!write_file(outdir + "/q" + stem, q.data(), q.size()) ||
          !write_file(outdir + "/y" + stem, y.data(), y.size() * 4))
        return fail("cannot write to " + outdir);
    }
    std::printf("ok %s\n", tr->name);
  }
  return 0;
}
