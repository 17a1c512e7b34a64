"""``mlledger report``: the audit dossier, the ledger integrity certificate, the LL144 summary.

Each command writes one file (PDF/A-3b by default, or HTML, or the JSON data) and then
appends ``report.generated`` with its hash and the tree it covers. Bad input (a malformed
or unknown model, an output path that cannot be written) is one line and exit 2, with
nothing written or appended. A ledger that fails verification still gets its report,
which says so, but exits 1 and records nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ledger.cli import Context, _default_actor, handle_errors
from ledger.errors import InputError, IntegrityError, MlledgerError

__all__ = ["report"]

_FORMAT = click.Choice(["pdf", "html", "json"])


def _check_output(path: Path) -> None:
    """Refuse, before any work, a path whose directory is missing or not writable."""
    if path.is_dir():
        raise InputError(f"cannot write the report to {path}: it is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write the report to {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"cannot write the report to {path}: permission denied")


def _options(fn: click.Command | click.decorators.FC) -> click.decorators.FC:
    fn = click.option("--size", type=click.IntRange(min=1),
                      help="Report on the first SIZE entries only (an earlier state) [default: all].")(fn)
    fn = click.option("--actor", help="Who produces the report [default: $MLLEDGER_ACTOR, else user:<login>].")(fn)
    fn = click.option("--format", "fmt", type=_FORMAT, default="pdf", show_default=True,
                      help="PDF/A-3b with embedded data and bundle, self-contained HTML, or the JSON data.")(fn)
    fn = click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The file to write.")(fn)
    return fn  # type: ignore[return-value]


def _run(obj: Context, kind: str, ref: str | None, output: Path, fmt: str, actor: str | None,
         size: int | None) -> None:
    from ledger._checkpoints import DEFAULT_CHECKPOINT_EVERY
    from ledger._fsutil import atomic_write
    from ledger.artifacts import ArtifactStore
    from reports._data import split_ref
    from reports._report import make_report, record

    if ref is not None:
        split_ref(ref)
    _check_output(output)
    who = actor or _default_actor()
    signer = obj.signer(required=False)
    with obj.open(signer=signer, checkpoint_every=DEFAULT_CHECKPOINT_EVERY if signer else None) as ledger:
        from ledger.events import Event
        from ledger.kinds import AccessRead

        # The read is logged (HIPAA 164.312(b)); access control refuses it, before any work, without the role.
        read = Event(AccessRead(what="report", target=f"{kind}:{ref or 'ledger'}", detail=str(output)), actor=who)
        ledger.append(read)  # recorded before anything is read: refused without the role, kept if the run dies
        verified = ledger.verify()
        if verified.ok and signer is not None and size is None:
            try:  # the certificate then shows a checkpoint of exactly the covered tree
                ledger.checkpoint()
            except MlledgerError as exc:
                click.echo(f"note: no checkpoint signed ({exc})", err=True)
        rep = make_report(ledger, kind, ref=ref, fmt=fmt, artifacts=ArtifactStore(obj.home / "artifacts"),  # type: ignore[arg-type]
                          size=size, producer=who, verified=verified)
        try:
            atomic_write(output, rep.content)
        except OSError as exc:
            raise InputError(f"cannot write the report to {output}: {exc.strerror}") from None
        if not verified.ok:
            raise IntegrityError(f"the ledger fails verification at seq {verified.bad_seq} ({verified.reason}); "
                                 f"{output} says so; report.generated was not recorded")
        receipt = record(ledger, rep, actor=who)
    what = f"{kind} report" + (f" of {ref}" if ref else "")
    click.echo(f"wrote {output}: {what} ({fmt}, {len(rep.content):,} bytes, sha256 {rep.sha256})")
    click.echo(f"  covers tree size {rep.tree_size}, root {rep.root}")
    click.echo(f"  recorded report.generated at seq {receipt.seq}")


@click.group()
def report() -> None:
    """Auditor reports: a model's audit dossier, the ledger's integrity certificate, an LL144 summary.

    Reports are read from the ledger only, dated by ledger time, and byte-for-byte
    reproducible for the same ledger state and options. Each one is recorded as
    report.generated with its SHA-256 and the tree size and root it covers.
    """


@report.command(name="model")
@click.argument("ref", metavar="NAME@VERSION")
@_options
@click.pass_obj
@handle_errors
def report_model(obj: Context, ref: str, output: Path, fmt: str, actor: str | None, size: int | None) -> None:
    """The audit dossier of NAME@VERSION: card, datasheets, lineage, evidence, decisions,
    signatures, operations, verification certificate and compliance crosswalk."""
    _run(obj, "model", ref, output, fmt, actor, size)


@report.command(name="ledger")
@_options
@click.pass_obj
@handle_errors
def report_ledger(obj: Context, output: Path, fmt: str, actor: str | None, size: int | None) -> None:
    """The ledger's integrity certificate: verification, checkpoints, keys, entries, governance audit."""
    _run(obj, "ledger", None, output, fmt, actor, size)


@report.command(name="bias-audit")
@click.argument("ref", metavar="NAME@VERSION")
@_options
@click.pass_obj
@handle_errors
def report_bias(obj: Context, ref: str, output: Path, fmt: str, actor: str | None, size: int | None) -> None:
    """The NYC Local Law 144 bias-audit summary of NAME@VERSION from its fairness evidence."""
    _run(obj, "bias-audit", ref, output, fmt, actor, size)
