"""From a validated ``RunConfig`` to the blocks of a run: population, process, sampler."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
import keras
import tensorflow as tf

from fedsim.aggregators import build_aggregator
from fedsim.client.seeds import client_seed
from fedsim.data import ClientData
from fedsim.experiment import blocks
from fedsim.experiment.build_data import build_population
from fedsim.experiment.build_model import model_fn_for
from fedsim.experiment.build_algorithm import build_process
from fedsim.experiment.config import ConfigError
from fedsim.simulation.sampling import ScheduleSampler


@attrs.frozen
class Experiment:
    """Everything a run needs, built from its config."""

    config: blocks.RunConfig
    process: Any  # a process of fedsim.algorithms: initialize / next / evaluate
    train_data: ClientData
    test_data: ClientData
    sampler: Any

    def prepare_dataset(self, dataset: Any, round_num: int, client_id: str) -> Any:
        """Client ``client_id``'s training data for round ``round_num``, from its population dataset.

        With ``client.shuffle_buffer`` the order is shuffled with a seed
        drawn from (run seed, round, client) alone, so a resumed run sees the
        same orders as an uninterrupted one; with ``data.shuffle = false``
        (which refuses a buffer) it is the population's order, every round.
        ``dataset`` may be a ``ClientRecipe`` (Ray actors build the client
        from the population's source): it records the same shuffle.
        """
        buffer = self.config.client.shuffle_buffer
        if not buffer:
            return dataset
        seed = client_seed(self.config.seed, round_num, client_id)
        return dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    def client_dataset(self, client_id: str, round_num: int) -> tf.data.Dataset:
        """Client ``client_id``'s training data for round ``round_num`` (see ``prepare_dataset``)."""
        return self.prepare_dataset(self.train_data.create_tf_dataset_for_client(client_id), round_num, client_id)


def build_experiment(config: blocks.RunConfig, state_dir: Optional[Path] = None) -> Experiment:
    """Builds population, model and process; seeds Keras so initial model weights follow ``config.seed``.

    ``state_dir`` (the run directory) holds per-client state of stateful algorithms.
    """
    _check_shuffling(config)
    keras.utils.set_random_seed(config.seed)
    population = build_population(config.data, config.seed)
    population_size = len(population.train.client_ids)
    sampler = config.sampler.build(config.seed, population.train.client_ids)
    if isinstance(sampler, ScheduleSampler):  # a fixed protocol must cover the whole run, known before round 1
        sampler.check_rounds(config.rounds)
    aggregator = None
    if config.aggregator:
        # The chain's privacy mechanism accounts the sampling that runs, read here, never declared.
        participation = sampler.participation(population_size)
        aggregator = build_aggregator(config.aggregator, seed=config.seed, participation=participation)
    model_fn = model_fn_for(config.model, population.train.element_type_structure, population.num_classes)
    process = build_process(config, model_fn, aggregator=aggregator, population_size=population_size,
                            state_dir=state_dir)
    return Experiment(config, process, population.train, population.test, sampler)


def _check_shuffling(config: blocks.RunConfig) -> None:
    """``data.shuffle = false`` promises examples in the source's order: a shuffle buffer contradicts it."""
    if not config.data.shuffle and config.client.shuffle_buffer:
        raise ConfigError(
            f"data.shuffle = false, but client.shuffle_buffer = {config.client.shuffle_buffer} shuffles each "
            "client's examples every round; set client.shuffle_buffer = 0 (no shuffling), or data.shuffle = true"
        )
