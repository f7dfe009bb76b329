"""Without Ray installed, fedsim imports and the Ray executor says which extra to install."""

import subprocess
import sys

import pytest

from fedsim.execution import ray_executor


def test_choosing_ray_without_it_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    with pytest.raises(ImportError, match=r"pip install 'fedsim\[ray\]'"):
        ray_executor.RayExecutor(lambda: None)


def test_fedsim_and_the_ray_modules_import_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None; import fedsim; "
        "import fedsim.execution.ray_executor, fedsim.execution.ray_pool"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
