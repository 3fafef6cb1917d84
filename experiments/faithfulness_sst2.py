"""Faithfulness, sanity and agreement of every method on f_orig and on Facade-merged models (SST-2), and
which of these measures expose the facade.

    python experiments/faithfulness_sst2.py --n 40 --randomization-n 8
    python experiments/faithfulness_sst2.py --targets merged_stop=stop \\
        --models f_orig=runs/zoo/sst2_s0_16k,merged_stop=runs/zoo/merged_stop_plain

Writes experiments/results/faithfulness_sst2.{json,md} (``--out`` changes the prefix), rewritten after every
model: one ``unmask evaluate-methods`` table per model, each method's P@1 / Mean Attribution on the facade
targets (stop words, first token), then per merged model and measure whether it exposes the facade. A model
already in the JSON with the same weights file, inputs and settings is not evaluated again. At the end, one
figure per model, PREFIX_<model>.png: comprehensiveness vs the fraction of top tokens removed, a line per
method and the random ordering (dashed), AOPC in the legend. ``--plot-only`` redraws the figures from
PREFIX.json without loading a model:

    python experiments/faithfulness_sst2.py --plot-only

The first model of ``--models`` is the reference (f_orig); ``--targets`` gives each merged model's facade
target. A method is *fooled* on a merged model when its P@1 on that target is >= 30 points above the
reference's (with no target given, the gradient methods are assumed fooled). Per method, reference ->
merged, a measure *flags* the method when:

- comprehensiveness / sufficiency AOPC, deletion / insertion AUC: its gain over the random ordering (signed:
  positive = better than chance) falls to <= half of the reference's gain (which must be > 0);
- agreement with the black-box methods (mean Spearman of |scores| with leave_one_out, lime, kernel_shap;
  with the other two for one of them) drops by >= 0.2;
- randomization (rho head, rho all: Spearman with the original maps after the head / every block is
  randomized) rises by >= 0.2, i.e. the maps depend less on the weights.

A measure *exposes* the facade when it flags a fooled method and no black-box method (which a facade cannot
touch: the merged model's outputs are f_orig's); it is *not specific* when it flags a black-box method too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facade_models import command_line  # noqa: E402

MODELS = ("f_orig=runs/zoo/sst2_s0_16k,merged_stop=runs/zoo/merged_stop_plain,"
          "merged_first=runs/zoo/merged_first_plain")
TARGETS = "merged_stop=stop,merged_first=first"
OUT = "experiments/results/faithfulness_sst2"
GRADIENT = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad")
BLACK_BOX = ("leave_one_out", "lime", "kernel_shap")
FOOLED_P1 = 30.0      # P@1 points above the reference that make a method "fooled"
GAIN_SHARE = 0.5      # faithfulness: flagged when the gain over chance keeps at most this share
CORRELATION_STEP = 0.2  # agreement / randomization: flagged when it moves this much the wrong way
EPS = 1e-9            # the thresholds are inclusive (0.3 - 0.1 is 0.19999... in floats)
# (key, label, kind): "higher" / "lower" are faithfulness measures read against the random ordering
MEASURES = (("comprehensiveness", "comp AOPC", "higher"), ("sufficiency", "suff AOPC", "lower"),
            ("deletion_auc", "deletion AUC", "lower"), ("insertion_auc", "insertion AUC", "higher"),
            ("agreement_black_box", "agreement w/ black box", "agreement"),
            ("spearman_head_random", "rho head", "randomization"),
            ("spearman_all_random", "rho all", "randomization"))


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"a=x,b=y"`` -> ``{"a": "x", "b": "y"}`` (order kept); one clear error for a malformed item."""
    out: dict[str, str] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SystemExit(f"error: {what} item {item!r} is not NAME=VALUE")
        if name.strip() in out:
            raise SystemExit(f"error: {what} names {name.strip()!r} twice")
        out[name.strip()] = value.strip()
    return out


def _fingerprint(path: str) -> list[int] | None:
    """Size and mtime of the model's weights file (None if it has no model.safetensors)."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return None
    st = weights.stat()
    return [st.st_size, st.st_mtime_ns]


def saliency(model, records_by_method: dict, targets: list[str]) -> dict[str, dict[str, dict]]:
    """``{target: {method: {"p1", "attr"}}}``: the Facade paper's P@1 / Mean Attribution (%) per method."""
    from unmask.facade.targets import TargetPositions
    from unmask.metrics.saliency import saliency_summary

    out: dict[str, dict[str, dict]] = {}
    for target in targets:
        positions = TargetPositions(target, model.tokenizer)
        out[target] = {}
        for method, records in records_by_method.items():
            masks = [positions.mask_tokens(list(r.tokens), list(r.sequence_ids)) for r in records]
            out[target][method] = saliency_summary(records, masks)
    return out


