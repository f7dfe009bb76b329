"""Config schema of the model block: which model, chosen by ``name`` with its parameters.

Configuration only, no TensorFlow: ``fedsim run`` structures this block to
check a config (``fedsim.experiment.early``) before TensorFlow starts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Optional

import attrs

from fedsim.experiment.block import Block
from fedsim.experiment.validators import FieldError, import_path, positive, positive_list


def from_folder(path: Optional[str], folder: Path) -> Optional[str]:
    """``path`` read from ``folder`` unless it is absolute; None stays None.

    Pure path arithmetic, no file system call: a config loads whatever its
    paths hold, and the build names a file that is not there.
    """
    if path is None or Path(path).is_absolute():
        return path
    return str(folder / path)


def _optional_positive_list(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        positive_list(instance, attribute, value)


@attrs.frozen
class ModelBlock(Block):
    """A model, with what every model takes.

    ``initial_weights``: a ``.npz`` of the model weights round 1 starts from
    (``fedsim.experiment.build_model.read_initial_weights`` says the format);
    a relative path is read from the config file's folder.
    """

    registry: ClassVar[dict[str, type]] = {}
    initial_weights: Optional[str] = attrs.field(default=None, kw_only=True)

    def relative_to(self, folder: Path) -> "ModelBlock":
        """This block with its relative paths read from ``folder`` (the config file's), made absolute."""
        return attrs.evolve(self, initial_weights=from_folder(self.initial_weights, folder))


@attrs.frozen
class LogisticRegression(ModelBlock):
    """Multinomial logistic regression: one dense layer to the classes."""

    name: str = "logreg"


@attrs.frozen
class MultiLayerPerceptron(ModelBlock):
    """Dense ReLU layers, then a dense layer to the classes."""

    name: str = "mlp"
    hidden: list[int] = attrs.field(factory=lambda: [200, 200], validator=positive_list)


@attrs.frozen
class FedAvgCnn(ModelBlock):
    """The CNN of McMahan et al. 2017 (two 5x5 conv + max-pool blocks, dense 512) for images.

    ``input_shape`` ``[height, width, channels]`` of one image; unset, it is
    the data's own when each example is an image (``[H, W, C]``, or ``[H, W]``
    read as one channel), and ``[s, s, 1]`` for a flat vector of ``s * s``
    values (LEAF's 784 floats -> 28x28x1). Flat data stays flat: a Reshape
    layer inside the model makes the images.
    """

    name: str = "cnn"
    input_shape: Optional[list[int]] = attrs.field(default=None, validator=_optional_positive_list)


@attrs.frozen
class CharLstm(ModelBlock):
    """The Shakespeare next-character model: embedding, two LSTMs, logits per step."""

    name: str = "char_lstm"
    embedding_dim: int = attrs.field(default=8, validator=positive)
    units: int = attrs.field(default=256, validator=positive)


def _finite_numbers(path: str, value: Any) -> None:
    """NaN or Inf in a custom model's params is refused: no model size or rate is meant to be one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(path, f"must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_numbers(f"{path}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite_numbers(f"{path}[{index}]", item)


@attrs.frozen
class CustomModel(ModelBlock):
    """Your own model: ``function(**params)`` returns a fedsim model or ``(keras_model, loss)``.

    The module of ``function`` (``module:function``) is looked up in
    ``module_dir``, then the working directory, then ``sys.path``. Unset,
    ``module_dir`` is the config file's folder (``load_config`` writes it in,
    so the run directory's config finds the module again on resume).
    """

    name: str = "custom"
    function: str = attrs.field(kw_only=True, validator=import_path)
    params: dict[str, Any] = attrs.field(factory=dict, validator=lambda i, a, v: _finite_numbers(a.name, v))
    module_dir: Optional[str] = None

    def relative_to(self, folder: Path) -> "CustomModel":
        module_dir = from_folder(self.module_dir, folder) if self.module_dir is not None else str(folder)
        # ModelBlock's method by name: attrs rebuilds slotted classes, so zero-argument super() is avoided.
        return attrs.evolve(ModelBlock.relative_to(self, folder), module_dir=module_dir)


ModelBlock.registry = {
    "logreg": LogisticRegression,
    "mlp": MultiLayerPerceptron,
    "cnn": FedAvgCnn,
    "char_lstm": CharLstm,
    "custom": CustomModel,
}
