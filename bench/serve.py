"""Serving: throughput and latency with every decision recorded, against the same server with
recording switched off (the bench-only ``--bench-unrecorded``), under the same bounded load.

The load runs in a second process on loopback: a fixed number of single-record requests at a
fixed concurrency (asyncio + httpx), after a warm-up. Targets (issue 7): recorded throughput
>= 80% of unrecorded, and recording adds <= 5 ms at p99.

    python3 bench/serve.py [--requests 4000] [--concurrency 16] [--subjects 1000]

With ``--subjects N`` request ``i`` carries ``subject_id`` ``cust-{i mod N}``: the first request of
each subject creates its key (wrapped under the subject KEK), later ones read it back, so the
recorded run includes the per-subject key path. The unrecorded baseline gets the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECORD = {"income": 52.5, "age": 41, "debt": 7.25}


def _body(i: int, subjects: int) -> dict[str, object]:
    return {"record": RECORD, "subject_id": f"cust-{i % subjects}"} if subjects else {"record": RECORD}


async def _load(url: str, requests: int, concurrency: int, subjects: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = iter(range(requests))
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        for _ in range(200):  # warm-up
            await client.post(f"{url}/v1/predict", json={"record": RECORD})

        async def worker() -> None:
            nonlocal errors
            for i in queue:
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/predict", json=_body(i, subjects))
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"rps": requests / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "errors": errors}


def client_main(url: str, requests: int, concurrency: int, subjects: int) -> None:
    print(json.dumps(asyncio.run(_load(url, requests, concurrency, subjects))))


def run_load(world: Path, extra: list[str], requests: int, concurrency: int, subjects: int) -> dict[str, float]:
    from tests.integration.serving_world import cli_command, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    server = subprocess.Popen(cli_command("serve", "--model", "credit", "--stage", "production", "--port", str(port),
                                          *extra), cwd=world, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        from backends._http import wait_ready

        wait_ready(url, timeout=60)
        out = subprocess.run([sys.executable, __file__, "--client", url, "--requests", str(requests),
                              "--concurrency", str(concurrency), "--subjects", str(subjects)],
                             capture_output=True, check=True, text=True)
        return json.loads(out.stdout)  # type: ignore[no-any-return]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--subjects", type=int, default=0, help="distinct subject ids cycled over the requests")
    ap.add_argument("--client")
    args = ap.parse_args()
    if args.client:
        client_main(args.client, args.requests, args.concurrency, args.subjects)
        return
    from tests.integration.serving_world import build

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        world = Path(d)
        build(world)
        print(f"serve benchmark: {args.requests:,} single-record requests at concurrency {args.concurrency}, "
              f"loopback, 1 worker, SQLite, {args.subjects or 'no'} distinct subject ids")
        unrec = run_load(world, ["--bench-unrecorded"], args.requests, args.concurrency, args.subjects)
        rec = run_load(world, [], args.requests, args.concurrency, args.subjects)
    for name, r in (("unrecorded (bench-only)", unrec), ("recorded (prediction.made each)", rec)):
        print(f"  {name:<34} {r['rps']:>8,.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   "
              f"errors {int(r['errors'])}")
    print(f"throughput ratio recorded/unrecorded   {rec['rps'] / unrec['rps']:5.2f}   target >= 0.80")
    print(f"p99 added by recording                 {rec['p99_ms'] - unrec['p99_ms']:+6.2f} ms   target <= 5 ms")


if __name__ == "__main__":
    main()
