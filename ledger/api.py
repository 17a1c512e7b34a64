"""The ``Ledger``: open or create one, append events, read and verify them.

Appends go through group commit: callers queue their entries; whichever caller
holds the writer mutex commits everything queued in one transaction (leader /
follower, no background thread). ``append(..., durable=True)`` returns only once
its entry is committed; ``append_many`` is atomic.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import orjson
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Connection, select
from sqlalchemy.exc import DBAPIError

from ledger import kinds as _kinds  # noqa: F401  (registers the core kinds)
from ledger._api_checkpoints import _CheckpointsMixin
from ledger._checkpoints import DEFAULT_CHECKPOINT_EVERY, Checkpoints
from ledger._parallel import PARALLEL_MIN, SEGMENT_LEVEL, verify_parallel
from ledger._sequencer import Sequencer
from ledger._store import Head, Receipt, Store, Writer, resolve_url, root_of_head
from ledger.canonical import EntryPrefix, format_ts, parse_ts
from ledger.entry_rows import EntryRows, Receipts, refuse_kind
from ledger.errors import InputError, IntegrityError, MlledgerError, StorageError
from ledger.events import Event, describe_validation_error, payload_model
from ledger.kinds import LedgerCreated
from ledger.note import Signer
from ledger.schema import SCHEMA_VERSION, entries, nodes
from ledger.verify import ChainVerifier, VerifyResult
from ledger.view import LedgerView

__all__ = ["Entry", "Head", "Ledger", "Receipt"]

SOFTWARE = "mlledger 0.1.0"
#: Kinds no caller may append (the ledger writes them itself).
RESERVED_KINDS = frozenset({"ledger.created"})


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored entry: its position, leaf hash and the canonical bytes."""

    seq: int
    leaf_hash: bytes
    ts: str
    kind: str
    subject: str | None
    raw: bytes

    @property
    def data(self) -> dict[str, Any]:
        """The entry decoded as JSON."""
        value: dict[str, Any] = orjson.loads(self.raw)
        return value

    @property
    def actor(self) -> str:
        return str(self.data["actor"])

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["payload"]
        return value

    def event(self) -> Event:
        """Re-validate the stored payload against its kind's model (duplicate names refused)."""
        from ledger._bundle_io import strict_json

        try:
            d = strict_json(self.raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise IntegrityError(f"entry {self.seq} is not strict JSON: {exc}") from None
        model = payload_model(d["kind"])
        try:
            payload = model.model_validate(d["payload"])
        except ValidationError as exc:
            raise IntegrityError(describe_validation_error(exc, f"entry {self.seq}.payload")) from None
        return Event(payload, actor=d["actor"], subject=d["subject"])


class _Group:
    __slots__ = ("done", "error", "prefixes", "receipts")

    def __init__(self, prefixes: Sequence[EntryPrefix | EntryRows]) -> None:
        self.prefixes = prefixes
        self.done = False
        self.error: BaseException | None = None
        self.receipts: list[Receipt | Receipts] = []


class Ledger(_CheckpointsMixin):
    """A ledger database. Use ``Ledger.open`` or ``Ledger.init``; close it when done."""

    def __init__(
        self, store: Store, *, signer: Signer | None = None,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    ) -> None:
        self._store = store
        self._signer = signer
        self._every = checkpoint_every
        self._cps = Checkpoints(store)
        self._last_cp_size: int | None = None
        #: Why the last automatic checkpoint could not be signed, if it could not.
        self.checkpoint_error: MlledgerError | None = None
        self._seq = Sequencer(store)
        self._mutex = threading.Lock()
        self._qlock = threading.Lock()
        self._queue: list[_Group] = []
        self._writer: Writer | None = None
        self._closed = False
        self._acting: tuple[str, Any] | None = None

    # -- life cycle ------------------------------------------------------------

    @classmethod
    def open(
        cls, location: str, *, signer: Signer | None = None,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    ) -> Ledger:
        """Open an existing ledger by URL or directory; ``LedgerNotFound`` otherwise.

        With ``signer`` (the log's current checkpoint key) a checkpoint is signed
        automatically after every ``checkpoint_every`` new entries and on close.
        """
        url, _home = resolve_url(location)
        store = Store.connect(url, create=False)
        try:
            version = store.check()
            if version < SCHEMA_VERSION:
                with store.write_conn() as conn, conn.begin():
                    store.lock(store.tx(conn))
                    # another process may have upgraded it while this one waited for the lock
                    version = store.version_in(conn)
                    if version < SCHEMA_VERSION:
                        store.migrate(conn, version)
        except BaseException:
            store.dispose()
            raise
        return cls(store, signer=signer, checkpoint_every=checkpoint_every)

    @classmethod
    def init(
        cls, location: str, *, origin: str, verifier_key: str, actor: str = "system:init",
        signer: Signer | None = None, checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    ) -> Ledger:
        """Create the schema and the genesis entry in one transaction."""
        url, _home = resolve_url(location)
        store = Store.connect(url, create=True)
        try:
            genesis = Event(
                LedgerCreated(origin=origin, verifier_key=verifier_key, software=SOFTWARE),
                actor=actor,
            )
        except ValidationError as exc:
            store.dispose()
            raise InputError(describe_validation_error(exc, "ledger.created")) from None
        ledger = cls(store, signer=signer, checkpoint_every=checkpoint_every)
        try:
            with store.write_conn() as conn, conn.begin():
                if store.is_initialised():
                    store.check()
                    raise InputError(f"a ledger already exists at {location}; open it instead")
                store.migrate(conn, 0)
                tx = store.tx(conn)
                store.lock(tx)
                ledger._seq.write(tx, [genesis.prepare()], expect_size=0)
            ledger._seq.committed()
        except DBAPIError as exc:
            ledger.close()
            raise StorageError(f"cannot create the ledger: {exc.orig}") from None
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        """Sign a final checkpoint if there is a signer and anything new, then close."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                if self._signer is not None and self._every is not None:
                    self._auto_checkpoint(None)
            finally:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                self._store.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def store(self) -> Store:
        return self._store

    # -- appending -------------------------------------------------------------

    def act_as(self, name: str, key: Any) -> None:
        """Append governed events as identity ``name``, signed with its Ed25519 private ``key``.

        Every event of a governed kind (``Payload.GOVERNED``) appended from now on gets ``name``
        as its actor and, for a signed-action kind, ``name``'s signature (``ledger.actions``).
        """
        self._acting = (name, key)

    @property
    def acting_as(self) -> str | None:
        """The identity governed events are appended as (``act_as``), if any."""
        return self._acting[0] if self._acting else None

    def _as_actor(self, event: Event) -> Event:
        if self._acting is None or not event.payload.GOVERNED or event.kind == "identity.registered":
            return event
        from ledger.actions import sign_event

        name, key = self._acting
        return sign_event(event, actor=name, key=key, origin=self.origin(),
                          signed_at=format_ts(time.time_ns() // 1000))

    def check_access(self, event: Event) -> None:
        """Run the access guards on ``event`` as if it were appended now, writing nothing.

        For a read that must be refused before it happens but logged after it (``access.read``).
        """
        from ledger.events import guards

        pre = _prepare(self._as_actor(event))
        if not event.payload.GOVERNED or pre.payload is None:
            return
        with self.view() as view:
            for guard in guards():
                guard(view, view.size, pre.kind, pre.actor, pre.subject, pre.payload)

    def append(self, event: Event) -> Receipt:
        """Append one event; returns once it is committed."""
        return self._submit([_prepare(self._as_actor(event))])[0]  # type: ignore[no-any-return]

    def append_many(self, events: Iterable[Event]) -> list[Receipt]:
        """Append events atomically: all are committed, in order, or none."""
        prefixes = [_prepare(self._as_actor(e)) for e in events]
        if not prefixes:
            return []
        return self._submit(prefixes)

    def append_rows(self, rows: EntryRows) -> Receipts:
        """Append many entries of one kind given as a format and per-entry values (the batch fast path,
        ``backends._batch``), atomically. The caller vouches, as ``EntryRows`` says, that each payload
        is its kind's canonical, valid payload; the kind's check still runs. Ungoverned kinds only (a
        governed one must be signed), and no key events."""
        if rows.kind in RESERVED_KINDS:
            raise InputError(f"kind: {rows.kind} cannot be appended as rows; use append_many")
        refuse_kind(rows.kind)
        if not len(rows):
            return Receipts(0, [], "")
        result = self._submit([rows])[0]
        assert isinstance(result, Receipts)
        return result

    def sequence_ahead(self, rows: EntryRows, after: EntryRows | None = None) -> None:
        """Do the sequencing work of ``rows`` now, outside the write lock, for an ``append_rows``
        expected right after that of ``after`` (or after this ledger's last append), so that a
        pipeline prepares chunk N+1 while chunk N is written. If the tail found under the lock is
        not the one assumed, ``rows`` is sequenced again there (the same entries, no time saved).
        Called again without ``after`` once chunk N is committed, it keeps what was done if that
        still follows the last commit, and otherwise sequences ``rows`` after it."""
        rows.ahead = self._seq.ahead(rows, after)

    def _submit(self, prefixes: Sequence[EntryPrefix | EntryRows]) -> list[Any]:
        if self._closed:
            raise ValueError("the ledger is closed")
        group = _Group(prefixes)
        with self._qlock:
            self._queue.append(group)
        with self._mutex:
            if not group.done:
                with self._qlock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if group.error is not None:
            raise group.error
        return group.receipts

    def _commit(self, batch: list[_Group]) -> None:
        self._commit_together(batch)
        if len(batch) > 1 and all(isinstance(g.error, InputError) for g in batch):
            # One caller's event was refused (e.g. a key event): retry each group alone so the
            # others are not failed by it.
            for g in batch:
                g.done, g.error = False, None
                self._commit_together([g])

    def _commit_together(self, batch: list[_Group]) -> None:
        flat = [p for g in batch for p in g.prefixes]
        error: BaseException | None = None
        receipts: list[Receipt | Receipts] = []
        try:
            if self._writer is None:
                self._writer = self._store.writer()
            writer = self._writer
            try:
                tx, tail = writer.begin_with_tail()
                receipts = self._seq.write(tx, flat, tail=tail)
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            self._seq.committed()
            self._auto_checkpoint(self._seq.size)
        except MlledgerError as exc:
            error = exc
        except Exception as exc:  # driver errors: sqlite3 / psycopg
            error = _db_error(exc, "the database refused the append")
        except BaseException as exc:  # delivered to every waiter, re-raised below
            error = exc
        if error is not None:
            self._seq.rolled_back()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        at = 0
        for g in batch:
            if error is None:
                g.receipts = receipts[at : at + len(g.prefixes)]
                at += len(g.prefixes)
            else:
                g.error = error
            g.done = True

    # -- reading ---------------------------------------------------------------

    def _read(self) -> Connection:
        return self._store.engine.connect()

    def head(self) -> Head:
        """Size, last leaf hash, last timestamp and Merkle root."""
        with self._read() as conn, conn.begin():
            return root_of_head(self._store, self._store.tx(conn))

    def origin(self) -> str:
        return str(self.get(0).payload["origin"])

    def get(self, seq: int) -> Entry:
        """The entry at ``seq``; ``InputError`` when there is none."""
        with self._read() as conn:
            row = conn.execute(
                select(entries.c.seq, entries.c.leaf_hash, entries.c.ts_us, entries.c.kind,
                       entries.c.subject, entries.c.entry).where(entries.c.seq == seq)
            ).first()
        if row is None:
            raise InputError(f"seq {seq}: no such entry (the ledger has {self.head().size})")
        return _entry(row)

    def iter(
        self,
        *,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        start: int = 0,
        limit: int | None = None,
        chunk: int = 1000,
    ) -> Iterator[Entry]:
        """Entries in seq order, filtered; ``since``/``until`` are inclusive/exclusive."""
        cols = (entries.c.seq, entries.c.leaf_hash, entries.c.ts_us, entries.c.kind,
                entries.c.subject, entries.c.entry)
        where: list[ColumnElement[bool]] = []
        if kind is not None:
            where.append(entries.c.kind.in_([kind] if isinstance(kind, str) else list(kind)))
        if subject is not None:
            where.append(entries.c.subject == subject)
        stop: int | None = None
        if since is not None or until is not None:
            with self._read() as conn, conn.begin():
                tx = self._store.tx(conn)
                tail = self._store.tail(tx)
                size = 0 if tail is None else tail[0] + 1
                if since is not None:
                    start = max(start, self._store.seq_at_ts(tx, _ts_us(since, "since"), size))
                if until is not None:
                    stop = self._store.seq_at_ts(tx, _ts_us(until, "until"), size)
        if stop is not None:
            where.append(entries.c.seq < stop)
        nxt, left = start, limit
        while left is None or left > 0:
            n = chunk if left is None else min(chunk, left)
            with self._read() as conn:
                rows = conn.execute(
                    select(*cols).where(entries.c.seq >= nxt, *where).order_by(entries.c.seq).limit(n)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            nxt = rows[-1][0] + 1
            if left is not None:
                left -= len(rows)

    # -- verification ------------------------------------------------------------

    def verify(
        self, *, progress: Any = None, deep: bool = False, workers: int | None = None
    ) -> VerifyResult:
        """Recompute every leaf hash, link, timestamp and stored Merkle node.

        ``progress(n)`` is called with the number of entries checked so far.
        ``deep`` also re-validates each payload against its kind's model.
        Large ledgers are verified by ``workers`` processes (default: one per CPU);
        ``workers=1`` keeps it in this process.
        """
        size = self.head_size()
        if not deep and workers != 1 and size >= PARALLEL_MIN and (os.cpu_count() or 1) > 1:
            return self._verify_parallel(size, workers, progress)
        checker = ChainVerifier()
        with self._read() as conn, conn.begin():
            rows = self._store.iter_rows(self._store.raw_tx(conn), chunk=20000)
            for chunk in _chunks(rows, 20000):
                if not checker.feed(chunk):
                    break
                if deep:
                    for row in chunk:
                        try:
                            _entry(row).event()
                        except (MlledgerError, KeyError) as exc:
                            return VerifyResult(False, checker.size, None, row[0], str(exc))
                if progress is not None:
                    progress(checker.size)
            if checker.failure is None:
                checker.check_nodes(
                    conn.execute(select(nodes.c.level, nodes.c.idx, nodes.c.hash))
                )
        return checker.result()

    def _verify_parallel(self, size: int, workers: int | None, progress: Any) -> VerifyResult:
        def upper() -> list[tuple[int, int, bytes]]:
            with self._read() as conn:
                return [(lv, i, bytes(h)) for lv, i, h in conn.execute(
                    select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(nodes.c.level > SEGMENT_LEVEL))]

        verified, root, failure, last_ts = verify_parallel(
            self._store.url, size, upper, workers=workers, progress=progress)
        if failure is not None:
            return VerifyResult(False, failure[0], None, failure[0], failure[1], last_ts or None)
        return VerifyResult(True, verified, root, last_ts=last_ts)

    @contextmanager
    def view(self) -> Iterator[LedgerView]:
        """A read-only LedgerView (the same interface checks get while sequencing)."""
        with self._read() as conn:
            tx = self._store.raw_tx(conn)
            tail = self._store.tail(tx)
            yield LedgerView(self._store, tx, 0 if tail is None else tail[0] + 1)

    def head_size(self) -> int:
        """The number of entries (cheaper than ``head()``, which also computes the root)."""
        with self._read() as conn:
            tail = self._store.tail(self._store.tx(conn))
        return 0 if tail is None else tail[0] + 1

    def verify_or_raise(self) -> VerifyResult:
        result = self.verify()
        if not result.ok:
            raise IntegrityError(f"verification failed at seq {result.bad_seq}: {result.reason}")
        return result


def _prepare(event: Event) -> EntryPrefix:
    if event.kind in RESERVED_KINDS:
        raise InputError(f"kind: {event.kind} is written only by 'mlledger init', never appended")
    return event.prepare()


def _db_error(exc: Exception, what: str) -> MlledgerError:
    """Map a driver exception to ours: constraint violations are integrity errors."""
    name = type(exc).__name__
    detail = getattr(exc, "orig", None) or exc
    if "Integrity" in name or "RaiseException" in name or "InsufficientPrivilege" in name:
        return IntegrityError(f"{what}: {detail}")
    return StorageError(f"{what}: {detail}")


def _chunks(rows: Iterator[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(row[0], bytes(row[1]), format_ts(row[2]), row[3], row[4], bytes(row[5]))


def _ts_us(value: str | datetime, field: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InputError(f"{field}: give a timezone-aware time")
        return int(value.timestamp() * 1_000_000)
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return parse_ts(text)
        except InputError:
            raise InputError(f"{field}: {value!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise InputError(f"{field}: {value!r} has no timezone; add Z or an offset")
    return int(dt.timestamp() * 1_000_000)



