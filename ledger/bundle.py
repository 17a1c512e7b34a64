"""The regulator's verifier for audit bundles: docs/FORMAT.md sections 8 and 9.

A regulator holds a bundle (a directory or a ``.zip``) and the log keys it trusts, and
nothing else. The steps match FORMAT.md 9.2; the first failure stops verification and is
reported as one failure kind (FORMAT.md 9.4), with the entry position where there is one.

B1  Container: a directory or a zip holding manifest.json, entries.jsonl and at least one
    checkpoints/<size>.checkpoint. Zip members with absolute paths, '..', backslashes,
    duplicate names, symlinks or encryption are refused; member sizes are capped.
B2  Manifest: exactly its five members with the right types, format mlledger-bundle/v1,
    and the origin of a trusted key.
B3  Checkpoints parse, are named by their tree size and name the trusted origin.
B4  Chain: line i has the v1 envelope layout around an opaque payload (B4.1), its leaf hash
    (B4.2), seq i (B4.3), prev = hex(leaf of line i-1) (B4.4), a real timestamp no earlier
    than the previous one (B4.5); line 0 is ledger.created, and it and the key.* entries are
    parsed as strict JSON for the key history (B4.6). The Merkle root is folded in the same
    pass, with the root at every checkpoint size and remembered size. A broken chain is named
    (modified, deleted, inserted, reordered) by a second, slow look at the lines.
B5  Signatures: each checkpoint is signed by a trusted key that the key history
    authorises for its size (FORMAT.md 9.3).
B6  Size: no trusted checkpoint is larger than the entries; one covers all of them.
B7  Roots: each checkpoint's root is the root of the entries it covers.
B8  Witnesses: the covering checkpoint carries a quorum of trusted cosignatures.
B9  Manifest agreement: its size and entries_sha256 match the entries.
    Content: an authentic entry that no conforming writer writes (Deep: every entry is parsed
    as strict JSON) is reported only now, once the entries are known to be the signed ones.
B10 Remembered state: the log only grew since the last (size, root) verified under the
    same origin and trusted key; the state is rewritten atomically after a pass.

Pure: the standard library, ``cryptography`` (through ledger.note), ledger.merkle,
ledger.note, ledger.keyhistory and ledger.errors; no orjson, SQLAlchemy or pydantic. The
only I/O is reading the bundle's members (entries.jsonl through one helper thread, which
reads, inflates and hashes while the walk runs) and the optional state file.
"""

from __future__ import annotations

import binascii
import calendar
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from ledger import merkle
from ledger._bundle_io import (
    _GENESIS_PREV,
    _NO_NODES,
    _TS,
    BUNDLE_FORMAT,
    MAX_CHECKPOINT_BYTES,
    MAX_MANIFEST_BYTES,
    FailureKind,
    Manifest,
    _chunks,
    _entry_object,
    _Fail,
    _line_blocks,
    _lines,
    _load_state,
    _Members,
    _open,
    _save_state,
)
from ledger._bundle_keys import _authorise, _cosigned, _key_history, _Opened
from ledger.errors import InputError
from ledger.note import Checkpoint, Note, Verifier

__all__ = ["BUNDLE_FORMAT", "BundleResult", "FailureKind", "Manifest", "verify_bundle"]

# The v1 envelope (FORMAT.md 2.2) around an opaque payload, as two anchored patterns.
_STR = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_KIND = rb"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+"
_SPECIAL: Final = frozenset({"ledger.created", "key.added", "key.rotated", "key.revoked"})
#: ``{"actor":<string>,"kind":"<kind>","payload":{`` for every kind but the ones the key history
#: reads, which take a slow path (so ordinary entries need no JSON parse).
_HEAD = re.compile(rb'\{"actor":' + _STR + rb',"kind":"(?!(?:ledger\.created|key\.added|key\.rotated|'
                   rb'key\.revoked)")' + _KIND + rb'","payload":\{')
