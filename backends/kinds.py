"""Payload models of ``model.trained``, ``model.deployed`` and ``monitor.alert`` (DESIGN.md section 3).

Registered through the ``mlledger.kinds`` entry point. ``model.trained`` carries
``name``, ``version``, ``artifact_sha256`` and ``training_data`` under the same names as
``model.registered``: the registry views (``policies._governance.model_versions``) and the
gate read them from either kind.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, StringConstraints

from ledger.events import Payload, Sha256Hex, register, register_check
from ledger.view import LedgerView
from policies.kinds import Column, Identifier, Short, Stage

__all__ = ["ModelDeployed", "ModelTrained", "MonitorAlert"]

BackendName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Detail = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
CodeVersion = Annotated[str, StringConstraints(pattern=r"^(git:[0-9a-f]{40}([0-9a-f]{24})?|spec:[0-9a-f]{64})$")]


@register("model.trained")
class ModelTrained(Payload):
    """A model version trained by a backend from a spec, with everything needed to retrain it."""

    name: Identifier
    version: Annotated[int, Field(ge=1)]
    artifact_sha256: Sha256Hex
    format: Literal["skops"]
    spec_sha256: Sha256Hex
    spec: dict[str, JsonValue]
    params: dict[str, JsonValue]
    training_data: Annotated[list[Sha256Hex], Field(min_length=1)]
    code_version: CodeVersion
    environment: dict[str, Short]
    metrics: dict[str, float]
    wall_time_s: Annotated[float, Field(ge=0)]
    features: Annotated[list[Column], Field(min_length=1)]
    target: Column
    backend: BackendName


@register("model.deployed")
class ModelDeployed(Payload):
    """A promoted model version made servable at a stage."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex
    stage: Stage
    backend: BackendName
    promotion_seq: Annotated[int, Field(ge=0)]


@register("monitor.alert")
class MonitorAlert(Payload):
    """A finding of a monitor, e.g. registry state that the ledger did not record.

    ``kind`` is what was found: ``alias-drift`` (a serving alias on a version the ledger did
    not deploy to that stage), ``unrecorded-version`` (a registered version with no
    ``mlledger.seq`` tag), ``unknown-artifact`` (a version whose seq or artifact hash is not
    on the ledger).
    """

    kind: Literal["alias-drift", "unrecorded-version", "unknown-artifact"]
    model: Identifier
    stage: Stage | None = None
    detail: Detail
    source: Literal["mlflow-reconcile"]


@register_check("model.deployed")
def _check_deployment(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """Only the version that holds a stage, by its promotion, may be deployed to it."""
    from ledger.errors import InputError
    from policies._governance import model_versions

    promo = view.get(payload["promotion_seq"])
    p = promo.payload if promo is not None else {}
    if promo is None or promo.kind != "model.promoted" or (p["model"], p["artifact_sha256"], p["stage"]) != (
            payload["model"], payload["artifact_sha256"], payload["stage"]):
        raise InputError(f"deployment refused: seq {payload['promotion_seq']} is not the promotion of "
                         f"{payload['model']} ({payload['artifact_sha256'][:12]}) to {payload['stage']}")
    holder = model_versions(view).get(payload["model"])
    if holder is None or holder.stages.get(payload["stage"]) != promo.seq:
        raise InputError(f"deployment refused: {payload['model']} no longer holds {payload['stage']} by the "
                         f"promotion at seq {promo.seq}")
