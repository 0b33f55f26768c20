// Non-linear 4-bit types: IQ4_NL and IQ4_XS (ggml-quants.c quantize_row_iq4_nl_impl).
#include "kernels.h"

namespace prism { namespace PRISM_NS {
void register_iq4(KernelTable& t) { (void)t; }
}}  // namespace prism::PRISM_NS
