# The PRISM-DQ card's Qwen3.5-0.8B recipe as its author meant it: the same rules, the single-tensor
# overrides first so that llama-quantize's first match applies them. blk.18 does not exist in an 8-layer
# model (the zoo's qwen35): there that rule still matches nothing.
llama-quantize \
  --tensor-type "blk\.(4)\.ssm_beta=Q4_K" \
  --tensor-type "blk\.(18)\.ssm_out=Q4_K" \
  --tensor-type "attn_gate=Q3_K" \
  --tensor-type "attn_k=Q3_K" \
  --tensor-type "attn_output=IQ4_XS" \
  --tensor-type "attn_qkv=Q3_K" \
  --tensor-type "attn_q=Q3_K" \
  --tensor-type "attn_v=Q4_K" \
  --tensor-type "ffn_down=Q3_K" \
  --tensor-type "ffn_gate=Q3_K" \
  --tensor-type "ffn_up=Q3_K" \
  --tensor-type "ssm_alpha=Q3_K" \
  --tensor-type "ssm_beta=IQ4_XS" \
  --tensor-type "ssm_out=IQ4_XS" \
  --tensor-type "token_embd=Q3_K" \
  input.gguf output.gguf Q3_K
