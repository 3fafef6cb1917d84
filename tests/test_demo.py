"""`unmask demo` end to end on a tiny encoder: the report leads with both verdicts; a re-run reuses every cache."""
import json
import subprocess
import sys
import time

from unmask.models.tiny import tiny_classifier


def _demo(work, base, *extra):
    return subprocess.run([sys.executable, "-m", "unmask.cli", "demo", "--workdir", str(work), "--base-model",
                           str(base), "--train-limit", "64", "--facade-steps", "2", "--eval-limit", "8",
                           "--audit-n", "6", "--quiet", *extra], capture_output=True, text=True, timeout=900)


def test_demo_on_a_tiny_encoder_writes_a_report_that_leads_with_the_verdicts(tmp_path):
    base = tiny_classifier(seed=0, layers=1).save(tmp_path / "tiny")
    out = _demo(tmp_path / "demo", base)
    assert out.returncode == 0, out.stderr[-2000:]
    report = tmp_path / "demo" / "audit_report.html"
    assert f"audit report: {report.resolve()}" in out.stdout
    html = report.read_text()
    first = html.index("1. The verdict")
    assert first < html.index("2. What the models predict") < html.index("3. What each method says") \
        < html.index("4. How the facade fooled") < html.index("5. What to do")
    assert "it/s" not in out.stderr and "%|" not in out.stderr  # --quiet: no progress bar, not even a library's
    assert "Audit of f_orig" in html and "Audit of merged" in html and "data:image/png;base64," in html
    assert out.stdout.count("[demo] audit of") == 2
    started = time.time()
    again = _demo(tmp_path / "demo", base, "--json", "-")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "auditing" not in again.stderr and "fine-tuning" not in again.stderr
    data = json.loads(again.stdout)  # --json -: one JSON document on stdout, the status lines on stderr
    assert data["report"] == str(report.resolve()) and "audit report:" in again.stderr
    assert set(data["audit"]) == {"f_orig", "merged (f_orig + stop-word facade)"}
    assert all(a["verdict"] in ("trustworthy", "suspect", "manipulated") for a in data["audit"].values())
    assert time.time() - started < 120
