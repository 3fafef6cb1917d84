"""Facade paper Table 4 (input reduction), Figure 3 (HotFlip flips) and universal triggers, SST-2 / RTE.

    python experiments/perturbation.py --task sst2 [--limit N] [--hotflip-limit N]

Models (from the Facade issue): f_orig = runs/<task>, merged_ft / merged_stop =
runs/facade/<task>/merged_{ft,stop}. Examples: a seeded permutation of the dev set, the first --limit
of it (a larger limit later extends the same prefix). Per-example results are appended to JSONL caches
under runs/perturbation/<task>/ and reused on restart. Writes experiments/results/perturbation_<task>.json
(+ .md beside the paper's numbers, + _hotflip.png).

Settings follow the paper: input reduction of the sentence (SST-2) / premise (RTE) with the paper's
Gradient, beams 1 and 3; HotFlip on every piece (SST-2) / only stop words of the premise (RTE, paper
footnote 2); triggers prepended to the sentence (SST-2, positive -> other) / hypothesis (RTE,
entailment -> other), searched on train inputs of that class, evaluated on the dev inputs of that class.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tqdm.auto import tqdm  # noqa: E402

from unmask.errors import UnmaskError  # noqa: E402
from unmask.jsonl_cache import JsonlCache, read_jsonl, weights_stamp  # noqa: E402

ROOT = HERE.parent
PAPER = {  # Facade paper, Table 4 (Sentiment / NLI rows) and Section 5.3
    "sst2": {"input_reduction": {"beam1": {"f_orig": (21.7, 4.8), "merged_stop": (61.5, 28.3)},
                                 "beam3": {"f_orig": (16.5, 12.8), "merged_stop": (56.9, 49.5)}},
             "hotflip": "31.7% of f_orig instances flip with one token; merged_ft: 31.4% need two flips; "
                        "with the regularized model merged_stop needs 6.6 flips on average"},
    "rte": {"input_reduction": {"beam1": {"f_orig": (16.0, 2.7), "merged_stop": (63.1, 33.9)},
                                "beam3": {"f_orig": (10.0, 5.2), "merged_stop": (54.7, 43.3)}},
            "hotflip": "paper (SNLI, 1000 random dev examples): with the regularized model merged_stop needs "
                       "5.5 flips on average; histogram only in Figure 3"},
}
TASK = {
    "sst2": {"hotflip": {"segment": 0, "stop_words_only": False}, "trigger_label": 1},
    "rte": {"hotflip": {"segment": 0, "stop_words_only": True}, "trigger_label": 0},
}
MODELS = {"f_orig": "{runs}/{task}", "merged_ft": "{runs}/facade/{task}/merged_ft",
          "merged_stop": "{runs}/facade/{task}/merged_stop"}
NEEDS = {"reduce": ("f_orig", "merged_stop"), "hotflip": ("f_orig", "merged_ft", "merged_stop"),
         "triggers": ("f_orig", "merged_stop")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASK), required=True)
    p.add_argument("--limit", type=int, default=None, help="dev examples for input reduction (default: all)")
    p.add_argument("--beam3-limit", type=int, default=None,
                   help="dev examples for input reduction with beams > 1 (default: --limit)")
    p.add_argument("--hotflip-limit", type=int, default=None, help="dev examples for HotFlip (default: --limit)")
    p.add_argument("--parts", default="reduce,hotflip,triggers", help="comma-separated subset to run")
    p.add_argument("--beams", default="1,3")
    p.add_argument("--beam-rank", choices=["attribution", "confidence"], default="attribution",
                   help="which children a beam > 1 keeps (default: attribution order, as AllenNLP)")
    p.add_argument("--max-flips", type=int, default=None, help="HotFlip budget (default: all eligible pieces)")
    p.add_argument("--trigger-length", type=int, default=3)
    p.add_argument("--trigger-iterations", type=int, default=10)
    p.add_argument("--trigger-batch", type=int, default=16, help="inputs per search iteration (default 16; "
                   "Wallace et al. used larger batches and 40 candidates on a GPU)")
    p.add_argument("--trigger-candidates", type=int, default=20)
    p.add_argument("--trigger-beam", type=int, default=1)
    p.add_argument("--trigger-search-limit", type=int, default=512)
    p.add_argument("--trigger-eval-limit", type=int, default=None)
    p.add_argument("--models", default=",".join(MODELS),
                   help="compute only for these models (e.g. f_orig now, the merged ones once they exist)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                   help="override a model directory (f_orig, merged_ft, merged_stop)")
    p.add_argument("--runs", default=str(ROOT / "runs"), help="where models and caches live")
    p.add_argument("--out", default=str(HERE / "results"), help="where the result files go")
    p.add_argument("--chunk", type=int, default=8, help="examples per batched call (and per cache append)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary-only", action="store_true", help="only rebuild result files from the caches")
    return p.parse_args(argv)


def model_dirs(args) -> dict[str, Path]:
    dirs = {k: Path(v.format(runs=args.runs, task=args.task)) for k, v in MODELS.items()}
    for item in args.model:
        name, _, path = item.partition("=")
        if name not in MODELS or not path:
            raise SystemExit(f"--model expects NAME=DIR with NAME in {sorted(MODELS)}, got {item!r}")
        dirs[name] = Path(path)
    return dirs


def dev_order(task: str, seed: int):
    from unmask.data import load_task

    dev = load_task(task, "dev")
    order = list(range(len(dev)))
    random.Random(seed).shuffle(order)
    return dev, order


def reduce_dir(beam: int, rank: str) -> str:
    return f"reduce_beam{beam}" if beam == 1 or rank == "attribution" else f"reduce_beam{beam}_{rank}"


def example_keys(args, order: list[int]):
    """Dev indices per analysis: prefixes of one seeded permutation, so larger limits extend smaller ones."""
    take = lambda n: order[:n] if n else order  # noqa: E731
    wide = args.beam3_limit or args.limit

    def reduce_keys(beam: int) -> list[int]:
        return take(args.limit if beam == 1 else wide)

    return reduce_keys, take(args.hotflip_limit or args.limit)


def run_cached(cache: JsonlCache, keys: list[int], dev, fn, chunk: int, desc: str) -> None:
    """Run ``fn(examples) -> [result dicts]`` on the keys not yet cached, ``chunk`` at a time."""
    todo = cache.missing(keys)
    bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc, dynamic_ncols=True)
    for s in range(0, len(todo), chunk):
        part = todo[s:s + chunk]
        results = fn([dev[i] for i in part])
        cache.append([{"key": k, "result": r} for k, r in zip(part, results)])
        bar.update(len(part))
    bar.close()


def compute(args, dirs: dict[str, Path], parts: list[str]) -> None:
    import torch

    from unmask.data import load_task, pairs_of
    from unmask.models import load_model
    from unmask.perturbation import evaluate_trigger, hotflip, reduce_inputs, search_trigger

    dev, order = dev_order(args.task, args.seed)
    keys_reduce, keys_flip = example_keys(args, order)
    beams = [int(b) for b in args.beams.split(",")]
    base = Path(args.runs) / "perturbation" / args.task
    spec = TASK[args.task]
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    names = [n for n in MODELS if n in wanted and any(n in NEEDS[p] for p in parts)]
    for name in names:
        t0 = time.time()
        model = load_model(dirs[name])
        model.model.to(torch.float32)
        ident = {"model": str(dirs[name]), "weights": weights_stamp(dirs[name]), "seed": args.seed}
        if "reduce" in parts and name in NEEDS["reduce"]:
            for beam in beams:
                rank = {"rank": args.beam_rank} if beam > 1 else {}  # one child per step: no ranking
                cfg = {**ident, "beam": beam, "segment": 0, "method": "gradient_x_input(loss)", **rank}
                cache = JsonlCache(base / reduce_dir(beam, args.beam_rank) / f"{name}.jsonl", cfg)
                run_cached(cache, keys_reduce(beam), dev, lambda ex, b=beam: [
                    r.to_dict() for r in reduce_inputs(model, [e.text for e in ex], pairs_of(ex), beam_size=b,
                                                       segment=0, rank=args.beam_rank)],
                           args.chunk, f"{args.task} {name} reduce beam {beam}")
        if "hotflip" in parts and name in NEEDS["hotflip"]:
            cfg = {**ident, "max_flips": args.max_flips, **spec["hotflip"]}
            cache = JsonlCache(base / "hotflip" / f"{name}.jsonl", cfg)
            run_cached(cache, keys_flip, dev, lambda ex: [
                r.to_dict() for r in hotflip(model, [e.text for e in ex], pairs_of(ex), max_flips=args.max_flips,
                                             **spec["hotflip"])],
                       args.chunk, f"{args.task} {name} hotflip")
        if "triggers" in parts and name in NEEDS["triggers"]:
            label = spec["trigger_label"]
            cfg = {**ident, "label": label, "length": args.trigger_length,
                   "iterations": args.trigger_iterations, "batch": args.trigger_batch,
                   "candidates": args.trigger_candidates, "beam": args.trigger_beam,
                   "search_limit": args.trigger_search_limit, "eval_limit": args.trigger_eval_limit}
            cache = JsonlCache(base / "triggers" / f"{name}.jsonl", cfg)
            if "trigger" not in cache:
                train = [e for e in load_task(args.task, "train") if e.label == label]
                random.Random(args.seed).shuffle(train)
                train = train[: args.trigger_search_limit]
                held = [e for e in dev if e.label == label][: args.trigger_eval_limit]
                print(f"{args.task} {name}: trigger search on {len(train)} train inputs of class {label}")
                res = search_trigger(model, [e.text for e in train], pairs_of(train), label=label,
                                     length=args.trigger_length, beam_size=args.trigger_beam,
                                     candidates=args.trigger_candidates, iterations=args.trigger_iterations,
                                     batch_size=args.trigger_batch, seed=args.seed, progress=True)
                evaluate_trigger(model, res, [e.text for e in held], pairs_of(held))
                print(res.describe())
                cache.append([{"key": "trigger", "result": res.to_dict()}])
        print(f"{args.task} {name}: done in {time.time() - t0:.0f}s")
        del model


def summarize(args, dirs: dict[str, Path]) -> dict:
    from unmask.metrics.perturbation import flip_histogram, reduction_stop_metrics
    from unmask.perturbation.record import PerturbationResult

    dev, order = dev_order(args.task, args.seed)
    keys_reduce, keys_flip = example_keys(args, order)
    base = Path(args.runs) / "perturbation" / args.task

    def load(path: Path, keys) -> list[PerturbationResult] | None:
        items = read_jsonl(path)
        got = [PerturbationResult.from_dict(items[k]["result"]) for k in keys if k in items]
        return got or None

    out: dict = {"command": " ".join(["python", "experiments/perturbation.py"] + sys.argv[1:]),
                 "input_reduction": {}, "hotflip": {}, "triggers": {}}
    for beam in [int(b) for b in args.beams.split(",")]:
        block = out["input_reduction"][f"beam{beam}"] = {}
        for name in NEEDS["reduce"]:
            rs = load(base / reduce_dir(beam, args.beam_rank) / f"{name}.jsonl", keys_reduce(beam))
            block[name] = reduction_stop_metrics(rs) if rs else None
            if block[name] is not None and beam > 1:
                block[name]["rank"] = args.beam_rank
    for name in NEEDS["hotflip"]:
        rs = load(base / "hotflip" / f"{name}.jsonl", keys_flip)
        out["hotflip"][name] = flip_histogram(rs) if rs else None
    for name in NEEDS["triggers"]:
        rec = read_jsonl(base / "triggers" / f"{name}.jsonl").get("trigger", {}).get("result")
        out["triggers"][name] = None if rec is None else {
            "trigger": " ".join(rec["tokens"]), "success_pct": rec["evaluation"].get("success_pct"),
            "n": rec["evaluation"].get("n"), "accuracy_before": rec["evaluation"].get("accuracy_before"),
            "accuracy_after": rec["evaluation"].get("accuracy_after"), "source_label": rec["source_label"],
            "segment": rec["segment"], "search_inputs": rec["params"].get("search_inputs")}
    return out


def other_rank(args) -> tuple[str, dict]:
    """Wide-beam results with the other beam ranking, where caches exist (an ablation for the .md)."""
    from unmask.metrics.perturbation import reduction_stop_metrics
    from unmask.perturbation.record import PerturbationResult

    other = "confidence" if args.beam_rank == "attribution" else "attribution"
    _, order = dev_order(args.task, args.seed)
    keys_reduce, _ = example_keys(args, order)
    base = Path(args.runs) / "perturbation" / args.task
    out: dict = {}
    for beam in [int(b) for b in args.beams.split(",") if int(b) > 1]:
        for name in NEEDS["reduce"]:
            items = read_jsonl(base / reduce_dir(beam, other) / f"{name}.jsonl")
            rs = [PerturbationResult.from_dict(items[k]["result"]) for k in keys_reduce(beam) if k in items]
            if rs:
                out.setdefault(f"beam{beam}", {})[name] = reduction_stop_metrics(rs)
    return other, out


def markdown(task: str, res: dict, png: str | None, ablation: tuple[str, dict] | None = None) -> str:
    paper = PAPER[task]
    f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"# Perturbation analyses on {task.upper()} (Facade paper Table 4, Figure 3, triggers)", "",
             f"Command: `{res['command']}`", "",
             "## Input reduction (Table 4): Stop % / All Stop %", "",
             "| beam | model | n | Stop % (ours) | All Stop % (ours) | Stop % (paper) | All Stop % (paper) | "
             "mean reduced length |", "|---|---|---|---|---|---|---|---|"]
    for beam, block in res["input_reduction"].items():
        for name, m in block.items():
            p = paper["input_reduction"].get(beam, {}).get(name, (None, None))
            if m is None:
                lines.append(f"| {beam} | {name} | 0 | not run | not run | {f(p[0])} | {f(p[1])} | – |")
            else:
                lines.append(f"| {beam} | {name} | {m['n']} | {f(m['stop_pct'])} | {f(m['all_stop_pct'])} | "
                             f"{f(p[0])} | {f(p[1])} | {m['mean_reduced_length']:.2f} |")
    ranked = res.get("_rank", "attribution")
    how = ("children in attribution order, as AllenNLP Interpret's beam" if ranked == "attribution"
           else "the children with the highest probability of the original prediction")
    lines += ["", "Paper rows: Sentiment (SST-2) and NLI (SNLI; we use RTE). Ours: all-MiniLM-L6-v2 models. "
              f"Wide beams keep {how}."]
    if ablation and ablation[1]:
        other = ("children in attribution order" if ablation[0] == "attribution"
                 else "the children with the highest probability of the original prediction (an output "
                      "signal, not a gradient one)")
        lines += ["", f"Ablation, wide beams keeping {other}:", "",
                  "| beam | model | n | Stop % | All Stop % | mean reduced length |", "|---|---|---|---|---|---|"]
        for beam, block in ablation[1].items():
            for name, m in block.items():
                lines.append(f"| {beam} | {name} | {m['n']} | {f(m['stop_pct'])} | {f(m['all_stop_pct'])} | "
                             f"{m['mean_reduced_length']:.2f} |")
    lines += ["",
              "", "## HotFlip (Figure 3)", "", f"Paper: {paper['hotflip']}.", "",
              "| model | n | flipped % | mean flips (flipped inputs) | flipped by one token % |",
              "|---|---|---|---|---|"]
    for name, h in res["hotflip"].items():
        if h is None:
            lines.append(f"| {name} | 0 | not run | | |")
        else:
            lines.append(f"| {name} | {h['n']} | {f(h['flipped_pct'])} | {f(h['mean_flips'])} | "
                         f"{f(h['one_flip_pct'])} |")
    if png:
        lines += ["", f"![HotFlip histogram]({png})"]
    lines += ["", "## Universal triggers", "", "| model | trigger | held-out n | success % | class accuracy "
              "before -> after |", "|---|---|---|---|---|"]
    for name, t in res["triggers"].items():
        if t is None:
            lines.append(f"| {name} | not run | | | |")
        else:
            lines.append(f"| {name} | `{t['trigger']}` | {t['n']} | {f(t['success_pct'])} | "
                         f"{f(t['accuracy_before'])} -> {f(t['accuracy_after'])} |")
    return "\n".join(lines) + "\n"


def plot(task: str, res: dict, path: Path) -> bool:
    """The HotFlip histogram (flips 1..16; inputs needing more omitted, as in the paper); False if nothing ran."""
    from unmask.report.plots import hotflip_histogram

    data = {k: v for k, v in res["hotflip"].items() if v}
    if not data:
        return False
    labels = {name: f"{name} (mean {h['mean_flips']:.1f}, not flipped {h['histogram']['not_flipped']})"
              for name, h in data.items() if h["mean_flips"] is not None}
    hotflip_histogram({"hotflip": data}, bins=[str(k) for k in range(1, 17)], labels=labels,
                      title=f"HotFlip on {task.upper()}",
                      xlabel="flips needed to change the prediction (inputs needing > 16 omitted, as in the paper)",
                      path=path)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dirs = model_dirs(args)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in NEEDS]:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {sorted(NEEDS)}")
    if not args.summary_only:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        if unknown := [m for m in wanted if m not in MODELS]:
            raise SystemExit(f"unknown model name(s) {unknown}; choose from {sorted(MODELS)}")
        needed = sorted({n for p in parts for n in NEEDS[p] if n in wanted})
        missing = [f"{n} ({dirs[n]})" for n in needed if not (dirs[n] / "config.json").is_file()]
        if missing:
            raise SystemExit("missing model(s): " + ", ".join(missing) + "; train them first (see the Facade "
                             "issue) or point --model NAME=DIR at them")
        compute(args, dirs, parts)
    from unmask.io import write_json_atomic

    res = summarize(args, dirs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"perturbation_{args.task}_hotflip.png"
    has_png = plot(args.task, res, png)
    write_json_atomic(out / f"perturbation_{args.task}.json", res)
    md = out / f"perturbation_{args.task}.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(markdown(args.task, {**res, "_rank": args.beam_rank}, png.name if has_png else None,
                            other_rank(args)))
    os.replace(tmp, md)
    print(f"results written to {out / f'perturbation_{args.task}.json'}, {md}" + (f", {png}" if has_png else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UnmaskError as e:  # e.g. a cache made with other settings
        sys.exit(f"perturbation: {e}")
