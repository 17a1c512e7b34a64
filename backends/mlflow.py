"""The ``mlflow`` backend: a real MLflow tracking server and Model Registry; the ledger stays the
source of truth (DESIGN.md section 7).

``import mlflow`` happens only inside this backend; without the ``mlflow`` extra the backend
raises one ``MissingExtra`` saying how to install it. The server is ``MLFLOW_TRACKING_URI``
(or ``--tracking-uri``).

Invariants:
(1) training is the ``local`` backend's (same pipeline, same canonical skops bytes, so the same
    artifact SHA-256); only the record differs (``backend: mlflow``);
(2) the server is checked reachable before anything is written to the ledger;
(3) order of writes on ``train``: artifact store and ``model.trained`` first, then the MLflow
    run (params, metrics, dataset inputs with the ledger digests, the skops file) and a
    registered version tagged ``mlledger.seq``, ``mlledger.artifact_sha256``, ``mlledger.origin``.
    If MLflow fails after the ledger wrote, the error names the tracking URL and the seq: the
    ledger says the model was trained, MLflow does not have it, and nothing false is recorded;
(4) order on ``deploy``: the version must hold the stage on the ledger; the registered version
    tagged with its ledger seq and the promoted artifact's hash is downloaded and re-hashed; the alias named after the
    stage is moved to it; only then is ``model.deployed`` recorded. If recording fails, the
    alias is moved back (best effort) and ``reconcile`` reports anything left over;
(5) ``load`` downloads the artifact from the registry and refuses it (``IntegrityError``) when
    its SHA-256 is not the approved one; with no registered version carrying that hash it loads
    the ledger's content-addressed store, which re-hashes too;
(6) ``reconcile`` compares the registry with the ledger for the model names the ledger knows:
    an alias on a version the ledger did not deploy to that stage, a version without an
    ``mlledger.seq`` tag, or a version whose seq or artifact hash the ledger does not know is a
    finding, recorded as one ``monitor.alert`` each.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from backends._protocol import ArtifactRef, Predictions, TrainedModel, TrainingData
from backends._registry import MissingExtra, get_backend
from backends._skops import TREE_TYPES, safe_loads
from backends.local import LocalBackend
from ledger.errors import BackendError, IntegrityError, MlledgerError

if TYPE_CHECKING:
    from backends._workflow import Deployment, Training
    from backends.spec import LoadedSpec, TrainingSpec
    from ledger.api import Receipt
    from policies._workspace import Workspace

__all__ = ["EXTRA_MESSAGE", "Finding", "MlflowBackend", "deploy", "reconcile", "train"]

EXTRA_MESSAGE: Final = "the mlflow backend needs the mlflow extra: pip install 'mlledger[mlflow]'"
TAG_SEQ: Final = "mlledger.seq"
TAG_SHA: Final = "mlledger.artifact_sha256"
TAG_ORIGIN: Final = "mlledger.origin"
EXPERIMENT: Final = "mlledger"
ARTIFACT_DIR: Final = "model"
ARTIFACT_FILE: Final = "model.skops"
_PROBE_TIMEOUT_S: Final = 5.0


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise MissingExtra(EXTRA_MESSAGE) from None
    return mlflow


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MlflowBackend:
    """Local training recorded in MLflow; the registry's aliases follow the ledger's deployments."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None) -> None:
        _mlflow()
        self._local = LocalBackend()
        self.tracking_uri = tracking_uri

    # -- the server ---------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise BackendError("the mlflow backend needs a tracking server: set MLFLOW_TRACKING_URI "
                               "or pass --tracking-uri")
        return uri

    @contextmanager
    def using(self, tracking_uri: str | None) -> Iterator[MlflowBackend]:
        """This backend pointed at ``tracking_uri`` (when given) for the duration."""
        before = self.tracking_uri
        self.tracking_uri = tracking_uri or before
        try:
            yield self
        finally:
            self.tracking_uri = before

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def check_reachable(self) -> None:
        """Invariant (2): a bounded probe, so an unreachable server fails before any write."""
        uri = self.uri
        if uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT_S) as resp:  # noqa: S310 (http(s) only)
                    resp.read()
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise BackendError(f"the MLflow tracking server at {uri} is unreachable ({reason}); "
                                   "nothing was written to the ledger") from None
            return
        try:
            self.client().search_experiments(max_results=1)
        except Exception as exc:
            raise BackendError(f"the MLflow tracking store at {uri} is unusable ({exc}); "
                               "nothing was written to the ledger") from None

    # -- the protocol -------------------------------------------------------------------------

    def train(self, spec: TrainingSpec, datasets: TrainingData) -> TrainedModel:
        """Invariant (1)."""
        return self._local.train(spec, datasets)

    def load(self, artifact_ref: ArtifactRef) -> Any:
        """Invariant (5)."""
        found = self.versions_with(artifact_ref.sha256)
        if not found:
            return self._local.load(artifact_ref)
        mv = max(found, key=lambda v: int(v.version))
        return self.load_version(mv.name, int(mv.version), artifact_ref.sha256)

    def predict(self, model: Any, batch: Any) -> Predictions:
        return self._local.predict(model, batch)

    def describe(self) -> dict[str, Any]:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return {**self._local.describe(), "name": self.name, "runs": "in-process, recorded in MLflow",
                "tracking_uri": uri, "mlflow": _mlflow().__version__}

    # -- the registry -------------------------------------------------------------------------

    def versions_with(self, sha256: str, name: str | None = None) -> list[Any]:
        """Registered versions tagged with the artifact hash ``sha256`` (of model ``name``)."""
        query = f"tags.`{TAG_SHA}` = '{sha256}'"
        if name is not None:
            query += f" AND name = '{_quote(name)}'"
        return list(self.client().search_model_versions(query))

    def download(self, name: str, version: int) -> bytes:
        mlflow = _mlflow()
        with tempfile.TemporaryDirectory(prefix="mlledger-mlflow-") as tmp:
            where = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp, tracking_uri=self.uri))
            path = where / ARTIFACT_FILE if where.is_dir() else where
            if not path.is_file():
                raise IntegrityError(f"MLflow model {name} version {version} at {self.uri} has no {ARTIFACT_FILE}")
            return path.read_bytes()

    def load_version(self, name: str, version: int, expected_sha256: str) -> Any:
        """The supply-chain check: the registry's bytes must hash to the approved artifact."""
        data = self.download(name, version)
        got = _sha256(data)
        if got != expected_sha256:
            raise IntegrityError(f"the artifact of MLflow model {name} version {version} at {self.uri} has "
                                 f"sha256 {got}, not the approved {expected_sha256}; refusing to load it")
        return safe_loads(data, f"artifact {expected_sha256}", trusted=TREE_TYPES)

    def record_training(self, ws: Workspace, done: Training, artifact: bytes,
                        datasets: list[tuple[str, str]]) -> tuple[str, int]:
        """Invariant (3), the MLflow half: a run and a registered version; returns both ids."""
        mlflow = _mlflow()
        from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

        p, seq = done.payload, done.receipt.seq
        tags = {TAG_SEQ: str(seq), TAG_SHA: p.artifact_sha256, TAG_ORIGIN: ws.ledger.origin(),
                "mlledger.model": done.ref}
        client = self.client()
        exp = client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)
        run_id = client.create_run(exp_id, run_name=done.ref, tags=tags).info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(run_id,
                             metrics=[Metric(k, v, now, 0) for k, v in p.metrics.items()],
                             params=[Param(k, str(v)[:6000]) for k, v in sorted(p.params.items())],
                             tags=[RunTag("mlledger.spec_sha256", p.spec_sha256),
                                   RunTag("mlledger.code_version", p.code_version)])
            inputs = []
            for role, ref in datasets:
                ds = ws.dataset(ref, check_file=False)
                meta = mlflow.data.meta_dataset.MetaDataset(
                    source=mlflow.data.http_dataset_source.HTTPDatasetSource(ds.path.resolve().as_uri()),
                    name=ds.name, digest=ds.sha256[:32])
                inputs.append(DatasetInput(meta._to_mlflow_entity(),
                                           [InputTag("mlflow.data.context", role),
                                            InputTag("mlledger.sha256", ds.sha256),
                                            InputTag("mlledger.seq", str(ds.seq))]))
            client.log_inputs(run_id, datasets=inputs)
            with tempfile.TemporaryDirectory(prefix="mlledger-mlflow-") as tmp:
                path = Path(tmp) / ARTIFACT_FILE
                path.write_bytes(artifact)
                client.log_artifact(run_id, str(path), ARTIFACT_DIR)
            if not client.search_registered_models(f"name = '{_quote(p.name)}'"):
                client.create_registered_model(p.name, tags={TAG_ORIGIN: ws.ledger.origin()})
            mv = client.create_model_version(p.name, f"runs:/{run_id}/{ARTIFACT_DIR}", run_id=run_id, tags=tags)
        except Exception:
            _quietly(lambda: client.set_terminated(run_id, "FAILED"))
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id, int(mv.version)


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def _quietly(fn: Any) -> None:
    """Best effort while another failure is being reported."""
    with contextlib.suppress(Exception):
        fn()


