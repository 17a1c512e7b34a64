"""Fixtures shared by the integration tests that need a deployed world (``serving_world``).

``template`` builds the world once per test module through the real CLI; ``world`` copies it into
the test's own directory, changes into it and clears the environment. A module that defines its
own fixture of the same name uses that one instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.serving_world import ENV_CLEAR, build, copy_world


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serving-template")
    build(path)
    return path


@pytest.fixture
def world(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy_world(template, tmp_path)
    monkeypatch.chdir(tmp_path)
    for var in ENV_CLEAR:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLLEDGER_ACTOR", "dev@example.com")
    return tmp_path
