"""The accountant is built from the run: its sampler and its population, never declared twice."""
from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

import tensorflow as tf

from fedsim import cli
from fedsim.algorithms import build_fedavg
from fedsim.data import ClientData
from fedsim.aggregators import DPFedAvg
from fedsim.privacy import Participation, ParticipationError
from fedsim.simulation import PoissonSampler, UniformSampler, simulate
from fedsim.simulation.sampling import RoundRobinSampler
from tests.algorithms.helpers import IDS, initial_params, make_clients, model_fn

DP_CONFIG = """\
rounds = {rounds}
seed = 1
[data]
name = "synthetic"
num_devices = 30
[model]
name = "logreg"
[sampler]
{sampler}
[[aggregator]]
name = "dp_fedavg"
clip_norm = 0.5
noise_multiplier = 1.1
{extra}
"""


def write_config(tmp_path: Path, sampler: str, extra: str = "", rounds: int = 3) -> Path:
    path = tmp_path / "dp.toml"
    path.write_text(DP_CONFIG.format(rounds=rounds, sampler=sampler, extra=extra), encoding="utf-8")
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_samplers_state_what_they_prove():
    assert UniformSampler(10).participation(30) == Participation.fixed_size(30, 10)
    assert PoissonSampler(0.1).participation(30) == Participation.poisson(30, 0.1)
    # Any 3 consecutive rounds of a 10-per-round walk over 30 clients visit each client at most once.
    assert RoundRobinSampler(10).participation(30) == Participation.none(30, 10, epoch_rounds=3)


def test_poisson_sampler_draws_each_client_with_probability_q():
    sampler, population = PoissonSampler(0.2, seed=5), 50
    draws = np.zeros(population)
    for round_num in range(1, 2001):
        cohort = sampler.sample(round_num, population)
        assert len(set(cohort.tolist())) == len(cohort)
        draws[cohort] += 1
    frequency = draws / 2000  # each ~ Binomial(2000, 0.2) / 2000: std 0.0089
    assert np.all(np.abs(frequency - 0.2) < 5 * 0.0089)
    np.testing.assert_array_equal(sampler.sample(7, population), PoissonSampler(0.2, seed=5).sample(7, population))


def test_every_round_records_epsilon_and_what_it_assumes(tmp_path):
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(write_config(tmp_path, 'name = "poisson"\nrate = 0.2')), "--out", str(run_dir),
                     "--quiet"]) == 0
    history = records(run_dir)
    assert len(history) == 3
    for round_num, record in enumerate(history, start=1):
        privacy = record["privacy"]
        assert privacy["sampling"] == "poisson" and privacy["relation"] == "add_or_remove_one"
        assert privacy["accountant"] == "rdp" and privacy["delta"] == 1e-5 and privacy["rate"] == 0.2
        assert privacy["population_size"] == 30 and privacy["rounds"] == round_num
        # Independently: dp-accounting's own Poisson-subsampled Gaussian, composed round_num times.
        accountant = rdp.RdpAccountant()
        accountant.compose(dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.1)), round_num)
        assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
        assert record["measurements"]["dp/epsilon"] == privacy["epsilon"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["privacy"] == history[-1]["privacy"]


def test_the_privacy_report_states_the_chain_sampling_accountant_and_epsilon(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, "cohort_size = 10", 'target_quantile = 0.5\nclipped_count_stddev = 2.0', rounds=4)
    assert cli.main(["run", str(config), "--out", str(run_dir), "--quiet"]) == 0
    assert "privacy:" in capsys.readouterr().out
    assert cli.main(["privacy", str(run_dir)]) == 0
    report = capsys.readouterr().out
    # Fixed-size cohorts of 10 from 30: replace-one, so dp-accounting gets z / 2 (sensitivity 2C).
    accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(30, 10, dp_accounting.GaussianDpEvent(0.55)), 4)
    for expected in ("aggregator chain: dp_fedavg", "mechanism:        DPFedAvg", "clipping=adaptive",
                     "noise_multiplier=1.1", "fixed_size (cohort of 10 from 30 clients)", "replace_one",
                     "accountant:       rdp, delta = 1e-05", f"({accountant.get_epsilon(1e-5):.4g}, 1e-05)-DP after 4"):
        assert expected in report, (expected, report)
    assert [line.split()[0] for line in report.splitlines() if line[:5].strip().isdigit()] == ["1", "2", "3", "4"]


