"""Resolving ledger references to data and models, and recording evidence.

A dataset reference is a registered name (the latest registration wins) or a
SHA-256 (a unique prefix of at least 12 hex digits is enough). A model reference
is ``NAME`` (latest version), ``NAME@VERSION`` or an artifact SHA-256; an external
(vendor) model may have no artifact, and is then found by name only. Every
command that reads a registered file first re-hashes it and refuses a file whose
bytes changed since registration, showing both hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ledger.api import Entry, Ledger, Receipt
from ledger.artifacts import ArtifactStore
from ledger.canonical import encode
from ledger.errors import InputError, IntegrityError
from ledger.events import Event

__all__ = ["MAX_EVIDENCE_BYTES", "RegisteredDataset", "RegisteredModel", "Workspace"]

#: Types skops does not trust by default that the allow-listed tree estimators need (plain
#: array-holding classes of scikit-learn, no code execution on load), and mlledger's own export
#: of a fairlearn mitigation (``backends.local.MitigatedClassifier``: strings, an int, numpy
#: arrays and fitted scikit-learn estimators, each checked by skops in turn; no ``__setstate__``
#: or ``__reduce__``, so loading only fills its ``__dict__``).
TRUSTED_TREE_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "backends.local.MitigatedClassifier",
)
#: Evidence loads a dataset into memory; larger files are refused with this limit named.
MAX_EVIDENCE_BYTES = 512 * 1024 * 1024
_HEX = re.compile(r"^[0-9a-f]{12,64}$")


@dataclass(frozen=True)
class RegisteredDataset:
    seq: int
    name: str
    sha256: str
    path: Path
    fmt: str
    role: str
    target: str | None
    sensitive: tuple[str, ...]
    columns: tuple[str, ...]
    rows: int


@dataclass(frozen=True)
class RegisteredModel:
    seq: int
    name: str
    version: int
    artifact_sha256: str | None
    features: tuple[str, ...]
    target: str | None
    external: bool = False
    vendor: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def path_of(source: str) -> Path:
    """The local path of a dataset ``source`` (a file:// URI or a path)."""
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    if "://" in source:
        raise InputError(f"dataset source {source!r} is not a local file; copy it locally and register it")
    return Path(source)


class Workspace:
    """A ledger plus its home directory (artifacts)."""

    def __init__(self, ledger: Ledger, home: Path) -> None:
        self.ledger = ledger
        #: The home directory: artifacts, keys (the subject KEK among them).
        self.home = home
        self.artifacts = ArtifactStore(home / "artifacts")

    # -- datasets ------------------------------------------------------------------

    def datasets(self) -> list[RegisteredDataset]:
        return [self._dataset(e) for e in self.ledger.iter(kind="dataset.registered")]

    @staticmethod
    def _dataset(e: Entry) -> RegisteredDataset:
        p = e.payload
        return RegisteredDataset(
            e.seq, p["name"], p["sha256"], path_of(p["source"]), p["format"], p["role"], p["target"],
            tuple(p["sensitive_features"]), tuple(c["name"] for c in p["columns"]), p["rows"])

    def dataset(self, ref: str, *, check_file: bool = True) -> RegisteredDataset:
        """Resolve ``ref`` and (by default) prove the file still has the registered bytes."""
        found = self.datasets()
        if _HEX.match(ref):
            hits = [d for d in found if d.sha256.startswith(ref)]
            if len({d.sha256 for d in hits}) > 1:
                raise InputError(f"dataset {ref!r}: the prefix matches several datasets; give more digits")
        else:
            hits = [d for d in found if d.name == ref]
        if not hits:
            known = ", ".join(sorted({d.name for d in found})) or "none"
            raise InputError(f"dataset {ref!r} is not registered on this ledger (registered: {known}); "
                             "register it with 'mlledger data register'")
        ds = hits[-1]
        if check_file:
            self.check_unchanged(ds)
        return ds

    @staticmethod
    def check_unchanged(ds: RegisteredDataset) -> None:
        from policies.evidence._data import file_digest

        if not ds.path.is_file():
            raise InputError(f"dataset {ds.name}: {ds.path} no longer exists")
        digest, _size = file_digest(ds.path)
        if digest != ds.sha256:
            raise IntegrityError(
                f"dataset {ds.name}: {ds.path} changed since it was registered at seq {ds.seq}: "
                f"registered sha256 {ds.sha256}, file now {digest}; register the new version"
            )

    def load_frame(self, ds: RegisteredDataset) -> Any:
        """The dataset as a pandas DataFrame (bounded by MAX_EVIDENCE_BYTES)."""
        import pandas as pd  # type: ignore[import-untyped]

        size = ds.path.stat().st_size
        if size > MAX_EVIDENCE_BYTES:
            raise InputError(
                f"dataset {ds.name}: {size:,} bytes is over the {MAX_EVIDENCE_BYTES:,}-byte limit for "
                "in-memory evidence; sample it (e.g. a production window) and register the sample"
            )
        if ds.fmt == "parquet":
            return pd.read_parquet(ds.path)
        return pd.read_csv(ds.path)

    # -- models --------------------------------------------------------------------

    def models(self) -> list[RegisteredModel]:
        out = []
        for e in self.ledger.iter(kind=["model.registered", "model.trained"]):
            p = e.payload
            out.append(RegisteredModel(e.seq, p["name"], p["version"], p["artifact_sha256"],
                                       tuple(p["features"]), p["target"], bool(p.get("external", False)),
                                       p.get("vendor")))
        return out

    def model(self, ref: str) -> RegisteredModel:
        found = self.models()
        name, _, version = ref.partition("@")
        if _HEX.match(ref):
            hits = [m for m in found if m.artifact_sha256 and m.artifact_sha256.startswith(ref)]
        elif version:
            if not version.isdigit():
                raise InputError(f"model {ref!r}: the version after '@' must be a number")
            hits = [m for m in found if m.name == name and m.version == int(version)]
        else:
            hits = [m for m in found if m.name == name]
        if not hits:
            known = ", ".join(sorted({m.ref for m in found})) or "none"
            raise InputError(f"model {ref!r} is not on the ledger (registered: {known}); "
                             "register it with 'mlledger model register', or a vendor's model with "
                             "'mlledger model register-external'")
        return hits[-1]

    def next_version(self, name: str) -> int:
        return 1 + max((m.version for m in self.models() if m.name == name), default=0)

    def load_model(self, model: RegisteredModel) -> Any:
        """Load the skops artifact, trusting only skops' defaults plus TRUSTED_TREE_TYPES."""
        import skops.io as sio  # type: ignore[import-untyped]

        if model.external or model.artifact_sha256 is None:
            raise InputError(f"model {model.ref} is an external model ({model.vendor}): mlledger does not run "
                             "it; record its outputs and give them with --outputs FILE")
        data = self.artifacts.get(model.artifact_sha256)
        extra = sio.get_untrusted_types(data=data)
        untrusted = [t for t in extra if t not in TRUSTED_TREE_TYPES]
        if untrusted:
            raise InputError(
                f"model {model.ref}: the artifact contains types skops does not trust by default "
                f"({', '.join(untrusted)}); refusing to load it"
            )
        return sio.loads(data, trusted=list(extra))

    # -- evidence ------------------------------------------------------------------

    def store_result(self, full: dict[str, Any]) -> str:
        """Store a full evidence result as canonical JSON; returns its SHA-256."""
        return self.artifacts.put(encode(full, where="evidence"))

    def record_evidence(
        self, result: Any, *, type_: str, model: RegisteredModel | None, dataset_sha256: str,
        reference_sha256: str | None = None, actor: str, seed: int | None = None,
    ) -> tuple[Receipt, str]:
        """Store ``result.to_json()`` as an artifact and append its ``evidence.recorded`` entry.

        The entry is bound to the model artifact hash (and, for an external model, to
        its NAME@VERSION) and the dataset hash, carries ``result.summary()`` as its
        values, and names the tool, library versions, config and seed so the evidence
        can be recomputed.
        """
        digest, event = self.evidence_event(result, type_=type_, model=model, dataset_sha256=dataset_sha256,
                                            reference_sha256=reference_sha256, actor=actor, seed=seed)
        return self.ledger.append(event), digest

    def evidence_event(
        self, result: Any, *, type_: str, model: RegisteredModel | None, dataset_sha256: str,
        reference_sha256: str | None = None, actor: str, seed: int | None = None,
    ) -> tuple[str, Event]:
        """``record_evidence`` up to the append: store the full result, build the entry."""
        from policies.kinds import EvidenceRecorded

        digest = self.store_result(result.to_json())
        # The reference implementations these numbers are cross-checked against (tests pin them).
        libraries = {**result.libraries, **versions("fairlearn", "aif360", "sklearn", "scipy")}
        payload = EvidenceRecorded(
            type=type_, model_sha256=model.artifact_sha256 if model else None,  # type: ignore[arg-type]
            model=model.ref if model is not None and model.external else None,
            dataset_sha256=dataset_sha256, reference_sha256=reference_sha256, values=result.summary(),
            artifact_sha256=digest, tool=result.tool, libraries=libraries, config=result.config, seed=seed)
        subject = f"model:{model.ref}" if model else f"dataset:sha256:{dataset_sha256}"
        return digest, Event(payload, actor=actor, subject=subject)


def versions(*names: str) -> dict[str, str]:
    """Installed versions of the named libraries (import names), skipping absent ones."""
    from importlib.metadata import PackageNotFoundError, version

    dist = {"sklearn": "scikit-learn"}
    out = {}
    for n in names:
        try:
            out[n] = version(dist.get(n, n))
        except PackageNotFoundError:
            continue
    return out
