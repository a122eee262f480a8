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
