"""``unmask attribute-dataset``: a data set through attribution methods into resumable Parquet parts."""
from __future__ import annotations

import argparse

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_data_arguments, add_json_argument, add_quiet_argument, emit_json
from unmask.errors import UnmaskError


@builder("attribute-dataset")
def build(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p, ".jsonl/.csv/.tsv/.parquet", "kept if present")
    p.add_argument("--model", required=True, help="classifier directory (or 'minilm')")
    p.add_argument("--methods", required=True, help="comma-separated methods (see unmask explain --list-methods)")
    p.add_argument("--out", required=True, help="results directory of Parquet parts (e.g. results.parquet)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per chunk and part file (default 64)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None,
                   help="precision of every method that has one (default: each method's own, 'auto')")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=2, help="Ray actors, one model each (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="torch threads (and Ray CPUs) per actor")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray actor (e.g. 1 on a GPU cluster)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto' after `ray start --head`); default: a local Ray instance")
    add_quiet_argument(p)
    add_json_argument(p, "the counts (rows, examples, resumed, examples/s) and OUT")


@command("attribute-dataset", "Explain a whole data set with attribution methods; write Parquet incrementally "
         "(a rerun resumes a killed run; --backend ray spreads chunks over Ray actors).",
         "examples:\n"
         "  unmask attribute-dataset --data sst2 --model runs/sst2 --methods gradient,integrated_gradients "
         "--out sst2_attr.parquet\n"
         "  unmask attribute-dataset --data reviews.jsonl --model runs/sst2 --methods smoothgrad --out r.parquet "
         "--backend ray --workers 4\n"
         "  ray start --head; unmask attribute-dataset --data big.parquet --model /shared/runs/sst2 "
         "--methods gradient --out /shared/out.parquet --backend ray --address auto --workers 8 "
         "--gpus-per-worker 1\n"
         "read the result: pyarrow.parquet.read_table(OUT) or unmask.dataset.read_results(OUT)")
def run(args: argparse.Namespace) -> int:
    from unmask.dataset import DataSpec, attribute_dataset

    if args.threads_per_worker < 1:
        raise UnmaskError(f"--threads-per-worker must be positive, got {args.threads_per_worker}")
    spec = DataSpec(args.data, args.split, args.text_column, args.pair_column, args.label_column, args.limit)
    result = attribute_dataset(spec, args.model, args.methods.split(","), args.out, args.batch_size, args.backend,
                               args.workers, args.precision, progress=not args.quiet, address=args.address,
                               gpus_per_worker=args.gpus_per_worker, threads_per_worker=args.threads_per_worker)
    rate = result["examples_per_second"]
    resumed = f", {result['resumed_from']} resumed from an earlier run" if result["resumed_from"] else ""
    print(f"{result['rows']} rows ({result['examples']} examples x {len(args.methods.split(','))} methods{resumed}) "
          f"written to {result['out']}" + (f"; {rate:.1f} examples/s" if rate else ""))
    emit_json(args.json, result)
    return 0
