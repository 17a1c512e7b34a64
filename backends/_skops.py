"""Deterministic skops bytes, and loading that trusts only what skops trusts by default.

``skops.io.dumps`` is not byte-stable: it names array files and memo ids after
``id(obj)`` and stamps zip entries with the current time. ``canonical_dumps`` rewrites
the archive so the same fitted object gives the same bytes:
(1) every id (``__id__`` values and the ``.npy`` member names) is renumbered in order of
    first appearance in ``schema.json``, keeping shared references shared;
(2) members are written in a fixed order with a fixed timestamp and permissions.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from ledger.errors import InputError

__all__ = ["TREE_TYPES", "canonical_dumps", "safe_loads"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _renumber(state: Any, ids: dict[str, str]) -> Any:
    if isinstance(state, dict):
        out: dict[str, Any] = {}
        for key, value in state.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = int(ids.setdefault(str(value), str(len(ids))))
            elif key == "file" and isinstance(value, str) and value.endswith(".npy"):
                out[key] = ids.setdefault(value[:-4], str(len(ids))) + ".npy"
            else:
                out[key] = _renumber(value, ids)
        return out
    if isinstance(state, list):
        return [_renumber(v, ids) for v in state]
    return state


def canonical_dumps(obj: Any) -> bytes:
    import skops.io as sio  # type: ignore[import-untyped]

    raw = sio.dumps(obj)
    ids: dict[str, str] = {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as zin:
        schema = _renumber(json.loads(zin.read("schema.json")), ids)  # step (1)
        members = {"schema.json": json.dumps(schema, indent=2, sort_keys=True).encode()}
        for info in zin.infolist():
            if info.filename == "schema.json":
                continue
            stem, dot, ext = info.filename.rpartition(".")
            if stem not in ids:
                raise ValueError(f"skops archive member {info.filename} is not referenced by schema.json")
            members[f"{ids[stem]}{dot}{ext}"] = zin.read(info)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout:  # step (2)
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, members[name])
    return out.getvalue()


#: Types the allow-listed tree estimators (``backends.spec.ESTIMATORS``) need beyond skops'
#: defaults. Named one by one: nothing else untrusted is ever loaded.
from policies._workspace import TRUSTED_TREE_TYPES as TREE_TYPES  # noqa: E402  (one list, in policies)


def safe_loads(data: bytes, what: str, *, trusted: tuple[str, ...] = ()) -> Any:
    """Load skops bytes, refusing any type skops does not trust by default (as Workspace.load_model)
    except the ones named in ``trusted``."""
    import skops.io as sio

    try:
        found = list(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise InputError(f"{what}: not a readable skops artifact ({type(exc).__name__}: {exc})") from None
    refused = [t for t in found if t not in trusted]
    if refused:
        raise InputError(f"{what}: the artifact contains types skops does not trust by default "
                         f"({', '.join(refused)}); refusing to load it")
    return sio.loads(data, trusted=found or None)
