"""Export a ledger as an audit bundle (docs/FORMAT.md section 8) for ledger.bundle to verify.

Invariants:
1. ``entries.jsonl`` line i is entry i's stored bytes and LF, for i < size, streamed from the
   database in seq order; each chunk is written and dropped, so memory does not grow with
   the log.
2. The bundle's size is that of a stored checkpoint (the latest by default). Every stored
   checkpoint of a size <= that goes in, with its cosignatures; before writing, the root
   of the exported entries is checked against each of them, so a bundle that would not
   verify is never written. Checkpoints signed only by a key the log revoked as
   compromised are left out (FORMAT.md 9.3).
3. ``keys/<key id>.vkey`` holds every checkpoint key of the key history, for information.
4. ``manifest.json`` carries the SHA-256 of the exact ``entries.jsonl`` bytes.
5. The bundle appears whole or not at all: it is built beside ``dest`` and renamed. A zip
   (``dest`` ending in ``.zip``) has fixed member order, times and modes, and relative
   member names only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from ledger import merkle
from ledger._checkpoints import StoredCheckpoint
from ledger.api import Ledger
from ledger.bundle import Manifest
from ledger.canonical import format_ts
from ledger.errors import InputError, IntegrityError
from ledger.note import Note

__all__ = ["export_bundle"]

_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
_CHUNK: Final = 10_000
_NO_NODES: Final = 64  # Frontier.extend(min_level=...) above any level: keep no nodes


def export_bundle(
    ledger: Ledger, dest: Path, *, size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Write the bundle of the first ``size`` entries to ``dest`` (a directory, or a ``.zip``).

    ``size`` must be the size of a stored checkpoint; it defaults to the latest one.
    ``InputError`` when there is none or ``dest`` exists; ``IntegrityError`` when the
    entries do not match the checkpoints.
    """
    dest = Path(dest)
    if dest.exists():
        raise InputError(f"{dest} already exists; choose a new path for the bundle")
    checkpoints = _checkpoints(ledger, size)
    size = max(checkpoints)
    history = ledger.key_history()
    keys = {f"keys/{k.verifier.key_id.hex()}.vkey": (k.vkey + "\n").encode() for k in history.keys.values()}
    with _sink(dest) as sink:
        digest = hashlib.sha256()
        with sink.open("entries.jsonl") as out:
            _write_entries(ledger, size, checkpoints, out, digest, progress)
        for n in sorted(checkpoints):
            sink.write(f"checkpoints/{n}.checkpoint", checkpoints[n].with_cosignatures())
        for name in sorted(keys):
            sink.write(name, keys[name])
        manifest = Manifest(history.origin, size, format_ts(time.time_ns() // 1000), digest.hexdigest())
        sink.write("manifest.json", manifest.to_bytes())
    return manifest


def _checkpoints(ledger: Ledger, size: int | None) -> dict[int, StoredCheckpoint]:
    """The stored checkpoints of sizes <= the bundle size, one per size (the newest)."""
    by_size: dict[int, StoredCheckpoint] = {}
    for cp in ledger.checkpoints():
        by_size[cp.size] = cp
    for n in _compromised_only(ledger, by_size):
        del by_size[n]
    if not by_size:
        raise InputError("the ledger has no usable signed checkpoint to export against; sign one with "
                         "'mlledger checkpoint'")
    if size is None:
        size = max(by_size)
    elif size not in by_size:
        have = ", ".join(str(n) for n in sorted(by_size)[-10:])
        raise InputError(f"no checkpoint of size {size} to export against (checkpoint sizes: {have})")
    return {n: cp for n, cp in by_size.items() if n <= size}


def _compromised_only(ledger: Ledger, by_size: dict[int, StoredCheckpoint]) -> list[int]:
    """Sizes whose checkpoint is signed only by a log key revoked as compromised."""
    bad = {str(e.payload["verifier_key"]) for e in ledger.iter(kind="key.revoked")
           if e.payload.get("reason") == "compromised"}
    if not bad:
        return []
    keys = {(k.verifier.name, k.verifier.key_id): k.vkey for k in ledger.key_history().keys.values()}
    out = []
    for n, cp in by_size.items():
        signers = {keys.get((s.name, s.key_id)) for s in Note.parse(cp.note).signatures} - {None}
        if signers and signers <= bad:
            out.append(n)
    return out


def _write_entries(
    ledger: Ledger, size: int, checkpoints: dict[int, StoredCheckpoint], out: IO[bytes],
    digest: hashlib._Hash, progress: Callable[[int, int], None] | None,
) -> None:
    """Stream entries [0, size) to ``out``, checking seq and the roots of the checkpoints."""
    frontier = merkle.Frontier()
    wanted = sorted(checkpoints)
    buf: list[bytes] = []
    leaves: list[bytes] = []
    expected = 0
    for entry in ledger.iter(limit=size, chunk=_CHUNK):
        if entry.seq != expected:
            raise IntegrityError(f"entry {expected} is missing from the database; run 'mlledger verify'")
        buf.append(entry.raw)
        leaves.append(merkle.leaf_hash(entry.raw))
        expected += 1
        if expected == wanted[0] or len(buf) >= _CHUNK:
            frontier.extend(leaves, min_level=_NO_NODES)
            leaves = []
        if expected == wanted[0]:
            n = wanted.pop(0)
            if frontier.root() != checkpoints[n].root:
                raise IntegrityError(f"the first {n} entries do not hash to the root of checkpoint {n}; "
                                     "run 'mlledger verify'")
        if len(buf) >= _CHUNK or not wanted:
            data = b"\n".join(buf) + b"\n"
            out.write(data)
            digest.update(data)
            buf = []
            if progress is not None:
                progress(expected, size)
        if not wanted:
            break
    if wanted:
        raise IntegrityError(f"the ledger has {expected} entries, fewer than checkpoint {wanted[0]} covers")


class _Dir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, name: str) -> IO[bytes]:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("xb")

    def write(self, name: str, data: bytes) -> None:
        with self.open(name) as fh:
            fh.write(data)


class _Zip:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3  # Unix, so the mode below is read as one
        info.external_attr = 0o100644 << 16
        return info

    def open(self, name: str) -> IO[bytes]:
        return self.zf.open(self._info(name), "w", force_zip64=True)

    def write(self, name: str, data: bytes) -> None:
        self.zf.writestr(self._info(name), data)


@contextmanager
def _sink(dest: Path) -> Iterator[_Dir | _Zip]:
    """A writer whose result appears at ``dest`` only if the block completes."""
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix == ".zip":
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                with zipfile.ZipFile(fh, "w") as zf:
                    yield _Zip(zf)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            _rename(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    tmpdir = tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        yield _Dir(Path(tmpdir))
        os.chmod(tmpdir, 0o755)  # noqa: S103 - a bundle is public, like mkdir's default
        _rename(tmpdir, dest)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def _rename(src: str, dest: Path) -> None:
    if dest.exists():
        raise InputError(f"{dest} appeared while the bundle was being written; it was left alone")
    os.rename(src, dest)
