"""The package version (also in pyproject.toml), importable from below the package face."""
__version__ = "0.1.0"
