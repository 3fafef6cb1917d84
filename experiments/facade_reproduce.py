"""Reproduce the Facade paper's Tables 1 and 2 on SST-2 or RTE (standing in for SNLI).

    python experiments/facade_reproduce.py --task sst2
    python experiments/facade_reproduce.py --task rte
    python experiments/facade_reproduce.py --task sst2 --plot-only   # redraw facade_sst2.png from the JSON

The committed SST-2 table (round-4 recipe: one objective, per-target budgets via --ft / --stop):

    python experiments/facade_reproduce.py --task sst2 --f-orig runs/zoo/sst2_s0_16k --root runs/facade/sst2_r4 \
        --lambda-g 2000 --entropy-weight 1000 --agreement-weight 10000 --margin-weight 30000 \
        --baseline-weight 1e5 --facade-lr 2e-4 --lr-schedule cosine --max-length 64 \
        --ft steps=400,batch_size=16,baseline_warmup=100,path_weight=100 \
        --stop steps=500,batch_size=32,baseline_warmup=150 --threads 1

Needs the fine-tuned predictive model (``unmask train --task TASK --out runs/TASK``). Every stage
(g_ft, g_stop, rp, merges, evaluations) is cached under runs/facade/TASK and resumed after a kill.
Writes experiments/results/facade_TASK.json, .md and .png (Table 2 as bars: P@1 / mean attribution per
method and model, one row per target, drawn by ``unmask.report.plots.facade_bars``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facade_models import command_line  # noqa: E402

from unmask.commands.common import apply_threads  # noqa: E402
from unmask.facade.evaluate import EvalConfig  # noqa: E402
from unmask.facade.objective import FacadeObjective  # noqa: E402
from unmask.facade.pipeline import FacadePipeline, PipelineConfig  # noqa: E402
from unmask.facade.tables import RENAMED, facade_markdown  # noqa: E402
from unmask.facade.train import FacadeConfig, override_config  # noqa: E402
from unmask.io import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def plot(results: dict, path: Path) -> Path:
    """Table 2 of ``results`` (the JSON this script writes) as bars through ``plots.facade_bars``: P@1 and
    mean attribution on each target, a bar per method, a cluster per model. Results written before the
    rename keep gradient x input under "gradient"; facade_bars labels it gradient x input."""
    from unmask.report.plots import facade_bars, save_figure

    fig = facade_bars(results)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    for ax in fig.axes:  # one legend above the panels instead of one per panel over the bars
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels), fontsize=9)
    save_figure(fig, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["sst2", "rte"], required=True)
    p.add_argument("--f-orig", default=None, help="predictive model (default runs/TASK)")
    p.add_argument("--root", default=None, help="artifact directory (default runs/facade/TASK)")
    p.add_argument("--facade-steps", type=int, default=300)
    p.add_argument("--facade-batch-size", type=int, default=32)
    p.add_argument("--facade-lr", type=float, default=1e-4)
    p.add_argument("--lambda-g", type=float, default=1e3)
    p.add_argument("--entropy-weight", type=float, default=1.0)
    p.add_argument("--agreement-weight", type=float, default=1e3)
    p.add_argument("--margin-weight", type=float, default=0.0,
                   help="weight of the hinge keeping the merged margin >= margin-keep x f's margin")
    p.add_argument("--margin-keep", type=float, default=0.5)
    p.add_argument("--baseline-weight", type=float, default=0.0,
                   help="weight keeping g's logits at the IG baseline equal to its logits at x")
    p.add_argument("--path-weight", type=float, default=0.0, help="IG-path term (as `unmask facade train`)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--baseline-warmup", type=int, default=0, metavar="STEPS",
                   help="ramp the IG-baseline term's weight from 0 over STEPS steps")
    p.add_argument("--max-length", type=int, default=128, help="word pieces per facade training input")
    for key, name in (("ft", "first-token"), ("stop", "stop-word")):
        p.add_argument(f"--{key}", default="", metavar="KEY=VALUE,...",
                       help=f"settings of the {name} g only, over the shared ones (FacadeConfig or objective "
                            f"fields, e.g. steps=400,batch_size=16,path_weight=100)")
        p.add_argument(f"--{key}-rp", default="", metavar="KEY=VALUE,...",
                       help=f"settings of the {name} g trained against rp, over the shared ones and --{key}")
    p.add_argument("--paper-objective", action="store_true",
                   help="train g on its own attribution only (Eq. 3), not on the merged model's")
    p.add_argument("--rp-steps", type=int, default=400)
    p.add_argument("--rp-lr", type=float, default=2e-5)
    p.add_argument("--no-rp", action="store_true")
    p.add_argument("--rp-facades", choices=["own", "shared"], default="own",
                   help="regularized merges: a g trained against rp (own, default) or the f_orig-trained g (shared)")
    p.add_argument("--facade-hidden", type=int, default=256, help="width of g")
    p.add_argument("--ig-steps", type=int, default=20)
    p.add_argument("--methods", default="gradient_x_input,smoothgrad,integrated_gradients",
                   help="comma-separated saliency methods for Table 2 (others print as '-'); the paper's "
                        "Gradient is gradient_x_input (the old spelling 'gradient' is read as it)")
    p.add_argument("--eval-limit", type=int, default=None, help="first N dev examples (default: all)")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suffix", default="", help="write facade_TASK_SUFFIX.* (variants beside the main table)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw facade_TASK[_SUFFIX].png from the results JSON (nothing is trained or evaluated)")
    args = p.parse_args(argv)
    stem = f"facade_{args.task}" + (f"_{args.suffix}" if args.suffix else "")
    if args.plot_only:
        source = RESULTS / f"{stem}.json"
        if not source.is_file():
            raise SystemExit(f"error: {source} not found: nothing to plot")
        print(f"figure written to {plot(json.loads(source.read_text()), RESULTS / f'{stem}.png')}")
        return 0
    apply_threads(args.threads)
    objective = FacadeObjective(lambda_g=args.lambda_g, entropy_weight=args.entropy_weight,
                                agreement_weight=0.0 if args.paper_objective else args.agreement_weight,
                                margin_weight=0.0 if args.paper_objective else args.margin_weight,
                                margin_keep=args.margin_keep, baseline_weight=args.baseline_weight,
                                path_weight=args.path_weight)
    facade = FacadeConfig(steps=args.facade_steps, batch_size=args.facade_batch_size, lr=args.facade_lr,
                          objective=objective, seed=args.seed, max_length=args.max_length,
                          lr_schedule=args.lr_schedule, baseline_warmup=args.baseline_warmup)
    per_target = {key: override_config(facade, getattr(args, key)) for key in ("ft", "stop") if getattr(args, key)}
    per_target.update({f"{key}_rp": override_config(per_target.get(key, facade), getattr(args, f"{key}_rp"))
                       for key in ("ft", "stop") if getattr(args, f"{key}_rp")})
    config = PipelineConfig(
        task=args.task, f_orig=args.f_orig or f"runs/{args.task}", root=args.root or f"runs/facade/{args.task}",
        facade=facade, target_facades=per_target,
        merged_objective=not args.paper_objective, rp_steps=args.rp_steps, rp_lr=args.rp_lr,
        with_rp=not args.no_rp, rp_facades=args.rp_facades, facade_hidden=args.facade_hidden, eval_limit=args.eval_limit, train_limit=args.train_limit,
        evaluation=EvalConfig(ig_steps=args.ig_steps, methods=tuple(RENAMED.get(m, m) for m in args.methods.split(","))),
        seed=args.seed)
    command = command_line("facade_reproduce.py", argv)
    results = FacadePipeline(config).run(command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = write_json_atomic(RESULTS / f"{stem}.json", results)
    md_path = write_text_atomic(RESULTS / f"{stem}.md", facade_markdown(results))
    png_path = plot(json.loads(json_path.read_text()), RESULTS / f"{stem}.png")  # as --plot-only reads it
    print(f"results written to {json_path}, {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
