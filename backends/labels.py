"""Ground truth: ``label.received`` for recorded decisions, from a CSV or Parquet file (issue 8).

A label names its decision by receipt ``seq``, or by the client's ``request_id``, which the ledger
keeps only as ``request_ref`` (an HMAC under the decision's key, FORMAT.md 3.14): a decision about a
data subject is found with the ``subject_id`` too, and not at all once the subject is erased. Group
membership (special-category data) is sealed under the decision's key, never written to an entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.api import Receipt
from ledger.errors import InputError
from ledger.events import Event
from ledger.privacy import SubjectKeys
from policies._workspace import Workspace

__all__ = ["ingest_labels"]


def ingest_labels(ws: Workspace, path: Any, *, label_column: str = "label", groups: Sequence[str] = (),
                  actor: str) -> list[Receipt]:
    """Record ``label.received`` for each row of a CSV or Parquet labels file, atomically.

    Each row names its decision by ``seq`` (the receipt) or ``request_id`` (with ``subject_id`` for a
    decision about a data subject: the ledger keeps only ``request_ref``). A row naming no recorded
    decision, a missing column, or a label that contradicts one already received is an error naming
    the row, and nothing is written. A label already received with the same value is skipped.
    """
    import hashlib
    from pathlib import Path

    import pandas as pd  # type: ignore[import-untyped]

    from backends.kinds_loop import LabelReceived

    p = Path(path)
    try:
        raw = p.read_bytes()
        frame = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read the labels file: {exc}") from None
    by = "seq" if "seq" in frame.columns else "request_id" if "request_id" in frame.columns else None
    if by is None:
        raise InputError(f"{p}: needs a 'seq' (receipt seq) or 'request_id' column to match labels to decisions; "
                         f"columns are {', '.join(map(str, frame.columns))}")
    missing = [c for c in [label_column, *groups] if c not in frame.columns]
    if missing:
        raise InputError(f"{p}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise InputError(f"{p}: no rows")
    digest = hashlib.sha256(raw).hexdigest()
    preds: dict[int, Any] = {}
    key_of: dict[int, str] = {}
    by_request: dict[str, list[int]] = {}  # request ids in the clear (entries written before request_ref)
    by_ref: dict[tuple[str, str], list[int]] = {}  # (key_id, request_ref) -> seqs
    for e in ws.ledger.iter(kind="prediction.made"):
        preds[e.seq] = e.payload["label"]
        key_of[e.seq] = e.payload["key_id"]
        if e.payload.get("request_id"):
            by_request.setdefault(e.payload["request_id"], []).append(e.seq)
        if e.payload.get("request_ref"):
            by_ref.setdefault((e.payload["key_id"], e.payload["request_ref"]), []).append(e.seq)
    known = {e.payload["prediction_seq"]: e.payload["label"] for e in ws.ledger.iter(kind="label.received")}
    events: list[Event] = []
    seen: set[int] = set()
    keys = SubjectKeys(ws.ledger, ws.home)
    deployment_keys = [k for k in (keys.by_id(kid) for kid in sorted(set(key_of.values())) if kid.startswith("dk-"))
                       if k is not None]

    def by_request_id(rid: str, row: dict[str, Any], where: str) -> int | None:
        """The decision a request id names: in the clear, or by its ref under the subject's key (a
        ``subject_id`` column) or under a deployment key (decisions without a subject)."""
        seqs = list(by_request.get(rid, []))
        subject = str(row.get("subject_id") or "").strip()
        candidates = deployment_keys
        if subject:
            found = keys.existing_for_subject(subject)
            candidates = [found] if found is not None else []
        for k in candidates:
            seqs += by_ref.get((k.key_id, k.request_ref(rid)), [])
        if len(seqs) > 1:
            raise InputError(f"{where}: request_id {rid!r} names {len(seqs)} decisions (seqs "
                             f"{', '.join(map(str, seqs))}): the client reused it; label these by 'seq'; "
                             f"nothing was written")
        return seqs[0] if seqs else None
    to_seal: list[Any] = []
    for i, row in enumerate(frame.to_dict("records")):
        where = f"{p}:{i + 2}"  # header is line 1
        key = str(row[by]).strip()
        if by == "seq":
            if not key.isdigit() or int(key) not in preds:
                raise InputError(f"{where}: seq {key!r} is not a recorded prediction.made; nothing was written")
            seq = int(key)
        else:
            found = by_request_id(key, row, where)
            if found is None:
                raise InputError(f"{where}: no recorded decision has request_id {key!r} (a decision about a data "
                                 f"subject is found with its 'subject_id' column too); nothing was written")
            seq = found
        label = _as_label(row[label_column], preds[seq], where)
        if seq in seen:
            raise InputError(f"{where}: decision {seq} is labelled twice in this file")
        seen.add(seq)
        if seq in known:
            if known[seq] != label:
                raise InputError(f"{where}: decision {seq} already has label {known[seq]!r}; labels are not "
                                 "overwritten (record a human.reviewed override instead)")
            continue
        commitment = None
        if groups:  # special-category data: sealed under the subject's key, never in the entry
            subject_key = keys.by_id(key_of[seq]) if key_of[seq].startswith("sk-") else None
            if subject_key is None:
                raise InputError(f"{where}: decision {seq} has no live data-subject key, so its group membership "
                                 "could not be erased later; record groups only for decisions made with a subject "
                                 "id (or leave out --group); nothing was written")
            record = {"groups": {g: str(row[g]) for g in groups}, "prediction_seq": seq}
            sealed = subject_key.commit(record)
            to_seal.append((subject_key, sealed, record))
            commitment = sealed.hex()
        payload = LabelReceived(prediction_seq=seq, label=label, source_sha256=digest, groups_commitment=commitment)
        events.append(Event(payload, actor=actor, subject=f"prediction:{seq}"))
    receipts = ws.ledger.append_many(events) if events else []
    if to_seal:
        keys.store_sealed(to_seal)  # only for labels that are recorded
    return receipts


def _as_label(value: Any, like: Any, where: str) -> Any:
    """The file's label in the type of the recorded decision's label."""
    text = str(value).strip()
    if isinstance(like, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise InputError(f"{where}: label {text!r} is not a boolean like the model's labels")
    if isinstance(like, int):
        try:
            return int(float(text)) if float(text).is_integer() else _bad(where, text)
        except ValueError:
            return _bad(where, text)
    if not text:
        raise InputError(f"{where}: empty label")
    return text


def _bad(where: str, text: str) -> Any:
    raise InputError(f"{where}: label {text!r} is not an integer like the model's labels")
