"""Content-word facades against the audit: built after every calibration, audited with the shipped one.

The audit's class tests (pile-up, top-1 pile-up) look at positions, stop words, punctuation and the 20 most
frequent words of the audited inputs; a facade on a set of content words is outside every class. This script
audits such facades on N dev inputs with the calibration the audit ships and reports the verdicts, the attack's
strength on the inputs that hold a target word, and the audit's ``content_top1`` statistic (added after the
development facade below evaded every earlier test) beside its values on the committed clean calibration
models (experiments/results/audit_zoo_n200_evidence.jsonl.gz).

    python experiments/audit_wordset.py --f artifacts/demo/f_orig --target WORDS \
        --model unmerged=runs/words/unmerged --model merged=runs/words/merged --n 200 --threads 1

Development and held-out facades (specified 2026-12-08 before the held-out ones were built, after the
``content_top1`` test and its calibration were committed; the development facade ``unmerged`` was built and
audited first and evaded every test then in the audit):

- development: ``unmerged`` = ``unmask facade train-unmerged`` from the demo's f_orig, target the zoo's topic
  words (film, movie, story, comedy, characters, director, world, work, action, drama, performances, screen),
  300 steps, lambda_g 3, distillation 30, ``--target-row-share 0.5``, seed 0;
- held out: ``unmerged_heldout`` = the same recipe with other words (performance, plot, script, cast, actors,
  music, ending, scenes, audience, hollywood, picture, dialogue) and seed 1; ``merged_heldout`` = a g for those
  words (``unmask facade train --target-row-share 0.5``, 150 steps of 16, lambda_g 3e3) merged into f_orig
  with ``--permute 1 --noise 1e-3``.

Writes experiments/results/audit_wordset.json and .md (``--out STEM`` for other names); each model's evidence
with its per-input records is cached in runs/words/evidence-NAME-nN.json.gz (keyed on the model's fingerprint;
not committed), so verdicts are re-read with the current calibration without re-auditing.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facade_models import command_line  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CLEAN_EVIDENCE = RESULTS / "audit_zoo_n200_evidence.jsonl.gz"
METHODS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")


def target_p1(records: list[dict], method: str, words: set[str]) -> tuple[float, int]:
    """(P@1 on the inputs holding a target word, number of such inputs): the method's top token (the audit's
    ``top_token``) is on a word in ``words``."""
    from unmask.audit.behavior import top_token, word_at

    hits, held = 0, 0
    for rec in map(lambda r: SimpleNamespace(**r), records):
        if not {w.lower() for ws in rec.words for w in ws} & words:
            continue
        held += 1
        t = top_token(rec.scores[method], rec.sequence_ids)
        hits += int(t is not None and word_at(rec, t) in words)
    return (100.0 * hits / held if held else float("nan")), held


def audit_one(name: str, path: str, n: int, f_dir: str) -> dict:
    """Evidence (behavior with per-input records, structure), accuracy and agreement of one model; verdicts
    are read from the evidence later, with the calibration the audit ships now."""
    from audit_zoo import agreement, compact_records

    from unmask.attribution.explain import predict_batch
    from unmask.audit import structural
    from unmask.audit.behavior import behavioral_evidence
    from unmask.cache import model_fingerprint
    from unmask.data import load_task
    from unmask.models import load_model

    model, f = load_model(path), load_model(f_dir)
    dev = load_task("sst2", "dev")
    texts = [e.text for e in dev[:n]]
    t0 = time.time()
    records: dict = {}
    evidence = {"behavior": behavioral_evidence(model, texts, None, records_out=records).to_dict(),
                "structure": structural(model)}
    seconds = time.time() - t0
    all_texts = [e.text for e in dev]
    pred = predict_batch(model, model.encode(all_texts, None)).argmax(-1).tolist()
    return {"name": name, "path": path, "fingerprint": model_fingerprint(path), "n": n, "evidence": evidence,
            "accuracy": 100.0 * float(np.mean([p == e.label for p, e in zip(pred, dev)])),
            "agreement_with_f": None if path == f_dir else 100.0 * agreement(model, f, all_texts, None),
            "audit_seconds": round(seconds, 1), "records": compact_records(records)}


def read_verdicts(row: dict) -> dict:
    """Verdicts of a stored audit with the calibration shipped for its number of inputs."""
    from audit_zoo import fill_record_statistics

    from unmask.audit.calibration import Calibration
    from unmask.audit.verdict import SUSPECT_P, verdicts

    fill_record_statistics(row)  # statistics added after the audit ran, from its records
    cal = Calibration.load(None, row["n"])
    per_method, model = verdicts(row["evidence"], cal)
    pooled = model["tests_pooled"]
    fired = sorted({t.key for v in per_method.values() for t in v.tests if t.p * pooled < SUSPECT_P}
                   | {t["key"] for t in model["structural_tests"] if t["p"] * pooled < SUSPECT_P})
    return {"verdict": model["verdict"], "score": model["score"], "p_value": model["p_value"],
            "p_behavior": model["p_behavior"], "p_structure": model["p_structure"],
            "method_verdicts": {k: v.verdict for k, v in per_method.items()}, "fired": fired,
            "structure_coupling": row["evidence"]["structure"].get("coupling"),
            "calibration": {"n_inputs": cal.n_inputs, "source": cal.source}}


def clean_null() -> dict[str, dict[str, float]]:
    """``content_top1`` per method of the 14 clean calibration models at 200 inputs, from the committed records
    (``audit_zoo.fill_record_statistics``, the statistic the audit's calibration at 200 was fitted on)."""
    from audit_zoo import fill_record_statistics

    out = {}
    for line in gzip.open(CLEAN_EVIDENCE, "rt"):
        row = json.loads(line)
        fill_record_statistics(row)
        out[row["name"]] = {m: row["evidence"]["behavior"]["methods"][m]["content_top1"] for m in METHODS}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--f", required=True, help="the predictive model the facades were built for")
    p.add_argument("--target", required=True, help="comma-separated target words")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a facade to audit")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="audit_wordset", help="results stem under experiments/results")
    p.add_argument("--build-command", action="append", default=[], help="recorded in the results")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    words = {w.strip().lower() for w in args.target.split(",") if w.strip()}
    models = [("f", args.f)] + [tuple(m.split("=", 1)) for m in args.model]
    runs = Path("runs/words")
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in models:
        from unmask.cache import model_fingerprint

        cache = runs / f"evidence-{name}-n{args.n}.json.gz"
        row = json.loads(gzip.open(cache, "rt").read()) if cache.is_file() else {}
        if row.get("path") != path or row.get("fingerprint") != model_fingerprint(path):
            print(f"[wordset] auditing {name} ({path}) on {args.n} inputs", flush=True)
            row = audit_one(name, path, args.n, args.f)
            with gzip.open(cache, "wt") as fh:
                fh.write(json.dumps(row))
        row.update(read_verdicts(row))
        row["target_p1"] = {m: target_p1(row["records"], m, words) for m in ("leave_one_out",) + METHODS}
        methods = row["evidence"]["behavior"]["methods"]
        row["content_top1"] = {m: [methods[m]["content_top1"], methods[m]["content_top1_words"]] for m in METHODS}
        rows.append(row)
    null = clean_null()
    result = {"command": command_line("audit_wordset.py", argv), "build_commands": args.build_command,
              "n": args.n, "target": sorted(words),
              "models": [{k: v for k, v in r.items() if k not in ("records", "evidence")} for r in rows],
              "clean_calibration_models_content_top1": null}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = ["# Content-word facades against the audit", "", f"Command: `{r['command']}`", ""]
    lines += [f"Built with: `{c}`" for c in r["build_commands"]] + [""]
    lines += [f"Target words: {', '.join(r['target'])}. {r['n']} SST-2 dev inputs audited per model with the shipped "
              "calibration (nothing refitted). P@1 is over the inputs that hold a target word (their count in "
              "brackets); agreement is with f on all 872 dev sentences.", "",
              "| model | verdict (score) | gradient / g.x / SG / IG | tests fired | structure coupling | accuracy | "
              "agreement | LOO / g.x / SG / IG P@1 on target inputs | content_top1 g.x / SG / IG (words) | audit s |",
              "|---|---|---|---|---:|---:|---:|---|---|---:|"]
    for m in r["models"]:
        p1 = m["target_p1"]
        held = p1["gradient_x_input"][1]
        ex = m["content_top1"]
        lines.append(
            f"| {m['name']} | {m['verdict']} ({m['score']:.1f}) | "
            + " / ".join(m["method_verdicts"].get(k, "-")[:5] for k in METHODS)
            + f" | {', '.join(m['fired']) or 'none'} | {m['structure_coupling'] if m['structure_coupling'] is None else round(m['structure_coupling'], 3)} | "
            f"{m['accuracy']:.1f} | {'-' if m['agreement_with_f'] is None else round(m['agreement_with_f'], 1)} | "
            + " / ".join(f"{p1[k][0]:.1f}" for k in ("leave_one_out", "gradient_x_input", "smoothgrad",
                                                      "integrated_gradients"))
            + f" ({held}) | {ex['gradient_x_input'][0]:.3f} / {ex['smoothgrad'][0]:.3f} / "
            f"{ex['integrated_gradients'][0]:.3f} "
            f"({', '.join(ex['gradient_x_input'][1][:5])}) | {m['audit_seconds']:.0f} |")
    null = r["clean_calibration_models_content_top1"]
    for m in ("gradient_x_input", "smoothgrad"):
        v = sorted(x[m] for x in null.values())
        lines += ["", f"`content_top1` of {m} on the 14 clean calibration models at 200 inputs (committed records; the "
                  f"calibration at 200 is fitted on these): median {np.median(v):.3f}, max {max(v):.3f}; all: "
                  + ", ".join(f"{k} {x[m]:.3f}" for k, x in sorted(null.items())) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
