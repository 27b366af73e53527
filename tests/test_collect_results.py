"""scripts/collect_results.py: reports found under outputs/ replace their sections; sections of
claims not re-run are kept from the existing document, marked as carried over."""

import json
from pathlib import Path

import pytest

from ttc.testing import load_script


@pytest.fixture()
def collect():
    return load_script("collect_results")


def _report(out: Path, name: str, claim: str, task: str, held: bool, body: str) -> None:
    d = out / name
    d.mkdir(parents=True)
    rec = {"claim": claim, "task": {"name": task}, "held": held, "summary": f"{body} summary"}
    (d / "claims.jsonl").write_text(json.dumps(rec) + "\n")
    (d / f"{claim}.md").write_text(f"## Title of {claim}\n\n{body}\n\n![x]({claim}.png)\n")
    (d / f"{claim}.png").write_bytes(b"png")


def test_merge_replaces_rerun_sections_and_keeps_others(collect, tmp_path, monkeypatch):
    out, doc = tmp_path / "outputs", tmp_path / "docs" / "RESULTS.md"
    _report(out, "repro", "compute_optimal", "arithmetic", False, "first run")
    _report(out, "repro_cov", "coverage", "arithmetic", True, "coverage run")
    argv = ["collect", "--outputs", str(out), "--doc", str(doc), "--intro", "none"]
    monkeypatch.setattr("sys.argv", argv)
    doc.parent.mkdir()
    collect.main()
    first = doc.read_text()
    assert "| compute_optimal | arithmetic | **did not hold** | first run summary |" in first
    assert (doc.parent / "results" / "repro-compute_optimal.png").exists()
    # a later machine re-runs only compute_optimal
    (tmp_path / "outputs2").mkdir()
    _report(tmp_path / "outputs2", "repro", "compute_optimal", "arithmetic", True, "second run")
    monkeypatch.setattr("sys.argv", [*argv[:2], str(tmp_path / "outputs2"), *argv[3:]])
    collect.main()
    second = doc.read_text()
    assert "first run" not in second and "second run" in second
    assert "| compute_optimal | arithmetic | **held** | second run summary |" in second
    assert "coverage run\n" in second  # the section body is kept verbatim
    assert f"| coverage | arithmetic | **held** | coverage run summary{collect.CARRIED} |" in second
    # order follows ORDER, and a third pass carries the note once, not twice
    assert second.index("compute_optimal arithmetic -->") < second.index("coverage arithmetic -->")
    collect.main()
    assert doc.read_text() == second
    # --no-keep drops what was not re-run
    monkeypatch.setattr("sys.argv", [*argv[:2], str(tmp_path / "outputs2"), *argv[3:],
                                     "--no-keep"])
    collect.main()
    assert "coverage" not in doc.read_text().split("| claim |", 1)[1]

