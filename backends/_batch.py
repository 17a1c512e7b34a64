"""Batch scoring of a CSV or Parquet file with a deployed version, streamed in chunks.

Two passes. Pass 1 reads every chunk and validates it against the model's input schema, so a
bad row anywhere is one clear error (file, line, column) before anything is written. Pass 2
predicts each chunk and records it:

- per row (default): one ``prediction.made`` per row, appended atomically per chunk;
- ``batch_commitment``: one canonical record per row (row, input commitment, key id, label,
  score) written to ``<output>.records.jsonl``; the RFC 6962 Merkle root and count of those
  records go into one ``prediction.batch`` entry. ``row_proof`` proves any single row
  against that entry later.

The output file (row, label, score, and the seq or record of each row) is written to a
temporary file and moved into place only after the entries are committed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from backends.kinds import PredictionBatch, PredictionMade
from backends.serving import Scorer, recorded_score
from ledger import merkle
from ledger.canonical import MAX_SAFE_INT, encode
from ledger.errors import InputError, IntegrityError, MlledgerError
from ledger.events import Event

__all__ = ["BatchResult", "predict_file", "row_proof", "verify_row_proof"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_PREDICTIONS: TypeAdapter[list[PredictionMade]] = TypeAdapter(list[PredictionMade])
_NO_NODES = 64  # Frontier.extend: keep no interior nodes (only the root is needed)


@dataclass(frozen=True)
class BatchResult:
    rows: int
    entries: int
    first_seq: int | None
    batch_seq: int | None
    root: str | None
    output: Path
    records: Path | None
    seconds: float


def _fmt(path: Path, what: str) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{what} {path}: use a .csv or .parquet file")
    return fmt


def _chunks(path: Path, rows: int, text: Sequence[str] = ()) -> Iterator[Any]:
    """The file in chunks; ``text`` columns (subject ids, string features) are read as text, never
    parsed as numbers (so an id '00123' stays '00123')."""
    import pandas as pd  # type: ignore[import-untyped]

    if _fmt(path, "input") == "csv":
        try:
            yield from pd.read_csv(path, chunksize=rows, dtype=dict.fromkeys(text, str))
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a readable CSV file ({exc})") from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{path}: the file is empty; give a header line and rows") from None
    else:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
        for batch in pf.iter_batches(batch_size=rows):
            frame = batch.to_pandas()
            for col in text:
                if col in frame.columns:
                    frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
            yield frame


def _validate(frame: Any, columns: dict[str, str], path: Path, offset: int, csv: bool,
              subject_column: str | None) -> None:
    import pandas as pd

    def where(i: int) -> str:
        return f"{path}:{offset + i + 2}" if csv else f"{path}: row {offset + i}"

    need = [*columns, *([subject_column] if subject_column else [])]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (the model's inputs are {', '.join(columns)}"
                         f"{'; --subject-column names ' + repr(subject_column) if subject_column else ''})")
    for col, kind in columns.items():
        s = frame[col]
        if kind == "number":
            if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
                i = int(bad.to_numpy().argmax()) if bad.any() else 0
                raise InputError(f"{where(i)}: column {col!r}: {s.iloc[i]!r} is not a number")
            finite = s.notna() & ~s.isin([float("inf"), float("-inf")])
        else:
            finite = s.notna() & (s.astype(str) != "")
        if not finite.all():
            i = int((~finite).to_numpy().argmax())
            raise InputError(f"{where(i)}: column {col!r} is empty or not finite; every input must have a value")
    if subject_column:
        s = frame[subject_column]
        if s.isna().any():
            i = int(s.isna().to_numpy().argmax())
            raise InputError(f"{where(i)}: column {subject_column!r} (the subject id) is empty")


def _records(frame: Any, columns: dict[str, str]) -> list[dict[str, Any]]:
    sub = frame[list(columns)]
    for col, kind in columns.items():
        if kind == "string":
            sub = sub.assign(**{col: sub[col].astype(str)})
    records: list[dict[str, Any]] = sub.to_dict("records")
    return records


def predict_file(scorer: Scorer, source: Path, output: Path, *, subject_column: str | None = None,
                 batch_commitment: bool = False, chunk_rows: int = 50_000, automated: bool = True,
                 progress: Callable[[int], None] | None = None) -> BatchResult:
    start = time.perf_counter()
    csv = _fmt(source, "input") == "csv"
    out_fmt = _fmt(output, "output")
    if not source.is_file():
        raise InputError(f"input {source}: no such file")
    if output.resolve() == source.resolve():
        raise InputError("the output must not overwrite the input")
    columns = scorer.deployed.columns
    if scorer.seal and not subject_column:
        raise InputError("--store-inputs needs --subject-column: stored inputs must be erasable per data subject")
    text = [c for c, kind in columns.items() if kind == "string"] + ([subject_column] if subject_column else [])
    total = 0
    for frame in _chunks(source, chunk_rows, text):  # pass 1
        _validate(frame, columns, source, total, csv, subject_column)
        total += len(frame)
    if total == 0:
        raise InputError(f"{source}: no rows to score")
    d = scorer.deployed
    tmp_out = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    records_path = output.with_name(output.name + ".records.jsonl") if batch_commitment else None
    tmp_rec = records_path.with_name(f".{records_path.name}.{os.getpid()}.tmp") if records_path else None
    parts: list[Any] = []
    tree = merkle.Frontier()  # the records' Merkle tree, built as they are written
    sha = hashlib.sha256
    to_seal: list[Any] = []
    first_seq: int | None = None
    entries = 0
    rec_fh = tmp_rec.open("wb") if tmp_rec else None
    rec_sha = hashlib.sha256()
    # chunk N is committed on a writer thread while chunk N+1 is predicted and encoded
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlledger-batch")
    pending: tuple[Future[list[Any]], dict[str, Any]] | None = None

    def settle() -> None:
        nonlocal pending, entries, first_seq
        if pending is not None:
            future, part = pending
            pending = None
            receipts = future.result()
            entries += len(receipts)
            first_seq = receipts[0].seq if first_seq is None else first_seq
            part["seq"] = [r.seq for r in receipts]

    try:
        done = 0
        for frame in _chunks(source, chunk_rows, text):  # pass 2
            records = _records(frame, columns)
            subjects = [str(s) for s in frame[subject_column]] if subject_column else None
            t0 = time.perf_counter()
            labels, scores = scorer.predict(records)
            latency_ms = round((time.perf_counter() - t0) * 1000 / max(len(records), 1), 3)
            keys = scorer.keys_for(subjects, len(records))
            digests = [k.commit(r) for k, r in zip(keys, records, strict=True)]
            rows = range(done, done + len(records))
            part: dict[str, Any] = {"row": list(rows), "label": labels, "score": scores,
                                    "input_commitment": [x.hex() for x in digests],
                                    "key_id": [k.key_id for k in keys]}
            if rec_fh is not None:
                lines = _record_lines(part)
                tree.extend([sha(b"\x00" + line).digest() for line in lines], min_level=_NO_NODES)
                block = b"\n".join(lines) + b"\n"
                rec_fh.write(block)
                rec_sha.update(block)  # the file's hash, of the bytes as written
            elif scorer.record:  # (not recording: bench/predict.py's baseline only)
                common = {"model": d.ref, "artifact_sha256": d.artifact_sha256, "stage": d.stage,
                          "deployed_seq": d.deployed_seq, "latency_ms": latency_ms, "automated_decision": automated,
                          "sealed": scorer.seal}
                payloads = _PREDICTIONS.validate_python([
                    {**common, "input_commitment": c, "key_id": k, "label": lab, "score": recorded_score(sc)}
                    for c, k, lab, sc in zip(part["input_commitment"], part["key_id"], labels, scores, strict=True)])
                subject = f"model:{d.ref}"
                events = [Event(p, actor=scorer.actor, subject=subject) for p in payloads]
                settle()
                pending = (writer.submit(scorer.ws.ledger.append_many, events), part)
            if scorer.seal and rec_fh is None:
                settle()  # inputs are stored only for committed decisions
                scorer.keys.store_sealed(zip(keys, digests, records, strict=True))
            elif scorer.seal:  # stored once the batch entry is committed
                to_seal.extend(zip(keys, digests, records, strict=True))
            parts.append(part)
            done += len(records)
            if progress:
                progress(len(records))
        settle()
        batch_seq = root = None
        if rec_fh is not None and tmp_rec is not None and records_path is not None:
            rec_fh.close()
            rec_fh = None
            root = tree.root().hex()
            receipt = scorer.ws.ledger.append(Event(PredictionBatch(
                model=d.ref, artifact_sha256=d.artifact_sha256, stage=d.stage, deployed_seq=d.deployed_seq,
                count=tree.size, root=root, records_sha256=rec_sha.hexdigest(), automated_decision=automated),
                actor=scorer.actor, subject=f"model:{d.ref}"))
            batch_seq, entries = receipt.seq, 1
            os.replace(tmp_rec, records_path)
            if to_seal:
                scorer.keys.store_sealed(to_seal)
        _write_output(parts, tmp_out, out_fmt, batch_seq)
        os.replace(tmp_out, output)
    except MlledgerError as exc:
        if first_seq is None or batch_commitment:
            raise
        raise type(exc)(f"{exc}; the first {entries:,} rows were already recorded, at seqs {first_seq}.."
                        f"{first_seq + entries - 1}, and no output was written: score only the remaining rows "
                        "again") from None
    finally:
        if pending is not None:  # failing already: let a chunk in flight finish; report the first error
            pending[0].exception()
        writer.shutdown()
        if rec_fh is not None:
            rec_fh.close()
        for t in (tmp_out, tmp_rec):
            if t is not None and t.exists():
                t.unlink()
    return BatchResult(done, entries, first_seq, batch_seq, root, output, records_path,
                       time.perf_counter() - start)


def _record_lines(part: dict[str, Any]) -> list[bytes]:
    """The canonical record of each row of ``part`` (FORMAT.md 3.15): the bytes ``encode`` gives, spliced
    from pre-encoded pieces; a row outside the fast path (a string label, a non-finite score) is
    encoded by ``encode`` itself."""
    keys: dict[str, bytes] = {k: orjson.dumps(k) for k in set(part["key_id"])}
    label_cache: dict[tuple[type, Any], bytes | None] = {}
    labels: list[bytes | None] = []
    for label in part["label"]:
        if type(label) not in (bool, int):  # strings, floats, or anything an engine plugin returns: encode()
            labels.append(None)
            continue
        lb = label_cache.get((type(label), label), b"")
        if lb == b"":
            lb = label_cache[(type(label), label)] = _label_json(label)
        labels.append(lb)
    scores = [recorded_score(s) for s in part["score"]]
    out: list[bytes] = []
    for commitment, key_id, label, lb, row, score in zip(part["input_commitment"], part["key_id"], part["label"],
                                                         labels, part["row"], scores, strict=True):
        if lb is not None and (score is None or (type(score) is float and score - score == 0.0)):
            out.append(b'{"input_commitment":"%s","key_id":%s,"label":%s,"row":%d,"score":%s}' % (
                commitment.encode(), keys[key_id], lb, row, b"null" if score is None else repr(score).encode()))
        else:
            out.append(encode({"input_commitment": commitment, "key_id": key_id, "label": label, "row": row,
                               "score": score}))
    return out


def _label_json(label: Any) -> bytes | None:
    """A label's canonical JSON if it is a bool or a safe integer; None otherwise (``encode`` it)."""
    if label is True or label is False:
        return b"true" if label else b"false"
    if type(label) is int and -MAX_SAFE_INT <= label <= MAX_SAFE_INT:
        return str(label).encode()
    return None


