"""Every example in configs/ loads and validates (none is run: some need downloaded data)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.experiment import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_there_are_examples():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_loads(path):
    assert load_config(path).rounds > 0
