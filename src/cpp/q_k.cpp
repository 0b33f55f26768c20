// K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (ggml-quants.c quantize_row_qN_K_ref / quantize_row_qN_K_impl).
#include "kernels.h"

namespace prism { namespace PRISM_NS {
void register_k_quants(KernelTable& t) { (void)t; }
}}  // namespace prism::PRISM_NS
