"""``unmask evaluate-methods``: rank attribution methods by faithfulness, sanity, agreement and cost.

Per method: ERASER comprehensiveness / sufficiency AOPC and deletion / insertion AUC (with one random
ordering baseline for all, as every method explains the same predictions), the cascading
model-parameter randomization test on a subset, the mean Spearman agreement with the other methods,
and seconds per sentence. ``evaluate_methods`` is the library form; ``evaluation_markdown`` renders it.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from unmask.attribution.base import DEFAULT_TOKEN_BUDGET
from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import (add_data_arguments, add_json_argument, add_quiet_argument, emit_json,
                                   json_ready)
from unmask.errors import UnmaskError

MEASURES = (("comprehensiveness", True), ("sufficiency", False), ("deletion_auc", False), ("insertion_auc", True))


def default_methods() -> list[str]:
    """Every registered method once, by its own name (aliases left out), in registration order."""
    from unmask.attribution import METHODS

    return list(dict.fromkeys(cls.name for cls in METHODS.values()))


def _mean_rank(rows: dict[str, dict]) -> dict[str, float]:
    """Mean over the four faithfulness measures of each method's rank (1 = most faithful)."""
    ranks = {m: [] for m in rows}
    for key, higher in MEASURES:
        order = sorted(rows, key=lambda m: -rows[m][key] if higher else rows[m][key])
        for r, m in enumerate(order, 1):
            ranks[m].append(r)
    return {m: sum(v) / len(v) for m, v in ranks.items()}