def _write_output(parts: list[dict[str, Any]], path: Path, fmt: str, batch_seq: int | None) -> None:
    import pandas as pd

    frame = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    if batch_seq is not None:
        frame["batch_seq"] = batch_seq
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def row_proof(records_path: Path, row: int) -> dict[str, Any]:
    """The record of ``row`` and its inclusion proof in the batch's Merkle root."""
    lines = records_path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not 0 <= row < len(lines):
        raise InputError(f"{records_path}: row {row} is out of range (0..{len(lines) - 1})")
    leaves = [merkle.leaf_hash(line) for line in lines]
    return {"row": row, "count": len(lines), "record": lines[row].decode(), "root": merkle.root_of(leaves).hex(),
            "records_sha256": hashlib.sha256(b"".join(x + b"\n" for x in lines)).hexdigest(),
            "proof": [h.hex() for h in merkle.inclusion_proof(row, leaves)]}


def verify_row_proof(proof: dict[str, Any], batch_entry: bytes) -> dict[str, Any]:
    """Check a row proof against the stored bytes of its ``prediction.batch`` entry (offline)."""
    entry = orjson.loads(batch_entry)
    if entry.get("kind") != "prediction.batch":
        raise IntegrityError("the entry is not a prediction.batch entry")
    p = entry["payload"]
    if proof["count"] != p["count"] or proof["root"] != p["root"]:
        raise IntegrityError(f"the proof's tree (count {proof['count']}, root {proof['root'][:16]}…) is not the "
                             f"batch's (count {p['count']}, root {p['root'][:16]}…)")
    record = proof["record"].encode()
    if orjson.loads(record).get("row") != proof["row"]:
        raise IntegrityError("the record is not the record of the row it claims")
    merkle.verify_inclusion(merkle.leaf_hash(record), proof["row"], p["count"],
                            [bytes.fromhex(h) for h in proof["proof"]], bytes.fromhex(p["root"]))
    return orjson.loads(record)  # type: ignore[no-any-return]
