"""How a Keras model's outputs meet their losses, loss weights and metrics.

``from_keras_model`` takes them as Keras's ``compile`` does: one value for a
single output, lists for several unnamed outputs, dicts keyed by output name
for a model with named (dict) outputs. Each function here turns one of those
forms into per-output lists, or refuses it with a ``KerasModelError`` that
says what to give.
"""
from __future__ import annotations

import collections
from typing import Any

import keras


class KerasModelError(ValueError):
    """Raised when a Keras model, its losses or metrics cannot be wrapped."""


def normalize_losses(loss, loss_weights):
    if isinstance(loss, collections.abc.Mapping):
        raise KerasModelError(
            f"loss is a dict (keys {sorted(loss)}), but the model's outputs are not named: give one "
            "loss, or a list with one loss per output; or build the model with a dict of outputs"
        )
    losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    if not losses or not all(callable(fn) for fn in losses):
        raise KerasModelError(
            f"loss must be a callable (e.g. keras.losses.SparseCategoricalCrossentropy()) or a "
            f"list of them, one per output; got {loss!r}"
        )
    if loss_weights is None:
        weights = [1.0] * len(losses)
    else:
        weights = [float(w) for w in loss_weights]
        if len(weights) != len(losses):
            raise KerasModelError(
                f"loss_weights has {len(weights)} entries but there are {len(losses)} losses"
            )
    return losses, weights


def normalize_metrics(metrics, num_outputs):
    if isinstance(metrics, collections.abc.Mapping):
        raise KerasModelError(
            f"metrics is a dict (keys {sorted(metrics)}), but the model's outputs are not named: give "
            "a list of metrics, or one list per output; or build the model with a dict of outputs"
        )
    if not metrics:
        return [[] for _ in range(num_outputs)]
    per_output = metrics if isinstance(metrics[0], (list, tuple)) else [metrics]
    if len(per_output) != num_outputs:
        raise KerasModelError(
            f"give metrics as one list per output: {num_outputs} outputs, "
            f"{len(per_output)} metric lists"
        )
    for group in per_output:
        _check_metric_instances(group)
    return [list(group) for group in per_output]


def _check_metric_instances(metrics):
    for metric in metrics:
        if not isinstance(metric, keras.metrics.Metric):
            raise KerasModelError(
                f"metrics must be keras.metrics.Metric instances, got {metric!r}; "
                "e.g. keras.metrics.SparseCategoricalAccuracy()"
            )


def _by_output_name(argument: str, value: collections.abc.Mapping, names: list[str]) -> list[Any]:
    """``value``'s entries in the order of ``names``, ``None`` where it has none."""
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise KerasModelError(
            f"{argument} names {unknown}, which are not outputs of the model; its outputs are {names}"
        )
    return [value.get(name) for name in names]


def named_losses(loss, names):
    """One loss (or ``None``) per named output; a single loss applies to every output, as in Keras."""
    if callable(loss):
        return [loss] * len(names)
    if not isinstance(loss, collections.abc.Mapping):
        raise KerasModelError(
            f"the model's outputs are named {names}: give loss as a dict keyed by these names "
            f"(e.g. {{{names[0]!r}: keras.losses.MeanSquaredError()}}) or one loss for every output; "
            f"got {loss!r}"
        )
    losses = _by_output_name("loss", loss, names)
    if not any(fn is not None for fn in losses) or not all(fn is None or callable(fn) for fn in losses):
        raise KerasModelError(
            f"loss must map output names to Keras losses (callables), at least one; got {loss!r}"
        )
    return losses


def named_loss_weights(loss_weights, losses, names):
    """The weight of each named output's loss: 1 unless ``loss_weights`` (a dict) says otherwise."""
    if loss_weights is None:
        return [1.0] * len(names)
    if not isinstance(loss_weights, collections.abc.Mapping):
        raise KerasModelError(
            f"the model's outputs are named {names}: give loss_weights as a dict keyed by these names, "
            f"got {loss_weights!r}"
        )
    weights = _by_output_name("loss_weights", loss_weights, names)
    without_loss = [n for n, w, fn in zip(names, weights, losses) if w is not None and fn is None]
    if without_loss:
        raise KerasModelError(
            f"loss_weights weighs outputs {without_loss}, which have no loss; give them a loss"
        )
    return [1.0 if w is None else float(w) for w in weights]


def named_metrics(metrics, names):
    """The metrics of each named output, from a dict of metric or list of metrics per output name."""
    if not metrics:
        return [[] for _ in names]
    if not isinstance(metrics, collections.abc.Mapping):
        raise KerasModelError(
            f"the model's outputs are named {names}: give metrics as a dict keyed by these names "
            f"(e.g. {{{names[0]!r}: [keras.metrics.MeanAbsoluteError()]}}), got {metrics!r}"
        )
    per_output = [
        [] if group is None else list(group) if isinstance(group, (list, tuple)) else [group]
        for group in _by_output_name("metrics", metrics, names)
    ]
    for group in per_output:
        _check_metric_instances(group)
    return per_output


def check_named_labels(y_spec, names, losses, metrics_per_output):
    """The labels must be a dict with a spec for every output that has a loss or metrics."""
    needed = [n for n, fn, ms in zip(names, losses, metrics_per_output) if fn is not None or ms]
    keys = sorted(y_spec) if isinstance(y_spec, collections.abc.Mapping) else None
    if keys is None or set(needed) - set(keys) or set(keys) - set(names):
        raise KerasModelError(
            f"the model's outputs are named {names}: the labels in input_spec must be a dict with a "
            f"spec for each output with a loss or metrics ({needed}) and no other keys; got "
            f"{keys if keys is not None else y_spec!r}"
        )
