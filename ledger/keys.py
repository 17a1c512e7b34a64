"""Key files: Ed25519 private keys as PEM, with their C2SP verifier key beside them.

``<dir>/<stem>.pem`` holds the PKCS#8 private key, encrypted with
``MLLEDGER_KEY_PASSPHRASE`` when that is set, and always written with mode 0600.
``<dir>/<stem>.vkey`` holds the public verifier key text, which also names the key.
Private key material is never printed, logged or put in an exception message.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import InputError
from ledger.note import Signer, Verifier

__all__ = ["PASSPHRASE_ENV", "check_private_file", "generate", "load_private_key", "load_signer", "load_verifier",
           "new_signer_files", "save_signer", "unencrypted_warning", "write_private_pem"]

PASSPHRASE_ENV: Final = "MLLEDGER_KEY_PASSPHRASE"  # noqa: S105 - a variable name


def generate(name: str, *, cosignature: bool = False) -> Signer:
    """A new Ed25519 key named ``name`` (a log's key is named by its origin)."""
    return Signer(name, Ed25519PrivateKey.generate(), "cosignature" if cosignature else "ed25519")


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def write_private_pem(key: Ed25519PrivateKey, path: Path) -> bool:
    """Write PKCS#8 PEM with mode 0600 (encrypted when the passphrase is set); refuse to overwrite.

    Returns whether it is encrypted.
    """
    secret = _passphrase()
    algorithm: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return secret is not None


def unencrypted_warning(pem: Path) -> str:
    return f"warning: {pem} is not encrypted (mode 0600); set {PASSPHRASE_ENV} to encrypt keys"


def save_signer(signer: Signer, directory: Path, stem: str) -> tuple[Path, bool]:
    """Write ``stem.pem`` (0600) and ``stem.vkey``; refuse to overwrite.

    Returns the PEM path and whether it is encrypted.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pem_path, vkey_path = directory / f"{stem}.pem", directory / f"{stem}.vkey"
    for path in (pem_path, vkey_path):
        if path.exists():
            raise InputError(f"{path} already exists; refusing to overwrite a key")
    encrypted = write_private_pem(signer.private_key, pem_path)
    vkey_path.write_text(signer.verifier_key + "\n", encoding="utf-8")
    return pem_path, encrypted


@contextmanager
def new_signer_files(signer: Signer, directory: Path, stem: str) -> Iterator[tuple[Path, bool]]:
    """``save_signer``, removing both files again if the block that follows fails."""
    pem, encrypted = save_signer(signer, directory, stem)
    try:
        yield pem, encrypted
    except BaseException:
        pem.unlink(missing_ok=True)
        pem.with_suffix(".vkey").unlink(missing_ok=True)
        raise


def load_verifier(path: Path) -> Verifier:
    """Read a ``.vkey`` file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(4096)
    except OSError as exc:
        raise InputError(f"cannot read verifier key {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in raw:
        raise InputError(f"{path} is a private key, not a .vkey: give the public .vkey file "
                         "(and keep the private key secret)")
    text = raw.decode("utf-8", "replace").strip()
    try:
        return Verifier.parse(text)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def check_private_file(path: Path) -> None:
    """Refuse a private key file that its group or others may read or write (issue 12)."""
    read_private_file(path)


def read_private_file(path: Path) -> bytes:
    """A private key file's bytes, checked and read through one descriptor (no swap between the
    check and the read): not a symlink, owned by this user, mode 0600 or stricter."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise InputError(f"cannot read private key {path}: {why}") from None
    try:
        st = os.fstat(fd)
        if os.name == "posix" and st.st_mode & 0o077:
            raise InputError(f"{path} is readable or writable by group or others (mode {st.st_mode & 0o777:04o}); "
                             f"refusing to use it: run 'chmod 600 {path}'")
        if os.name == "posix" and st.st_uid != os.geteuid():
            raise InputError(f"{path} belongs to another user (uid {st.st_uid}); refusing to use it")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def load_private_key(pem_path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM; decrypted with the passphrase when set), mode 0600 only."""
    data = read_private_file(pem_path)
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    try:  # an unencrypted key loads without the passphrase even when one is set (doctor reports it)
        key = serialization.load_pem_private_key(data, password=_passphrase() if encrypted else None)
    except TypeError:
        raise InputError(f"{pem_path} is encrypted: set {PASSPHRASE_ENV} to its passphrase") from None
    except ValueError:
        raise InputError(f"{pem_path} could not be decrypted or is not a PEM private key; "
                         f"check {PASSPHRASE_ENV}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{pem_path} is not an Ed25519 key")
    return key


def load_signer(pem_path: Path, vkey_path: Path | None = None) -> Signer:
    """Read a private key and the name and kind from its ``.vkey`` file."""
    vkey_path = vkey_path or pem_path.with_suffix(".vkey")
    verifier = load_verifier(vkey_path)
    data = read_private_file(pem_path)
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase())
    except TypeError:
        raise InputError(
            f"{pem_path} is encrypted: set {PASSPHRASE_ENV} to its passphrase"
        ) from None
    except ValueError:
        raise InputError(
            f"{pem_path} could not be decrypted or is not a PEM private key; "
            f"check {PASSPHRASE_ENV}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{pem_path} is not an Ed25519 key")
    signer = Signer(verifier.name, key, verifier.kind)
    if signer.public_key != verifier.public_key:
        raise InputError(f"{pem_path} does not match the public key in {vkey_path}")
    return signer
