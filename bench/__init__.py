"""bench: benchmark and profile PyTorch training from YAML suites."""

__version__ = "0.1.0"
