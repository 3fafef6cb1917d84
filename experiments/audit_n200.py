"""The audit at the CLI's default n = 200 on held-out zoo models.

    python experiments/audit_n200.py [--threads 2] [--only NAME,...] [--report-only]

Runs `unmask audit runs/zoo/NAME --data TASK --n 200 --json OUT` per model (one at a time; a model whose
report exists is skipped, so a killed run continues), then writes experiments/results/audit_n200.{json,md}
with the zoo's n = 40 verdicts beside (audit_zoo.json). The evidence in a report does not depend on the
calibration, so every report is re-scored with the calibration an audit on 200 inputs uses now
(``Calibration.load(None, 200)``): the n = 200 one once `audit_zoo.py calibrate --n 200` has shipped it, and
the verdict the CLI printed when the report was made is kept beside it. Delete runs/audit200/reports after a
change to the evidence code (behavior.py, structure.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = {"sst2_s1_16k": "sst2", "lstm_s0": "sst2", "roberta_scratch_s0": "sst2", "distilbert_scratch_s0": "sst2",
          "minilm4_s0": "sst2", "bert_scratch_s1": "sst2", "rp_s0": "sst2", "unmerged_stop": "sst2",
          "unmerged_first": "sst2", "unmerged_stop_seed1": "sst2", "unmerged_lastword_s300": "sst2",
          "unmerged_words_dev": "sst2",  # the v4 development word-set facade (calibration split)
          "unmerged_pronouns": "sst2", "unmerged_lastword_d100": "sst2", "unmerged_punct_aware_cap30": "sst2",
          "unmerged_stop_lam10": "sst2",  # zoo v4 (held out)
          "unmerged_prepositions": "sst2", "unmerged_articles": "sst2", "unmerged_pronouns_s1": "sst2",  # zoo v5
          "rte_s1": "rte",  # RTE last: its 200 pairs are the longest run
          # the rest of the zoo's held-out clean models, added when the n = 200 calibration was first fitted
          # (its false positive on distilbert_scratch_s0 asked for a larger clean test set)
          "sst2_s3_2k": "sst2", "sst2_s8_4k": "sst2", "sst2_s9_8k": "sst2", "sst2_s10_2k": "sst2",
          "sst2_s11_8k": "sst2", "lstm_s2": "sst2", "minilm3_s0": "sst2", "minilm3_s2": "sst2",
          "distilbert_scratch_s2": "sst2", "roberta_scratch_s2": "sst2", "rp_s1": "sst2", "rte_s3": "rte"}
ZOO = Path("runs/zoo")
RESULTS = Path("experiments/results")
REPORTS = Path("runs/audit200/reports")
N = 200


def rescored(report: dict, cal) -> dict:
    """The report's verdicts recomputed from its evidence with the calibration ``cal``."""
    from unmask.audit.verdict import verdicts

    methods, model = verdicts(report["evidence"], cal)
    return {"verdict": model["verdict"], "score": model["score"], "p_value": model["p_value"],
            "method_verdicts": {m: v.verdict for m, v in methods.items()}}


