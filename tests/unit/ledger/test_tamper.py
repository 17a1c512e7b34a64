"""The chain's promise (Hypothesis): appends verify; tampering fails at the right seq.

What this layer catches without signed checkpoints: changed bytes, deleted rows
(except the last), swapped rows, inserted rows, and rewrites with a recomputed
leaf hash anywhere but the tail. A rewritten or removed *tail* needs a signed
checkpoint to be caught (the verifiability layer); the last test pins that limit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api import Ledger
from tests.conftest import make_ledger
from tests.helpers import dataset_event, policy_event
from tests.tamper import Tamperer

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def fresh(n: int) -> Iterator[tuple[Ledger, Tamperer]]:
    """A ledger with ``n`` entries (genesis included), in batches of uneven size."""
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'l.db'}"
        led = make_ledger(url)
        events = [policy_event(i) if i % 3 else dataset_event(i) for i in range(n - 1)]
        for at in range(0, len(events), 7):
            led.append_many(events[at : at + 7])
        tam = Tamperer(url)
        try:
            yield led, tam
        finally:
            tam.close()
            led.close()


@SETTINGS
@given(n=st.integers(1, 70))
def test_any_sequence_of_appends_verifies(n: int) -> None:
    with fresh(n) as (led, _):
        result = led.verify()
        assert result.ok and result.size == n


@SETTINGS
@given(data=st.data(), n=st.integers(2, 40))
def test_changed_bytes_fail_at_that_seq(data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(0, n - 1))
    with fresh(n) as (led, tam):
        tam.modify_byte(k)
        result = led.verify()
        assert not result.ok and result.bad_seq == k
        assert "modified entry" in (result.reason or "")


@SETTINGS
@given(data=st.data(), n=st.integers(3, 40))
def test_a_deleted_row_fails_at_its_seq(data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(0, n - 2))
    with fresh(n) as (led, tam):
        tam.delete(k)
        result = led.verify()
        assert not result.ok and result.bad_seq == k
        assert f"entry {k} is missing" in (result.reason or "")


@SETTINGS
@given(data=st.data(), n=st.integers(3, 40))
def test_swapped_rows_fail_at_the_first_of_them(data: st.DataObject, n: int) -> None:
    a = data.draw(st.integers(0, n - 2))
    b = data.draw(st.integers(a + 1, n - 1))
    with fresh(n) as (led, tam):
        tam.swap(a, b)
        result = led.verify()
        assert not result.ok and result.bad_seq == a


@SETTINGS
@given(data=st.data(), n=st.integers(2, 40))
def test_an_inserted_row_fails_where_the_chain_breaks(data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(1, n - 1))
    with fresh(n) as (led, tam):
        tam.insert_forged(k)
        result = led.verify()
        assert not result.ok and result.bad_seq == k + 1


@SETTINGS
@given(data=st.data(), n=st.integers(3, 40))
def test_a_rewrite_with_recomputed_hash_fails_at_the_next_link(data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(0, n - 2))
    with fresh(n) as (led, tam):
        tam.rewrite_recomputed(k)
        result = led.verify()
        assert not result.ok and result.bad_seq == k + 1
        assert "prev does not match" in (result.reason or "")


def test_a_rewritten_tail_is_beyond_this_layer_until_checkpoints() -> None:
    """Pins the limit: only a signed checkpoint (or a stored Merkle node) catches it."""
    with fresh(6) as (led, tam):
        tam.rewrite_recomputed(5)
        assert led.verify().ok


def test_a_rewritten_entry_under_a_stored_merkle_node_is_caught() -> None:
    """Once the tail closes a complete subtree, its stored node no longer matches."""
    with fresh(32) as (led, tam):
        tam.rewrite_recomputed(31)  # closes the level-5 subtree [0, 32): its node disagrees
        result = led.verify()
        assert not result.ok and "Merkle node" in (result.reason or "")
