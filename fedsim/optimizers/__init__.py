"""Functional optimizers: ``init(weights) -> state``, ``next(state, weights, grad) -> (state, weights)``.

The same optimizer object runs on clients (tf tensors, inside the traced
local loop) and on the server (NumPy arrays). ``learning_rate`` is a float or
a schedule ``lr(round_num)``; see ``fedsim.optimizers.schedules`` for how the
round number reaches it (an int64 ``step`` counter in the state).
"""

from fedsim.optimizers.adaptive import Adagrad, Adam, Yogi
from fedsim.optimizers.schedules import (
    Constant,
    ExponentialDecay,
    InverseSqrtDecay,
    WarmupThenDecay,
)
from fedsim.optimizers.sgd import SGD

__all__ = [
    "Adagrad",
    "Adam",
    "Constant",
    "ExponentialDecay",
    "InverseSqrtDecay",
    "SGD",
    "WarmupThenDecay",
    "Yogi",
]