def run(names: list[str], threads: int) -> None:
    out = REPORTS
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = out / f"{name}.json"
        if path.is_file():
            continue
        start = time.time()
        tmp = path.with_suffix(".tmp")
        cmd = [str(Path(sys.executable).parent / "unmask"), "audit", str(ZOO / name), "--data", MODELS[name],
               "--n", str(N), "--threads", str(threads), "--quiet", "--json", str(tmp)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(tmp.read_text())
        report["wall_seconds"] = round(time.time() - start)
        path.write_text(json.dumps(report))
        tmp.unlink()
        print(f"{name}: {report['verdict']} ({report['score']:.1f}), {report['wall_seconds']} s", flush=True)


def summarize() -> dict:
    zoo = {m["name"]: m for m in json.loads((RESULTS / "audit_zoo.json").read_text())["per_model"]}
    from unmask.audit.calibration import Calibration

    cal = Calibration.load(None, N)  # the one an audit on N inputs uses now
    models = {}
    for name in MODELS:
        path = REPORTS / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        now = rescored(r, cal)
        gx = r["evidence"]["behavior"]["methods"]["gradient_x_input"]
        z = zoo.get(name, {})
        models[name] = {"kind": z.get("kind"), **now,
                        "cli_verdict": r["verdict"], "cli_score": r["score"],
                        "gx_pileup": gx["pileup"], "gx_top1_pileup": gx.get("top1_pileup"),
                        "gx_misplacement": gx["misplacement"], "wall_seconds": r["wall_seconds"],
                        "n40_verdict": z.get("verdict"), "n40_score": z.get("score"),
                        "n40_gx_top1_pileup": z.get("statistics", {}).get("gradient_x_input.top1_pileup"),
                        "n40_gx_pileup": z.get("statistics", {}).get("gradient_x_input.pileup"),
                        "split": z.get("split"), "attack": z.get("attack")}
    calibration = {"n_inputs": cal.n_inputs, "source": cal.source,
                   "sha256_12": hashlib.sha256(json.dumps(cal.to_dict(), sort_keys=True).encode()).hexdigest()[:12]}
    return {"command": "python experiments/audit_n200.py", "n": N, "calibration": calibration, "models": models,
            "heldout": heldout_summary(models)}


def heldout_summary(models: dict) -> dict:
    """TPR / FPR / AUC on the held-out split: every clean model, and the facades that fool g.x (the zoo's attack
    status at n = 40 is not 'weak'), as in audit_zoo.py."""
    from audit_zoo import detection_rates

    held = [{**m, "flagged": m["verdict"] != "trustworthy"} for m in models.values() if m["split"] == "heldout"]
    return detection_rates([m for m in held if m["kind"] == "clean"],
                           [m for m in held if m["kind"] == "facade" and m["attack"] != "weak"])


def markdown(result: dict) -> str:
    def num(x):
        return "-" if x is None else f"{x:.3f}"

    cal = result["calibration"] or {}
    lines = ["# The audit at the CLI's default n = 200", "",
             f"Command: `{result['command']}` (per model `unmask audit runs/zoo/NAME --data sst2|rte --n 200 "
             "--quiet --json OUT`, one model at a time). Held-out models of the audit zoo (`audit_zoo.md`); "
             f"verdicts from the calibration an audit on 200 inputs uses: {cal.get('source')} "
             f"(fitted at n = {cal.get('n_inputs')}, sha256 {cal.get('sha256_12')}). The n = 40 columns are the "
             "zoo's (its own calibration at n = 40).", "",
             "| model | kind | verdict n=200 (score) | verdict n=40 (score) | g.x pile-up 200 / 40 | "
             "g.x top-1 pile-up 200 / 40 | g.x misplacement 200 | gradient / g.x / SG / IG at n=200 | wall s |",
             "|---|---|---|---|---|---|---|---|---:|"]
    for name, m in result["models"].items():
        mv = m["method_verdicts"]
        short = " / ".join(mv.get(k, "-")[:5] for k in ("gradient", "gradient_x_input", "smoothgrad",
                                                        "integrated_gradients"))
        n40 = f"{m['n40_verdict']} ({m['n40_score']:.1f})" if m["n40_verdict"] else "-"
        lines.append(f"| {name} | {m['kind']} | {m['verdict']} ({m['score']:.1f}) | {n40} | "
                     f"{num(m['gx_pileup'])} / {num(m['n40_gx_pileup'])} | {num(m['gx_top1_pileup'])} / "
                     f"{num(m['n40_gx_top1_pileup'])} | {num(m['gx_misplacement'])} | {short} | {m['wall_seconds']} |")
    clean = [m for m in result["models"].values() if m["kind"] == "clean"]
    fac = [m for m in result["models"].values() if m["kind"] == "facade"]
    lines += ["", f"Clean models flagged at n = 200: {sum(m['verdict'] != 'trustworthy' for m in clean)}/{len(clean)}; "
              f"facades flagged: {sum(m['verdict'] != 'trustworthy' for m in fac)}/{len(fac)}."]
    h = result["heldout"]
    if h.get("auc") is not None:
        lines += ["", f"Held-out split (every clean model; the facades that fool g.x, i.e. not 'weak' in the zoo): "
                  f"{h['n_clean']} clean, FPR {100 * h['fpr']:.1f}%; {h['n_facade']} facades, "
                  f"TPR {100 * h['tpr']:.1f}%; AUC {h['auc']:.3f}."]
    missing = [name for name in MODELS if name not in result["models"]]
    if missing:
        lines += ["", "Not audited at n = 200 (no report): " + ", ".join(missing) + "."]
    changed = [f"{name} ({m['cli_verdict']} {m['cli_score']:.1f} when audited)" for name, m in result["models"].items()
               if m["cli_verdict"] != m["verdict"]]
    if changed:
        lines += ["", "Verdicts that differ from the one the CLI printed when the report was made (under the "
                  "calibration shipped then): " + ", ".join(changed) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated model names (default: all)")
    p.add_argument("--report-only", action="store_true", help="write the results from the reports already made")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)}")
    if not args.report_only:
        run(names, args.threads)
    result = summarize()
    (RESULTS / "audit_n200.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "audit_n200.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
