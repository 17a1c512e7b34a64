"""Without the mlflow extra the mlflow backend says, in one line, how to install it
(after fairlearn's ``test/install/test_no_matplotlib.py``)."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest
from click.testing import CliRunner

from backends import _registry
from backends._cli import backends as backends_group
from ledger.errors import BackendError

MESSAGE = "the mlflow backend needs the mlflow extra: pip install 'mlledger[mlflow]'"


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import mlflow`` fails, and the registry knows the mlflow entry point (pyproject names it)."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setattr(_registry, "_loaded", {})
    eps = _registry._entry_points()
    eps["mlflow"] = EntryPoint("mlflow", "backends.mlflow:MlflowBackend", _registry.GROUP)
    monkeypatch.setattr(_registry, "_entry_points", lambda: eps)


def test_importing_the_module_does_not_import_mlflow(no_mlflow: None) -> None:
    import backends.mlflow as module

    assert module.EXTRA_MESSAGE == MESSAGE


def test_constructing_the_backend_names_the_extra(no_mlflow: None) -> None:
    from backends.mlflow import MlflowBackend

    with pytest.raises(BackendError) as info:
        MlflowBackend()
    assert str(info.value) == MESSAGE


def test_get_backend_raises_the_one_message(no_mlflow: None) -> None:
    with pytest.raises(_registry.MissingExtra) as info:
        _registry.get_backend("mlflow")
    assert str(info.value) == MESSAGE


def test_backends_list_shows_it_unavailable_not_broken(no_mlflow: None) -> None:
    assert ("mlflow", f"unavailable: {MESSAGE}") in _registry.available()
    result = CliRunner().invoke(backends_group, ["list"])
    assert result.exit_code == 0, result.output
    assert MESSAGE in result.output
