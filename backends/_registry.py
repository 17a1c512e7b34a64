"""A tiny lazy registry of backends: the built-in ``local`` plus the ``mlledger.backends``
entry points (after SQLAlchemy's ``PluginLoader`` and pluggy's ``_verify_hook``).

Invariants:
(1) nothing is imported until a backend is asked for by name;
(2) a backend that fails to import, to construct, or to satisfy the protocol (the
    methods ``train``, ``load``, ``predict``, ``describe`` and a ``name`` equal to the name
    it is registered under) is a ``BackendError`` naming it and the cause, never a warning;
(3) an entry point may not shadow a built-in backend;
(4) a backend whose optional extra is not installed raises ``MissingExtra`` (a
    ``BackendError``) with the one line that says how to install it; ``available`` lists it
    as ``unavailable``, not as broken.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from backends._protocol import Backend
from ledger.errors import BackendError

__all__ = ["GROUP", "MissingExtra", "available", "get_backend"]

GROUP: Final = "mlledger.backends"
_BUILTIN: Final[dict[str, str]] = {"local": "backends.local:LocalBackend"}
_METHODS: Final = ("train", "load", "predict", "describe")
_loaded: dict[str, Backend] = {}


class MissingExtra(BackendError):
    """Invariant (4): the backend is installed but its optional dependencies are not."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _names() -> list[str]:
    return sorted({*_BUILTIN, *_entry_points()})


def _factory(name: str) -> Any:
    """Step (1): import the factory (a class or a callable returning a backend)."""
    if name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), attr)
    eps = _entry_points()
    if name not in eps:
        raise BackendError(f"backend {name!r} is not installed; available: {', '.join(_names())}")
    return eps[name].load()


def _verify(name: str, obj: Any) -> Backend:
    """Step (2): the protocol's methods, callable, and the name it is registered under."""
    missing = [m for m in _METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise BackendError(f"backend {name!r} does not implement {', '.join(missing)} of the backend protocol")
    if getattr(obj, "name", None) != name:
        raise BackendError(f"backend {name!r} calls itself {getattr(obj, 'name', None)!r}; "
                           "its name must match its entry point")
    assert isinstance(obj, Backend)
    return obj


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, loaded and checked once."""
    if name in _loaded:
        return _loaded[name]
    if name in _BUILTIN and name in _entry_points():
        raise BackendError(f"backend {name!r}: an installed entry point shadows the built-in backend; "
                           "uninstall it or register it under another name")
    try:
        backend = _verify(name, _factory(name)())
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"backend {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    _loaded[name] = backend
    return backend


def available() -> list[tuple[str, str]]:
    """Every backend name and its status: ``ok`` or the reason it does not load."""
    out = []
    for name in _names():
        try:
            get_backend(name)
        except MissingExtra as exc:
            out.append((name, f"unavailable: {exc}"))
        except BackendError as exc:
            out.append((name, f"error: {exc}"))
        else:
            out.append((name, "ok"))
    return out