def agreement_with_black_box(result: dict) -> dict[str, float | None]:
    """Per method: mean Spearman agreement with the black-box methods run (itself left out)."""
    ag = result["agreement"]["spearman"]
    names, matrix = ag["methods"], ag["matrix"]
    out: dict[str, float | None] = {}
    for i, m in enumerate(names):
        values = [matrix[i][j] for j, other in enumerate(names) if other in BLACK_BOX and other != m]
        values = [v for v in values if v is not None and v == v]
        out[m] = float(np.mean(values)) if values else None
    return out


def _value(result: dict, method: str, key: str) -> float | None:
    """A method's value of one measure in an evaluate_methods result (None when missing)."""
    if key == "agreement_black_box":
        return agreement_with_black_box(result).get(method)
    v = result["methods"].get(method, {}).get(key)
    return None if v is None or v != v else float(v)


def _gain(value: float | None, chance: float | None, kind: str) -> float | None:
    if value is None or chance is None:
        return None
    return value - chance if kind == "higher" else chance - value


def flag(kind: str, ref: float | None, merged: float | None, chance_ref: float | None = None,
         chance_merged: float | None = None) -> bool | None:
    """Whether a measure flags a method (module docstring); None when it cannot say (a value is missing,
    or the method is no better than chance on the reference)."""
    if kind in ("higher", "lower"):
        g_ref, g_merged = _gain(ref, chance_ref, kind), _gain(merged, chance_merged, kind)
        if g_ref is None or g_merged is None or g_ref <= 0:
            return None
        return g_merged <= GAIN_SHARE * g_ref + EPS
    if ref is None or merged is None:
        return None
    change = merged - ref
    return change <= EPS - CORRELATION_STEP if kind == "agreement" else change >= CORRELATION_STEP - EPS


def fooled_methods(reference: dict, merged: dict, target: str | None) -> tuple[list[str], str]:
    """Methods the facade fools on the merged model, and how that was decided."""
    methods = [m for m in merged["methods"] if m in reference["methods"]]
    if target is None:
        return [m for m in methods if m in GRADIENT], "assumed: the gradient methods (no facade target given)"
    ref_s, merged_s = reference["facade_saliency"][target], merged["facade_saliency"][target]
    fooled = [m for m in methods if merged_s[m]["p1"] - ref_s[m]["p1"] >= FOOLED_P1]
    return fooled, f"P@1 on the {target!r} target >= {FOOLED_P1:g} points above the reference's"


def exposure(models: dict, reference: str, targets: dict[str, str]) -> dict:
    """Per merged model: the fooled methods and, per measure, each method's values, flags and the verdict."""
    ref = models[reference]
    out = {}
    for name, merged in models.items():
        if name == reference:
            continue
        fooled, rule = fooled_methods(ref, merged, targets.get(name))
        methods = [m for m in merged["methods"] if m in ref["methods"]]
        measures = {}
        for key, _, kind in MEASURES:
            rows = {}
            for m in methods:
                row = {"reference": _value(ref, m, key), "merged": _value(merged, m, key)}
                if kind in ("higher", "lower"):
                    row["chance_reference"] = ref["random"].get(key)
                    row["chance_merged"] = merged["random"].get(key)
                row["flag"] = flag(kind, row["reference"], row["merged"], row.get("chance_reference"),
                                   row.get("chance_merged"))
                rows[m] = row
            flagged = [m for m in methods if rows[m]["flag"]]
            if not fooled:
                verdict = "nothing to expose (no method fooled)"
            elif any(m in BLACK_BOX for m in flagged):
                verdict = "not specific (flags a black-box method too)"
            elif set(flagged) & set(fooled):
                verdict = "exposes"
            elif all(rows[m]["flag"] is None for m in fooled):
                verdict = "cannot tell (no value for the fooled methods)"
            else:
                verdict = "does not expose"
            measures[key] = {"verdict": verdict, "flagged": flagged,
                             "fooled_flagged": [m for m in fooled if m in flagged], "methods": rows}
        out[name] = {"target": targets.get(name), "fooled": fooled, "fooled_rule": rule, "measures": measures}
    return out


