"""Alert notification: a signed webhook and a command hook.

Webhook: ``POST`` of the alert as canonical JSON, with ``X-Mlledger-Timestamp: <unix seconds>`` and
``X-Mlledger-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` (exactly the bytes
sent) under a secret read from an environment variable (never from the command line); a receiver
refuses old timestamps, so a captured request cannot be replayed later. Errors name the webhook by
scheme and host only (a path may carry a token). A connection error or a 5xx is retried with
exponential backoff, at most ``attempts`` times; a 4xx is not retried.

Command hook: the alert JSON on stdin, ``MLLEDGER_ALERT_SEQ`` in an environment that holds only
``PATH``, ``HOME``, ``LANG``, ``LC_ALL`` and ``TZ`` besides (no secret of ours); a non-zero exit or a
timeout is a failure.

The alert is on the ledger before anyone is notified; a notification that fails raises
``NotifyError`` naming the target and what happened, and the alert stays recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ledger.errors import BackendError, InputError

__all__ = ["SIGNATURE_HEADER", "Notifier", "NotifyError", "sign"]

SIGNATURE_HEADER = "X-Mlledger-Signature"
TIMESTAMP_HEADER = "X-Mlledger-Timestamp"
HOOK_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class NotifyError(BackendError):
    """An alert was recorded but could not be delivered."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value: HMAC-SHA256 over ``<timestamp>.<body>``."""
    return "sha256=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…" if parts.netloc else "(not a URL)"


@dataclass(frozen=True)
class Notifier:
    webhook: str | None = None
    secret_env: str = "MLLEDGER_WEBHOOK_SECRET"  # noqa: S105 - the name of the variable, not a secret
    command: str | None = None
    attempts: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def check(self) -> None:
        """Refuse a bad configuration before anything is computed or written."""
        if self.webhook is not None:
            parts = urlsplit(self.webhook)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InputError(f"--webhook {_redacted(self.webhook)}: give an http(s) URL")
            if not os.environ.get(self.secret_env):
                raise InputError(f"--webhook needs the signing secret in ${self.secret_env}; set it (the secret is "
                                 "never given on the command line)")
        if self.command is not None and not shlex.split(self.command):
            raise InputError("--command is empty")
        if self.attempts < 1:
            raise InputError("--webhook-attempts must be at least 1")

    def notify(self, seq: int, alert: dict[str, Any]) -> None:
        body = orjson.dumps({"seq": seq, **alert}, option=orjson.OPT_SORT_KEYS)
        if self.webhook is not None:
            self._post(body)
        if self.command is not None:
            self._run(seq, body)

    def _post(self, body: bytes) -> None:
        assert self.webhook is not None
        secret = os.environ[self.secret_env].encode()
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(stamp),
                   SIGNATURE_HEADER: sign(secret, body, stamp), "User-Agent": "mlledger-monitor"}
        where = _redacted(self.webhook)
        last = ""
        for attempt in range(1, self.attempts + 1):
            req = urllib.request.Request(self.webhook, data=body, headers=headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - scheme checked
                    if 200 <= resp.status < 300:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                exc.close()  # the error response holds the connection
                if exc.code < 500:
                    raise NotifyError(f"webhook {where} refused the alert: {last} (not retried)") from None
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if attempt < self.attempts:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise NotifyError(f"webhook {where} failed after {self.attempts} attempts: {last}")

    def _run(self, seq: int, body: bytes) -> None:
        assert self.command is not None
        env = {**{k: v for k, v in os.environ.items() if k in HOOK_ENV}, "MLLEDGER_ALERT_SEQ": str(seq)}
        try:
            done = subprocess.run(shlex.split(self.command), input=body, env=env, capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NotifyError(f"alert command {self.command!r} failed: {exc}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise NotifyError(f"alert command {self.command!r} exited {done.returncode}: {tail[0]}")
