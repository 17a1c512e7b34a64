"""CLI: identities, approvals, registry views and the governance audit.

``mlledger identity``, ``mlledger approve``, ``mlledger models`` and ``mlledger audit``.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.canonical import parse_ts
from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError
from ledger.events import Event
from policies._approvals import approval_message, sign_approval
from policies._governance import audit as run_audit
from policies._governance import model_versions, now_ts

__all__ = ["approve", "audit", "identity", "models"]

ROLE = click.Choice(["admin", "data-steward", "model-developer", "validator", "model-risk", "deployer",
                     "dpo", "auditor", "service"])


def _load_private(path: Path) -> Ed25519PrivateKey:
    from ledger.keys import load_private_key

    return load_private_key(path)


def _public_b64(path: Path) -> str:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise InputError(f"{path} is a private key; give the public key (identity keygen writes NAME.pub)")
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            raw = base64.b64decode(data.strip(), validate=True)
            pub = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise InputError(f"{path}: not a PEM public key or base64 of 32 raw bytes") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return base64.b64encode(pub.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)).decode()


# -- identities ------------------------------------------------------------------------


@click.group()
def identity() -> None:
    """Register people and services with their roles and Ed25519 public keys."""


@identity.command(name="keygen")
@click.argument("name")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@handle_errors
def identity_keygen(name: str, out_dir: Path) -> None:
    """Create NAME.pem (private, 0600, encrypted with MLLEDGER_KEY_PASSPHRASE if set) and NAME.pub."""
    from ledger.keys import unencrypted_warning, write_private_pem

    key = Ed25519PrivateKey.generate()
    out_dir.mkdir(parents=True, exist_ok=True)
    pem_path, pub_path = out_dir / f"{name}.pem", out_dir / f"{name}.pub"
    encrypted = write_private_pem(key, pem_path)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    if not encrypted:
        click.echo(unencrypted_warning(pem_path), err=True)
    click.echo(f"wrote {pem_path} (private) and {pub_path} (public)")


@identity.command(name="register")
@click.argument("name")
@click.option("--role", "roles", type=ROLE, multiple=True, required=True, help="Repeatable.")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--display-name")
@click.option("--as", "admin", help="The registering admin's identity [default: the genesis admin, i.e. "
              "the owner of the ledger key <home>/keys/log.pem].")
@click.option("--key", "admin_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The admin's private key (with --as).")
@click.pass_obj
@handle_errors
def identity_register(obj: Context, name: str, roles: tuple[str, ...], public_key: Path,
                      display_name: str | None, admin: str | None, admin_key: Path | None) -> None:
    """Record identity.registered (NAME, roles, public key), signed by an admin.

    The genesis admin is the ledger key's owner; after that, any registered admin
    (--as NAME --key FILE). Governance trusts only admin-signed identities.
    """
    from ledger.kinds import IdentityRegistered
    from policies._approvals import GENESIS_ADMIN, identity_message

    if (admin is None) != (admin_key is None):
        raise InputError("give both --as ADMIN and --key FILE, or neither (to sign with the ledger key)")
    pub = _public_b64(public_key)
    with obj.open() as ledger:
        if admin is None and ledger.acting_as is not None:  # mlledger --as ADMIN.pem identity register
            assert obj.identity_path is not None
            admin_key = obj.identity_path
            admin = None if ledger.acting_as == GENESIS_ADMIN else ledger.acting_as
        signed_by = admin or GENESIS_ADMIN
        msg = identity_message(ledger.origin(), name, list(roles), pub, signed_by, display_name=display_name)
        if admin_key is not None:
            signature = sign_approval(_load_private(admin_key), msg)
        else:
            log_key = obj.signer(required=True)
            assert log_key is not None
            signature = base64.b64encode(log_key.sign(msg)).decode()
        payload = IdentityRegistered(name=name, roles=list(roles), public_key=pub,  # type: ignore[arg-type]
                                     display_name=display_name, signed_by=signed_by, signature=signature,
                                     signature_version=2)
        r = ledger.append(Event(payload, actor=admin or "admin:ledger-key", subject=f"identity:{name}"))
    click.echo(f"registered {name} ({', '.join(roles)}) at seq {r.seq}, signed by {signed_by}")


@identity.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def identity_list(obj: Context, fmt: str) -> None:
    """List registered identities and their roles."""
    from policies._governance import identities

    with obj.open() as ledger, ledger.view() as view:
        found = identities(view)
    for ident in found.values():
        if fmt == "json":
            echo_json({"name": ident.name, "roles": sorted(ident.roles), "seq": ident.seq})
        else:
            click.echo(f"{ident.seq:>6}  {ident.name:<32} {', '.join(sorted(ident.roles))}")


# -- approvals -------------------------------------------------------------------------


@click.command()
@click.option("--decision", "decision_seq", type=click.IntRange(min=0), required=True,
              help="The gate.evaluated entry to sign.")
@click.option("--meaning", type=click.Choice(["approval", "review"]), default="approval", show_default=True)
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The signer's Ed25519 private key (PEM).")
@click.option("--as", "signer", required=True, help="The signer's registered identity name.")
@click.pass_obj
@handle_errors
def approve(obj: Context, decision_seq: int, meaning: str, key_path: Path, signer: str) -> None:
    """Sign a gate decision: name, time and meaning bound to that record (approval.signed).

    Refused when the signer is not registered, lacks an approving role, trained the
    model, already signed it, or the signature does not verify.
    """
    from policies.kinds import ApprovalSigned

    key = _load_private(key_path)
    with obj.open() as ledger:
        decision = ledger.get(decision_seq)
        if decision.kind != "gate.evaluated":
            raise InputError(f"seq {decision_seq} is a {decision.kind} entry, not a gate decision")
        signed_at = now_ts()
        msg = approval_message(ledger.origin(), decision_seq, decision.leaf_hash.hex(), signer, meaning,
                               signed_at)
        payload = ApprovalSigned(decision_seq=decision_seq, decision_leaf_hash=decision.leaf_hash.hex(),
                                 signer=signer, meaning=meaning, signed_at=signed_at,  # type: ignore[arg-type]
                                 signature=sign_approval(key, msg))
        r = ledger.append(Event(payload, actor=signer, subject=decision.subject))
    click.echo(f"{signer} signed decision {decision_seq} ({meaning}) at {signed_at}: seq {r.seq}")


# -- registry views ----------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_context
@handle_errors
def models(ctx: click.Context, fmt: str) -> None:
    """List models, versions and the stages they hold (a projection of the ledger)."""
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.find_object(Context)
    assert obj is not None
    with obj.open() as ledger, ledger.view() as view:
        found = model_versions(view)
    for mv in found.values():
        if fmt == "json":
            echo_json({"model": mv.ref, "artifact_sha256": mv.artifact_sha256, "stages": sorted(mv.stages),
                       "registered_seq": mv.registered_seq, "registered_by": mv.registered_by})
        else:
            stages = ", ".join(sorted(mv.stages)) or "-"
            art = "external, no artifact" if mv.artifact_sha256 is None else mv.artifact_sha256[:16]
            click.echo(f"{mv.ref:<28} {art}  stages: {stages}  (by {mv.registered_by})")


@models.command(name="history")
@click.argument("name")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def models_history(obj: Context, name: str, fmt: str) -> None:
    """Who registered, evaluated, approved and promoted NAME's versions, when and why."""
    kinds = ("model.registered", "model.trained", "gate.evaluated", "approval.signed", "waiver.granted",
             "model.promoted")
    with obj.open() as ledger, ledger.view() as view:
        rows = [e for e in view.of_kind(*kinds)
                if (e.subject or "").startswith(f"model:{name}@") or e.payload.get("name") == name]
    for e in rows:
        what = _describe(e.kind, e.payload)
        if fmt == "json":
            echo_json({"seq": e.seq, "ts": e.ts, "actor": e.actor, "kind": e.kind, "what": what})
        else:
            click.echo(f"{e.seq:>6}  {e.ts}  {e.actor:<24} {what}")


