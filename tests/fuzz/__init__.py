"""prism_native's own seeded GGUF mutation fuzzer (see campaign.py; run: python -m tests.fuzz)."""
