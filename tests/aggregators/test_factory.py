"""Building aggregator chains from config."""

import numpy as np

from fedsim.privacy import Participation
import pytest

from fedsim.aggregators import (
    AggregatorConfigError,
    ByzantineAttack,
    Clipping,
    DPFedAvg,
    MeanAggregator,
    Zeroing,
    build_aggregator,
)
from tests.aggregators.helpers import from_vectors, run


def test_builds_the_chain_outermost_first():
    aggregator = build_aggregator(
        [
            {"name": "zeroing", "norm_bound": 10},
            {"name": "clipping", "clip_norm": 1.0},
            {"name": "mean", "weighted": True},
        ]
    )
    assert aggregator == Zeroing(
        Clipping(MeanAggregator(weighted=True), clip_norm=1.0), norm_bound=10
    )


def test_zeroing_around_dp_fedavg_reports_every_layer():
    aggregator = build_aggregator(
        [
            {"name": "zeroing", "norm_bound": 10},
            {
                "name": "dp_fedavg",
                "clip_norm": 1.0,
                "noise_multiplier": 1.0,
            },
        ],
        seed=0,
        participation=Participation.fixed_size(100, 3),
    )
    output = run(aggregator, from_vectors(np.ones((3, 7))))
    assert {"zeroing/num_zeroed", "dp/num_clipped", "dp/epsilon"} <= set(output.measurements)


def test_seed_gives_each_random_step_its_own_seed():
    chain = build_aggregator(
        [
            {"name": "byzantine_attack", "fraction": 0.1},
            {
                "name": "dp_fedavg",
                "clip_norm": 1.0,
                "noise_multiplier": 1.0,
                "population_size": 100,
                "clients_per_round": 10,
            },
        ],
        seed=42,
    )
    assert isinstance(chain, ByzantineAttack) and isinstance(chain.inner, DPFedAvg)
    assert chain.seed != chain.inner.seed
    assert build_aggregator([{"name": "top_k"}, {"name": "mean"}], seed=1).inner == MeanAggregator()
    explicit = build_aggregator(
        [{"name": "byzantine_attack", "seed": 5}, {"name": "mean"}], seed=42
    )
    assert explicit.seed == 5


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "empty aggregator spec"),
        ([{"name": "meen"}], "unknown aggregator name 'meen'; did you mean 'mean'?"),
        ([{"name": "mean", "wieghted": True}], "no parameter 'wieghted'; did you mean 'weighted'?"),
        ([{"name": "mean"}, {"name": "median"}], "'mean' aggregates on its own"),
        ([{"name": "clipping"}], "'clipping' wraps another aggregator"),
        ([{"name": "dp_fedavg", "clip_norm": 1.0}], "needs parameter\\(s\\) \\['noise_multiplier'"),
        (
            [{"name": "trimmed_mean", "beta": 0.6}],
            r"step 0 'trimmed_mean': TrimmedMean: beta=0.6 must be",
        ),
        ([{"weighted": True}], "step 0 needs a 'name' string, got None"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(AggregatorConfigError, match=message):
        build_aggregator(spec)
