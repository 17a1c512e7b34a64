"""CLI: ``mlledger train``, ``mlledger backends`` and ``mlledger deploy``.

Loaded through the ``mlledger.commands`` entry points. ``--backend mlflow`` goes through
``backends.mlflow`` (the ledger first, then the MLflow registry; see its invariants).
"""

from __future__ import annotations

from pathlib import Path

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError

__all__ = ["backends", "deploy", "train"]

TRACKING_URI = click.option("--tracking-uri", metavar="URL",
                            help="The MLflow tracking server for --backend mlflow [default: $MLFLOW_TRACKING_URI].")


def _actor(actor: str | None) -> str:
    from ledger.cli import _default_actor

    return actor or _default_actor()


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backend", default="local", show_default=True, help="A backend from 'mlledger backends list'.")
@click.option("--actor", help="Who trains [default: $MLLEDGER_ACTOR or user:<login>].")
@TRACKING_URI
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def train(obj: Context, spec_path: Path, backend: str, actor: str | None, tracking_uri: str | None,
          fmt: str) -> None:
    """Train the model SPEC.yaml describes on registered datasets; record model.trained.

    The artifact is stored by SHA-256 in skops format; the entry holds the spec, the
    dataset hashes, the code version, the environment and the metrics. With --backend mlflow
    the run and a registered model version follow in MLflow, after the ledger entry.
    """
    from backends._workflow import train as run_train
    from backends.spec import load_spec
    from policies._cli import workspace

    loaded = load_spec(spec_path)
    extra: dict[str, object] = {}
    with workspace(obj) as ws:
        if backend == "mlflow":
            from backends import mlflow as mlflow_backend

            logged = mlflow_backend.train(ws, loaded, actor=_actor(actor), tracking_uri=tracking_uri)
            done = logged.training
            extra = {"mlflow_run_id": logged.run_id, "mlflow_version": logged.mlflow_version}
        else:
            done = run_train(ws, loaded, backend=backend, actor=_actor(actor))
    p = done.payload
    if fmt == "json":
        echo_json({"seq": done.receipt.seq, "model": done.ref, "artifact_sha256": p.artifact_sha256,
                   "metrics": p.metrics, "wall_time_s": p.wall_time_s, "backend": p.backend, **extra})
        return
    click.echo(f"trained {done.ref} ({p.backend}, {p.wall_time_s:.2f}s) artifact sha256 {p.artifact_sha256} "
               f"at seq {done.receipt.seq}")
    if extra:
        click.echo(f"  MLflow run {extra['mlflow_run_id']}, registered version {extra['mlflow_version']}")
    for key, value in p.metrics.items():
        click.echo(f"  {key}: {value:.4g}")


@click.group()
def backends() -> None:
    """Training and serving backends."""


@backends.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def backends_list(fmt: str) -> None:
    """List backends and whether each loads (exit 2 if one is broken; a missing extra is not)."""
    from backends._registry import available

    rows = available()
    for name, status in rows:
        if fmt == "json":
            echo_json({"name": name, "status": status})
        else:
            click.echo(f"{name:<16} {status}")
    broken = [name for name, status in rows if status.startswith("error")]
    if broken:
        raise InputError(f"backend(s) {', '.join(broken)} failed to load")


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--stage", required=True, help="The stage the version holds, e.g. staging.")
@click.option("--backend", default="local", show_default=True)
@click.option("--actor")
@TRACKING_URI
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def deploy(obj: Context, ref: str, stage: str, backend: str, actor: str | None, tracking_uri: str | None,
           fmt: str) -> None:
    """Make a promoted version servable at its stage; record model.deployed.

    With --backend mlflow the registry alias named after the stage is moved to the registered
    version carrying the promoted artifact (re-hashed first), then model.deployed is recorded.
    """
    from backends._workflow import deploy as run_deploy
    from policies._cli import workspace

    extra: dict[str, object] = {}
    with workspace(obj) as ws:
        if backend == "mlflow":
            from backends import mlflow as mlflow_backend

            moved = mlflow_backend.deploy(ws, obj.home, ref, stage=stage, actor=_actor(actor),
                                          tracking_uri=tracking_uri)
            done = moved.deployment
            extra = {"mlflow_version": moved.mlflow_version, "alias": moved.alias,
                     "alias_moved_s": round(moved.alias_moved_s, 3)}
        else:
            done = run_deploy(ws, obj.home, ref, stage=stage, backend=backend, actor=_actor(actor))
    if fmt == "json":
        echo_json({"seq": done.receipt.seq, "model": ref, "stage": stage,
                   "artifact_sha256": done.payload.artifact_sha256, "pointer": str(done.pointer), **extra})
    else:
        click.echo(f"deployed {ref} to {stage} ({done.payload.backend}) at seq {done.receipt.seq}; "
                   f"serving pointer {done.pointer}")
        if extra:
            click.echo(f"  MLflow alias {extra['alias']!r} -> version {extra['mlflow_version']}")


@backends.command(name="reconcile")
@click.argument("backend", metavar="BACKEND", type=click.Choice(["mlflow"]))
@click.option("--actor", help="Who records the alerts [default: $MLLEDGER_ACTOR or user:<login>].")
@TRACKING_URI
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def backends_reconcile(obj: Context, backend: str, actor: str | None, tracking_uri: str | None, fmt: str) -> None:
    """Compare a backend's registry with the ledger; record monitor.alert per finding (exit 1 if any).

    A finding is an alias on a version the ledger did not deploy to that stage, or a registered
    version without an mlledger.seq tag or with an artifact hash the ledger does not know.
    """
    from backends import mlflow as mlflow_backend
    from policies._cli import workspace

    with workspace(obj) as ws:
        found = mlflow_backend.reconcile(ws, actor=_actor(actor), tracking_uri=tracking_uri)
    for finding, receipt in found:
        if fmt == "json":
            echo_json({"seq": receipt.seq, "kind": finding.kind, "model": finding.model, "stage": finding.stage,
                       "detail": finding.detail})
        else:
            click.echo(f"monitor.alert at seq {receipt.seq}: {finding.kind}: {finding.detail}")
    if fmt == "text":
        click.echo(f"{len(found)} finding(s)")
    if found:
        click.get_current_context().exit(1)
