"""The README's Python example runs as written (with fewer rounds)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_keras_fedavg_example_runs(tmp_path, monkeypatch):
    example = next(b for b in _python_blocks() if "build_fedavg" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example.replace("rounds=20", "rounds=2"), "README.md", "exec"), namespace)
    history = namespace["result"].history
    assert len(history) == 2 and 0.0 <= history[-1]["eval"]["accuracy"] <= 1.0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_algorithms_example_builds_processes_that_run(tmp_path, monkeypatch):
    blocks = _python_blocks()
    keras_example = next(b for b in blocks if "build_fedavg" in b and "simulate" in b)
    algorithms_example = next(b for b in blocks if "build_fedprox" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(keras_example.replace("rounds=20", "rounds=1"), "README.md", "exec"), namespace)
    exec(compile(algorithms_example, "README.md", "exec"), namespace)
    fedsim, train = namespace["fedsim"], namespace["train"]
    for name in ("fedprox", "fedadam", "robust"):
        result = fedsim.simulate(namespace[name], train, rounds=1,
                                 sampler=fedsim.UniformSampler(cohort_size=5, seed=0), progress=False)
        assert result.state.round_num == 1
    measurements = result.history[0]["measurements"]  # of the last one, the robust chain
    assert measurements["median/num_clients"] == 5
    assert measurements["clip/clip_norm"] == 1.0 and measurements["zeroing/norm_bound"] == 10.0
