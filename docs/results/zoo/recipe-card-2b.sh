# The PRISM-DQ card's Qwen3.5-2B recipe, verbatim (../shared/reference/prism-dq-card.md; "target 3.5 BPW").
# As written llama-quantize takes the first pattern that matches, unanchored: attn_q=Q4_K also matches
# attn_qkv, so attn_qkv=Q3_K never applies (recipe-card-2b-meant.sh puts it first).
llama-quantize \
  --tensor-type "attn_gate=Q3_K" \
  --tensor-type "attn_k=Q4_K" \
  --tensor-type "attn_output=Q4_K" \
  --tensor-type "attn_q=Q4_K" \
  --tensor-type "attn_qkv=Q3_K" \
  --tensor-type "attn_v=Q4_K" \
  --tensor-type "ffn_down=Q3_K" \
  --tensor-type "ffn_gate=Q3_K" \
  --tensor-type "ffn_up=Q3_K" \
  --tensor-type "ssm_alpha=Q4_K" \
  --tensor-type "ssm_beta=Q4_K" \
  --tensor-type "ssm_out=Q3_K" \
  --tensor-type "token_embd=Q3_K" \
  input.gguf output.gguf Q3_K
