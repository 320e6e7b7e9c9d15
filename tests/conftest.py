"""Shared fixtures: tiny random-weight DiffusionGemma checkpoints built once per test session."""

from __future__ import annotations

import pytest

from canvas_ls.model.loading import load_model
from canvas_ls.model.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", noise="uniform")


@pytest.fixture(scope="session")
def tiny_absorbing_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-abs") / "model", noise="absorbing")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture(scope="session")
def tiny_absorbing(tiny_absorbing_dir):
    return load_model(tiny_absorbing_dir)


@pytest.fixture(scope="session")
def tiny64(tiny_dir):
    """The tiny model in float64: for tests that compare numerically different but equivalent paths."""
    return load_model(tiny_dir, dtype="float64")
