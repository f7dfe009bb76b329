"""TFF's simulation data sets: their SQLite files, cache and download.

TFF publishes each data set as one LZMA-compressed SQLite file (e.g.
``emnist_all.sqlite.lzma``) under ``TFF_DATASETS_URL``. A loader looks in its
cache directory for the decompressed ``.sqlite`` file, then for the
compressed one (decompressing it), then downloads it; when that fails it
raises ``DatasetNotFoundError`` saying which file to place where.

A ``.sqlite`` file appears in the cache only once it has been decompressed
whole and opens as TFF's SQLite format (it is written under a temporary name
and renamed), so a damaged ``.lzma`` or an interrupted download never leaves
a cache that blocks a good file; a damaged file found in the cache is a
``DamagedCacheError`` naming it.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

import tensorflow as tf

from fedsim.data import ClientData, ClientDataError, DatasetNotFoundError, read_sql_client_data
from fedsim.data.sql import SqliteFileError, check_sqlite_file
from fedsim.datasets.cache_files import DEFAULT_CACHE_DIR

TFF_DATASETS_URL = "https://storage.googleapis.com/tff-datasets-public/"
_CHUNK_BYTES = 1 << 20


class DamagedCacheError(ClientDataError):
    """A cached data set file (``.lzma`` or ``.sqlite``) that is truncated or not what it should be."""


def load_splits(
    file_name: str,
    split_names: Sequence[str],
    features: Mapping[str, tf.TensorSpec],
    cache_dir: str | os.PathLike | None,
    download: bool,
) -> tuple[ClientData, ...]:
    """One population per split of TFF's ``file_name``, parsed into ``features``."""
    path = sqlite_path(file_name, cache_dir, download)
    try:
        return tuple(read_sql_client_data(path, split_name, features) for split_name in split_names)
    except SqliteFileError as error:
        # Left from another tool or an older fedsim: this cache's own writes are checked before the rename.
        raise DamagedCacheError(
            f"{path} in the data set cache is damaged ({error.reason}); delete it: fedsim then decompresses "
            f"{file_name} from the same folder again, or downloads it when downloads are enabled"
        ) from None


def sqlite_path(
    file_name: str, cache_dir: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """The decompressed SQLite file for ``file_name`` (``*.sqlite.lzma``), fetched if needed."""
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    target = cache / file_name.removesuffix(".lzma")
    compressed = cache / file_name
    url = TFF_DATASETS_URL + file_name
    if target.is_file():
        return target
    if compressed.is_file():
        fix = f"delete it, then place a good copy of {url} there or enable downloads"
        with compressed.open("rb") as source:
            _decompress_to(source, target, str(compressed), fix, sqlite=True)
        return target
    if not download:
        raise DatasetNotFoundError(
            _missing_message(target, compressed, url, "downloads are disabled")
        )
    try:
        fetch_lzma(url, target, sqlite=True)
    except OSError as error:  # urllib.error.URLError is an OSError
        raise DatasetNotFoundError(
            _missing_message(target, compressed, url, f"download failed: {error}")
        ) from error
    return target


def fetch_lzma(url: str, target: Path, *, sqlite: bool = False) -> None:
    """Downloads the LZMA file at ``url`` and writes it decompressed to ``target``.

    With ``sqlite``, what it decompresses to must open as TFF's SQLite format.
    """
    with urllib.request.urlopen(url) as response:
        _decompress_to(response, target, f"the download of {url}", "try again", sqlite)


def _decompress_to(source: BinaryIO, target: Path, origin: str, fix: str, sqlite: bool) -> None:
    """Decompresses ``source`` to ``target``, renamed into place only once whole (and, with
    ``sqlite``, readable as TFF's SQLite format).

    Raises ``DamagedCacheError`` naming ``origin`` and saying ``fix`` otherwise.
    """
    # Stream through a temporary file so an interrupted or bad copy never looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(suffix=".partial", dir=target.parent)
    try:
        try:
            with os.fdopen(descriptor, "wb") as sink, lzma.LZMAFile(source) as decompressed:
                shutil.copyfileobj(decompressed, sink, _CHUNK_BYTES)
        except (lzma.LZMAError, EOFError) as error:  # EOFError: the stream ends early (truncated)
            raise DamagedCacheError(
                f"{origin} is not a complete LZMA file ({error}); {fix}"
            ) from None
        if sqlite:
            try:
                check_sqlite_file(temporary)
            except SqliteFileError as error:
                raise DamagedCacheError(
                    f"{origin} decompresses to a file that is not TFF's SQLite database ({error.reason}); {fix}"
                ) from None
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _missing_message(target: Path, compressed: Path, url: str, reason: str) -> str:
    return (
        f"{target.name} is not in the cache ({reason}). Download {url} and either place it, "
        f"compressed, at {compressed} or decompress it (e.g. `xz -d {compressed.name}`) and place "
        f"the result at {target}; or pass cache_dir= to point at a directory that has it."
    )
