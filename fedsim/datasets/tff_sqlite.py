"""TFF's simulation data sets: their SQLite files, cache and download.

TFF publishes each data set as one LZMA-compressed SQLite file (e.g.
``emnist_all.sqlite.lzma``) under ``TFF_DATASETS_URL``. A loader looks in its
cache directory for the decompressed ``.sqlite`` file, then for the
compressed one (decompressing it), then downloads it; when that fails it
raises ``DatasetNotFoundError`` saying which file to place where.
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

from fedsim.data import ClientData, DatasetNotFoundError, read_sql_client_data

TFF_DATASETS_URL = "https://storage.googleapis.com/tff-datasets-public/"
DEFAULT_CACHE_DIR = "~/.cache/fedsim/datasets"
_CHUNK_BYTES = 1 << 20


def load_splits(
    file_name: str,
    split_names: Sequence[str],
    features: Mapping[str, tf.TensorSpec],
    cache_dir: str | os.PathLike | None,
    download: bool,
) -> tuple[ClientData, ...]:
    """One population per split of TFF's ``file_name``, parsed into ``features``."""
    path = sqlite_path(file_name, cache_dir, download)
    return tuple(read_sql_client_data(path, split_name, features) for split_name in split_names)


def sqlite_path(
    file_name: str, cache_dir: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """The decompressed SQLite file for ``file_name`` (``*.sqlite.lzma``), fetched if needed."""
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    target = cache / file_name.removesuffix(".lzma")
    compressed = cache / file_name
    if target.is_file():
        return target
    if compressed.is_file():
        with compressed.open("rb") as source:
            _decompress_to(source, target)
        return target
    url = TFF_DATASETS_URL + file_name
    if not download:
        raise DatasetNotFoundError(
            _missing_message(target, compressed, url, "downloads are disabled")
        )
    try:
        fetch_lzma(url, target)
    except OSError as error:  # urllib.error.URLError is an OSError
        raise DatasetNotFoundError(
            _missing_message(target, compressed, url, f"download failed: {error}")
        ) from error
    return target


def fetch_lzma(url: str, target: Path) -> None:
    """Downloads the LZMA file at ``url`` and writes it decompressed to ``target``."""
    with urllib.request.urlopen(url) as response:
        _decompress_to(response, target)


def _decompress_to(source: BinaryIO, target: Path) -> None:
    # Stream through a temporary file so an interrupted copy never looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as sink, lzma.LZMAFile(source) as decompressed:
            shutil.copyfileobj(decompressed, sink, _CHUNK_BYTES)
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
