"""Bundle verification, step B5 and B8 (FORMAT.md 8, 9.3): the key history replayed from entry 0
and the ``key.*`` entries, which key may sign each checkpoint, and the witnesses' cosignatures.

Failures are raised as ``ledger._bundle_io._Fail`` with their FORMAT.md failure kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ledger._bundle_io import FailureKind, _entry_object, _Fail
from ledger.errors import InputError, IntegrityError, SignatureError
from ledger.keyhistory import KeyHistory
from ledger.note import Checkpoint, Note, Verifier, verify_cosignatures, verify_note


class _Keys(NamedTuple):
    history: KeyHistory
    compromised: dict[str, int]  # log key vkey -> seq of its key.revoked (compromised)
    revoked_witnesses: dict[str, int]  # witness vkey -> seq of its key.revoked


def _key_history(special: list[tuple[int, str, bytes]]) -> tuple[str, _Keys]:
    """Parse entry 0 and the key.* entries and replay them (FORMAT.md 9.3)."""
    history: KeyHistory | None = None
    compromised: dict[str, int] = {}
    witnesses: dict[str, int] = {}
    for seq, kind, line in special:
        try:
            payload = _entry_object(line)["payload"]
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Fail("invalid_entry", seq, f"entry {seq} ({kind}) is not strict JSON: {exc}") from None
        try:
            if history is None:
                history = KeyHistory.from_entries([(seq, kind, payload)])
                continue
            history.apply(seq, kind, payload)
            if kind == "key.revoked":
                vkey = str(payload["verifier_key"])
                if vkey in history.keys:
                    if payload["reason"] == "compromised":
                        compromised[vkey] = seq
                elif _is_witness(vkey):
                    witnesses.setdefault(vkey, seq)
        except IntegrityError as exc:
            kind_of: FailureKind = "revoked_key" if kind == "key.rotated" else "invalid_entry"
            text = str(exc) if str(exc).startswith("entry") else f"entry {seq}: {exc}"
            raise _Fail(kind_of, seq, text) from None
        except (KeyError, TypeError, InputError) as exc:
            raise _Fail("invalid_entry", seq, f"entry {seq} ({kind}): malformed payload ({exc})") from None
    assert history is not None
    return history.origin, _Keys(history, compromised, witnesses)


def _is_witness(vkey: str) -> bool:
    try:
        return Verifier.parse(vkey).kind == "cosignature"
    except InputError:
        return False  # the log may revoke a key it never used; the key history ignores it too


class _Opened(NamedTuple):
    checkpoint: Checkpoint
    note: bytes


def _authorise(cp: _Opened, keys: _Keys, anchors: Sequence[Verifier], size: int) -> str | None:
    """(B5) The vkey of the trusted key authorised to sign ``cp``; None when cp.size > size."""
    n, history = cp.checkpoint.size, keys.history
    trusted = history.trusted(anchors)
    candidates = [history.keys[v].verifier for v in trusted]
    candidates += [a for a in anchors if str(a) not in history.keys]
    try:
        signed = [str(v) for v in verify_note(cp.note, candidates)[1]]
    except (SignatureError, InputError) as exc:
        raise _Fail("untrusted_key", None, f"checkpoint {n}: {exc}") from None
    if n > size:
        return None  # beyond the entries: the signature is enough to prove truncation (B6)
    usable = [v for v in signed if v not in keys.compromised]
    try:
        key = history.signer_for(n, usable or signed)
    except SignatureError as exc:
        ended = [v for v in signed
                 if v in history.keys and (end := history.keys[v].valid_until) is not None and n > end]
        raise _Fail("revoked_key" if ended else "untrusted_key", None, str(exc)) from None
    if key.vkey in keys.compromised:
        raise _Fail("revoked_key", keys.compromised[key.vkey], f"checkpoint {n} is signed only by "
                    f"{key.vkey}, which entry {keys.compromised[key.vkey]} revoked as compromised")
    return key.vkey


def _cosigned(note: bytes, n: int, witnesses: Sequence[Verifier], quorum: int, keys: _Keys) -> list[str]:
    """(B8) The trusted, unrevoked witnesses that validly cosigned; at least ``quorum``."""
    active = [w for w in witnesses if str(w) not in keys.revoked_witnesses]
    present = {(s.name, s.key_id) for s in Note.parse(note).signatures}
    good, problems = [], []
    for w in witnesses:
        if w not in active:
            problems.append(f"{w.name} was revoked at entry {keys.revoked_witnesses[str(w)]}")
        elif (w.name, w.key_id) not in present:
            problems.append(f"{w.name} did not cosign")
        else:
            try:
                verify_cosignatures(note, [w], 1)
                good.append(w.name)
            except SignatureError:
                problems.append(f"{w.name}'s cosignature is invalid")
    if len(good) < quorum:
        raise _Fail("quorum_not_met", None, f"checkpoint {n} has {len(good)} of the {quorum} witness "
                    f"cosignatures required: {'; '.join(problems)}")
    return good
