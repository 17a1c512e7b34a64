"""The lifecycle metrics of the reference MLOps review's Table 2, measured on this machine.

Workload (issue 8): a model trained on --rows synthetic rows (default 50,000) x 20 features, served by
a real 'mlledger serve --store-inputs' (1 worker, SQLite, loopback) under a steady load of --rate
predictions per second; the stage policy monitors windows of --window predictions (the server's
background monitor, every 0.5 s) and retrains on prediction or input drift, promoting without a
human when the gate (a performance floor) allows. Drift (features f0..f4 shifted by 1.5 SD) is
injected at a known moment.

Measured:
- drift detection latency: first drifted prediction entry -> the monitor.alert entry (seconds, and
  the predictions served from the onset to the end of the alerting window);
- retraining time: retrain.triggered entry -> the server answering with the new version
  ('mlledger loop run' as a user runs it; its process start-up is shown separately);
- deployment time: model.promoted entry -> the server answering with the new version;
- failure recovery: a second drift and loop, 'kill -9' right after the train step, then
  'mlledger loop run' again: from the kill to the loop completed (new version deployed).

Peer figures: Nune, IJSRA 16(01), 2025, Table 2 (as quoted in issue 8). Our targets are the issue's.

    python3 bench/lifecycle.py [--rows 50000] [--rate 200] [--window 1000] [--json lifecycle.json]

A smaller run for a quick look: --rows 5000 --window 500.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES = [f"f{i}" for i in range(20)]
PEERS = {  # Nune, IJSRA 16(01), 2025, Table 2
    "deployment": ("45 s", "60 s", "120 s", "180 s", "< 2 s"),
    "retraining": ("22 min", "25 min", "30 min", "35 min", "< 60 s"),
    "detection": ("8 min", "10 min", "15 min", "n/a", "within one window"),
    "recovery": ("10 min", "12 min", "20 min", "25 min", "< 10 s"),
}


def synthetic(n: int, seed: int, shift: float = 0.0) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, size=(n, 20))
    w = np.linspace(1.0, -1.0, 20)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w) / 2))).astype(int)
    X[:, :5] += shift  # covariate shift after the labels are drawn: the concept stays
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["group"] = rng.choice(["a", "b"], size=n)
    frame["approved"] = y
    return frame


def cli(world: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    from tests.integration.serving_world import cli_command

    done = subprocess.run(cli_command(*args), cwd=world, env=env or _env(), capture_output=True, text=True,
                          check=False)
    if check and done.returncode not in (0,):
        raise SystemExit(f"mlledger {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLEDGER_")}
    return env | {"MLLEDGER_ACTOR": "bench@example.com"}


def ts(entry_ts: str) -> float:
    return datetime.strptime(entry_ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


POLICY = """name: lifecycle-production
stage: production
description: lifecycle benchmark
rules:
  - id: performance.floor
    kind: performance
    min: {accuracy: 0.6}
monitor:
  window: %d
  interval_s: 0.5
retrain:
  id: drift-retrain
  trigger: [prediction-drift, input-drift]
  data: reference+labelled
"""
SPEC = """name: lifecycle
datasets: {train: train, eval: eval}
features: [%s]
target: approved
sensitive: [group]
estimator:
  name: LogisticRegression
  params: {max_iter: 500}
