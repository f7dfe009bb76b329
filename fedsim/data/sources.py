"""Populations and client datasets as descriptions another process builds them from.

A ``tf.data.Dataset`` cannot leave its process, so an executor whose workers
live elsewhere (Ray actors) would have the driver read and ship every client's
data. Instead, a population can carry a ``ClientSource``: a picklable function
and arguments that build the same ``ClientData`` again, plus its preprocessing
(``read_sql_client_data`` on a path, ``from_tensor_slices`` on arrays,
``seeded_population`` on a function and seed, ...). A ``ClientRecipe`` is one
client's prepared dataset as such a description: the source, the client id and
the tf.data steps the round applies after the population's dataset (seeded
shuffle, batch, repeat for local epochs, take). The round prepares a recipe
exactly as it prepares a dataset, since a recipe records those calls, and a
worker builds the dataset with the code the driver would have run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import attrs
import tensorflow as tf

if TYPE_CHECKING:
    from fedsim.data.client_data import ClientData

__all__ = ["ClientRecipe", "ClientSource", "NoClientSourceError", "RecipeStepError"]


class NoClientSourceError(ValueError):
    """Client data was demanded from the workers, but this run's clients can only be built in the driver."""


class RecipeStepError(AttributeError):
    """A client's preparation used a ``tf.data.Dataset`` method a ``ClientRecipe`` does not record.

    An ``AttributeError``, so ``getattr(recipe, name, default)`` and ``hasattr`` still work.
    """


@attrs.frozen
class ClientSource:
    """How to build a population again in another process: ``build(*args)``, then ``preprocess``.

    ``build`` and ``args`` must pickle with cloudpickle (a module-level function or
    a ``functools.partial`` of one; arrays are fine) and must give the same client
    ids and datasets wherever they run: a file path must be readable on every node.
    """

    build: Callable[..., "ClientData"]
    args: tuple = attrs.field(default=(), repr=lambda args: _short(repr(args)))  # arrays print long
    preprocess: tuple = ()  # the population's preprocessing functions, in order

    def client_data(self) -> "ClientData":
        """The population this source describes, carrying it as its ``client_source``.

        So ``ClientSource(seeded_population, (n, make_examples, seed)).client_data()``
        is a generated population that Ray actors can build clients of.
        """
        population = self.build(*self.args)
        if population.client_source is None:
            population = population.with_client_source(ClientSource(self.build, self.args))
        for fn in self.preprocess:
            population = population.preprocess(fn)
        return population

    def then(self, fn: Callable[[tf.data.Dataset], tf.data.Dataset]) -> "ClientSource":
        """The source of this population preprocessed with ``fn`` (see ``ClientData.preprocess``)."""
        return attrs.evolve(self, preprocess=self.preprocess + (fn,))


@attrs.frozen
class Shuffle:
    """``dataset.shuffle`` with the seed pair the driver resolved (global seed, operation seed)."""

    buffer_size: int
    seeds: tuple[Optional[int], Optional[int]]
    reshuffle_each_iteration: bool

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        graph_seed, op_seed = self.seeds
        if graph_seed is not None:
            # tf.data derives the shuffle's seeds from the global seed and the op seed:
            # the worker's global seed must be the driver's for the same order.
            _use_graph_seed(graph_seed)
        return dataset.shuffle(self.buffer_size, seed=op_seed, reshuffle_each_iteration=self.reshuffle_each_iteration)

    def spec(self, element_spec: Any) -> Any:
        return element_spec


@attrs.frozen
class Batch:
    """``dataset.batch(batch_size, drop_remainder)``."""

    batch_size: int
    drop_remainder: bool

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset.batch(self.batch_size, drop_remainder=self.drop_remainder)

    def spec(self, element_spec: Any) -> Any:
        # tf.data's rule: a static batch dimension only when partial batches are dropped.
        size = self.batch_size if self.drop_remainder else None
        return tf.nest.map_structure(lambda s: tf.TensorSpec([size] + s.shape.as_list(), s.dtype), element_spec)


@attrs.frozen
class Repeat:
    """``dataset.repeat(count)``."""

    count: Optional[int]

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset.repeat(self.count)

    def spec(self, element_spec: Any) -> Any:
        return element_spec


@attrs.frozen
class Take:
    """``dataset.take(count)``."""

    count: int

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset.take(self.count)

    def spec(self, element_spec: Any) -> Any:
        return element_spec


_RECORDED = ("shuffle", "batch", "repeat", "take")


