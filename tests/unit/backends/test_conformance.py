"""The shared backend conformance suite, run on the local backend."""

from backends.local import LocalBackend
from backends.testing import BackendConformance


class TestLocalBackend(BackendConformance):
    backend_factory = staticmethod(LocalBackend)