def _f(x, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def exposure_markdown(reference: str, exposed: dict) -> list[str]:
    """The verdict per measure, then every number behind it."""
    labels = {k: label for k, label, _ in MEASURES}
    lines = ["## Which measures expose the facade", "",
             f"Reference: {reference}. Rules in the script's docstring: a method is fooled when its P@1 on the "
             f"facade target rises >= {FOOLED_P1:g} points; a faithfulness measure flags it when its gain over "
             f"the random ordering keeps <= {GAIN_SHARE:g} of the reference's; agreement with the black-box "
             f"methods flags a drop >= {CORRELATION_STEP:g}, randomization a rise >= {CORRELATION_STEP:g}. "
             "A measure exposes the facade when it flags a fooled method and no black-box method.", ""]
    for name, e in exposed.items():
        lines += [f"### {name}", "", f"Fooled methods ({e['fooled_rule']}): "
                  f"{', '.join(e['fooled']) if e['fooled'] else 'none'}.", "",
                  "| measure | verdict | fooled methods flagged | all methods flagged |", "|---|---|---|---|"]
        for key, m in e["measures"].items():
            lines.append(f"| {labels[key]} | {m['verdict']} | {', '.join(m['fooled_flagged']) or '-'} | "
                         f"{', '.join(m['flagged']) or '-'} |")
        lines += ["", f"{reference} -> {name} per method (flagged **in bold**; chance = random ordering, "
                  f"{reference} / {name}):", "",
                  "| method | " + " | ".join(labels[k] for k, _, _ in MEASURES) + " |",
                  "|---|" + "---|" * len(MEASURES)]
        methods = list(next(iter(e["measures"].values()))["methods"])
        for method in methods:
            cells = []
            for key, _, _ in MEASURES:
                row = e["measures"][key]["methods"][method]
                cell = f"{_f(row['reference'])} -> {_f(row['merged'])}"
                cells.append(f"**{cell}**" if row["flag"] else cell)
            mark = " (fooled)" if method in e["fooled"] else ""
            lines.append(f"| {method}{mark} | " + " | ".join(cells) + " |")
        chance = []
        for key, _, kind in MEASURES:
            row = next(iter(e["measures"][key]["methods"].values()), {})
            chance.append(f"{_f(row.get('chance_reference'))} / {_f(row.get('chance_merged'))}"
                          if kind in ("higher", "lower") else "")
        lines += ["| *chance* | " + " | ".join(chance) + " |", ""]
    return lines


def saliency_markdown(result: dict) -> list[str]:
    """One line per facade target: each method's P@1 / Mean Attribution on this model."""
    lines = []
    for target, per_method in result.get("facade_saliency", {}).items():
        lines += [f"Facade target {target!r}: P@1 / Mean Attribution (%) per method: "
                  + ", ".join(f"{m} {_f(v['p1'], 1)} / {_f(v['attr'], 1)}" for m, v in per_method.items()), ""]
    return lines


def write(results: dict, reference: str, targets: dict[str, str], out: str) -> None:
    """PREFIX.json (every number, the exposure verdicts) and PREFIX.md (the tables)."""
    from unmask.commands.common import json_ready
    from unmask.commands.evaluate_methods_cmd import evaluation_markdown
    from unmask.io import write_json_atomic, write_text_atomic

    ready = json_ready(results)  # NaN -> None before any comparison
    if reference in ready["models"] and len(ready["models"]) > 1:
        ready["exposure"] = exposure(ready["models"], reference, targets)
    md = [f"# Faithfulness and sanity on SST-2 (first {ready['n']} dev sentences)", "",
          f"Command: `{ready['command']}`", ""]
    for name, r in ready["models"].items():
        md += [f"## {name} ({r['path']})", "", evaluation_markdown(r), *saliency_markdown(r)]
    if "exposure" in ready:
        md += exposure_markdown(reference, ready["exposure"])
    write_json_atomic(f"{out}.json", ready)
    write_text_atomic(f"{out}.md", "\n".join(md) + "\n")


def plot(results: dict, out: str) -> list[Path]:
    """PREFIX_<model>.png per model of ``results`` (the JSON this script writes): each method's
    comprehensiveness at every stored fraction (``methods[m].faithfulness``) and the random ordering's
    (``random.faithfulness``, dashed black), drawn by ``unmask.report.plots.faithfulness_curves``. Models
    without per-fraction values are left out; returns the files written."""
    from unmask.report import plots

    written = []
    for name, r in results["models"].items():
        chance = (r.get("random") or {}).get("faithfulness") or {}
        per_method = {m: (v or {}).get("faithfulness") or {} for m, v in r.get("methods", {}).items()}
        fractions = chance.get("fractions") or next((f["fractions"] for f in per_method.values()
                                                     if f.get("fractions")), None)
        curves = {m: f["comprehensiveness"] for m, f in per_method.items()
                  if f.get("fractions") == fractions and f.get("comprehensiveness")}
        if not fractions or not curves:
            print(f"[faithfulness] {name}: no per-fraction comprehensiveness, no figure", flush=True)
            continue
        if chance.get("comprehensiveness") and chance.get("fractions", fractions) == fractions:
            curves["random ordering"] = chance["comprehensiveness"]
        curves = {m: [np.nan if v is None else v for v in values] for m, values in curves.items()}  # JSON null = NaN
        fig = plots.faithfulness_curves(
            fractions, curves, ylabel="comprehensiveness",
            title=f"{name}: comprehensiveness, SST-2 (first {results.get('n', '?')} dev)")
        ax = fig.axes[0]
        for line in ax.get_lines():
            if line.get_label().startswith("random ordering ("):
                line.set(color="black", linestyle="--", marker="x", zorder=3)
        ax.set_xlabel(f"fraction of top tokens {'removed' if r.get('mode', 'remove') == 'remove' else 'masked'}"
                      + (f" (ranked by {r['rank_by']} score)" if r.get("rank_by") else ""))
        ax.set_ylabel("comprehensiveness (drop in p(y))")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        path = Path(f"{out}_{name}.png")
        plots.save_figure(fig, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    import json

    from unmask.commands.common import json_ready
    from unmask.commands.evaluate_methods_cmd import evaluate_methods
    from unmask.data import load_task
    from unmask.models import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=MODELS,
                   help="NAME=DIR,... ; the first is the reference (default %(default)s)")
    p.add_argument("--targets", default=TARGETS, help="NAME=TARGET,... facade target of each merged model "
                   "(stop, first, ...; default %(default)s)")
    p.add_argument("--n", type=int, default=40, help="first N SST-2 dev sentences (default %(default)s)")
    p.add_argument("--randomization-n", type=int, default=8)
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=OUT, help="output prefix: writes PREFIX.json and PREFIX.md (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw PREFIX_<model>.png from PREFIX.json (no model is loaded or evaluated)")
    args = p.parse_args(argv)
    if args.plot_only:
        source = Path(f"{args.out}.json")
        if not source.is_file():
            raise SystemExit(f"error: {source} not found: nothing to plot")
        written = plot(json.loads(source.read_text()), args.out)
        print("wrote " + (", ".join(map(str, written)) or "no figure"))
        return 0
    models = parse_pairs(args.models, "--models")
    targets = parse_pairs(args.targets, "--targets")
    if args.n < 1 or args.randomization_n < 0:
        raise SystemExit("error: --n must be >= 1 and --randomization-n >= 0")
    if len(models) < 2:
        raise SystemExit("error: --models needs the reference and at least one merged model")
    missing = [f"{n} ({d})" for n, d in models.items() if not (Path(d) / "config.json").is_file()]
    if missing:
        raise SystemExit(f"error: no model at {', '.join(missing)}")
    reference = next(iter(models))
    torch.set_num_threads(args.threads)
    texts = [e.text for e in load_task("sst2", "dev", limit=args.n)]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    all_targets = list(dict.fromkeys(targets[n] for n in models if n in targets))
    settings = {"n": args.n, "randomization_n": args.randomization_n, "methods": methods, "seed": args.seed,
                "targets": all_targets}
    previous = {}
    if Path(f"{args.out}.json").is_file():
        previous = json.loads(Path(f"{args.out}.json").read_text()).get("models", {})
    results = {"command": command_line("faithfulness_sst2.py", argv), "n": args.n, "reference": reference,
               "targets": targets, "models": {}}
    for name, path in models.items():
        old = previous.get(name, {})
        key = {"path": path, "weights": _fingerprint(path), **settings}
        if old.get("key") == json_ready(key) and key["weights"] is not None:
            print(f"[faithfulness] {name}: unchanged, kept from {args.out}.json", flush=True)
            results["models"][name] = old
            continue
        print(f"[faithfulness] {name} ({path})", flush=True)
        model = load_model(path)
        records: dict = {}
        r = evaluate_methods(model, texts, methods=methods, randomization_n=args.randomization_n, seed=args.seed,
                             progress=not args.quiet, records_out=records)
        r["model"] = f"{name} ({path})"
        r["path"], r["key"] = path, key
        r["facade_saliency"] = saliency(model, records, all_targets)
        results["models"][name] = r
        write(results, reference, targets, args.out)
    write(results, reference, targets, args.out)
    written = plot(json.loads(Path(f"{args.out}.json").read_text()), args.out)
    print(f"wrote {args.out}.json, {args.out}.md" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
