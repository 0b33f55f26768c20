# Qwen3.5 community recipe (AesSedai / msievers Qwen3.5-0.8B-GGUF cards): Q8_0 on the tensors
# reported as most sensitive, the rest the Q3_K_M mix
llama-quantize --tensor-type attn_gate=q8_0 --tensor-type attn_qkv=q8_0 --tensor-type ssm_out=q8_0 \
    in.gguf out.gguf Q3_K_M