def _describe(kind: str, p: dict[str, Any]) -> str:
    if kind in ("model.registered", "model.trained"):
        art = "no artifact" if p["artifact_sha256"] is None else p["artifact_sha256"][:12]
        vendor = f", external: {p['vendor']}" if p.get("external") else ""
        return f"{kind.split('.')[1]} {p['name']}@{p['version']} ({art}{vendor})"
    if kind == "gate.evaluated":
        return f"gate {p['decision'].upper()} for {p['model']} in {p['stage']} under {p['policy_name']}"
    if kind == "approval.signed":
        return f"{p['signer']} signed decision {p['decision_seq']} ({p['meaning']})"
    if kind == "waiver.granted":
        return f"WAIVER over decision {p['decision_seq']}: {p['justification']}"
    return f"promoted {p['model']} to {p['stage']} (gate {p['gate_seq']})"


@models.command(name="at")
@click.option("--time", "when", required=True, help="RFC 3339 time, e.g. 2026-11-01T00:00:00Z.")
@click.option("--stage", default="production", show_default=True)
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def models_at(obj: Context, when: str, stage: str, fmt: str) -> None:
    """What was in STAGE at a time, and which decision and evidence justified it."""
    from datetime import datetime

    try:
        t_us = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1_000_000)
    except ValueError:
        raise InputError(f"--time {when!r} is not an RFC 3339 time") from None
    with obj.open() as ledger, ledger.view() as view:
        last = [e for e in view.of_kind("model.promoted")
                if parse_ts(e.ts) <= t_us and e.payload["stage"] == stage]
        if not last:
            raise InputError(f"nothing was in {stage} at {when}")
        promo = last[-1]
        gate = view.get(promo.payload["gate_seq"])
    out = {"stage": stage, "time": when, "model": promo.payload["model"],
           "artifact_sha256": promo.payload["artifact_sha256"], "promoted_seq": promo.seq,
           "promoted_at": promo.ts, "promoted_by": promo.actor, "gate_seq": promo.payload["gate_seq"],
           "decision": gate.payload["decision"] if gate else None,
           "policy_sha256": gate.payload["policy_sha256"] if gate else None,
           "evidence": gate.payload["evidence"] if gate else [], "approvals": promo.payload["approvals"],
           "waiver_seq": promo.payload.get("waiver_seq")}
    if fmt == "json":
        echo_json(out)
        return
    for key, value in out.items():
        click.echo(f"{key:<16}{value}")


