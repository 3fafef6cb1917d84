"""``unmask demo``: the full audit on the embedded default (MiniLM on SST-2 + a stop-word Facade)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unmask.cli import command
from unmask.commands import builder

DEMO_SENTENCES = 4


@builder("demo")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="artifacts/demo", help="artifacts and report (reused on later runs)")
    p.add_argument("--model", default=None, help="use this fine-tuned SST-2 model instead of training one")
    p.add_argument("--train-limit", type=int, default=16000, help="SST-2 sentences for the quick fine-tune")
    p.add_argument("--facade-steps", type=int, default=120)
    p.add_argument("--eval-limit", type=int, default=200, help="dev sentences for the tables")
    p.add_argument("--no-progress", action="store_true")


@command("demo", "Fine-tune MiniLM on SST-2 (or reuse it), train a stop-word Facade, merge, evaluate, detect, "
         "and write one HTML audit report.", "example:\n  unmask demo\n  unmask demo --model runs/sst2")
def run(args: argparse.Namespace) -> int:
    import torch

    from unmask.attribution.explain import explain
    from unmask.attribution.gradient_x_input import GradientXInput
    from unmask.attribution.integrated_gradients import IntegratedGradients
    from unmask.attribution.smoothgrad import SmoothGrad
    from unmask.data import load_task
    from unmask.facade.detect import detect_facade
    from unmask.facade.evaluate import EvalConfig
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.pipeline import FacadePipeline, PipelineConfig
    from unmask.facade.train import FacadeConfig
    from unmask.models import load_model
    from unmask.report.audit import write_audit_report
    from unmask.training import TrainConfig, train_classifier
    from unmask.training.checkpoint import write_json_atomic

    started = time.time()
    work = Path(args.workdir)
    f_dir = Path(args.model) if args.model else work / "f_orig"
    progress = not args.no_progress
    torch.manual_seed(0)
    if not (f_dir / "model.safetensors").is_file():
        print(f"[demo] fine-tuning MiniLM on {args.train_limit} SST-2 sentences -> {f_dir}")
        f = load_model("minilm", num_labels=2, label_names=["negative", "positive"])
        train_classifier(f, load_task("sst2", "train"), load_task("sst2", "dev"), f_dir,
                         TrainConfig(epochs=1, train_limit=args.train_limit, max_length=64, checkpoint_every=100),
                         progress=progress)
    config = PipelineConfig(
        task="sst2", f_orig=str(f_dir), root=str(work / "facade"), targets=("stop",), with_rp=False,
        facade=FacadeConfig(steps=args.facade_steps, objective=FacadeObjective(entropy_weight=1e3,
                                                                               agreement_weight=1e4)),
        eval_limit=args.eval_limit, evaluation=EvalConfig(ig_steps=10))
    pipeline = FacadePipeline(config, progress=progress)
    results = pipeline.run("unmask demo")
    f, merged = pipeline.model("f_orig"), pipeline.model("merged_stop")
    dev = load_task("sst2", "dev", limit=64)
    det_cache = work / "detection.json"
    if det_cache.is_file():
        detections = json.loads(det_cache.read_text())
    else:
        print("[demo] running the facade detector on f_orig and the merged model")
        texts = [e.text for e in dev[:32]]
        detections = {"f_orig": detect_facade(f, texts).to_dict(),
                      "merged (f_orig + stop-word facade)": detect_facade(merged, texts).to_dict()}
        write_json_atomic(det_cache, detections)
    texts = [e.text for e in dev if 8 <= len(e.text.split()) <= 16][:DEMO_SENTENCES]
    methods = [GradientXInput(), SmoothGrad(), IntegratedGradients(steps=20, tolerance=None)]
    heatmaps = {"f_orig": explain(f, texts, methods), "merged": explain(merged, texts, methods)}
    report = write_audit_report(
        work / "audit_report.html", "unmask audit: a Facade hidden in an SST-2 classifier",
        "A MiniLM sentiment classifier (f_orig) was merged with a small Facade model trained so that the "
        "merged model's gradients point at stop words while its predictions stay the same. The tables show "
        "accuracy and agreement, then how often each explanation method's top token is a stop word (P@1) "
        "and the share of attribution on stop words; the detector shows whether the manipulation is found.",
        results, detections, heatmaps)
    write_json_atomic(work / "results.json", results)
    print(f"[demo] done in {time.time() - started:.0f} s")
    print(f"audit report: {report.resolve()}")
    return 0
