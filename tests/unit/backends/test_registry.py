"""The backend registry fails closed: a backend that will not load is an error naming it."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from backends import _registry
from backends.local import LocalBackend
from ledger.errors import BackendError


class _Broken:
    name = "broken"

    def __init__(self) -> None:
        raise RuntimeError("no credentials for the cluster")


class _Misnamed(LocalBackend):
    name = "other"


class _NoPredict:
    name = "nopredict"

    def train(self) -> None: ...
    def load(self) -> None: ...
    def describe(self) -> None: ...


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def fake() -> dict[str, EntryPoint]:
        eps = {}
        for name, obj in found.items():
            ep = EntryPoint(name, f"fake:{name}", _registry.GROUP)
            eps[name] = _Fake(ep, obj)
        return eps  # type: ignore[return-value]

    monkeypatch.setattr(_registry, "_entry_points", fake)
    monkeypatch.setattr(_registry, "_loaded", {})
    return found


class _Fake:
    def __init__(self, ep: EntryPoint, obj: Any) -> None:
        self.ep, self.obj = ep, obj

    def load(self) -> Any:
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


def test_the_local_backend_is_built_in(plugins: dict[str, Any]) -> None:
    assert _registry.get_backend("local").name == "local"
    assert ("local", "ok") in _registry.available()


def test_an_unknown_backend_is_an_error_listing_the_installed(plugins: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="backend 'sagemaker' is not installed; available: local"):
        _registry.get_backend("sagemaker")


def test_an_import_failure_names_the_backend_and_cause(plugins: dict[str, Any]) -> None:
    plugins["vertex"] = ModuleNotFoundError("No module named 'google.cloud'")
    with pytest.raises(BackendError, match="backend 'vertex' failed to load: ModuleNotFoundError: No module "
                                           "named 'google.cloud'"):
        _registry.get_backend("vertex")


def test_a_constructor_failure_is_an_error_not_a_warning(plugins: dict[str, Any]) -> None:
    plugins["broken"] = _Broken
    with pytest.raises(BackendError, match="backend 'broken' failed to load: RuntimeError: no credentials"):
        _registry.get_backend("broken")
    assert ("broken", "error: backend 'broken' failed to load: RuntimeError: no credentials for the cluster") \
        in _registry.available()


def test_a_backend_missing_a_protocol_method_is_refused(plugins: dict[str, Any]) -> None:
    plugins["nopredict"] = _NoPredict
    with pytest.raises(BackendError, match="backend 'nopredict' does not implement predict"):
        _registry.get_backend("nopredict")


def test_a_backend_whose_name_differs_from_its_entry_point_is_refused(plugins: dict[str, Any]) -> None:
    plugins["mine"] = _Misnamed
    with pytest.raises(BackendError, match="backend 'mine' calls itself 'other'"):
        _registry.get_backend("mine")


def test_an_entry_point_may_not_shadow_local(plugins: dict[str, Any]) -> None:
    plugins["local"] = LocalBackend
    with pytest.raises(BackendError, match="shadows the built-in backend"):
        _registry.get_backend("local")
