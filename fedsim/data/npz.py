"""Reading a ``.npz`` archive the user wrote: never through pickle, every kind of damage named."""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from fedsim.data.errors import ClientDataError


class NpzError(ClientDataError):
    """A ``.npz`` that cannot be read as arrays: empty, truncated, a bad CRC, a ``.npy``,
    members that are not ``.npy``, or object arrays (which only pickle reads).

    ``reason`` says what is wrong without the path or the fix, for callers
    that name the file and say how to write it.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every member of the archive at ``path``, by name, read at once.

    Raises ``NpzError`` for a file NumPy cannot read as an archive of arrays.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # ValueError: not a NumPy file at all (np.load takes anything else for a pickle, refused).
        raise NpzError(path, f"not a readable .npz archive: empty, truncated or another format ({error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise NpzError(path, "a single array (a .npy file), not a .npz archive of named arrays")
    with loaded as npz:
        return {name: _member(npz, name, path) for name in npz.files}


def _member(npz: np.lib.npyio.NpzFile, name: str, path: str | os.PathLike) -> np.ndarray:
    try:
        value = npz[name]
    except ValueError as error:  # object arrays: NumPy would need pickle, which can run code
        raise NpzError(path, f"array {name!r} holds Python objects ({error}): only pickle reads those, and "
                             "fedsim never unpickles data files, so save numeric arrays") from None
    # A bad CRC or a cut member (BadZipFile, zlib.error, EOFError), an encrypted one (RuntimeError),
    # an unknown compression method (NotImplementedError).
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
        raise NpzError(path, f"array {name!r} is damaged ({error})") from None
    if not isinstance(value, np.ndarray):  # NumPy hands back the raw bytes of a member that is not .npy
        raise NpzError(path, f"member {name!r} is not a .npy array")
    return value
