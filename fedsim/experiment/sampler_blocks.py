"""Config schema of the sampler block: which clients take part in each round.

Configuration only: the samplers themselves (``fedsim.simulation.sampling``)
are imported when a block builds one, so the schema loads without TensorFlow
(``fedsim.experiment.early`` checks a config with it before TensorFlow starts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import attrs

from fedsim.experiment.block import Block
from fedsim.experiment.model_blocks import from_folder
from fedsim.experiment.validators import positive, probability


def _sampling():
    from fedsim.simulation import sampling

    return sampling


class SamplerBlock(Block):
    """Which clients take part in each round. ``build(seed, client_ids)`` makes the sampler;
    ``client_ids`` (the train population's, in order) is for samplers that name clients."""

    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "uniform"

    def relative_to(self, folder: Path) -> "SamplerBlock":
        """This block with its relative paths read from ``folder`` (the config file's), made absolute."""
        return self


@attrs.frozen
class UniformSamplerConfig(SamplerBlock):
    """``cohort_size`` distinct clients per round, uniformly at random (fixed-size cohorts)."""

    name: str = "uniform"
    cohort_size: int = attrs.field(default=10, validator=positive)

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return _sampling().UniformSampler(self.cohort_size, seed=seed)


@attrs.frozen
class PoissonSamplerConfig(SamplerBlock):
    """Each client independently with probability ``rate`` per round (cohorts of varying size)."""

    name: str = "poisson"
    rate: float = attrs.field(default=0.1, validator=probability)

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return _sampling().PoissonSampler(self.rate, seed=seed)


@attrs.frozen
class RoundRobinSamplerConfig(SamplerBlock):
    """``cohort_size`` clients per round walking one fixed order (a seeded permutation, or population order)."""

    name: str = "round_robin"
    cohort_size: int = attrs.field(default=10, validator=positive)
    shuffle: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return _sampling().RoundRobinSampler(self.cohort_size, seed=seed, shuffle=self.shuffle)


@attrs.frozen
class ScheduleSamplerConfig(SamplerBlock):
    """Round ``r``'s cohort is the ``r``-th entry of the file at ``path`` (a fixed protocol, no draws).

    ``.json``: a list with one list of client ids per round (ids as the
    population names them; a number n means the id ``"n"``); ``.npy``: a 2-D
    integer array, one row of population positions per round. A relative
    ``path`` is read from the config file's folder. See ``fedsim.simulation.sampling.ScheduleSampler``.
    """

    name: str = "schedule"
    path: str = attrs.field(kw_only=True)

    def relative_to(self, folder: Path) -> "ScheduleSamplerConfig":
        return attrs.evolve(self, path=from_folder(self.path, folder))

    def build(self, seed: int, client_ids: Any = None) -> Any:
        if client_ids is None:
            raise TypeError("the schedule sampler maps client ids to positions: build(seed, client_ids)")
        return _sampling().ScheduleSampler.from_file(self.path, client_ids)


SamplerBlock.registry = {
    "uniform": UniformSamplerConfig, "poisson": PoissonSamplerConfig, "round_robin": RoundRobinSamplerConfig,
    "schedule": ScheduleSamplerConfig,
}
