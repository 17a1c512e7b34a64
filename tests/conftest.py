"""Shared fixtures: ledgers on real SQLite files and on the real PostgreSQL server.

PostgreSQL tests use the server named by MLLEDGER_TEST_PG_URL (``.ci/run`` sets it).
Without it they skip, saying so; with it set but unreachable they fail.
Each PostgreSQL test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.api import Ledger
from ledger.note import Signer

PG_ENV = "MLLEDGER_TEST_PG_URL"
ORIGIN = "example.com/mlledger-test"
#: Deterministic test key (never a real secret).
TEST_SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))


def pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = pg_base_url()
    u = make_url(base)
    schema = f"t_{secrets.token_hex(6)}"
    dsn = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    if u.password:
        dsn += f" password={u.password}"
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {exc}")
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield u.set(query={"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


def make_ledger(url: str) -> Ledger:
    return Ledger.init(url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key)


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    led = make_ledger(sqlite_url)
    yield led
    led.close()
