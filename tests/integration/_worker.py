"""Subprocess worker for the concurrency and crash tests.

python -m tests.integration._worker URL MODE COUNT [BATCH]
  single: COUNT appends, one event each (each its own transaction)
  batches: append_many of BATCH events, COUNT times, printing "ok <seq>" after each
"""

from __future__ import annotations

import sys

from ledger.api import Ledger
from tests.helpers import dataset_event, policy_event


def main() -> None:
    url, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Ledger.open(url) as led:
        if mode == "single":
            for i in range(count):
                led.append(policy_event(i))
        else:
            batch = int(sys.argv[4])
            for i in range(count):
                receipts = led.append_many([dataset_event(i * batch + j) for j in range(batch)])
                print(f"ok {receipts[-1].seq}", flush=True)


if __name__ == "__main__":
    main()
