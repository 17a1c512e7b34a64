"""Batch records (FORMAT.md 3.15) spliced from pre-encoded pieces are the bytes ``encode`` gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends._batch_encode import record_lines
from backends.serving import recorded_score
from ledger.canonical import encode

labels = st.one_of(st.booleans(), st.integers(-(2**53 - 1), 2**53 - 1),
                   st.sampled_from(["approved", "déclin\"é", "a\nb"]))
scores = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e-300, 1e-300),
                   st.sampled_from([0.0, -0.0, 1.0, 0.005, 1e16, 123456789.125]))
rows = st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.sampled_from(["dk-0a1b", "sk-ff\u00e9"]),
                          labels, scores), min_size=1, max_size=20)


@given(rows, st.integers(0, 2**40))
def test_spliced_records_equal_their_canonical_encoding(cases: list[tuple[bytes, str, object, object]],
                                                        first: int) -> None:
    part = {"input_commitment": [c.hex() for c, _k, _l, _s in cases], "key_id": [k for _c, k, _l, _s in cases],
            "label": [lab for _c, _k, lab, _s in cases], "score": [s for _c, _k, _l, s in cases],
            "row": list(range(first, first + len(cases)))}
    want = [encode({"input_commitment": c.hex(), "key_id": k, "label": lab, "row": first + i,
                    "score": recorded_score(s)})  # type: ignore[arg-type]
            for i, (c, k, lab, s) in enumerate(cases)]
    assert record_lines(part) == want
