"""The same ledger promises on SQLite and PostgreSQL (real servers, no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from ledger import merkle
from ledger.api import Ledger
from tests.conftest import make_ledger
from tests.helpers import dataset_event, policy_event
from tests.tamper import Tamperer

ROOT = Path(__file__).resolve().parents[2]


def test_append_read_and_verify(any_url: str) -> None:
    with make_ledger(any_url) as led:
        led.append_many([policy_event(i) for i in range(40)])
        led.append(dataset_event(1))
        assert led.head().size == 42
        assert [e.seq for e in led.iter(kind="dataset.registered")] == [41]
        result = led.verify()
        assert result.ok and result.root == merkle.root_of([merkle.leaf_hash(e.raw) for e in led.iter()])


def test_reopened_ledger_continues_the_chain(any_url: str) -> None:
    with make_ledger(any_url) as led:
        led.append_many([policy_event(i) for i in range(20)])
    with Ledger.open(any_url) as led:
        r = led.append(policy_event(99))
        assert r.seq == 21 and led.verify().ok


@pytest.mark.parametrize("sql", ["UPDATE entries SET kind = 'x' WHERE seq = 0",
                                 "DELETE FROM entries WHERE seq = 0"])
def test_triggers_refuse_changes(any_url: str, sql: str) -> None:
    with make_ledger(any_url) as led:
        led.append_many([policy_event(i) for i in range(20)])
    engine = create_engine(any_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_truncate_is_refused_on_postgres(pg_url: str) -> None:
    make_ledger(pg_url).close()
    engine = create_engine(pg_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE entries"))
    finally:
        engine.dispose()


def test_tampering_is_caught_at_the_right_seq(any_url: str) -> None:
    with make_ledger(any_url) as led:
        led.append_many([policy_event(i) for i in range(30)])
        tam = Tamperer(any_url)
        try:
            tam.modify_byte(12)
        finally:
            tam.close()
        result = led.verify()
        assert not result.ok and result.bad_seq == 12


def _workers(url: str, procs: int, count: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running = [
        subprocess.Popen([sys.executable, "-m", "tests.integration._worker", url, "single", str(count)],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE)
        for _ in range(procs)
    ]
    for p in running:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()


@pytest.mark.slow
def test_four_processes_append_without_fork_or_gap(any_url: str) -> None:
    """4 processes x 2,000 single appends: seq contiguous and the chain verifies."""
    make_ledger(any_url).close()
    _workers(any_url, 4, 2000)
    with Ledger.open(any_url) as led:
        assert [e.seq for e in led.iter()] == list(range(8001))
        actors = {e.data["payload"]["name"] for e in led.iter(kind="policy.published")}
        assert len(actors) == 2000  # each worker wrote p0..p1999
        result = led.verify()
        assert result.ok and result.size == 8001


@pytest.mark.slow
def test_kill_9_mid_batch_leaves_whole_batches_only(any_url: str) -> None:
    """A writer killed at random points leaves only whole batches, and the chain verifies."""
    make_ledger(any_url).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    batch = 500
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration._worker", any_url, "batches", "1000", str(batch)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one batch committed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    with Ledger.open(any_url) as led:
        head = led.head()
        assert (head.size - 1) % batch == 0
        assert head.size > 1 + batch
        assert led.verify().ok
        assert led.append(policy_event()).seq == head.size
