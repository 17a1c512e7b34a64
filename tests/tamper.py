"""Direct database tampering, bypassing the append-only triggers (an attacker with DB access)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import create_engine, text

SQLITE_TRIGGERS = ["entries_no_update", "entries_no_delete", "nodes_no_update", "nodes_no_delete"]


class Tamperer:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.pg = self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    def _drop_triggers(self, conn: Any) -> None:
        if self.pg:
            for t in ("entries", "nodes"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}"))
        else:
            for name in SQLITE_TRIGGERS:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT seq, leaf_hash, prev, ts_us, kind, subject, entry FROM entries ORDER BY seq")))

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            self._drop_triggers(conn)
            conn.execute(text(sql), params)

    def modify_byte(self, seq: int) -> None:
        """Change one byte inside the entry's payload, leaving the stored hash."""
        raw = bytearray(self.rows()[seq].entry)
        at = raw.index(b'"payload":') + 12
        raw[at] = ord("X") if raw[at] != ord("X") else ord("Y")
        self.execute("UPDATE entries SET entry = :e WHERE seq = :s", e=bytes(raw), s=seq)

    def delete(self, seq: int) -> None:
        self.execute("DELETE FROM entries WHERE seq = :s", s=seq)

    def swap(self, a: int, b: int) -> None:
        """Exchange two stored rows (bytes and all columns) between positions a and b."""
        rows = self.rows()
        with self.engine.begin() as conn:
            self._drop_triggers(conn)
            conn.execute(text("DELETE FROM entries WHERE seq IN (:a, :b)"), {"a": a, "b": b})
            for dst, src in ((a, rows[b]), (b, rows[a])):
                conn.execute(text(
                    "INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) "
                    "VALUES (:s, :l, :p, :t, :k, :sub, :e)"),
                    {"s": dst, "l": src.leaf_hash, "p": src.prev, "t": src.ts_us,
                     "k": src.kind, "sub": src.subject, "e": src.entry})

    def rewrite_recomputed(self, seq: int) -> None:
        """Rewrite one entry's content and recompute its leaf hash (a careful attacker)."""
        raw = bytes(self.rows()[seq].entry).replace(b'"actor":"', b'"actor":"mallory-', 1)
        leaf = hashlib.sha256(b"\x00" + raw).digest()
        self.execute("UPDATE entries SET entry = :e, leaf_hash = :l WHERE seq = :s", e=raw, l=leaf, s=seq)

    def insert_forged(self, seq: int) -> None:
        """Insert a forged entry at ``seq`` with a correct prev, shifting later rows up."""
        rows = self.rows()
        prev_hex = rows[seq].prev.hex()
        ts = bytes(rows[seq].entry).split(b'"ts":"')[1][:27].decode()
        forged = (
            '{"actor":"mallory","kind":"key.revoked","payload":{"note":null,"reason":"retired",'
            '"verifier_key":"x+01020304+AQ=="},"prev":"' + prev_hex + '","seq":' + str(seq)
            + ',"subject":null,"ts":"' + ts + '","v":1}'
        ).encode()
        leaf = hashlib.sha256(b"\x00" + forged).digest()
        with self.engine.begin() as conn:
            self._drop_triggers(conn)
            conn.execute(text("DELETE FROM entries WHERE seq >= :s"), {"s": seq})
            conn.execute(text(
                "INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) "
                "VALUES (:s, :l, :p, :t, 'key.revoked', NULL, :e)"),
                {"s": seq, "l": leaf, "p": rows[seq].prev, "t": rows[seq].ts_us, "e": forged})
            for r in rows[seq:]:
                conn.execute(text(
                    "INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) "
                    "VALUES (:s, :l, :p, :t, :k, :sub, :e)"),
                    {"s": r.seq + 1, "l": r.leaf_hash,
                     "p": leaf if r.seq == seq else r.prev,
                     "t": r.ts_us, "k": r.kind, "sub": r.subject, "e": r.entry})
