"""The real-time serving API (FastAPI on uvicorn; the ``serve`` extra).

Endpoints:
- ``POST /v1/predict``: one record or a batch; every decision is committed to the ledger as
  ``prediction.made`` before the response is sent, and returned with its receipt.
- ``POST /v1/reviews``: a human confirms or overrides a recorded decision (``human.reviewed``).
- ``GET /v1/receipts/{seq}/proof``: a C2SP ``.tlog-proof`` for an entry (a checkpoint is signed
  first if none covers it yet); ``GET /v1/receipts/{seq}``: the entry's stored bytes.
- ``GET /v1/model``: what is deployed and its input schema; ``GET /healthz``.

Every endpoint but ``/healthz`` takes a bearer token with its scope (``backends._auth``:
predict, review, proofs, model); the token's identity is the actor of what the request writes.

A follower thread watches the ledger: a new promotion of the model to the stage is deployed
(``model.deployed`` + ``model.undeployed`` of the old version) and served without a restart;
a deployment recorded elsewhere (``mlledger deploy``) is picked up the same way.
If the ledger write fails the client gets 503 and no decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from backends._auth import TokenAuth
from backends.serving import Deployed, NotDeployed, Scorer, current, holder, resolve
from ledger.api import Ledger
from ledger.errors import InputError, MlledgerError
from ledger.privacy import SubjectKeys
from policies._workspace import Workspace

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("mlledger.serve")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


RECEIPT_KINDS = frozenset({"prediction.made", "prediction.batch", "human.reviewed"})
"""The entries GET /v1/receipts/SEQ serves: decisions and their reviews (no personal data)."""

CHECKPOINT_MIN_S = 1.0
"""Proof requests sign a checkpoint when none covers the entry, at most once per this many seconds."""


@dataclass(frozen=True)
class ServeConfig:
    location: str
    home: str
    model: str
    stage: str
    actor: str = "service:mlledger-serve"
    seal: bool = False
    record: bool = True  # False only for bench/serve.py's unrecorded baseline
    max_body: int = 1 << 20
    max_records: int = 1000
    follow_s: float = 0.5
    auth: Literal["auto", "required", "unsafe-off"] = "auto"
    denied_window_s: int = 60
    identity: str | None = None  # the private key the server's own governed entries are signed with


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record: dict[str, JsonValue] | None = None
    records: list[dict[str, JsonValue]] | None = Field(default=None, min_length=1)
    subject_id: str | None = Field(default=None, min_length=1, max_length=512)
    subject_ids: list[str | None] | None = None
    automated_decision: bool = True
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,120}$", description=(
        "The client's id for the request, to match labels later. The ledger keeps only request_ref, its HMAC "
        "under the decision's key; record i of a multi-record request is 'ID/i'."))


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_seq: int = Field(ge=0)
    outcome: Literal["confirmed", "overridden"]
    label: int | str | bool | None = None
    reason: str = Field(min_length=1, max_length=2048)


class _BodyLimit:
    """413 for a body over ``limit`` bytes, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(self.limit, send)
                return
        seen = 0
        refused = False

        async def limited() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer 413 now; the app sees a client that went away
                    refused = True
                    await _too_large(self.limit, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded)




