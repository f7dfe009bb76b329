"""Client datasets as picklable values, so Ray can ship them to actors (or have actors build them).

A client reaches an actor in one of two forms. A ``SourcedClient`` (from a
``ClientRecipe``: the population has a ``ClientSource``) is a few hundred bytes:
the client id and preparation steps, and a reference to the source the
executor put in the object store once; the actor builds the dataset itself.
Otherwise the driver exports the dataset's elements (``ExportedDataset``).

A ``tf.data.Dataset`` does not pickle. The executor receives each client's
dataset already prepared by the process (batched, repeated for local epochs,
shortened for a straggler), so the one description that is right for every
preparation is the prepared dataset's own elements: ``export_dataset`` reads
them once in the driver as NumPy arrays, and the actor rebuilds a dataset that
yields the same elements with the same ``element_spec``. Keeping the spec
matters: ``ClientWork`` traces once per element spec, and a rebuilt dataset whose
batch dimension became static (all batches full) would trace again.

Consecutive elements of equal shapes are stacked into one array, so a client of
``n`` full batches and one partial batch travels as two arrays, not ``n + 1``.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.sources import ClientRecipe


class UnsupportedDatasetError(TypeError):
    """Raised for a client dataset whose elements cannot be exported (ragged, sparse, ...)."""


@attrs.frozen
class ExportedDataset:
    """A client dataset's elements as NumPy arrays, plus the element spec to rebuild it with.

    ``runs`` holds one nest per run of consecutive equal-shaped elements, each
    array stacked along a new leading axis (one row per element).
    """

    element_spec: Any
    runs: tuple[Any, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of array data (what travels to the actor, less pickling overhead)."""
        return sum(a.nbytes for run in self.runs for a in tf.nest.flatten(run))

    def to_dataset(self) -> tf.data.Dataset:
        """A dataset yielding the exported elements, in order, with the original element spec."""
        # from_tensor_slices gives each run a static shape, but the spec may leave
        # dimensions unknown (the batch dimension, say). concatenate keeps only what
        # all parts agree on, so two empty runs that disagree on every unknown
        # dimension give back exactly the spec, without a map (which would trace a
        # function for every client).
        runs = self.runs + (_empty_run(self.element_spec, 0), _empty_run(self.element_spec, 1))
        dataset = tf.data.Dataset.from_tensor_slices(runs[0])
        for run in runs[1:]:
            dataset = dataset.concatenate(tf.data.Dataset.from_tensor_slices(run))
        return dataset


@attrs.frozen
class SourcedClient:
    """A client the actor builds from its population's source.

    ``source`` holds the source's object-store reference inside a list, so Ray
    hands the actor the reference (fetched once, kept across clients), not a copy
    of the source per task; ``recipe`` is the client's, without its source.
    """

    source: list
    recipe: ClientRecipe


def export_dataset(dataset: tf.data.Dataset) -> ExportedDataset:
    """Reads every element of a (finite) dataset into an ``ExportedDataset``.

    An ``ArrayDataset`` (``ClientData.from_tensor_slices``) is cut from its
    arrays directly, with no tf.data pipeline built or iterated.
    """
    spec = dataset.element_spec
    if isinstance(dataset, ArrayDataset):
        return ExportedDataset(element_spec=spec, runs=tuple(dataset.stacked_elements()))
    for leaf in tf.nest.flatten(spec):
        if not isinstance(leaf, tf.TensorSpec) or leaf.shape.rank is None:
            raise UnsupportedDatasetError(
                f"the Ray executor ships client datasets of dense tensors of known rank; got an "
                f"element spec with {leaf!r}. Convert ragged/sparse features to dense (e.g. pad "
                "them in preprocessing) or use an in-process executor"
            )
    runs, current, current_shapes = [], [], None
    for element in dataset.as_numpy_iterator():
        shapes = [np.shape(a) for a in tf.nest.flatten(element)]
        if shapes != current_shapes and current:
            runs.append(_stack(current))
            current = []
        current.append(element)
        current_shapes = shapes
    if current:
        runs.append(_stack(current))
    return ExportedDataset(element_spec=spec, runs=tuple(runs))


def _stack(elements: list) -> Any:
    return tf.nest.map_structure(lambda *values: np.stack(values), *elements)


def _empty_run(spec: Any, unknown: int) -> Any:
    """Zero elements of ``spec``, with ``unknown`` for every dimension the spec leaves unknown."""
    return tf.nest.map_structure(
        lambda s: np.zeros(
            [0] + [d if d is not None else unknown for d in s.shape], s.dtype.as_numpy_dtype
        ),
        spec,
    )
