"""llama.cpp's behaviour, re-implemented: what llama-quantize quantizes and to which type, how it
matches --tensor-type patterns, the sizes it writes, and running its tools."""
