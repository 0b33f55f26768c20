# The PRISM-DQ card's Qwen3.5-2B recipe as its author meant it: attn_qkv=Q3_K before attn_q=Q4_K, whose
# unanchored pattern would otherwise claim attn_qkv first.
llama-quantize \
  --tensor-type "attn_gate=Q3_K" \
  --tensor-type "attn_k=Q4_K" \
  --tensor-type "attn_output=Q4_K" \
  --tensor-type "attn_qkv=Q3_K" \
  --tensor-type "attn_q=Q4_K" \
  --tensor-type "attn_v=Q4_K" \
  --tensor-type "ffn_down=Q3_K" \
  --tensor-type "ffn_gate=Q3_K" \
  --tensor-type "ffn_up=Q3_K" \
  --tensor-type "ssm_alpha=Q4_K" \
  --tensor-type "ssm_beta=Q4_K" \
  --tensor-type "ssm_out=Q3_K" \
  --tensor-type "token_embd=Q3_K" \
  input.gguf output.gguf Q3_K
