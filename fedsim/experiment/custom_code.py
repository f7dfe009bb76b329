"""Custom model functions: where a config's ``module:function`` is found, and importing it.

Which modules a config may name at all is :mod:`fedsim.experiment.preflight`'s
rule, checked before anything is imported. No TensorFlow here: those checks
run before it starts (:mod:`fedsim.experiment.early`).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import attrs


class ModelBuildError(ValueError):
    """A model block that cannot be built (e.g. a custom function that cannot be imported)."""


def module_search_path(config_dir: Optional[str | os.PathLike] = None) -> list[Path]:
    """The folders a custom model's module is looked up in before ``sys.path``, first first:
    the config file's folder (``config_dir``; a block's ``module_dir``), then the working directory."""
    folders = [Path(config_dir).expanduser().resolve()] if config_dir is not None else []
    cwd = Path.cwd().resolve()
    return folders + ([cwd] if cwd not in folders else [])


@contextlib.contextmanager
def _searching(folders: Sequence[str]) -> Iterator[None]:
    # Ahead of sys.path only while the user's code runs (its import, and each call,
    # which may import sibling modules lazily); the process's sys.path is left as it was.
    saved = list(sys.path)
    sys.path[:0] = [folder for folder in folders if folder not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved


def _imported(import_path: str, folders: Sequence[str]) -> Callable[..., Any]:
    module_name, _, attribute = import_path.partition(":")
    importlib.invalidate_caches()  # a module written since the interpreter last looked is seen
    with _searching(folders):
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ModelBuildError(
                f"model.function {import_path!r}: cannot import {module_name!r} ({error}); searched "
                f"{list(folders)} and sys.path: put {module_name.replace('.', '/')}.py next to the "
                "config file or in the working directory, or install the package that provides it"
            ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ModelBuildError(
            f"model.function {import_path!r}: {module_name!r} ({getattr(module, '__file__', '?')}) has no "
            f"function {attribute!r}"
        )
    return function


@attrs.frozen
class CustomFunction:
    """A custom model function, held by name and the folders its module is found in.

    Calling it imports the module (once per process: ``sys.modules`` keeps it)
    with those folders ahead of ``sys.path``. Held by name, it pickles as
    such, so a Ray actor, in another working directory, imports the module
    from the same absolute folders.
    """

    import_path: str
    folders: tuple[str, ...]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        function = _imported(self.import_path, self.folders)
        with _searching(self.folders):
            return function(*args, **kwargs)


def resolve_custom_function(import_path: str, config_dir: Optional[str | os.PathLike] = None) -> CustomFunction:
    """The function named by ``import_path`` (``"package.module:function"``), checked importable now.

    The module is looked up in :func:`module_search_path` ``(config_dir)``,
    then on ``sys.path``; the function runs with those folders on the path too.

    Raises:
      ModelBuildError: the module cannot be imported (naming the folders searched) or has no such function.
    """
    folders = tuple(str(folder) for folder in module_search_path(config_dir))
    _imported(import_path, folders)  # fails here, before any model is built
    return CustomFunction(import_path, folders)
