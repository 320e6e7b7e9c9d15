"""Shared fixtures: tiny random-weight DiffusionGemma checkpoints built once per test session, and for
each test a directory of its own for what warm-ups record (model/measured.py), so that no test takes a
decision another test's warm-up measured (and none writes into the user's cache)."""

from __future__ import annotations

import pytest

from canvas_ls.model.loading import load_model
from canvas_ls.model.tiny import build_tiny_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _session_measured_dir(tmp_path_factory):
    """For what starts before a test's own directory is set (module fixtures: the spawned engine)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CANVAS_LS_MEASURED_DIR", str(tmp_path_factory.mktemp("measured")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def measured_dir(tmp_path, monkeypatch):
    """Where this test's warm-ups (and the servers it starts) record what they measured."""
    path = tmp_path / "measured"
    monkeypatch.setenv("CANVAS_LS_MEASURED_DIR", str(path))
    return path


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
