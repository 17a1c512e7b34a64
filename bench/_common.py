"""Shared helpers for the benchmarks: event factories, fresh databases, printing."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.api import Ledger
from ledger.events import Event
from ledger.kinds import ColumnSummary, DatasetRegistered, PolicyPublished
from ledger.note import Signer

SIGNER = Signer.from_seed("bench.example.com/ledger", bytes(32))


def events(n: int, *, start: int = 0) -> list[Event]:
    """Distinct, realistic events: 2/3 policy.published, 1/3 dataset.registered."""
    out: list[Event] = []
    for i in range(start, start + n):
        if i % 3:
            body = f"name: p{i}\nrules:\n  - fairness: {{metric: selection_rate_ratio, min: 0.8}}\n"
            out.append(Event(PolicyPublished(policy_hash=hashlib.sha256(body.encode()).hexdigest(),
                                             stage="production", name=f"p{i}", body=body),
                             actor="ci@example.com", subject=f"policy:p{i % 97}"))
        else:
            h = hashlib.sha256(str(i).encode()).hexdigest()
            out.append(Event(DatasetRegistered(
                name=f"d{i}", sha256=h, format="csv", size_bytes=10_000 + i, rows=100 + i, role="train",
                columns=[ColumnSummary(name="income", dtype="float64", nullable=False,
                                       stats={"mean": 61250.5 + i, "std": 1200.25}),
                         ColumnSummary(name="sex", dtype="category", nullable=False)],
                sensitive_features=["sex"], source=f"file:///data/d{i}.csv"),
                actor="steward@example.com", subject=f"dataset:sha256:{h}"))
    return out


@contextmanager
def fresh_url(base: str | None) -> Iterator[str]:
    """A URL for an empty database: a temp SQLite file, or a new PostgreSQL schema."""
    if base is None:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            yield f"sqlite:///{Path(d) / 'ledger.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(base)
    schema = f"bench_{secrets.token_hex(4)}"
    conn = psycopg.connect(f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}",
                           autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield u.set(query={"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


def new_ledger(url: str) -> Ledger:
    return Ledger.init(url, origin=SIGNER.name, verifier_key=SIGNER.verifier_key)


def dbapi(url: str) -> Any:
    """A raw driver connection (sqlite3 or psycopg) to ``url``, outside SQLAlchemy."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    opts = u.query.get("options", "")
    return psycopg.connect(f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}",
                           options=opts if isinstance(opts, str) else opts[0])


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def report(name: str, ours: float, base: float, unit: str, target: str) -> None:
    print(f"{name:<44} mlledger {ours:>12,.0f} {unit}   raw {base:>12,.0f} {unit}   "
          f"ratio {ours / base:5.2f}   target {target}")