seed: 1
"""


def build(world: Path, rows: int, window: int) -> None:
    synthetic(rows, 1).to_csv(world / "train.csv", index=False)
    synthetic(max(rows // 5, 2000), 2).to_csv(world / "eval.csv", index=False)
    cli(world, "init", "--origin", "bench.example.com/lifecycle")
    for role in ("train", "eval"):
        cli(world, "data", "register", f"{role}.csv", "--role", role, "--name", role, "--sensitive", "group",
            "--target", "approved")
    (world / "policy.yaml").write_text(POLICY % window)
    cli(world, "policy", "publish", "policy.yaml", "--stage", "production")
    (world / "spec.yaml").write_text(SPEC % ", ".join([*FEATURES, "group"]))
    ref = cli(world, "train", "spec.yaml").stdout.split()[1]
    cli(world, "evidence", "performance", "--model", ref, "--data", "eval")
    cli(world, "gate", "--model", ref, "--stage", "production")
    cli(world, "promote", ref, "--to", "production")


class Traffic(threading.Thread):
    """Steady load: --rate predictions per second, 10 records per request; records the truth per seq."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.shift, self.seed = 0.0, 100
        self.truth: dict[int, int] = {}
        self.first_seq_of_shift: dict[float, int] = {}
        self.stop = threading.Event()
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            start, sent = time.perf_counter(), 0
            while not self.stop.is_set():
                self.seed += 1
                shift = self.shift
                frame = synthetic(10, self.seed, shift)
                try:
                    subjects = [f"applicant-{self.seed}-{i}" for i in range(len(frame))]
                    r = client.post(self.url + "/v1/predict", json={"records": frame[FEATURES].to_dict("records"),
                                                                    "subject_ids": subjects})
                except httpx.HTTPError as exc:
                    self.errors += 1
                    self.last_error = str(exc)
                    time.sleep(0.1)
                    continue
                if r.status_code != 200:
                    self.errors += 1
                    self.last_error = f"HTTP {r.status_code}: {r.text[:200]}"
                    continue
                for p, y in zip(r.json()["predictions"], frame["approved"], strict=True):
                    seq = p["receipt"]["seq"]
                    self.truth[seq] = int(y)
                    self.first_seq_of_shift.setdefault(shift, seq)
                sent += 10
                delay = start + sent / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)


