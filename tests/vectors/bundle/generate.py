"""Regenerate the committed bundle vectors (timestamps make every run of the second differ).

    python tests/vectors/bundle/generate.py

``format-2.8`` is the worked example of docs/FORMAT.md (2.8, 6.7, 8.2), byte for byte.

``valid-rotated-cosigned`` (a directory and the same tree as a zip) is a six-entry ledger of
the deterministic keys of docs/FORMAT.md 5.5 and 3.5: the log key (seed 00..1f) signs
checkpoint 4, hands over to the key of seed 60..7f at seq 4 (key.rotated), which signs
checkpoint 6; the witness (seed 20..3f) cosigns checkpoint 6 at t = 1700000000. The JSON
sidecar holds what a verifier must find.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from ledger.api import Ledger  # noqa: E402
from ledger.bundle import verify_bundle  # noqa: E402
from ledger.events import Event  # noqa: E402
from ledger.export import export_bundle  # noqa: E402
from ledger.keyhistory import sign_rotation  # noqa: E402
from ledger.kinds import KeyRotated  # noqa: E402
from ledger.note import Signer, cosign  # noqa: E402
from tests.helpers import dataset_event, policy_event  # noqa: E402

ORIGIN = "example.com/mlledger-test"
LOG = Signer.from_seed(ORIGIN, bytes(range(32)))
NEXT = Signer.from_seed(ORIGIN, bytes(range(0x60, 0x80)))
WITNESS = Signer.from_seed("example.com/mlledger-witness", bytes(range(0x20, 0x40)), cosignature=True)
NAME = "valid-rotated-cosigned"


def format_example() -> None:
    """``format-2.8``: the worked example of docs/FORMAT.md, byte for byte.

    The entries of 2.8, the manifest of 8.2 and the cosigned checkpoint of 6.7; fully
    deterministic (the keys of 5.5).
    """
    doc = (HERE.parents[2] / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    worked = doc[doc.index("### 2.8") : doc.index("## 3. Event kinds")]
    entries = re.findall(r"```\n(\{.*?\})\n```", worked)
    cosigned = doc[doc.index("With a witness cosignature at `t = 1700000000`:") :]
    note = re.search(r"```\n(.*?)```", cosigned, re.S)
    manifest = re.search(r'```\n(\{"created".*?\})\n```', doc[doc.index("### 8.2") :])
    assert len(entries) == 3 and note is not None and manifest is not None
    out = HERE / "format-2.8"
    shutil.rmtree(out, ignore_errors=True)
    (out / "checkpoints").mkdir(parents=True)
    (out / "entries.jsonl").write_bytes("".join(e + "\n" for e in entries).encode())
    (out / "manifest.json").write_bytes(manifest[1].encode() + b"\n")
    (out / "checkpoints" / "3.checkpoint").write_bytes(note[1].encode())
    result = verify_bundle(out, trusted=[LOG.verifier], witnesses=[WITNESS.verifier])
    assert result.ok and result.root is not None, result
    sidecar = {"description": "docs/FORMAT.md 2.8 (entries), 8.2 (manifest) and 6.7 (cosigned checkpoint)",
               "origin": ORIGIN, "size": 3, "root": result.root.hex(), "checkpoints": [3],
               "signed_by": LOG.verifier_key, "witnesses": list(result.witnesses),
               "log_vkey": LOG.verifier_key, "witness_vkey": WITNESS.verifier_key}
    (HERE / "format-2.8.json").write_text(json.dumps(sidecar, indent=2) + "\n")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        with Ledger.init(url, origin=ORIGIN, verifier_key=LOG.verifier_key, signer=LOG,
                         checkpoint_every=None) as led:
            led.append_many([policy_event(0), dataset_event(1), policy_event(2)])
            led.checkpoint()
            led.append(Event(KeyRotated(old_key=LOG.verifier_key, new_key=NEXT.verifier_key,
                                        old_key_signature=sign_rotation(ORIGIN, LOG, NEXT.verifier_key)),
                             actor="admin@example.com"))
        with Ledger.open(url, signer=NEXT, checkpoint_every=None) as led:
            led.append(policy_event(3))
            cp = led.checkpoint()
            led.attach_cosignature(cp.size, cosign(cp.note, WITNESS, 1_700_000_000), WITNESS.verifier)
            for old in (HERE / NAME, HERE / f"{NAME}.zip"):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
            manifest = export_bundle(led, HERE / NAME)
            export_bundle(led, HERE / f"{NAME}.zip")
    result = verify_bundle(HERE / NAME, trusted=[LOG.verifier], witnesses=[WITNESS.verifier])
    assert result.ok and result.root is not None, result
    sidecar = {
        "description": "six entries; checkpoint 4 by the log key (seed 00..1f), key.rotated at seq 4 "
                       "to the key of seed 60..7f, which signs checkpoint 6; witness (seed 20..3f) "
                       "cosigns checkpoint 6 at t = 1700000000",
        "origin": ORIGIN, "size": result.size, "root": result.root.hex(),
        "entries_sha256": manifest.entries_sha256, "checkpoints": list(result.checkpoints),
        "signed_by": result.signed_by, "witnesses": list(result.witnesses),
        "log_vkey": LOG.verifier_key, "next_vkey": NEXT.verifier_key, "witness_vkey": WITNESS.verifier_key,
    }
    (HERE / f"{NAME}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(json.dumps(sidecar, indent=2))


if __name__ == "__main__":
    format_example()
    main()
