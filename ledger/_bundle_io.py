"""Bundle I/O for the offline verifier: the container reader, strict JSON, the manifest
and the remembered-state file (FORMAT.md 8 and 9, steps B1, B2 and B10).

Pure standard library; the reader never extracts, follows no symlink, refuses absolute
or ``..`` member names, and caps every size.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import stat
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, Literal

from ledger.errors import InputError

BUNDLE_FORMAT: Final = "mlledger-bundle/v1"
STATE_FORMAT: Final = "mlledger-bundle-state/v1"

FailureKind = Literal[
    "not_a_bundle", "manifest_mismatch", "cross_log", "modified_entry", "deleted_entry",
    "inserted_entry", "reordered_entries", "truncated", "fork", "untrusted_key", "revoked_key",
    "quorum_not_met", "invalid_entry",
]

MAX_MANIFEST_BYTES: Final = 64 << 10
MAX_CHECKPOINT_BYTES: Final = 64 << 10
MAX_LINE_BYTES: Final = 16 << 20
MAX_MEMBERS: Final = 100_000
_PIECE: Final = 16 << 20  # read and hashed by a helper thread
_BLOCK: Final = 256 << 10  # split into lines and walked at a time
_NO_NODES: Final = 64  # Frontier.extend(min_level=...) above any level: keep no nodes
_GENESIS_PREV: Final = b"0" * 64
_ENVELOPE: Final = frozenset({"v", "seq", "prev", "ts", "kind", "actor", "subject", "payload"})

_TS = (rb"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
       rb"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_TS_TEXT = re.compile(_TS.decode())


class _Fail(Exception):
    def __init__(self, kind: FailureKind, seq: int | None, message: str) -> None:
        super().__init__(message)
        self.kind, self.seq, self.message = kind, seq, message



# -- strict JSON (entries, manifest, state) ---------------------------------------------


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def strict_json(data: bytes) -> Any:
    """Parse UTF-8 JSON refusing duplicate names, NaN/Infinity and lone surrogates."""
    value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique,
                       parse_constant=_no_constant, parse_float=_finite)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate") from None
    return value


def _entry_object(line: bytes) -> dict[str, Any]:
    """An entry parsed in full: strict JSON, exactly the envelope members, an object payload."""
    obj = strict_json(line)
    if type(obj) is not dict or obj.keys() != _ENVELOPE or type(obj["payload"]) is not dict:
        raise ValueError("not an object with exactly the eight envelope members")
    return obj


# -- manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` (FORMAT.md 8.2). Not signed: a transport check, not a trust root."""

    origin: str
    size: int
    created: str
    entries_sha256: str
    format: str = BUNDLE_FORMAT

    def to_bytes(self) -> bytes:
        """Canonical JSON (FORMAT.md 2.1) and one LF."""
        value = {"created": self.created, "entries_sha256": self.entries_sha256,
                 "format": self.format, "origin": self.origin, "size": self.size}
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Members and types only; the values are checked against the entries (B9)."""
        try:
            obj = strict_json(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"manifest.json is not valid JSON: {exc}") from None
        if type(obj) is not dict:
            raise InputError("manifest.json is not a JSON object")
        want = {"format", "origin", "size", "created", "entries_sha256"}
        if obj.keys() != want:
            extra, missing = sorted(obj.keys() - want), sorted(want - obj.keys())
            raise InputError(f"manifest.json members: missing {missing}, unexpected {extra}")
        for name in ("format", "origin", "created", "entries_sha256"):
            if type(obj[name]) is not str:
                raise InputError(f"manifest.json: {name} must be a string")
        if type(obj["size"]) is not int:
            raise InputError("manifest.json: size must be an integer")
        if not _TS_TEXT.fullmatch(obj["created"]):
            raise InputError(f"manifest.json: created {obj['created']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        return cls(obj["origin"], obj["size"], obj["created"], obj["entries_sha256"], obj["format"])


# -- B1: the container --------------------------------------------------------------------


class _Members:
    """A bundle's files by relative POSIX path; read-only, size-capped, never extracted."""

    names: dict[str, int]  # regular files and their sizes

    def read(self, name: str, limit: int) -> bytes:
        if self.names[name] > limit:
            raise _Fail("not_a_bundle", None, f"{name} is larger than {limit} bytes")
        try:
            with self.open(name) as fh:
                data = fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise _Fail("not_a_bundle", None, f"{name} cannot be read: {exc}") from None
        if len(data) > limit:
            raise _Fail("not_a_bundle", None, f"{name} is larger than {limit} bytes")
        return data

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the archive, if any."""


class _Dir(_Members):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = {}
        for top in ("manifest.json", "entries.jsonl"):
            self._add(top)
        for sub in ("checkpoints", "keys"):
            info = _lstat(root / sub)
            if info is None:
                continue
            if stat.S_ISLNK(info.st_mode):
                raise _Fail("not_a_bundle", None, f"{sub}/ is a symbolic link; bundles hold plain files")
            if stat.S_ISDIR(info.st_mode):
                for item in sorted(os.listdir(root / sub)):
                    self._add(f"{sub}/{item}", optional=False)
        if len(self.names) > MAX_MEMBERS:
            raise _Fail("not_a_bundle", None, f"the bundle has over {MAX_MEMBERS} files")

    def _add(self, name: str, *, optional: bool = True) -> None:
        info = _lstat(self.root / name)
        if info is None:
            return
        if stat.S_ISLNK(info.st_mode):
            raise _Fail("not_a_bundle", None, f"{name} is a symbolic link; bundles hold plain files")
        if stat.S_ISREG(info.st_mode):
            self.names[name] = info.st_size
        elif not optional and not stat.S_ISDIR(info.st_mode):
            raise _Fail("not_a_bundle", None, f"{name} is not a regular file")

    def open(self, name: str) -> IO[bytes]:
        fd = os.open(self.root / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class _Zip(_Members):
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.names = {}
        self.infos: dict[str, zipfile.ZipInfo] = {}
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Fail("not_a_bundle", None, f"the zip has {len(infos)} members, at most {MAX_MEMBERS}")
        seen: set[str] = set()
        for info in infos:
            name = info.orig_filename  # as stored: zipfile cuts .filename at a NUL
            # zip-slip and friends: the tree must be relative and unambiguous (FORMAT.md 8.5)
            if (not name or "\\" in name or "\x00" in name or name.startswith("/")
                    or re.match(r"[A-Za-z]:", name) or ".." in PurePosixPath(name).parts):
                raise _Fail("not_a_bundle", None, f"zip member {name!r}: absolute or escaping path refused")
            if name in seen:
                raise _Fail("not_a_bundle", None, f"zip member {name!r} appears twice")
            seen.add(name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _Fail("not_a_bundle", None, f"zip member {name!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise _Fail("not_a_bundle", None, f"zip member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _Fail("not_a_bundle", None,
                            f"zip member {name!r}: compression {info.compress_type} (only stored or deflate)")
            if not info.is_dir():
                self.names[name] = info.file_size
                self.infos[name] = info

    def open(self, name: str) -> IO[bytes]:
        return self.zf.open(self.infos[name])

    def close(self) -> None:
        self.zf.close()


def _open(path: Path) -> _Members:
    if path.is_dir():
        return _Dir(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    try:
        return _Zip(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _Fail("not_a_bundle", None,
                    f"{path} is neither a bundle directory nor a zip archive ({exc})") from None


def _chunks(members: _Members, digest: Any = None) -> Iterator[bytes]:
    """entries.jsonl in blocks of _BLOCK bytes, small enough to stay in cache while walked.

    A helper thread reads (inflates, checks the zip CRC) and hashes into ``digest`` in pieces
    of _PIECE bytes: work that releases the GIL, so it overlaps the walk of earlier blocks.
    """
    pieces: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: bytes | BaseException) -> None:
        while not stop.is_set():
            try:
                pieces.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def read(fh: IO[bytes]) -> None:
        try:
            while not stop.is_set():
                piece = fh.read(_PIECE)
                if piece and digest is not None:
                    digest.update(piece)
                put(piece)
                if not piece:
                    return
        except BaseException as exc:  # raised again in the caller's thread, below
            put(exc)

    try:
        with members.open("entries.jsonl") as fh:
            reader = threading.Thread(target=read, args=(fh,), name="bundle-reader", daemon=True)
            reader.start()
            try:
                while piece := pieces.get():
                    if isinstance(piece, BaseException):
                        raise piece
                    for at in range(0, len(piece), _BLOCK):
                        yield piece[at : at + _BLOCK]
            finally:
                stop.set()
                reader.join()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise _Fail("not_a_bundle", None, f"entries.jsonl cannot be read: {exc}") from None


def _line_blocks(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Lists of lines (without their LF) from the chunks of entries.jsonl (FORMAT.md 8.3)."""
    rest = b""
    for buf in chunks:
        lines = (rest + buf).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE_BYTES:
            raise _Fail("not_a_bundle", None, f"entries.jsonl has a line longer than {MAX_LINE_BYTES} bytes")
        if lines:
            yield lines
    if rest:
        raise _Fail("not_a_bundle", None, "entries.jsonl does not end with LF: its last line is cut off")


def _lines(members: _Members) -> Iterator[bytes]:
    for block in _line_blocks(_chunks(members)):
        yield from block


# -- B10: remembered state ----------------------------------------------------------------


def _load_state(path: Path) -> dict[str, Any]:
    """``{"format": ..., "logs": {origin: {vkey: {"size": n, "root": hex}}}}``; empty if absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {"format": STATE_FORMAT, "logs": {}}
    except OSError as exc:
        raise InputError(f"cannot read state file {path}: {exc.strerror}") from None
    try:
        state = strict_json(data)
        ok = (type(state) is dict and state.get("format") == STATE_FORMAT and type(state.get("logs")) is dict
              and all(type(per) is dict and all(type(r) is dict and type(r.get("size")) is int
                                                and type(r.get("root")) is str
                                                and re.fullmatch("[0-9a-f]{64}", r["root"]) is not None
                                                for r in per.values())
                      for per in state["logs"].values()))
    except (UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{path} is not an mlledger bundle state file ({STATE_FORMAT})")
    return dict(state)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Temp file, fsync, rename over the old state, fsync the directory."""
    from ledger._fsutil import atomic_write

    atomic_write(path, json.dumps(state, sort_keys=True, indent=1).encode() + b"\n")


