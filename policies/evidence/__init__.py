"""Evidence evaluators: pure functions over arrays and DataFrames, returning typed results.

Each evaluator returns a frozen pydantic result whose ``to_json()`` is the full
evidence (stored content-addressed as an artifact) and whose ``summary()`` is the
small set of values carried in the ``evidence.recorded`` ledger entry.
"""