def evaluate_methods(model, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     methods: Sequence[str] | None = None, mode: str = "remove", rank_by: str = "signed",
                     randomization_n: int = 32, repeats: int = 3, steps: int = 10, seed: int = 0,
                     token_budget: int = DEFAULT_TOKEN_BUDGET, progress: bool = False,
                     records_out: dict | None = None) -> dict:
    """Evaluate ``methods`` (default: all registered) on ``texts``; a JSON-ready dict with per-method
    results (``methods``), the random baseline, the agreement matrices and the ranking. ``records_out``,
    if given, receives each method's attribution records (name -> list), e.g. for further measures."""
    from tqdm.auto import tqdm

    from unmask.attribution import explain, get_method
    from unmask.metrics.agreement import agreement_matrix
    from unmask.metrics.faithfulness import (FRACTIONS, deletion_curve, faithfulness, insertion_curve,
                                             random_curve, random_faithfulness)
    from unmask.metrics.sanity import randomization_blocks, randomization_test

    texts = list(texts)
    pairs = list(pairs) if pairs is not None else None
    names = list(methods) if methods else default_methods()
    if not texts:
        raise UnmaskError("no inputs to evaluate")
    if len(set(names)) != len(names):
        raise UnmaskError(f"a method is listed twice: {', '.join(names)}")
    if randomization_n < 0:
        raise UnmaskError(f"randomization_n must be >= 0, got {randomization_n}")
    instances = [get_method(n, token_budget=token_budget) for n in names]
    sub = min(len(texts), randomization_n)
    try:
        randomization_blocks(model)
        no_randomization = None if sub else "randomization_n = 0"
    except UnmaskError as e:
        no_randomization = str(e)
    bar = tqdm(total=3 * len(instances) + 2, desc="evaluate-methods", disable=not progress)
    records, results = {}, {}
    for method in instances:
        bar.set_postfix_str(f"{method.name}: explain")
        start = time.perf_counter()
        recs = explain(model, texts, [method], pairs=pairs, token_budget=token_budget)[method.name]
        seconds = time.perf_counter() - start
        records[method.name] = recs
        if records_out is not None:
            records_out[method.name] = recs
        bar.update(1)
        bar.set_postfix_str(f"{method.name}: faithfulness")
        f = faithfulness(model, recs, FRACTIONS, mode, rank_by, token_budget)
        d = deletion_curve(model, recs, steps, mode, rank_by, token_budget)
        i = insertion_curve(model, recs, steps, mode, rank_by, token_budget)
        bar.update(1)
        row = {"comprehensiveness": f.aopc_comprehensiveness, "sufficiency": f.aopc_sufficiency,
               "deletion_auc": d.auc, "insertion_auc": i.auc, "seconds_per_sentence": seconds / len(texts),
               "faithfulness": f.to_dict(), "deletion": d.to_dict(), "insertion": i.to_dict(),
               "params": {k: v for k, v in method.params.items() if isinstance(v, (int, float, str, bool))}}
        if no_randomization is None:
            bar.set_postfix_str(f"{method.name}: randomization")
            test = randomization_test(model, texts[:sub], method, "cascading",
                                      pairs[:sub] if pairs is not None else None, seed)
            stages = test.to_dict()["stages"]
            row["randomization"] = stages
            row["spearman_head_random"] = stages[1]["spearman"]
            row["spearman_all_random"] = stages[-1]["spearman"]
        bar.update(1)
        results[method.name] = row
    bar.set_postfix_str("random baseline")
    first = next(iter(records.values()))
    rf = random_faithfulness(model, first, FRACTIONS, mode, repeats, seed, token_budget)
    rd = random_curve(model, first, "deletion", steps, mode, repeats, seed, token_budget)
    ri = random_curve(model, first, "insertion", steps, mode, repeats, seed, token_budget)
    bar.update(1)
    bar.set_postfix_str("agreement")
    agreement = {}
    for statistic in ("spearman", "kendall"):
        order, matrix = agreement_matrix(records, statistic)
        agreement[statistic] = {"methods": order, "matrix": matrix.tolist()}
    spearman = agreement["spearman"]["matrix"]
    for j, name in enumerate(names):
        others = [spearman[j][k] for k in range(len(names)) if k != j]
        results[name]["agreement"] = sum(others) / len(others) if others else float("nan")
    bar.update(1)
    bar.close()
    ranks = _mean_rank(results)
    ranking = sorted(names, key=lambda m: (ranks[m], -results[m]["comprehensiveness"]))
    for m in names:
        results[m]["mean_rank"] = ranks[m]
    return {
        "model": model.name, "n": len(texts), "mode": mode, "rank_by": rank_by, "fractions": list(FRACTIONS),
        "steps": steps, "random_repeats": repeats, "seed": seed,
        "randomization": {"n": sub if no_randomization is None else 0, "mode": "cascading",
                          "not_run": no_randomization},
        "random": {"comprehensiveness": rf.aopc_comprehensiveness, "sufficiency": rf.aopc_sufficiency,
                   "deletion_auc": rd.auc, "insertion_auc": ri.auc, "faithfulness": rf.to_dict(),
                   "deletion": rd.to_dict(), "insertion": ri.to_dict()},
        "methods": results, "ranking": ranking, "agreement": agreement,
        "ranked_by": "mean rank over comprehensiveness (high), sufficiency (low), deletion AUC (low) and "
                     "insertion AUC (high)",
    }


