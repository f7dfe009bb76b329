"""``ModelWeights``: the trainable and non-trainable weights of a model, as a frozen value."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import attrs
import numpy as np


def _to_arrays(values: Iterable[Any]) -> tuple[np.ndarray, ...]:
    return tuple(np.array(_read(v), copy=True) for v in values)


def _read(variable: Any) -> Any:
    # tf.Variable, keras.Variable and tensors all convert through .numpy().
    return variable.numpy() if hasattr(variable, "numpy") else variable


class WeightsMismatchError(ValueError):
    """Raised when model weights do not fit a model or each other (array count or shape).

    Dtypes are not an error: values are cast to the target's dtype, as
    ``tf.Variable.assign`` does, and arithmetic keeps the left operand's dtype.
    """


@attrs.frozen
class ModelWeights:
    """The model weights the server holds: ``trainable`` and ``non_trainable`` arrays.

    Arrays are NumPy copies in the model's variable order. The value is frozen;
    arithmetic helpers return new values.
    """

    trainable: tuple[np.ndarray, ...] = attrs.field(converter=_to_arrays)
    non_trainable: tuple[np.ndarray, ...] = attrs.field(converter=_to_arrays, factory=tuple)

    @classmethod
    def from_model(cls, model: Any) -> "ModelWeights":
        """Reads the weights of a fedsim model (either interface) or a Keras model."""
        return cls(model.trainable_variables, model.non_trainable_variables)

    def assign_weights_to(self, model: Any) -> None:
        """Writes these weights into a fedsim model or a Keras model's variables."""
        for kind, values, variables in (
            ("trainable", self.trainable, list(model.trainable_variables)),
            ("non_trainable", self.non_trainable, list(model.non_trainable_variables)),
        ):
            _check_fits(kind, values, variables)
            for variable, value in zip(variables, values):
                variable.assign(value)

    def fitted_to(self, model: Any) -> "ModelWeights":
        """These weights checked against ``model``'s variables (count and shapes) and cast to their dtypes.

        Raises:
          WeightsMismatchError: naming the first variable that does not fit.
        """
        parts = []
        for kind, values, variables in (
            ("trainable", self.trainable, list(model.trainable_variables)),
            ("non_trainable", self.non_trainable, list(model.non_trainable_variables)),
        ):
            _check_fits(kind, values, variables)
            parts.append([np.asarray(v, dtype=np.dtype(_dtype_name(t))) for v, t in zip(values, variables)])
        return ModelWeights(*parts)

    def numpy(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(trainable, non_trainable)`` as lists of NumPy arrays (copies)."""
        return [a.copy() for a in self.trainable], [a.copy() for a in self.non_trainable]

    def with_trainable(self, trainable: Sequence[np.ndarray]) -> "ModelWeights":
        """A copy with new trainable arrays (same count and shapes)."""
        _check_fits("trainable", trainable, self.trainable)
        return ModelWeights(
            [np.asarray(t, dtype=r.dtype) for t, r in zip(trainable, self.trainable)],
            self.non_trainable,
        )

    def with_non_trainable(self, non_trainable: Sequence[np.ndarray]) -> "ModelWeights":
        """A copy with new non-trainable arrays (same count and shapes)."""
        _check_fits("non_trainable", non_trainable, self.non_trainable)
        return ModelWeights(
            self.trainable,
            [np.asarray(t, dtype=r.dtype) for t, r in zip(non_trainable, self.non_trainable)],
        )

    def __add__(self, other: "ModelWeights") -> "ModelWeights":
        return self._combine(other, np.add)

    def __sub__(self, other: "ModelWeights") -> "ModelWeights":
        return self._combine(other, np.subtract)

    def scale(self, factor: float) -> "ModelWeights":
        """Every array multiplied by ``factor`` (dtypes kept)."""
        return ModelWeights(
            [(a * factor).astype(a.dtype) for a in self.trainable],
            [(a * factor).astype(a.dtype) for a in self.non_trainable],
        )

    def _combine(self, other: "ModelWeights", op) -> "ModelWeights":
        if not isinstance(other, ModelWeights):
            return NotImplemented
        _check_fits("trainable", other.trainable, self.trainable)
        _check_fits("non_trainable", other.non_trainable, self.non_trainable)
        return ModelWeights(
            [op(a, b).astype(a.dtype) for a, b in zip(self.trainable, other.trainable)],
            [op(a, b).astype(a.dtype) for a, b in zip(self.non_trainable, other.non_trainable)],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelWeights):
            return NotImplemented
        pairs = list(zip(self.trainable, other.trainable)) + list(
            zip(self.non_trainable, other.non_trainable)
        )
        return (
            len(self.trainable) == len(other.trainable)
            and len(self.non_trainable) == len(other.non_trainable)
            and all(a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)
        )

    __hash__ = None  # arrays are mutable underneath; a value equal by content is not hashable


def _dtype_name(variable: Any) -> str:
    dtype = variable.dtype
    return getattr(dtype, "name", None) or str(dtype)


def _check_fits(kind: str, values: Sequence[Any], targets: Sequence[Any]) -> None:
    if len(values) != len(targets):
        raise WeightsMismatchError(
            f"{len(values)} {kind} arrays do not fit a model with {len(targets)} {kind} variables; "
            "were these weights saved from a different model architecture?"
        )
    for index, (value, target) in enumerate(zip(values, targets)):
        if tuple(np.shape(value)) != tuple(target.shape):
            name = getattr(target, "path", None) or getattr(target, "name", f"#{index}")
            raise WeightsMismatchError(
                f"{kind} variable {index} ({name}) has shape {tuple(target.shape)}, "
                f"but the weights give shape {tuple(np.shape(value))}"
            )
