"""Event model: the strict envelope callers append, and the payload registry.

Every kind (DESIGN.md section 3) has one payload model. Models are strict, frozen
and forbid extra fields; floats must be finite. An unknown kind or an invalid
payload raises ``InputError`` naming the field, before anything is written.

Later issues add kinds with ``@register``; a kind is registered exactly once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
)

from ledger.canonical import MAX_NAME_BYTES, EntryPrefix, encode, prefix
from ledger.errors import InputError

__all__ = [
    "KIND_PATTERN",
    "Event",
    "Payload",
    "Sha256Hex",
    "check_for",
    "describe_validation_error",
    "guards",
    "kinds",
    "payload_model",
    "register",
    "register_check",
    "register_guard",
]

KIND_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lowercase hex of a SHA-256 digest."""


class Payload(BaseModel):
    """Base of every payload model. Subclasses set ``KIND``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    KIND: ClassVar[str] = ""
    #: Subject to the access guards (``register_guard``): who may write it, and their signature.
    GOVERNED: ClassVar[bool] = False
    #: Optional fields left out of the entry while None, so that entries written before a field
    #: existed keep their bytes (and leaf hashes).
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_when_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self.OMIT_WHEN_NONE:
            if data.get(key) is None:
                data.pop(key, None)
        return data


_P = TypeVar("_P", bound=type[Payload])
_REGISTRY: dict[str, type[Payload]] = {}


def register(kind: str) -> Callable[[_P], _P]:
    """Class decorator: make ``cls`` the payload model of ``kind``."""
    if not re.match(KIND_PATTERN, kind):
        raise ValueError(f"kind {kind!r} does not match {KIND_PATTERN}")

    def deco(cls: _P) -> _P:
        if kind in _REGISTRY:
            raise ValueError(f"kind {kind!r} is already registered to {_REGISTRY[kind].__name__}")
        cls.KIND = kind
        _REGISTRY[kind] = cls
        return cls

    return deco


#: Kinds whose entries are checked against the ledger inside the sequencing transaction
#: (before anything is written). ``check(view, seq, actor, payload)`` raises ``InputError``.
_CHECKS: dict[str, Callable[..., None]] = {}
_CHECK_READS: dict[str, tuple[str, ...]] = {}


def register_check(kind: str, *, reads: Sequence[str] | None = None
                   ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: run ``fn(view, seq, actor, payload)`` before an entry of ``kind`` is written.

    ``view`` is a ``ledger.view.LedgerView`` of the committed ledger in the same
    transaction. A check that raises refuses the whole append; nothing is written.

    ``reads``: the payload fields the check's outcome depends on, when it depends on nothing else
    but them, the entry's actor and ledger state that entries of ``kind`` never change. Many
    entries of ``kind`` at once (``ledger.entry_rows.EntryRows``) are then checked once per
    distinct value of those fields, not once per entry.
    """

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        if kind in _CHECKS:
            raise ValueError(f"kind {kind!r} already has a check")
        _CHECKS[kind] = fn
        if reads is not None:
            _CHECK_READS[kind] = tuple(reads)
        return fn

    return deco


def check_for(kind: str) -> Callable[..., None] | None:
    return _CHECKS.get(kind)


_MANY_CHECKS: dict[str, Callable[..., None]] = {}


