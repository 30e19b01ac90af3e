"""Shared test settings: small, deterministic, and quick on two CPU cores."""

from __future__ import annotations

import pytest
import torch

# Two cores are shared by everyone running tests; more threads only add contention.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator, so every random input of a test is the same on every run."""
    return torch.Generator().manual_seed(1234)