#: Found with rfind: no JSON string can hold it (its quotes would be escaped), and nothing
#: after the top-level ``prev`` can either, so the last one is the top-level one.
_TAIL_MARK: Final = b'},"prev":"'
#: What follows the 64 hex digits of ``prev``.
_TAIL = re.compile(rb'","seq":(0|[1-9][0-9]{0,15}),"subject":(?:null|' + _STR + rb'),"ts":"('
                   + _TS + rb')","v":1\}')
_KIND_OF = re.compile(rb'\{"actor":' + _STR + rb',"kind":"(' + _KIND + rb')","payload":\{')
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_CP_NAME = re.compile(r"checkpoints/(0|[1-9][0-9]{0,19})\.checkpoint")


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleResult:
    """The outcome: ``ok``, or the failure ``kind`` with the entry ``seq`` where there is one."""

    ok: bool
    origin: str | None = None
    size: int | None = None
    root: bytes | None = None
    last_ts: str | None = None
    checkpoints: tuple[int, ...] = ()  # tree sizes of the checkpoints verified
    signed_by: str | None = None  # the log key that signed the covering checkpoint
    witnesses: tuple[str, ...] = ()  # trusted witnesses that cosigned it
    kind: FailureKind | None = None
    seq: int | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "origin": self.origin, "size": self.size,
            "root": self.root.hex() if self.root is not None else None, "last_ts": self.last_ts,
            "checkpoints": list(self.checkpoints), "signed_by": self.signed_by,
            "witnesses": list(self.witnesses), "kind": self.kind, "seq": self.seq,
            "message": self.message,
        }


