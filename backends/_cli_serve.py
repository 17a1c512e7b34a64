"""CLI: ``mlledger serve``, ``predict``, ``batch-proof``, ``review``, ``inputs`` and ``erase``.

Loaded through the ``mlledger.commands`` entry points. ``serve`` needs the ``serve`` extra
(FastAPI and uvicorn), imported only when it runs.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError

__all__ = ["batch_proof", "demo", "erase", "inputs", "predict", "review", "serve"]


def _actor(actor: str | None, default: str | None = None) -> str:
    from ledger.cli import _default_actor

    return actor or default or _default_actor()


def _need_serve_extra() -> None:
    missing = []
    for mod in ("fastapi", "uvicorn"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise InputError(f"serving needs {' and '.join(missing)}: install them with pip install 'mlledger[serve]'")


def _model_at(ref: str) -> tuple[str, str]:
    """NAME@stage (or NAME@VERSION@stage is not accepted: use serve --model NAME@VERSION)."""
    name, _, stage = ref.partition("@")
    if not name or not stage or stage.isdigit():
        raise InputError(f"--model {ref!r}: give NAME@STAGE, e.g. credit@production")
    return name, stage


@click.command()
@click.option("--model", "model", required=True, metavar="NAME[@VERSION]",
              help="The model to serve; with @VERSION the server refuses to start unless that version is deployed.")
@click.option("--stage", default="production", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--store-inputs", is_flag=True,
              help="Also keep raw inputs, AES-GCM-encrypted under each subject's key (erasable).")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(1024), help="Bytes per request.")
@click.option("--max-records", default=1000, show_default=True, type=click.IntRange(1),
              help="Records per request.")
@click.option("--actor", help="The actor of the entries the server writes [default: service:mlledger-serve].")
@click.option("--auth", type=click.Choice(["auto", "required", "unsafe-off"]), default="auto", show_default=True,
              help="Bearer tokens: 'auto' requires them once the ledger has issued any token or is "
                   "access-controlled; 'unsafe-off' serves anyone who can reach the port.")
@click.option("--bench-unrecorded", is_flag=True, hidden=True,
              help="BENCHMARK ONLY: serve without recording decisions (bench/serve.py's baseline).")
@click.pass_obj
@handle_errors
def serve(obj: Context, model: str, stage: str, host: str, port: int, workers: int, store_inputs: bool,
          max_body: int, max_records: int, actor: str | None, auth: str, bench_unrecorded: bool) -> None:
    """Serve a deployed model over HTTP; every decision is on the ledger before it is returned.

    \b
    POST /v1/predict              {"record": {...}} or {"records": [...]}, optional
                                  "subject_id", "automated_decision", "request_id"
    POST /v1/reviews              {"prediction_seq", "outcome", "label", "reason"}
    GET  /v1/receipts/SEQ/proof   a C2SP .tlog-proof for a receipt
    GET  /v1/model, /healthz, /docs (OpenAPI)

    The server refuses to start unless MODEL is deployed at STAGE, and follows new promotions of
    MODEL to STAGE without a restart (recording model.deployed and model.undeployed). Run it behind
    a TLS-terminating proxy; it listens on loopback by default. Every endpoint but /healthz takes
    'Authorization: Bearer TOKEN' (mlledger token issue) with its scope: predict, review, proofs, model.
    With 'mlledger --as KEYFILE serve', the server signs its own governed entries (model.deployed
    when it follows a promotion) as that identity, which then needs the deployer role.
    """
    _need_serve_extra()
    import uvicorn

    from backends._http import ServeConfig, create_app

    cfg = ServeConfig(location=obj.location, home=str(obj.home.resolve()), model=model, stage=stage,
                      actor=_actor(actor, "service:mlledger-serve"), seal=store_inputs,
                      record=not bench_unrecorded, max_body=max_body, max_records=max_records,
                      auth=auth,  # type: ignore[arg-type]
                      identity=str(obj.identity_path.resolve()) if obj.identity_path else None)
    if auth == "unsafe-off" and host not in ("127.0.0.1", "::1", "localhost"):
        raise InputError(f"--auth unsafe-off is only allowed on loopback (not --host {host}): anyone who can reach "
                         "the port could score and review as the server")
    if auth == "unsafe-off":
        click.echo("WARNING: --auth unsafe-off: serving WITHOUT authentication; anyone who can reach the port "
                   "can score and review", err=True)
    if bench_unrecorded:
        click.echo("WARNING: --bench-unrecorded: decisions are NOT recorded; for benchmarks only", err=True)
    app = create_app(cfg)  # refuses here, before listening, if nothing is deployed
    d = app.state.mlledger.scorer.deployed
    click.echo(f"serving {d.ref} ({d.stage}, deployed at seq {d.deployed_seq}) on http://{host}:{port}", err=True)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    app.state.mlledger.ledger.close()
    os.environ["MLLEDGER_SERVE_CONFIG"] = json.dumps(cfg.__dict__)
    uvicorn.run("backends._http:app_factory", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


@click.command()
@click.option("--model", "model", required=True, metavar="NAME@STAGE", help="e.g. credit@production.")
@click.option("--input", "source", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A .csv or .parquet file with the model's input columns.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write row, label, score and each row's seq (or record).")
@click.option("--subject-column", help="The column holding each row's data-subject id (never recorded).")
@click.option("--batch-commitment", is_flag=True,
              help="One prediction.batch entry (Merkle root of per-row records written beside the output) "
                   "instead of one prediction.made per row.")
@click.option("--store-inputs", is_flag=True, help="Also keep raw inputs, encrypted under each subject's key.")
@click.option("--chunk-rows", default=50_000, show_default=True, type=click.IntRange(1))
@click.option("--not-automated", is_flag=True, help="The decisions are advisory (a person decides).")
@click.option("--actor", help="Who scores [default: $MLLEDGER_ACTOR or user:<login>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def predict(obj: Context, model: str, source: Path, output: Path, subject_column: str | None,
            batch_commitment: bool, store_inputs: bool, chunk_rows: int, not_automated: bool, actor: str | None,
            fmt: str) -> None:
    """Score a file with the version deployed at a stage; record every decision.

    The whole file is validated first: a bad row is one error naming its line and column,
    and nothing is written.
    """
    from backends._batch import predict_file
    from backends.serving import Scorer, resolve
    from ledger.privacy import SubjectKeys
    from policies._cli import workspace

    name, stage = _model_at(model)
    with workspace(obj) as ws:
        scorer = Scorer(ws, SubjectKeys(ws.ledger, ws.home), resolve(ws, name, stage), actor=_actor(actor),
                        seal=store_inputs)
        done = predict_file(scorer, source, output, subject_column=subject_column,
                            batch_commitment=batch_commitment, chunk_rows=chunk_rows, automated=not not_automated)
    rate = done.rows / done.seconds if done.seconds else 0.0
    summary = {"model": scorer.deployed.ref, "stage": stage, "rows": done.rows, "entries": done.entries,
               "first_seq": done.first_seq, "batch_seq": done.batch_seq, "root": done.root,
               "output": str(done.output), "records": str(done.records) if done.records else None,
               "seconds": round(done.seconds, 3), "rows_per_s": round(rate)}
    if fmt == "json":
        echo_json(summary)
    elif done.batch_seq is not None:
        click.echo(f"scored {done.rows:,} rows with {scorer.deployed.ref}; prediction.batch at seq {done.batch_seq} "
                   f"(root {done.root}); records {done.records}; output {done.output} ({rate:,.0f} rows/s)")
    else:
        click.echo(f"scored {done.rows:,} rows with {scorer.deployed.ref}; {done.entries:,} prediction.made "
                   f"from seq {done.first_seq}; output {done.output} ({rate:,.0f} rows/s)")


@click.command(name="batch-proof")
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--row", required=True, type=click.IntRange(min=0))
@click.option("--verify", "entry_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead: check a row proof (read from RECORDS) against the batch entry's stored bytes, offline.")
@click.option("--entry-proof", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --verify: the batch entry's .tlog-proof ('mlledger prove SEQ').")
@click.option("--trust", "trust_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --verify: the log's .vkey.")
@handle_errors
def batch_proof(records: Path, row: int, entry_file: Path | None, entry_proof: Path | None,
                trust_file: Path | None) -> None:
    """Prove one row of a batch scored with --batch-commitment (JSON), or --verify such a proof.

    \b
    mlledger batch-proof scored.csv.records.jsonl --row 17 > row17.json
    mlledger prove SEQ --entry-out batch.entry -o batch.tlog-proof     # the prediction.batch entry
    mlledger batch-proof row17.json --row 17 --verify batch.entry --entry-proof batch.tlog-proof --trust log.vkey

    Verifying checks both links: the row's record is a leaf of the batch's Merkle root, and the
    entry holding that root is in the log under a checkpoint signed by the trusted key.
    """
    from backends._batch import row_proof, verify_row_proof
    from ledger import keys
    from ledger.tlog_proof import verify_entry_proof

    if entry_file is None:
        echo_json(row_proof(records, row))
        return
    if entry_proof is None or trust_file is None:
        raise InputError("--verify needs --entry-proof (the batch entry's .tlog-proof) and --trust (the log's "
                         ".vkey): a row proof alone does not show the batch entry is in the log")
    try:
        proof = json.loads(records.read_bytes())
    except ValueError as exc:
        raise InputError(f"{records}: not a JSON row proof ({exc})") from None
    if not isinstance(proof, dict) or proof.get("row") != row:
        raise InputError(f"{records} does not prove row {row}")
    entry = entry_file.read_bytes().rstrip(b"\n")
    seq, cp = verify_entry_proof(entry_proof.read_bytes(), entry, keys.load_verifier(trust_file))
    record = verify_row_proof(proof, entry)
    click.echo(f"ok: row {row} is in the batch at seq {seq} of {cp.origin} (size {cp.size}; label "
               f"{record['label']!r}, commitment {record['input_commitment'][:16]}…)")


@click.command()
@click.argument("seq", type=click.IntRange(min=0))
@click.option("--outcome", required=True, type=click.Choice(["confirmed", "overridden"]))
@click.option("--label", help="The label the reviewer decided (required to override); JSON, e.g. 0 or \"deny\".")
@click.option("--reason", required=True, help="Why (kept on the ledger: no personal data).")
@click.option("--actor", help="The reviewer [default: $MLLEDGER_ACTOR or user:<login>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def review(obj: Context, seq: int, outcome: str, label: str | None, reason: str, actor: str | None,
           fmt: str) -> None:
    """Record a human review of the decision at SEQ: confirmed, or overridden with a new label."""
    from backends.kinds import HumanReviewed
    from ledger.events import Event

    value: object = None
    if label is not None:
        try:
            value = json.loads(label)
        except ValueError:
            value = label
    with obj.open() as ledger:
        try:
            payload = HumanReviewed(prediction_seq=seq, outcome=outcome, label=value, reason=reason)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InputError(f"--label {label!r}: give a number, true/false or a string ({exc})") from None
        # Signed as the acting identity (--as); refused, writing nothing, unless it holds validator or
        # model-risk once the ledger is access-controlled (policies._access).
        receipt = ledger.append(Event(payload, actor=_actor(actor), subject=f"prediction:{seq}"))
    if fmt == "json":
        echo_json({"seq": receipt.seq, "prediction_seq": seq, "outcome": outcome})
    else:
        click.echo(f"human.reviewed at seq {receipt.seq}: prediction {seq} {outcome}")


@click.command()
@click.argument("seq", type=click.IntRange(min=0))
@click.option("--format", "fmt", type=FORMAT, default="json", show_default=True)
@click.pass_obj
@handle_errors
def inputs(obj: Context, seq: int, fmt: str) -> None:
    """Show the raw input behind the prediction at SEQ, if it was stored (--store-inputs) and not erased.

    The read is recorded first (access.read); in an access-controlled ledger only an auditor,
    validator, model-risk or dpo identity may read inputs."""
    from ledger.privacy import SubjectKeys

    with obj.open() as ledger:
        entry = ledger.get(seq)
        if entry.kind != "prediction.made":
            raise InputError(f"seq {seq} is a {entry.kind} entry, not prediction.made")
        p = entry.payload
        if not p.get("sealed"):
            raise InputError(f"the input of seq {seq} was not stored (serve or predict with --store-inputs)")
        from ledger.events import Event
        from ledger.kinds import AccessRead

        ledger.append(Event(AccessRead(what="inputs", target=f"prediction:{seq}"), actor=_actor(None),
                            subject=f"prediction:{seq}"))  # logged first; refused without the role
        data = SubjectKeys(ledger, obj.home).read_sealed(p["key_id"], bytes.fromhex(p["input_commitment"]))
    click.echo(data.decode() if fmt == "json" else base64.b64encode(data).decode())


@click.command()
@click.option("--subject", help="The data subject's id, as given to serve or predict.")
@click.option("--reason", help="Why (kept on the ledger: no personal data).")
@click.option("--request", "request_ref", help="The erasure request's reference, e.g. DSR-2026-0042.")
@click.option("--legal-ground", default="GDPR Art. 17(1)", show_default=True)
@click.option("--finish", is_flag=True, help="Only complete erasures recorded on the ledger whose key still exists.")
@click.option("--actor", help="Who erases (the DPO) [default: $MLLEDGER_ACTOR or user:<login>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def erase(obj: Context, subject: str | None, reason: str | None, request_ref: str | None, legal_ground: str,
          finish: bool, actor: str | None, fmt: str) -> None:
    """Crypto-shred a data subject: destroy their key and stored inputs; record subject.erased.

    The chain and every exported bundle still verify; the subject's input commitments can no
    longer be linked to them and their stored inputs can no longer be read.
    """
    from ledger.privacy import SubjectKeys

    with obj.open() as ledger:
        keys = SubjectKeys(ledger, obj.home)
        if finish:
            done = keys.finish_erasures()
            click.echo(f"completed {len(done)} recorded erasure(s)")
            return
        if not subject or not reason:
            raise InputError("give --subject and --reason (or --finish)")
        receipt = keys.erase(subject, request_ref=request_ref or f"seq-{ledger.head_size()}",
                             legal_ground=legal_ground, reason=reason, actor=_actor(actor))
        key_id = ledger.get(receipt.seq).payload["key_id"]
    purged = _purge_loop_data(obj.home)
    if fmt == "json":
        echo_json({"seq": receipt.seq, "key_id": key_id, "rewrapped": keys.rewrapped,
                   "loop_files_removed": [str(p) for p in purged]})
    else:
        click.echo(f"subject.erased at seq {receipt.seq}: key {key_id} destroyed; its key-encryption bucket "
                   f"rotated ({keys.rewrapped} live key(s) re-wrapped), so old copies of it in WAL and "
                   f"backups cannot be opened", err=False)
        if purged:
            click.echo(f"removed {len(purged)} retraining file(s) that could hold the subject's inputs "
                       f"({', '.join(str(p) for p in purged)}); models already trained on them remain", err=True)
    if not keys.wal_cleared:
        click.echo("note: another process holds the database open, so SQLite's write-ahead log could not be "
                   "truncated yet; the erased key's old row stays in it, wrapped under a key-encryption key "
                   "that no longer exists, until that process ends or the next erasure", err=True)
    sys.stdout.flush()


def _purge_loop_data(home: Path) -> list[Path]:
    """Delete the closed loop's training files (``<home>/loop/*/train.csv``): they are derived from
    stored inputs, so they may hold an erased subject's. Later loops rebuild theirs from the root
    reference and the live (erasable) stored inputs; the ledger keeps each file's hash."""
    removed = []
    for path in sorted((home / "loop").glob("*/train.csv")):
        path.unlink()
        removed.append(path)
    return removed


@click.command()
@click.option("--dir", "directory", default="mlledger-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where to run the story (new or empty).")
@click.option("--rows", default=20_000, show_default=True, type=click.IntRange(1000),
              help="Training applicants to generate.")
@click.option("--port", type=click.IntRange(1, 65535), help="The HTTP port to serve on [default: a free one].")
def demo(directory: Path, rows: int, port: int | None) -> None:
    """Run the whole product on a synthetic credit-scoring story, narrated, in DIR.

    \b
    init -> data -> policy -> train -> evidence -> gate DENIES (four-fifths) -> retrain with a
    fairlearn mitigation -> gate NEEDS APPROVAL -> signed approval -> promote and deploy ->
    serve over HTTP and in a batch, with receipts -> drift, monitor, retrain, promote ->
    erase a data subject -> audit dossier and bias-audit PDFs -> bundle verified offline -> audit.

    The data has a documented bias (see backends/_demo.py); everything is left in DIR.
    """
    _need_serve_extra()
    from backends._demo import run_demo, summary

    home = Path.cwd()
    target = directory if directory.is_absolute() else home / directory
    try:
        story = run_demo(target, rows, port=port)
    finally:
        os.chdir(home)
    summary(story)
