"""The GGUF format: constants, the validating reader's layout and the writer's serialisation (nothing above)."""
