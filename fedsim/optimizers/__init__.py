"""Functional optimizers: ``init(weights) -> state``, ``next(state, weights, grad) -> (state, weights)``."""
from fedsim.optimizers.sgd import SGD

__all__ = ["SGD"]
