"""``mlledger witness``: run a checkpoint witness from the command line (ledger/witness.py).

Exit codes (DESIGN.md section 9): 0 cosigned; 1 refused (conflict, rollback, fork, bad proof,
untrusted or invalid log signature); 2 usage or input error (malformed request, bad key file).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

__all__ = ["witness"]


@click.group()
def witness() -> None:
    """Cosign log checkpoints, refusing rollbacks and forks (C2SP tlog-witness)."""


# ledger.cli imports this module when it is imported, to register `witness`: the group exists
# before ledger.cli is imported here, so either module may be imported first.
from ledger import keys  # noqa: E402
from ledger.cli import FORMAT, echo_json, handle_errors  # noqa: E402
from ledger.errors import InputError  # noqa: E402
from ledger.note import Checkpoint, Note  # noqa: E402
from ledger.witness import WitnessState, add_checkpoint, parse_request  # noqa: E402

_FILE = click.Path(dir_okay=False, path_type=Path)


def _when(unix: int) -> str:
    try:
        return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{unix} (unix seconds)"


@witness.command()
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example.com/w1.")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write witness.pem, witness.vkey and state.json.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def init(name: str, directory: Path, fmt: str) -> None:
    """Create a witness cosignature key and an empty witness state.

    Set MLLEDGER_KEY_PASSPHRASE to encrypt the private key.
    """
    state_path = directory / "state.json"
    if state_path.exists():
        raise InputError(f"{state_path} already exists; refusing to overwrite witness state")
    signer = keys.generate(name, cosignature=True)
    with keys.new_signer_files(signer, directory, "witness") as (pem, encrypted):
        WitnessState.create(state_path)
    if not encrypted:
        click.echo(keys.unencrypted_warning(pem), err=True)
    if fmt == "json":
        echo_json({"name": name, "verifier_key": signer.verifier_key, "private_key": str(pem),
                   "state": str(state_path)})
        return
    click.echo(signer.verifier_key)


@witness.command("add-checkpoint")
@click.argument("request_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--log-key", "log_key_path", required=True, type=_FILE,
              help="The log's verifier key (.vkey); its name is the log's origin.")
@click.option("--key", "key_path", required=True, type=_FILE,
              help="The witness private key (.pem, with its .vkey beside it).")
@click.option("--state", "state_path", required=True, type=_FILE, help="The witness state file.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def add_checkpoint_cmd(request_file: str, log_key_path: Path, key_path: Path, state_path: Path,
                       fmt: str) -> None:
    """Cosign the checkpoint in REQUEST_FILE ('-' for stdin) if it extends the last one seen.

    REQUEST_FILE is a C2SP tlog-witness add-checkpoint body: 'old <size>', the consistency
    proof hashes in base64, an empty line, then the signed checkpoint. Prints the
    cosignature line. On a conflict, re-request with the 'old <N>' the error names.
    """
    if request_file == "-":
        source, data = "stdin", sys.stdin.buffer.read()
    else:
        try:
            source, data = request_file, Path(request_file).read_bytes()
        except OSError as exc:
            raise InputError(f"{request_file}: {exc.strerror}") from None
    try:
        request = parse_request(data)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    log_key = keys.load_verifier(log_key_path)
    signer = keys.load_signer(key_path)
    line = add_checkpoint(state_path, request, log_key=log_key, witness=signer)
    if fmt == "json":
        cp = Checkpoint.parse_body(Note.parse(request.note).body)
        echo_json({"cosignature": line, "origin": cp.origin, "size": cp.size})
        return
    click.echo(line, nl=False)


@witness.command()
@click.option("--state", "state_path", required=True, type=_FILE, help="The witness state file.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def show(state_path: Path, fmt: str) -> None:
    """List the logs this witness has cosigned: origin, size, root, last update."""
    records = WitnessState(state_path).records()
    if fmt == "json":
        echo_json({"logs": [r.model_dump() for r in records]})
        return
    if not records:
        click.echo("no checkpoints cosigned yet")
    for r in records:
        click.echo(f"{r.origin}\n  size     {r.size}\n  root     {r.root_hex}\n"
                   f"  updated  {_when(r.updated)}\n  log key  {r.log_vkey}")
