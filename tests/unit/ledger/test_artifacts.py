"""The content-addressed artifact store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ledger.artifacts import ArtifactStore
from ledger.errors import InputError, IntegrityError


def test_put_returns_the_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"model bytes")
    assert digest == hashlib.sha256(b"model bytes").hexdigest()
    assert store.get(digest) == b"model bytes" and digest in store
    assert store.put(b"model bytes") == digest  # idempotent


def test_a_modified_artifact_is_refused_with_both_hashes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"original")
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=f"{hashlib.sha256(b'tampered').hexdigest()}, not {digest}"):
        store.get(digest)


def test_a_missing_artifact_and_a_bad_digest_are_input_errors(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(InputError, match="is not in the store"):
        store.get("0" * 64)
    with pytest.raises(InputError, match="not a lowercase SHA-256"):
        store.path("../../etc/passwd")


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"x" * 100_000)
    assert [p.name for p in store.path(digest).parent.iterdir()] == [digest]
