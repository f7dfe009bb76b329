"""Accuracy against epsilon for fedsim's four privacy mechanisms on one workload.

FedAvg, multinomial logistic regression, FedProx's Synthetic IID with 1,000
devices, 100 clients per round for 60 rounds, delta = 1e-5. Each mechanism
runs at several noise multipliers z through the ordinary config path
(``fedsim.experiment.run_experiment``), so the epsilon plotted is the one the
run itself reports in ``metrics.jsonl``:

- central DP-FedAvg, fixed clip norm, uniform fixed-size cohorts (replace-one);
- DP-FedAvg with private adaptive clipping (Andrew et al. 2021), same sampling;
- DP-FTRL (tree aggregation, restart every epoch), round-robin cohorts;
- distributed discrete Gaussian through secure aggregation (20 bits), uniform cohorts.

    python -m benchmarks.privacy_tradeoff [--rounds 60] [--devices 1000]

writes ``benchmarks/results/privacy_tradeoff.{md,png}``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from fedsim.experiment import config_from_dict, run_experiment  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
NOISE_MULTIPLIERS = (1.0, 2.0, 4.0, 8.0)
CLIP_NORM = 0.3
MECHANISMS = {
    "DP-FedAvg (fixed clip)": ({"name": "uniform"}, {"name": "dp_fedavg"}),
    "DP-FedAvg (adaptive clip)": ({"name": "uniform"}, {"name": "dp_fedavg", "target_quantile": 0.5}),
    "DP-FTRL (tree)": ({"name": "round_robin"}, {"name": "dp_ftrl"}),
    "distributed DP (DDGauss, 20 bits)": ({"name": "uniform"}, {"name": "distributed_dp", "bits": 20}),
}


def config(sampler: dict, mechanism: dict | None, z: float, rounds: int, devices: int, cohort: int) -> dict:
    raw = {
        "rounds": rounds, "seed": 0,
        "data": {"name": "synthetic", "num_devices": devices, "iid": True},
        "model": {"name": "logreg"},
        "client": {"weighted": False, "batch_size": 10, "local_epochs": 1},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.05},
        "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "sampler": {**sampler, "cohort_size": cohort},
        "evaluation": {"every": rounds},
        "checkpoint": {"every": 0},
    }
    if mechanism is not None:
        raw["aggregator"] = [{**mechanism, "clip_norm": CLIP_NORM, "noise_multiplier": z}]
    return raw


def run(raw: dict, workdir: pathlib.Path, name: str) -> dict:
    summary = run_experiment(config_from_dict(raw), workdir / name, progress=False)
    return {"accuracy": summary["final_eval"].get("accuracy"),
            "epsilon": (summary.get("privacy") or {}).get("epsilon"), "wall_time_s": summary["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--cohort", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        baseline = run(config({"name": "uniform"}, None, 0.0, args.rounds, args.devices, args.cohort), workdir, "base")
        for label, (sampler, mechanism) in MECHANISMS.items():
            for z in NOISE_MULTIPLIERS:
                raw = config(sampler, mechanism, z, args.rounds, args.devices, args.cohort)
                result = run(raw, workdir, f"{mechanism['name']}-{z}-{len(rows)}")
                rows.append({"mechanism": label, "noise_multiplier": z, **result})
                print(json.dumps(rows[-1]), flush=True)
    write(rows, baseline, args)


def write(rows: list[dict], baseline: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label in MECHANISMS:
        points = sorted((r["epsilon"], r["accuracy"]) for r in rows if r["mechanism"] == label)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.axhline(baseline["accuracy"], color="grey", linestyle="--", label="no DP")
    axes.set_xscale("log")
    axes.set_xlabel("epsilon at delta = 1e-5 (as the run reports it)")
    axes.set_ylabel("test accuracy after the last round")
    axes.set_title(f"Synthetic IID, {args.devices} devices, {args.cohort}/round, {args.rounds} rounds")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "privacy_tradeoff.png", dpi=100)
    lines = [
        "# Accuracy against epsilon, four privacy mechanisms",
        "",
        f"`python -m benchmarks.privacy_tradeoff --rounds {args.rounds} --devices {args.devices} "
        f"--cohort {args.cohort}`; clip norm {CLIP_NORM}; no DP: accuracy {baseline['accuracy']:.4f}.",
        "",
        "| mechanism | z | epsilon | test accuracy | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {r['mechanism']} | {r['noise_multiplier']} | {r['epsilon']:.3g} | {r['accuracy']:.4f} | "
          f"{r['wall_time_s']:.1f} |" for r in rows),
    ]
    (RESULTS / "privacy_tradeoff.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
