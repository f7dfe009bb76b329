"""Class labels read from files: whole numbers only."""

from __future__ import annotations

import numpy as np

from fedsim.data.errors import ClientDataError


class LabelError(ClientDataError):
    """A label that is not a whole number (a class index cannot be 0.5 or NaN)."""


def whole_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Float labels as int64 when every one is a whole number; other dtypes unchanged.

    Raises ``LabelError`` naming ``where`` and the first fractional or
    non-finite label; a cast would silently truncate 1.5 to class 1.
    """
    if labels.dtype.kind != "f":
        return labels
    fractional = ~np.isfinite(labels) | (labels != np.round(labels))
    if fractional.any():
        # Index into the flattened labels so multi-label ``y`` rows are named too.
        index = int(np.flatnonzero(fractional)[0])
        raise LabelError(
            f"{where}: label {float(labels.flat[index])} at position {index} of 'y' is not a whole number; "
            "labels must be integer class indices (0 .. num_classes-1): fix the file's 'y' values"
        )
    return labels.astype(np.int64)
