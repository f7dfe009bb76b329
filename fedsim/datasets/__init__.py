"""Data sets: the embedded Synthetic(alpha, beta) and loaders for real federated data sets."""
from fedsim.datasets.synthetic import generate_synthetic, load_synthetic

__all__ = ["generate_synthetic", "load_synthetic"]
