"""The whole Facade study for one task: train g (first token, stop words), regularize f, merge,
check equivalence, evaluate every model, and assemble the paper's Tables 1 and 2.

Every stage writes its own directory under ``root`` with a ``stage.json`` recording the fingerprint of
its inputs (upstream model weights, training settings, data slice; see ``unmask.cache``). A stage is
skipped when it finished for the same inputs, resumed (at its checkpoint) when it started for them, and
rebuilt from scratch, with a log line, when its inputs changed. Evaluation caches are keyed the same way.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unmask.cache import (changed_inputs, data_fingerprint, inputs_fingerprint, model_fingerprint, read_stage,
                          stage_state, write_stage)
from unmask.data.readers import load_task, pairs_of
from unmask.errors import UnmaskError
from unmask.facade.equivalence import check_merge
from unmask.facade.evaluate import EvalConfig, evaluate_model
from unmask.facade.summed import SummedModel
from unmask.facade.merge import merge, save_atomic
from unmask.facade.model import new_facade
from unmask.facade.regularize import regularized_loss
from unmask.facade.targets import TargetPositions
from unmask.facade.train import FacadeConfig, train_facade
from unmask.io import write_json_atomic
from unmask.models.classifier import TextClassifier, load_model
from unmask.training.finetune import TrainConfig, train_classifier

TARGETS = {"ft": "first", "stop": "stop"}
MERGES = {"merged_ft": ("f_orig", "g_ft"), "merged_stop": ("f_orig", "g_stop"),
          "merged_ft_rp": ("rp", "g_ft_rp"), "merged_stop_rp": ("rp", "g_stop_rp")}
SHARED_RP_MERGES = {"merged_ft_rp": ("rp", "g_ft"), "merged_stop_rp": ("rp", "g_stop")}
EVALUATED = {"f_orig": ("ft", "stop"), "rp": ("ft", "stop"), "g_ft": ("ft",), "g_stop": ("stop",),
             "merged_ft": ("ft",), "merged_ft_rp": ("ft",), "merged_stop": ("stop",),
             "merged_stop_rp": ("stop",)}


@dataclass
class PipelineConfig:
    task: str = "sst2"
    f_orig: str = "runs/sst2"
    root: str = "runs/facade/sst2"
    facade: FacadeConfig = field(default_factory=FacadeConfig)
    merged_objective: bool = True
    facade_hidden: int = 256
    rp_steps: int = 400
    rp_lr: float = 2e-5
    lambda_rp: float = 3.0
    eval_limit: int | None = None
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    train_limit: int | None = None
    with_rp: bool = True
    targets: tuple[str, ...] = ("ft", "stop")
    seed: int = 0
    # "own": the regularized merges use a g trained against rp, the model it is merged into (g_ft_rp,
    # g_stop_rp); "shared": the g trained against f_orig is merged into rp too (agreement then drops)
    rp_facades: str = "own"
    # per-target training settings ("ft" / "stop" -> FacadeConfig) replacing ``facade`` for that target, for
    # g trained against f_orig and against rp alike (one recipe, per-target budgets); "ft_rp" / "stop_rp"
    # replace them for the g trained against rp only
    target_facades: dict[str, FacadeConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rp_facades not in ("own", "shared"):
            raise UnmaskError(f"rp_facades must be 'own' or 'shared', got {self.rp_facades!r}")
        allowed = sorted(set(TARGETS) | {f"{k}_rp" for k in TARGETS})
        unknown = sorted(set(self.target_facades) - set(allowed))
        if unknown:
            raise UnmaskError(f"target_facades: unknown target keys {unknown}; use {allowed}")

    def facade_for(self, key: str, partner: str = "f_orig") -> FacadeConfig:
        """The training settings of the g for target ``key`` ("ft" or "stop") trained against ``partner``."""
        own = self.target_facades.get(f"{key}_{partner}") if partner != "f_orig" else None
        return own or self.target_facades.get(key, self.facade)

    def merges(self) -> dict[str, tuple[str, str]]:
        """Merged model name -> (predictive part, facade part) for this study."""
        plan = {**MERGES, **(SHARED_RP_MERGES if self.rp_facades == "shared" else {})}
        return {name: (f, g) for name, (f, g) in plan.items()
                if (f != "rp" or self.with_rp) and name.split("_")[1] in self.targets}


def eval_cache_path(root: Path, name: str, setting: dict) -> Path:
    """One cache file per model and evaluation setting, so runs with different settings keep theirs."""
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    return root / "eval" / f"{name}-{digest}.json"


def _done(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


class FacadePipeline:
    """Runs (or resumes) the study; ``run()`` returns the results dict (the committed JSON shape)."""

    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print, progress: bool = True):
        self.c, self.log, self.progress = config, log, progress
        self.root = Path(config.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.train = load_task(config.task, "train", limit=config.train_limit)
        self.dev = load_task(config.task, "dev", limit=config.eval_limit)
        self._models: dict[str, TextClassifier] = {}

    def path(self, name: str) -> Path:
        return Path(self.c.f_orig) if name == "f_orig" else self.root / name

    def model(self, name: str) -> TextClassifier:
        if name not in self._models:
            self._models[name] = load_model(self.path(name))
        return self._models[name]

    def forget(self, name: str) -> None:
        """Drop the loaded copy of ``name`` (rebuilt on disk) and every f + g pair built from loaded parts."""
        self._models.pop(name, None)
        for key in [k for k in self._models if k.startswith("apart:")]:
            del self._models[key]

    def evaluated_model(self, name: str):
        """The model evaluated for ``name``: a merge as its parts run apart when ``evaluation.apart`` (the
        same function, checked by ``merge_all``'s equivalence check; no zero blocks), else the model itself."""
        if name in self.c.merges() and self.c.evaluation.apart:
            key = f"apart:{name}"
            if key not in self._models:
                f_name, g_name = self.c.merges()[name]
                self._models[key] = SummedModel(self.model(f_name), self.model(g_name), name=name)
            return self._models[key]
        return self.model(name)

    def fingerprint(self, name: str) -> str:
        """Fingerprint of a saved model of the study (weights' size + mtime, config)."""
        return model_fingerprint(self.path(name))

    def begin(self, name: str, inputs: dict, resumable: bool = True) -> tuple[str, bool]:
        """``(fingerprint, needed)`` for stage ``name`` made from ``inputs``. A stage made from other inputs
        is deleted (logged) so that nothing of it, not even a checkpoint, is reused."""
        out = self.path(name)
        fp = inputs_fingerprint(**inputs)
        state = stage_state(out, fp)
        if state == "done" and _done(out):
            return fp, False
        if state == "stale":
            if self.root.resolve() not in out.resolve().parents:
                raise UnmaskError(f"refusing to delete {out}: not under the study root {self.root}")
            self.log(f"[facade] {name}: {out} was made from other inputs ({changed_inputs(read_stage(out), inputs)}); "
                     f"rebuilding it")
            shutil.rmtree(out)
        elif state == "partial":
            self.log(f"[facade] {name}: resuming {out} (same inputs)")
        if resumable:
            write_stage(out, fp, inputs, done=False)
        return fp, True

    def dev_fingerprint(self, limit: int | None = None) -> str:
        return data_fingerprint(self.dev[:limit] if limit else self.dev)

    # ------------------------------------------------------------------ stages
    def train_facades(self, partner: str = "f_orig") -> None:
        """Train g for every target against ``partner`` (f_orig, or rp for the regularized merges' own g)."""
        for key, target in TARGETS.items():
            if key not in self.c.targets:
                continue
            name = f"g_{key}" if partner == "f_orig" else f"g_{key}_{partner}"
            out = self.path(name)
            # the f_orig-trained stages keep their original input names, so their caches stay valid
            partner_key = {"f_orig": self.fingerprint("f_orig")} if partner == "f_orig" else {
                "partner": partner, "partner_model": self.fingerprint(partner)}
            cfg = self.c.facade_for(key, partner)
            inputs = {**partner_key, "target": target, "facade": asdict(cfg),
                      "facade_hidden": self.c.facade_hidden, "merged_objective": self.c.merged_objective,
                      "seed": self.c.seed, "train": data_fingerprint(self.train),
                      "dev": self.dev_fingerprint(cfg.eval_size)}
            fp, needed = self.begin(name, inputs)
            if not needed:
                continue
            self.log(f"[facade] training {name} (target: {target}, against {partner}) -> {out}")
            f = self.model(partner)
            g = new_facade(f, seed=self.c.seed, hidden=self.c.facade_hidden)
            train_facade(g, self.train, self.dev, target, out, cfg,
                         f=f if self.c.merged_objective else None, progress=self.progress, log=self.log)
            self.forget(name)
            write_stage(out, fp, inputs, done=True)

    def regularize(self) -> None:
        out = self.path("rp")
        if not self.c.with_rp:
            return
        cfg = TrainConfig(max_steps=self.c.rp_steps, lr=self.c.rp_lr, warmup=0.0, batch_size=32,
                          checkpoint_every=100, seed=self.c.seed)
        inputs = {"f_orig": self.fingerprint("f_orig"), "train_config": asdict(cfg), "lambda_rp": self.c.lambda_rp,
                  "train": data_fingerprint(self.train), "dev": self.dev_fingerprint()}
        fp, needed = self.begin("rp", inputs)
        if not needed:
            return
        self.log(f"[facade] regularizing f (Eq. 5, lambda_rp={self.c.lambda_rp}) -> {out}")
        f = load_model(self.c.f_orig)
        train_classifier(f, self.train, self.dev, out, cfg, loss_fn=regularized_loss(self.c.lambda_rp),
                         progress=self.progress, log=self.log)
        self.forget("rp")
        write_stage(out, fp, inputs, done=True)

    def merge_all(self) -> dict[str, dict]:
        checks = {}
        texts = [e.text for e in self.dev]
        pairs = pairs_of(self.dev)
        for name, (f_name, g_name) in self.c.merges().items():
            out = self.path(name)
            check_file = out / "merge_check.json"
            inputs = {f_name: self.fingerprint(f_name), g_name: self.fingerprint(g_name),
                      "dev": self.dev_fingerprint()}
            fp, needed = self.begin(name, inputs, resumable=False)
            if not needed and check_file.is_file():
                checks[name] = json.loads(check_file.read_text())
                continue
            self.log(f"[facade] merging {f_name} + {g_name} -> {out}")
            f, g = self.model(f_name), self.model(g_name)
            merged = merge(f, g)
            result = check_merge(f, g, merged, texts, pairs, progress=self.progress)
            save_atomic(merged, out)
            self.forget(name)
            write_json_atomic(check_file, {"model": str(self.path(f_name)), "facade": str(self.path(g_name)),
                                           "checked_on": f"{self.c.task} dev ({len(texts)})", **result})
            write_stage(out, fp, inputs, done=True)
            checks[name] = result
        return checks

    def evaluate_all(self) -> dict[str, dict]:
        results = {}
        positions = {k: TargetPositions(v, self.model("f_orig").tokenizer) for k, v in TARGETS.items()}
        reference = None
        for name, keys in EVALUATED.items():
            keys = tuple(k for k in keys if k in self.c.targets)
            if not keys or ((name.endswith("_rp") or name == "rp") and not self.c.with_rp):
                continue
            setting = json.loads(json.dumps(  # as it reads back from the cache (tuples become lists)
                {"examples": len(self.dev), "data": self.dev_fingerprint(), "evaluation": asdict(self.c.evaluation),
                 "targets": list(keys), "model": self.fingerprint(name), "reference": self.fingerprint("f_orig")}))
            cache = eval_cache_path(self.root, name, setting)
            cached = json.loads(cache.read_text()) if cache.is_file() else {}
            if cached.get("setting") == setting:
                results[name] = cached
            else:
                others = [p.name for p in (self.root / "eval").glob(f"{name}-*.json") if p != cache]
                if others:
                    self.log(f"[facade] {name}: no evaluation cached for this model, data and setting "
                             f"({len(others)} cached for other inputs)")
                self.log(f"[facade] evaluating {name} on {len(self.dev)} {self.c.task} dev examples")
                started = time.time()
                results[name] = evaluate_model(self.evaluated_model(name), self.dev, {k: positions[k] for k in keys},
                                               self.c.evaluation, reference, progress=self.progress)
                results[name]["evaluated_as"] = ("f + g run apart (facade/summed.py)"
                                                 if isinstance(self.evaluated_model(name), SummedModel) else "model")
                results[name]["seconds"] = round(time.time() - started, 1)
                results[name]["setting"] = setting
                write_json_atomic(cache, results[name])
            if name == "f_orig":
                reference = results[name]["predictions"]
        for name, (f_name, _) in self.c.merges().items():  # a merge against the model it was merged into
            if name in results and f_name in results:
                ours, theirs = results[name]["predictions"], results[f_name]["predictions"]
                results[name]["agreement_with_partner"] = 100.0 * sum(a == b for a, b in zip(ours, theirs)) / len(ours)
        return results

    # ------------------------------------------------------------------ all
    def run(self, command: str = "") -> dict:
        self.train_facades()
        self.regularize()
        if self.c.with_rp and self.c.rp_facades == "own":
            self.train_facades(partner="rp")
        checks = self.merge_all()
        evals = self.evaluate_all()
        return assemble(self.c, command, checks, evals, eval_n=len(self.dev))


def assemble(config: PipelineConfig, command: str, checks: dict[str, dict], evals: dict[str, dict],
             eval_n: int | None = None) -> dict:
    """The committed results shape (percentages 0-100), plus diagnostics; ``eval_n``: dev examples evaluated."""
    acc = {name: evals[name]["accuracy"] for name in evals}
    merges = config.merges()
    out = {
        "task": config.task, "command": command, "eval_n": eval_n,
        "accuracy": acc,
        "agreement": {k.removeprefix("merged_"): evals[k]["agreement"] for k in merges if k in evals},
        "agreement_with_partner": {k.removeprefix("merged_"): evals[k]["agreement_with_partner"]
                                   for k in merges if "agreement_with_partner" in evals.get(k, {})},
        "merged_from": {k.removeprefix("merged_"): list(v) for k, v in merges.items()},
        "max_logit_diff": {k.removeprefix("merged_"): checks[k]["max_logit_diff"] for k in merges if k in checks},
        "saliency": {},
        "diagnostics": {
            "grad_ratio_g_over_f": {k: evals[k].get("grad_ratio_g_over_f") for k in merges if k in evals},
            "grad_norm_ratio_at_merge": {k: checks[k].get("grad_norm_ratio") for k in merges if k in checks},
            "ig_relative_completeness_error_median": {
                k: v.get("ig_relative_completeness_error_median") for k, v in evals.items()},
            "eval_seconds": {k: v.get("seconds") for k, v in evals.items()},
        },
        "config": asdict(config),
    }
    for key in config.targets:
        rows = {"f_orig": "f_orig", "merged": f"merged_{key}", "merged_rp": f"merged_{key}_rp", "g": f"g_{key}"}
        out["saliency"][key] = {row: evals[name]["saliency"][key] for row, name in rows.items() if name in evals}
        if "rp" in evals:
            out["saliency"][key]["rp"] = evals["rp"]["saliency"][key]
    return out