def _f(x, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def evaluation_markdown(result: dict) -> str:
    """The ranked table, the random baseline row and the agreement matrix, as markdown."""
    rnd, rz = result["random"], result["randomization"]
    lines = [f"Model `{result['model']}`, {result['n']} inputs, perturbation `{result['mode']}`, ranking by "
             f"`{result['rank_by']}` scores; ranked by {result['ranked_by']}.",
             f"AOPC over k = {', '.join(f'{100 * f:g}%' for f in result['fractions'])} of the tokens; curves "
             f"with {result['steps']} steps; random: {result['random_repeats']} random orderings per input.",
             (f"Randomization: cascading, on the first {rz['n']} inputs; Spearman of |scores| with the original "
              "after the head is randomized (rho head) and after every block is (rho all); low is good."
              if rz["not_run"] is None else f"Randomization test not run: {rz['not_run']}."),
             "",
             "| rank | method | comp AOPC (higher) | suff AOPC (lower) | deletion AUC (lower) | "
             "insertion AUC (higher) | rho head | rho all | agreement | s / sentence |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r, name in enumerate(result["ranking"], 1):
        m = result["methods"][name]
        lines.append(f"| {r} | {name} | {_f(m['comprehensiveness'])} | {_f(m['sufficiency'])} | "
                     f"{_f(m['deletion_auc'])} | {_f(m['insertion_auc'])} | {_f(m.get('spearman_head_random'), 2)} | "
                     f"{_f(m.get('spearman_all_random'), 2)} | {_f(m['agreement'], 2)} | "
                     f"{m['seconds_per_sentence']:.4f} |")
    lines.append(f"| - | *random* | {_f(rnd['comprehensiveness'])} | {_f(rnd['sufficiency'])} | "
                 f"{_f(rnd['deletion_auc'])} | {_f(rnd['insertion_auc'])} | | | | |")
    ag = result["agreement"]["spearman"]
    lines += ["", "Agreement (mean per-input Spearman of |scores| over non-special tokens):", "",
              "| | " + " | ".join(ag["methods"]) + " |", "|---|" + "---:|" * len(ag["methods"])]
    for name, row in zip(ag["methods"], ag["matrix"]):
        lines.append(f"| {name} | " + " | ".join(_f(v, 2) for v in row) + " |")
    return "\n".join(lines) + "\n"


@builder("evaluate-methods")
def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier directory (or 'minilm')")
    add_data_arguments(p, ".tsv/.csv/.jsonl", "read, not used")
    p.add_argument("--n", type=int, default=200, help="evaluate the first N inputs (default %(default)s)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: every registered method; see unmask explain "
                        "--list-methods)")
    p.add_argument("--mode", choices=["remove", "mask"], default="remove",
                   help="delete the word pieces (default) or replace them by [MASK]")
    p.add_argument("--rank-by", choices=["signed", "abs"], default="signed",
                   help="rank tokens by signed score (default; positive supports the prediction) or |score|")
    p.add_argument("--randomization-n", type=int, default=32,
                   help="inputs for the cascading randomization test (default min(N, %(default)s); 0 = skip)")
    p.add_argument("--random-repeats", type=int, default=3, help="random orderings per input (default 3)")
    p.add_argument("--steps", type=int, default=10, help="deletion / insertion curve steps (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=DEFAULT_TOKEN_BUDGET)
    add_json_argument(p, "every number")
    p.add_argument("--markdown", default=None, help="write the table as markdown here")
    add_quiet_argument(p)


def _load_inputs(args: argparse.Namespace):
    from unmask.data import pairs_of, task_or_file

    if args.n is not None and args.n < 1:
        raise UnmaskError(f"--n must be positive, got {args.n}")
    examples = task_or_file(args.data, args.n, args.split, args.text_column, args.label_column, args.pair_column)
    return [e.text for e in examples], pairs_of(examples)


@command("evaluate-methods", "Rank attribution methods by faithfulness (comprehensiveness, sufficiency, "
         "deletion / insertion), sanity (randomization test), agreement and cost.",
         "examples:\n"
         "  unmask evaluate-methods --model runs/sst2 --data sst2 --n 200 --json faith.json\n"
         "  unmask evaluate-methods --model runs/rte --data rte --n 50 --methods gradient,integrated_gradients,lime\n"
         "  unmask evaluate-methods --model my_model --data reviews.csv --mode mask --json - --quiet")
def run(args: argparse.Namespace) -> int:
    from unmask.io import write_text_atomic
    from unmask.models import load_model

    texts, pairs = _load_inputs(args)
    model = load_model(args.model)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.methods is not None and not methods:
        raise UnmaskError("--methods is empty")
    result = evaluate_methods(model, texts, pairs, methods, args.mode, args.rank_by, args.randomization_n,
                              args.random_repeats, args.steps, args.seed, args.token_budget,
                              progress=not args.quiet)
    result = json_ready({**result, "data": args.data})
    table = evaluation_markdown(result)
    print(table, end="")  # on stderr with --json - (unmask.cli.main)
    if args.markdown:
        write_text_atomic(args.markdown, table)
        print(f"markdown written to {args.markdown}")
    emit_json(args.json, result)
    return 0
