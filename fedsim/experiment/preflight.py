"""Checks of a validated config that need no data loaded and no model built.

``fedsim run`` calls :func:`check_config` before it creates the run directory,
so a missing file, a cohort larger than the population or a custom model
module that does not exist is reported at once, not after the data set is read
and the model traced. Each check reads only what it must: file metadata, the
``users`` lists at the head of LEAF shards, the import system's search for a
module (which finds the module's file without running it).

Problems that only the loaded data can show (e.g. the size of a population
read from a database) are checked by :func:`check_population` right after
loading, still before the first round.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from fedsim.experiment import data_blocks
from fedsim.experiment.config import ConfigError


class PreflightError(ConfigError):
    """A config that validates but cannot run; found before any data is loaded."""


class CohortTooLargeError(PreflightError):
    """The sampler's ``cohort_size`` is larger than the population."""


class DataNotFoundError(PreflightError):
    """A data file or directory the config names does not exist."""


class CustomModuleNotFoundError(PreflightError):
    """The module of a custom model's ``module:function`` cannot be found."""


def check_config(config: Any) -> None:
    """Raises a ``PreflightError`` for the first problem of ``config`` found without loading data.

    A custom model's module is looked up where the run will import it from
    (:func:`fedsim.experiment.build_model.module_search_path`): the config
    file's folder (``model.module_dir``), the working directory, ``sys.path``.
    """
    _check_data_exists(config.data)
    population_size = known_population_size(config.data)
    if population_size is not None:
        check_population(config, population_size)
    _check_custom_module(config.model)


def check_population(config: Any, population_size: int) -> None:
    """Raises ``CohortTooLargeError`` if the sampler draws more distinct clients than ``population_size``."""
    cohort_size = getattr(config.sampler, "cohort_size", None)
    if cohort_size is not None and cohort_size > population_size:
        raise CohortTooLargeError(
            f"sampler.cohort_size={cohort_size} is larger than the population of {population_size} "
            f"train clients ({_describe(config.data)}); set sampler.cohort_size to at most {population_size}"
        )


def known_population_size(data: data_blocks.DataBlock) -> Optional[int]:
    """The number of train clients, when the config alone (or a cheap look at LEAF shards) tells it."""
    if isinstance(data, data_blocks.SyntheticData):
        return data.num_devices
    if isinstance(data, data_blocks.ArraysData):
        return data.num_clients
    if isinstance(data, data_blocks.LeafData):
        from fedsim.data.leaf import count_leaf_users

        return count_leaf_users(data.train_dir)
    return None  # e.g. TFF's SQLite files: known once read


def _describe(data: data_blocks.DataBlock) -> str:
    if isinstance(data, data_blocks.SyntheticData):
        return "data.num_devices"
    if isinstance(data, data_blocks.ArraysData):
        return "data.num_clients"
    if isinstance(data, data_blocks.LeafData):
        return f"the users of data.train_dir {data.train_dir!r}"
    return f"data.name {data.name!r}"


def _check_data_exists(data: data_blocks.DataBlock) -> None:
    if isinstance(data, data_blocks.LeafData):
        for key in ("train_dir", "test_dir"):
            _check_leaf_split(key, getattr(data, key))
    elif isinstance(data, data_blocks.ArraysData):
        if not Path(data.path).expanduser().is_file():
            raise DataNotFoundError(
                f"data.path={data.path!r}: no such file (working directory {os.getcwd()!r}); "
                "give the path of a .npz with arrays 'x' and 'y'"
            )
    elif isinstance(data, (data_blocks.EmnistData, data_blocks.ShakespeareData)) and not data.download:
        _check_tff_cache(data)


def _check_leaf_split(key: str, path: str) -> None:
    split = Path(path).expanduser()
    if split.is_file():
        return
    if not split.is_dir():
        raise DataNotFoundError(
            f"data.{key}={path!r}: no such directory or file (working directory {os.getcwd()!r}); "
            "give LEAF's split directory, e.g. data/femnist/data/train, or one of its .json files"
        )
    if not any(split.glob("*.json")):
        raise DataNotFoundError(
            f"data.{key}={path!r} holds no *.json shard; run LEAF's preprocess.sh, or point to the "
            "directory it wrote them in (data/<dataset>/data/train or .../test)"
        )


def _check_tff_cache(data: Any) -> None:
    from fedsim.datasets import emnist, shakespeare
    from fedsim.datasets.tff_sqlite import DEFAULT_CACHE_DIR

    file_name = emnist.FILE_NAME if isinstance(data, data_blocks.EmnistData) else shakespeare.FILE_NAME
    cache = Path(data.cache_dir or DEFAULT_CACHE_DIR).expanduser()
    decompressed = file_name.removesuffix(".lzma")
    if not ((cache / decompressed).is_file() or (cache / file_name).is_file()):
        raise DataNotFoundError(
            f"data.name={data.name!r}: neither {decompressed} nor {file_name} is in {str(cache)!r}; "
            "place one there, set data.cache_dir to the folder that has it, or set data.download = true"
        )


def _check_custom_module(model: Any) -> None:
    function = getattr(model, "function", None)
    if not isinstance(function, str) or ":" not in function:
        return
    from fedsim.experiment.build_model import module_search_path  # the folders the build imports from

    module_name = function.partition(":")[0]
    folders = module_search_path(getattr(model, "module_dir", None))
    importlib.invalidate_caches()  # a module written since the last import is seen
    with _on_sys_path(folders):
        try:
            # find_spec locates the module's file without running it; a dotted name
            # imports its parent packages, as the model's own import will.
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        raise CustomModuleNotFoundError(
            f"model.function={function!r}: no module {module_name!r} in {[str(f) for f in folders]} "
            f"or on the Python path; put {module_name.replace('.', '/')}.py next to the config file "
            "or in the working directory, or install the package that provides it"
        )


@contextlib.contextmanager
def _on_sys_path(folders: Sequence[Path]) -> Iterator[None]:
    """``folders`` ahead of ``sys.path`` while the block runs; ``sys.path`` is restored after."""
    saved = list(sys.path)
    sys.path[:0] = [str(f) for f in folders if str(f) not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved
