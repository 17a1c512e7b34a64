"""``mlledger report`` end to end: real ledger, real WeasyPrint, the PDF read back with pypdf.

data -> model -> evidence -> gate -> approval -> promotion, then each report; the text
carries the sections and the recorded numbers, the embedded files match their printed
hashes and the bundle verifies, the same state renders to the same bytes, and
report.generated names the PDF's hash and the tree it covers.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.bundle import verify_bundle
from ledger.cli import root
from ledger.keys import load_verifier
from reports import make_report
from tests.unit.reports.world import AUDITOR, build, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("reports")
    build(base)
    return base


def report(base: Path, *args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(root, ["--ledger", str(base / ".mlledger"), "report", *args, "--actor", AUDITOR])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout, result.stderr


def text_of(pdf: Path) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(pdf).pages)


def entries(base: Path, kind: str) -> list[dict]:
    with Ledger.open(str(base / ".mlledger")) as led:
        return [{"seq": e.seq, **e.payload} for e in led.iter(kind=kind)]


def fairness_values(base: Path) -> dict:
    (ev,) = [e for e in entries(base, "evidence.recorded") if e["type"] == "fairness"]
    return ev


def test_the_dossier_has_every_section_and_the_recorded_numbers(world: Path) -> None:
    out = world / "dossier.pdf"
    stdout, _ = report(world, "model", "credit@1", "-o", str(out))
    text = text_of(out)
    for section in ("Audit dossier", "1. Model card", "Intended use", "Ethical considerations", "2. Datasheets",
                    "3. Lineage", "4. Evidence", "5. Gate decisions", "6. Electronic signatures", "7. Operations",
                    "Verification certificate", "Annex A. Compliance crosswalk", "Art. 73", "11.70", "1607.4(D)"):
        assert section in text, section
    ev = fairness_values(world)
    full = json.loads(ArtifactStore(world / ".mlledger" / "artifacts").get(ev["artifact_sha256"]))
    for grouping in full["groupings"]:
        assert f"{ev['values'][grouping['name']]['min_impact_ratio']:.4f}" in text
        for group in grouping["groups"]:
            assert f"{group['selection_rate']:.4f}" in text
    assert "Rita Risk" in text and "VERIFIED" in text
    assert "MISSING" in text  # Annex IV(7)-(9) were never attached
    assert "recorded report.generated" in stdout


def test_report_generated_names_the_pdf_hash_and_the_tree_it_covers(world: Path) -> None:
    out = world / "ledger.pdf"
    with Ledger.open(str(world / ".mlledger")) as led:
        before = led.head_size()
    report(world, "ledger", "-o", str(out))
    (read,) = [e for e in entries(world, "access.read") if e["seq"] == before]  # the read is logged first
    assert read["what"] == "report" and read["target"] == "ledger:ledger"
    size = before + 1  # the report covers the log up to and including its access.read
    with Ledger.open(str(world / ".mlledger")) as led:
        root_hex = led.root_at(size).hex()
    last = entries(world, "report.generated")[-1]
    assert last["seq"] == size
    assert last["report_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (last["tree_size"], last["root"], last["kind"], last["format"]) == (size, root_hex, "ledger", "pdf")
    assert last["checkpoint_size"] == size
    text = text_of(out)
    assert "Ledger integrity certificate" in text and "Governance audit" in text and root_hex in text.replace("\n", "")


def test_the_embedded_files_match_their_hashes_and_the_bundle_verifies(world: Path) -> None:
    out = world / "embedded.pdf"
    report(world, "model", "credit@1", "-o", str(out))
    attached = {name: data[0] for name, data in PdfReader(out).attachments.items()}
    assert set(attached) == {"report-data.json", "source-bundle.zip"}
    recorded = entries(world, "report.generated")[-1]["attachments"]
    text = text_of(out).replace("\n", "")
    for name, data in attached.items():
        digest = hashlib.sha256(data).hexdigest()
        assert recorded[name] == digest and digest in text
    data = json.loads(attached["report-data.json"])
    assert data["report"] == "model" and data["model"]["ref"] == "credit@1"
    bundle = world / "extracted.zip"
    bundle.write_bytes(attached["source-bundle.zip"])
    with zipfile.ZipFile(io.BytesIO(attached["source-bundle.zip"])) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["size"] == data["certificate"]["tree_size"]
    result = verify_bundle(bundle, trusted=[load_verifier(world / ".mlledger" / "keys" / "log.vkey")])
    assert result.ok, result


def test_the_same_state_renders_to_the_same_bytes(world: Path) -> None:
    out = world / "first.pdf"
    report(world, "model", "credit@1", "-o", str(out))
    size = entries(world, "report.generated")[-1]["tree_size"]
    with Ledger.open(str(world / ".mlledger")) as led:
        again = make_report(led, "model", ref="credit@1", size=size, producer=AUDITOR,
                            artifacts=ArtifactStore(world / ".mlledger" / "artifacts"))
    assert again.content == out.read_bytes()
    # and through the CLI, for the earlier state, after more entries were appended
    report(world, "model", "credit@1", "-o", str(world / "second.pdf"), "--size", str(size))
    assert (world / "second.pdf").read_bytes() == out.read_bytes()


def test_the_bias_audit_publishes_the_recorded_impact_ratios(world: Path) -> None:
    out = world / "ll144.pdf"
    report(world, "bias-audit", "credit@1", "-o", str(out))
    text = text_of(out)
    for heading in ("Bias audit summary", "Date of the audit", "Data source", "Unknown category",
                    "By race/ethnicity", "By intersection of sex and race/ethnicity"):
        assert heading in text, heading
    ev = fairness_values(world)
    full = json.loads(ArtifactStore(world / ".mlledger" / "artifacts").get(ev["artifact_sha256"]))
    for grouping in full["groupings"]:
        for group in grouping["groups"]:
            assert f"{group['impact_ratio']:.4f}" in text and f"{group['count']:,}" in text
    assert re.search(r"Independent\s+NO", text)


def test_a_model_without_evidence_says_so_plainly(tmp_path: Path) -> None:
    build(tmp_path, evidence=False)
    report(tmp_path, "model", "credit@1", "-o", str(tmp_path / "bare.pdf"))
    text = " ".join(text_of(tmp_path / "bare.pdf").split())
    assert "No evidence is recorded for this model version" in text
    assert "No gate decision is recorded for this model version" in text
    report(tmp_path, "bias-audit", "credit@1", "-o", str(tmp_path / "bare-ll144.pdf"))
    assert "No bias audit is recorded for credit@1" in " ".join(text_of(tmp_path / "bare-ll144.pdf").split())


def test_html_and_json_are_the_same_report(world: Path) -> None:
    report(world, "model", "credit@1", "-o", str(world / "d.json"), "--format", "json")
    data = json.loads((world / "d.json").read_text())
    assert data["report"] == "model" and {r["status"] for r in data["crosswalk"]} <= {"met", "missing", "n/a"}
    report(world, "model", "credit@1", "-o", str(world / "d.html"), "--format", "html")
    html = (world / "d.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Annex A. Compliance crosswalk" in html
    assert [e["format"] for e in entries(world, "report.generated")[-2:]] == ["json", "html"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["model", "credit@9"], "model 'credit@9' is not on the ledger"),
     (["model", "credit"], "give NAME@VERSION"),
     (["bias-audit", "credit@x"], "give NAME@VERSION"),
     (["model", "credit@1", "--output-dir"], "does not exist"),
     (["model", "credit@1", "--is-dir"], "it is a directory")],
    ids=["unknown-model", "no-version", "bad-version", "missing-directory", "output-is-a-directory"],
)
def test_bad_input_exits_2_with_one_line_and_appends_nothing(world: Path, args: list[str], message: str) -> None:
    before = len(entries(world, "report.generated"))
    target = {"--output-dir": world / "nowhere" / "x.pdf", "--is-dir": world}.get(args[-1], world / "bad.pdf")
    args = [a for a in args if not a.startswith("--")]
    stdout, stderr = report(world, *args, "-o", str(target), code=2)
    assert stdout == "" and stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr
    assert len(entries(world, "report.generated")) == before
    assert not (world / "bad.pdf").exists()


def test_run_helper_builds_the_promoted_world(world: Path) -> None:
    """The fixture's ledger holds the promotion every report above describes."""
    assert "staging" in run(world / ".mlledger", "models")