class Watch(threading.Thread):
    """Polls /healthz; the wall time at which each version was first served."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.first_served: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    model = client.get(self.url + "/healthz").json()["model"]
                    self.first_served.setdefault(model, time.time())
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)


def entries(world: Path, kind: str) -> list[Any]:
    from ledger.api import Ledger

    with Ledger.open(str(world / ".mlledger")) as led:
        return list(led.iter(kind=kind))


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def drift_and_alert(world: Path, traffic: Traffic, shift: float, after: int) -> dict[str, Any]:
    """Shift the traffic, wait for the first alert over a window holding drifted traffic; onset -> alert."""
    traffic.shift = shift
    onset = wait_for(lambda: traffic.first_seq_of_shift.get(shift), 60,
                     f"drifted traffic (errors {traffic.errors}: {traffic.last_error})")
    alert = wait_for(lambda: [e for e in entries(world, "monitor.alert")
                              if e.payload["window_last_seq"] >= onset and e.seq > after], 120, "a monitor.alert")[0]
    first = next(e for e in entries(world, "prediction.made") if e.seq >= onset)
    served = sum(1 for s in traffic.truth if onset <= s <= alert.payload["window_last_seq"])
    return {"onset_seq": onset, "alert_seq": alert.seq, "seconds": ts(alert.ts) - ts(first.ts),
            "predictions": served, "alert": alert.payload["kind"]}


def label(world: Path, traffic: Traffic, since: int, name: str) -> None:
    rows = sorted((s, y) for s, y in list(traffic.truth.items()) if s >= since)
    (world / name).write_text("seq,label\n" + "".join(f"{s},{y}\n" for s, y in rows))
    cli(world, "labels", "ingest", name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--json", dest="json_path", default="lifecycle.json")
    args = ap.parse_args()
    from backends._http import wait_ready
    from tests.integration.serving_world import cli_command, free_port

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        world = Path(d)
        t = time.perf_counter()
        build(world, args.rows, args.window)
        setup_s = time.perf_counter() - t
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(cli_command("serve", "--model", "lifecycle", "--stage", "production", "--port",
                                              str(port), "--store-inputs"), cwd=world, env=_env(),
                                  stderr=(world / "serve.log").open("wb"))
        try:
            wait_ready(url, timeout=60)
            watch, traffic = Watch(url), Traffic(url, args.rate)
            watch.start()
            traffic.start()
            wait_for(lambda: len(traffic.truth) >= int(args.window * 1.5), 120, "normal traffic")
            detect = drift_and_alert(world, traffic, 1.5, 0)
            label(world, traffic, detect["onset_seq"], "labels1.csv")
            t_run = time.time()
            cli(world, "loop", "run", "--model", "lifecycle")
            trig = entries(world, "retrain.triggered")[-1]
            promo = [e for e in entries(world, "model.promoted") if e.seq > trig.seq][-1]
            v2 = promo.payload["model"]
            served = wait_for(lambda: watch.first_served.get(v2), 30, f"{v2} served")
            retrain_s, deploy_s = served - ts(trig.ts), served - ts(promo.ts)
            startup_s = ts(trig.ts) - t_run
            # a second drift and loop, killed right after training
            deployed = entries(world, "model.deployed")[-1].seq
            detect2 = drift_and_alert(world, traffic, -1.5, deployed)
            label(world, traffic, detect2["onset_seq"], "labels2.csv")
            env = _env() | {"MLLEDGER_LOOP_CRASH": "after:train"}
            killed = cli(world, "loop", "run", "--model", "lifecycle", env=env, check=False)
            t_kill = time.time()
            if killed.returncode != -9:
                raise SystemExit(f"the loop was not killed: {killed.returncode} {killed.stderr}")
            cli(world, "loop", "run", "--model", "lifecycle")
            done = [e for e in entries(world, "model.deployed") if e.seq > deployed][-1]
            recovery_s = ts(done.ts) - t_kill
            traffic.stop.set()
            watch.stop.set()
            status = cli(world, "loop", "status").stdout.strip()
            verify = cli(world, "verify").stdout.strip()
        except BaseException:
            print(f"server log: {(world / 'serve.log').read_text()[-2000:]}", file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)
    ours = {
        "deployment": (deploy_s, f"{deploy_s:.2f} s"),
        "retraining": (retrain_s, f"{retrain_s:.1f} s (+{startup_s:.1f} s CLI start-up)"),
        "detection": (detect["seconds"], f"{detect['seconds']:.1f} s, {detect['predictions']} predictions "
                                          f"(window {args.window})"),
        "recovery": (recovery_s, f"{recovery_s:.1f} s"),
    }
    names = {"deployment": "deployment time: promotion to serving",
             "retraining": "retraining time: trigger to new version serving",
             "detection": "drift detection latency: onset to alert",
             "recovery": "failure recovery: kill -9 to loop completed"}
    print(f"lifecycle benchmark: {args.rows:,} training rows x 20 features, {args.rate:.0f} predictions/s, "
          f"window {args.window}, 1 server worker, SQLite; setup {setup_s:.0f} s")
    print("| metric | SageMaker | Azure ML | Kubeflow | MLflow | our target | measured |")
    print("|---|---|---|---|---|---|---|")
    for key, (sm, az, kf, mf, target) in PEERS.items():
        print(f"| {names[key]} | {sm} | {az} | {kf} | {mf} | {target} | {ours[key][1]} |")
    print("peer figures: Nune, IJSRA 16(01), 2025, Table 2")
    print(status)
    print(verify)
    if traffic.errors:
        print(f"traffic errors: {traffic.errors} (last: {traffic.last_error})")
    result = {"workload": {"rows": args.rows, "features": 20, "rate": args.rate, "window": args.window},
              "measured_s": {k: round(v[0], 3) for k, v in ours.items()},
              "drift_detection": {"first": detect, "second": detect2}, "cli_startup_s": round(startup_s, 3),
              "traffic_errors": traffic.errors, "peers": {k: list(v) for k, v in PEERS.items()},
              "source": "Nune, IJSRA 16(01), 2025, Table 2"}
    Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