def backend() -> MlflowBackend:
    engine = get_backend("mlflow")
    if not isinstance(engine, MlflowBackend):
        raise BackendError("the installed 'mlflow' backend is not mlledger's MlflowBackend")
    return engine


# -- the workflows (the CLI calls these for --backend mlflow) ------------------------------------


@dataclass(frozen=True)
class MlflowTraining:
    training: Training
    run_id: str
    mlflow_version: int


def train(ws: Workspace, loaded: LoadedSpec, *, actor: str, tracking_uri: str | None = None) -> MlflowTraining:
    """Invariants (2) and (3)."""
    from backends._workflow import train as run_train

    engine = backend()
    with engine.using(tracking_uri):
        engine.check_reachable()
        done = run_train(ws, loaded, backend=engine.name, actor=actor)
        artifact = ws.artifacts.get(done.payload.artifact_sha256)
        try:
            refs = [(role, ref) for role, ref in (("train", loaded.spec.datasets.train),
                                                  ("eval", loaded.spec.datasets.eval)) if ref is not None]
            with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is ours
                run_id, version = engine.record_training(ws, done, artifact, refs)
        except Exception as exc:
            raise BackendError(
                f"{done.ref} is trained and recorded on the ledger (model.trained at seq {done.receipt.seq}), "
                f"but recording it in MLflow at {engine.uri} failed: {type(exc).__name__}: {exc}. "
                f"The ledger says so: MLflow has no registered version for seq {done.receipt.seq}"
            ) from None
    return MlflowTraining(done, run_id, version)


