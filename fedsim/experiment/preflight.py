"""Checks of a validated config that need no data loaded and no model built.

``fedsim run`` calls :func:`check_config` before it creates the run directory,
so a missing file, a cohort larger than the population or a custom model
module that does not exist is reported at once, not after the data set is read
and the model traced. Each check reads only what it must: file metadata, the
``users`` lists at the head of LEAF shards, the import system's search for a
module (which finds the module's file without running it).

A config names code it runs only through a custom model's ``model.function``
(issue 18): :func:`check_custom_module` refuses a function of any module
that is not the user's own (next to the config file or in the working
directory: not the standard library's ``os:system``, not an installed tool's
entry point, not fedsim's) unless the user allows it (``--allow-module``), and :func:`check_resume_trust` refuses to resume
a run directory that would import and call one without the user's consent
(``--trust``): a run directory may come from someone else.

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
from fedsim.experiment.config_source import ConfigError
from fedsim.experiment.custom_code import module_search_path  # the folders the build imports from


class PreflightError(ConfigError):
    """A config that validates but cannot run; found before any data is loaded."""


class CohortTooLargeError(PreflightError):
    """The sampler's ``cohort_size`` is larger than the population."""


class DataNotFoundError(PreflightError):
    """A data file or directory the config names does not exist."""


class CustomModuleNotFoundError(PreflightError):
    """The module of a custom model's ``module:function`` cannot be found."""


class UntrustedModuleError(PreflightError):
    """A custom model function the user has not allowed: a standard-library or built-in module's."""


class UntrustedRunError(UntrustedModuleError):
    """``fedsim resume`` of a run directory whose config calls a custom model function, without ``--trust``."""


class AllowModuleError(PreflightError):
    """An ``--allow-module`` value that is not a module name."""


def check_config(config: Any, allow_modules: Sequence[str] = ()) -> None:
    """Raises a ``PreflightError`` for the first problem of ``config`` found without loading data.

    A custom model's module must be allowed (:func:`check_custom_module`) and
    is looked up where the run will import it from
    (:func:`fedsim.experiment.custom_code.module_search_path`): the config
    file's folder (``model.module_dir``), the working directory, ``sys.path``.
    """
    _check_data_exists(config.data)
    population_size = known_population_size(config.data)
    if population_size is not None:
        check_population(config, population_size)
    check_custom_module(config.model, allow_modules)


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
    from fedsim.datasets import cache_files

    file_name = cache_files.EMNIST if isinstance(data, data_blocks.EmnistData) else cache_files.SHAKESPEARE
    cache = Path(data.cache_dir or cache_files.DEFAULT_CACHE_DIR).expanduser()
    decompressed = file_name.removesuffix(".lzma")
    if not ((cache / decompressed).is_file() or (cache / file_name).is_file()):
        raise DataNotFoundError(
            f"data.name={data.name!r}: neither {decompressed} nor {file_name} is in {str(cache)!r}; "
            "place one there, set data.cache_dir to the folder that has it, or set data.download = true"
        )


def check_custom_module(model: Any, allow_modules: Sequence[str] = ()) -> None:
    """Checks a custom ``model.function`` may run and can be found, importing nothing of it.

    Only modules the user brings may be called without asking: a module or
    package in the config file's folder (``model.module_dir``) or the working
    directory. Any other module needs its name, or a package above it, in
    ``allow_modules`` (``--allow-module``): the standard library and built-in
    modules (``os:system`` is a shell command), installed packages (a tool's
    entry point runs whatever its arguments say, e.g. ``pip``'s), and fedsim
    itself (``fedsim.cli:main`` would start another run with other flags).

    Raises:
      AllowModuleError: an ``allow_modules`` entry is not a module name.
      CustomModuleNotFoundError: no such module where the run imports from.
      UntrustedModuleError: the module is not the user's own, and not allowed.
    """
    allow_modules = _allowed_names(allow_modules)
    function = _custom_function(model)
    if function is None:
        return
    module_name = function.partition(":")[0]
    top = module_name.partition(".")[0]
    allowed = _is_allowed(module_name, allow_modules)
    # Named before any look-up: a standard module is refused even when a file of the user's shadows it.
    if _is_standard_library(module_name) and not allowed:
        raise UntrustedModuleError(
            f"model.function={function!r} calls into {module_name!r}, a module of Python's standard library "
            f"or a built-in one{_OWN_MODULES_ONLY} If you mean it, allow the module: --allow-module {module_name} "
            f"(in Python: allow_modules=[{module_name!r}]); a model module of your own that shares a standard "
            "module's name needs another name"
        )
    folders = module_search_path(getattr(model, "module_dir", None))
    importlib.invalidate_caches()  # a module written since the last import is seen
    with _on_sys_path(folders):
        try:
            # A top-level name is located without running anything (a dotted one would import its parents).
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        raise CustomModuleNotFoundError(
            f"model.function={function!r}: no module {top!r} in {[str(f) for f in folders]} "
            f"or on the Python path; put {module_name.replace('.', '/')}.py next to the config file "
            "or in the working directory, or install the package that provides it"
        )
    home = _home_of(spec)
    # The user's own: the module's file (or package folder) sits right in one of those folders.
    if allowed or (top != "fedsim" and home is not None and home.parent in folders):
        return
    where = "fedsim itself" if top == "fedsim" else f"an installed package ({home or 'built in'})"
    raise UntrustedModuleError(
        f"model.function={function!r} calls into {module_name!r}, {where}, not a module of yours next to the "
        f"config file or in the working directory ({[str(f) for f in folders]}){_OWN_MODULES_ONLY} If you mean "
        f"it, allow the package: --allow-module {top} (in Python: allow_modules=[{top!r}])"
    )


