"""Audit bundles exported from SQLite and from PostgreSQL verify alike (real servers, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import merkle
from ledger.api import Ledger
from ledger.bundle import verify_bundle
from ledger.export import export_bundle
from tests.conftest import ORIGIN, TEST_SIGNER
from tests.helpers import dataset_event, policy_event

EVENTS = [dataset_event(i) if i % 4 == 0 else policy_event(i) for i in range(60)]


def export_same_events(url: str, dest: Path) -> Path:
    """The same events on any engine: checkpoints at 31 and 61, exported to ``dest``."""
    with Ledger.init(url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key, signer=TEST_SIGNER,
                     checkpoint_every=None) as led:
        led.append_many(EVENTS[:30])
        led.checkpoint()
        led.append_many(EVENTS[30:])
        led.checkpoint()
        export_bundle(led, dest)
    return dest


@pytest.mark.parametrize("form", ["dir", "zip"])
def test_exported_bundle_verifies(any_url: str, tmp_path: Path, form: str) -> None:
    bundle = export_same_events(any_url, tmp_path / ("b.zip" if form == "zip" else "b"))
    result = verify_bundle(bundle, trusted=[TEST_SIGNER.verifier], deep=True)
    assert result.ok, result
    with Ledger.open(any_url) as led:
        assert (result.size, result.root, result.checkpoints) == (61, led.root_at(61), (31, 61))
        assert result.root == merkle.root_of([merkle.leaf_hash(e.raw) for e in led.iter()])


@pytest.mark.postgres
def test_sqlite_and_postgres_bundles_carry_the_same_entries(
        sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    lite = export_same_events(sqlite_url, tmp_path / "sqlite")
    pg = export_same_events(pg_url, tmp_path / "postgres")
    for bundle in (lite, pg):
        assert verify_bundle(bundle, trusted=[TEST_SIGNER.verifier]).ok
    a = (lite / "entries.jsonl").read_bytes().splitlines()
    b = (pg / "entries.jsonl").read_bytes().splitlines()
    assert len(a) == len(b) == 61
    # Timestamps (and so prev and the roots) differ between the two runs; nothing else does,
    # and the payloads are the same bytes.
    for x, y in zip(a, b, strict=True):
        assert payload_bytes(x) == payload_bytes(y)
        assert {k: v for k, v in json.loads(x).items() if k not in ("ts", "prev")} == \
               {k: v for k, v in json.loads(y).items() if k not in ("ts", "prev")}


def payload_bytes(line: bytes) -> bytes:
    return line[line.index(b',"payload":') : line.rindex(b',"prev":"')]
