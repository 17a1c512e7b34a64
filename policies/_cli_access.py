"""CLI: roles, access control, HTTP bearer tokens and ``mlledger doctor`` (issue 12).

``mlledger role grant|revoke|list``, ``mlledger access enable|status``, ``mlledger token
issue|revoke|list`` and ``mlledger doctor``. Every write here is a signed action of an
admin: run them as one with ``mlledger --as KEYFILE`` (or ``MLLEDGER_IDENTITY``); the
genesis admin is the ledger key's owner (``--as <home>/keys/log.pem``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from ledger.canonical import format_ts, parse_ts
from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError, MlledgerError
from ledger.events import Event
from ledger.kinds import ROLES

__all__ = ["access", "doctor", "role", "token"]

ROLE = click.Choice(list(ROLES))
TOKEN_PREFIX = "mlt_"  # noqa: S105 - a prefix, so secret scanners can recognise leaked tokens


def _acting(obj: Context) -> None:
    if obj.identity_path is None:
        raise InputError("this is an admin's signed action: act as one with 'mlledger --as KEYFILE ...' "
                         "or MLLEDGER_IDENTITY (the genesis admin's key is <home>/keys/log.pem)")


# -- roles -------------------------------------------------------------------------------


@click.group()
def role() -> None:
    """Grant and revoke roles (signed by an admin) and show the permission table."""


def _role_event(obj: Context, kind: str, name: str, role_name: str, reason: str) -> None:
    from policies._access_kinds import RoleGranted, RoleRevoked

    _acting(obj)
    model = RoleGranted if kind == "role.granted" else RoleRevoked
    with obj.open() as ledger:
        r = ledger.append(Event(model(identity=name, role=role_name, reason=reason),  # type: ignore[arg-type]
                                actor="-", subject=f"identity:{name}"))
        who = ledger.acting_as
    verb = "granted" if kind == "role.granted" else "revoked"
    click.echo(f"{verb} {role_name} {'to' if verb == 'granted' else 'from'} {name} at seq {r.seq}, signed by {who}")


def _role_command(verb: str, kind: str, doc: str) -> click.Command:
    """``mlledger role grant`` and ``mlledger role revoke``: the same arguments, another kind."""

    @role.command(name=verb, help=doc)
    @click.argument("name")
    @click.argument("role_name", metavar="ROLE", type=ROLE)
    @click.option("--reason", required=True)
    @click.pass_obj
    @handle_errors
    def command(obj: Context, name: str, role_name: str, reason: str) -> None:
        _role_event(obj, kind, name, role_name, reason)

    return command


role_grant = _role_command("grant", "role.granted", "Give the registered identity NAME one more ROLE (role.granted).")
role_revoke = _role_command("revoke", "role.revoked",
                            "Take ROLE from NAME (role.revoked); actions after this entry may not use it.")


@role.command(name="table")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def role_table(fmt: str) -> None:
    """The fixed permission table: what each role may do, and the entry kinds that do it."""
    from policies._access import PERMISSIONS

    for what, roles, kinds in PERMISSIONS:
        if fmt == "json":
            echo_json({"roles": sorted(roles), "may": what, "kinds": list(kinds)})
        else:
            click.echo(f"{' / '.join(sorted(roles)):<26} {what}")


# -- access control ------------------------------------------------------------------------


@click.group()
def access() -> None:
    """Turn access control on for a ledger (once, for good) and show its state."""


@access.command(name="enable")
@click.option("--reason", required=True)
@click.pass_obj
@handle_errors
def access_enable(obj: Context, reason: str) -> None:
    """Record access.enabled: from now on every governed action must be signed by an entitled identity."""
    from policies._access import access_enabled_seq
    from policies._access_kinds import AccessEnabled

    _acting(obj)
    with obj.open() as ledger:
        with ledger.view() as view:
            seq = access_enabled_seq(view)
        if seq is not None:
            raise InputError(f"access control is already on (since seq {seq})")
        r = ledger.append(Event(AccessEnabled(reason=reason), actor="-", subject=None))
    click.echo(f"access control on from seq {r.seq}: governed actions must now be signed by an identity "
               "holding their role")


@access.command(name="status")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def access_status(obj: Context, fmt: str) -> None:
    """Whether the ledger is access-controlled, and who holds which role now."""
    from policies._access import access_enabled_seq
    from policies._governance import identities

    with obj.open() as ledger, ledger.view() as view:
        seq = access_enabled_seq(view)
        found = identities(view)
    if fmt == "json":
        echo_json({"access_controlled_since": seq,
                   "identities": {n: sorted(i.roles) for n, i in found.items()}})
        return
    click.echo(f"access control: {'on since seq ' + str(seq) if seq is not None else 'OFF'}")
    for ident in found.values():
        click.echo(f"  {ident.name:<32} {', '.join(sorted(ident.roles)) or '-'}")


# -- bearer tokens ---------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InputError(f"--expires {text!r}: give a duration such as 30d, 12h or 90m")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def token_hash(token_value: str) -> str:
    return hashlib.sha256(token_value.encode()).hexdigest()


@click.group()
def token() -> None:
    """HTTP bearer tokens for 'mlledger serve': only their SHA-256 is recorded."""


@token.command(name="issue")
@click.option("--identity", "name", required=True, help="The registered identity the token acts as.")
@click.option("--scope", "scope_text", required=True, help="Comma-separated: predict, review, proofs, model.")
@click.option("--expires", default="30d", show_default=True, help="Lifetime, e.g. 30d, 12h, 90m.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def token_issue(obj: Context, name: str, scope_text: str, expires: str, fmt: str) -> None:
    """Issue a token for NAME and print it once; the ledger keeps only its hash (token.issued).

    The identity must hold a role for each scope (predict: service; review: validator or
    model-risk; proofs and model: service, auditor, ...).
    """
    from policies._access import SCOPE_ROLES
    from policies._access_kinds import TokenIssued
    from policies._governance import identities

    _acting(obj)
    scopes = sorted({s.strip() for s in scope_text.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in SCOPE_ROLES]
    if not scopes or unknown:
        raise InputError(f"--scope: unknown scope(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SCOPE_ROLES)}")
    expires_at = format_ts((time.time_ns() // 1000) + parse_duration(expires) * 1_000_000)
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with obj.open() as ledger:
        with ledger.view() as view:
            ident = identities(view).get(name)
        if ident is None:
            raise InputError(f"{name} is not a registered identity with an admin-signed registration")
        for s in scopes:
            if not ident.roles & SCOPE_ROLES[s]:
                raise InputError(f"{name} holds {', '.join(sorted(ident.roles))}; scope {s} needs the role "
                                 f"{' or '.join(sorted(SCOPE_ROLES[s]))}")
        payload = TokenIssued(token_sha256=token_hash(value), identity=name, scopes=scopes,  # type: ignore[arg-type]
                              expires_at=expires_at)
        r = ledger.append(Event(payload, actor="-", subject=f"identity:{name}"))
    if fmt == "json":
        echo_json({"token": value, "seq": r.seq, "identity": name, "scopes": scopes, "expires_at": expires_at})
        return
    click.echo(f"issued a token for {name} ({', '.join(scopes)}), expires {expires_at}, at seq {r.seq}")
    click.echo("it is shown only this once; the ledger keeps only its SHA-256:")
    click.echo(value)


@token.command(name="revoke")
@click.argument("token_id", metavar="SEQ|SHA256")
@click.option("--reason", required=True)
@click.pass_obj
@handle_errors
def token_revoke(obj: Context, token_id: str, reason: str) -> None:
    """Revoke a token by the seq of its token.issued entry or its SHA-256 (token.revoked)."""
    from policies._access_kinds import TokenRevoked

    _acting(obj)
    with obj.open() as ledger:
        issued = [e for e in ledger.iter(kind=["token.issued"])
                  if str(e.seq) == token_id or e.payload["token_sha256"] == token_id]
        if not issued:
            raise InputError(f"{token_id} is neither the seq nor the SHA-256 of a token.issued entry")
        digest = issued[0].payload["token_sha256"]
        r = ledger.append(Event(TokenRevoked(token_sha256=digest, reason=reason), actor="-",
                                subject=issued[0].subject))
    click.echo(f"revoked token {digest[:12]} (issued at seq {issued[0].seq}) at seq {r.seq}")


@token.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def token_list(obj: Context, fmt: str) -> None:
    """Tokens issued, with their state (live, expired or revoked); never the tokens themselves."""
    now = time.time_ns() // 1000
    with obj.open() as ledger:
        revoked = {e.payload["token_sha256"]: e.seq for e in ledger.iter(kind=["token.revoked"])}
        rows = []
        for e in ledger.iter(kind=["token.issued"]):
            p = e.payload
            state = ("revoked" if p["token_sha256"] in revoked else
                     "expired" if parse_ts(p["expires_at"]) <= now else "live")
            rows.append({"seq": e.seq, "sha256": p["token_sha256"], "identity": p["identity"],
                         "scopes": p["scopes"], "expires_at": p["expires_at"], "state": state})
    for row in rows:
        if fmt == "json":
            echo_json(row)
        else:
            click.echo(f"{row['seq']:>6}  {row['sha256'][:12]}  {row['identity']:<24} {','.join(row['scopes']):<22} "
                       f"{row['expires_at']}  {row['state']}")


# -- doctor --------------------------------------------------------------------------------------

#: A checkpoint key in use longer than this is reported (rotate with 'mlledger key rotate').
MAX_KEY_AGE_DAYS = 365


@click.command()
@click.option("--max-key-age", "max_age", type=click.IntRange(min=1), default=MAX_KEY_AGE_DAYS, show_default=True,
              help="Days a ledger key may be in use before it is reported.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def doctor(obj: Context, max_age: int, fmt: str) -> None:
    """Report key hygiene problems: unsafe file permissions, unencrypted keys, an old ledger key,
    a ledger that is not access-controlled, and a subject key-encryption key file that is exposed,
    out of date or still holds a retired generation. Exit 1 when any problem is found."""
    problems = _store_file_problems(obj.home) + _key_file_problems(obj.home / "keys")
    if obj.identity_path is not None:
        problems += _key_file_problems(obj.identity_path)
    from ledger._keytable import kek_problems
    from ledger.api import Ledger

    with Ledger.open(obj.location) as ledger:  # not as the --as identity: its key may be the problem
        problems += _ledger_problems(ledger, max_age, obj.home / "keys" / "log.vkey")
        problems += kek_problems(ledger.store, obj.home)
    if fmt == "json":
        echo_json({"problems": problems})
    else:
        for p in problems:
            click.echo(f"PROBLEM  {p}")
        click.echo(f"doctor: {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


def _store_file_problems(home: Path) -> list[str]:
    """The ledger home and its database files hold subject keys and sealed inputs: owner only."""
    out: list[str] = []
    paths = [home, *sorted(home.glob("*.db")), *sorted(home.glob("*.db-wal")), *sorted(home.glob("*.db-shm"))]
    for path in paths if home.is_dir() else []:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(f"{path} is readable by group or others (mode {mode:04o}); it holds subject keys and stored "
                       f"inputs: chmod {'700' if path.is_dir() else '600'} {path}")
    return out


def _key_file_problems(where: Path) -> list[str]:
    out: list[str] = []
    files = sorted(where.glob("*.pem")) if where.is_dir() else [where] if where.exists() else []
    for pem in files:
        mode = pem.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(f"{pem} is readable or writable by group or others (mode {mode:04o}): chmod 600 {pem}")
        head = pem.read_bytes()[:64]
        if b"ENCRYPTED" not in head:
            out.append(f"{pem} is not encrypted: re-create it with MLLEDGER_KEY_PASSPHRASE set")
    return out


def _ledger_problems(ledger: Any, max_age: int, log_vkey: Path | None = None) -> list[str]:
    from policies._access import access_enabled_seq

    out: list[str] = []
    since = None
    try:  # the entry that introduced the key this home signs with (log.vkey), else the current key
        history = ledger.key_history()
        vkey_file = log_vkey if log_vkey is not None and log_vkey.exists() else None
        used = history.keys.get(vkey_file.read_text().strip()) if vkey_file else None
        since = ledger.get((used or history.current_key()).valid_from - 1)
    except (MlledgerError, OSError) as exc:
        out.append(f"the ledger's key history cannot be read: {exc}")
    if since is not None:
        days = (time.time_ns() // 1000 - parse_ts(since.ts)) // (86_400 * 1_000_000)
        if days > max_age:
            out.append(f"the ledger key has been in use for {days} days (since seq {since.seq}), more than "
                       f"{max_age}: rotate it with 'mlledger key rotate'")
    with ledger.view() as view:
        if access_enabled_seq(view) is None:
            out.append("the ledger is not access-controlled: actor names are not authenticated "
                       "(turn it on with 'mlledger --as ADMIN.pem access enable --reason ...')")
    return out
