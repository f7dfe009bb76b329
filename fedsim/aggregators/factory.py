"""Builds an aggregator chain from a config list, outermost step first.

    build_aggregator([
        {"name": "zeroing", "norm_bound": 10},
        {"name": "clipping", "clip_norm": 1.0},
        {"name": "mean", "weighted": True},
    ])
    == Zeroing(Clipping(MeanAggregator(weighted=True), clip_norm=1.0), norm_bound=10)

Every step but the last must be a wrapper (it gets the rest of the chain as
``inner``); the last must be a rule that aggregates on its own. Pass ``seed``
to seed every random step that does not set its own seed; each step then
gets a different seed derived from ``(seed, position in the chain)``, so no
two steps share a random stream. Pass ``participation`` (the run's
``fedsim.privacy.Participation``) to bind it to the chain's privacy mechanism:
a config never states it, it is read from the sampler and the population.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

import attrs
import numpy as np

from fedsim.aggregators.attacks import ByzantineAttack
from fedsim.aggregators.base import Aggregator
from fedsim.aggregators.bulyan import Bulyan
from fedsim.aggregators.clipping import Clipping
from fedsim.aggregators.coordinatewise import CoordinateMedian, TrimmedMean
from fedsim.aggregators.distributed_dp import DistributedDP
from fedsim.aggregators.dp_fedavg import DPFedAvg
from fedsim.aggregators.dp_ftrl import DPFTRL
from fedsim.aggregators.geometric_median import GeometricMedian
from fedsim.aggregators.krum import Krum
from fedsim.aggregators.mean import MeanAggregator
from fedsim.aggregators.quantization import StochasticQuantization
from fedsim.aggregators.rotation import RandomRotation
from fedsim.aggregators.secure_aggregation import SecureAggregation
from fedsim.aggregators.sparsification import TopKSparsification
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.aggregators.zeroing import Zeroing
from fedsim.privacy import mechanism
from fedsim.privacy.accounting import AccountingError
from fedsim.privacy.participation import Participation, ParticipationError

RULES: dict[str, type] = {
    "mean": MeanAggregator,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
    "bulyan": Bulyan,
    "geometric_median": GeometricMedian,
    "dp_fedavg": DPFedAvg,
    "dp_ftrl": DPFTRL,
    "distributed_dp": DistributedDP,
    "secure_aggregation": SecureAggregation,
}
WRAPPERS: dict[str, type] = {
    "zeroing": Zeroing,
    "clipping": Clipping,
    "quantization": StochasticQuantization,
    "top_k": TopKSparsification,
    "random_rotation": RandomRotation,
    "byzantine_attack": ByzantineAttack,
}


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _step_class(name: Any, position: int, is_last: bool) -> type:
    """The class for step ``position``, checking it can sit there in the chain."""
    valid = sorted(RULES) + sorted(WRAPPERS)
    if not isinstance(name, str):
        raise AggregatorConfigError(
            f"step {position} needs a 'name' string, got {name!r}; valid names are {valid}"
        )
    if is_last and name in RULES:
        return RULES[name]
    if not is_last and name in WRAPPERS:
        return WRAPPERS[name]
    if name in RULES:
        raise AggregatorConfigError(
            f"step {position} {name!r} aggregates on its own, so it must be the last step; "
            f"only wrappers {sorted(WRAPPERS)} can come before another step"
        )
    if name in WRAPPERS:
        raise AggregatorConfigError(
            f"step {position} {name!r} wraps another aggregator, so it cannot be the last step; "
            f"end the chain with one of {sorted(RULES)}"
        )
    raise AggregatorConfigError(
        f"step {position} has unknown aggregator name {name!r}; "
        f"{_suggest(name, valid)}valid names are {valid}"
    )


def _check_parameters(name: str, cls: type, params: Mapping[str, Any], position: int) -> None:
    """Rejects unknown parameters and reports missing required ones by name."""
    # inner is the rest of the chain; participation is read from the run, never written in a config.
    fields = {f.name: f for f in attrs.fields(cls) if f.init and f.name not in ("inner", "participation")}
    for key in params:
        if key not in fields:
            raise AggregatorConfigError(
                f"step {position} {name!r} has no parameter {key!r}; "
                f"{_suggest(key, list(fields))}its parameters are {sorted(fields)}"
            )
    missing = [k for k, f in fields.items() if f.default is attrs.NOTHING and k not in params]
    if missing:
        raise AggregatorConfigError(f"step {position} {name!r} needs parameter(s) {missing}")


def build_aggregator(
    spec: Sequence[Mapping[str, Any]], seed: int | None = None, participation: Participation | None = None
) -> Aggregator:
    """Turns a config chain (outermost step first) into the composed aggregator."""
    if not spec:
        raise AggregatorConfigError(
            "empty aggregator spec; give at least one step, e.g. [{'name': 'mean'}]"
        )
    built: Aggregator | None = None
    for position in reversed(range(len(spec))):
        step = dict(spec[position])
        name = step.pop("name", None)
        cls = _step_class(name, position, is_last=built is None)
        _check_parameters(name, cls, step, position)
        if seed is not None and "seed" in attrs.fields_dict(cls) and "seed" not in step:
            step["seed"] = int(np.random.SeedSequence([seed, position]).generate_state(1)[0])
        try:
            built = cls(**step) if built is None else cls(built, **step)
        except (AggregatorConfigError, ParticipationError, AccountingError) as error:
            raise AggregatorConfigError(f"step {position} {name!r}: {error}") from None
    try:
        mechanism.find(built)  # at most one privacy mechanism per chain
        return built if participation is None else mechanism.bind(built, participation)
    except (ParticipationError, AccountingError) as error:
        raise AggregatorConfigError(str(error)) from None
