"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(20261123)


@pytest.fixture
def nyu_sample_dir() -> Path:
    """The real NYU sample PNGs (``../shared/data/nyu_sample``); skips when absent."""
    folder = SHARED_DATA / "nyu_sample"
    if not (folder / "reference.json").is_file():
        pytest.skip(f"real NYU sample data not found at {folder} (it ships beside the repository in CI)")
    return folder


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker gets one torch thread: workers x threads = cores, no spin-waiting."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
