"""CLI: checkpoints, keys, and proofs for one entry (``mlledger checkpoint|key|prove|verify-proof``)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from ledger import keys
from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError
from ledger.events import Event
from ledger.keyhistory import sign_rotation
from ledger.kinds import KeyAdded, KeyRevoked, KeyRotated
from ledger.note import Verifier
from ledger.tlog_proof import format_proof, verify_entry_proof

__all__ = ["checkpoint", "key", "prove", "verify_proof"]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        return
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None


# -- checkpoints -------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_context
@handle_errors
def checkpoint(ctx: click.Context, fmt: str) -> None:
    """Sign a checkpoint of the whole log now (with <home>/keys/log.pem).

    A checkpoint is a C2SP signed note: origin, tree size and root hash. The log
    refuses to sign one that is inconsistent with its previous checkpoint.
    Automatic checkpoints are also signed by 'append' every 1,000 entries and at
    the end of each append.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.find_object(Context)
    assert obj is not None
    with obj.open(signer=obj.signer(required=True)) as ledger:
        cp = ledger.checkpoint()
    if fmt == "json":
        echo_json({"id": cp.id, "size": cp.size, "root": cp.root.hex(), "note": cp.note.decode()})
    else:
        click.echo(cp.note.decode(), nl=False)


@checkpoint.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def checkpoint_list(obj: Context, fmt: str) -> None:
    """List stored checkpoints with their witness cosignatures."""
    with obj.open() as ledger:
        cps = ledger.checkpoints()
    for cp in cps:
        if fmt == "json":
            echo_json({"id": cp.id, "size": cp.size, "root": cp.root.hex(),
                       "witnesses": [c.witness for c in cp.cosignatures]})
        else:
            click.echo(f"{cp.id:>6}  size {cp.size:<10} root {cp.root.hex()}  "
                       f"witnesses {len(cp.cosignatures)}")


@checkpoint.command(name="show")
@click.argument("size", type=click.IntRange(min=1), required=False)
@click.pass_obj
@handle_errors
def checkpoint_show(obj: Context, size: int | None) -> None:
    """Print a checkpoint note (the latest, or of SIZE) with its cosignatures."""
    with obj.open() as ledger:
        cp = ledger.latest_checkpoint() if size is None else ledger.checkpoint_of_size(size)
    if cp is None:
        raise InputError("no such checkpoint; sign one with 'mlledger checkpoint'")
    click.echo(cp.with_cosignatures().decode(), nl=False)


@checkpoint.command(name="witness-request")
@click.option("--old", type=click.IntRange(min=0), required=True,
              help="The size the witness last cosigned (0 the first time).")
@click.option("--size", type=click.IntRange(min=1), help="Checkpoint size [default: latest].")
@click.option("-o", "--output", default="-", show_default=True, help="Where to write the request.")
@click.pass_obj
@handle_errors
def checkpoint_witness_request(obj: Context, old: int, size: int | None, output: str) -> None:
    """Write a C2SP tlog-witness add-checkpoint request for a witness."""
    from ledger.witness import make_request

    with obj.open() as ledger:
        cp = ledger.latest_checkpoint() if size is None else ledger.checkpoint_of_size(size)
        if cp is None:
            raise InputError("no such checkpoint; sign one with 'mlledger checkpoint'")
        if old > cp.size:
            raise InputError(f"--old {old} is larger than the checkpoint size {cp.size}")
        proof = ledger.consistency_proof(old, cp.size) if 0 < old < cp.size else []
    _write(output, make_request(old, proof, cp.note))


@checkpoint.command(name="attach")
@click.argument("cosignature", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--witness", "witness_path", type=click.Path(dir_okay=False), required=True,
              help="The witness's .vkey file (cosignature key, type 0x04).")
