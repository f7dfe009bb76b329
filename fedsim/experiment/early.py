"""A config file's early checks, before TensorFlow starts: files, sizes, custom modules.

Starting TensorFlow takes seconds; a config whose data file is missing, whose
cohort is larger than its population, or whose custom model module does not
exist should say so at once. This module reads the TOML (with ``--set``
overrides), structures only the blocks those checks read (data, model,
sampler: schemas that import no TensorFlow) and runs
:func:`fedsim.experiment.preflight.check_config` on them.

A problem in any other block, or one these blocks only show once fully
validated, is left to the full load (``fedsim.experiment.config.load_config``),
which reports every problem of the config at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import attrs
import cattrs

from fedsim.experiment import preflight
from fedsim.experiment.config_source import apply_overrides, read_toml
from fedsim.experiment.data_blocks import DataBlock, PartitionerBlock
from fedsim.experiment.model_blocks import ModelBlock
from fedsim.experiment.sampler_blocks import SamplerBlock, UniformSamplerConfig
from fedsim.experiment.structuring import base_converter

_EARLY_KEYS = ("data", "model", "sampler")


@attrs.frozen
class EarlyView:
    """The blocks of a config that its early checks read, with paths read from the config's folder."""

    data: DataBlock
    model: ModelBlock
    sampler: SamplerBlock = attrs.field(factory=UniformSamplerConfig)


_CONVERTER = base_converter((DataBlock, PartitionerBlock, ModelBlock, SamplerBlock))


def early_view(path: str | Path, overrides: Iterable[str] = ()) -> Optional[EarlyView]:
    """The data, model and sampler blocks of the config at ``path``; None if they do not validate.

    Raises ``ConfigError`` for a file that is not TOML or a malformed ``--set``,
    which no later step could read either.
    """
    raw = apply_overrides(read_toml(path), overrides)
    try:
        view = _CONVERTER.structure({key: raw[key] for key in _EARLY_KEYS if key in raw}, EarlyView)
    except (cattrs.BaseValidationError, TypeError, ValueError):
        return None  # reported by the full load, with the config's other problems
    folder = Path(path).resolve().parent
    return attrs.evolve(view, model=view.model.relative_to(folder), sampler=view.sampler.relative_to(folder))


def check_early(path: str | Path, overrides: Iterable[str] = (), allow_modules: Sequence[str] = ()) -> None:
    """Raises the first ``PreflightError`` (a ``ConfigError``) the config at ``path`` shows without TensorFlow.

    ``allow_modules``: as ``--allow-module`` (:func:`fedsim.experiment.preflight.check_custom_module`).
    """
    view = early_view(path, overrides)
    if view is not None:
        preflight.check_config(view, allow_modules)
