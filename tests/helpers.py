"""Event factories for tests."""

from __future__ import annotations

import hashlib

from ledger.events import Event
from ledger.kinds import ColumnSummary, DatasetRegistered, PolicyPublished


def policy_event(i: int = 0, *, actor: str = "alice@example.com") -> Event:
    body = f"name: p{i}\nrules:\n  - four_fifths: {{}}\n"
    return Event(
        PolicyPublished(policy_hash=hashlib.sha256(body.encode()).hexdigest(), stage="production",
                        name=f"p{i}", body=body),
        actor=actor,
        subject=f"policy:p{i}",
    )


def dataset_event(i: int = 0) -> Event:
    return Event(
        DatasetRegistered(
            name=f"applicants-{i}", sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            format="csv", size_bytes=1000 + i, rows=10 + i, role="train",
            columns=[ColumnSummary(name="age", dtype="int64", nullable=False,
                                   stats={"min": 18, "max": 90, "mean": 41.5}),
                     ColumnSummary(name="sex", dtype="category", nullable=False,
                                   stats={"categories": ["f", "m"]}),
                     ColumnSummary(name="y", dtype="int64", nullable=False)],
            sensitive_features=["sex"], target="y", source=f"file:///data/applicants-{i}.csv",
        ),
        actor="steward@example.com",
        subject=f"dataset:sha256:{hashlib.sha256(str(i).encode()).hexdigest()}",
    )
