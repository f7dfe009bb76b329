"""A catalogue of bad inputs: each fails with fedsim's own error type and a message that
names the bad value and says how to fix it.

One case per row: ``id: (call, error type, message pattern)``. A case's call
builds its bad input itself (files under a fresh temporary directory), so
cases are independent. Add a row when you add an error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import sqlite3
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.aggregators import (
    AggregationError,
    Clipping,
    Krum,
    MeanAggregator,
    TrimmedMean,
)
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_newest,
    save_checkpoint,
)
from fedsim.data import (
    ClientData,
    ClientDataError,
    partition,
    read_sql_client_data,
    write_sql_client_data,
)
from fedsim.data.leaf import read_leaf_dir
from fedsim.experiment.config import ConfigError, config_from_dict, load_config
from fedsim.learning.process import ProcessError
from fedsim.models.enhanced import enhance
from fedsim.models.keras_model import KerasModelError
from fedsim.models.model_weights import WeightsMismatchError
from fedsim.simulation.sampling import PoissonSampler, SamplingError, UniformSampler, WeightedSampler

CONFIG = {"rounds": 2, "data": {"name": "synthetic"}, "model": {"name": "logreg"}}
INPUT_SPEC = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
CLIENT = (np.zeros((3, 4), np.float32), np.zeros(3, np.int32))


# Builders for the cases ------------------------------------------------------------------
def keras_model(**kwargs):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    arguments = {
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "input_spec": INPUT_SPEC,
        **kwargs,
    }
    return fedsim.from_keras_model(model, **arguments)


@functools.cache
def process():
    return fedsim.build_fedavg(keras_model, batch_size=2)


def population(num_clients: int = 3) -> ClientData:
    return ClientData.from_tensor_slices({f"c{i}": CLIENT for i in range(num_clients)})


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def write_leaf(directory: Path, shard: dict | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    content = shard if isinstance(shard, bytes) else json.dumps(shard).encode()
    (directory / "shard.json").write_bytes(content)
    return directory


LEAF_SHARD = {
    "users": ["u1"],
    "num_samples": [2],
    "user_data": {"u1": {"x": [[0.0], [1.0]], "y": [0, 1]}},
}


def write_sqlite(path: Path) -> Path:
    data = ClientData.from_tensor_slices({"a": {"x": np.float32([[1.0, 2.0]]), "y": np.int64([3])}})
    write_sql_client_data(path, {"train": data})
    return path


def drop_table(path: Path, table: str) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(f"DROP TABLE {table}")
        connection.commit()
    return path


def saved_checkpoint(directory: Path) -> Path:
    return save_checkpoint(directory, 5, {"weights": [np.ones(3, np.float32)], "step": 5})


def flip_last_byte(path: Path) -> Path:
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    return path


# The catalogue ---------------------------------------------------------------------------
# Each call takes the case's temporary directory.
CASES = {
    # Configs (more in tests/experiment/test_config_errors.py)
    "config_infinite_learning_rate": (
        lambda tmp: config_from_dict({**CONFIG, "client_optimizer": {"learning_rate": math.inf}}),
        ConfigError,
        "client_optimizer.learning_rate: expected a finite number, got inf",
    ),
    "config_block_name_not_a_string": (
        lambda tmp: config_from_dict({**CONFIG, "model": {"name": 5}}),
        ConfigError,
        r"model: 'name' must be a string, got int 5; choose one of \['char_lstm'",
    ),
    "config_file_not_utf8": (
        lambda tmp: load_config(write_file(tmp / "run.toml", b"rounds = 1 # \xff")),
        ConfigError,
        "run.toml' is not UTF-8 text",
    ),
    "config_path_is_a_directory": (
        lambda tmp: load_config(tmp),
        ConfigError,
        "is a directory; give a .toml file",
    ),
    "config_file_missing": (
        lambda tmp: load_config(tmp / "nope.toml"),
        ConfigError,
        "nope.toml' does not exist",
    ),
    "config_override_without_value": (
        lambda tmp: config_from_dict(CONFIG, ["rounds"]),
        ConfigError,
        "--set 'rounds': expected key.path=value, e.g. --set rounds=5",
    ),
    "config_override_through_a_number": (
        lambda tmp: config_from_dict(CONFIG, ["rounds.x=1"]),
        ConfigError,
        "'rounds' is not a table",
    ),
    # LEAF files
    "leaf_truncated_json": (
        lambda tmp: read_leaf_dir(write_leaf(tmp, json.dumps(LEAF_SHARD).encode()[:30])),
        ClientDataError,
        r"shard.json is not valid JSON .*truncated, regenerate it",
    ),
    "leaf_not_utf8": (
        lambda tmp: read_leaf_dir(write_leaf(tmp, b'{"users": ["\xff"]}')),
        ClientDataError,
        "shard.json is not UTF-8 text",
    ),
    "leaf_num_samples_mismatch": (
        lambda tmp: read_leaf_dir(write_leaf(tmp, {**LEAF_SHARD, "num_samples": [3]})),
        ClientDataError,
        "user 'u1' has num_samples=3 but 2 entries in 'x'",
    ),
    "leaf_users_not_a_list": (
        lambda tmp: read_leaf_dir(write_leaf(tmp, {**LEAF_SHARD, "users": "u1"})),
        ClientDataError,
        "`users` and `num_samples` must be lists .* got str",
    ),
    "leaf_user_data_not_an_object": (
        lambda tmp: read_leaf_dir(write_leaf(tmp, {**LEAF_SHARD, "user_data": {"u1": [1, 2]}})),
        ClientDataError,
        "user 'u1': `user_data` entry must be an object with 'x' and 'y', got list",
    ),
    "leaf_no_shards": (
        lambda tmp: read_leaf_dir(tmp),
        ClientDataError,
        r"no LEAF \*.json shards .* point to e.g.",
    ),
    "leaf_fractional_label": (  # train and test writers may differ (LEAF's split by user): not an error
        lambda tmp: read_leaf_dir(
            write_leaf(tmp, {**LEAF_SHARD, "user_data": {"u1": {"x": [[0.0], [1.0]], "y": [0, 0.5]}}})
        ),
        ClientDataError,
        r"label 0.5 at position 1 of 'y' is not a whole number; labels must be integer class indices",
    ),
    # SQLite files
    "sqlite_file_is_not_sqlite": (
        lambda tmp: read_sql_client_data(write_file(tmp / "x.sqlite", b"not a database" * 100)),
        ClientDataError,
        "cannot be read as a SQLite database .* write it again with write_sql_client_data",
    ),
    "sqlite_file_missing": (
        lambda tmp: read_sql_client_data(tmp / "none.sqlite"),
        ClientDataError,
        "no SQLite file at .*none.sqlite; check the path",
    ),
    "sqlite_feature_of_wrong_dtype": (
        lambda tmp: read_sql_client_data(
            write_sqlite(tmp / "d.sqlite"),
            features={"x": tf.TensorSpec([2], tf.float32), "y": tf.TensorSpec([], tf.string)},
        ),
        ClientDataError,
        "first example .* does not parse .*Key: y.*pass the features the file was written with",
    ),
    "sqlite_feature_of_unfixed_shape": (
        lambda tmp: read_sql_client_data(
            write_sqlite(tmp / "d.sqlite"), features={"x": tf.TensorSpec([None], tf.float32)}
        ),
        ClientDataError,
        r"feature 'x': shape \(None,\) is not fixed; .* pad or reshape",
    ),
    "sqlite_unknown_split": (
        lambda tmp: read_sql_client_data(write_sqlite(tmp / "d.sqlite"), split_name="validation"),
        ClientDataError,
        r"no clients for split_name='validation'; splits present: \['train'\]",
    ),
    "sqlite_missing_metadata_table": (
        lambda tmp: read_sql_client_data(
            drop_table(write_sqlite(tmp / "d.sqlite"), "client_metadata")
        ),
        ClientDataError,
        "not in TFF's SQLite format: table 'client_metadata' needs columns",
    ),
    # Populations and partitioners
    "partition_more_clients_than_examples": (
        lambda tmp: partition.iid(3, 5, seed=0),
        ClientDataError,
        "cannot cut 3 examples into 5 parts",
    ),
    "partition_dirichlet_alpha_zero": (
        lambda tmp: partition.dirichlet_label_skew([0, 1, 1, 0], 2, alpha=0.0, seed=0),
        ClientDataError,
        "alpha must be > 0, got 0.0",
    ),
    "partition_labels_not_1d": (
        lambda tmp: partition.pathological_shards(np.zeros((4, 2)), 2, 1, seed=0),
        ClientDataError,
        r"labels must be 1-D .* got shape \(4, 2\)",
    ),
    "partition_min_examples_too_large": (
        lambda tmp: partition.quantity_skew(10, 4, 1.5, seed=0, min_examples=3),
        ClientDataError,
        "min_examples=3 for 4 clients needs 12 examples, only 10 given; lower min_examples",
    ),
    "partition_ids_do_not_match_parts": (
        lambda tmp: partition.to_client_data(CLIENT, partition.iid(3, 3, seed=0), client_ids=["a"]),
        ClientDataError,
        "1 client ids for 3 parts; give one id per part",
    ),
    "client_arrays_of_unequal_length": (
        lambda tmp: ClientData.from_tensor_slices({"a": (np.zeros((3, 4)), np.zeros(2))}),
        ClientDataError,
        r"client 'a': every array needs the same first \(example\) axis",
    ),
    "client_id_unknown": (
        lambda tmp: population().create_tf_dataset_for_client("zz"),
        ClientDataError,
        "unknown client id 'zz'; .* Use one of `client_data.client_ids`",
    ),
    # Models
    "keras_model_not_a_keras_model": (
        lambda tmp: fedsim.from_keras_model(
            "model", loss=keras.losses.MeanSquaredError(), input_spec=INPUT_SPEC
        ),
        KerasModelError,
        "expected a keras.Model, got str",
    ),
    "keras_loss_not_callable": (
        lambda tmp: keras_model(loss="mse-ish"),
        KerasModelError,
        "loss must be a callable .* got 'mse-ish'",
    ),
    "keras_metric_not_a_metric": (
        lambda tmp: keras_model(metrics=["accuracy"]),
        KerasModelError,
        "metrics must be keras.metrics.Metric instances, got 'accuracy'; e.g.",
    ),
    "keras_input_spec_without_x": (
        lambda tmp: fedsim.from_keras_model(
            keras.Sequential([keras.layers.Dense(2)]),  # not built: input_spec must say how
            loss=keras.losses.MeanSquaredError(),
            input_spec={"features": INPUT_SPEC[0]},
        ),
        KerasModelError,
        r"input_spec must describe a whole batch, \(x_spec, y_spec\) or \{'x': ..., 'y': ...\}, "
        r"got \{'features': .*; e.g. \(tf.TensorSpec",
    ),
    "enhance_not_a_model": (
        lambda tmp: enhance(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])),
        TypeError,
        "got Sequential; wrap a Keras model with fedsim.from_keras_model",
    ),
    # Model weights
    "weights_from_another_architecture": (
        lambda tmp: fedsim.ModelWeights([np.ones(3)]).assign_weights_to(keras_model()),
        WeightsMismatchError,
        "1 trainable arrays do not fit a model with 2 trainable variables; were these",
    ),
    "weights_of_another_shape": (
        lambda tmp: fedsim.ModelWeights([np.ones(2)]) + fedsim.ModelWeights([np.ones(3)]),
        WeightsMismatchError,
        r"has shape \(2,\), but the weights give shape \(3,\)",
    ),
    # Aggregators
    "aggregator_chain_empty": (
        lambda tmp: fedsim.build_aggregator([]),
        AggregatorConfigError,
        r"empty aggregator spec; .*'mean'",
    ),
    "aggregator_rule_before_a_wrapper": (
        lambda tmp: fedsim.build_aggregator([{"name": "median"}, {"name": "mean"}]),
        AggregatorConfigError,
        "step 0 'median' aggregates on its own, so it must be the last step",
    ),
    "aggregator_misspelled_parameter": (
        lambda tmp: fedsim.build_aggregator([{"name": "clipping", "clip": 1.0}, {"name": "mean"}]),
        AggregatorConfigError,
        "step 0 'clipping' has no parameter 'clip'; did you mean 'clip_norm'",
    ),
    "aggregator_trimmed_mean_beta_too_large": (
        lambda tmp: TrimmedMean(beta=0.7),
        AggregatorConfigError,
        r"TrimmedMean: beta=0.7 must be in \[0",
    ),
    "aggregator_negative_clip_norm": (
        lambda tmp: Clipping(MeanAggregator(), clip_norm=-1.0),
        AggregatorConfigError,
        "Clipping: clip_norm=-1.0 must be a finite number > 0",
    ),
    "aggregator_krum_with_too_few_clients": (
        lambda tmp: Krum(num_byzantine=2).next(
            Krum(num_byzantine=2).initialize(), [[np.ones(2)]] * 3, np.ones(3)
        ),
        AggregationError,
        "needs at least .* got 3; sample more clients per round or lower num_byzantine",
    ),
    # Samplers
    "sampler_cohort_larger_than_population": (
        lambda tmp: UniformSampler(cohort_size=20).sample(1, 10),
        SamplingError,
        "cohort_size=20 is larger than the population of 10 clients; lower cohort_size",
    ),
    "sampler_weights_not_one_per_client": (
        lambda tmp: WeightedSampler(cohort_size=1, client_weights=[1.0, 2.0]).sample(1, 3),
        SamplingError,
        "client_weights has 2 entries but the population has 3 clients; give one weight",
    ),
    "sampler_negative_weight": (
        lambda tmp: WeightedSampler(cohort_size=1, client_weights=[1.0, -2.0]),
        ValueError,
        "client_weights must be a 1-D sequence of finite numbers >= 0, one per client",
    ),
    # Processes and simulate
    "fedavg_batch_size_zero": (
        lambda tmp: fedsim.build_fedavg(keras_model, batch_size=0),
        ValueError,
        "batch_size=0 must be a positive integer or None",
    ),
    "process_state_not_a_server_state": (
        lambda tmp: process().next({"round_num": 0}, [tf.data.Dataset.from_tensor_slices(CLIENT)]),
        ProcessError,
        "state must be a ServerState from initialize",
    ),
    "poisson_rate_zero": (  # an empty cohort is an ordinary round; a sampler that only draws them is not
        lambda tmp: PoissonSampler(0.0),
        SamplingError,
        "rate=0.0 must be a probability in",
    ),
    "process_ids_do_not_match_datasets": (
        lambda tmp: process().next(
            process().initialize(),
            [tf.data.Dataset.from_tensor_slices(CLIENT)],
            client_ids=["a", "b"],
        ),
        ProcessError,
        "got 1 client datasets but 2 client ids; pass one id per dataset",
    ),
    "simulate_negative_rounds": (
        lambda tmp: fedsim.simulate(process(), population(), -1, UniformSampler(cohort_size=1)),
        ValueError,
        "rounds=-1 must be >= 0",
    ),
    "simulate_negative_eval_every": (
        lambda tmp: fedsim.simulate(
            process(), population(), 1, UniformSampler(cohort_size=1), eval_every=-1
        ),
        ValueError,
        r"eval_every=-1 must be >= 0 \(0 turns evaluation off\)",
    ),
    # Checkpoints
    "checkpoint_missing": (
        lambda tmp: load_checkpoint(tmp / "round-000001", {}),
        CheckpointError,
        "round-000001: state.json is missing or unreadable",
    ),
    "checkpoint_arrays_corrupted": (
        lambda tmp: load_checkpoint(
            flip_last_byte(saved_checkpoint(tmp) / "arrays.npz").parent, {}
        ),
        CheckpointError,
        "arrays.npz does not match its SHA-256 in state.json",
    ),
    "checkpoint_from_another_model": (
        lambda tmp: load_checkpoint(
            saved_checkpoint(tmp), {"weights": [np.ones(4, np.float32)], "step": 0}
        ),
        CheckpointError,
        r"at weights\[0\]: checkpoint has float32 array of shape \[3\], the run has float32 "
        r"array of shape \[4\]",
    ),
    "checkpoint_directory_empty": (
        lambda tmp: load_newest(tmp, {}),
        CheckpointError,
        r"no readable checkpoint in .* \(there are none\)",
    ),
    "checkpoint_leaf_not_an_array": (
        lambda tmp: save_checkpoint(tmp, 1, {"callback": print}),
        TypeError,
        "cannot checkpoint a leaf of type builtin_function_or_method",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_with_a_named_error_and_fix(case, tmp_path):
    call, error_type, pattern = CASES[case]
    with pytest.raises(error_type) as raised:
        call(tmp_path)
    assert re.search(pattern, str(raised.value)), str(raised.value)
