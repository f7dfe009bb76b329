"""Malformed configs: each error names the key path, the bad value and what is allowed."""
from __future__ import annotations

import pytest

import fedsim

from fedsim.cli import main
from fedsim.experiment.config import ConfigError, config_to_toml, load_config

BASE = '''rounds = 3
[data]
name = "synthetic"
[model]
name = "logreg"
'''

CASES = {
    "unknown top-level key": (
        "round = 3\n" + BASE,
        ["(top level): unknown key 'round'; did you mean 'rounds'?"],
    ),
    "string for int": (
        BASE.replace("rounds = 3", 'rounds = "10"'),
        ["rounds: expected int, got str '10'"],
    ),
    "float for int": (
        BASE.replace("rounds = 3", "rounds = 10.5"),
        ["rounds: expected int, got float 10.5"],
    ),
    "bool for int": (
        "seed = true\n" + BASE,
        ["seed: expected int, got bool True"],
    ),
    "misspelled model name": (
        BASE.replace('"logreg"', '"logregg"'),
        ["model: unknown name 'logregg'; did you mean 'logreg'?", "allowed: ['char_lstm', 'cnn', 'custom'"],
    ),
    "missing data section": (
        'rounds = 3\n[model]\nname = "logreg"\n',
        ["data: missing: this key is required"],
    ),
    "data without a name": (
        'rounds = 3\n[data]\nalpha = 1.0\n[model]\nname = "logreg"\n',
        ["data: missing 'name'; choose one of ['arrays', 'emnist', 'leaf', 'shakespeare', 'synthetic']"],
    ),
    "data is not a table": (
        'rounds = 3\ndata = 7\n[model]\nname = "logreg"\n',
        ["data: expected a table with a 'name' key or a bare name, got int 7"],
    ),
    "a bare name that is not a block": (
        'rounds = 3\ndata = "synthetc"\n[model]\nname = "logreg"\n',
        ["data: unknown name 'synthetc'; did you mean 'synthetic'?"],
    ),
    "zero rounds": (
        BASE.replace("rounds = 3", "rounds = 0"),
        ["rounds: must be > 0, got 0"],
    ),
    "negative seed": (
        "seed = -1\n" + BASE,
        ["seed: must be >= 0, got -1"],
    ),
    "momentum out of range": (
        BASE + "[client_optimizer]\nmomentum = 1.5\n",
        ["client_optimizer.momentum: momentum=1.5 must be in [0, 1)"],
    ),
    "unknown key in a block": (
        BASE + "[sampler]\ncohort = 5\n",
        ["sampler: unknown key 'cohort'; did you mean 'cohort_size'?"],
    ),
    "misspelled optimizer": (
        BASE + '[server_optimizer]\nname = "adamm"\n',
        ["server_optimizer: unknown name 'adamm'; did you mean 'adam'?"],
    ),
    "empty hidden layers": (
        BASE.replace('name = "logreg"', 'name = "mlp"\nhidden = []'),
        ["model.hidden: must be a non-empty list of positive integers, got []"],
    ),
    "hidden layer sizes of the wrong type": (
        BASE.replace('name = "logreg"', 'name = "mlp"\nhidden = ["200"]'),
        ["model.hidden[0]: expected int, got str '200'"],
    ),
    "misspelled aggregator": (
        BASE + '[[aggregator]]\nname = "clip"\nclip_norm = 1.0\n[[aggregator]]\nname = "mean"\n',
        ["aggregator: step 0 has unknown aggregator name 'clip'; did you mean 'clipping'?"],
    ),
    "aggregator rule before a wrapper": (
        BASE + '[[aggregator]]\nname = "mean"\n[[aggregator]]\nname = "clipping"\nclip_norm = 1.0\n',
        ["aggregator: step 1 'clipping' wraps another aggregator, so it cannot be the last step"],
    ),
    "custom model function without a module": (
        BASE.replace('name = "logreg"', 'name = "custom"\nfunction = "make_model"'),
        ["model.function: must look like 'package.module:function', got 'make_model'"],
    ),
    "arrays data without a path": (
        BASE.replace('name = "synthetic"', 'name = "arrays"'),
        ["data.path: missing: this key is required"],
    ),
    "misspelled partitioner": (
        BASE.replace('name = "synthetic"', 'name = "arrays"\npath = "x.npz"\npartitioner = {name = "dirichlett"}'),
        ["data.partitioner: unknown name 'dirichlett'; did you mean 'dirichlet'?"],
    ),
    "keep no checkpoints": (
        BASE + "[checkpoint]\nkeep = 0\n",
        ["checkpoint.keep: must be > 0, got 0"],
    ),
    "several problems at once": (
        'rounds = "3"\n[data]\nname = "synthetic"\nalpha = "high"\n[model]\nname = "logreg"\n',
        ["rounds: expected int, got str '3'", "data.alpha: expected float, got str 'high'"],
    ),
    "client key in the algorithm table": (
        BASE + '[algorithm]\nname = "fedprox"\nmu = 0.1\nbatch_size = 20\n',
        ["algorithm: unknown key 'batch_size' for the algorithm named 'fedprox'; it belongs in the [client] table"],
    ),
    "misspelled hyperparameter": (
        BASE + '[algorithm]\nname = "fedprox"\nmuu = 0.1\n',
        ["algorithm: unknown key 'muu' for the algorithm named 'fedprox'; did you mean 'mu'? (allowed: ['mu'])",
         "algorithm.mu: missing: this key is required"],
    ),
    "hyperparameter of the wrong type": (
        BASE + '[algorithm]\nname = "qffl"\nq = "fair"\n',
        ["algorithm.q: expected float, got str 'fair'"],
    ),
    "hyperparameter out of range": (
        BASE + '[algorithm]\nname = "feddyn"\nalpha = 0.0\n',
        ["algorithm.alpha: alpha=0.0 must be > 0"],
    ),
    "momentum for an algorithm that assumes plain SGD": (
        BASE + '[algorithm]\nname = "fednova"\n[client_optimizer]\nmomentum = 0.9\n',
        ["algorithm: algorithm 'fednova' runs plain local SGD"],
    ),
    "a client optimizer for FedSGD": (
        BASE + '[algorithm]\nname = "fedsgd"\n[client_optimizer]\nlearning_rate = 0.1\n',
        ["algorithm: algorithm 'fedsgd' has no client optimizer (its server optimizer takes the step)"],
    ),
    "weighting for an algorithm that fixes it": (
        BASE + '[algorithm]\nname = "qffl"\nq = 1.0\n[client]\nweighted = true\n',
        ["algorithm: algorithm 'qffl' fixes how clients are weighted"],
    ),
    "local epochs for FedSGD": (
        BASE + '[algorithm]\nname = "fedsgd"\n[client]\nlocal_epochs = 3\n',
        ["client.local_epochs: fedsgd trains on one whole-dataset batch once per round"],
    ),
    "misspelled schedule": (
        BASE + '[client_optimizer]\nlearning_rate = { name = "exp_decay", initial = 0.1 }\n',
        ["client_optimizer.learning_rate: unknown name 'exp_decay'"],
    ),
    "unreadable TOML": (
        BASE + "[evaluation\nevery = 2\n",
        ["is not valid TOML", "line 6"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_config_is_rejected_with_its_key_path(tmp_path, name, capsys):
    text, expected = CASES[name]
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    for fragment in expected:
        assert fragment in str(raised.value)
    # The same through the command line: exit code 2, the message, no traceback, nothing made.
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: ") and "Traceback" not in err
    for fragment in expected:
        assert fragment in err
    assert not out.exists() and path.read_text(encoding="utf-8") == text


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"rounds = 3\n# \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_override_without_equals_sign(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--set 'rounds': expected key.path=value"):
        load_config(path, ["rounds"])


def test_override_into_a_value_that_is_not_a_table(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(ConfigError, match="'rounds' is not a table"):
        load_config(path, ["rounds.every=3"])


def test_overrides_are_typed_as_toml_values(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE, encoding="utf-8")
    config = load_config(path, ["rounds=7", "model.name=mlp", "model.hidden=[16, 8]", "client_optimizer.nesterov=true"])
    assert (config.rounds, config.model.name, config.model.hidden) == (7, "mlp", [16, 8])
    assert config.client_optimizer.nesterov is True


def test_a_bare_name_sets_a_block_with_its_defaults(tmp_path):
    """``--set executor=ray`` works like ``--set 'executor={name="ray"}'``, for every named block."""
    path = tmp_path / "config.toml"
    path.write_text(BASE, encoding="utf-8")
    config = load_config(path, ["executor=ray", "algorithm=fednova", "server_optimizer=adam"])
    assert (config.executor.name, config.executor.num_actors) == ("ray", None)
    assert (config.algorithm.name, config.client.batch_size) == ("fednova", 10)
    assert config.server_optimizer == fedsim.optimizers.Adam()  # the library's class, with its own defaults


def test_optimizer_tables_load_into_the_library_classes_with_schedules(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE + """[client_optimizer]
name = "sgd"
learning_rate = { name = "warmup_then_decay", warmup_rounds = 5, after_warmup = { name = "inverse_sqrt_decay", initial = 0.1 } }
[server_optimizer]
name = "yogi"
""", encoding="utf-8")
    config = load_config(path)
    schedules = fedsim.optimizers
    assert config.client_optimizer == fedsim.SGD(schedules.WarmupThenDecay(5, schedules.InverseSqrtDecay(0.1)))
    assert config.server_optimizer == fedsim.optimizers.Yogi()
    # The resolved config writes the schedule back as tables, and reloads to the same config.
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(again) == config


def test_unset_client_blocks_resolve_to_the_algorithms_own_defaults(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE + '[algorithm]\nname = "mime_lite"\n', encoding="utf-8")
    config = load_config(path)
    assert config.client_optimizer == fedsim.SGD(0.01, momentum=0.9)  # mime_lite's default base optimizer
    assert config.client.weighted is True
    path.write_text(BASE + '[algorithm]\nname = "scaffold"\n', encoding="utf-8")
    config = load_config(path)
    assert (config.client_optimizer, config.client.weighted) == (fedsim.SGD(0.01), False)
    path.write_text(BASE + '[algorithm]\nname = "fedsgd"\n', encoding="utf-8")
    assert load_config(path).client_optimizer is None  # FedSGD has none