@attrs.frozen
class ClientRecipe:
    """One client's prepared dataset, as a description: source, client id and tf.data steps.

    It answers the ``tf.data.Dataset`` calls a round's preparation makes
    (``shuffle``, ``batch``, ``repeat``, ``take`` and ``element_spec``) by
    recording them, so ``FederatedProcess`` prepares it as it would a dataset;
    any other method raises ``RecipeStepError``. ``build`` gives the dataset.
    Executors that build clients themselves take recipes; simulate makes them.
    """

    source: Optional[ClientSource]  # None once an executor has shipped the source separately
    client_id: str
    element_spec: Any  # of the dataset ``build`` gives
    graph_seed: int  # the driver's global TensorFlow seed when the recipe was made
    steps: tuple = ()

    @classmethod
    def start(cls, source: ClientSource, client_id: str, element_spec: Any) -> "ClientRecipe":
        """Client ``client_id``'s dataset as the population gives it (``element_spec``: the population's)."""
        # The first of the pair is the global seed, or TensorFlow's default when none is set.
        graph_seed, _ = tf.compat.v1.get_seed(1)
        return cls(source, str(client_id), element_spec, graph_seed)

    def build(self, client_data: "ClientData") -> tf.data.Dataset:
        """The client's prepared dataset, from ``client_data`` (the population ``source`` builds).

        Sets TensorFlow's global seed to the driver's, so seeded tf.data steps (the
        preprocessing's and the recipe's shuffles) match it: call it in a worker.

        Raises:
          NoClientSourceError: when the dataset built does not have the recorded
            element spec (the source rebuilt another population).
        """
        _use_graph_seed(self.graph_seed)
        dataset = client_data.create_tf_dataset_for_client(self.client_id)
        for step in self.steps:
            dataset = step.apply(dataset)
        if dataset.element_spec != self.element_spec:
            raise NoClientSourceError(
                f"client {self.client_id!r}: the dataset built from the population's source yields "
                f"{dataset.element_spec}, the driver's yields {self.element_spec}; the source must build "
                "the same population on every node (same files, same functions)"
            )
        return dataset

    # The tf.data.Dataset calls a round's preparation makes, recorded ------------------------
    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True, name=None) -> "ClientRecipe":
        _no_name("shuffle", name)
        # Resolved now, in the driver: with seed=None the op seed comes from the driver's counter.
        graph_seed, op_seed = tf.compat.v1.get_seed(seed)
        return self._then(Shuffle(int(buffer_size), (graph_seed, op_seed), bool(reshuffle_each_iteration)))

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None,
              name=None) -> "ClientRecipe":
        _no_name("batch", name, num_parallel_calls, deterministic)
        return self._then(Batch(int(batch_size), bool(drop_remainder)))

    def repeat(self, count=None, name=None) -> "ClientRecipe":
        _no_name("repeat", name)
        return self._then(Repeat(None if count is None else int(count)))

    def take(self, count, name=None) -> "ClientRecipe":
        _no_name("take", name)
        return self._then(Take(int(count)))

    def _then(self, step: Any) -> "ClientRecipe":
        return attrs.evolve(self, element_spec=step.spec(self.element_spec), steps=self.steps + (step,))

    def __getattr__(self, name: str) -> Any:
        # Only looked up when ordinary attributes miss: a tf.data method a recipe cannot record.
        if name.startswith("_"):
            raise AttributeError(name)
        raise RecipeStepError(
            f"preparing client {self.client_id!r} called Dataset.{name}, but a client built by the "
            f"executor's workers records only {', '.join(_RECORDED)}; do that step in the population's "
            "preprocessing (ClientData.preprocess), or have the driver ship the data (client_data='driver')"
        )


def _use_graph_seed(seed: int) -> None:
    """Makes ``seed`` TensorFlow's global seed, unless tf.data already derives seeds from it.

    ``get_seed`` answers TensorFlow's default when no global seed is set, which
    gives explicit op seeds the same pairs. Setting the seed clears TensorFlow's
    kernel caches, which costs the next client's work tens of milliseconds:
    hence only when it changes.
    """
    if tf.compat.v1.get_seed(1)[0] != seed:
        tf.random.set_seed(seed)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _no_name(method: str, name: Any, *options: Any) -> None:
    """Refuses tf.data options a recipe would otherwise drop (a named op, parallel batching)."""
    if name is not None or any(o is not None for o in options):
        raise RecipeStepError(
            f"a client built by the executor's workers records Dataset.{method} without its options "
            f"name, num_parallel_calls and deterministic; leave them out, or have the driver ship the "
            "data (client_data='driver')"
        )