@click.option("--size", type=click.IntRange(min=1), help="Checkpoint size [default: latest].")
@click.pass_obj
@handle_errors
def checkpoint_attach(obj: Context, cosignature: str, witness_path: str, size: int | None) -> None:
    """Verify a witness's cosignature line(s) and store them with the checkpoint."""
    witness = keys.load_verifier(Path(witness_path))
    lines = [ln for ln in _read(cosignature).decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{cosignature}: no cosignature line")
    with obj.open() as ledger:
        latest = ledger.latest_checkpoint()
        target = size or (latest.size if latest else 0)
        added = sum(ledger.attach_cosignature(target, ln, witness) for ln in lines)
    click.echo(f"attached {added} cosignature(s) from {witness.name} to checkpoint {target}")


# -- keys --------------------------------------------------------------------------


@click.group()
def key() -> None:
    """Manage the log's checkpoint keys (rotate, revoke, add, list)."""


@key.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def key_list(obj: Context, fmt: str) -> None:
    """List every checkpoint key the log has used and the sizes it may sign."""
    with obj.open() as ledger:
        history = ledger.key_history()
    for k in history.keys.values():
        row = {"vkey": k.vkey, "valid_from_size": k.valid_from, "valid_until_size": k.valid_until,
               "ended": k.ended_by, "current": k.vkey == history.current}
        if fmt == "json":
            echo_json(row)
        else:
            until = "" if k.valid_until is None else f"..{k.valid_until}"
            state = "current" if row["current"] else (k.ended_by or "")
            click.echo(f"{k.vkey}  sizes {k.valid_from}{until or '..'}  {state}")


@key.command(name="rotate")
@click.option("--actor", default="system:key-rotation", show_default=True)
@click.pass_obj
@handle_errors
def key_rotate(obj: Context, actor: str) -> None:
    """Replace the checkpoint key: the old key signs the hand-over to a new one.

    The new private key replaces <home>/keys/log.pem; the old one is kept as
    <home>/keys/retired/log-<key id>.pem.
    """
    old = obj.signer(required=True)
    assert old is not None
    key_dir = obj.log_key_path.parent
    new = keys.generate(old.name)
    with keys.new_signer_files(new, key_dir, "log.next") as (staged, _), obj.open(signer=old) as ledger:
        ledger.checkpoint()  # the old key's last word covers everything before the hand-over
        rotation = KeyRotated(old_key=old.verifier_key, new_key=new.verifier_key,
                              old_key_signature=sign_rotation(old.name, old, new.verifier_key))
        receipt = ledger.append(Event(rotation, actor=actor))
    retired = key_dir / "retired"
    retired.mkdir(exist_ok=True)
    stem = f"log-{old.key_id.hex()}"
    obj.log_key_path.replace(retired / f"{stem}.pem")
    obj.log_key_path.with_suffix(".vkey").replace(retired / f"{stem}.vkey")
    staged.replace(obj.log_key_path)
    staged.with_suffix(".vkey").replace(obj.log_key_path.with_suffix(".vkey"))
    with obj.open(signer=new) as ledger:
        ledger.checkpoint()
    click.echo(f"rotated at seq {receipt.seq}: new checkpoint key {new.verifier_key}")


@key.command(name="revoke")
@click.argument("vkey_file", type=click.Path(dir_okay=False))
@click.option("--reason", type=click.Choice(["compromised", "superseded", "retired"]), required=True)
@click.option("--note", help="Free text recorded with the revocation.")
@click.option("--actor", default="system:key-revocation", show_default=True)
@click.pass_obj
@handle_errors
def key_revoke(obj: Context, vkey_file: str, reason: str, note: str | None, actor: str) -> None:
    """Revoke a key: it signs nothing that covers this entry or later ones."""
    verifier = keys.load_verifier(Path(vkey_file))
    with obj.open() as ledger:
        r = ledger.append(Event(KeyRevoked(verifier_key=str(verifier), reason=reason,  # type: ignore[arg-type]
                                           note=note), actor=actor))
    click.echo(f"revoked {verifier} at seq {r.seq}")


@key.command(name="add")
@click.argument("vkey_file", type=click.Path(dir_okay=False))
@click.option("--purpose", type=click.Choice(["checkpoint", "witness"]), required=True)
@click.option("--actor", default="system:key-admin", show_default=True)
@click.pass_obj
@handle_errors
def key_add(obj: Context, vkey_file: str, purpose: str, actor: str) -> None:
    """Record a key: a new checkpoint key (after a revocation) or a witness."""
    verifier = keys.load_verifier(Path(vkey_file))
    with obj.open() as ledger:
        r = ledger.append(Event(KeyAdded(verifier_key=str(verifier), purpose=purpose),  # type: ignore[arg-type]
                                actor=actor))
    click.echo(f"added {purpose} key {verifier} at seq {r.seq}")


# -- proofs ------------------------------------------------------------------------


@click.command()
@click.argument("seq", type=click.IntRange(min=0), required=False)
@click.option("-o", "--output", default="-", show_default=True, help="Where to write the .tlog-proof.")
@click.option("--entry-out", type=click.Path(dir_okay=False), help="Also write the entry's stored bytes.")
@click.option("--consistency", nargs=2, type=click.IntRange(min=1), metavar="OLD NEW",
              help="Print a consistency proof between two tree sizes instead.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def prove(obj: Context, seq: int | None, output: str, entry_out: str | None,
          consistency: tuple[int, int] | None, fmt: str) -> None:
    """Write a C2SP tlog-proof for entry SEQ, or a consistency proof (--consistency OLD NEW).

    The inclusion proof is against the latest checkpoint that covers SEQ; if none
    does yet, run 'mlledger checkpoint' first.
    """
    with obj.open() as ledger:
        if consistency is not None:
            old, new = consistency
            proof = ledger.consistency_proof(old, new)
            roots = (ledger.root_at(old).hex(), ledger.root_at(new).hex())
            if fmt == "json":
                echo_json({"old": old, "new": new, "old_root": roots[0], "new_root": roots[1],
                           "proof": [base64.b64encode(h).decode() for h in proof]})
            else:
                for h in proof:
                    click.echo(base64.b64encode(h).decode())
            return
        if seq is None:
            raise InputError("give SEQ, or --consistency OLD NEW")
        entry = ledger.get(seq)
        cp = ledger.latest_checkpoint(covering=seq)
        if cp is None:
            raise InputError(f"no checkpoint covers seq {seq} yet; run 'mlledger checkpoint' first")
        proof = ledger.inclusion_proof(seq, cp.size)
    _write(output, format_proof(seq, proof, cp.with_cosignatures()))
    if entry_out:
        _write(entry_out, entry.raw)
    if output != "-":
        click.echo(f"wrote {output}: seq {seq} in checkpoint of size {cp.size}", err=True)


@click.command(name="verify-proof")
@click.argument("proof_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--entry", "entry_file", type=click.Path(dir_okay=False), required=True,
              help="The entry's stored bytes (as written by 'prove --entry-out').")
@click.option("--trust", "trust_file", type=click.Path(dir_okay=False), required=True,
              help="The log's .vkey file.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def verify_proof(proof_file: str, entry_file: str, trust_file: str, fmt: str) -> None:
    """Check offline that an entry is in the log, under a checkpoint signed by --trust.

    Exit 0 when it is; exit 1 when the proof, the entry or the signature fail.
    """
    log_key: Verifier = keys.load_verifier(Path(trust_file))
    index, cp = verify_entry_proof(_read(proof_file), _read(entry_file), log_key)
    if fmt == "json":
        echo_json({"ok": True, "seq": index, "size": cp.size, "root": cp.root.hex(), "origin": cp.origin})
    else:
        click.echo(f"ok: entry {index} is in {cp.origin} at size {cp.size} (root {cp.root.hex()})")
