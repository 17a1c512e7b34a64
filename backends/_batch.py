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

Per row, chunk N is appended on a writer thread while chunk N+1 is read, scored, encoded
(``backends._batch_encode``) and sequenced ahead of the write lock (``Ledger.sequence_ahead``).
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from backends._batch_encode import append_decisions, decisions, input_bytes, record_lines
from backends.kinds import PredictionBatch
from backends.serving import Scorer
from ledger import merkle
from ledger.api import Receipt
from ledger.canonical import encode
from ledger.entry_rows import EntryRows, Receipts
from ledger.errors import InputError, IntegrityError, MlledgerError
from ledger.events import Event

__all__ = ["BatchResult", "predict_file", "row_proof", "verify_row_proof"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
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


def _inputs(frame: Any, columns: dict[str, str]) -> Any:
    """The model's input columns of a validated chunk, string columns as text."""
    sub = frame[list(columns)]
    for col, kind in columns.items():
        if kind == "string":
            sub = sub.assign(**{col: sub[col].astype(str)})
    return sub


def _records(inputs: Any) -> list[dict[str, Any]]:
    """Each row as a record (the values ``encode`` and the sealed store see)."""
    records: list[dict[str, Any]] = inputs.to_dict("records")
    return records


def predict_file(scorer: Scorer, source: Path, output: Path, *, subject_column: str | None = None,
                 batch_commitment: bool = False, chunk_rows: int = 50_000, automated: bool = True,
                 progress: Callable[[int], None] | None = None) -> BatchResult:
    # The objects alive before the run (libraries, the model) are left out of garbage collection
    # while it runs: each chunk allocates hundreds of thousands of objects, and the collections
    # they trigger walked the whole heap (15% of per-row scoring, bench/predict.py).
    gc.freeze()
    try:
        return _predict_file(scorer, source, output, subject_column=subject_column,
                             batch_commitment=batch_commitment, chunk_rows=chunk_rows, automated=automated,
                             progress=progress)
    finally:
        gc.unfreeze()


def _predict_file(scorer: Scorer, source: Path, output: Path, *, subject_column: str | None,
                  batch_commitment: bool, chunk_rows: int, automated: bool,
                  progress: Callable[[int], None] | None) -> BatchResult:
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
    led = scorer.ws.ledger
    tmp_out = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    records_path = output.with_name(output.name + ".records.jsonl") if batch_commitment else None
    tmp_rec = records_path.with_name(f".{records_path.name}.{os.getpid()}.tmp") if records_path else None
    parts: list[Any] = []
    tree = merkle.Frontier()  # the records' Merkle tree, built as they are written
    sha = hashlib.sha256
    to_seal: list[Any] = []
    entries = 0
    rec_fh = tmp_rec.open("wb") if tmp_rec else None
    rec_sha = hashlib.sha256()
    # chunk N is committed on a writer thread while chunk N+1 is predicted and encoded
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlledger-batch")
    pending: tuple[Future[Sequence[Receipt]], dict[str, Any]] | None = None
    last_rows: EntryRows | None = None  # the chunk before, if appended as rows
    spans: list[list[int]] = []  # the seqs recorded, as [first, last] runs (others may append between chunks)

    def settle() -> None:
        nonlocal pending, entries
        if pending is not None:
            future, part = pending
            pending = None
            receipts = future.result()
            entries += len(receipts)
            part["seq"] = receipts.seqs if isinstance(receipts, Receipts) else [r.seq for r in receipts]
            lo, hi = part["seq"][0], part["seq"][-1]  # (a chunk's seqs are contiguous; chunks need not be)
            if spans and spans[-1][1] + 1 == lo:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])

    try:
        done = 0
        for frame in _chunks(source, chunk_rows, text):  # pass 2
            inputs = _inputs(frame, columns)
            n = len(inputs)
            if n == 0:  # (an empty Parquet row group)
                continue
            subjects = [str(s) for s in frame[subject_column]] if subject_column else None
            t0 = time.perf_counter()
            labels, scores = scorer.predict_frame(inputs)
            latency_ms = round((time.perf_counter() - t0) * 1000 / max(n, 1), 3)
            keys = scorer.keys_for(subjects, n)
            encoded = input_bytes(inputs)
            records = _records(inputs) if encoded is None or scorer.seal else None
            if encoded is None:  # outside the spliced fast path: encode each record
                assert records is not None
                encoded = [encode(r) for r in records]
            digests = (keys[0].commit_many(encoded) if subjects is None  # (one deployment key)
                       else [k.commit_encoded(x) for k, x in zip(keys, encoded, strict=True)])
            part: dict[str, Any] = {"row": range(done, done + n), "label": labels, "score": scores,
                                    "input_commitment": [x.hex() for x in digests],
                                    "key_id": [k.key_id for k in keys]}
            if rec_fh is not None:
                lines = record_lines(part)
                tree.extend([sha(b"\x00" + line).digest() for line in lines], min_level=_NO_NODES)
                block = b"\n".join(lines) + b"\n"
                rec_fh.write(block)
                rec_sha.update(block)  # the file's hash, of the bytes as written
            elif scorer.record:  # (not recording: bench/predict.py's baseline only)
                common = {"model": d.ref, "artifact_sha256": d.artifact_sha256, "stage": d.stage,
                          "deployed_seq": d.deployed_seq, "latency_ms": latency_ms, "automated_decision": automated,
                          "sealed": scorer.seal}
                chunk = decisions(scorer.actor, f"model:{d.ref}", common, part, labels, scores)
                rows = chunk if isinstance(chunk, EntryRows) else None
                if rows is not None and (last_rows is not None or pending is None):
                    led.sequence_ahead(rows, after=last_rows)  # here, while the chunk before is written
                settle()
                if rows is not None:  # the chunk before is committed: kept if it still fits, else built on it
                    led.sequence_ahead(rows)
                last_rows = rows
                pending = (writer.submit(append_decisions, led, chunk), part)
            if scorer.seal and rec_fh is None:
                settle()  # inputs are stored only for committed decisions
                scorer.keys.store_sealed(zip(keys, digests, records or (), strict=True))
            elif scorer.seal:  # stored once the batch entry is committed
                to_seal.extend(zip(keys, digests, records or (), strict=True))
            parts.append(part)
            done += n
            if progress:
                progress(n)
        settle()
        batch_seq = root = None
        if rec_fh is not None and tmp_rec is not None and records_path is not None:
            rec_fh.close()
            rec_fh = None
            root = tree.root().hex()
            receipt = led.append(Event(PredictionBatch(
                model=d.ref, artifact_sha256=d.artifact_sha256, stage=d.stage, deployed_seq=d.deployed_seq,
                count=tree.size, root=root, records_sha256=rec_sha.hexdigest(), automated_decision=automated),
                actor=scorer.actor, subject=f"model:{d.ref}"))
            batch_seq, entries = receipt.seq, 1
            os.replace(tmp_rec, records_path)
            if to_seal:
                scorer.keys.store_sealed(to_seal)
        _write_output(parts, tmp_out, out_fmt, batch_seq)
        os.replace(tmp_out, output)
    except BaseException as exc:
        if pending is not None and pending[0].exception() is None:
            settle()  # the chunk in flight was committed: it counts among the recorded rows
        if not spans or batch_commitment:
            raise
        report = _recorded_report(entries, total, spans)
        if not isinstance(exc, Exception):  # Ctrl-C and the like keep their meaning, with the report
            exc.add_note(f"mlledger: {report}")
            raise
        mine = isinstance(exc, MlledgerError)
        raise (type(exc) if mine else MlledgerError)(
            f"{exc if mine else f'{type(exc).__name__}: {exc}'}; {report}") from (None if mine else exc)
    finally:
        if pending is not None:  # failing already: let a chunk in flight finish; report the first error
            pending[0].exception()
        writer.shutdown()
        if rec_fh is not None:
            rec_fh.close()
        for t in (tmp_out, tmp_rec):
            if t is not None and t.exists():
                t.unlink()
    return BatchResult(done, entries, spans[0][0] if spans else None, batch_seq, root, output, records_path,
                       time.perf_counter() - start)