def test_the_privacy_report_of_a_run_without_a_mechanism_says_so(tmp_path, capsys, tiny_config):
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(tiny_config), "--out", str(run_dir), "--quiet"]) == 0
    assert cli.main(["privacy", str(run_dir)]) == 2
    assert "holds no privacy mechanism" in capsys.readouterr().err


def test_an_empty_poisson_cohort_is_a_normal_round_whose_noise_is_still_released(tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, 'name = "poisson"\nrate = 0.02', rounds=6)  # P(empty) = 0.98^30 = 0.55
    assert cli.main(["run", str(config), "--out", str(run_dir), "--quiet"]) == 0
    history = records(run_dir)
    empty = [r for r in history if r["num_clients"] == 0]
    assert empty, [r["num_clients"] for r in history]
    for record in empty:
        assert record["num_examples"] == 0 and "dp/noise_std" in record["measurements"]
        assert record["privacy"]["rounds"] == record["round"]  # accounted like any other round


def test_the_issues_mismatched_declaration_is_an_error_before_any_round(tmp_path, capsys):
    """30 clients, cohort 10, declaring 1e6 and 1: it ran, reported epsilon 0.0 and divided by 1."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, "cohort_size = 10", 'population_size = 1000000\nclients_per_round = 1')
    assert cli.main(["run", str(config), "--out", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "declares population_size=1000000, but the run has population_size=30" in error
    assert not (run_dir / "metrics.jsonl").exists() or records(run_dir) == []


def test_simulate_refuses_a_mechanism_accounting_another_sampling():
    clients = make_clients()
    data = ClientData.from_clients_and_tf_fn(list(IDS), lambda c: tf.data.Dataset.from_tensor_slices(
        clients[IDS.index(c)]))
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, participation=Participation.poisson(4, 0.5))
    process = build_fedavg(model_fn(initial_params()), aggregator=dp)
    with pytest.raises(ParticipationError, match="accounts .*poisson.* but the run samples .*fixed_size"):
        simulate(process, data, rounds=1, sampler=UniformSampler(2), progress=False)


def test_an_empty_cohort_without_a_mechanism_leaves_the_model_as_it_was():
    process = build_fedavg(model_fn(initial_params()))
    state = process.initialize()
    result = process.next(state, [], client_ids=[])
    assert result.num_clients == 0 and result.num_examples == 0 and result.state.round_num == 1
    for before, after in zip(state.model_weights.trainable, result.state.model_weights.trainable):
        np.testing.assert_array_equal(before, after)


def test_an_empty_cohort_with_a_mechanism_releases_exactly_its_noise():
    """No client: the model moves by the mechanism's noise alone, z C / m per coordinate in law."""
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, participation=Participation.poisson(1000, 0.01), seed=3)
    process = build_fedavg(model_fn(initial_params()), aggregator=dp)
    state = process.initialize()
    result = process.next(state, [], client_ids=[])
    moved = np.concatenate([(a - b).ravel() for a, b in zip(result.state.model_weights.trainable,
                                                           state.model_weights.trainable)])
    expected = np.random.default_rng([3, 0, 0]).normal(0.0, 1.0, moved.size) / 10  # z C / (q N), float32
    np.testing.assert_allclose(moved, expected, atol=1e-6)
    assert result.measurements["dp/num_clients"] == 0


def test_the_privacy_report_skips_lines_that_are_not_records(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(write_config(tmp_path, "cohort_size = 10", rounds=2)), "--out", str(run_dir),
                     "--quiet"]) == 0
    capsys.readouterr()
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write(b'7\n{"round": 3, "privacy": "lots"}\n\xff\xfe\n[[[[\n')
    assert cli.main(["privacy", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "after 2 rounds" in captured.out
    assert "skipped 3 records" in captured.err


def test_the_readmes_dp_config_runs(tmp_path):
    """The README's Differential privacy TOML, with a population and a model, runs and reports epsilon.

    400 devices: adaptive clipping's default count noise (q N / 20 = 1) must leave noise for the update.
    """
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "dp_fedavg" in b)
    config = tmp_path / "dp.toml"
    config.write_text('rounds = 2\n[data]\nname = "synthetic"\nnum_devices = 400\n[model]\nname = "logreg"\n'
                      + block, encoding="utf-8")
    assert cli.main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    privacy = records(tmp_path / "run")[-1]["privacy"]
    assert privacy["sampling"] == "poisson" and privacy["rate"] == 0.05 and privacy["epsilon"] > 0