# -- audit -----------------------------------------------------------------------------------


def _bundle_view(bundle: Path, trust: tuple[Path, ...]) -> tuple[Any, Any]:
    """Verify a bundle offline, then load its entries into an in-memory view for the audit."""
    import sqlite3

    from ledger._bundle_io import _lines, _open
    from ledger._store import Tx, _Cursor
    from ledger.bundle import verify_bundle
    from ledger.canonical import parse_ts
    from ledger.keys import load_verifier
    from ledger.merkle import leaf_hash
    from ledger.verify import VerifyResult
    from ledger.view import LedgerView

    if not trust:
        raise InputError("--bundle needs --trust VKEY: the audit only reads a bundle that verifies")
    result = verify_bundle(bundle, trusted=[load_verifier(p) for p in trust])
    if not result.ok:
        return VerifyResult(False, result.seq or 0, None, result.seq, f"{result.kind}: {result.message}"), None
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, leaf_hash BLOB, ts_us INTEGER, kind TEXT, "
               "subject TEXT, entry BLOB)")
    members = _open(bundle)
    try:
        import orjson

        rows = []
        for seq, line in enumerate(_lines(members)):
            d = orjson.loads(line)
            rows.append((seq, leaf_hash(line), parse_ts(d["ts"]), d["kind"], d["subject"], line))
    finally:
        members.close()
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
    view = LedgerView(None, Tx(_Cursor(db.cursor()), "sqlite"), len(rows))  # type: ignore[arg-type]
    return VerifyResult(True, len(rows), result.root), view


@click.command()
@click.option("--bundle", type=click.Path(exists=True, path_type=Path),
              help="Audit an exported bundle (directory or .zip) instead of the ledger; needs --trust.")
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="The log's .vkey (with --bundle).")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def audit(obj: Context, bundle: Path | None, trust: tuple[Path, ...], fmt: str) -> None:
    """Check the governance invariants over the whole ledger (DESIGN.md section 3).

    Every promotion has an allowing decision for that artifact under the policy bound
    to its stage then; every approval is by a registered, entitled, independent signer
    with a valid signature; every recorded decision matches a re-evaluation of its
    policy; every waiver is reported. With --bundle, the same checks run offline over
    an exported bundle once it verifies. Exit 0 clean, 1 on violations.
    """
    from policies._gate import reevaluate

    if bundle is not None:
        verified, view = _bundle_view(bundle, trust)
        findings = [] if view is None else sorted(run_audit(view) + reevaluate(view), key=lambda f: f.seq)
    else:
        with obj.open() as ledger:
            verified = ledger.verify()
            with ledger.view() as view:
                findings = run_audit(view) + reevaluate(view)
                findings.sort(key=lambda f: f.seq)
    if fmt == "json":
        echo_json({"chain_ok": verified.ok, "chain_failure": verified.reason, "findings":
                   [f.to_json() for f in findings]})
    else:
        if not verified.ok:
            click.echo(f"CHAIN FAILS at seq {verified.bad_seq}: {verified.reason}")
        for f in findings:
            click.echo(f"{f.severity.upper():<9} seq {f.seq}: {f.message}")
        n = len([f for f in findings if f.severity == "violation"])
        click.echo(f"audit: {n} violation(s), {len(findings) - n} notice(s) over {verified.size} entries")
    if not verified.ok or any(f.severity == "violation" for f in findings):
        sys.exit(1)
