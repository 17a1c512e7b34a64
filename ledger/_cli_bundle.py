"""``mlledger export`` and ``mlledger verify-bundle``: audit bundles (docs/FORMAT.md 8 and 9).

Exit codes (DESIGN.md section 9): 0 exported / the bundle verifies; 1 the bundle fails
verification (its failure kind and message on stderr) or the ledger does not match its
checkpoints; 2 usage or input error (bad key file, no checkpoint to export against).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ledger import keys
from ledger.bundle import BundleResult, verify_bundle
from ledger.cli import FORMAT, Context, echo_json, handle_errors, show_progress
from ledger.errors import InputError
from ledger.export import export_bundle
from ledger.note import Verifier

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

__all__ = ["export", "verify_bundle_cmd"]

_VKEY = click.Path(exists=True, dir_okay=False, path_type=Path)


def _vkey(path: Path) -> Verifier:
    """A .vkey file; a private key given by mistake is refused without echoing it."""
    try:
        private = b"PRIVATE KEY" in path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read verifier key {path}: {exc.strerror}") from None
    if private:
        raise InputError(f"{path} holds a private key; give the public .vkey file beside it")
    return keys.load_verifier(path)


def _fresh_checkpoint(obj: Context, fmt: str) -> None:
    """Sign a checkpoint of the head when the log key is at hand and the head is ahead of it."""
    with obj.open() as ledger:
        head, latest = ledger.head().size, ledger.latest_checkpoint()
    covered = latest.size if latest is not None else 0
    if covered == head:
        return
    signer = obj.signer(required=False)
    if signer is None:
        if fmt == "text":
            click.echo(f"note: the ledger has {head} entries but its latest checkpoint covers {covered}; "
                       f"exporting {covered} (no usable log key at {obj.log_key_path} to sign a newer one)",
                       err=True)
        return
    with obj.open(signer=signer) as ledger:
        cp = ledger.checkpoint()
    if fmt == "text":
        click.echo(f"signed checkpoint {cp.size} with {obj.log_key_path}", err=True)


def _read_event(obj: Context, output: Path, size: int | None) -> None:
    """Record the access.read of a bundle export durably BEFORE anything is read (HIPAA 164.312(b)):
    a refused or failed record means no export; a crash after it leaves the read on record."""
    from ledger.cli import _default_actor
    from ledger.events import Event
    from ledger.kinds import AccessRead

    detail = f"entries 0..{size - 1}" if size else "the whole log, at a checkpoint signed now"
    event = Event(AccessRead(what="bundle", target=str(output), detail=detail), actor=_default_actor())
    with obj.open() as ledger:
        ledger.append(event)


@click.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Where to write the bundle: a new directory, or a file ending in .zip.")
@click.option("--size", type=click.IntRange(min=1),
              help="Export the first N entries; N must be the size of a checkpoint "
              "[default: sign a checkpoint of the whole log if keys/log.pem is here, "
              "else the latest checkpoint].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def export(obj: Context, output: Path, size: int | None, fmt: str) -> None:
    """Export the ledger as an audit bundle for offline verification (verify-bundle).

    The bundle holds the entries, the signed checkpoints (with witness
    cosignatures) and the log's public keys; regulators verify it with nothing
    but a trusted .vkey file. The export is recorded (access.read, HIPAA 164.312(b)); in an
    access-controlled ledger only an auditor may export.
    """
    _read_event(obj, output, size)
    if size is None:
        _fresh_checkpoint(obj, fmt)
    with obj.open() as ledger:
        if show_progress():
            with click.progressbar(length=size or ledger.head().size, label="exporting",
                                   file=sys.stderr) as bar:
                manifest = export_bundle(ledger, output, size=size,
                                         progress=lambda n, _total: bar.update(n - bar.pos))
        else:
            manifest = export_bundle(ledger, output, size=size)
        covering = ledger.checkpoint_of_size(manifest.size)
    assert covering is not None
    out = {"path": str(output), "origin": manifest.origin, "size": manifest.size,
           "root": covering.root.hex(), "entries_sha256": manifest.entries_sha256,
           "created": manifest.created}
    if fmt == "json":
        echo_json(out)
        return
    click.echo(f"exported {manifest.size} entries of {manifest.origin} to {output}")
    click.echo(f"  root           {covering.root.hex()}")
    click.echo(f"  entries_sha256 {manifest.entries_sha256}")


def _show(result: BundleResult, fmt: str) -> None:
    if fmt == "json":
        echo_json(result.to_json())
    elif result.ok:
        assert result.root is not None
        click.echo(f"ok: {result.size} entries of {result.origin} verify")
        click.echo(f"  root        {result.root.hex()}")
        click.echo(f"  checkpoints {', '.join(map(str, result.checkpoints))}")
        click.echo(f"  signed by   {result.signed_by}")
        if result.witnesses:
            click.echo(f"  witnesses   {', '.join(result.witnesses)}")
        click.echo(f"  last entry  {result.last_ts}")
    if not result.ok:
        at = f" at seq {result.seq}" if result.seq is not None else ""
        click.echo(f"FAILED ({result.kind}){at}: {result.message}", err=True)


@click.command(name="verify-bundle")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--trust", "trusted", multiple=True, required=True, type=_VKEY,
              help="A trusted log key (.vkey file); repeatable. Keys in the bundle are never trusted.")
@click.option("--witness", "witnesses", multiple=True, type=_VKEY,
              help="A trusted witness cosignature key (.vkey file); repeatable.")
@click.option("--quorum", type=click.IntRange(min=1),
              help="How many of the --witness keys must have cosigned [default: all of them].")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="Remember the verified size and root here, and refuse a later bundle that "
              "does not extend it (truncation, fork).")
@click.option("--deep", is_flag=True, help="Also parse every entry as strict JSON.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def verify_bundle_cmd(bundle: Path, trusted: tuple[Path, ...], witnesses: tuple[Path, ...],
                      quorum: int | None, state: Path | None, deep: bool, fmt: str) -> None:
    """Verify an audit BUNDLE (directory or .zip) offline against trusted keys.

    Exit 0 when it verifies; exit 1 with the failure kind (modified_entry,
    deleted_entry, inserted_entry, reordered_entries, truncated, fork,
    untrusted_key, revoked_key, cross_log, quorum_not_met, manifest_mismatch,
    not_a_bundle, invalid_entry) and the seq where there is one.
    """
    log_keys = [_vkey(p) for p in trusted]
    witness_keys = [_vkey(p) for p in witnesses]
    with ExitStack() as stack:
        bars: list[ProgressBar[int]] = []

        def progress(n: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(
                    click.progressbar(length=max(total, 1), label="verifying", file=sys.stderr)))
            bars[0].update(n - bars[0].pos)

        result = verify_bundle(bundle, trusted=log_keys, witnesses=witness_keys, quorum=quorum,
                               state=state, deep=deep, progress=progress if show_progress() else None)
    _show(result, fmt)
    if not result.ok:
        sys.exit(1)
