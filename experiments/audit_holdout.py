"""Held-out attacks on the audit: facade families the zoo never had, audited with the COMMITTED calibration.

    python experiments/audit_holdout.py build --f-orig runs/zoo/sst2_s1_16k [--root runs/holdout] [--steps 150]
    python experiments/audit_holdout.py evaluate [--n 100]      # audit every variant and f_orig (cached)
    python experiments/audit_holdout.py report                  # experiments/results/audit_holdout.{json,md}

Built after the calibration (src/unmask/audit/calibration.json) was frozen; nothing here refits it. Use a clean
model the calibration never saw as f_orig (e.g. the zoo's held-out sst2_s1_16k): then f_orig's own verdict is
a held-out false-positive check too. Families:

- last word: a facade toward the last non-punctuation word before [SEP] (target ``last_word``; the zoo's
  positional facade was the first token, and its ``last`` token on SST-2 is mostly the final ".");
- content words: toward a fixed set of frequent SST-2 nouns (``words:film,movie,...``), trained on rows that
  hold a target (``facade.train.enrich_target_rows``: only 15% of SST-2 training phrases do);
- audit-aware: the same targets with ``FacadeObjective.magnitude_weight`` (a hinge keeping the merged model's
  first-order prediction of masking each token within ``magnitude_cap`` x f's: the audit's magnitude ratio)
  and ``share_cap`` (no reward for target share above the cap: the audit's pile-up);
- audit-aware + concealment: noise on the zero blocks, hidden-unit permutation, and both.

Each model is a stage directory under --root with a ``stage.json`` of its inputs (unmask.cache): finished
stages are skipped, a started one resumes from its checkpoint (at most --checkpoint-every steps lost), a
stage whose inputs changed is rebuilt. Evidence is cached per model on (model fingerprint, n, audit code).
An attack whose gradient x input P@1 on its targets did not rise is a FAILED ATTACK, not a detection.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ROOT = Path("runs/holdout")
RESULTS = Path("experiments/results")
EVAL_N = 100
WORDS = "words:film,movie,story,characters,director"
# The zoo's objective (experiments/audit_zoo.py build_g): margin hinge + IG-baseline term.
BASE_OBJECTIVE = dict(lambda_g=1e3, entropy_weight=1e3, agreement_weight=1e4, margin_weight=3e4, baseline_weight=1e4)
AWARE = dict(magnitude_weight=1e4, magnitude_cap=1.5, magnitude_baseline="mask", share_cap=0.3)
FACADES = {
    "g_lastword": dict(target="last_word", objective={}),
    "g_words": dict(target=WORDS, objective=dict(lambda_g=3e3), enrich=0.5),
    "g_lastword_aware": dict(target="last_word", objective=AWARE),
    "g_words_aware": dict(target=WORDS, objective=dict(AWARE, lambda_g=3e3), enrich=0.5),
    # the target a facade learns in 150 steps (the demo's), with the terms aimed at the audit's statistics
    "g_stop_aware": dict(target="stop", objective=AWARE),
}
# name -> (facade, concealment steps applied in order to merge(f_orig, facade))
VARIANTS = {
    "merged_lastword": ("g_lastword", ()),
    "merged_words": ("g_words", ()),
    "merged_lastword_aware": ("g_lastword_aware", ()),
    "merged_lastword_aware_noise1e-3": ("g_lastword_aware", ("noise1e-3",)),
    "merged_lastword_aware_permuted": ("g_lastword_aware", ("permute1",)),
    "merged_lastword_aware_permuted_noise1e-3": ("g_lastword_aware", ("permute1", "noise1e-3")),
    "merged_words_aware": ("g_words_aware", ()),
    "merged_words_aware_permuted_noise1e-3": ("g_words_aware", ("permute1", "noise1e-3")),
    "merged_stop_aware": ("g_stop_aware", ()),
    "merged_stop_aware_permuted_noise1e-3": ("g_stop_aware", ("permute1", "noise1e-3")),
}
FAMILY = {"g_lastword": "last word", "g_words": "content words", "g_lastword_aware": "last word, audit-aware",
          "g_words_aware": "content words, audit-aware", "g_stop_aware": "stop words, audit-aware"}
P1_METHODS = ("gradient_x_input", "smoothgrad")
ATTACK_GAIN = 20.0     # points of gradient x input P@1 (rows with a target) over f_orig: the attack works
SUSPECT_LEVEL = 1e-2   # unmask.audit.verdict.SUSPECT_P
MIN_AGREEMENT = 97.0   # the bar for a working attack's agreement with f_orig (reported, not required)
EVIDENCE_CODE = ("src/unmask/audit/__init__.py", "src/unmask/audit/behavior.py", "src/unmask/audit/structure.py",
                 "src/unmask/audit/verdict.py", "src/unmask/audit/calibration.py", "src/unmask/audit/calibration.json",
                 "src/unmask/metrics/faithfulness.py", "src/unmask/facade/targets.py")

QUIET = False


def log(msg: str) -> None:
    if not QUIET or msg.startswith("!"):
        print(f"[holdout {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def done(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


# ---------------------------------------------------------------------------------------------- settings
class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        self.root = Path(args.root)
        self.manifest = self.root / "holdout.json"
        saved = json.loads(self.manifest.read_text()) if self.manifest.is_file() else {}
        f_orig = args.f_orig or saved.get("f_orig")
        if not f_orig:
            raise SystemExit("error: --f-orig is required (no holdout.json under --root records one)")
        self.f_orig = Path(f_orig)
        if not done(self.f_orig):
            raise SystemExit(f"error: {self.f_orig} is not a saved model directory (config.json + model.safetensors)")
        self.task = "sst2"
        # build settings: from the command line or the defaults (never from an earlier run's record)
        self.steps = args.steps or 150
        self.train_limit = args.train_limit
        self.facade_hidden = args.facade_hidden or 256
        self.facade_intermediate = args.facade_intermediate or 3072
        self.batch_size = args.batch_size or 16
        self.checkpoint_every = args.checkpoint_every or 25
        self.results = Path(getattr(args, "results", None) or RESULTS)

    def record(self, stage: str, argv: list[str]) -> None:
        """Keep f_orig (later stages reuse it), the build settings and the exact command line of each stage."""
        saved = json.loads(self.manifest.read_text()) if self.manifest.is_file() else {}
        if saved.get("f_orig") and Path(saved["f_orig"]).resolve() != self.f_orig.resolve():
            raise SystemExit(f"error: {self.root} was built against {saved['f_orig']}, not {self.f_orig}; "
                             f"use another --root")
        saved["f_orig"] = str(self.f_orig)
        if stage == "build":
            saved["build"] = dict(steps=self.steps, train_limit=self.train_limit, facade_hidden=self.facade_hidden,
                                  facade_intermediate=self.facade_intermediate, batch_size=self.batch_size,
                                  checkpoint_every=self.checkpoint_every)
        line = "python experiments/audit_holdout.py " + shlex.join(argv)
        runs = saved.setdefault("commands", {}).setdefault(stage, [])
        if line not in runs:
            runs.append(line)
        from unmask.io import write_json_atomic

        write_json_atomic(self.manifest, saved)

    def path(self, name: str) -> Path:
        return self.f_orig if name == "f_orig" else self.root / name

    def facade_config(self, name: str):
        from unmask.facade.objective import FacadeObjective
        from unmask.facade.train import FacadeConfig

        objective = FacadeObjective(**{**BASE_OBJECTIVE, **FACADES[name]["objective"]})
        return FacadeConfig(steps=self.steps, batch_size=self.batch_size, max_length=64,
                            checkpoint_every=self.checkpoint_every, eval_every=max(self.checkpoint_every, 50),
                            objective=objective)


def target_spec(target: str):
    from unmask.facade.targets import parse_target

    return parse_target(target)


# ---------------------------------------------------------------------------------------------- stages
def begin(s: Settings, name: str, inputs: dict, resumable: bool = True) -> tuple[str, bool]:
    """``(fingerprint, needed)``; a stage made from other inputs is deleted so nothing of it is reused."""
    from unmask.cache import inputs_fingerprint, stage_state, write_stage

    out = s.path(name)
    fp = inputs_fingerprint(**inputs)
    state = stage_state(out, fp)
    if state == "done" and done(out):
        return fp, False
    if state == "stale":
        if s.root.resolve() not in out.resolve().parents:
            raise SystemExit(f"error: refusing to delete {out}: not under --root {s.root}")
        log(f"{name}: {out} was made from other inputs; rebuilding it")
        shutil.rmtree(out)
    elif state == "partial":
        log(f"{name}: resuming {out} (same inputs)")
    if resumable:
        write_stage(out, fp, inputs, done=False)
    return fp, True


def build_facade(s: Settings, name: str, f, train: list, dev: list, progress: bool) -> None:
    from unmask.cache import data_fingerprint, model_fingerprint, write_stage
    from unmask.facade.model import new_facade
    from unmask.facade.train import enrich_target_rows, train_facade

    r = FACADES[name]
    cfg = s.facade_config(name)
    data, coverage = train, None
    if r.get("enrich"):
        data, coverage = enrich_target_rows(f, train, target_spec(r["target"]), share=r["enrich"], max_length=64)
    inputs = {"f_orig": model_fingerprint(s.f_orig), "target": r["target"], "facade": asdict(cfg),
              "hidden": s.facade_hidden, "intermediate": s.facade_intermediate, "seed": 0,
              "train": data_fingerprint(data), "dev": data_fingerprint(dev[:cfg.eval_size]), "coverage": coverage}
    fp, needed = begin(s, name, inputs)
    if not needed:
        return
    log(f"training {name} (target {r['target']}, {cfg.steps} steps, batch {cfg.batch_size}"
        + (f"; rows with a target {coverage['share_before']:.1%} -> {coverage['share_after']:.1%}" if coverage else "")
        + ")")
    g = new_facade(f, seed=0, hidden=s.facade_hidden, intermediate=s.facade_intermediate)
    t0 = time.time()
    result = train_facade(g, data, dev, target_spec(r["target"]), s.path(name), cfg, f=f, progress=progress,
                          log=log)
    final = result.get("final", {})
    log(f"  {name}: {time.time() - t0:.0f} s; dev P@1 {final.get('p_at_1', float('nan')):.3f}, "
        f"agree {final.get('agree', float('nan')):.3f}, |g|/|f| {final.get('grad_ratio', float('nan')):.3f}"
        + (f", M/M_f {final['magnitude_vs_f']:.2f}" if "magnitude_vs_f" in final else ""))
    write_stage(s.path(name), fp, inputs, done=True)


def build_variant(s: Settings, name: str, f, dev_texts: list[str]) -> None:
    from unmask.cache import model_fingerprint, write_stage
    from unmask.facade import conceal
    from unmask.facade.merge import merge, save_atomic
    from unmask.io import write_json_atomic
    from unmask.models import load_model

    g_name, steps = VARIANTS[name]
    if not done(s.path(g_name)):
        log(f"! {name}: skipped, {g_name} is not built")
        return
    inputs = {"f_orig": model_fingerprint(s.f_orig), g_name: model_fingerprint(s.path(g_name)),
              "conceal": list(steps)}
    fp, needed = begin(s, name, inputs, resumable=False)
    if not needed:
        return
    t0 = time.time()
    plain = merge(f, load_model(s.path(g_name)))
    model = plain
    for step in steps:
        if step.startswith("noise"):
            model = conceal.add_noise(model, float(step.removeprefix("noise")), seed=1, where="zeros")
        elif step.startswith("permute"):
            model = conceal.permute_hidden(model, seed=int(step.removeprefix("permute")))
        else:
            raise ValueError(step)
    change = conceal.logit_change(plain, model, dev_texts) if steps else None
    out = save_atomic(model, s.path(name))
    write_json_atomic(out / "variant.json", {"facade": g_name, "conceal": list(steps), "vs_plain_merge": change,
                                             "seconds": round(time.time() - t0, 1)})
    write_stage(out, fp, inputs, done=True)
    log(f"built {name} ({', '.join(steps) or 'plain merge'}) in {time.time() - t0:.0f} s"
        + (f"; max logit change vs the plain merge {change['max_logit_change']:.2e}" if change else ""))


def build(s: Settings, names: list[str] | None, progress: bool) -> None:
    from tqdm.auto import tqdm

    from unmask.data import load_task
    from unmask.models import load_model

    train = load_task(s.task, "train", limit=s.train_limit)
    dev = load_task(s.task, "dev")
    f = load_model(s.f_orig)
    todo = [n for n in list(FACADES) + list(VARIANTS) if names is None or n in names]
    for name in tqdm(todo, desc="holdout build", disable=not progress):
        if name in FACADES:
            build_facade(s, name, f, train, dev, progress)
        else:
            build_variant(s, name, f, [e.text for e in dev[:64]])


# ---------------------------------------------------------------------------------------------- evaluate
def target_of(name: str) -> str | None:
    if name == "f_orig":
        return None
    return FACADES[VARIANTS[name][0]]["target"]


def evidence_key(s: Settings, name: str, n: int) -> str:
    from unmask.cache import model_fingerprint

    h = hashlib.sha256(model_fingerprint(s.path(name)).encode())
    h.update(json.dumps({"n": n, "task": s.task, "p1_methods": P1_METHODS,
                         "targets": sorted({f["target"] for f in FACADES.values()}),
                         "reference": model_fingerprint(s.f_orig)}, sort_keys=True).encode())
    for f in EVIDENCE_CODE:
        h.update((REPO / f).read_bytes())
    import inspect

    h.update(inspect.getsource(p_at_1).encode())  # this script's own measurement
    return h.hexdigest()[:16]


def p_at_1(model, examples: list, targets: list[str]) -> dict:
    """Per target and method: P@1 (%) over all inputs and over inputs holding a target, Mean Attribution."""
    from unmask.attribution.explain import attribute_batch, predict_batch
    from unmask.data.readers import pairs_of
    from unmask.facade.evaluate import EvalConfig, paper_methods
    from unmask.facade.targets import TargetPositions
    from unmask.metrics.saliency import saliency_summary

    batch = model.encode([e.text for e in examples], pairs_of(examples))
    cfg = EvalConfig(methods=P1_METHODS)
    logits = predict_batch(model, batch, cfg.token_budget)
    preds = logits.argmax(-1)
    masks = {}
    for t in targets:
        tp = TargetPositions(target_spec(t), model.tokenizer)
        masks[t] = [tp.mask_tokens(batch.tokens[i][:n], batch.sequence_ids[i][:n]) for i, n in enumerate(batch.lengths)]
    out: dict = {}
    for name, method in paper_methods(cfg).items():
        records = attribute_batch(model, batch, method, preds, logits)
        for t in targets:
            has = [i for i, m in enumerate(masks[t]) if m.any()]
            all_rows = saliency_summary(records, masks[t])
            with_t = saliency_summary([records[i] for i in has], [masks[t][i] for i in has])
            out.setdefault(t, {})[name] = {"p1": all_rows["p1"], "attr": all_rows["attr"],
                                           "p1_with_target": with_t["p1"],
                                           "rows_with_target": len(has), "rows": len(records)}
    return out


def evaluate(s: Settings, names: list[str] | None, n: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    from unmask.attribution.explain import predict_batch
    from unmask.audit import audit
    from unmask.audit.calibration import Calibration
    from unmask.data import load_task
    from unmask.io import write_json_atomic
    from unmask.models import load_model

    calibration = Calibration.load(None)  # the committed one: never refitted here
    dev = load_task(s.task, "dev")
    texts = [e.text for e in dev[:n]]
    all_texts = [e.text for e in dev]
    out_dir = s.root / "evidence"
    out_dir.mkdir(parents=True, exist_ok=True)
    f = load_model(s.f_orig)
    f_pred = predict_batch(f, f.encode(all_texts)).argmax(-1)
    targets = sorted({r["target"] for r in FACADES.values()})
    todo = [m for m in ["f_orig", *VARIANTS] if names is None or m in names]
    bar = tqdm(todo, desc="holdout audit", disable=not progress)
    for name in bar:
        if not done(s.path(name)):
            log(f"! {name}: not built; skipped")
            continue
        key = evidence_key(s, name, n)
        path = out_dir / f"{name}.json"
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            continue
        bar.set_postfix_str(name)
        model = f if name == "f_orig" else load_model(s.path(name))
        t0 = time.time()
        say = (lambda msg: bar.set_postfix_str(f"{name}: {msg}")) if progress else None
        report = audit(model, texts, calibration=calibration, progress=say)
        audit_seconds = time.time() - t0
        t1 = time.time()
        saliency = p_at_1(model, dev[:n], [target_of(name)] if name != "f_orig" else targets)
        pred = predict_batch(model, model.encode(all_texts)).argmax(-1)
        row = {"key": key, "name": name, "target": target_of(name), "n": n,
               "verdict": report.verdict, "score": report.score, "p_value": report.p_value, "summary": report.summary,
               "method_verdicts": {m: v.verdict for m, v in report.methods.items()},
               "method_p_values": {m: v.p_value for m, v in report.methods.items()},
               "agreement_with_f": 100.0 * float((pred == f_pred).float().mean()), "agreement_n": len(all_texts),
               "audit_seconds": round(audit_seconds, 1), "p1_seconds": round(time.time() - t1, 1),
               "saliency": saliency, "report": report.to_dict()}
        variant = s.path(name) / "variant.json"
        if variant.is_file():
            row["variant"] = json.loads(variant.read_text())
        facade_json = s.path(VARIANTS[name][0]) / "facade.json" if name in VARIANTS else None
        if facade_json is not None and facade_json.is_file():
            fj = json.loads(facade_json.read_text())
            row["training"] = {"steps": fj.get("steps"), "final": fj.get("final"),
                               "seconds_last_run": fj.get("seconds_this_run")}
        write_json_atomic(path, row)
        log(f"{name}: {row['verdict']} (score {row['score']:.1f}), agreement {row['agreement_with_f']:.1f}%, "
            f"audit {audit_seconds:.0f} s")


# ---------------------------------------------------------------------------------------------- report
def audit_tests(report: dict) -> tuple[dict[str, float], list[dict]]:
    """(every tested statistic by key, the tests that fired: Bonferroni p < the suspect level) of an audit."""
    from unmask.audit.verdict import SUSPECT_P

    level = report["evidence"]["model_level"]
    n_tests = level["tests_pooled"]
    tests = {(t["key"], t["value"], t["p"]) for v in report["methods"].values() for t in v.get("tests", [])}
    tests |= {(t["key"], t["value"], t["p"]) for t in level["structural_tests"]}
    fired = [{"key": k, "value": v, "p_bonferroni": min(1.0, p * n_tests)}
             for k, v, p in sorted(tests, key=lambda t: t[2]) if p * n_tests < SUSPECT_P]
    return {k: v for k, v, _ in sorted(tests)}, fired


def outcome(row: dict, f_row: dict) -> dict:
    """Attack success (gradient x input P@1 on rows with a target vs f_orig's) and what the audit made of it."""
    t = row["target"]
    p1 = row["saliency"][t]["gradient_x_input"]
    f_p1 = f_row["saliency"][t]["gradient_x_input"]
    gain = p1["p1_with_target"] - f_p1["p1_with_target"]
    works = gain >= ATTACK_GAIN
    flagged = row["verdict"] in ("suspect", "manipulated")
    p_behavior = row.get("p_behavior")
    by_behavior = flagged and (p_behavior is None or p_behavior < SUSPECT_LEVEL)
    status = ("evades the audit" if works and not flagged
              else "detected" if works and by_behavior
              else "evades the behavioral audit; flagged by the weight structure only" if works
              else "failed attack (flagged anyway)" if flagged else "failed attack")
    sg, f_sg = row["saliency"][t].get("smoothgrad"), f_row["saliency"][t].get("smoothgrad")
    return {"attack_works": works, "p1_gain": gain, "p1": p1, "f_p1": f_p1, "sg_p1": sg, "f_sg_p1": f_sg,
            "flagged": flagged, "status": status,
            "agreement_ok": row["agreement_with_f"] >= MIN_AGREEMENT}


def thresholds(n_tests: int) -> dict[str, float]:
    """Per tested statistic of the committed calibration: the value at which that test alone makes a method
    'suspect' (Bonferroni over ``n_tests``). Read off the calibration, nothing refitted."""
    from unmask.audit.calibration import Calibration, fire_values
    from unmask.audit.verdict import SUSPECT_P

    return fire_values(Calibration.load(None), SUSPECT_P / n_tests)


def word_presence(s: Settings, n: int) -> dict[str, float]:
    """Share of the audited inputs holding each word of the word-set targets: the most pile-up a facade on
    that word can show (the audit averages a class's share over all inputs, those without it count 0)."""
    from unmask.data import load_task
    from unmask.facade.targets import TargetPositions
    from unmask.models import load_model

    f = load_model(s.f_orig)
    batch = f.encode([e.text for e in load_task(s.task, "dev")[:n]])
    out = {}
    for t in sorted({r["target"] for r in FACADES.values() if r["target"].startswith("words:")}):
        for w in target_spec(t):
            tp = TargetPositions([w], f.tokenizer)
            out[w] = float(tp.has_target(batch.input_ids, batch.attention_mask).float().mean())
    return out


def report(s: Settings, n: int, argv: list[str]) -> dict:
    from unmask.io import write_json_atomic, write_text_atomic

    rows = {}
    from unmask.audit.calibration import Calibration
    from unmask.audit.verdict import verdicts

    calibration = Calibration.load(None)
    for name in ["f_orig", *VARIANTS]:
        p = s.root / "evidence" / f"{name}.json"
        if p.is_file():
            r = json.loads(p.read_text())
            if r.get("n") == n:
                # verdicts re-derived from the stored evidence with the committed calibration and the current
                # verdict rule, so a rule change does not need the audits to be rerun
                methods, model = verdicts(r["report"]["evidence"], calibration)
                r.update(verdict=model["verdict"], score=model["score"], p_value=model["p_value"],
                         method_verdicts={m: v.verdict for m, v in methods.items()},
                         method_p_values={m: v.p_value for m, v in methods.items()},
                         p_behavior=model.get("p_behavior"), p_structure=model.get("p_structure"))
                rows[name] = r
    if "f_orig" not in rows:
        raise SystemExit(f"error: no evidence for f_orig with --n {n}; run evaluate first")
    f_row = rows["f_orig"]
    manifest = json.loads(s.manifest.read_text()) if s.manifest.is_file() else {}
    commands = {k: list(v) for k, v in manifest.get("commands", {}).items()}
    commands["report"] = ["python experiments/audit_holdout.py " + shlex.join(argv)]
    per_model = []
    for name, r in rows.items():
        statistics, fired = audit_tests(r["report"])
        entry = {"name": name, "target": r["target"], "verdict": r["verdict"], "score": r["score"],
                 "p_value": r["p_value"], "p_behavior": r.get("p_behavior"), "p_structure": r.get("p_structure"),
                 "method_verdicts": r["method_verdicts"], "fired_tests": fired,
                 "agreement_with_f": r["agreement_with_f"], "audit_seconds": r["audit_seconds"],
                 "p1_seconds": r["p1_seconds"], "statistics": statistics}
        if name == "f_orig":
            entry.update(kind="clean", family="f_orig (reference)", conceal=[], status=(
                "false positive" if r["verdict"] != "trustworthy" else "clean, passes"))
            entry["p_at_1_by_target"] = r["saliency"]
        else:
            g_name, steps = VARIANTS[name]
            entry.update(kind="facade", facade=g_name, family=FAMILY[g_name], conceal=list(steps),
                         objective={**BASE_OBJECTIVE, **FACADES[g_name]["objective"]},
                         training=r.get("training"), **outcome(r, f_row))
        per_model.append(entry)
    result = {"command": commands, "eval_n": n, "f_orig": str(s.f_orig), "calibration": "committed "
              "src/unmask/audit/calibration.json (not refitted)", "attack_gain_points": ATTACK_GAIN,
              "min_agreement": MIN_AGREEMENT, "build_settings": manifest.get("build"), "per_model": per_model,
              "missing": [m for m in ["f_orig", *VARIANTS] if m not in rows]}
    n_tests = f_row["report"]["evidence"]["model_level"]["tests_pooled"]
    result["suspect_thresholds"] = {"tests_pooled": n_tests, "values": thresholds(n_tests)}
    result["word_presence_in_audited_inputs"] = word_presence(s, n)
    s.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(s.results / "audit_holdout.json", result)
    write_text_atomic(s.results / "audit_holdout.md", markdown(result))
    log(f"wrote {s.results / 'audit_holdout.json'} and {s.results / 'audit_holdout.md'}")
    return result


def markdown(result: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{x:.1f}"

    cmd = result["command"]
    lines = ["# Audit on held-out attack families (calibration frozen before they were built)", "",
             "Commands:", ""]
    lines += [f"- {stage}: " + "; ".join(f"`{c}`" for c in cmd[stage]) for stage in ("build", "evaluate", "report")
              if stage in cmd]
    b = result.get("build_settings") or {}
    lines += ["", f"Facades: {b.get('steps', '?')} steps, batch {b.get('batch_size', '?')}, "
              f"g {b.get('facade_hidden', '?')} "
              f"hidden; objectives in the JSON (per_model[].objective)."]
    lines += ["", f"{result['eval_n']} SST-2 dev inputs audited per model with {result['calibration']}; f_orig = "
              f"`{result['f_orig']}`. Agreement with f_orig on all dev inputs. P@1: gradient x input (the paper's "
              f"Gradient) on the inputs that hold a target, f_orig's beside it; an attack works when it gains >= "
              f"{result['attack_gain_points']:.0f} points.", "",
              "| model | family | concealment | agreement % | g.x P@1 % (f_orig) | SmoothGrad P@1 % | verdict | "
              "score | "
              "p-value | tests fired | audit s | outcome |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["per_model"]:
        fired = ", ".join(f"{t['key']} (p {t['p_bonferroni']:.1e})" for t in m["fired_tests"]) or "none"
        if m["kind"] == "clean":
            p1 = sg = "-"
        else:
            p1 = f"{m['p1']['p1_with_target']:.1f} ({m['f_p1']['p1_with_target']:.1f})"
            sg = f"{m['sg_p1']['p1_with_target']:.1f} ({m['f_sg_p1']['p1_with_target']:.1f})"
        conceal = " + ".join(m["conceal"]) or "-"
        lines.append(f"| {m['name']} | {m['family']} | {conceal} | {pct(m['agreement_with_f'])} "
                     f"| {p1} | {sg} | {m['verdict']} | {min(m['score'], 300):.1f} | {m['p_value']:.1e} | {fired} | "
                     f"{m['audit_seconds']:.0f} | {m['status']} |")
    fac = [m for m in result["per_model"] if m["kind"] == "facade"]
    evading = [m for m in fac if m["status"] == "evades the audit"]
    failed = [m for m in fac if not m["attack_works"]]
    detected = [m for m in fac if m["status"] == "detected"]
    structure_only = [m for m in fac if m["status"].startswith("evades the behavioral audit")]
    lines += ["", "## What evades the audit", ""]
    if evading:
        lines += [f"- measured: **{m['name']}** ({m['family']}; {' + '.join(m['conceal']) or 'no concealment'}) moves "
                  f"gradient x input P@1 from {m['f_p1']['p1_with_target']:.1f}% to {m['p1']['p1_with_target']:.1f}% "
                  f"and the audit calls the model {m['verdict']} (score {m['score']:.1f})." for m in evading]
    else:
        lines.append("- measured: every working attack of this set gets a non-trustworthy verdict"
                     + (" (but see the structure-only cases below)." if structure_only else "."))
    structure_only = [m for m in fac if m["status"].startswith("evades the behavioral audit")]
    lines += [f"- **evades the behavioral evidence**: {m['name']} ({m['family']}; "
              f"{' + '.join(m['conceal']) or 'no concealment'}) moves gradient x input P@1 from "
              f"{m['f_p1']['p1_with_target']:.1f}% to {m['p1']['p1_with_target']:.1f}%; no behavioral test fires "
              f"(behavioral p {m['p_behavior']:.2g}); only the weight structure makes it {m['verdict']} "
              f"(structure p {m['p_structure']:.2g}). An unmerged facade trained with the same terms would have no "
              f"structure to find." for m in structure_only]
    lines += [f"- detected: {m['name']} ({m['verdict']}, score {min(m['score'], 300):.1f}; fired: "
              f"{', '.join(t['key'] for t in m['fired_tests']) or 'none'})." for m in detected]
    lines += [f"- failed attack (not counted as a detection): {m['name']}: gradient x input P@1 "
              f"{m['p1']['p1_with_target']:.1f}% vs f_orig {m['f_p1']['p1_with_target']:.1f}% on inputs with a target "
              f"(audit verdict {m['verdict']})." for m in failed]
    low = [m for m in fac if m["attack_works"] and not m["agreement_ok"]]
    lines += [f"- {m['name']} works but keeps only {m['agreement_with_f']:.1f}% agreement with f_orig "
              f"(< {result['min_agreement']:.0f}%)." for m in low]
    f_row = next((m for m in result["per_model"] if m["name"] == "f_orig"), None)
    if f_row and f_row["verdict"] != "trustworthy":
        lines.append(f"- false positive: f_orig itself is called {f_row['verdict']} (score {f_row['score']:.1f}).")
    th = result.get("suspect_thresholds")
    if th:
        never = [k for k, v in th["values"].items() if k.endswith("top1_miss") and v > 1.0]
        lines += ["", f"Values at which one test alone makes a method suspect (committed calibration, Bonferroni over "
                  f"{th['tests_pooled']} tests): " + ", ".join(f"{k} {v:.3g}" for k, v in th["values"].items()) + "."]
        if never:
            lines.append(f"- by construction: top-1 miss is at most 1, so {', '.join(never)} cannot fire on any model.")
        pile = min((v for k, v in th["values"].items() if k.endswith(".pileup")), default=None)
        words = result.get("word_presence_in_audited_inputs") or {}
        if pile is not None and words:
            shown = ", ".join(f"'{w}' {v:.2f}" for w, v in words.items())
            lines.append("- by construction: pile-up averages a class's share over all audited inputs, so a facade on "
                         f"a word can show at most the share of inputs that hold it: {shown} (a pile-up test fires "
                         f"above {pile:.2f}; a word is a class at all only if it is among the 20 most frequent words "
                         "of the inputs).")
    if result["missing"]:
        lines.append(f"- not evaluated (not built or no evidence for this n): {', '.join(result['missing'])}.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    global QUIET
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("build", "evaluate", "report"))
    p.add_argument("--f-orig", default=None, help="the predictive model every facade is built for (build; "
                   "later stages read it from ROOT/holdout.json)")
    p.add_argument("--root", default=str(ROOT))
    p.add_argument("--steps", type=int, default=None, help="facade training steps (default 150)")
    p.add_argument("--n", type=int, default=EVAL_N, help="dev inputs audited per model")
    p.add_argument("--only", default=None, help="comma-separated stage / model names")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars, only warnings and results")
    p.add_argument("--train-limit", type=int, default=None, help="first N SST-2 training examples (tests)")
    p.add_argument("--facade-hidden", type=int, default=None, help="g's width (default 256)")
    p.add_argument("--facade-intermediate", type=int, default=None, help="g's FFN width (default 3072)")
    p.add_argument("--batch-size", type=int, default=None, help="facade batch size (default 16)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 25)")
    p.add_argument("--results", default=None, help=f"where report writes (default {RESULTS})")
    args = p.parse_args(argv)
    QUIET = args.quiet
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else None
    known = {"f_orig", *FACADES, *VARIANTS}
    if names and set(names) - known:
        raise SystemExit(f"error: unknown names {sorted(set(names) - known)}; known: {sorted(known)}")
    s = Settings(args)
    if args.stage == "build":
        s.record("build", argv)
        build(s, names, not args.quiet)
    elif args.stage == "evaluate":
        s.record("evaluate", argv)
        evaluate(s, names, args.n, not args.quiet)
    else:
        report(s, args.n, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
