"""Payload models of ``model.trained``, ``model.deployed``, ``model.undeployed``, ``monitor.alert`` and the
serving kinds ``prediction.made``, ``prediction.batch`` and ``human.reviewed`` (DESIGN.md section 3).

Registered through the ``mlledger.kinds`` entry point. ``model.trained`` carries
``name``, ``version``, ``artifact_sha256`` and ``training_data`` under the same names as
``model.registered``: the registry views (``policies._governance.model_versions``) and the
gate read them from either kind.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, JsonValue, StringConstraints

from ledger.actions import SignedAction
from ledger.errors import InputError
from ledger.events import Payload, Sha256Hex, register, register_check, register_many_check
from ledger.kinds import KeyId
from ledger.view import LedgerView
from policies.kinds import Column, Identifier, Short, Stage

__all__ = ["HumanReviewed", "ModelDeployed", "ModelTrained", "ModelUndeployed", "MonitorAlert", "PredictionBatch",
           "PredictionMade"]

BackendName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Detail = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
CodeVersion = Annotated[str, StringConstraints(pattern=r"^(git:[0-9a-f]{40}([0-9a-f]{24})?|spec:[0-9a-f]{64})$")]


@register("model.trained")
class ModelTrained(SignedAction):
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
class ModelDeployed(SignedAction):
    """A promoted model version made servable at a stage."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex
    stage: Stage
    backend: BackendName
    promotion_seq: Annotated[int, Field(ge=0)]


@register("model.undeployed")
class ModelUndeployed(SignedAction):
    """A deployment ended: replaced by a newer one, or taken down."""

    model: Identifier
    artifact_sha256: Sha256Hex
    stage: Stage
    deployed_seq: Annotated[int, Field(ge=0)]
    reason: Detail
    replaced_by: Identifier | None = None


Label = int | str | bool
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


@register("prediction.made")
class PredictionMade(Payload):
    """One decision by a deployed model version. The input is only a keyed commitment.

    ``input_commitment`` is HMAC-SHA256 under the key ``key_id`` (``ledger.privacy``) of the
    canonical input record; ``sealed`` says whether the input is also kept AES-GCM-encrypted.
    """

    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"request_ref"})  # older entries keep their bytes
    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex
    stage: Stage
    deployed_seq: Annotated[int, Field(ge=0)]
    input_commitment: Sha256Hex
    key_id: KeyId
    label: Label
    score: float | None = None  # rounded to SCORE_DECIMALS by the writers (privacy; FORMAT.md 3.14)
    latency_ms: Annotated[float, Field(ge=0)]
    automated_decision: bool
    #: The client's request id verbatim, as entries written before request_ref had it (FORMAT.md 3.14);
    #: writers now record ``request_ref`` instead, so no client-chosen string enters the chain.
    request_id: RequestId | None = None
    sealed: bool = False
    #: HMAC-SHA256 under the decision's ``K_commit`` of ``"mlledger/v1 request-id" 0x00 request id``.
    request_ref: Sha256Hex | None = None


@register("prediction.batch")
class PredictionBatch(Payload):
    """A batch scored offline: the RFC 6962 Merkle root over its per-row records, which are
    kept beside the output, so any one row can be proven against this entry."""

    model: Identifier
    artifact_sha256: Sha256Hex
    stage: Stage
    deployed_seq: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    root: Sha256Hex
    records_sha256: Sha256Hex
    automated_decision: bool


@register("human.reviewed")
class HumanReviewed(SignedAction):
    """A person confirmed or overrode a recorded decision (AI Act Art. 14, GDPR Art. 22(3)).

    Signed by the reviewer (``mlledger --as KEYFILE review``), or, when the serving API records it
    for the holder of a ``review`` token, by the server's identity named in ``vouched_by``.
    """

    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"vouched_by", "actor_signature"})
    prediction_seq: Annotated[int, Field(ge=0)]
    outcome: Literal["confirmed", "overridden"]
    label: Label | None = None
    reason: Detail
    vouched_by: Identifier | None = None


SCORE_DECIMALS = 2
"""Scores are recorded to 2 decimal places: an exact score is a near-unique function of the input,
so it would link an erased subject's decision back to them (FORMAT.md 3.14)."""


