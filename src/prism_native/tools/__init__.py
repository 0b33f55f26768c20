"""llama.cpp's binaries, found and run: llama-quantize's log, llama-perplexity's measurements."""
