"""The batch scoring pipeline (``backends._batch.predict_file``): chunk N+1 is scored and sequenced ahead
while chunk N is written on the writer thread.

- A failure on the main thread while a chunk is in flight reports the rows actually recorded, that
  chunk included, so that scoring "only the remaining rows again" records none twice.
- Another append between two chunks costs at most one chunk sequenced again under the lock; the
  ledger verifies and every row's seq holds its decision.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pytest

import ledger._sequencer as sequencer
from backends._batch import predict_file
from backends.kinds import PredictionBatch
from backends.serving import Scorer, resolve
from ledger.api import Ledger
from ledger.errors import InputError, MlledgerError
from ledger.events import Event
from ledger.privacy import SubjectKeys
from policies._workspace import Workspace
from tests.integration.test_evidence_cli import applicants

pytestmark = pytest.mark.slow
CHUNK = 200


@pytest.fixture
def scoring(world: Path) -> Iterator[tuple[Ledger, Scorer, Path]]:
    frame = applicants(1000, 7).drop(columns=["approved", "sex", "race"])
    frame.to_csv(world / "score.csv", index=False)
    with Ledger.open(str(world / ".mlledger")) as led:
        ws = Workspace(led, world / ".mlledger")
        scorer = Scorer(ws, SubjectKeys(led, world / ".mlledger"), resolve(ws, "credit", "production"),
                        actor="batch@example.com")
        yield led, scorer, world / "score.csv"


def failing_on(scorer: Scorer, chunk: int, error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = scorer.predict_frame, [0]

    def predict_frame(inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == chunk:
            raise error
        return real(inputs)

    monkeypatch.setattr(scorer, "predict_frame", predict_frame)


@pytest.mark.parametrize(("chunk", "error"), [(1, InputError("model refused")), (2, InputError("model refused")),
                                              (4, ValueError("the engine broke"))])
def test_a_failure_reports_every_recorded_row_including_the_chunk_in_flight(
        scoring: tuple[Ledger, Scorer, Path], chunk: int, error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    led, scorer, source = scoring
    failing_on(scorer, chunk, error, monkeypatch)
    before = led.head_size()
    with pytest.raises(MlledgerError) as exc:
        predict_file(scorer, source, source.with_name("out.csv"), chunk_rows=CHUNK)
    recorded = led.head_size() - before
    assert recorded == (chunk - 1) * CHUNK  # every chunk before the failing one, the one in flight included
    message = str(exc.value)
    assert str(error) in message
    if recorded == 0:
        assert "already recorded" not in message
    else:
        m = re.search(r"the first ([\d,]+) rows were already recorded, at seqs (\d+)\.\.(\d+)", message)
        assert m is not None, message
        assert int(m[1].replace(",", "")) == recorded
        assert (int(m[2]), int(m[3])) == (before, before + recorded - 1)
    if isinstance(error, ValueError):
        assert "ValueError" in message and isinstance(exc.value.__cause__, ValueError)
    assert not source.with_name("out.csv").exists()
    assert led.verify(deep=True, workers=1).ok


@pytest.mark.parametrize("by", ["this ledger", "another connection"])
def test_another_append_between_chunks_costs_one_chunk_sequenced_again(
        scoring: tuple[Ledger, Scorer, Path], monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    led, scorer, source = scoring
    under_lock = [0]  # rows formatted on the writer thread, i.e. sequenced again under the write lock
    original = sequencer._format_rows

    def format_rows(item: Any, *args: Any, **kw: Any) -> None:
        if threading.current_thread().name.startswith("mlledger-batch"):
            under_lock[0] += len(item)
        original(item, *args, **kw)

    monkeypatch.setattr(sequencer, "_format_rows", format_rows)
    real, calls = scorer.predict_frame, [0]
    other = Event(PredictionBatch(model="credit@1", artifact_sha256="ab" * 32, stage="production", deployed_seq=1,
                                  count=1, root="cd" * 32, records_sha256="ef" * 32, automated_decision=True),
                  actor="other@example.com", subject="model:credit@1")

    def predict_frame(inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:  # after chunk 2 was sequenced ahead, before it or chunk 3 is written
            if by == "this ledger":
                led.append(other)
            else:  # a writer this process's sequencer knows nothing of
                with Ledger.open(str(source.parent / ".mlledger")) as second:
                    second.append(other)
        return real(inputs)

    monkeypatch.setattr(scorer, "predict_frame", predict_frame)
    before = led.head_size()
    result = predict_file(scorer, source, source.with_name("out.csv"), chunk_rows=CHUNK)
    assert result.rows == result.entries == 1000 and led.head_size() == before + 1001
    assert under_lock[0] <= CHUNK  # one chunk at most; the next ones build on where it went
    out = pd.read_csv(source.with_name("out.csv"))
    seqs = list(out["seq"])
    assert len(set(seqs)) == 1000 and seqs == sorted(seqs)
    kinds = {e.seq: e.kind for e in led.iter(start=before)}
    assert sorted(s for s, k in kinds.items() if k == "prediction.batch") == [
        s for s in range(before, before + 1001) if s not in set(seqs)]
    for i in (0, 399, 400, 999):
        entry = led.get(int(out["seq"][i]))
        assert entry.kind == "prediction.made" and entry.payload["input_commitment"] == out["input_commitment"][i]
    ts = [e.ts for e in led.iter(start=before)]
    assert ts == sorted(ts)
    assert led.verify(deep=True, workers=1).ok


def test_the_report_names_the_recorded_seqs_when_another_writer_appended_between_chunks(
        scoring: tuple[Ledger, Scorer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    led, scorer, source = scoring
    real, calls = scorer.predict_frame, [0]

    def predict_frame(inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            with Ledger.open(str(source.parent / ".mlledger")) as second:
                second.append(Event(PredictionBatch(model="credit@1", artifact_sha256="ab" * 32, stage="production",
                                                    deployed_seq=1, count=1, root="cd" * 32, records_sha256="ef" * 32,
                                                    automated_decision=True), actor="other@example.com"))
        if calls[0] == 5:
            raise InputError("model refused")
        return real(inputs)

    monkeypatch.setattr(scorer, "predict_frame", predict_frame)
    before = led.head_size()
    with pytest.raises(InputError) as exc:
        predict_file(scorer, source, source.with_name("out.csv"), chunk_rows=CHUNK)
    made = [e.seq for e in led.iter(start=before, kind="prediction.made")]
    assert len(made) == 4 * CHUNK
    runs, start = [], made[0]
    for a, b in zip(made, [*made[1:], None], strict=True):
        if b != a + 1:
            runs.append(f"{start}..{a}")
            start = b
    assert len(runs) == 2  # the other writer's entry lies between two chunks
    assert f"the first 800 rows were already recorded, at seqs {', '.join(runs)}, and no output" in str(exc.value)


def test_ctrl_c_keeps_its_meaning_and_carries_the_report(
        scoring: tuple[Ledger, Scorer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    led, scorer, source = scoring
    failing_on(scorer, 3, KeyboardInterrupt(), monkeypatch)
    before = led.head_size()
    with pytest.raises(KeyboardInterrupt) as exc:
        predict_file(scorer, source, source.with_name("out.csv"), chunk_rows=CHUNK)
    assert led.head_size() - before == 2 * CHUNK
    notes = getattr(exc.value, "__notes__", [])
    assert any(f"the first 400 rows were already recorded, at seqs {before}..{before + 399}" in n for n in notes), notes


def test_a_failure_after_every_row_was_recorded_says_not_to_score_again(
        scoring: tuple[Ledger, Scorer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import backends._batch as batch

    led, scorer, source = scoring

    def no_space(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "_write_output", no_space)
    before = led.head_size()
    with pytest.raises(MlledgerError) as exc:
        predict_file(scorer, source, source.with_name("out.csv"), chunk_rows=CHUNK)
    assert led.head_size() - before == 1000
    message = str(exc.value)
    assert "No space left on device" in message and "all 1,000 rows were recorded" in message
    assert "do not score the file again" in message and "remaining rows" not in message
