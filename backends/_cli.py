"""CLI: ``mlledger train``, ``mlledger backends`` and ``mlledger deploy``.

Loaded through the ``mlledger.commands`` entry points.
"""

from __future__ import annotations

from pathlib import Path

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError

__all__ = ["backends", "deploy", "train"]


def _actor(actor: str | None) -> str:
    from ledger.cli import _default_actor

    return actor or _default_actor()


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backend", default="local", show_default=True, help="A backend from 'mlledger backends list'.")
@click.option("--actor", help="Who trains [default: $MLLEDGER_ACTOR or user:<login>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def train(obj: Context, spec_path: Path, backend: str, actor: str | None, fmt: str) -> None:
    """Train the model SPEC.yaml describes on registered datasets; record model.trained.

    The artifact is stored by SHA-256 in skops format; the entry holds the spec, the
    dataset hashes, the code version, the environment and the metrics.
    """
    from backends._workflow import train as run_train
    from backends.spec import load_spec
    from policies._cli import workspace

    loaded = load_spec(spec_path)
    with workspace(obj) as ws:
        done = run_train(ws, loaded, backend=backend, actor=_actor(actor))
    p = done.payload
    if fmt == "json":
        echo_json({"seq": done.receipt.seq, "model": done.ref, "artifact_sha256": p.artifact_sha256,
                   "metrics": p.metrics, "wall_time_s": p.wall_time_s, "backend": p.backend})
        return
    click.echo(f"trained {done.ref} ({p.backend}, {p.wall_time_s:.2f}s) artifact sha256 {p.artifact_sha256} "
               f"at seq {done.receipt.seq}")
    for key, value in p.metrics.items():
        click.echo(f"  {key}: {value:.4g}")


@click.group()
def backends() -> None:
    """Training and serving backends."""


@backends.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@handle_errors
def backends_list(fmt: str) -> None:
    """List backends and whether each loads (exit 2 if one does not)."""
    from backends._registry import available

    rows = available()
    for name, status in rows:
        if fmt == "json":
            echo_json({"name": name, "status": status})
        else:
            click.echo(f"{name:<16} {status}")
    broken = [name for name, status in rows if status != "ok"]
    if broken:
        raise InputError(f"backend(s) {', '.join(broken)} failed to load")


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--stage", required=True, help="The stage the version holds, e.g. staging.")
@click.option("--backend", default="local", show_default=True)
@click.option("--actor")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def deploy(obj: Context, ref: str, stage: str, backend: str, actor: str | None, fmt: str) -> None:
    """Make a promoted version servable at its stage; record model.deployed."""
    from backends._workflow import deploy as run_deploy
    from policies._cli import workspace

    with workspace(obj) as ws:
        done = run_deploy(ws, obj.home, ref, stage=stage, backend=backend, actor=_actor(actor))
    if fmt == "json":
        echo_json({"seq": done.receipt.seq, "model": ref, "stage": stage,
                   "artifact_sha256": done.payload.artifact_sha256, "pointer": str(done.pointer)})
    else:
        click.echo(f"deployed {ref} to {stage} ({done.payload.backend}) at seq {done.receipt.seq}; "
                   f"serving pointer {done.pointer}")
