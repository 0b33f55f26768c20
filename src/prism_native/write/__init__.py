"""Write: the quantized GGUF itself, laid out byte for byte as llama-quantize writes it, streamed one
tensor at a time to a temporary file that is renamed into place at the end."""
