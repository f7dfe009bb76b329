"""``initialize()`` is a pure function of the model's initial weights or of the weights given."""
import numpy as np
import pytest

import fedsim
from fedsim.execution import SequentialExecutor
from fedsim.learning import ProcessError
from fedsim.models.model_weights import WeightsMismatchError
from tests.algorithms.helpers import datasets, initial_params, make_clients, model_fn


def _process():
    return fedsim.build_fedavg(model_fn(initial_params()), fedsim.SGD(0.5), batch_size=4,
                               executor_fn=SequentialExecutor)


def test_initialize_after_rounds_and_evaluation_still_gives_the_initial_weights():
    process = _process()
    clients = datasets(make_clients())
    state = process.next(process.initialize(), clients).state
    process.evaluate(state.model_weights, clients)
    again = process.initialize()
    for got, want in zip(again.model_weights.trainable, initial_params()):
        np.testing.assert_allclose(got, want, atol=1e-7)  # float32 of the helper's float64 values
    assert not np.allclose(state.model_weights.trainable[0], again.model_weights.trainable[0])


def test_given_weights_are_cast_to_the_model_dtypes():
    process = _process()
    weights = fedsim.ModelWeights([np.asarray(p, np.float64) for p in initial_params(seed=7)], [])
    state = process.initialize(weights)
    assert [w.dtype for w in state.model_weights.trainable] == [np.float32, np.float32]
    np.testing.assert_allclose(state.model_weights.trainable[1], initial_params(seed=7)[1], atol=1e-7)


@pytest.mark.parametrize("bad, error, message", [
    (lambda p: fedsim.ModelWeights(p[:1], []), WeightsMismatchError, "1 trainable arrays do not fit a model with 2"),
    (lambda p: fedsim.ModelWeights([p[0].T, p[1]], []), WeightsMismatchError, r"shape \(6, 3\).*shape \(3, 6\)"),
    (lambda p: fedsim.ModelWeights([np.full_like(p[0], np.nan), p[1]], []), ProcessError, "trainable array 0.*NaN"),
    (lambda p: p, ProcessError, "must be a ModelWeights, got list"),
])
def test_bad_initial_weights_are_named(bad, error, message):
    with pytest.raises(error, match=message):
        _process().initialize(bad(initial_params()))
