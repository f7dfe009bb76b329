"""The algorithm registry: a factory's signature is what a config may set, and a new algorithm
reaches a config through one registry line."""
from __future__ import annotations

import numpy as np
import pytest

import fedsim
from fedsim.algorithms.registry import ALGORITHMS, AlgorithmBuildError, hyperparameters, make_algorithm
from fedsim.experiment import build_experiment, config_from_dict
from fedsim.learning.algorithm import Algorithm, ServerStep

# The hyperparameters without a default in their factory's signature.
REQUIRED = {"fedprox": {"mu": 0.1}, "qffl": {"q": 1.0}, "q_fedsgd": {"q": 1.0, "lipschitz": 10.0}}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_registered_factory_builds_the_record_of_its_name(name):
    algorithm = make_algorithm(name, REQUIRED.get(name), population_size=10)
    assert isinstance(algorithm, Algorithm)
    assert algorithm.name == name
    required = {k for k, p in hyperparameters(name).items() if p.default is p.empty}
    assert required == set(REQUIRED.get(name, {}))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_algorithm("fedavg", {"mu": 0.1}), "algorithm 'fedavg' has no hyperparameter ['mu']"),
        (lambda: make_algorithm("fedsgd", client_optimizer=fedsim.SGD(0.1)), "has no client optimizer"),
        (lambda: make_algorithm("fednova", client_optimizer=fedsim.SGD(0.1, momentum=0.9)), "runs plain local SGD"),
        (lambda: make_algorithm("scaffold", client_optimizer=fedsim.optimizers.Adam()), "runs plain local SGD"),
        (lambda: make_algorithm("qffl", {"q": 1.0}, weighted=True), "fixes how clients are weighted"),
        (lambda: make_algorithm("feddyn"), "needs the population size"),
    ],
)
def test_run_inputs_an_algorithm_cannot_use_are_refused_by_name(call, message):
    with pytest.raises(AlgorithmBuildError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_the_client_learning_rate_is_read_from_plain_sgd():
    algorithm = make_algorithm("fednova", client_optimizer=fedsim.SGD(0.25))
    assert algorithm.task.optimizer == fedsim.SGD(0.25)


def scaled_fedavg(client_optimizer=None, weighted: bool = True, scale: float = 1.0) -> Algorithm:
    """A new algorithm as a researcher would write it: FedAvg whose server delta is scaled."""

    def server_update(state, aggregate):
        return ServerStep([scale * d for d in aggregate.delta], state.algorithm_state)

    base = fedsim.algorithms.make_algorithm("fedavg", client_optimizer=client_optimizer, weighted=weighted)
    return Algorithm("scaled_fedavg", base.task, server_update=server_update)


def test_a_new_algorithm_reaches_a_config_through_one_registry_line(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "scaled_fedavg", scaled_fedavg)  # the one line
    raw = {
        "rounds": 2, "seed": 1,
        "data": {"name": "synthetic", "num_devices": 6},
        "model": {"name": "logreg"},
        "sampler": {"cohort_size": 3},
        "algorithm": {"name": "scaled_fedavg", "scale": 0.5},
        "executor": "sequential",
    }
    scaled = build_experiment(config_from_dict(raw))
    # Independently: FedAvg whose server SGD steps 0.5 applies the same half delta.
    plain = build_experiment(config_from_dict(
        {**raw, "algorithm": {"name": "fedavg"}, "server_optimizer": {"name": "sgd", "learning_rate": 0.5}}))
    assert scaled.config.algorithm.params == {"scale": 0.5}
    results = []
    for experiment in (scaled, plain):
        state = experiment.process.initialize()
        ids = experiment.train_data.client_ids[:3]
        datasets = [experiment.client_dataset(i, 1) for i in ids]
        state = experiment.process.next(state, datasets, client_ids=ids).state
        results.append(state.model_weights.trainable)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    assert not np.allclose(results[0][0], plain.process.initialize().model_weights.trainable[0])
