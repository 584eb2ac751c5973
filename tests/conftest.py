from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Keep property tests quick in CI; `HYPOTHESIS_PROFILE=thorough pytest` runs more examples.
settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def peers() -> dict:
    """Values the real peer libraries returned (a copy of ../shared/reference/peers.json)."""
    with open(DATA / "peers.json") as f:
        raw = json.load(f)

    def arrays(node):
        if isinstance(node, dict):
            return {k: arrays(v) for k, v in node.items()}
        return np.asarray(node, dtype=np.float64)

    return arrays(raw)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


def pytest_collection_modifyitems(config, items) -> None:
    """Long runs (marker ``slow``) only when asked for: ``pytest -m slow``."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="a long run: `pytest -m slow` runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
