"""Tiny configs shared by the experiment and CLI tests: a few seconds per run on one CPU core."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_CONFIG = """\
rounds = 4
seed = 3
[data]
name = "synthetic"
num_devices = 6
[model]
name = "logreg"
[client]
shuffle_buffer = 50   # exercises the (seed, round, client)-seeded shuffle on resume
[sampler]
cohort_size = 3
[evaluation]
every = 2
[checkpoint]
every = 2
keep = 2
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG, encoding="utf-8")
    return path
