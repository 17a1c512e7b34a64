"""An audit dossier for a ledger with 100,000 prediction events, split into its stages.

The ledger holds a registered model with performance and fairness evidence (their full
results in the artifact store), a checkpoint, and N ``prediction.made`` entries (the
serving kind, appended through the API as the HTTP server would). The dossier is timed
as: data assembly (every read over the covered tree, the governance audit and the
crosswalk), the source bundle (export of the covered checkpoint, zipped), and WeasyPrint
(HTML to PDF/A-3b with the attachments). Assembly includes the verification run the
certificate reports. The baseline is the same dossier before the
predictions were appended, so the ratio is the cost of the prediction history.

    cd bench && python3 report.py [--predictions 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from _common import SIGNER, new_ledger

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.canonical import encode
from ledger.events import Event
from ledger.kinds import ColumnSummary, DatasetRegistered
from policies.kinds import EvidenceRecorded, ModelRegistered
from reports import make_report

MODEL = "credit@1"


def setup(ledger, artifacts: ArtifactStore) -> None:  # type: ignore[no-untyped-def]
    data_hash = hashlib.sha256(b"eval").hexdigest()
    model_hash = hashlib.sha256(b"model").hexdigest()
    cols = [ColumnSummary(name=c, dtype="string", nullable=False) for c in ("sex", "race", "approved")]
    ledger.append(Event(DatasetRegistered(name="eval", sha256=data_hash, format="csv", size_bytes=1, rows=2000,
                                          role="eval", columns=cols, sensitive_features=["sex", "race"],
                                          target="approved", source="file:///data/eval.csv"), actor="dev"))
    ledger.append(Event(ModelRegistered(name="credit", version=1, artifact_sha256=model_hash, format="skops",
                                        task="binary_classification", features=["income"], target="approved",
                                        training_data=[data_hash], source="file:///m.skops"), actor="dev"))
    groups = [{"label": lab, "key": [lab], "count": 1000, "selection_rate": r, "impact_ratio": r / 0.7,
               "scoring_rate": None, "scoring_impact_ratio": None, "tpr": 0.8, "fpr": 0.3, "small_group": False}
              for lab, r in (("female", 0.56), ("male", 0.7))]
    full = {"groupings": [{"name": "sex", "features": ["sex"], "groups": groups, "unknown": None, "unknown_count": 0,
                           "small_groups": [], "disparities": {"min_impact_ratio": 0.8, "privileged_label": "male"}}]}
    digest = artifacts.put(encode(full, where="bench"))
    for kind, values in (("performance", {"accuracy": 0.71, "n": 2000}),
                         ("fairness", {"n": 2000, "sex": {"min_impact_ratio": 0.8, "unknown_count": 0}})):
        ledger.append(Event(EvidenceRecorded(type=kind, model_sha256=model_hash, dataset_sha256=data_hash,  # type: ignore[arg-type]
                                             values=values, artifact_sha256=digest, tool="bench", libraries={},
                                             config={}), actor="dev", subject=f"model:{MODEL}"))


def predictions(n: int, artifact: str, start: int) -> list[Event]:
    from backends.kinds import PredictionMade

    return [Event(PredictionMade(model=MODEL, artifact_sha256=artifact, stage="production", deployed_seq=2,
                                 input_commitment=hashlib.sha256(str(i).encode()).hexdigest(),
                                 key_id=f"dk-{i % 4:032x}", label=i % 2, score=(i % 100) / 100, latency_ms=1.5 + i % 7,
                                 automated_decision=True, request_ref=hashlib.sha256(f"r{i}".encode()).hexdigest()),
                  actor="system:serve", subject=f"model:{MODEL}")
            for i in range(start, start + n)]


def dossier(ledger, artifacts: ArtifactStore) -> tuple[dict[str, float], int]:  # type: ignore[no-untyped-def]
    ledger.checkpoint()
    t = time.perf_counter()
    rep = make_report(ledger, "model", ref=MODEL, artifacts=artifacts, producer="bench")
    total = time.perf_counter() - t
    return {**rep.timings, "total": total}, len(rep.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'ledger.db'}"
        artifacts = ArtifactStore(Path(d) / "artifacts")
        new_ledger(url).close()
        with Ledger.open(url, signer=SIGNER, checkpoint_every=None) as led:
            setup(led, artifacts)
            dossier(led, artifacts)  # warm-up: imports, fonts
            base, _ = dossier(led, artifacts)
            artifact = hashlib.sha256(b"model").hexdigest()
            t = time.perf_counter()
            for start in range(0, args.predictions, 10_000):
                led.append_many(predictions(min(10_000, args.predictions - start), artifact, start))
            append_s = time.perf_counter() - t
            ours, size = dossier(led, artifacts)
    print(f"(setup: {args.predictions:,} prediction.made appended in {append_s:.1f} s)")
    for stage in ("assemble", "bundle", "render", "total"):
        name = f"dossier, {args.predictions:,} predictions: {stage}"
        print(f"{name:<52} mlledger {ours[stage]:7.2f} s   no predictions {base[stage]:7.2f} s   "
              f"ratio {ours[stage] / base[stage]:6.2f}" + ("   target <= 10 s" if stage == "total" else ""))
    print(f"{'dossier size':<52} {size:,} bytes")


if __name__ == "__main__":
    main()
