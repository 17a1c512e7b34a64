"""Make a report: assemble its data over a fixed tree, render it, and record it.

(1) fix the tree: the ledger's size now (or a given earlier size);
(2) verify the ledger (the certificate states the outcome);
(3) assemble the data for the kind (model, ledger, bias-audit);
(4) render: JSON (the data), HTML, or PDF/A-3b with ``report-data.json`` and the source
    bundle of the covered checkpoint embedded;
(5) ``record`` appends ``report.generated`` with the output's hash and the tree it covers,
    once the caller has written the file.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.api import Ledger, Receipt
from ledger.artifacts import ArtifactStore
from ledger.errors import InputError
from ledger.events import Event
from ledger.verify import VerifyResult

__all__ = ["Rendered", "make_report", "record"]

Kind = Literal["model", "ledger", "bias-audit"]
Format = Literal["pdf", "html", "json"]


@dataclass(frozen=True)
class Rendered:
    kind: Kind
    fmt: Format
    ref: str | None
    data: dict[str, Any]
    content: bytes
    attachments: dict[str, str] = field(default_factory=dict)  # name -> sha256
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def tree_size(self) -> int:
        return int(self.data["certificate"]["tree_size"])

    @property
    def root(self) -> str:
        return str(self.data["certificate"]["root"])


def make_report(ledger: Ledger, kind: Kind, *, ref: str | None = None, fmt: Format = "pdf",
                artifacts: ArtifactStore | None = None, size: int | None = None, producer: str = "unknown",
                verified: VerifyResult | None = None) -> Rendered:
    """Render one report of the first ``size`` entries (default: all)."""
    from reports._render import Attachment, data_json, html_of, pdf_of, source_bundle

    t0 = time.perf_counter()
    size = ledger.head_size() if size is None else size
    if verified is None:
        verified = ledger.verify()
    if kind in ("model", "bias-audit") and not ref:
        raise InputError(f"a {kind} report needs a model: NAME@VERSION")
    if kind == "model":
        from reports._model import assemble_model

        data = assemble_model(ledger, str(ref), size=size, verified=verified, artifacts=artifacts)
    elif kind == "bias-audit":
        from reports._bias import assemble_bias

        data = assemble_bias(ledger, str(ref), size=size, verified=verified, artifacts=artifacts, producer=producer)
    else:
        from reports._ledger import assemble_ledger

        data = assemble_ledger(ledger, size=size, verified=verified)
    t1 = time.perf_counter()
    if fmt == "json":
        return Rendered(kind, fmt, ref, data, data_json(data), timings={"assemble": t1 - t0})
    attachments = [Attachment("report-data.json", data_json(data), "The report's data (mlledger-report/v1 JSON)")]
    if fmt == "pdf":
        cp = data["certificate"]["checkpoint"]
        bundle = source_bundle(ledger, cp["size"] if cp else None, data["certificate"]["as_of"])
        if bundle is not None:
            attachments.append(Attachment("source-bundle.zip", bundle,
                                          "mlledger-bundle/v1 of the covered checkpoint, for verify-bundle"))
    t2 = time.perf_counter()
    html = html_of(data, attachments=attachments if fmt == "pdf" else [])
    content = html.encode() if fmt == "html" else pdf_of(html, as_of=data["certificate"]["as_of"],
                                                          attachments=attachments)
    t3 = time.perf_counter()
    return Rendered(kind, fmt, ref, data, content,
                    attachments={a.name: a.sha256 for a in attachments} if fmt == "pdf" else {},
                    timings={"assemble": t1 - t0, "bundle": t2 - t1, "render": t3 - t2})


def record(ledger: Ledger, report: Rendered, *, actor: str) -> Receipt:
    """Append ``report.generated`` for a report that was written."""
    from reports.kinds import ReportGenerated

    cp = report.data["certificate"]["checkpoint"]
    payload = ReportGenerated(report_sha256=report.sha256, kind=report.kind, format=report.fmt, model=report.ref,
                              tree_size=report.tree_size, root=report.root,
                              checkpoint_size=cp["size"] if cp else None, attachments=report.attachments)
    return ledger.append(Event(payload, actor=actor, subject=f"model:{report.ref}" if report.ref else None))
