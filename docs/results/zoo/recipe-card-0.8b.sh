# The PRISM-DQ card's Qwen3.5-0.8B recipe, verbatim (../shared/reference/prism-dq-card.md; "target 3.5 BPW").
# As written llama-quantize takes the first pattern that matches, unanchored: the two blk.N overrides
# come after ssm_beta= and ssm_out= and never apply (recipe-card-0.8b-meant.sh puts them first).
llama-quantize \
  --tensor-type "attn_gate=Q3_K" \
  --tensor-type "attn_k=Q3_K" \
  --tensor-type "attn_output=IQ4_XS" \
  --tensor-type "attn_q=Q3_K" \
  --tensor-type "attn_qkv=Q3_K" \
  --tensor-type "attn_v=Q4_K" \
  --tensor-type "ffn_down=Q3_K" \
  --tensor-type "ffn_gate=Q3_K" \
  --tensor-type "ffn_up=Q3_K" \
  --tensor-type "ssm_alpha=Q3_K" \
  --tensor-type "ssm_beta=IQ4_XS" \
  --tensor-type "ssm_out=IQ4_XS" \
  --tensor-type "token_embd=Q3_K" \
  --tensor-type "blk\.(4)\.ssm_beta=Q4_K" \
  --tensor-type "blk\.(18)\.ssm_out=Q4_K" \
  input.gguf output.gguf Q3_K
