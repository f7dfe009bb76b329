"""cohort_prep: the cohort a round trains, its dropped clients and each client's update weight.

Expected values are written out by hand from the rules in the docstrings.
"""
import collections

import numpy as np
import pytest
import tensorflow as tf

from fedsim.client.task import ClientOutput
from fedsim.learning import cohort_prep
from fedsim.learning.round_records import Cohort, ProcessError
from fedsim.learning.validation import ClientDatasetError

SPEC = (tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int32))


def dataset(n, dtype=np.float32):
    return tf.data.Dataset.from_tensor_slices((np.zeros((n, 2), dtype), np.zeros(n, np.int32)))


def batch(d):
    return d.batch(2)


def output(update_weight, num_examples):
    return ClientOutput([np.zeros(1)], update_weight, collections.OrderedDict(), num_examples)


def test_without_ids_cohort_positions_stand_in_and_every_dataset_is_prepared():
    cohort = cohort_prep.prepare_cohort([dataset(3), dataset(5)], None, 1, batch, None, SPEC)
    assert cohort.client_ids == [0, 1] and not cohort.ids_given and cohort.passes is None
    assert [d.element_spec[0].shape.as_list() for d in cohort.datasets] == [[None, 2], [None, 2]]


def test_a_dataset_is_prepared_once_for_the_same_preparation():
    source = dataset(4)
    first = cohort_prep.prepare_cohort([source], ["a"], 1, batch, None, SPEC).datasets[0]
    again = cohort_prep.prepare_cohort([source], ["a"], 2, batch, None, SPEC).datasets[0]
    other = cohort_prep.prepare_cohort([source], ["a"], 3, lambda d: d.batch(3), None, SPEC).datasets[0]
    assert again is first and other is not first


def test_one_id_per_dataset_or_a_named_error():
    with pytest.raises(ProcessError, match="got 2 client datasets but 1 client ids"):
        cohort_prep.prepare_cohort([dataset(3), dataset(3)], ["a"], 1, batch, None, SPEC)


def test_prepare_client_drops_clients_and_records_their_passes():
    def prepare_client(d, round_num, client_id):
        assert round_num == 7
        return None if client_id == "b" else (d.repeat(2).batch(2), 2 if client_id == "a" else 1)

    cohort = cohort_prep.prepare_cohort([dataset(3), dataset(3), dataset(3)], ["a", "b", "c"], 7,
                                        batch, prepare_client, SPEC)
    assert cohort.client_ids == ["a", "c"] and cohort.passes == [2, 1] and cohort.ids_given


def test_a_dataset_that_does_not_fit_the_model_names_its_client():
    with pytest.raises(ClientDatasetError, match="client 'bad'.*float64"):
        cohort_prep.prepare_cohort([dataset(2), dataset(2, np.float64)], ["good", "bad"], 1, batch, None, SPEC)


def test_keep_drops_the_positions_not_kept_from_every_field():
    cohort = Cohort(["a", "b", "c"], ["da", "db", "dc"], True, [1, 2, 3])
    kept = cohort_prep.keep(cohort, [0, 2])
    assert (kept.client_ids, kept.datasets, kept.passes) == (["a", "c"], ["da", "dc"], [1, 3])
    assert cohort_prep.keep(cohort, [0, 1, 2]) is cohort


def test_update_weights_count_a_clients_data_once_however_many_passes():
    cohort = Cohort(["a", "b", "c", "d"], [None] * 4, True, [3, 1, 2, 2])
    # a: 3 passes over 10 examples counted 30 -> 10; b: one pass -> 10;
    # c: unweighted (1.0) is never divided; d: a weight that is not the example count stays.
    outputs = [output(30.0, 30), output(10.0, 10), output(1.0, 16), output(5.0, 16)]
    assert cohort_prep.update_weights(outputs, cohort) == [10.0, 10.0, 1.0, 5.0]
    assert cohort_prep.update_weights(outputs, Cohort(["a"] * 4, [None] * 4, True)) == [30.0, 10.0, 1.0, 5.0]
