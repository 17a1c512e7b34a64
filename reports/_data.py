"""Report data: what every report shows about the ledger it was made from.

A report covers a tree: the first ``size`` entries of the ledger, with Merkle root
``root``. Everything a report says is read from those entries only, through a
``Scope`` (a ``LedgerView`` bounded to the tree), so the same ledger state and options
give the same data, and hence the same bytes:
(1) the scope is fixed first (the size of the ledger when the report starts);
(2) time is ledger time: the report is dated by its last covered entry, never the clock;
(3) the certificate is the verification run, the root of the covered tree from stored
    nodes, the newest signed checkpoint not larger than the tree, and the key history.

Assembled data are plain JSON values (dicts, lists, str, int, float, bool, None): the
``--format json`` output is exactly this.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.api import Ledger
from ledger.errors import InputError
from ledger.verify import VerifyResult
from ledger.view import LedgerView, ViewEntry

__all__ = ["Scope", "certificate", "entry_ref", "scoped", "split_ref"]

REPORT_VERSION = "mlledger-report/v1"


class Scope(LedgerView):
    """A ``LedgerView`` that sees only the first ``size`` entries (the report's tree)."""

    def __init__(self, view: LedgerView, size: int) -> None:
        super().__init__(view._store, view._tx, size)

    def get(self, seq: int) -> ViewEntry | None:
        return super().get(seq) if 0 <= seq < self.size else None

    def of_kind(self, *kinds: str, subject: str | None = None) -> list[ViewEntry]:
        marks = ",".join(["{p}"] * len(kinds))
        sql = f"SELECT seq, leaf_hash, entry FROM entries WHERE kind IN ({marks}) AND seq < {{p}}"  # noqa: S608
        params: list[Any] = [*kinds, self.size]
        if subject is not None:
            sql += " AND subject = {p}"
            params.append(subject)
        return [self._entry(r) for r in self._tx.rows(self._tx.sql(sql + " ORDER BY seq"), params)]


@contextmanager
def scoped(ledger: Ledger, size: int) -> Iterator[Scope]:
    """A read view of the first ``size`` entries."""
    have = ledger.head_size()
    if not 1 <= size <= have:
        raise InputError(f"tree size {size} is not between 1 and the ledger's size {have}")
    with ledger.view() as view:
        yield Scope(view, size)


def split_ref(ref: str) -> tuple[str, int]:
    """``NAME@VERSION`` -> (NAME, VERSION); ``InputError`` for anything else."""
    name, sep, version = ref.rpartition("@")
    if not sep or not name or not version.isdigit() or int(version) < 1:
        raise InputError(f"model {ref!r}: give NAME@VERSION, e.g. credit-risk@3")
    return name, int(version)


def entry_ref(e: ViewEntry) -> dict[str, Any]:
    """The envelope facts a report cites for an entry."""
    return {"seq": e.seq, "ts": e.ts, "kind": e.kind, "actor": e.actor, "subject": e.subject,
            "leaf_hash": e.leaf_hash.hex()}


@dataclass(frozen=True)
class Covered:
    """The tree a report covers."""

    origin: str
    size: int
    root: bytes
    as_of: str  # ts of the last covered entry


def covered(ledger: Ledger, size: int) -> Covered:
    last = ledger.get(size - 1)
    return Covered(ledger.origin(), size, ledger.root_at(size), last.ts)


def certificate(ledger: Ledger, cov: Covered, verified: VerifyResult) -> dict[str, Any]:
    """The verification certificate of the covered tree.

    (1) the verification run made for this report (every leaf hash, link, timestamp and
        stored node of the ledger recomputed) and its outcome;
    (2) the tree: origin, size, root (hex and base64, as in a checkpoint);
    (3) the newest signed checkpoint of size <= the tree, with its witness cosignatures,
        and whether it is exactly the covered tree;
    (4) the log's checkpoint keys (trust comes from the verifier's own copy, not from here);
    (5) the commands that re-check all of it.
    """
    cps = [cp for cp in ledger.checkpoints() if cp.size <= cov.size]
    cp = max(cps, key=lambda c: (c.size, c.id)) if cps else None
    checkpoint = None
    if cp is not None:
        checkpoint = {
            "size": cp.size, "root": cp.root.hex(), "exact": cp.size == cov.size,
            "note": cp.with_cosignatures().decode(),
            "cosignatures": [{"witness": c.witness, "line": c.line.rstrip("\n")} for c in cp.cosignatures],
        }
    history = ledger.key_history()
    keys = [{"vkey": k.vkey, "key_id": k.verifier.key_id.hex(), "valid_from": k.valid_from,
             "valid_until": k.valid_until, "ended_by": k.ended_by, "current": k.vkey == history.current}
            for k in history.keys.values()]
    bundle_size = cp.size if cp is not None else None
    commands = ["mlledger verify"]
    if bundle_size is not None:
        commands += [f"mlledger export -o bundle.zip --size {bundle_size}",
                     "mlledger verify-bundle bundle.zip --trust log.vkey"]
    return {
        "origin": cov.origin,
        "tree_size": cov.size,
        "root": cov.root.hex(),
        "root_base64": base64.b64encode(cov.root).decode(),
        "as_of": cov.as_of,
        "verification": {"ok": verified.ok, "bad_seq": verified.bad_seq, "reason": verified.reason,
                         "what": "every leaf hash, chain link, timestamp and stored Merkle node recomputed"},
        "checkpoint": checkpoint,
        "unsigned_entries": cov.size - (cp.size if cp else 0),
        "keys": keys,
        "commands": commands,
    }
