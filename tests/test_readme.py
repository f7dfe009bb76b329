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
