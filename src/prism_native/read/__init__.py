"""Read: GGUF models (single files and split sets), importance matrices, and tensor classes."""
