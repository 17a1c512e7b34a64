"""Scoring a deployed model version and recording every decision (DESIGN.md sections 3, 5 and 7).

``resolve`` finds what is deployed for a model name at a stage (its latest ``model.deployed``
not ended by ``model.undeployed``), loads the artifact through its backend (re-hashed; only
trusted types) and derives the input schema from the training data's registered columns.

``Scorer.score`` validates the records against that schema, predicts, and appends one
``prediction.made`` per record in one atomic group-committed append; only then are the
decisions returned (ledger-before-response). Inputs are recorded only as keyed commitments
(``ledger.privacy``); with ``seal`` the raw inputs are also kept, AES-GCM-encrypted under the
subject's key, after the entries are committed (so no input is stored for a decision that was
not recorded).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends._protocol import ArtifactRef
from backends._registry import get_backend
from backends.kinds import SCORE_DECIMALS, PredictionMade, current_deployment
from ledger.api import Receipt
from ledger.errors import InputError, StorageError
from ledger.events import Event
from ledger.privacy import KeyErased, SubjectKey, SubjectKeys
from policies._governance import model_versions
from policies._workspace import Workspace

log = logging.getLogger("mlledger.serve")

__all__ = ["Decision", "Deployed", "NotDeployed", "Scorer", "resolve", "validate_records"]

_NUMERIC_PREFIXES = ("int", "uint", "float", "double", "decimal")


class NotDeployed(InputError):
    """Nothing (or not the requested version) is deployed at the stage."""


@dataclass(frozen=True)
class Deployed:
    """A deployment being served: which version, from which entry, with what input schema."""

    name: str
    version: int
    stage: str
    artifact_sha256: str
    deployed_seq: int
    promotion_seq: int
    backend: str
    columns: dict[str, str]  # input column -> "number" | "string" | "bool"
    model: Any = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def deployment(self) -> str:
        return f"{self.name}@{self.stage}"

    def describe(self) -> dict[str, Any]:
        return {"model": self.ref, "name": self.name, "version": self.version, "stage": self.stage,
                "artifact_sha256": self.artifact_sha256, "deployed_seq": self.deployed_seq,
                "promotion_seq": self.promotion_seq, "backend": self.backend,
                "inputs": [{"name": c, "type": t} for c, t in self.columns.items()]}


def _kind_of(dtype: str) -> str:
    d = dtype.lower()
    if d.startswith("bool"):
        return "bool"
    return "number" if d.startswith(_NUMERIC_PREFIXES) else "string"


def current(ws: Workspace, name: str, stage: str) -> tuple[int, dict[str, Any]] | None:
    """(seq, payload) of the current deployment of ``name`` at ``stage``, if any."""
    with ws.ledger.view() as view:
        e = current_deployment(view, name, stage)
    return None if e is None else (e.seq, e.payload)


def holder(ws: Workspace, name: str, stage: str) -> tuple[str, int] | None:
    """(NAME@VERSION, promotion seq) of the version of ``name`` that holds ``stage`` now."""
    with ws.ledger.view() as view:
        held = [(mv.stages[stage], mv.ref) for mv in model_versions(view).values()
                if mv.name == name and stage in mv.stages]
    if not held:
        return None
    seq, ref = max(held)
    return ref, seq


def resolve(ws: Workspace, model: str, stage: str) -> Deployed:
    """Load what is deployed for ``model`` (NAME or NAME@VERSION) at ``stage``; ``NotDeployed`` otherwise."""
    name, _, want = model.partition("@")
    found = current(ws, name, stage)
    if found is None:
        raise NotDeployed(f"model {name} has no deployment at stage {stage!r}; promote and deploy a version "
                          f"first ('mlledger promote {name}@N --to {stage}')")
    seq, p = found
    if want and p["model"] != f"{name}@{want}":
        raise NotDeployed(f"{name}@{want} is not deployed at {stage!r} ({p['model']} is, since seq {seq}); "
                          f"serve --model {name} to follow the stage")
    registered = ws.model(p["model"])
    engine = get_backend("local")  # every backend stores the same skops artifact, re-hashed on load
    loaded = engine.load(ArtifactRef(ws.artifacts, p["artifact_sha256"]))
    trained = next(iter(ws.ledger.iter(kind="model.trained", subject=f"model:{p['model']}")), None)
    if trained is None:
        raise NotDeployed(f"{p['model']} was not trained by a backend on this ledger; it cannot be served here")
    features = list(trained.payload["features"])
    sensitive = [c for c in getattr(loaded, "sensitive", []) if c not in features]
    dtypes: dict[str, str] = {}
    for digest in trained.payload["training_data"]:
        ds = ws.dataset(digest, check_file=False)
        dtypes.update({c["name"]: c["dtype"] for c in _columns_of(ws, ds.seq)})
    columns = {c: _kind_of(dtypes.get(c, "float64")) for c in [*features, *sensitive]}
    return Deployed(name, registered.version, stage, p["artifact_sha256"], seq, p["promotion_seq"], engine.name,
                    columns, loaded)


def _columns_of(ws: Workspace, seq: int) -> list[dict[str, Any]]:
    cols: list[dict[str, Any]] = ws.ledger.get(seq).payload["columns"]
    return cols


def validate_records(records: Sequence[Any], columns: Mapping[str, str], *, where: str = "records") -> None:
    """Each record has exactly the input columns, with the right JSON type; one clear error otherwise."""
    if not records:
        raise InputError(f"{where}: give at least one record")
    want = set(columns)
    for i, rec in enumerate(records):
        at = f"{where}[{i}]"
        if not isinstance(rec, Mapping):
            raise InputError(f"{at}: expected an object of input fields, got {type(rec).__name__}")
        missing = sorted(want - set(rec))
        if missing:
            raise InputError(f"{at}.{missing[0]}: required input field is missing")
        extra = sorted(set(rec) - want)
        if extra:
            raise InputError(f"{at}.{extra[0]}: not an input of this model (inputs: {', '.join(columns)})")
        for col, kind in columns.items():
            v = rec[col]
            if kind == "number":
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise InputError(f"{at}.{col}: expected a number, got {type(v).__name__}")
                if isinstance(v, float) and not math.isfinite(v):
                    raise InputError(f"{at}.{col}: must be a finite number, not {v}")
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise InputError(f"{at}.{col}: expected true or false, got {type(v).__name__}")
            elif not isinstance(v, str) or not v:
                raise InputError(f"{at}.{col}: expected a non-empty string, got {type(v).__name__}")


@dataclass(frozen=True, slots=True)
class Decision:
    label: Any
    score: float | None
    receipt: Receipt | None
    commitment: str
    key_id: str

    def to_json(self) -> dict[str, Any]:
        receipt = None if self.receipt is None else {"seq": self.receipt.seq,
                                                     "leaf_hash": self.receipt.leaf_hash.hex()}
        return {"label": self.label, "score": self.score, "receipt": receipt,
                "input_commitment": self.commitment, "key_id": self.key_id}


def recorded_score(score: float | None) -> float | None:
    """The score as the ledger keeps it: rounded, so that it does not identify the input."""
    return None if score is None else round(score, SCORE_DECIMALS)


def recorded_scores(scores: list[float | None]) -> list[float | None]:
    """``recorded_score`` of each score, vectorised where that is exact.

    ``round(x, 2)`` is the nearest integer n to ``x * 100`` (ties to even), as a float ``n / 100``
    (IEEE division of two exact integers is correctly rounded, as ``round`` parses its decimal
    result). numpy computes ``x * 100`` with one rounding, which can move the result across a tie
    only when it lies within a few ulps of one; those elements, and large or non-float ones, are
    rounded by ``round`` itself. tests/unit/backends/test_batch_fast_path.py holds the two equal.
    """
    import numpy as np

    if not scores or set(map(type, scores)) != {float}:
        return [recorded_score(s) for s in scores]
    a = np.fromiter(scores, np.float64, len(scores))
    scale = 10.0**SCORE_DECIMALS
    with np.errstate(over="ignore", invalid="ignore"):  # (those elements are rounded by ``round``)
        y = a * scale
        out = np.rint(y) / scale
        near = ~(np.abs(y) < 1e9) | (np.abs(np.abs(y - np.floor(y)) - 0.5) < 1e-6)
    result: list[float | None] = out.tolist()
    for i in np.flatnonzero(near).tolist():
        result[i] = round(scores[i], SCORE_DECIMALS)  # type: ignore[arg-type]
    return result


def _plain(v: Any) -> Any:
    """numpy scalars to JSON types."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