async def _too_large(limit: int, send: Callable[[Any], Awaitable[None]]) -> None:
    body = b'{"detail":"request body larger than ' + str(limit).encode() + b' bytes"}'
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _State:
    """The served deployment and the follower that keeps it current."""

    def __init__(self, cfg: ServeConfig) -> None:
        from ledger import keys as keyfiles

        self.cfg = cfg
        signer_path = Path(cfg.home) / "keys" / "log.pem"
        signer = keyfiles.load_signer(signer_path) if signer_path.exists() else None
        self.ledger = Ledger.open(cfg.location, signer=signer, checkpoint_every=1000 if signer else None)
        self.ws = Workspace(self.ledger, Path(cfg.home))
        self.keys = SubjectKeys(self.ledger, cfg.home)
        self.keys.finish_erasures()
        self.scorer = self._scorer(resolve(self.ws, cfg.model, cfg.stage))
        self.name = cfg.model.partition("@")[0]
        self.pinned = "@" in cfg.model
        self._stop = threading.Event()
        self._seen = self.ledger.head_size()
        self._cp_lock = threading.Lock()
        self._last_cp = 0.0
        #: Why predictions are refused (the served deployment ended), or None while serving.
        self.retired: str | None = None
        self.follower = threading.Thread(target=self._follow, name="mlledger-follow", daemon=True)
        self.monitor = threading.Thread(target=self._monitor, name="mlledger-monitor", daemon=True)

    def _scorer(self, deployed: Deployed) -> Scorer:
        return Scorer(self.ws, self.keys, deployed, actor=self.cfg.actor, seal=self.cfg.seal, record=self.cfg.record)

    def start(self) -> None:
        self.follower.start()
        if self.cfg.record:
            self.monitor.start()

    def close(self) -> None:
        self._stop.set()
        for thread in (self.follower, self.monitor):
            if thread.is_alive():
                thread.join(timeout=5)
        self.ledger.close()

    def _monitor(self) -> None:
        """Record monitoring windows (``backends.monitor``) every ``monitor.interval_s`` seconds while the
        stage's policy has a 'monitor:' section.

        Windows cannot be recorded twice (the ledger refuses overlapping windows), so several workers
        and a 'mlledger monitor' job may all run this.
        """
        from backends.monitor import Monitor

        wait = 1.0
        while not self._stop.wait(wait):
            try:
                mon = Monitor(self.ws, self.name, self.cfg.stage, keys=self.keys, actor="system:monitor")
                wait = mon.settings.interval_s
                if not mon.configured:
                    continue
                for r, a in mon.run().alerts:
                    log.warning("monitor.alert %s at seq %d: %s", a.kind, r.seq, a.detail)
            except MlledgerError as exc:  # another worker recorded the window first, or no reference yet
                refused = " refused: " in str(exc) and ("signed" in str(exc) or "needs the role" in str(exc))
                (log.warning if refused else log.info)("monitor: %s", exc)  # access control: say it loudly
            except Exception as exc:  # keep serving; say why
                log.warning("monitor: %s", exc)

    def _follow(self) -> None:
        while not self._stop.wait(self.cfg.follow_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving the current version; say why
                log.warning("follower: %s", exc)

    def refresh(self) -> None:
        """Deploy a newer promotion of the model, and switch to the current deployment.

        When the served deployment has ended (undeployed, or a pinned version no longer the one
        deployed) and there is nothing to switch to, the server stops answering predictions (409)
        and /healthz fails, rather than serve a version that is not deployed.
        """
        size = self.ledger.head_size()
        if size == self._seen:
            return
        held = None if self.pinned else holder(self.ws, self.name, self.cfg.stage)
        now = current(self.ws, self.name, self.cfg.stage)
        if held is not None and (now is None or now[1]["promotion_seq"] != held[1]):
            from backends._workflow import deploy

            try:
                deploy(self.ws, Path(self.cfg.home), held[0], stage=self.cfg.stage, actor=self.cfg.actor)
            except InputError as exc:  # another worker deployed it first
                log.info("follower: %s", exc)
            now = current(self.ws, self.name, self.cfg.stage)
        served = self.scorer.deployed.deployed_seq
        if now is None:
            self.retired = f"{self.scorer.deployed.ref} is no longer deployed at {self.cfg.stage!r}"
        elif now[0] != served and self.pinned:
            self.retired = (f"{self.scorer.deployed.ref} is no longer deployed at {self.cfg.stage!r} "
                            f"({now[1]['model']} is, since seq {now[0]}); this server was pinned to it")
        elif now[0] != served:
            self.scorer = self._scorer(resolve(self.ws, self.name, self.cfg.stage))
            self.retired = None
            log.info("now serving %s (deployed at seq %d)", self.scorer.deployed.ref, now[0])
        else:
            self.retired = None
        self._seen = size  # only once the switch (or retirement) succeeded

    def proof(self, seq: int) -> bytes:
        from ledger.tlog_proof import format_proof

        if seq >= self.ledger.head_size():
            raise HTTPException(404, f"no entry at seq {seq}")
        cp = self.ledger.latest_checkpoint(covering=seq)
        if cp is None:
            with self._cp_lock:  # at most one checkpoint per CHECKPOINT_MIN_S, however many ask
                cp = self.ledger.latest_checkpoint(covering=seq)
                wait = self._last_cp + CHECKPOINT_MIN_S - time.monotonic()
                if cp is None and wait > 0:
                    raise HTTPException(404, f"no checkpoint covers seq {seq} yet; retry in {wait:.1f} s",
                                        headers={"Retry-After": str(max(1, round(wait)))})
                if cp is None:
                    try:
                        cp = self.ledger.checkpoint()
                    except InputError:
                        raise HTTPException(503, f"no checkpoint covers seq {seq} yet, and this server cannot "
                                                 "sign one (no log key); ask the operator") from None
                    self._last_cp = time.monotonic()
        return format_proof(seq, self.ledger.inclusion_proof(seq, cp.size), cp.with_cosignatures())


def create_app(cfg: ServeConfig) -> FastAPI:
    """The ASGI app. Raises ``NotDeployed`` (before serving anything) if nothing is deployed."""
    state = _State(cfg)
    if cfg.identity is not None:  # e.g. model.deployed when it follows a promotion (needs deployer)
        from ledger.actions import identity_for_key
        from ledger.keys import load_private_key

        key = load_private_key(Path(cfg.identity))
        state.ledger.act_as(identity_for_key(state.ledger, key, where=cfg.identity), key)
    else:
        from policies._access import access_enabled_seq

        with state.ledger.view() as view:
            controlled = access_enabled_seq(view) is not None
        if controlled:
            log.warning("this ledger is access-controlled and the server runs without an identity: reviews "
                        "cannot be vouched for, and the monitoring windows and deployments it would record "
                        "are refused. Run it as a registered service identity: mlledger --as KEYFILE serve")
    auth = TokenAuth(state.ledger, mode=cfg.auth, actor=cfg.actor, window_s=cfg.denied_window_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        state.start()
        auth.start()
        try:
            yield
        finally:
            auth.close()
            state.close()

    app = FastAPI(title="mlledger serving API", version="1", lifespan=lifespan,
                  description="Predictions with a ledger receipt for every decision.")
    app.state.mlledger = state

    @app.exception_handler(MlledgerError)
    async def _ledger_error(_request: Request, exc: MlledgerError) -> JSONResponse:
        if isinstance(exc, NotDeployed):
            return JSONResponse({"detail": str(exc)}, status_code=409)
        if isinstance(exc, InputError):
            return JSONResponse({"detail": str(exc)}, status_code=422)
        log.error("ledger write failed: %s", type(exc).__name__)  # the message may name a subject
        return JSONResponse({"detail": "the decision could not be recorded; no prediction is returned"},
                            status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s", type(exc).__name__)  # never the message: it may hold input values
        return JSONResponse({"detail": "the request could not be completed; no prediction is returned"},
                            status_code=503)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        try:
            size = state.ledger.head_size()
        except MlledgerError as exc:
            raise HTTPException(503, f"ledger unavailable: {exc}") from None
        if state.retired:
            raise HTTPException(503, state.retired)
        return {"status": "ok", "model": state.scorer.deployed.ref, "stage": cfg.stage, "ledger_size": size}

    @app.get("/v1/model")
    def model(_who: str | None = Depends(auth.dependency("model", "/v1/model"))) -> dict[str, Any]:
        return state.scorer.deployed.describe()

    @app.post("/v1/predict")
    def predict(req: PredictRequest,
                who: str | None = Depends(auth.dependency("predict", "/v1/predict"))) -> dict[str, Any]:
        if (req.record is None) == (req.records is None):
            raise HTTPException(422, "give exactly one of 'record' or 'records'")
        records = [req.record] if req.record is not None else list(req.records or [])
        if len(records) > cfg.max_records:
            raise HTTPException(413, f"{len(records)} records in one request; at most {cfg.max_records}")
        subjects: list[str | None] | None = None
        if req.subject_ids is not None:
            subjects = list(req.subject_ids)
        elif req.subject_id is not None:
            subjects = [req.subject_id] * len(records)
        if state.retired:
            raise HTTPException(409, state.retired)
        scorer = state.scorer  # one deployment for the whole request, even if the follower switches
        decisions = scorer.score(records, subjects=subjects, automated=req.automated_decision,
                                 request_id=req.request_id, actor=who)
        d = scorer.deployed
        return {"model": d.ref, "stage": d.stage, "artifact_sha256": d.artifact_sha256,
                "deployed_seq": d.deployed_seq, "predictions": [x.to_json() for x in decisions]}

    @app.post("/v1/reviews")
    def review(req: ReviewRequest,
               who: str | None = Depends(auth.dependency("review", "/v1/reviews"))) -> dict[str, Any]:
        from backends.kinds import HumanReviewed
        from ledger.events import Event

        classes = getattr(state.scorer.deployed.model, "classes_", None)
        if req.label is not None and classes is not None:
            allowed = [c.item() if hasattr(c, "item") else c for c in classes]
            if req.label not in allowed or isinstance(req.label, bool) != any(isinstance(c, bool) for c in allowed):
                raise HTTPException(422, f"label {req.label!r} is not one of the model's labels {allowed}")
        # The token's identity is the actor; a server running as an identity (--as) signs the review as
        # its voucher (policies._access, step 4), so the guard and audit can check who vouched.
        server = state.ledger.acting_as
        payload = HumanReviewed(prediction_seq=req.prediction_seq, outcome=req.outcome, label=req.label,
                                reason=req.reason, vouched_by=server if who is not None and who != server else None)
        receipt = state.ledger.append(Event(payload, actor=who or cfg.actor,
                                            subject=f"prediction:{req.prediction_seq}"))
        return {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()}

    @app.get("/v1/receipts/{seq}/proof", response_class=PlainTextResponse)
    def proof(seq: int, _who: str | None = Depends(auth.dependency("proofs", "/v1/receipts/{seq}/proof"))
              ) -> Response:
        if seq < 0:
            raise HTTPException(404, "seq must be >= 0")
        return Response(state.proof(seq), media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{seq}.tlog-proof"'})

    @app.get("/v1/receipts/{seq}")
    def entry(seq: int, _who: str | None = Depends(auth.dependency("proofs", "/v1/receipts/{seq}"))) -> Response:
        if seq < 0 or seq >= state.ledger.head_size():
            raise HTTPException(404, f"no entry at seq {seq}")
        found = state.ledger.get(seq)
        if found.kind not in RECEIPT_KINDS:  # the rest of the ledger is for auditors, through export
            raise HTTPException(404, f"no receipt at seq {seq}")
        return Response(found.raw, media_type="application/json")

    app.add_middleware(_BodyLimit, limit=cfg.max_body)
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: the config comes from MLLEDGER_SERVE_CONFIG."""
    import json
    import os

    raw = os.environ.get("MLLEDGER_SERVE_CONFIG")
    if not raw:
        raise RuntimeError("MLLEDGER_SERVE_CONFIG is not set; start the server with 'mlledger serve'")
    return create_app(ServeConfig(**json.loads(raw)))


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``/healthz`` until it answers (used by tests and the demo)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server at {url} did not become ready in {timeout} s")
        time.sleep(0.1)

