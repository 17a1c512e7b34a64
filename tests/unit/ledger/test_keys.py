"""Private key files: read only when private to their owner, and never through a symbolic link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger import keys
from ledger.errors import InputError


@pytest.fixture
def pem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLLEDGER_KEY_PASSPHRASE", raising=False)
    signer = keys.generate("example.com/keys")
    with keys.new_signer_files(signer, tmp_path / "k", "log") as (path, _encrypted):
        pass
    return Path(path)


def test_a_private_key_file_loads(pem: Path) -> None:
    assert keys.load_signer(pem).verifier_key.startswith("example.com/keys+")
    assert oct(pem.stat().st_mode & 0o777) == "0o600"


def test_a_key_readable_by_others_is_refused(pem: Path) -> None:
    pem.chmod(0o644)
    with pytest.raises(InputError, match=r"readable or writable by group or others \(mode 0644\)"):
        keys.load_signer(pem)
    with pytest.raises(InputError, match="mode 0644"):
        keys.load_private_key(pem)


def test_a_key_behind_a_symbolic_link_is_refused(pem: Path, tmp_path: Path) -> None:
    link = tmp_path / "k" / "link.pem"
    os.symlink(pem, link)
    (tmp_path / "k" / "link.vkey").write_bytes(pem.with_suffix(".vkey").read_bytes())
    with pytest.raises(InputError, match="it is a symbolic link"):
        keys.load_signer(link)
    with pytest.raises(InputError, match="it is a symbolic link"):
        keys.load_private_key(link)
