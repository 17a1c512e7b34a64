"""Alert notification: the signed webhook against a real local HTTP server, and the command hook."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backends._notify import SIGNATURE_HEADER, Notifier, NotifyError
from ledger.errors import InputError

SECRET = "s3cret-for-tests"
ALERT = {"kind": "prediction-drift", "model": "credit", "stage": "production", "value": 0.4}


class Receiver:
    """A real HTTP server on loopback that answers with the queued status codes, recording each request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(list(getattr(request, "param", [])))
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLEDGER_WEBHOOK_SECRET", SECRET)


def notifier(url: str, **kw: object) -> Notifier:
    return Notifier(webhook=url, sleep=lambda _s: None, **kw)  # type: ignore[arg-type]


def test_webhook_body_is_hmac_signed(receiver: Receiver) -> None:
    notifier(receiver.url).notify(7, ALERT)
    ((headers, body),) = receiver.requests
    assert json.loads(body) == {"seq": 7, **ALERT}
    stamp = headers["X-Mlledger-Timestamp"]
    assert abs(int(stamp) - time.time()) < 60  # a receiver refuses old ones: no replay later
    want = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == want


def test_errors_name_the_webhook_by_host_only(receiver: Receiver) -> None:
    receiver.statuses.append(401)
    with pytest.raises(NotifyError) as err:
        notifier(receiver.url + "/T0KEN-IN-PATH?key=S3CRET").notify(1, ALERT)
    assert "127.0.0.1" in str(err.value) and "T0KEN" not in str(err.value) and "S3CRET" not in str(err.value)


def test_the_hook_gets_no_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLEDGER_KEY_PASSPHRASE", "hunter2-passphrase")
    out = tmp_path / "env.txt"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import os, sys; open({str(out)!r}, 'w').write(repr(dict(os.environ))); sys.stdin.read()")
    Notifier(command=f"{sys.executable} {hook}").notify(3, ALERT)
    seen = out.read_text()
    assert "MLLEDGER_ALERT_SEQ" in seen and "hunter2" not in seen and SECRET not in seen


@pytest.mark.parametrize("receiver", [[503, 500]], indirect=True)
def test_webhook_retries_server_errors_then_delivers(receiver: Receiver) -> None:
    notifier(receiver.url, attempts=3).notify(1, ALERT)
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("receiver", [[500, 500, 500, 500]], indirect=True)
def test_webhook_gives_up_after_bounded_attempts(receiver: Receiver) -> None:
    waits: list[float] = []
    n = Notifier(webhook=receiver.url, attempts=3, backoff_s=0.5, sleep=waits.append)
    with pytest.raises(NotifyError, match="failed after 3 attempts: HTTP 500"):
        n.notify(1, ALERT)
    assert len(receiver.requests) == 3 and waits == [0.5, 1.0]


@pytest.mark.parametrize("receiver", [[401]], indirect=True)
def test_webhook_client_error_is_not_retried(receiver: Receiver) -> None:
    with pytest.raises(NotifyError, match="refused the alert: HTTP 401"):
        notifier(receiver.url).notify(1, ALERT)
    assert len(receiver.requests) == 1


def test_webhook_unreachable_fails_with_the_reason() -> None:
    with pytest.raises(NotifyError, match="failed after 2 attempts"):
        notifier("http://127.0.0.1:9/hook", attempts=2, timeout_s=1.0).notify(1, ALERT)


def test_webhook_without_secret_is_refused_before_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLEDGER_WEBHOOK_SECRET")
    with pytest.raises(InputError, match=r"needs the signing secret in \$MLLEDGER_WEBHOOK_SECRET"):
        Notifier(webhook="http://127.0.0.1:1/x").check()


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(InputError, match="give an http"):
        Notifier(webhook="file:///etc/passwd").check()


def test_command_hook_gets_the_alert_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    script = f"import sys,os; open({str(out)!r},'w').write(os.environ['MLLEDGER_ALERT_SEQ']+sys.stdin.read())"
    Notifier(command=f"{sys.executable} -c \"{script}\"").notify(42, ALERT)
    text = out.read_text()
    assert text.startswith("42") and json.loads(text[2:])["kind"] == "prediction-drift"


def test_command_hook_failure_names_the_exit_code() -> None:
    with pytest.raises(NotifyError, match="exited 3"):
        Notifier(command=f"{sys.executable} -c \"import sys; sys.exit(3)\"").notify(1, ALERT)
