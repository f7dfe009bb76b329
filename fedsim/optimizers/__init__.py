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

# The one registry of optimizer names; a config's optimizer table loads into these classes.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "yogi": Yogi, "adagrad": Adagrad}

# Learning-rate schedules by name, for a config's ``learning_rate = {name = ..., ...}``.
SCHEDULES = {
    "constant": Constant,
    "exponential_decay": ExponentialDecay,
    "inverse_sqrt_decay": InverseSqrtDecay,
    "warmup_then_decay": WarmupThenDecay,
}

__all__ = [
    "Adagrad",
    "Adam",
    "Constant",
    "ExponentialDecay",
    "InverseSqrtDecay",
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "WarmupThenDecay",
    "Yogi",
]
