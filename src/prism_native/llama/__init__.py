"""llama-quantize's rules, re-implemented: what it quantizes and to which type, how it matches --tensor-type
patterns, and the sizes it writes (running llama.cpp's binaries is tools/)."""
