"""Payload model of ``report.generated`` (DESIGN.md section 3).

Registered through the ``mlledger.kinds`` entry point. A report names the exact bytes
it produced (``report_sha256``) and the tree it covers (``tree_size`` entries with
Merkle root ``root``), so anyone holding the report can prove which ledger state it
describes, and that it was produced.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ledger.actions import SignedAction
from ledger.events import Sha256Hex, register

__all__ = ["REPORT_KINDS", "ReportGenerated"]

ReportKind = Literal["model", "ledger", "bias-audit"]
REPORT_KINDS: tuple[str, ...] = ReportKind.__args__  # type: ignore[attr-defined]
ModelRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,254}@[1-9][0-9]{0,9}$")]


@register("report.generated")
class ReportGenerated(SignedAction):
    """A report written from the first ``tree_size`` entries (root ``root``)."""

    report_sha256: Sha256Hex
    kind: ReportKind
    format: Literal["pdf", "html", "json"]
    model: ModelRef | None = None
    tree_size: Annotated[int, Field(ge=1)]
    root: Sha256Hex
    #: The signed checkpoint the report's certificate shows (None when none was signed yet).
    checkpoint_size: Annotated[int, Field(ge=1)] | None = None
    #: Files embedded in the PDF, by name: their SHA-256.
    attachments: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)], Sha256Hex] = Field(
        default_factory=dict)
