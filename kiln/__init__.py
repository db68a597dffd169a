"""kiln: config-driven PyTorch training with exact resume and clear errors."""

__version__ = "0.1.0"
