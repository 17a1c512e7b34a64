"""Train and deploy through a backend, recording each on the ledger.

Training:
(1) resolve the spec's datasets on the ledger, refusing unregistered files and files whose
    bytes changed since registration (``Workspace.dataset``), and a missing target column;
(2) train through the backend; (3) store the artifact content-addressed;
(4) append ``model.trained`` with subject ``model:NAME@VERSION``.

Deployment:
(1) the version must hold the stage now (its latest promotion to it, ``model_versions``);
(2) the backend loads the artifact, which re-hashes it and refuses untrusted types;
(3) ``model.deployed`` is appended, with ``model.undeployed`` for the deployment of the same model
    name at that stage that it replaces, atomically; (4) only then is the serving pointer
    ``<home>/serving/<stage>.json`` replaced atomically, so nothing is servable unrecorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from backends._env import code_version, environment
from backends._protocol import ArtifactRef, TrainingData
from backends._registry import get_backend
from backends.kinds import ModelDeployed, ModelTrained, ModelUndeployed, current_deployment
from backends.spec import LoadedSpec
from ledger._fsutil import atomic_write
from ledger.api import Receipt
from ledger.errors import InputError
from ledger.events import Event
from policies._governance import model_versions
from policies._workspace import Workspace

__all__ = ["Deployment", "Training", "deploy", "serving_pointer", "train"]


@dataclass(frozen=True)
class Training:
    receipt: Receipt
    payload: ModelTrained

    @property
    def ref(self) -> str:
        return f"{self.payload.name}@{self.payload.version}"


@dataclass(frozen=True)
class Deployment:
    receipt: Receipt
    payload: ModelDeployed
    pointer: Path


def _next_version(ws: Workspace, name: str) -> int:
    """One past every version of ``name``, registered or trained."""
    with ws.ledger.view() as view:
        trained = [mv.version for mv in model_versions(view).values() if mv.name == name]
    return max(ws.next_version(name), 1 + max(trained, default=0))


def train(ws: Workspace, loaded: LoadedSpec, *, backend: str = "local", actor: str) -> Training:
    spec = loaded.spec
    engine = get_backend(backend)
    frames: dict[str, Any] = {}
    hashes: list[str] = []
    for role, ref in (("train", spec.datasets.train), ("eval", spec.datasets.eval)):  # step (1)
        if ref is None:
            continue
        ds = ws.dataset(ref)
        frame = ws.load_frame(ds)
        missing = [c for c in [spec.target, *spec.inputs] if c not in frame.columns]
        if missing:
            raise InputError(f"dataset {ds.name} ({role}) has no column(s) {', '.join(missing)}; "
                             f"the spec names them as {'target' if spec.target in missing else 'features'}")
        frames[role] = frame
        hashes.append(ds.sha256)
    result = engine.train(spec, TrainingData(frames["train"], frames.get("eval")))  # step (2)
    digest = ws.artifacts.put(result.artifact)  # step (3)
    version = _next_version(ws, spec.name)
    payload = ModelTrained(
        name=spec.name, version=version, artifact_sha256=digest, format=result.format,
        spec_sha256=loaded.sha256, spec=spec.model_dump(mode="json"), params=result.params,
        training_data=hashes, code_version=code_version(loaded.path, loaded.sha256),
        environment=environment(), metrics=result.metrics, wall_time_s=result.wall_time_s,
        features=spec.inputs, target=spec.target, backend=engine.name)
    receipt = ws.ledger.append(Event(payload, actor=actor, subject=f"model:{spec.name}@{version}"))  # (4)
    return Training(receipt, payload)


def serving_pointer(home: Path, stage: str) -> Path:
    return home / "serving" / f"{stage}.json"


def deploy(ws: Workspace, home: Path, ref: str, *, stage: str, backend: str = "local", actor: str) -> Deployment:
    name, _, version = ref.partition("@")
    if not name or not version.isdigit():
        raise InputError(f"model {ref!r}: give NAME@VERSION, e.g. credit@3")
    with ws.ledger.view() as view:  # step (1)
        mv = model_versions(view).get(ref)
        previous = current_deployment(view, name, stage)
    if mv is None:
        raise InputError(f"model {ref} is not on the ledger; train or register it first")
    if stage not in mv.stages:
        held = ", ".join(sorted(mv.stages)) or "no stage"
        raise InputError(f"model {ref} does not hold stage {stage!r} (it holds {held}); "
                         f"promote it first with 'mlledger promote {ref} --to {stage}'")
    if mv.artifact_sha256 is None:
        raise InputError(f"model {ref} is an external model without an artifact: mlledger cannot serve it; "
                         "record its outputs with 'mlledger evidence ... --outputs' instead")
    engine = get_backend(backend)
    engine.load(ArtifactRef(ws.artifacts, mv.artifact_sha256))  # step (2)
    payload = ModelDeployed(model=ref, artifact_sha256=mv.artifact_sha256, stage=stage, backend=engine.name,
                            promotion_seq=mv.stages[stage])
    events = []  # step (3): the deployment it replaces ends first, in the same atomic append
    if previous is not None:
        old = previous.payload
        events.append(Event(ModelUndeployed(
            model=old["model"], artifact_sha256=old["artifact_sha256"], stage=stage, deployed_seq=previous.seq,
            reason=f"replaced by {ref} (promotion at seq {mv.stages[stage]})", replaced_by=ref),
            actor=actor, subject=f"model:{old['model']}"))
    events.append(Event(payload, actor=actor, subject=f"model:{ref}"))
    receipt = ws.ledger.append_many(events)[-1]
    pointer = serving_pointer(home, stage)  # step (4); the stage pattern keeps it inside serving/
    pointer.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(pointer, orjson.dumps({"model": ref, "artifact_sha256": mv.artifact_sha256, "stage": stage,
                                        "backend": engine.name, "deployed_seq": receipt.seq},
                                       option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    return Deployment(receipt, payload, pointer)
