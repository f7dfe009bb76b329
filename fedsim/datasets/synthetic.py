"""Synthetic(alpha, beta): the federated data set of the FedProx paper.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020, section 5.1. Generated in NumPy and
deterministic from a seed; fedsim's embedded default data set (no download).

Device k has ``int(lognormal(4, 2)) + 50`` examples of 60 features and 10
classes: ``u_k ~ N(0, alpha)``; ``W_k`` (60x10) and ``b_k`` (10) have entries
``~ N(u_k, 1)``; ``B_k ~ N(0, beta)``; each entry of ``v_k ~ N(B_k, 1)``;
``x ~ N(v_k, Sigma)`` with ``Sigma_jj = j^-1.2``; ``y = argmax(softmax(W_k x + b_k))``.
``alpha`` controls how much the local models differ, ``beta`` how much the
local inputs differ. The IID variant shares one ``W, b ~ N(0, 1)`` and has ``v_k = 0``.
As in the paper's scripts, ``alpha`` and ``beta`` are standard deviations.
"""
from __future__ import annotations

import numpy as np

from fedsim.data import ClientData

NUM_FEATURES = 60
NUM_CLASSES = 10


def _check(alpha: float, beta: float, num_devices: int, test_fraction: float) -> None:
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha={alpha} and beta={beta} must be >= 0 (they are standard deviations)")
    if num_devices < 1:
        raise ValueError(f"num_devices={num_devices} must be >= 1")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in [0, 1)")


def generate_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    iid: bool = False,
    num_devices: int = 30,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-device ``(x, y)``: x float32 ``[n_k, 60]``, y int32 ``[n_k]``."""
    _check(alpha, beta, num_devices, 0.0)
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, num_devices).astype(np.int64) + 50
    sigma = np.power(np.arange(1, NUM_FEATURES + 1, dtype=np.float64), -1.2)
    if iid:
        shared_w = rng.normal(0, 1, (NUM_FEATURES, NUM_CLASSES))
        shared_b = rng.normal(0, 1, NUM_CLASSES)
    devices = []
    for size in sizes:
        if iid:
            w, b, v = shared_w, shared_b, np.zeros(NUM_FEATURES)
        else:
            u = rng.normal(0, alpha)
            w = rng.normal(u, 1, (NUM_FEATURES, NUM_CLASSES))
            b = rng.normal(u, 1, NUM_CLASSES)
            v = rng.normal(rng.normal(0, beta), 1, NUM_FEATURES)
        # Sigma is diagonal, so x = v + sqrt(Sigma) * standard normal.
        x = v + np.sqrt(sigma) * rng.standard_normal((int(size), NUM_FEATURES))
        y = np.argmax(x @ w + b, axis=1)  # softmax is monotone: argmax of the logits
        devices.append((x.astype(np.float32), y.astype(np.int32)))
    return devices


def load_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    iid: bool = False,
    num_devices: int = 30,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` populations, each device split ``1 - test_fraction`` / ``test_fraction``.

    Client ids are ``"0"`` ... ``"29"``; elements are ``(x, y)`` tuples.
    """
    _check(alpha, beta, num_devices, test_fraction)
    train, test = {}, {}
    for k, (x, y) in enumerate(generate_synthetic(alpha, beta, iid, num_devices, seed)):
        cut = len(y) - int(round(test_fraction * len(y)))
        train[str(k)] = (x[:cut], y[:cut])
        test[str(k)] = (x[cut:], y[cut:])
    return ClientData.from_tensor_slices(train), ClientData.from_tensor_slices(test)
