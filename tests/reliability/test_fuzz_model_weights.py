"""Properties of ``ModelWeights`` arithmetic over random structures, shapes and dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsim.models.model_weights import ModelWeights, WeightsMismatchError

SETTINGS = settings(max_examples=60, deadline=None)
DTYPES = st.sampled_from([np.float32, np.float64])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def arrays_like(layout):
    """A strategy for arrays with the given ``[(shape, dtype), ...]``."""
    return st.tuples(
        *[
            hnp.arrays(
                dtype, shape, elements=st.floats(-1e3, 1e3, width=np.dtype(dtype).itemsize * 8)
            )
            for shape, dtype in layout
        ]
    ).map(list)


layouts = st.tuples(
    st.lists(st.tuples(SHAPES, DTYPES), min_size=0, max_size=4),
    st.lists(st.tuples(SHAPES, DTYPES), min_size=0, max_size=2),
)


@st.composite
def pairs(draw):
    """Two model weights with the same layout (counts, shapes, dtypes)."""
    trainable, non_trainable = draw(layouts)
    a = ModelWeights(draw(arrays_like(trainable)), draw(arrays_like(non_trainable)))
    b = ModelWeights(draw(arrays_like(trainable)), draw(arrays_like(non_trainable)))
    return a, b


def _arrays(weights: ModelWeights) -> list[np.ndarray]:
    return list(weights.trainable) + list(weights.non_trainable)


def _assert_close(actual: ModelWeights, expected: ModelWeights, magnitude: ModelWeights) -> None:
    """Equal up to a few roundings at the size of ``magnitude`` (float32 or float64)."""
    for got, want, size in zip(_arrays(actual), _arrays(expected), _arrays(magnitude)):
        tolerance = 8 * np.finfo(want.dtype).eps * (np.abs(size) + 1)
        assert np.all(np.abs(got.astype(np.float64) - want) <= tolerance)


def _layout(weights: ModelWeights):
    return [(a.shape, a.dtype) for a in weights.trainable], [
        (a.shape, a.dtype) for a in weights.non_trainable
    ]


@SETTINGS
@given(pair=pairs())
def test_adding_then_subtracting_gives_back_the_first(pair):
    a, b = pair
    result = a + b - b
    assert _layout(result) == _layout(a)
    _assert_close(
        result,
        a,
        magnitude=ModelWeights(
            [np.abs(x) + np.abs(y) for x, y in zip(a.trainable, b.trainable)],
            [np.abs(x) + np.abs(y) for x, y in zip(a.non_trainable, b.non_trainable)],
        ),
    )


@SETTINGS
@given(pair=pairs(), factor=st.floats(-10, 10))
def test_scale_distributes_over_addition(pair, factor):
    a, b = pair
    left, right = (a + b).scale(factor), a.scale(factor) + b.scale(factor)
    assert _layout(left) == _layout(right) == _layout(a)
    bound = ModelWeights(
        [abs(factor) * (np.abs(x) + np.abs(y)) for x, y in zip(a.trainable, b.trainable)],
        [abs(factor) * (np.abs(x) + np.abs(y)) for x, y in zip(a.non_trainable, b.non_trainable)],
    )
    _assert_close(left, right, magnitude=bound)


@SETTINGS
@given(pair=pairs())
def test_results_share_no_memory_with_their_operands(pair):
    # ModelWeights is a value: writing into a result must never change a or b.
    a, b = pair
    results = [a + b, a - b, a.scale(2.0), a.with_trainable(b.trainable)]
    for result in results:
        for x in _arrays(result):
            assert not any(np.shares_memory(x, y) for y in _arrays(a) + _arrays(b))


@st.composite
def mismatched_pairs(draw):
    """Two model weights whose trainable layouts differ in count or in one array's shape."""
    layout = draw(st.lists(st.tuples(SHAPES, DTYPES), min_size=1, max_size=3))
    other = list(layout)
    if draw(st.booleans()):
        del other[draw(st.integers(0, len(other) - 1))]
    else:
        index = draw(st.integers(0, len(other) - 1))
        shape, dtype = other[index]
        other[index] = (draw(SHAPES.filter(lambda s: s != shape)), dtype)
    return ModelWeights(draw(arrays_like(layout))), ModelWeights(draw(arrays_like(other)))


@SETTINGS
@given(pair=mismatched_pairs(), op=st.sampled_from(["add", "sub", "with_trainable"]))
def test_mismatched_structures_raise_weights_mismatch(pair, op):
    a, b = pair
    with pytest.raises(WeightsMismatchError, match="trainable"):
        if op == "add":
            a + b
        elif op == "sub":
            a - b
        else:
            a.with_trainable(b.trainable)
