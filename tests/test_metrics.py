"""Sum-then-finalize: metrics over a cohort equal metrics over the pooled examples."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.learning import ClientWork
from fedsim.metrics import MetricsError, sum_then_finalize, sum_unfinalized


def test_accuracy_over_clients_of_very_different_sizes_is_pooled_accuracy():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
    fed_model = fedsim.from_keras_model(
        model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    work = ClientWork(fed_model)
    weights = fedsim.ModelWeights.from_model(fed_model)

    rng = np.random.default_rng(0)
    clients = []
    for n in (3, 40, 500):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, n).astype(np.int32)
        clients.append((x, y))
    per_client = [work.evaluate(weights, tf.data.Dataset.from_tensor_slices(c).batch(16)) for c in clients]
    aggregated = sum_then_finalize(fed_model.metric_finalizers())(per_client)

    # Independent: argmax of the logits computed in NumPy over all examples.
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    x_all = np.concatenate([c[0] for c in clients])
    y_all = np.concatenate([c[1] for c in clients])
    pooled = np.mean(np.argmax(x_all @ kernel + bias, axis=1) == y_all)
    client_accuracies = [np.mean(np.argmax(x @ kernel + bias, 1) == y) for x, y in clients]
    assert aggregated["accuracy"] == pytest.approx(pooled, abs=1e-6)
    assert abs(np.mean(client_accuracies) - pooled) > 0.01  # the wrong answer really differs
    assert aggregated["num_examples"] == 543


def test_sums_structures_elementwise():
    summed = sum_unfinalized([{"m": [np.float32(1), np.array([1, 2])]}, {"m": [np.float32(2), np.array([3, 4])]}])
    assert summed["m"][0] == 3
    np.testing.assert_array_equal(summed["m"][1], [4, 6])


def test_mismatched_clients_and_finalizers_are_errors():
    with pytest.raises(MetricsError, match="client 1 reported metrics"):
        sum_unfinalized([{"a": [1]}, {"b": [1]}])
    with pytest.raises(MetricsError, match="not in both"):
        sum_then_finalize({"a": lambda v: v})([{"b": [1]}])
    with pytest.raises(MetricsError, match="cohort reported nothing"):
        sum_unfinalized([])


def test_sums_any_nest_of_lists_tuples_and_dicts_leaf_by_leaf():
    def client(scale):
        # A list of dicts (the shape that used to fail with dict + dict), a tuple and a nested list inside.
        return {"m": [{"tp": scale * np.array([1.0, 2.0]), "n": np.int64(scale)},
                      {"tp": scale * np.array([0.5, 0.0]), "n": np.int64(2 * scale)}],
                "pair": (np.float32(scale), [np.full((2, 2), scale)])}

    summed = sum_unfinalized([client(1), client(2), client(4)])
    np.testing.assert_array_equal(summed["m"][0]["tp"], [7.0, 14.0])
    np.testing.assert_array_equal(summed["m"][1]["tp"], [3.5, 0.0])
    assert [summed["m"][0]["n"], summed["m"][1]["n"]] == [7, 14]
    assert summed["pair"][0] == 7.0
    np.testing.assert_array_equal(summed["pair"][1][0], np.full((2, 2), 7))
    assert isinstance(summed["m"], list) and isinstance(summed["pair"], tuple)

    finalized = sum_then_finalize({"m": lambda v: sum(d["tp"].sum() / d["n"] for d in v),
                                   "pair": lambda v: v[0]})([client(1), client(3)])
    assert finalized["m"] == pytest.approx(12.0 / 4 + 2.0 / 8)


@pytest.mark.parametrize("other, shown", [
    ([{"a": np.zeros(2)}, {"c": np.zeros(1)}], r"\[\{'a': 'shape \(2,\)'\}, \{'c': 'shape \(1,\)'\}\]"),
    ([{"a": np.zeros(2), "b": np.zeros(1)}], r"\[\{'a': 'shape \(2,\)', 'b': 'shape \(1,\)'\}\]"),
    ([{"a": np.zeros(3)}, {"b": np.zeros(1)}], r"\[\{'a': 'shape \(3,\)'\}, \{'b': 'shape \(1,\)'\}\]"),
    (({"a": np.zeros(2)}, {"b": np.zeros(1)}), r"\(\{'a': 'shape \(2,\)'\}, \{'b': 'shape \(1,\)'\}\)"),
], ids=["keys", "length", "leaf_shape", "tuple_for_list"])
def test_clients_reporting_different_structures_are_named(other, shown):
    first = {"m": [{"a": np.zeros(2)}, {"b": np.zeros(1)}]}
    expected = r"\[\{'a': 'shape \(2,\)'\}, \{'b': 'shape \(1,\)'\}\]"
    with pytest.raises(MetricsError, match=rf"metric 'm': client 0 reported {expected}, client 2 reported {shown}"):
        sum_unfinalized([first, first, {"m": other}])


def test_flat_lists_with_different_leaf_shapes_are_named():
    with pytest.raises(MetricsError, match=r"metric 'v': client 0 reported \['shape \(\)', 'shape \(2,\)'\], "
                                           r"client 1 reported \['shape \(\)', 'shape \(3,\)'\]"):
        sum_unfinalized([{"v": [np.float32(1), np.zeros(2)]}, {"v": [np.float32(1), np.zeros(3)]}])


# Over no examples (issue 18, item 2): a metric has no value, so it is dropped, never 0 or NaN.
def _refuses_to_finalize(value):
    raise AssertionError(f"finalizer ran over no examples: {value}")


def test_metrics_over_no_examples_are_dropped_and_their_finalizers_not_run():
    finalizers = {"loss": _refuses_to_finalize, "accuracy": _refuses_to_finalize,
                  "num_examples": lambda v: v[0], "num_batches": lambda v: v[0]}
    empty_client = {"loss": [0.0, 0.0], "accuracy": [0.0, 0.0], "num_examples": [0], "num_batches": [0]}
    aggregated = sum_then_finalize(finalizers)([empty_client, empty_client])
    assert {k: int(v) for k, v in aggregated.items()} == {"num_examples": 0, "num_batches": 0}


def test_one_example_anywhere_finalizes_every_metric():
    finalizers = {"loss": lambda v: v[0] / v[1], "num_examples": lambda v: v[0]}
    aggregated = sum_then_finalize(finalizers)([
        {"loss": [0.0, 0.0], "num_examples": [0]}, {"loss": [2.5, 1.0], "num_examples": [1]}])
    assert float(aggregated["loss"]) == 2.5 and int(aggregated["num_examples"]) == 1


def test_the_older_interface_over_no_examples_skips_its_computation():
    from fedsim.metrics import federated_output_aggregator

    def computation(outputs):  # a weighted mean over zero weights has no value: it raises
        return {"num_examples": fedsim.federated_sum(outputs.num_examples),
                "loss": fedsim.federated_mean(outputs.loss, weight=outputs.num_examples)}

    aggregate = federated_output_aggregator(computation, "out")
    empty = {"out": {"loss": np.float32(0), "num_examples": np.int64(0)}}
    assert {k: int(v) for k, v in aggregate([empty, empty]).items()} == {"num_examples": 0}
    full = {"out": {"loss": np.float32(2), "num_examples": np.int64(4)}}
    assert float(aggregate([empty, full])["loss"]) == 2.0