class _Break(Exception):
    """The fast walk stopped at line ``seq``; _classify names what happened there."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


# -- B4: the entry walk ------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _real_date(date: bytes) -> bool:
    """``YYYY-MM-DD`` (month 01-12 and day 01-31 already checked) is a real date."""
    year, month, day = int(date[:4]), int(date[5:7]), int(date[8:10])
    return year >= 1 and day <= calendar.monthrange(year, month)[1]


class _Walk:
    """One pass over the lines: chain checks, leaf hashes, and the roots at ``wanted`` sizes."""

    def __init__(self, wanted: Iterable[int], *, deep: bool) -> None:
        self.size = 0
        self.deep = deep
        self.frontier = merkle.Frontier()
        self.wanted = sorted(set(wanted))
        self.roots: dict[int, bytes] = {}
        self.special: list[tuple[int, str, bytes]] = []  # entry 0 and key.* entries
        self.invalid: tuple[int, str] | None = None  # first entry failing a content check
        self._prev = _GENESIS_PREV
        self._last_ts = b""

    def feed(self, lines: list[bytes]) -> None:
        head, tail, mark = _HEAD.match, _TAIL.fullmatch, _TAIL_MARK
        sha, hexlify = hashlib.sha256, binascii.hexlify
        start, prev, last, deep = self.size, self._prev, self._last_ts, self.deep
        if start == 0 and head(lines[0]) is not None:
            raise _Break(0)  # entry 0 must be ledger.created, which _HEAD leaves to the slow path
        leaves: list[bytes] = []
        for line, seq in zip(lines, [b"%d" % i for i in range(start, start + len(lines))], strict=True):
            # (B4.1) the envelope layout, (B4.3) seq = position, (B4.4) prev = previous leaf;
            # entry 0 and the key.* entries, which _HEAD does not match, take the slow path
            h = head(line)
            p = line.rfind(mark)
            if (h is None or not line.startswith(prev, p + 10)
                    or (m := tail(line, p + 74)) is None or m[1] != seq):
                ts = self._slow(line, int(seq), prev)
            else:
                ts = m[2]
            # (B4.5) a real timestamp, never decreasing
            if ts != last:
                if ts < last or not _real_date(ts[:10]):
                    raise _Break(int(seq))
                last = ts
            if deep:
                self._check_deep(int(seq), line)
            # (B4.2) the leaf hash over the stored bytes
            leaf = sha(b"\x00" + line).digest()
            leaves.append(leaf)
            prev = hexlify(leaf)
        self._fold(leaves)
        self._prev, self._last_ts = prev, last

    def _slow(self, line: bytes, seq: int, prev: bytes) -> bytes:
        """The checks of ``feed`` for a line _HEAD does not match: ledger.created, key.*, or bad."""
        # (B4.1, B4.3, B4.4) as in feed; (B4.6) entry 0 is ledger.created, and it and the
        # key.* entries are kept for the key history
        f = _fields(line)
        if f is None or f.prev != prev or f.seq != seq or f.kind not in _SPECIAL:
            raise _Break(seq)
        if (seq == 0) != (f.kind == "ledger.created"):
            if seq == 0:
                raise _Break(0)
            self._invalid(seq, f"entry {seq} is ledger.created, which only entry 0 may be")
        else:
            self.special.append((seq, f.kind, line))
        return f.ts

    def _check_deep(self, seq: int, line: bytes) -> None:
        try:
            _entry_object(line)
        except (UnicodeDecodeError, ValueError) as exc:
            self._invalid(seq, f"entry {seq} is not strict JSON: {exc}")

    def _invalid(self, seq: int, message: str) -> None:
        if self.invalid is None:
            self.invalid = (seq, message)

    def _fold(self, leaves: list[bytes]) -> None:
        """(B4, roots) Extend the tree, stopping at each wanted size to take its root."""
        start, end, at = self.size, self.size + len(leaves), 0
        while self.wanted and self.wanted[0] <= end:
            n = self.wanted.pop(0)
            if n > start:
                self.frontier.extend(leaves[at : n - start], min_level=_NO_NODES)
                at = n - start
                self.roots[n] = self.frontier.root()
        self.frontier.extend(leaves[at:], min_level=_NO_NODES)
        self.size = end

    @property
    def last_ts(self) -> str:
        return self._last_ts.decode()


class _Fields(NamedTuple):
    kind: str
    prev: bytes
    seq: int
    ts: bytes


def _fields(line: bytes) -> _Fields | None:
    """The envelope fields of a line with the v1 layout, or None (slow path only)."""
    h = _KIND_OF.match(line)
    p = line.rfind(_TAIL_MARK)
    if h is None or p < h.end() - 1 or not _HEX64.fullmatch(line, p + 10, p + 74):
        return None
    m = _TAIL.fullmatch(line, p + 74)
    if m is None:
        return None
    return _Fields(h[1].decode(), line[p + 10 : p + 74], int(m[1]), m[2])


def _layout_problem(line: bytes) -> str:
    try:
        obj = _entry_object(line)
    except (UnicodeDecodeError, ValueError) as exc:
        return f"it is not a JSON entry ({exc})"
    if obj["v"] != 1 or type(obj["v"]) is not int:
        return f"unsupported format version {obj['v']!r}"
    return "its envelope is not in the v1 layout (member order, types or encoding)"


def _classify(members: _Members, k: int, signed: int | None) -> _Fail:
    """Name the tampering behind a chain break at line ``k`` (FORMAT.md 9.4).

    ``signed`` is the largest checkpoint size in the bundle: more lines than that hint at an
    insertion, fewer at a deletion.
    """
    before = here = None
    count, later = 0, None
    for j, line in enumerate(_lines(members)):
        count = j + 1
        if j == k - 1:
            before = line
        elif j == k:
            here = line
        elif j > k and later is None and (f := _fields(line)) is not None and f.seq == k:
            later = j
    assert here is not None
    more = signed is not None and count > signed
    fewer = signed is not None and count < signed
    if not here:
        return _Fail("not_a_bundle", k, f"line {k} of entries.jsonl is empty; it holds one entry per line")
    if k == 0 and here.endswith(b"\r"):
        return _Fail("not_a_bundle", 0, "entries.jsonl has CR LF line endings; a bundle's lines end in LF "
                     "(was it copied in text mode?)")
    f = _fields(here)
    if f is None:
        problem = _layout_problem(here)
        if more:
            return _Fail("inserted_entry", k, f"line {k} is not an entry of the log ({problem}), and the "
                         f"bundle has {count} lines where the log signed {signed}: it was inserted")
        return _Fail("modified_entry", k, f"entry {k} was modified: {problem}")
    b = _fields(before) if before is not None else None
    linked = f.prev == (_GENESIS_PREV if before is None else binascii.hexlify(merkle.leaf_hash(before)))
    if f.seq != k:
        if linked:
            return _Fail("modified_entry", k, f"entry {k} was modified: it says seq {f.seq}")
        if f.seq > k and later is not None and more:
            return _Fail("inserted_entry", k, f"line {k} holds entry {f.seq} ahead of its place, and the "
                         f"bundle has {count} lines where the log signed {signed}: it was inserted")
        if f.seq > k and later is not None:
            return _Fail("reordered_entries", k, f"line {k} holds entry {f.seq}, and entry {k} is on "
                         f"line {later}: the entries are out of order")
        if f.seq > k:
            return _Fail("deleted_entry", k, f"entry {k} is missing: line {k} holds entry {f.seq} "
                         f"({f.seq - k} entr{'y' if f.seq - k == 1 else 'ies'} deleted)")
        copy = next((line == here for j, line in enumerate(_lines(members)) if j == f.seq), False)
        return _Fail("inserted_entry", k, f"line {k} repeats seq {f.seq}"
                     f"{f' (a copy of entry {f.seq})' if copy else ''}: an entry was inserted")
    if not linked:
        if before is None:
            return _Fail("modified_entry", 0, "entry 0 was modified: its prev is not 64 zeros")
        if b is not None and b.prev == f.prev:
            return _Fail("inserted_entry", k - 1, f"line {k - 1} is not part of the chain (entry {k} "
                         f"links past it to entry {k - 2}): it was inserted")
        if fewer:
            return _Fail("deleted_entry", k, f"entry {k} does not follow entry {k - 1}, and the bundle has "
                         f"{count} of the {signed} entries the log signed: entries were deleted before "
                         f"line {k} and the later ones renumbered")
        if more:
            return _Fail("inserted_entry", k - 1, f"entry {k} does not follow line {k - 1}, and the bundle "
                         f"has {count} lines where the log signed {signed}: an entry was inserted")
        return _Fail("modified_entry", k - 1, f"entry {k - 1} was modified: its leaf hash is not the "
                     f"prev of entry {k}")
    if k == 0:
        if fewer:
            return _Fail("deleted_entry", 0, f"entry 0 (ledger.created) is missing: line 0 is {f.kind}")
        return _Fail("modified_entry", 0, f"entry 0 was modified: it is {f.kind}, not ledger.created")
    if b is not None and f.ts < b.ts:
        return _Fail("modified_entry", k, f"entry {k} was modified: its ts {f.ts.decode()} is before "
                     f"entry {k - 1}'s {b.ts.decode()}")
    return _Fail("modified_entry", k, f"entry {k} was modified: ts {f.ts.decode()} is not a real time")


# -- the procedure -------------------------------------------------------------------------


def _check_inputs(trusted: Sequence[Verifier], witnesses: Sequence[Verifier], quorum: int | None) -> int:
    if not trusted:
        raise InputError("give at least one trusted log key (--trust FILE.vkey)")
    for key in trusted:
        if key.kind != "ed25519":
            raise InputError(f"trusted key {key.name} is a witness (0x04) key; give it as a witness")
    for w in witnesses:
        if w.kind != "cosignature":
            raise InputError(f"witness key {w.name} is a log (0x01) key, not a cosignature key")
    if len({w.public_key for w in witnesses}) != len(witnesses):
        raise InputError("the same witness key is given twice")
    if not witnesses:
        if quorum is not None:
            raise InputError("a witness quorum needs witness keys (--witness FILE.vkey)")
        return 0
    want = len(witnesses) if quorum is None else quorum
    if not 1 <= want <= len(witnesses):
        raise InputError(f"quorum {want} is not between 1 and the {len(witnesses)} witnesses given")
    return want


def verify_bundle(
    path: Path | str,
    *,
    trusted: Sequence[Verifier],
    origin: str | None = None,
    witnesses: Sequence[Verifier] = (),
    quorum: int | None = None,
    state: Path | None = None,
    deep: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BundleResult:
    """Verify a bundle against trusted log keys (FORMAT.md 9); never raises on bad bundles.

    ``origin`` defaults to the trusted keys' name. ``quorum`` defaults to every witness.
    ``state`` remembers the last verified (size, root) per origin and trusted key, and is
    rewritten only after a pass. Bad arguments and unreadable state raise ``InputError``.
    """
    need = _check_inputs(trusted, witnesses, quorum)
    expected = {origin} if origin is not None else {t.name for t in trusted}
    memory = _load_state(state) if state is not None else None
    try:
        members = _open(Path(path))
    except _Fail as fail:
        return BundleResult(False, kind=fail.kind, seq=fail.seq, message=fail.message)
    try:
        return _verify(members, trusted, expected, witnesses, need, memory, state, deep, progress)
    except _Fail as fail:
        return BundleResult(False, kind=fail.kind, seq=fail.seq, message=fail.message)
    finally:
        members.close()


def _verify(
    members: _Members, trusted: Sequence[Verifier], expected: set[str], witnesses: Sequence[Verifier],
    quorum: int, memory: dict[str, Any] | None, state_path: Path | None, deep: bool,
    progress: Callable[[int, int], None] | None,
) -> BundleResult:
    # B1: the required members are there
    missing = [m for m in ("manifest.json", "entries.jsonl") if m not in members.names]
    cp_names = [m for m in members.names if m.startswith("checkpoints/") and m.endswith(".checkpoint")]
    if missing or not cp_names:
        missing += [] if cp_names else ["checkpoints/<size>.checkpoint"]
        raise _Fail("not_a_bundle", None, f"not a bundle: missing {', '.join(missing)}")

    # B2: the manifest's members and types, its format, and a trusted origin
    try:
        manifest = Manifest.parse(members.read("manifest.json", MAX_MANIFEST_BYTES))
    except InputError as exc:
        raise _Fail("not_a_bundle", None, str(exc)) from None
    if manifest.format != BUNDLE_FORMAT:
        raise _Fail("manifest_mismatch", None,
                    f"manifest format {manifest.format!r} is not {BUNDLE_FORMAT!r}")
    if manifest.origin not in expected:
        raise _Fail("cross_log", None, f"the bundle is of log {manifest.origin!r}, but the trusted keys are "
                    f"for {', '.join(sorted(map(repr, expected)))}")
    origin = manifest.origin
    anchors = [t for t in trusted if t.name == origin]

    # B3: every checkpoint parses, is named by its size, and names this log
    cps: dict[int, _Opened] = {}
    for name in sorted(cp_names):
        m = _CP_NAME.fullmatch(name)
        raw = members.read(name, MAX_CHECKPOINT_BYTES)
        try:
            cp = Checkpoint.parse_body(Note.parse(raw).body)
        except InputError as exc:
            raise _Fail("not_a_bundle", None, f"{name}: {exc}") from None
        if m is None or int(m[1]) != cp.size or cp.size == 0:
            raise _Fail("not_a_bundle", None, f"{name}: holds a checkpoint of size {cp.size}; its name "
                        "must be <size>.checkpoint and the size at least 1")
        if cp.origin != origin:
            raise _Fail("cross_log", None, f"{name} is a checkpoint of log {cp.origin!r}, not {origin!r}")
        cps[cp.size] = _Opened(cp, raw)
    remembered = [(vkey, rec["size"], bytes.fromhex(rec["root"]))
                  for vkey, rec in (memory or {}).get("logs", {}).get(origin, {}).items()
                  if vkey in {str(a) for a in anchors}]

    # B4: walk the chain, folding the roots at every checkpoint and remembered size
    walk = _Walk([*cps, *(n for _, n, _ in remembered)], deep=deep)
    digest = hashlib.sha256()
    try:
        for block in _line_blocks(_chunks(members, digest)):
            walk.feed(block)
            if progress is not None:
                progress(walk.size, manifest.size)
    except _Break as brk:
        raise _classify(members, brk.seq, max(cps)) from None
    size = walk.size
    if size == 0:
        raise _Fail("not_a_bundle", None, "entries.jsonl is empty: a bundle holds at least the genesis entry")
    genesis_origin, keys = _key_history(walk.special)
    if genesis_origin != origin:
        raise _Fail("cross_log", 0, f"entry 0 is the genesis of log {genesis_origin!r}, not {origin!r}: "
                    "these are another log's entries")

    # B5: each checkpoint is signed by a trusted key authorised for its size
    signers = {n: _authorise(cp, keys, anchors, size) for n, cp in sorted(cps.items())}

    # B6: nothing signed beyond the entries, and a checkpoint covering all of them
    if max(cps) > size:
        raise _Fail("truncated", size, f"the log signed checkpoint {max(cps)}, but entries.jsonl holds "
                    f"only {size} entries: entries {size}..{max(cps) - 1} were removed")
    if size not in cps:
        if manifest.size > size:
            raise _Fail("truncated", size, f"the manifest lists {manifest.size} entries, entries.jsonl holds "
                        f"{size}, and no checkpoint covers them: the tail was removed")
        raise _Fail("inserted_entry", max(cps), f"entries {max(cps)}..{size - 1} are not covered by any "
                    f"checkpoint (the largest covers {max(cps)}): they were added after the log signed")

    # B7: each checkpoint's root is the root of the entries it covers
    older = [n for n in cps if n < size and walk.roots[n] == cps[n].checkpoint.root]
    if walk.roots[size] != cps[size].checkpoint.root:
        since = max(older, default=0)
        raise _Fail("modified_entry", size - 1 if since == size - 1 else None,
                    f"the entries do not hash to the root of checkpoint {size}: an entry in "
                    f"{since}..{size - 1} was changed (the last one, or earlier ones re-chained)")
    for n in sorted(cps):
        if n < size and n not in older:
            raise _Fail("fork", None, f"checkpoint {n}'s root {cps[n].checkpoint.root.hex()} is not the root "
                        f"of the first {n} entries ({walk.roots[n].hex()}), which checkpoint {size} "
                        "signs: the log signed two inconsistent histories")

    # B8: a quorum of trusted witnesses cosigned the covering checkpoint
    cosigned = _cosigned(cps[size].note, size, witnesses, quorum, keys) if witnesses else []

    # B9: the manifest agrees with the authenticated entries
    if manifest.size != size:
        raise _Fail("manifest_mismatch", None, f"the manifest lists {manifest.size} entries; "
                    f"entries.jsonl holds {size}")
    if manifest.entries_sha256 != digest.hexdigest():
        raise _Fail("manifest_mismatch", None, f"manifest entries_sha256 {manifest.entries_sha256} is not "
                    f"the SHA-256 of entries.jsonl ({digest.hexdigest()})")

    # Content (and Deep): authentic entries that a conforming writer never produces
    if walk.invalid is not None:
        raise _Fail("invalid_entry", *walk.invalid)

    # B10: the log only grew since the state file's last verified (size, root)
    root = walk.roots[size]
    for vkey, n, was in remembered:
        if n > size:
            raise _Fail("truncated", size, f"{size} entries, but {n} were verified before under "
                        f"{vkey} (state file): the log was cut back")
        if walk.roots[n] != was:
            raise _Fail("fork", None, f"the first {n} entries hash to {walk.roots[n].hex()}, but "
                        f"{was.hex()} was verified before (state file): the log's history changed")
    if memory is not None and state_path is not None:
        logs = memory.setdefault("logs", {}).setdefault(origin, {})
        for a in anchors:
            logs[str(a)] = {"size": size, "root": root.hex()}
        _save_state(state_path, memory)

    return BundleResult(True, origin, size, root, walk.last_ts, tuple(sorted(cps)), signers[size],
                        tuple(cosigned))