_OWN_MODULES_ONLY = ("; a config calls, unasked, only model functions of modules you bring (next to the config "
                     "file or in the working directory), so that a config cannot run a shell command or delete "
                     "files by surprise.")


def _home_of(spec: Any) -> Optional[Path]:
    """The file or package folder a module spec was found at (None for a built-in or namespace-less module)."""
    locations = list(spec.submodule_search_locations or [])
    origin = locations[0] if locations else spec.origin
    if not origin or not os.path.isabs(origin):
        return None
    return Path(origin).resolve()


def check_resume_trust(model: Any, config_path: Path, trust: bool, allow_modules: Sequence[str] = ()) -> None:
    """Refuses to resume a run whose config calls a custom model function, unless trusted or allowed.

    ``config_path`` is the run directory's ``config.toml``. Resuming rebuilds
    the model from it, and a run directory may come from someone else: it
    must not import and run code without the user's consent. Called before
    anything in the directory changes.

    Raises:
      UntrustedRunError: naming the ``module:function`` and how to allow it.
    """
    function = _custom_function(model)
    if function is None or trust:
        return
    module_name = function.partition(":")[0]
    if _is_allowed(module_name, _allowed_names(allow_modules)):
        return
    folder = getattr(model, "module_dir", None)
    where = f" (looked up in {folder!r} first)" if folder else ""
    raise UntrustedRunError(
        f"{str(config_path)!r} names the custom model function {function!r}: resuming would import module "
        f"{module_name!r}{where} and call {function.partition(':')[2]!r}. A run directory may come from someone "
        "else, so resuming it runs no code without your consent: read that module, then resume with --trust "
        f"(or --allow-module {module_name}; in Python: resume_run(..., trust=True))"
    )


def _is_standard_library(module_name: str) -> bool:
    """Whether ``module_name``'s top-level package is the standard library's or built into the interpreter."""
    top = module_name.partition(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def _allowed_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` (``--allow-module`` values) checked to be dotted module names.

    Raises:
      AllowModuleError: naming the value that is not one.
    """
    if isinstance(names, str):  # one name where a list is expected would allow its letters
        raise AllowModuleError(f"allow_modules={names!r}: give a list of module names, e.g. [{names!r}]")
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise AllowModuleError(
                f"--allow-module {name!r}: give a module name, e.g. --allow-module os or --allow-module "
                "my_package.models (the part of model.function before ':')"
            )
    return tuple(names)


def _is_allowed(module_name: str, allow_modules: Sequence[str]) -> bool:
    # Allowing a package allows its submodules: --allow-module os covers os.path.
    return any(module_name == name or module_name.startswith(name + ".") for name in allow_modules)


def _custom_function(model: Any) -> Optional[str]:
    function = getattr(model, "function", None)
    return function if isinstance(function, str) and ":" in function else None


@contextlib.contextmanager
def _on_sys_path(folders: Sequence[Path]) -> Iterator[None]:
    """``folders`` ahead of ``sys.path`` while the block runs; ``sys.path`` is restored after."""
    saved = list(sys.path)
    sys.path[:0] = [str(f) for f in folders if str(f) not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved
