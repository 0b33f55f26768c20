// The kernel table of one ISA build (compiled once per ISA, see CMakeLists.txt).
#include "kernels.h"

#define PRISM_STR2(x) #x
#define PRISM_STR(x) PRISM_STR2(x)

namespace prism { namespace PRISM_NS {
const KernelTable& table() {
  static const KernelTable t = [] {
    KernelTable k;
    k.isa = PRISM_STR(PRISM_NS);
    k.width = W;
    k.weighted_sum_sq = &weighted_sum_sq;
    k.half_to_float = &half_to_float;
    register_k_quants(k);
    register_iq4(k);
    register_legacy(k);
    register_tq(k);
    register_fp4(k);
    register_iq3(k);
    register_iq2(k);
    register_iq1(k);
    return k;
  }();
  return t;
}
}}  // namespace prism::PRISM_NS
