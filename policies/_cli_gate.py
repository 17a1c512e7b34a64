"""CLI: ``mlledger policy``, ``mlledger gate``, ``mlledger promote`` and ``mlledger waiver``.

The gate exits 0 allow, 1 deny, 2 usage or input error, 3 needs approval, so a CI
step can block on it. Promotion is only ever an append of ``model.promoted``, whose
check (``policies._gate``) re-evaluates the published policy inside the sequencing
transaction: there is no path around it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click
import yaml  # type: ignore[import-untyped]

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError
from ledger.events import Event
from policies._formats import FORMATS, render
from policies._policy import LoadedPolicy, load_policy, parse_policy, policy_lint

__all__ = ["gate", "policy", "promote", "waiver"]


def _actor(actor: str | None) -> str:
    from ledger.cli import _default_actor

    return actor or _default_actor()


def _load(spec: str, stage: str | None = None) -> LoadedPolicy:
    """A policy file, or a built-in pack by name (wrapped as a policy for ``stage``)."""
    from policies.packs import PACKS

    if spec in PACKS and not Path(spec).exists():
        if stage is None:
            raise InputError(f"{spec} is a pack: it binds no stage; give --stage")
        text = f"name: {spec}\nstage: {stage}\ndescription: the built-in {spec} pack\nextends: [{spec}]\n"
        return parse_policy(text.encode(), f"pack {spec}")
    return load_policy(spec)


def resolved_body(loaded: LoadedPolicy) -> bytes:
    """The policy with every extended pack inlined, so its hash pins every rule it applies."""
    if not loaded.policy.extends:
        return loaded.raw_bytes
    doc: dict[str, Any] = loaded.policy.model_dump(mode="json", exclude_none=True, by_alias=True)
    doc.pop("extends", None)
    doc["rules"] = [r.model_dump(mode="json", exclude_none=True, by_alias=True) for r in loaded.rules]
    header = (f"# {loaded.name}: resolved from {', '.join(loaded.policy.extends)} "
              f"(packs inlined at publication)\n")
    dumped: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return (header + dumped).encode()


# -- policy --------------------------------------------------------------------------------


@click.group()
def policy() -> None:
    """Lint and publish policy files (YAML), bound to a stage."""


@policy.command(name="lint")
@click.argument("file")
@handle_errors
def policy_lint_cmd(file: str) -> None:
    """Validate a policy file or pack: exit 0 when valid (warnings printed), 2 with file:line:key."""
    loaded = _load(file, "lint")
    for warning in policy_lint(file) if Path(file).exists() else []:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"ok: {loaded.name} binds stage {loaded.stage}; {len(loaded.rules)} rules; "
               f"sha256 {loaded.sha256}")


@policy.command(name="publish")
@click.argument("file")
@click.option("--stage", required=True, help="Must equal the policy's own 'stage'.")
@click.option("--actor")
@click.pass_obj
@handle_errors
def policy_publish(obj: Context, file: str, stage: str, actor: str | None) -> None:
    """Record policy.published: the policy body and its content hash, bound to --stage."""
    from ledger.kinds import PolicyPublished

    loaded = _load(file, stage)
    if loaded.stage != stage:
        raise InputError(f"{file}: the policy binds stage {loaded.stage!r}, not {stage!r}")
    body = resolved_body(loaded)
    check = parse_policy(body, f"{file} (resolved)")
    if [r.id for r in check.rules] != [r.id for r in loaded.rules]:
        raise InputError(f"{file}: the resolved policy does not reproduce the same rules")
    payload = PolicyPublished(policy_hash=hashlib.sha256(body).hexdigest(), stage=stage, name=loaded.name,
                              body=body.decode())
    with obj.open() as ledger:
        r = ledger.append(Event(payload, actor=_actor(actor), subject=f"policy:{loaded.name}"))
    click.echo(f"published {loaded.name} for {stage} at seq {r.seq} (sha256 {payload.policy_hash})")


@policy.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def policy_list(obj: Context, fmt: str) -> None:
    """Published policies; the latest per stage is the one in force."""
    with obj.open() as ledger:
        pubs = list(ledger.iter(kind="policy.published"))
    for e in pubs:
        p = e.payload
        if fmt == "json":
            echo_json({"seq": e.seq, "ts": e.ts, "name": p["name"], "stage": p["stage"], "sha256": p["policy_hash"]})
        else:
            click.echo(f"{e.seq:>6}  {e.ts}  {p['stage']:<12} {p['name']:<28} {p['policy_hash'][:16]}")


# -- gate ----------------------------------------------------------------------------------


@click.command()
@click.option("--model", "model_ref", required=True, help="NAME@VERSION (or NAME for the latest).")
@click.option("--stage", required=True)
@click.option("--policy", "policy_spec", help="Evaluate this file or pack instead of the published policy "
              "(the decision is recorded, but only one under the published policy can promote).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--actor")
@click.pass_obj
@handle_errors
def gate(obj: Context, model_ref: str, stage: str, policy_spec: str | None, fmt: str, actor: str | None) -> None:
    """Evaluate the stage's policy for a model version and record gate.evaluated.

    Every rule is printed with its measured value, threshold and source.
    Exit 0 allow, 1 deny, 2 usage or input error, 3 needs approval.
    """
    from policies._gate import run_gate
    from policies._governance import model_versions
    from policies.kinds import GateEvaluated, RuleRecord

    with obj.open() as ledger:
        with ledger.view() as view:
            if "@" not in model_ref:
                refs = [v.ref for v in model_versions(view).values() if v.name == model_ref]
                if not refs:
                    raise InputError(f"model {model_ref!r} is not on the ledger")
                model_ref = refs[-1]
            loaded = _load(policy_spec, stage) if policy_spec else None
            result = run_gate(view, model_ref, stage, policy=loaded)
        rules = [RuleRecord(**r.model_dump(mode="json")) for r in result.rules]
        payload = GateEvaluated(model=result.model, artifact_sha256=result.artifact_sha256, stage=stage,
                                policy_name=result.policy_name, policy_sha256=result.policy_sha256,
                                policy_seq=result.policy_seq, decision=result.decision, rules=rules,
                                evidence=sorted({s for r in result.rules for s in r.evidence}))
        receipt = ledger.append(Event(payload, actor=_actor(actor), subject=f"model:{result.model}"))
    click.echo(render(result, fmt, policy_path=policy_spec, decision_seq=receipt.seq))  # type: ignore[arg-type]
    if fmt == "text":
        click.echo(f"recorded gate.evaluated at seq {receipt.seq}")
    sys.exit(result.exit_code)


# -- promote ---------------------------------------------------------------------------------


@click.command()
@click.argument("model_ref")
@click.option("--to", "stage", required=True, help="The stage, e.g. production.")
@click.option("--decision", "decision_seq", type=click.IntRange(min=0),
              help="The gate decision to promote on [default: the latest for this model and stage].")
@click.option("--waiver", "waiver_seq", type=click.IntRange(min=0), help="A waiver.granted over that decision.")
@click.option("--deploy/--no-deploy", "then_deploy", default=None,
              help="Then run the backend's deploy step (records model.deployed) [default: yes when the "
              "version was trained by a backend].")
@click.option("--actor")
@click.pass_context
@handle_errors
def promote(ctx: click.Context, model_ref: str, stage: str, decision_seq: int | None, waiver_seq: int | None,
            then_deploy: bool | None, actor: str | None) -> None:
    """Promote NAME@VERSION to a stage: only if the stage's policy allows it now.

    The published policy is re-evaluated over the ledger when model.promoted is
    written (fresh evidence, counted approvals); a refusal writes nothing.
    """
    from policies._governance import approvals_for, model_versions
    from policies.kinds import ModelPromoted

    obj = ctx.find_object(Context)
    assert obj is not None
    trained_by: str | None = None
    with obj.open() as ledger:
        with ledger.view() as view:
            mv = model_versions(view).get(model_ref)
            if mv is None:
                raise InputError(f"model {model_ref!r} is not on the ledger (give NAME@VERSION)")
            if mv.external and then_deploy:
                raise InputError(f"{model_ref} is an external model: mlledger does not run it, so it cannot "
                                 "deploy it; promote it with --no-deploy")
            gates = [e for e in view.of_kind("gate.evaluated")
                     if e.payload["model"] == model_ref and e.payload["stage"] == stage]
            if decision_seq is None:
                if not gates:
                    raise InputError(f"no gate decision for {model_ref} in {stage}; run "
                                     f"'mlledger gate --model {model_ref} --stage {stage}' first")
                decision_seq = gates[-1].seq
            approvals = [e.seq for e in approvals_for(view, decision_seq)]
            trained = [e for e in view.of_kind("model.trained")
                       if mv.artifact_sha256 is not None and e.payload["artifact_sha256"] == mv.artifact_sha256]
            trained_by = str(trained[-1].payload.get("backend", "local")) if trained else None
        payload = ModelPromoted(model=model_ref, artifact_sha256=mv.artifact_sha256, stage=stage,
                                gate_seq=decision_seq, approvals=approvals, waiver_seq=waiver_seq)
        r = ledger.append(Event(payload, actor=_actor(actor), subject=f"model:{model_ref}"))
    click.echo(f"promoted {model_ref} to {stage} at seq {r.seq} (decision {decision_seq}"
               + (f", waiver {waiver_seq}" if waiver_seq is not None else "") + ")")
    if then_deploy is None:
        then_deploy = trained_by is not None
    if then_deploy:
        # The promotion hook: the backend that trained the version deploys it. Resolved through
        # the command registry (entry points), so policies/ never imports backends/.
        root = ctx.find_root().command
        deploy_cmd = root.get_command(ctx.find_root(), "deploy") if isinstance(root, click.Group) else None
        if deploy_cmd is None:
            raise InputError("promoted, but no deploy step is installed (the backends package is missing)")
        ctx.invoke(deploy_cmd, ref=model_ref, stage=stage, backend=trained_by or "local")


# -- waiver -----------------------------------------------------------------------------------


@click.command()
@click.option("--decision", "decision_seq", type=click.IntRange(min=0), required=True)
@click.option("--justification", required=True, help="Why, in at least 20 characters; shown in every report.")
@click.option("--approver", "approvers", nargs=2, multiple=True, metavar="NAME KEYFILE", required=True,
              help="An approver and their private key; give two (break-glass needs two people).")
@click.option("--actor")
@click.pass_obj
@handle_errors
def waiver(obj: Context, decision_seq: int, justification: str, approvers: tuple[tuple[str, str], ...],
           actor: str | None) -> None:
    """Break-glass override of a denying gate decision, signed by two approvers (waiver.granted).

    Recorded loudly: 'mlledger audit' and every report show it.
    """
    from policies._approvals import approval_message, sign_approval
    from policies._cli_gov import _load_private
    from policies._governance import now_ts
    from policies.kinds import ApprovalSignature, WaiverGranted

    if len({a[0] for a in approvers}) < 2:
        raise InputError("a waiver needs two different approvers (--approver NAME KEYFILE twice)")
    with obj.open() as ledger:
        decision = ledger.get(decision_seq)
        if decision.kind != "gate.evaluated":
            raise InputError(f"seq {decision_seq} is not a gate decision")
        origin, leaf = ledger.origin(), decision.leaf_hash.hex()
        sigs = []
        for name, key_file in approvers:
            at = now_ts()
            msg = approval_message(origin, decision_seq, leaf, name, "approval", at)
            sigs.append(ApprovalSignature(signer=name, meaning="approval", signed_at=at,
                                          signature=sign_approval(_load_private(Path(key_file)), msg)))
        payload = WaiverGranted(decision_seq=decision_seq, decision_leaf_hash=leaf, justification=justification,
                                approvals=sigs)
        r = ledger.append(Event(payload, actor=_actor(actor), subject=decision.subject))
    click.echo(f"WAIVER recorded at seq {r.seq} over decision {decision_seq}; promote with --waiver {r.seq}",
               err=True)
