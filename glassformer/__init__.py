"""glassformer — the Transformer family in one readable, fast, verified PyTorch codebase."""

__version__ = "0.1.0"
