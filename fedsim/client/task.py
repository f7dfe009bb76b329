"""The values that cross the client boundary: what local training does, what a client receives and returns.

- ``ClientTask``: the fixed recipe of local training for a whole run (the
  optimizer, the weighting, and the objective hooks an algorithm switches on).
- ``ClientInputs``: what the server sends one client beyond the model weights
  (its random seed, a gradient offset, a frozen optimizer state).
- ``ClientOutput``: what one client's training returns.
- ``ClientFailure``: what a client whose work raised yields instead.

Every executor takes the first two and yields one of the last two per
client, so the round treats every executor alike.
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import attrs
import numpy as np


@attrs.frozen
class ClientTask:
    """How every client of a run trains locally.

    Attributes:
      optimizer: a functional client optimizer (``init``/``next``); None: the
        model's own ``train_on_batch`` when it has one (its optimizer is in
        charge), else ``SGD(0.01)``. A model that trains itself refuses a
        client optimizer rather than ignore it (``ClientOptimizerError``).
      weighted: the update weight is the client's example count (True) or 1 (False).
      proximal_mu: adds ``mu/2 ||w - w_start||^2`` to the local objective (FedProx, FedDyn).
      freeze_optimizer_state: local steps use the optimizer state the server
        sends (``ClientInputs.optimizer_state``) and never update it (Mime).
      start_statistics: also report the mean loss over the client's examples and
        its gradient at the weights the client started from (Mime, q-FFL,
        SCAFFOLD option I), computed before training.
      gradient_offset: clients receive ``ClientInputs.gradient_offset`` (SCAFFOLD, FedDyn).
      forward_pass_gradients: local steps take gradients of ``forward_pass``
        with ``optimizer`` even on a model with its own ``train_on_batch``
        (FedSGD's gradient is the model's, not its optimizer's step).
    """

    optimizer: Any = None
    weighted: bool = True
    proximal_mu: float = attrs.field(default=0.0, converter=float)
    freeze_optimizer_state: bool = False
    start_statistics: bool = False
    gradient_offset: bool = False
    forward_pass_gradients: bool = False

    @proximal_mu.validator
    def _check_mu(self, attribute, value):
        if not value >= 0:
            raise ValueError(f"proximal_mu={value!r} must be >= 0 (0 turns the proximal term off)")


@attrs.frozen(eq=False)
class ClientInputs:
    """What the server sends one client beyond the model weights; None fields are unused.

    Attributes:
      gradient_offset: one array per trainable variable, added to every local
        gradient (SCAFFOLD's ``c - c_i``, FedDyn's linear term).
      optimizer_state: the local optimizer starts from this state instead of
        ``optimizer.init`` (frozen under ``ClientTask.freeze_optimizer_state``).
      seed: the client's seed for this round (``fedsim.client.seeds.client_seed``):
        the model's random generators (Dropout masks, noise) start from states
        derived from it; None: from their initial states.
      non_trainable: the client's own non-trainable weights, which it starts
        from instead of the server's (FedBN, ``fedsim.learning.non_trainable``).
    """

    gradient_offset: Optional[list[np.ndarray]] = None
    optimizer_state: Any = None
    seed: Optional[int] = None
    non_trainable: Optional[list[np.ndarray]] = None


NO_INPUTS = ClientInputs()


def update_weight(task: ClientTask, num_examples: int) -> float:
    """How much a client that trained on ``num_examples`` counts: the count, or 1 (0 with no examples)."""
    if task.weighted:
        return float(num_examples)
    return 1.0 if num_examples > 0 else 0.0


@attrs.frozen
class ClientOutput:
    """What one client sends back: its delta, how much it counts, and its unfinalized metrics.

    ``delta`` is trainable weights after local training minus before, one
    NumPy array per trainable variable. ``update_weight`` is the example count
    (weighted) or 1 (unweighted; 0 for a client with no examples, which must not count).
    ``start_loss`` and ``start_gradient`` are set when the task asks for start statistics.
    ``non_trainable`` holds the client's non-trainable weights after training (BatchNorm
    statistics), one array per non-trainable variable.
    """

    delta: list[np.ndarray]
    update_weight: float
    metrics: "collections.OrderedDict[str, Any]"
    num_examples: int
    num_steps: int = 0  # optimizer steps taken: FedNova and SCAFFOLD normalize by it
    start_loss: Optional[float] = None
    start_gradient: Optional[list[np.ndarray]] = None
    non_trainable: list[np.ndarray] = attrs.field(factory=list)


def brief(error: BaseException) -> str:
    """The error's own message, without TensorFlow's graph-execution boilerplate lines."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(noise)]
    return " ".join(kept) or type(error).__name__


class ClientFailure(RuntimeError):
    """A client's work failed: ``client_id``, the original ``error`` and the ``attempts`` made."""

    def __init__(self, client_id: Any, error: BaseException, attempts: int = 1):
        super().__init__(
            f"client {client_id!r} failed (attempt {attempts}): {type(error).__name__}: {brief(error)}"
        )
        self.client_id = client_id
        self.error = error
        self.attempts = attempts