@register_check("prediction.made", reads=("key_id", "request_id"))
def _check_prediction(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """A decision is never recorded under an erased subject key (or one whose erasure is recorded),
    nor with a client's request id in the clear."""
    _check_predictions(view, seq, actor, [payload])


@register_many_check("prediction.made")
def _check_predictions(view: LedgerView, seq: int, actor: str | None, payloads: list[dict[str, Any]]) -> None:
    """``_check_prediction`` of each payload in turn, with the subject keys looked up together."""
    subject_keys = [p["key_id"] for p in payloads if p["key_id"].startswith("sk-")]
    usable = view.usable_keys(subject_keys) if len(subject_keys) > 1 else (
        set(subject_keys) if subject_keys and view.key_usable(subject_keys[0]) else set())
    for payload in payloads:
        if payload.get("request_id") is not None:
            raise InputError("prediction.made: request_id is no longer recorded verbatim (a client-chosen string "
                             "could be personal data); record request_ref, its keyed HMAC (FORMAT.md 3.14)")
        key_id = payload["key_id"]
        if key_id.startswith("sk-") and key_id not in usable:
            from ledger.privacy import KeyErased

            raise KeyErased(f"key {key_id} was erased; the decision must be recorded under the subject's new key")


@register_check("model.undeployed")
def _check_undeployment(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """Only the current deployment of that model, artifact and stage may be ended, once."""

    current = current_deployment(view, payload["model"].partition("@")[0], payload["stage"])
    if current is None or current.seq != payload["deployed_seq"] or (
            current.payload["model"], current.payload["artifact_sha256"]) != (payload["model"],
                                                                               payload["artifact_sha256"]):
        raise InputError(f"undeployment refused: seq {payload['deployed_seq']} is not the current deployment of "
                         f"{payload['model']} ({payload['artifact_sha256'][:12]}) at {payload['stage']}")


@register_check("human.reviewed")
def _check_review(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:

    target = view.get(payload["prediction_seq"])
    if target is None or target.kind != "prediction.made":
        raise InputError(f"review refused: seq {payload['prediction_seq']} is not a prediction.made entry")
    if payload["outcome"] == "overridden" and payload.get("label") is None:
        raise InputError("review refused: an override must give the new label")


@register("monitor.alert")
class MonitorAlert(SignedAction):
    """A finding of a monitor, e.g. registry state that the ledger did not record.

    ``kind`` is what was found: ``alias-drift`` (a serving alias on a version the ledger did
    not deploy to that stage), ``unrecorded-version`` (a registered version with no
    ``mlledger.seq`` tag), ``unknown-artifact`` (a version whose seq or artifact hash is not
    on the ledger). The monitor (``backends.monitor``, source ``monitor``) adds ``prediction-drift``,
    ``input-drift``, ``latency``, ``accuracy`` and ``fairness``: a statistic of the window of
    predictions ending at ``window_last_seq`` crossed its ``threshold``.
    """

    #: Entries written before the monitor fields keep their bytes: unset fields are left out.
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"statistic", "value", "threshold", "window_last_seq", "actor_signature"})

    kind: Literal["alias-drift", "unrecorded-version", "unknown-artifact", "prediction-drift", "input-drift",
                  "latency", "accuracy", "fairness", "monitor-blind"]
    model: Identifier
    stage: Stage | None = None
    detail: Detail
    source: Literal["mlflow-reconcile", "monitor"]
    statistic: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    value: float | None = None
    threshold: float | None = None
    window_last_seq: Annotated[int, Field(ge=0)] | None = None


@register_check("model.deployed")
def _check_deployment(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """Only the version that holds a stage, by its promotion, may be deployed to it."""
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
    current = current_deployment(view, payload["model"].partition("@")[0], payload["stage"])
    if current is not None and current.payload["promotion_seq"] == promo.seq \
            and current.payload["backend"] == payload["backend"]:
        raise InputError(f"deployment refused: {payload['model']} is already deployed to {payload['stage']} "
                         f"({payload['backend']}) by seq {current.seq}")


def current_deployment(view: LedgerView, name: str, stage: str) -> Any:
    """The latest ``model.deployed`` of model ``name`` at ``stage`` not ended by ``model.undeployed``."""
    ended = {e.payload["deployed_seq"] for e in view.of_kind("model.undeployed")
             if e.payload["stage"] == stage and e.payload["model"].partition("@")[0] == name}
    for e in reversed(view.of_kind("model.deployed")):
        p = e.payload
        if p["stage"] == stage and p["model"].partition("@")[0] == name:
            return None if e.seq in ended else e
    return None
