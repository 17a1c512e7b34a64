"""Built-in policy packs: YAML rule sets that cite their sources, shipped as package data.

A policy names them in ``extends``. A pack cannot know a model's sensitive features, so its
fairness rules use ``feature: "*"``: every feature and intersection in the evidence, which
must cover every sensitive feature the evaluation dataset declares.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from ledger.errors import InputError
from policies._policy import PACK_NAMES, Pack, parse_pack

__all__ = ["PACKS", "load_pack", "pack_sha256"]

#: The names of the built-in packs.
PACKS: tuple[str, ...] = PACK_NAMES


@cache
def _pack_bytes(name: str) -> bytes:
    if name not in PACKS:
        raise InputError(f"unknown pack {name!r}; the packs are {', '.join(PACKS)}")
    return resources.files(__name__).joinpath(f"{name}.yaml").read_bytes()


@cache
def load_pack(name: str) -> Pack:
    """The pack called ``name``; ``InputError`` for an unknown name."""
    pack = parse_pack(_pack_bytes(name), f"pack {name}")
    if pack.pack != name:  # pragma: no cover - guards the shipped files
        raise InputError(f"pack file {name}.yaml declares pack {pack.pack!r}")
    return pack


def pack_sha256(name: str) -> str:
    """SHA-256 of the pack file's bytes (record it beside the policy hash)."""
    return hashlib.sha256(_pack_bytes(name)).hexdigest()
