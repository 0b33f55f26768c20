// Legacy 32-value block types: Q8_0 (and Q4_0, Q4_1, Q5_0, Q5_1: llama-quantize's fallbacks).
// Follows ggml-quants.c: quantize_row_q8_0_ref (Q8_0 ignores the imatrix, as quantize_q8_0 does).
#include "kernels.h"

namespace prism { namespace PRISM_NS {
namespace {

inline void store_fp16(uint8_t* p, float v) { const uint16_t h = fp32_to_fp16(v); std::memcpy(p, &h, 2); }
inline float load_fp16(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return fp16_to_fp32(h); }

// roundf per lane (half away from zero): truncate, then step away from zero when |x - t| >= 0.5.
inline vi vroundf(vf x) {
  vi t = __builtin_convertvector(x, vi);
  const vf frac = vabs(x - tof(t));
  const vi away = frac >= splat(0.5f);
  return t + (away & sel(x < zerof(), splati(-1), splati(1)));
}

struct Q8_0 {
  static constexpr int BS = 32, BYTES = 34;
  static constexpr bool kRowSigma2 = false;
  static void quantize(const Group<BS>& g, bool /*imatrix ignored by ggml*/, uint8_t* const* out) {
    vf amax = zerof();
    for (int j = 0; j < BS; ++j) amax = vmax(amax, vabs(g.x[j]));
    const vf d = amax / splat(127.0f);
    const vf id = sel(d != zerof(), splat(1.0f) / d, zerof());
    for (int lane = 0; lane < W; ++lane) store_fp16(out[lane], d[lane]);
    for (int j = 0; j < BS; ++j) {
      const vi q = vroundf(g.x[j] * id);
      for (int lane = 0; lane < W; ++lane) out[lane][2 + j] = (uint8_t)(int8_t)q[lane];
    }
  }
  static void dequantize(const uint8_t* b, float* y) {
    const float d = load_fp16(b);
    for (int j = 0; j < BS; ++j) y[j] = (float)(int8_t)b[2 + j] * d;
  }
  static void steps(const uint8_t* b, const float* /*x*/, float* step) {
    const float d = load_fp16(b);
    for (int j = 0; j < BS; ++j) step[j] = d;
  }
};

}  // namespace

void register_legacy(KernelTable& t) {
  t.ops[type_index(QType::Q8_0)] = make_ops<Q8_0>();
}

}}  // namespace prism::PRISM_NS