def register_many_check(kind: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: ``fn(view, seq, actor, payloads)`` checks many entries of ``kind`` at once, as its
    check (``register_check``, which must declare ``reads``) would check each, raising what the
    check would raise for the first refused one. ``EntryRows`` with more than one distinct value of
    the fields read are checked by it, at their first seq, with one payload per distinct value."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        if kind not in _CHECK_READS:
            raise ValueError(f"kind {kind!r}: register its check, with reads=, before a check of many")
        _MANY_CHECKS[kind] = fn
        return fn

    return deco


def many_check_for(kind: str) -> Callable[..., None] | None:
    return _MANY_CHECKS.get(kind)


def check_reads(kind: str) -> tuple[str, ...] | None:
    """The payload fields ``kind``'s check declared it reads (``register_check``), if it did."""
    return _CHECK_READS.get(kind)


#: Access guards (issue 12): ``guard(view, seq, kind, actor, subject, payload)`` runs before an
#: entry of a ``GOVERNED`` kind is written, inside the sequencing transaction; raising refuses it.
_GUARDS: list[Callable[..., None]] = []


def register_guard(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorator: run ``fn`` before every entry of a governed kind is written."""
    if fn not in _GUARDS:
        _GUARDS.append(fn)
    return fn


def guards() -> list[Callable[..., None]]:
    """The access guards, once the kind plugins (which register them) are loaded."""
    _load_plugins()
    return list(_GUARDS)


_PLUGINS_LOADED = False


def _load_plugins() -> None:
    """Import the modules named in the ``mlledger.kinds`` entry points (they register kinds).

    A plugin that fails to import is an error naming it, never a warning (fail closed).
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    from importlib.metadata import entry_points

    _PLUGINS_LOADED = True
    import ledger.kinds  # noqa: F401  (the core kinds)

    for ep in entry_points(group="mlledger.kinds"):
        try:
            ep.load()
        except Exception as exc:
            _PLUGINS_LOADED = False
            raise InputError(f"event-kind plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from None


def kinds() -> list[str]:
    """Every registered kind, sorted (including those of installed plugins)."""
    _load_plugins()
    return sorted(_REGISTRY)


def payload_model(kind: str) -> type[Payload]:
    """The payload model of ``kind``; ``InputError`` for an unknown kind."""
    model = _REGISTRY.get(kind)
    if model is None:
        _load_plugins()
        model = _REGISTRY.get(kind)
    if model is None:
        raise InputError(f"kind: unknown event kind {kind!r}; known kinds: {', '.join(kinds())}")
    return model


def describe_validation_error(exc: ValidationError, where: str) -> str:
    """One line per problem: ``where.field: message``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{where}.{loc}" if loc else where
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


class Event:
    """An event to append: kind, actor, subject and a validated payload.

    The envelope fields ``v``, ``seq``, ``prev`` and ``ts`` are assigned by the
    ledger when the event is sequenced.
    """

    __slots__ = ("actor", "payload", "subject")

    def __init__(self, payload: Payload, *, actor: str, subject: str | None = None) -> None:
        if not isinstance(payload, Payload) or not payload.KIND:
            raise TypeError("payload must be an instance of a registered Payload model")
        check_name(actor, "actor")
        if subject is not None:
            check_name(subject, "subject")
        self.payload = payload
        self.actor = actor
        self.subject = subject

    @property
    def kind(self) -> str:
        return self.payload.KIND

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "event", actor: str | None = None) -> Event:
        """Validate a decoded JSON event ``{"kind", "actor", "subject", "payload"}``.

        ``actor`` is used when the object has none.
        """
        if not isinstance(obj, Mapping):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        extra = set(obj) - {"kind", "actor", "subject", "payload"}
        if extra:
            raise InputError(
                f"{where}: unexpected field(s) {', '.join(sorted(extra))}; an event has "
                "kind, actor, subject and payload (seq, prev and ts are assigned by the ledger)"
            )
        kind = obj.get("kind")
        if not isinstance(kind, str):
            raise InputError(f"{where}.kind: required, a string such as 'dataset.registered'")
        try:
            model = payload_model(kind)
        except InputError as exc:
            raise InputError(f"{where}.{exc}") from None
        who = obj.get("actor", actor)
        if not isinstance(who, str):
            raise InputError(f"{where}.actor: required, a string such as 'alice@example.com'")
        subject = obj.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise InputError(f"{where}.subject: must be a string or null")
        body = obj.get("payload")
        if not isinstance(body, Mapping):
            raise InputError(f"{where}.payload: required, a JSON object")
        try:
            payload = model.model_validate(body)
        except ValidationError as exc:
            raise InputError(describe_validation_error(exc, f"{where}.payload")) from None
        try:
            return cls(payload, actor=who, subject=subject)
        except InputError as exc:
            raise InputError(f"{where}.{exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "actor": self.actor,
            "subject": self.subject,
            "payload": self.payload.model_dump(mode="json"),
        }

    def prepare(self) -> EntryPrefix:
        """Encode everything but the sequencing fields (done outside the write lock)."""
        kind = self.payload.KIND
        data = encode(self.payload.model_dump(mode="json"), where="payload", owned=True)
        pre = prefix(kind, self.actor, self.subject, data)
        if kind in _CHECKS or kind.startswith("key.") or self.payload.GOVERNED:
            # the values the entry will hold, as a reader of the stored bytes sees them
            pre.payload = orjson.loads(data)
            pre.actor = self.actor
        return pre

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, actor={self.actor!r}, subject={self.subject!r})"


_NAME_RE: Final = re.compile(r"[^\x00-\x1f\x7f]+")


def check_name(value: object, field: str) -> None:
    """Refuse an actor or subject that an ``Event`` would refuse (not a non-empty string without
    control characters, or too long)."""
    if not isinstance(value, str):
        raise InputError(f"{field}: must be a string, got {type(value).__name__}")
    problem = _name_problem(value)
    if problem:
        raise InputError(f"{field}: {problem}")


@functools.lru_cache(maxsize=4096)
def _name_problem(value: str) -> str:
    """Why ``value`` is not a valid actor or subject ('' if it is); cached, as names repeat."""
    if not _NAME_RE.fullmatch(value):
        return f"must be non-empty, without control characters (got {value!r:.80})"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return ""
