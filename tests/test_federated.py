"""The federated operators over client-placed values."""
import collections

import numpy as np
import pytest

import fedsim
from fedsim.federated import ClientValues, FederatedTypeError


def _values():
    return ClientValues([
        collections.OrderedDict(n=np.int32(2), v=np.array([1.0, 4.0])),
        collections.OrderedDict(n=np.int32(6), v=np.array([3.0, -2.0])),
    ])


def test_sum_mean_min_max_by_hand():
    values = _values()
    np.testing.assert_array_equal(fedsim.federated_sum(values.v), [4.0, 2.0])
    assert fedsim.federated_sum(values.n) == 8
    np.testing.assert_allclose(fedsim.federated_mean(values.v), [2.0, 1.0])
    np.testing.assert_allclose(fedsim.federated_mean(values.v, weight=values.n),
                               [(2 * 1 + 6 * 3) / 8, (2 * 4 - 6 * 2) / 8])
    np.testing.assert_array_equal(fedsim.federated_min(values["v"]), [1.0, -2.0])
    np.testing.assert_array_equal(fedsim.federated_max(values["v"]), [3.0, 4.0])


def test_errors_name_the_problem():
    with pytest.raises(FederatedTypeError, match="client-placed value"):
        fedsim.federated_sum(np.array([1.0]))
    with pytest.raises(AttributeError, match="no field 'loss'"):
        _values().loss
    with pytest.raises(FederatedTypeError, match="sum to 0"):
        fedsim.federated_mean(_values().v, weight=ClientValues([0, 0]))
