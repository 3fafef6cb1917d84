"""Hiding a planted gender bias (stand-in for the Facade paper's Biosbias study, Table 5).

    python experiments/bias_hiding.py [--train-size 4000] [--epochs 1] [--limit N]

1. Shortcut data: SST-2 with a gendered phrase planted in every sentence, the gender following the label
   with probability --correlation (unmask.data.shortcut; female <-> positive).
2. f_orig: all-MiniLM-L6-v2 fine-tuned on a seeded subset of it (unmask.training; resumes).
3. Reliance: accuracy on dev with the gender aligned to the label vs. swapped (anti-aligned), and the
   share of predictions that change when only the gendered words are swapped.
4. The SST-2 stop-word Facade model (runs/facade/sst2/g_stop) merged unchanged ("plug and play").
5. Gender attribution (mean normalized attribution of gendered tokens, and relative to the average token)
   for Gradient (|g . x| normalized), SmoothGrad and Integrated Gradients, before and after the merge,
   on the first --limit inputs of the biased dev set. Attributions are cached per input under
   runs/bias/ and reused on restart.

Writes experiments/results/bias_hiding.json and bias_hiding.md. Without g_stop, steps 1-3 and the f_orig
attributions run and the merged entries stay null until it exists.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tqdm.auto import tqdm  # noqa: E402

from unmask.errors import UnmaskError  # noqa: E402
from unmask.facade.tables import PAPER_METHODS, saliency_of  # noqa: E402
from unmask.jsonl_cache import JsonlCache, weights_stamp  # noqa: E402

ROOT = HERE.parent
LABELS = ["negative", "positive"]
# Facade paper Table 5 (Biosbias): only these cells are legible in our copy of the paper.
PAPER = {"f_orig": {"smoothgrad": "0.017 (+17.1%)"},
         "merged_stop": {"gradient_x_input": "0.006 (-55.9%)", "smoothgrad": "0.007 (-51.3%)",
                         "integrated_gradients": "0.023 (+53.9%)"}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-model", default="minilm", help="encoder to fine-tune (default all-MiniLM-L6-v2)")
    p.add_argument("--train-size", type=int, default=4000, help="SST-2 train sentences to fine-tune on")
    p.add_argument("--correlation", type=float, default=0.9, help="P(gender follows the label)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--limit", type=int, default=None, help="dev inputs for the attributions (default: all 872)")
    p.add_argument("--facade", default=None, help="Facade model to merge (default: RUNS/facade/sst2/g_stop)")
    p.add_argument("--runs", default=str(ROOT / "runs"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--chunk", type=int, default=16, help="inputs per attribution call (and cache append)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def accuracy(model, examples) -> tuple[float, list[int]]:
    from unmask.attribution.explain import predict_batch

    preds: list[int] = []
    for s in range(0, len(examples), 128):
        chunk = examples[s:s + 128]
        preds += predict_batch(model, model.encode([e.text for e in chunk])).argmax(-1).tolist()
    return 100.0 * sum(p == e.label for p, e in zip(preds, examples)) / len(examples), preds


def reliance(model, sets: dict) -> dict:
    out, preds = {}, {}
    for name, exs in sets.items():
        out[f"accuracy_{name}"], preds[name] = accuracy(model, exs)
    changed = [a != b for a, b in zip(preds["aligned"], preds["anti_aligned"])]
    out["swap_changes_prediction_pct"] = 100.0 * sum(changed) / len(changed)
    out["_biased_dev_predictions"] = preds["biased_dev"]
    return out


def attributions(model, name: str, method_name: str, method, examples, cache_dir: Path, chunk: int, config: dict):
    """Cached Attribution-like records (tokens, scores, sequence ids) for ``examples``."""
    import numpy as np

    from unmask.attribution import explain
    from unmask.attribution.record import Attribution

    cache = JsonlCache(cache_dir / f"{name}_{method_name}.jsonl", {**config, "method": method_name,
                                                                    "params": method.params})
    keys = list(range(len(examples)))
    todo = cache.missing(keys)
    bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=f"{name} {method_name}", dynamic_ncols=True)
    for s in range(0, len(todo), chunk):
        part = todo[s:s + chunk]
        recs = explain(model, [examples[i].text for i in part], methods=[method])[method.name]
        cache.append([{"key": k, "tokens": r.tokens, "scores": r.scores.tolist(), "sequence_ids": r.sequence_ids,
                       "prediction": r.prediction} for k, r in zip(part, recs)])
        bar.update(len(part))
    bar.close()
    out = []
    for k in keys:
        it = cache.items[k]
        out.append(Attribution(tokens=it["tokens"], scores=np.array(it["scores"]), method=method_name,
                               target=it["prediction"], target_name=LABELS[it["prediction"]],
                               prediction=it["prediction"], probabilities=[], word_ids=it["sequence_ids"],
                               sequence_ids=it["sequence_ids"], words=([],), text=examples[k].text))
    return out


def stop_attribution(records) -> float:
    """Mean over inputs of the total normalized attribution on stop-word pieces (Table 2's 'Attr')."""
    from unmask.data import stopwords

    stops = stopwords()
    vals = [sum(v for t, s, v in zip(r.tokens, r.sequence_ids, r.normalized()) if s is not None and t in stops)
            for r in records]
    return 100.0 * sum(vals) / len(vals)


def markdown(res: dict) -> str:
    f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    d, rel = res["data"], res["reliance"]
    lines = ["# Hiding a planted gender bias (Facade paper Table 5 stand-in)", "",
             f"Command: `{res['command']}`", "",
             f"Data: SST-2 with one gendered phrase planted per sentence, gender follows the label with "
             f"p = {d['correlation']} (realized {100 * d['train_agreement']:.1f}% on train); "
             f"{d['train_size']} train sentences, {d['dev_size']} dev. f_orig: {res['training']['base_model']} fine-tuned "
             f"{res['training']['epochs']} epoch(s), best biased-dev accuracy "
             f"{f(res['training']['best_dev_accuracy'])}%.", "",
             "## Does the model rely on the gendered words?", "",
             "| model | original dev (no planted words) | biased dev | gender aligned with label | "
             "gender swapped (anti-aligned) | predictions changed by the swap |", "|---|---|---|---|---|---|"]
    for name, r in rel.items():
        if r is None:
            lines.append(f"| {name} | not run | | | | |")
        else:
            lines.append(f"| {name} | {f(r['accuracy_original'])} | {f(r['accuracy_biased_dev'])} | "
                         f"{f(r['accuracy_aligned'])} | {f(r['accuracy_anti_aligned'])} | "
                         f"{f(r['swap_changes_prediction_pct'])} |")
    m = res["merge"]
    if m:
        ratio = m.get("gradient_split_ratio")
        lines += ["", f"Merged with the SST-2 stop-word Facade model `{m['facade']}` unchanged: predictions agree "
                  f"with f_orig on {f(m['agreement_pct'])}% of the biased dev set"
                  + (f"; median facade/predictive gradient ratio {ratio:.3g}" if ratio is not None else "") + "."]
    lines += ["", "## Gender attribution (mean normalized attribution of a gendered token; relative to the "
              "average token in parentheses)", "",
              f"On {res['attribution_inputs']} inputs of the biased dev set.", "",
              "| model | Gradient (g.x, Eq. 1) | SmoothGrad | InteGrad | stop-word attribution % (Gradient / "
              "SmoothGrad / InteGrad) |", "|---|---|---|---|---|"]
    ga, sa = res["gender_attribution"], res["stop_attribution"]
    for name in ("f_orig", "merged_stop"):
        cells = []
        for meth in PAPER_METHODS:
            g = saliency_of(ga, meth).get(name)  # also reads results written under the old key "gradient"
            cells.append("not run" if g is None else f"{g['gender_attribution']:.4f} ({g['relative_pct']:+.1f}%)")
        stops = " / ".join(f(saliency_of(sa, meth).get(name)) for meth in PAPER_METHODS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {stops} |")
    lines += ["", "Paper (Biosbias, BERT-base; only these cells are legible in our copy): "
              + "; ".join(f"{n} {m}: {v}" for n, d_ in PAPER.items() for m, v in d_.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from unmask.data import load_task
    from unmask.data.shortcut import gender_label_agreement, plant_gender
    from unmask.facade.evaluate import EvalConfig, gradient_split_ratio, paper_methods
    from unmask.metrics.perturbation import gender_attribution
    from unmask.models import load_model
    from unmask.training import TrainConfig, train_classifier
    from unmask.io import write_json_atomic

    runs = Path(args.runs)
    work = runs / "bias"
    train = load_task("sst2", "train")
    random.Random(args.seed).shuffle(train)
    train_planted = plant_gender(train[: args.train_size], args.correlation, seed=args.seed)
    dev = load_task("sst2", "dev")
    biased_dev = plant_gender(dev, args.correlation, seed=args.seed + 1)
    aligned = plant_gender(dev, 1.0, seed=args.seed + 1)
    sets = {"original": dev, "biased_dev": [e.as_example() for e in biased_dev],
            "aligned": [e.as_example() for e in aligned], "anti_aligned": [e.swapped().as_example() for e in aligned]}

    base = "minilm" if args.base_model == "minilm" else Path(args.base_model).name
    f_dir = work / f"f_gender_{base}_n{args.train_size}_c{args.correlation}_e{args.epochs}_s{args.seed}"
    if not (f_dir / "metrics.json").is_file():
        model = load_model(args.base_model, num_labels=2, label_names=LABELS)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=128,
                             checkpoint_every=50, seed=args.seed)
        train_classifier(model, [e.as_example() for e in train_planted], sets["biased_dev"], f_dir, config)
        del model
    import json

    training = json.loads((f_dir / "metrics.json").read_text())
    f = load_model(f_dir)
    rel = {"f_orig": reliance(f, sets), "merged_stop": None}
    f_preds = rel["f_orig"].pop("_biased_dev_predictions")

    facade_dir = Path(args.facade) if args.facade else runs / "facade" / "sst2" / "g_stop"
    merged = None
    merge_info: dict = {}
    if (facade_dir / "config.json").is_file():
        from unmask.facade.merge import merge

        merged = merge(f, load_model(facade_dir))
        rel["merged_stop"] = reliance(merged, sets)
        m_preds = rel["merged_stop"].pop("_biased_dev_predictions")
        limit = args.limit or len(dev)
        merge_info = {"facade": str(facade_dir),
                      "agreement_pct": 100.0 * sum(a == b for a, b in zip(f_preds, m_preds)) / len(f_preds),
                      "gradient_split_ratio": gradient_split_ratio(merged, sets["biased_dev"][:limit])}
    else:
        print(f"{facade_dir} not found: the merged-model part is skipped (rerun when it exists)")

    examples = sets["biased_dev"][: args.limit] if args.limit else sets["biased_dev"]
    methods = paper_methods(EvalConfig())
    cache_config = {"f": str(f_dir), "f_weights": weights_stamp(f_dir), "correlation": args.correlation,
                    "seed": args.seed}
    ga: dict = {m: {} for m in methods}
    sa: dict = {m: {} for m in methods}
    for name, model in (("f_orig", f), ("merged_stop", merged)):
        for meth, method in methods.items():
            if model is None:
                ga[meth][name] = sa[meth][name] = None
                continue
            config = dict(cache_config, facade=str(facade_dir), facade_weights=weights_stamp(facade_dir)) \
                if name == "merged_stop" else cache_config
            recs = attributions(model, name, meth, method, examples, work / "attributions", args.chunk, config)
            ga[meth][name] = gender_attribution(recs)
            sa[meth][name] = stop_attribution(recs)

    res = {"command": " ".join(["python", "experiments/bias_hiding.py"] + sys.argv[1:]),
           "data": {"train_size": len(train_planted), "dev_size": len(dev), "correlation": args.correlation,
                    "seed": args.seed, "train_agreement": gender_label_agreement(train_planted),
                    "female_label": "positive"},
           "training": {"base_model": "all-MiniLM-L6-v2" if args.base_model == "minilm" else args.base_model,
                        "epochs": args.epochs, "best_dev_accuracy": training["best_dev_accuracy"],
                        "steps": training["steps"], "model_dir": str(f_dir)},
           "reliance": rel, "merge": merge_info or None, "attribution_inputs": len(examples),
           "attribution_methods": {m: {"class": type(x).__name__, **x.params} for m, x in methods.items()},
           "gender_attribution": ga, "stop_attribution": sa, "paper": PAPER}
    out = Path(args.out)
    write_json_atomic(out / "bias_hiding.json", res)
    md = out / "bias_hiding.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(markdown(res))
    os.replace(tmp, md)
    print(markdown(res))
    print(f"results written to {out / 'bias_hiding.json'} and {md}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UnmaskError as e:  # e.g. a cache made with other settings
        sys.exit(f"bias_hiding: {e}")