class Scorer:
    """Score records with one deployment and record each decision before returning it."""

    def __init__(self, ws: Workspace, keys: SubjectKeys, deployed: Deployed, *, actor: str, seal: bool = False,
                 record: bool = True) -> None:
        self.ws, self.keys, self.deployed = ws, keys, deployed
        self.actor, self.seal, self.record = actor, seal, record
        self.engine = get_backend(deployed.backend)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[float | None]]:
        import pandas as pd  # type: ignore[import-untyped]

        return self.predict_frame(pd.DataFrame.from_records(list(records), columns=list(self.deployed.columns)))

    def predict_frame(self, frame: Any) -> tuple[list[Any], list[float | None]]:
        """Labels and scores for the rows of a DataFrame holding (at least) the model's input columns."""
        import numpy as np

        out = self.engine.predict(self.deployed.model, frame[list(self.deployed.columns)])
        # A numpy array of ints or bools converts in one call (as ``item()`` would); anything else one by one
        # (numpy would turn a plain list mixing bools and ints into ints)
        raw = out.labels
        fast = isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.dtype.kind in "biu"
        labels = raw.tolist() if fast else [_plain(v) for v in out.labels]
        if out.scores is None:
            return labels, [None] * len(labels)
        s = np.asarray(out.scores)
        scores: list[float | None] = (s.astype(np.float64).tolist() if s.ndim == 1 and s.dtype.kind == "f"
                                      else [float(x) for x in out.scores])
        return labels, scores

    def score(self, records: Sequence[Mapping[str, Any]], *, subjects: Sequence[str | None] | None = None,
              automated: bool = True, request_id: str | None = None, actor: str | None = None) -> list[Decision]:
        """Score and record; ``actor`` (the authenticated caller) overrides the scorer's actor."""
        start = time.perf_counter()
        validate_records(records, self.deployed.columns)
        if subjects is not None and len(subjects) != len(records):
            raise InputError(f"subject_ids: {len(subjects)} given for {len(records)} records")
        if self.seal and (subjects is None or any(x is None for x in subjects)):
            raise InputError("stored inputs need a subject id for every record, so that they can be erased; "
                             "give subject_id (or subject_ids)")
        labels, scores = self.predict(records)
        latency_ms = round((time.perf_counter() - start) * 1000, 3)
        for _attempt in range(3):
            keys = self.keys_for(subjects, len(records))
            digests = [k.commit(r) for k, r in zip(keys, records, strict=True)]
            try:
                receipts = self._record(records, keys, digests, labels, scores, latency_ms, automated, request_id,
                                        actor)
                break
            except KeyErased:  # erased between reading the key and recording: the subject gets a new key
                continue
        else:
            raise StorageError("a subject's key was erased repeatedly while recording; retry the request")
        return [Decision(labels[i], scores[i], receipts[i], digests[i].hex(), keys[i].key_id)
                for i in range(len(records))]

    def _record(self, records: Sequence[Mapping[str, Any]], keys: list[SubjectKey], digests: list[bytes],
                labels: list[Any], scores: list[float | None], latency_ms: float, automated: bool,
                request_id: str | None, actor: str | None) -> list[Receipt | None]:
        if not self.record:
            return [None] * len(records)
        d = self.deployed
        events = []
        for i, (key, digest) in enumerate(zip(keys, digests, strict=True)):
            # "/" cannot occur in a request id, so record i of request "a" never shares a ref with request "a:i"
            rid = request_id if request_id is None or len(records) == 1 else f"{request_id}/{i}"
            payload = PredictionMade(
                model=d.ref, artifact_sha256=d.artifact_sha256, stage=d.stage, deployed_seq=d.deployed_seq,
                input_commitment=digest.hex(), key_id=key.key_id, label=labels[i], score=recorded_score(scores[i]),
                latency_ms=latency_ms, automated_decision=automated, sealed=self.seal,
                request_ref=None if rid is None else key.request_ref(rid))
            events.append(Event(payload, actor=actor or self.actor, subject=f"model:{d.ref}"))
        receipts: list[Receipt | None] = list(self.ws.ledger.append_many(events))
        if self.seal:
            try:
                self.keys.store_sealed(zip(keys, digests, records, strict=True))
            except Exception as exc:  # the decisions are recorded; only the optional copy of the inputs is lost
                log.warning("stored inputs not kept for seqs %s..: %s", receipts[0].seq if receipts[0] else "?",
                            type(exc).__name__)
        return receipts

    def keys_for(self, subjects: Sequence[str | None] | None, n: int) -> list[SubjectKey]:
        """The key of each of ``n`` records: its subject's, or the deployment's when it has none."""
        default = self.keys.for_deployment(self.deployed.deployment)
        if subjects is None:
            return [default] * n
        named = {s for s in subjects if s is not None}
        found = self.keys.many_for_subjects(named) if len(named) > 1 else (
            {s: self.keys.for_subject(s) for s in named})
        return [default if s is None else found[s] for s in subjects]
