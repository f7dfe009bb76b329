"""attrs validators for config blocks: the message names the field, the bad value and what is allowed."""
from __future__ import annotations

import re
from typing import Any


class FieldError(ValueError):
    """A bad field value; ``field`` lets the config loader put it on the key path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def positive(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not value > 0:
        raise FieldError(attribute.name, f"must be > 0, got {value!r}")


def non_negative(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not value >= 0:
        raise FieldError(attribute.name, f"must be >= 0, got {value!r}")


def fraction(instance: Any, attribute: Any, value: Any) -> None:
    if not 0 <= value < 1:
        raise FieldError(attribute.name, f"must be in [0, 1), got {value!r}")


def probability(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise FieldError(attribute.name, f"must be a probability in (0, 1], got {value!r}")


def positive_list(instance: Any, attribute: Any, value: Any) -> None:
    if not value or any(item <= 0 for item in value):
        raise FieldError(attribute.name, f"must be a non-empty list of positive integers, got {value!r}")


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def import_path(instance: Any, attribute: Any, value: Any) -> None:
    if not _IMPORT_PATH.match(value):
        raise FieldError(attribute.name, f"must look like 'package.module:function', got {value!r}")
