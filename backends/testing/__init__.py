"""A conformance suite every backend runs (after SQLAlchemy's ``testing/suite``).

A third party subclasses ``BackendConformance`` in its own tests and sets
``backend_factory``; pytest then runs every check on its backend::

    class TestMyBackend(BackendConformance):
        backend_factory = staticmethod(MyBackend)
"""

from backends.testing.suite import BackendConformance, tiny_data, tiny_spec

__all__ = ["BackendConformance", "tiny_data", "tiny_spec"]
