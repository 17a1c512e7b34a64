"""Render assembled report data to HTML, and HTML to PDF/A-3b with embedded files.

Same data, same bytes:
(1) the HTML is a pure function of the data (Jinja2, sorted JSON, charts from
    ``reports._charts`` with a fixed SVG salt);
(2) the PDF's dates (document info, XMP, each attachment) are the ledger time of the last
    covered entry; its file identifier is WeasyPrint's hash of the content, not random;
(3) attachments: ``report-data.json`` (the machine-readable data, canonical JSON), and
    ``source-bundle.zip``, the ledger's audit bundle of the covered checkpoint with fixed
    member order, times and modes, whose manifest is dated like the PDF.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ledger.api import Ledger

__all__ = ["Attachment", "html_of", "pdf_of", "source_bundle"]

_TEMPLATES = {"model": "model.html.j2", "ledger": "ledger.html.j2", "bias-audit": "bias.html.j2"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes
    description: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def data_json(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)


def _compact(value: Any) -> str:
    if value is None:
        return "—"
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode().replace(",", ", ").replace(":", ": ")


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()


def _svg_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, compact=_compact, pretty=_pretty, svg_uri=_svg_uri)
    return env


def _css() -> str:
    from importlib.resources import files

    return files("reports").joinpath("templates/report.css").read_text(encoding="utf-8")


def html_of(data: dict[str, Any], *, attachments: list[Attachment] | None = None) -> str:
    """The report as one self-contained HTML document."""
    from reports._figures import charts_for

    kind = data["report"]
    cert = data["certificate"]
    header = {"model": lambda: f"Audit dossier · {data['model']['ref']}",
              "bias-audit": lambda: f"Bias audit (NYC LL144) · {data['model']['ref']}",
              "ledger": lambda: f"Ledger integrity certificate · {cert['origin']}"}[kind]()
    template = _env().get_template(_TEMPLATES[kind])
    return str(template.render(
        d=data, cert=cert, title=header, header_title=header, css=_css(), charts=charts_for(data),
        w3c_date=cert["as_of"][:19] + "Z", report_version=data["format_version"],
        attachments=[{"name": a.name, "sha256": a.sha256, "size": len(a.data)} for a in attachments or []],
    ))


def _when(ts: str) -> datetime:
    return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def pdf_of(html: str, *, as_of: str, attachments: list[Attachment]) -> bytes:
    """PDF/A-3b of ``html`` with ``attachments`` embedded, dated ``as_of`` (ledger time)."""
    with warnings.catch_warnings():
        # WeasyPrint warns on import when the system lacks libharfbuzz-subset and it falls back to
        # fontTools for subsetting fonts (which ``_source_date_epoch`` makes reproducible).
        warnings.filterwarnings("ignore", message="HarfBuzz-Subset", category=DeprecationWarning)
        from weasyprint import HTML  # type: ignore[import-untyped]
        from weasyprint import Attachment as WAttachment

    when = _when(as_of)
    embedded = [WAttachment(string=a.data, name=a.name, description=a.description, created=when, modified=when,
                            relationship="Data" if a.name.endswith(".json") else "Source")
                for a in attachments]
    with _source_date_epoch(int(when.timestamp())), warnings.catch_warnings():
        # WeasyPrint opens its sRGB output-intent profile for PDF/A and never closes it.
        warnings.filterwarnings("ignore", message=r"unclosed file .*sRGB2014\.icc", category=ResourceWarning)
        pdf = HTML(string=html, base_url=".").write_pdf(pdf_variant="pdf/a-3b", attachments=embedded,
                                                        pdf_identifier=False)
    assert isinstance(pdf, bytes)
    return pdf


_EPOCH_LOCK = threading.Lock()


@contextmanager
def _source_date_epoch(epoch: int) -> Iterator[None]:
    """Date the embedded font subsets by ledger time, not the clock.

    fontTools (which WeasyPrint uses to subset fonts) stamps each subset's ``head.modified``
    with ``SOURCE_DATE_EPOCH`` when it is set (reproducible-builds.org), else with the
    current time. It has no parameter, so the variable is set for the duration of the
    render only, under a lock, and restored.
    """
    with _EPOCH_LOCK:
        before = os.environ.get("SOURCE_DATE_EPOCH")
        os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
        try:
            yield
        finally:
            if before is None:
                del os.environ["SOURCE_DATE_EPOCH"]
            else:
                os.environ["SOURCE_DATE_EPOCH"] = before


def source_bundle(ledger: Ledger, size: int | None, as_of: str) -> bytes | None:
    """The audit bundle of the checkpoint of ``size`` as deterministic zip bytes (None if no checkpoint).

    ``ledger.export.export_bundle`` writes the bundle (and checks it against the
    checkpoints); its unsigned manifest's ``created`` is set to ``as_of`` so the same
    ledger state gives the same bytes.
    """
    from ledger.export import export_bundle

    if size is None:
        return None
    with tempfile.TemporaryDirectory(prefix="mlledger-report-") as tmp:
        root = Path(tmp) / "bundle"
        export_bundle(ledger, root, size=size)
        manifest = orjson.loads((root / "manifest.json").read_bytes())
        manifest["created"] = as_of
        (root / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS) + b"\n")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        return buf.getvalue()