def _recorded_report(entries: int, total: int, spans: list[list[int]]) -> str:
    """What a failed per-row run had recorded (chunks are committed in order)."""
    where = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in spans)
    if entries == total:
        return (f"all {total:,} rows were recorded, at seqs {where}, but no output was written: do not score the "
                "file again; their seqs are on the ledger (mlledger log --kind prediction.made)")
    return (f"the first {entries:,} rows were already recorded, at seqs {where}, and no output was written: "
            "score only the remaining rows again")


def _write_output(parts: list[dict[str, Any]], path: Path, fmt: str, batch_seq: int | None) -> None:
    """The output file: a row per input row (row, label, score, input commitment, key id, and its seq or
    the batch's seq). Written by Arrow's writers, which run outside the interpreter lock (pandas'
    CSV writer took a fifth of per-row scoring's time); a label column Arrow cannot type (mixed
    types from an engine plugin) goes through pandas."""
    import numpy as np
    import pyarrow as pa

    def column(values: Sequence[Any]) -> Any:
        if isinstance(values, range):  # (Arrow converts a range one Python int at a time)
            return pa.array(np.arange(values.start, values.stop, values.step, dtype=np.int64))
        return pa.array(values)

    names = list(parts[0])
    try:
        table = pa.concat_tables([pa.table({name: column(p[name]) for name in names}) for p in parts],
                                 promote_options="permissive")  # (as one array of all rows would type them)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        import pandas as pd

        frame = pd.DataFrame({name: [v for p in parts for v in p[name]] for name in names})
        if batch_seq is not None:
            frame["batch_seq"] = batch_seq
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
        return
    if batch_seq is not None:
        table = table.append_column("batch_seq", pa.array(np.full(table.num_rows, batch_seq, dtype=np.int64)))
    if fmt == "csv":
        import pyarrow.csv as pcsv  # type: ignore[import-untyped]

        pcsv.write_csv(table, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)


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