@dataclass(frozen=True)
class MlflowDeployment:
    deployment: Deployment
    mlflow_version: int
    alias: str
    alias_moved_s: float  # from the start of the deploy to the alias moved


def deploy(ws: Workspace, home: Path, ref: str, *, stage: str, actor: str,
           tracking_uri: str | None = None) -> MlflowDeployment:
    """Invariant (4)."""
    from backends._workflow import deploy as run_deploy
    from policies._governance import model_versions

    start = time.perf_counter()
    engine = backend()
    with engine.using(tracking_uri):
        engine.check_reachable()
        with ws.ledger.view() as view:
            mv = model_versions(view).get(ref)
        if mv is None or stage not in mv.stages or mv.artifact_sha256 is None:
            run_deploy(ws, home, ref, stage=stage, backend=engine.name, actor=actor)  # raises, writing nothing
            raise AssertionError(f"deploy of {ref}, which does not hold {stage!r}, did not refuse")
        found = [v for v in engine.versions_with(mv.artifact_sha256, mv.name)
                 if v.tags.get(TAG_SEQ) == str(mv.registered_seq)]
        if not found:
            raise BackendError(f"MLflow at {engine.uri} has no registered version of {ref} (tagged {TAG_SEQ} "
                               f"{mv.registered_seq}, artifact sha256 {mv.artifact_sha256}); "
                               "only versions trained with --backend mlflow are in the registry")
        version = max(int(v.version) for v in found)
        engine.load_version(mv.name, version, mv.artifact_sha256)
        client = engine.client()
        previous = client.get_registered_model(mv.name).aliases.get(stage)
        client.set_registered_model_alias(mv.name, stage, str(version))
        moved = time.perf_counter() - start
        try:
            done = run_deploy(ws, home, ref, stage=stage, backend=engine.name, actor=actor)
        except MlledgerError as exc:
            restore = (lambda: client.set_registered_model_alias(mv.name, stage, str(previous))) if previous \
                else (lambda: client.delete_registered_model_alias(mv.name, stage))
            _quietly(restore)
            raise type(exc)(f"{exc} (the MLflow alias {stage!r} of {mv.name} at {engine.uri} was moved back)") \
                from None
    return MlflowDeployment(done, version, stage, moved)


