"""The ``mlledger`` command line: the root group and the ledger's own commands.

Other packages add command groups through the ``mlledger.commands`` entry-point
group. Errors are one line on stderr and an exit code (DESIGN.md section 9):
0 ok, 1 verification failed or gate denied, 2 usage or input error, 3 needs
approval. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import getpass
import os
import secrets
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import orjson

from ledger._checkpoints import DEFAULT_CHECKPOINT_EVERY
from ledger.api import Entry, Ledger
from ledger.canonical import decode
from ledger.errors import (
    GateDenied,
    InputError,
    IntegrityError,
    MlledgerError,
    PolicyError,
)
from ledger.events import Event
from ledger.note import Signer
from ledger.verify import VerifyResult

__all__ = ["Context", "main", "root"]

URL_ENV = "MLLEDGER_URL"
HOME_ENV = "MLLEDGER_HOME"
IDENTITY_ENV = "MLLEDGER_IDENTITY"
DEFAULT_HOME = ".mlledger"
FORMAT = click.Choice(["text", "json"])

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """What every command shares: where the ledger is, who acts (--as), and --debug."""

    def __init__(self, ledger: str | None, debug: bool, identity: str | None = None) -> None:
        self.location = ledger or os.environ.get(URL_ENV) or DEFAULT_HOME
        self.debug = debug
        #: The acting identity's private key file (--as, else $MLLEDGER_IDENTITY).
        self.identity_path = Path(identity) if identity else (
            Path(os.environ[IDENTITY_ENV]) if os.environ.get(IDENTITY_ENV) else None)

    @property
    def home(self) -> Path:
        """Where keys and artifacts live: the ledger directory, or MLLEDGER_HOME for URLs."""
        if "://" not in self.location:
            return Path(self.location)
        return Path(os.environ.get(HOME_ENV, DEFAULT_HOME))

    @property
    def log_key_path(self) -> Path:
        return self.home / "keys" / "log.pem"

    def signer(self, *, required: bool) -> Signer | None:
        """The log's checkpoint key from <home>/keys/log.pem.

        Not required: None (with a note on stderr) when the key is absent or locked.
        """
        from ledger import keys

        path = self.log_key_path
        if not path.exists():
            if required:
                raise InputError(f"no log key at {path}; pass --ledger for the ledger's directory "
                                 f"or set {HOME_ENV}")
            return None
        try:
            return keys.load_signer(path)
        except InputError as exc:
            if required:
                raise
            click.echo(f"note: no checkpoint signed ({exc})", err=True)
            return None

    @contextmanager
    def open(self, *, signer: Signer | None = None, checkpoint_every: int | None = None) -> Iterator[Ledger]:
        ledger = Ledger.open(self.location, signer=signer, checkpoint_every=checkpoint_every)
        try:
            if self.identity_path is not None:
                from ledger.actions import identity_for_key
                from ledger.keys import load_private_key

                key = load_private_key(self.identity_path)
                ledger.act_as(identity_for_key(ledger, key, where=str(self.identity_path)), key)
            yield ledger
        finally:
            ledger.close()


def exit_code(exc: MlledgerError) -> int:
    """DESIGN.md section 9."""
    if isinstance(exc, IntegrityError | GateDenied):
        return 1
    if getattr(exc, "needs_approval", False):
        return 3
    if isinstance(exc, InputError | PolicyError):
        return 2
    return 2


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn mlledger errors into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MlledgerError as exc:
            ctx = click.get_current_context().find_object(Context)
            if ctx is not None and ctx.debug:
                raise
            fail(str(exc), exit_code(exc))

    return wrapper


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


#: The ledger's own commands that live in other modules, imported on first use.
_BUILTIN: dict[str, str] = {
    "checkpoint": "ledger._cli_log:checkpoint",
    "key": "ledger._cli_log:key",
    "prove": "ledger._cli_log:prove",
    "verify-proof": "ledger._cli_log:verify_proof",
    "witness": "ledger._cli_witness:witness",
    "export": "ledger._cli_bundle:export",
    "verify-bundle": "ledger._cli_bundle:verify_bundle_cmd",
}


def _builtin(name: str) -> click.Command | None:
    import importlib

    target = _BUILTIN.get(name)
    if target is None:
        return None
    module, attr = target.split(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command)
    return cmd


class _Root(click.Group):
    """Loads command groups from the ``mlledger.commands`` entry points, failing closed."""

    def _plugins(self) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for ep in entry_points(group="mlledger.commands"):
            try:
                cmd = ep.load()
            except Exception as exc:
                fail(f"command plugin {ep.name!r} ({ep.value}) failed to load: {exc}", 2)
            if not isinstance(cmd, click.Command):
                fail(f"command plugin {ep.name!r} ({ep.value}) is not a click command", 2)
            found[ep.name] = cmd
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._available(), *self._plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or _builtin(name) or self._plugins().get(name)

    @staticmethod
    def _available() -> list[str]:
        import importlib.util

        return [n for n, t in _BUILTIN.items() if importlib.util.find_spec(t.split(":")[0]) is not None]


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ledger", metavar="URL|DIR", help=f"Ledger database URL or directory "
              f"[default: ${URL_ENV}, else ./{DEFAULT_HOME}].")
@click.option("--as", "identity", metavar="KEYFILE", help=f"Act as the registered identity whose private key "
              f"(PEM) this is; governed actions are signed by it [default: ${IDENTITY_ENV}].")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="mlledger")
@click.pass_context
def root(ctx: click.Context, ledger: str | None, identity: str | None, debug: bool) -> None:
    """mlledger: a verifiable compliance ledger for machine learning.

    Every data, model and prediction event is an entry in an append-only,
    hash-chained log covered by an RFC 6962 Merkle tree.

    \b
    Exit codes: 0 ok, 1 verification failed or gate denied,
                2 usage or input error, 3 needs approval.
    """
    ctx.obj = Context(ledger, debug, identity)


# -- init ---------------------------------------------------------------------


def _default_origin() -> str:
    host = socket.gethostname().split(".")[0] or "localhost"
    return f"{host}.local/{Path.cwd().name or 'ledger'}-{secrets.token_hex(4)}"


@root.command()
@click.option("--origin", help="The log's name, e.g. example.com/credit-risk "
              "[default: <host>.local/<dir>-<random>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def init(obj: Context, origin: str | None, fmt: str) -> None:
    """Create a ledger, its checkpoint key and its genesis entry.

    The ledger is created at --ledger (a directory or a database URL); the key
    goes to <dir>/keys/ (or $MLLEDGER_HOME/keys for a URL). Set
    MLLEDGER_KEY_PASSPHRASE to encrypt the private key.
    """
    from ledger import keys

    origin = origin or _default_origin()
    signer = keys.generate(origin)
    key_dir = obj.home / "keys"
    if (key_dir / "log.pem").exists():
        raise InputError(f"{key_dir / 'log.pem'} already exists: is there a ledger here already?")
    if not obj.home.exists():  # keys, artifacts and (for SQLite) subject keys live here: owner only
        obj.home.mkdir(parents=True, mode=0o700)
    with keys.new_signer_files(signer, key_dir, "log") as (pem, encrypted), \
            Ledger.init(obj.location, origin=origin, verifier_key=signer.verifier_key,
                        actor=f"user:{getpass.getuser()}") as ledger:
        head = ledger.head()
    if not encrypted:
        click.echo(keys.unencrypted_warning(pem), err=True)
    if fmt == "json":
        echo_json({"origin": origin, "ledger": obj.location, "verifier_key": signer.verifier_key,
                   "private_key": str(pem), "size": head.size, "root": head.root.hex()})
        return
    click.echo(f"created ledger {origin}")
    click.echo(f"  at           {obj.location}")
    click.echo(f"  verifier key {signer.verifier_key}")
    click.echo(f"  private key  {pem}")


# -- append -------------------------------------------------------------------


def _default_actor() -> str:
    return os.environ.get("MLLEDGER_ACTOR") or f"user:{getpass.getuser()}"


def _read_events(source: str, data: bytes, actor: str) -> list[Event]:
    events: list[Event] = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 (byte {exc.start + 1})") from None
        event = Event.from_json(decode(line, where=where), where=where, actor=actor)
        try:
            event.prepare()  # size and integer-range limits, reported with the line
        except InputError as exc:
            raise InputError(f"{where}.{exc}") from None
        events.append(event)
    if not events:
        raise InputError(f"{source}: no events (expected JSON Lines, one event per line)")
    return events


@root.command()
@click.argument("event", required=False)
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read JSON Lines events from FILE ('-' for stdin).")
@click.option("--actor", help="Actor for events that name none [default: $MLLEDGER_ACTOR, "
              "else user:<login>].")
@click.option("--force-unsafe", is_flag=True,
              help="Append even if the ledger fails verification (logged loudly).")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def append(obj: Context, event: str | None, path: str | None, actor: str | None,
           force_unsafe: bool, fmt: str) -> None:
    """Append one EVENT (a JSON object) or JSON Lines from --file, atomically.

    An event is {"kind": ..., "actor": ..., "subject": ..., "payload": {...}};
    seq, prev and ts are assigned by the ledger. Every event is validated
    before anything is written; one bad line writes nothing. When the log key is
    available, a checkpoint is signed after every 1,000 entries and at the end.
    """
    who = actor or _default_actor()
    if (event is None) == (path is None):
        raise InputError("give one EVENT argument or --file (use '-' for stdin), not both")
    if event is not None:
        raw = event.encode("utf-8", "surrogateescape")
        # One JSON object, which may span lines; --file takes JSON Lines.
        try:
            events = _read_events("argument", b" ".join(raw.splitlines()), who)
        except InputError:
            try:
                several = len(_read_events("argument", raw, who)) > 1
            except InputError:
                several = False
            if several:
                raise InputError("argument: give exactly one event; use --file for JSON Lines") from None
            raise
    else:
        assert path is not None
        if path == "-":
            source, data = "stdin", sys.stdin.buffer.read()
        else:
            try:
                source, data = path, Path(path).read_bytes()
            except OSError as exc:
                raise InputError(f"{path}: {exc.strerror}") from None
        events = _read_events(source, data, who)
    signer = obj.signer(required=False)
    with obj.open(signer=signer, checkpoint_every=DEFAULT_CHECKPOINT_EVERY if signer else None) as ledger:
        if force_unsafe:
            click.echo("WARNING: --force-unsafe: appending without verifying the ledger", err=True)
        else:
            result = _verify(ledger, quiet=True)
            if not result.ok:
                raise IntegrityError(
                    f"the ledger fails verification at seq {result.bad_seq} ({result.reason}); "
                    "refusing to append. Investigate with 'mlledger verify', or pass "
                    "--force-unsafe"
                )
        receipts = ledger.append_many(events)
    if ledger.checkpoint_error is not None:
        click.echo(f"note: appended, but no checkpoint was signed: {ledger.checkpoint_error}", err=True)
    if fmt == "json":
        for r in receipts:
            echo_json(r.to_json())
    else:
        for r, e in zip(receipts, events, strict=True):
            click.echo(f"appended seq {r.seq} {e.kind} leaf {r.leaf_hash.hex()}")


# -- reading ------------------------------------------------------------------


def _entry_text(e: Entry) -> str:
    subject = e.subject if e.subject is not None else "-"
    return f"{e.seq:>8}  {e.ts}  {e.kind:<22} {e.actor:<24} {subject}"


@root.command(name="log")
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable).")
@click.option("--subject", help="Only entries about this subject.")
@click.option("--since", help="From this RFC 3339 time (inclusive).")
@click.option("--until", help="Up to this RFC 3339 time (exclusive).")
@click.option("--from", "start", type=click.IntRange(min=0), default=0, help="From this seq.")
@click.option("-n", "--limit", type=click.IntRange(min=1), help="At most this many entries.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True,
              help="json prints each entry's stored bytes as JSON Lines.")
@click.pass_obj
@handle_errors
def log_cmd(obj: Context, kinds: tuple[str, ...], subject: str | None, since: str | None,
            until: str | None, start: int, limit: int | None, fmt: str) -> None:
    """List entries in seq order, filtered."""
    with obj.open() as ledger:
        for e in ledger.iter(kind=list(kinds) or None, subject=subject, since=since,
                             until=until, start=start, limit=limit):
            click.echo(e.raw.decode() if fmt == "json" else _entry_text(e))


@root.command()
@click.argument("seq", type=click.IntRange(min=0))
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def show(obj: Context, seq: int, fmt: str) -> None:
    """Show one entry and its leaf hash."""
    with obj.open() as ledger:
        e = ledger.get(seq)
    if fmt == "json":
        echo_json({"seq": e.seq, "leaf_hash": e.leaf_hash.hex(), "entry": e.data})
        return
    click.echo(f"seq       {e.seq}\nleaf hash {e.leaf_hash.hex()}")
    click.echo(orjson.dumps(e.data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@root.command()
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def head(obj: Context, fmt: str) -> None:
    """Show the ledger's size, Merkle root and last entry."""
    with obj.open() as ledger:
        h = ledger.head()
        origin = ledger.origin()
    out = {"origin": origin, "size": h.size, "root": h.root.hex(),
           "last_leaf_hash": h.leaf_hash.hex(), "last_seq": h.size - 1}
    if fmt == "json":
        echo_json(out)
        return
    for key, value in out.items():
        click.echo(f"{key:<15}{value}")


def _verify(ledger: Ledger, *, quiet: bool = False) -> VerifyResult:
    if quiet or not show_progress():
        return ledger.verify()
    total = ledger.head().size
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            bar.update(n - done)
            done = n

        return ledger.verify(progress=progress)


@root.command()
@click.option("--deep", is_flag=True, help="Also re-validate every payload against its kind.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def verify(obj: Context, deep: bool, fmt: str) -> None:
    """Recompute every leaf hash, chain link, timestamp and Merkle node.

    Exit 0 when the ledger verifies; exit 1 naming the first bad seq otherwise.
    """
    with obj.open() as ledger:
        result = ledger.verify(deep=True) if deep else _verify(ledger)
    if fmt == "json":
        echo_json(result.to_json())
    elif result.ok:
        assert result.root is not None
        click.echo(f"ok: {result.size} entries verify; root {result.root.hex()}")
    if not result.ok:
        if fmt == "text":
            click.echo(f"FAILED at seq {result.bad_seq}: {result.reason}", err=True)
        sys.exit(1)


def main() -> None:
    root(prog_name="mlledger")
