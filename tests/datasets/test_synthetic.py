"""Synthetic(alpha, beta) follows the FedProx recipe and is deterministic from its seed."""
import numpy as np
import pytest

from fedsim.datasets import generate_synthetic, load_synthetic


def test_shapes_sizes_and_determinism():
    devices = generate_synthetic(1.0, 1.0, seed=3)
    assert len(devices) == 30
    for x, y in devices:
        assert x.dtype == np.float32 and x.shape[1] == 60 and y.dtype == np.int32
        assert len(x) == len(y) >= 50
        assert y.min() >= 0 and y.max() <= 9
    again = generate_synthetic(1.0, 1.0, seed=3)
    for (x1, y1), (x2, y2) in zip(devices, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(generate_synthetic(1.0, 1.0, seed=4)[0][1], devices[0][1])


def test_device_sizes_follow_lognormal_plus_fifty():
    sizes = np.array([len(y) for _, y in generate_synthetic(1, 1, num_devices=4000, seed=0)])
    logs = np.log(sizes - 50 + 0.5)  # int() floors lognormal(4, 2); +0.5 centres the floor
    assert np.median(logs) == pytest.approx(4.0, abs=0.1)
    assert sizes.min() >= 50


def test_feature_variances_follow_sigma_in_the_iid_variant():
    x = np.concatenate([x for x, _ in generate_synthetic(iid=True, num_devices=200, seed=1)])
    variances = x.var(axis=0)
    want = np.arange(1, 61) ** -1.2
    np.testing.assert_allclose(variances, want, rtol=0.1)
    assert np.abs(x.mean(axis=0)).max() < 0.05  # v = 0 in the IID variant


def test_alpha_beta_make_devices_heterogeneous():
    def mean_spread(alpha, beta):
        return np.std([x.mean() for x, _ in generate_synthetic(alpha, beta, num_devices=100, seed=2)])
    assert mean_spread(0.0, 0.0) < 0.3 < mean_spread(1.0, 1.0)


def test_train_test_split_per_device():
    train, test = load_synthetic(test_fraction=0.1, seed=0)
    devices = generate_synthetic(seed=0)
    assert list(train.client_ids) == list(test.client_ids) == [str(k) for k in range(30)]
    for k, (x, y) in enumerate(devices):
        n_test = int(round(0.1 * len(y)))
        assert test.num_examples(str(k)) == n_test
        assert train.num_examples(str(k)) == len(y) - n_test
    first = next(iter(test.create_tf_dataset_for_client("0")))
    np.testing.assert_array_equal(first[0].numpy(), devices[0][0][len(devices[0][1]) - int(round(0.1 * len(devices[0][1])))])


def test_bad_parameters():
    with pytest.raises(ValueError, match="alpha=-1 and beta=1 must be >= 0"):
        generate_synthetic(-1, 1)
    with pytest.raises(ValueError, match=r"test_fraction=1.5 must be in \[0, 1\)"):
        load_synthetic(test_fraction=1.5)
