"""One round for every algorithm: each runs under aggregator chains, and the fault policy
treats a non-finite client the same way for all of them."""
import numpy as np
import pytest

from fedsim.aggregators import build_aggregator
from fedsim.execution import SequentialExecutor
from fedsim.privacy import Participation
from tests.algorithms.helpers import initial_params, model_fn
from tests.conformance.cases import ALGORITHMS, RAGGED_SIZES, flat_state, population, run

CLIENTS = population(RAGGED_SIZES, 6, 3)
IDS = [f"client-{i}" for i in range(len(CLIENTS))]

EVERYONE = Participation.none(len(CLIENTS), len(CLIENTS))  # run() trains every client each round
CHAINS = {
    "zeroing_clipping_mean": (
        [{"name": "zeroing", "norm_bound": 1e3}, {"name": "clipping", "clip_norm": 0.05}, {"name": "mean"}],
        ("zeroing/num_zeroed", "clip/num_clipped"),
    ),
    "dp_fedavg": (
        [{"name": "dp_fedavg", "clip_norm": 0.05, "noise_multiplier": 0.5, "population_size": 8,
          "clients_per_round": 4, "sampling": "fixed_size"}],
        ("dp/epsilon", "dp/noise_std"),
    ),
    "dp_fedavg_adaptive_clipping": (
        [{"name": "dp_fedavg", "clip_norm": 0.05, "noise_multiplier": 0.5, "target_quantile": 0.5,
          "clipped_count_stddev": 1.0}],
        ("dp/epsilon", "dp/unclipped_fraction"),
    ),
    "dp_ftrl": (
        [{"name": "dp_ftrl", "clip_norm": 0.05, "noise_multiplier": 0.5}],
        ("dp/epsilon", "dp/noise_std"),
    ),
    "distributed_dp": (
        [{"name": "distributed_dp", "clip_norm": 0.05, "noise_multiplier": 0.5, "bits": 20, "threshold": 3}],
        ("dp/epsilon", "ddp/bits_per_coordinate", "secagg/num_survivors"),
    ),
    "secure_aggregation": (
        [{"name": "secure_aggregation", "clip_norm": 0.05, "weighted": True, "max_update_weight": 20.0}],
        ("secagg/num_survivors", "secagg/bytes_per_client"),
    ),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_runs_under_the_chain(algorithm, chain):
    spec, keys = CHAINS[chain]
    participation = None if "population_size" in spec[0] else EVERYONE
    aggregator = build_aggregator(spec, seed=0, participation=participation)
    process = ALGORITHMS[algorithm](model_fn(initial_params()), aggregator=aggregator, executor_fn=SequentialExecutor)
    state, results = run(process, CLIENTS, rounds=2)
    for result in results:
        for key in keys:
            assert key in result.measurements, (key, sorted(result.measurements))
    assert all(np.isfinite(leaf).all() for leaf in flat_state(process, state, IDS))
    # The chain bounds what every client sends, extras included: a clip norm this small clips them all.
    if chain == "zeroing_clipping_mean":
        assert results[0].measurements["clip/num_clipped"] == len(CLIENTS)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_nan_client_is_zeroed_counted_and_changes_nothing(algorithm):
    """The round with a NaN client equals the round without it, for every algorithm."""
    x, y = CLIENTS[1]
    poisoned = [CLIENTS[0], (np.full_like(x, np.nan), y)] + CLIENTS[2:]
    with_nan = ALGORITHMS[algorithm](model_fn(initial_params()), executor_fn=SequentialExecutor)
    without = ALGORITHMS[algorithm](model_fn(initial_params()), executor_fn=SequentialExecutor)
    kept_ids = [IDS[0]] + IDS[2:]
    state_nan, results_nan = run(with_nan, poisoned, rounds=2, ids=IDS)
    state_ref, _ = run(without, [CLIENTS[0]] + CLIENTS[2:], rounds=2, ids=kept_ids)
    assert [r.measurements["faults/nonfinite_updates"] for r in results_nan] == [1.0, 1.0]
    assert [r.num_examples for r in results_nan] == [results_nan[0].num_examples] * 2
    got, expected = flat_state(with_nan, state_nan, kept_ids), flat_state(without, state_ref, kept_ids)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    if with_nan.client_store is not None:  # the zeroed client's state is never kept
        assert with_nan.client_store.get(IDS[1]) is None


@pytest.mark.parametrize("algorithm, state_of", [
    # SCAFFOLD: c moves by |S|/N times the aggregated control-variate delta.
    ("scaffold", lambda s: s.algorithm_state["control_variate"]),
    # MimeLite: the first momentum is the aggregated full-batch gradient.
    ("mime_lite", lambda s: s.algorithm_state["optimizer_state"]["momentum"]),
])
def test_the_chain_bounds_the_extras_too(algorithm, state_of):
    """Clipping bounds the whole message, so the algorithm state fed by extras stays within the bound."""
    clip = 1e-3
    chain = build_aggregator([{"name": "clipping", "clip_norm": clip}, {"name": "mean"}])
    clipped = ALGORITHMS[algorithm](model_fn(initial_params()), aggregator=chain, executor_fn=SequentialExecutor)
    free = ALGORITHMS[algorithm](model_fn(initial_params()), executor_fn=SequentialExecutor)
    norm = {}
    for name, process in (("clipped", clipped), ("free", free)):
        state, _ = run(process, CLIENTS, rounds=1)
        norm[name] = np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in state_of(state)))
    assert norm["free"] > 100 * clip  # without the chain the state moves far more than the bound
    assert norm["clipped"] <= clip * (1 + 1e-5)
