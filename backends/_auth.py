"""Bearer-token authentication of the serving API (issue 12).

Tokens are issued with ``mlledger token issue``; the ledger holds only their SHA-256
(``token.issued``), their identity, scopes and expiry, and their revocations
(``token.revoked``). The server re-reads them whenever the ledger grows, so a revocation
takes effect within ``REFRESH_S``.

1. ``/healthz`` is open; every other endpoint needs a token with its scope.
2. A missing, malformed, unknown, expired or revoked token gets 401; a valid token without
   the endpoint's scope gets 403. The body never says which (no detail that leaks).
3. A refusal writes nothing but a count: one ``access.denied`` entry per window (and per
   worker) with the counts by reason and endpoint, written when the window closes.
4. The token's identity is the actor of the entries the request writes. A scope counts only while
   that identity holds a role for it (``policies._access.SCOPE_ROLES``): revoking the role revokes
   the scope of every token of the identity.

Authentication is on when ``mode`` is ``required``, or ``auto`` and the ledger has issued a
token or is access-controlled; ``unsafe-off`` turns it off (logged loudly).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from fastapi import HTTPException, Request

from ledger.api import Ledger
from ledger.canonical import format_ts, parse_ts
from ledger.errors import MlledgerError
from ledger.events import Event

__all__ = ["AuthMode", "TokenAuth"]

log = logging.getLogger("mlledger.serve")

AuthMode = Literal["auto", "required", "unsafe-off"]
REFRESH_S = 0.5
_UNAUTHORIZED = HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
_FORBIDDEN = HTTPException(403, "forbidden")
_Token = tuple[str, frozenset[str], int]  # identity, scopes, expiry (unix microseconds)


class TokenAuth:
    """The token table of one ledger, and the refusal counter."""

    def __init__(self, ledger: Ledger, *, mode: AuthMode, actor: str, window_s: int = 60) -> None:
        self.ledger, self.mode, self.actor, self.window_s = ledger, mode, actor, window_s
        self._lock = threading.Lock()
        self._size = -1
        self._checked = 0.0
        self._tokens: dict[str, _Token] = {}  # sha256 -> identity, scopes, expiry
        self._revoked: set[str] = set()
        self.enabled = mode == "required"
        self._window: int | None = None  # start (unix seconds) of the window being counted
        self._counts: Counter[str] = Counter()
        self._endpoints: Counter[str] = Counter()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="mlledger-access-denied", daemon=True)
        self.refresh(force=True)
        if mode == "unsafe-off" and any(True for _ in ledger.iter(kind=["access.enabled"], limit=1)):
            from ledger.errors import InputError

            raise InputError("--auth unsafe-off is refused: this ledger is access-controlled, so every decision "
                             "and review must be made by an authenticated identity (issue tokens instead)")

    # -- the token table ------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        size = self.ledger.head_size()
        if size == self._size:
            return
        tokens: dict[str, _Token] = {}
        for e in self.ledger.iter(kind=["token.issued"]):
            p = e.payload
            tokens[p["token_sha256"]] = (p["identity"], frozenset(p["scopes"]), parse_ts(p["expires_at"]))
        revoked = {e.payload["token_sha256"] for e in self.ledger.iter(kind=["token.revoked"])}
        if tokens:
            tokens = self._entitled(tokens)
        controlled = any(True for _ in self.ledger.iter(kind=["access.enabled"], limit=1))
        with self._lock:
            self._tokens, self._revoked, self._size = tokens, revoked, size
            if self.mode == "auto":
                self.enabled = bool(tokens) or controlled

    def _entitled(self, tokens: dict[str, _Token]) -> dict[str, _Token]:
        """Each token keeps only the scopes its identity still holds a role for (a revoked role counts now)."""
        from policies._access import SCOPE_ROLES
        from policies._governance import identities

        with self.ledger.view() as view:
            held = {name: ident.roles for name, ident in identities(view).items()}
        return {digest: (who, frozenset(s for s in scopes if held.get(who, frozenset()) & SCOPE_ROLES[s]), exp)
                for digest, (who, scopes, exp) in tokens.items()}

    def identify(self, authorization: str | None, scope: str, endpoint: str) -> str | None:
        """The token's identity; None when authentication is off. Raises 401 or 403."""
        self.refresh()
        if not self.enabled:
            return None
        scheme, _, value = (authorization or "").partition(" ")
        if not value or scheme.lower() != "bearer":
            self._deny("missing", endpoint)
        digest = hashlib.sha256(value.strip().encode()).hexdigest()
        with self._lock:
            found = self._tokens.get(digest)
            revoked = digest in self._revoked
        if found is None:
            self._deny("invalid", endpoint)
        assert found is not None
        identity, scopes, expires_us = found
        if revoked:
            self._deny("revoked", endpoint)
        if expires_us <= time.time_ns() // 1000:
            self._deny("expired", endpoint)
        if scope not in scopes:
            self._deny("scope", endpoint)
        return identity

    def dependency(self, scope: str, endpoint: str) -> Callable[[Request], str | None]:
        """A FastAPI dependency: the identity of the request's token (see ``identify``)."""

        def who(request: Request) -> str | None:
            return self.identify(request.headers.get("authorization"), scope, endpoint)

        return who

    # -- refusals ---------------------------------------------------------------------------

    def _deny(self, reason: str, endpoint: str) -> Any:
        window = int(time.time()) // self.window_s * self.window_s
        with self._lock:
            if self._window is not None and self._window != window:
                self._flush_locked()
            self._window = window
            self._counts[reason] += 1
            self._endpoints[endpoint] += 1
        raise _FORBIDDEN if reason == "scope" else _UNAUTHORIZED

    def _flush_locked(self) -> None:
        if self._window is None or not self._counts:
            return
        from policies._access_kinds import AccessDenied

        payload = AccessDenied(window_start=format_ts(self._window * 1_000_000), window_s=self.window_s,
                               counts=dict(self._counts), endpoints=dict(self._endpoints))  # type: ignore[arg-type]
        self._window, self._counts, self._endpoints = None, Counter(), Counter()
        try:
            self.ledger.append(Event(payload, actor=self.actor, subject=None))
        except MlledgerError as exc:  # the counts are lost, the refusals stood
            log.warning("access.denied could not be recorded: %s", exc)

    def flush(self, *, closing: bool = False) -> None:
        """Record the counts of a window that has closed (or of any window, when ``closing``)."""
        with self._lock:
            current = int(time.time()) // self.window_s * self.window_s
            if closing or (self._window is not None and self._window != current):
                self._flush_locked()

    def _flush_loop(self) -> None:
        while not self._stop.wait(min(self.window_s, 5)):
            self.flush()

    def start(self) -> None:
        if self.mode == "unsafe-off":
            log.warning("UNSAFE: serving without authentication (--auth unsafe-off); anyone who can reach "
                        "this port can score and review")
        elif not self.enabled:
            log.warning("serving WITHOUT authentication: this ledger has issued no token and is not "
                        "access-controlled (issue one with 'mlledger token issue', or --auth required)")
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=5)
        self.flush(closing=True)