# -- reconcile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str
    model: str
    stage: str | None
    detail: str


def findings(ws: Workspace, engine: MlflowBackend) -> list[Finding]:
    """Invariant (6), read-only."""
    from policies._governance import model_versions

    with ws.ledger.view() as view:
        versions = model_versions(view)
        deployed: dict[tuple[str, str], dict[str, Any]] = {}
        for e in view.of_kind("model.deployed"):
            if e.payload["backend"] == "mlflow":
                deployed[(e.payload["model"].partition("@")[0], e.payload["stage"])] = e.payload
    by_seq = {mv.registered_seq: mv for mv in versions.values()}
    names = sorted({mv.name for mv in versions.values()})
    client = engine.client()
    out: list[Finding] = []
    for name in names:
        registered = client.search_registered_models(f"name = '{_quote(name)}'")
        if not registered:
            continue
        tags_of: dict[str, dict[str, str]] = {}
        for v in client.search_model_versions(f"name = '{_quote(name)}'"):
            tags_of[str(v.version)] = dict(v.tags)
            seq, sha = v.tags.get(TAG_SEQ), v.tags.get(TAG_SHA)
            where = f"MLflow version {v.version} of {name}"
            if seq is None:
                out.append(Finding("unrecorded-version", name, None,
                                   f"{where} has no {TAG_SEQ} tag: it was registered outside the ledger"))
                continue
            mv = by_seq.get(int(seq)) if seq.isdigit() else None
            if mv is None or mv.name != name or mv.artifact_sha256 != sha:
                out.append(Finding("unknown-artifact", name, None,
                                   f"{where} claims ledger seq {seq} and artifact sha256 {sha}, which the ledger "
                                   "does not record for this model"))
        for stage, version in sorted(registered[0].aliases.items()):
            tags = tags_of.get(str(version), {})
            expect = deployed.get((name, stage))
            if expect is None:
                out.append(Finding("alias-drift", name, stage,
                                   f"alias {stage!r} points at MLflow version {version} of {name}, but the ledger "
                                   f"deployed no version of {name} to {stage}"))
            elif (tags.get(TAG_SHA) != expect["artifact_sha256"]
                  or tags.get(TAG_SEQ) != _seq_of(versions.get(expect["model"]))):
                out.append(Finding("alias-drift", name, stage,
                                   f"alias {stage!r} points at MLflow version {version} of {name} (ledger seq "
                                   f"{tags.get(TAG_SEQ)}, artifact {tags.get(TAG_SHA)}), but the ledger deployed "
                                   f"{expect['model']} (artifact {expect['artifact_sha256']}) to {stage}"))
    return out


def _seq_of(mv: Any) -> str | None:
    return None if mv is None else str(mv.registered_seq)


def reconcile(ws: Workspace, *, actor: str, tracking_uri: str | None = None) -> list[tuple[Finding, Receipt]]:
    """Record one ``monitor.alert`` per finding; the server is checked before anything is written."""
    from backends.kinds import MonitorAlert
    from ledger.events import Event

    engine = backend()
    with engine.using(tracking_uri):
        engine.check_reachable()
        found = findings(ws, engine)
    out = []
    for f in found:
        payload = MonitorAlert(kind=f.kind, model=f.model, stage=f.stage, detail=f.detail,  # type: ignore[arg-type]
                               source="mlflow-reconcile")
        out.append((f, ws.ledger.append(Event(payload, actor=actor, subject=f"model:{f.model}"))))
    return out
