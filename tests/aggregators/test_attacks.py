"""Byzantine attack simulation."""

import numpy as np
import pytest

from fedsim.aggregators import ByzantineAttack, CoordinateMedian, MeanAggregator
from tests.aggregators.helpers import from_vectors, run, to_vector

VECTOR = np.arange(1.0, 8.0)


@pytest.mark.parametrize(
    "kind, params, expected",
    [
        # 2 of 10 identical clients replaced; the mean shows what they sent.
        ("sign_flip", {}, (8 * VECTOR - 2 * VECTOR) / 10),
        ("scaled", {"scale": 10.0}, (8 * VECTOR + 20 * VECTOR) / 10),
        ("constant", {"constant": -5.0}, (8 * VECTOR - 10.0) / 10),
    ],
)
def test_attackers_replace_their_values(kind, params, expected):
    attack = ByzantineAttack(MeanAggregator(), fraction=0.2, kind=kind, **params)
    output = run(attack, from_vectors([VECTOR] * 10))
    np.testing.assert_allclose(to_vector(output.result), expected, rtol=1e-12)
    assert output.measurements["attack/num_byzantine"] == 2


def test_gaussian_attack_is_seeded_from_the_state():
    attack = ByzantineAttack(MeanAggregator(), fraction=0.5, kind="gaussian", noise_std=3.0, seed=1)
    values = from_vectors(np.zeros((4, 7)))
    first, again = run(attack, values), run(attack, values)
    second = run(attack, values, state=first.state)
    np.testing.assert_array_equal(to_vector(first.result), to_vector(again.result))
    assert not np.array_equal(to_vector(first.result), to_vector(second.result))


def test_only_participating_clients_become_byzantine():
    attack = ByzantineAttack(MeanAggregator(), fraction=0.4, kind="constant", constant=100.0)
    weights = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    output = run(attack, from_vectors(np.zeros((10, 7))), weights)
    assert output.measurements["attack/num_byzantine"] == 2  # 40% of the 5 participants
    np.testing.assert_allclose(to_vector(output.result), np.full(7, 200.0 / 5))


def test_median_resists_a_minority_of_attackers():
    attack = ByzantineAttack(CoordinateMedian(), fraction=0.4, kind="scaled", scale=1e6)
    output = run(attack, from_vectors([VECTOR] * 10))
    np.testing.assert_array_equal(to_vector(output.result), VECTOR)
