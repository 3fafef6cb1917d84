"""``unmask reduce`` / ``unmask hotflip`` / ``unmask triggers``: perturbation analyses from the shell."""
from __future__ import annotations

import argparse
import random

from unmask.cli import command
from unmask.commands import builder
from unmask.commands.common import add_json_argument, add_quiet_argument, emit_json


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the input sentence (premise for pairs)")
    p.add_argument("--pair", default=None, help="second sentence (hypothesis) for sentence-pair models")
    p.add_argument("--model", default="minilm", help="model directory")
    add_json_argument(p, "the result record (with every step)")


def _one_input(args: argparse.Namespace, analysis, **params):
    """(model, result) of ``analysis`` on the command's one input (``text``, ``--pair``); its steps printed."""
    from unmask.models import load_model

    model = load_model(args.model)
    (r,) = analysis(model, [args.text], [args.pair] if args.pair else None, **params)
    print(r.describe())
    return model, r


def _segment_text(model, tokens: list[str]) -> str:
    return model.tokenizer.convert_tokens_to_string(tokens)


@builder("reduce")
def build_reduce(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--beam", type=int, default=1, help="beam size (default 1)")
    p.add_argument("--segment", type=int, default=0,
                   help="segment to reduce: 0 = text / premise (default), 1 = pair / hypothesis")
    p.add_argument("--method", default=None,
                   help="attribution method ranking the pieces (default: the Facade paper's Gradient, "
                        "|g . x| of the loss on the prediction)")
    p.add_argument("--min-tokens", type=int, default=1, help="never reduce the segment below this (default 1)")
    p.add_argument("--rank", choices=["attribution", "confidence"], default="attribution",
                   help="which children a beam keeps: first by attribution order (AllenNLP, default) or "
                        "most confident")


@command("reduce", "Input reduction: remove the least important word pieces while the prediction holds.",
         "examples:\n  unmask reduce \"a gripping , funny and moving film\" --model runs/sst2\n"
         "  unmask reduce \"A man sleeps on a couch.\" --pair \"A person rests.\" --model runs/rte --beam 3\n"
         "  unmask reduce \"a dull film\" --model runs/sst2 --method integrated_gradients --json red.json")
def run_reduce(args: argparse.Namespace) -> int:
    from unmask.perturbation import reduce_inputs

    model, r = _one_input(args, reduce_inputs, beam_size=args.beam, segment=args.segment, method=args.method,
                          min_tokens=args.min_tokens, rank=args.rank)
    print(f"reduced input ({len(r.segment_tokens())} of "
          f"{len(r.segment_tokens()) + len(r.steps)} pieces kept, still {r.label_names[r.final_prediction]}): "
          f"{_segment_text(model, r.segment_tokens())}")
    emit_json(args.json, r.to_dict())
    return 0


@builder("hotflip")
def build_hotflip(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--max-flips", type=int, default=None, help="flip budget (default: every eligible piece)")
    p.add_argument("--segment", type=int, default=None,
                   help="only flip pieces of this segment: 0 = text / premise, 1 = pair (default: any)")
    p.add_argument("--stop-words-only", action="store_true", help="only flip stop words (NLTK list)")
    p.add_argument("--allow-subwords", action="store_true",
                   help="allow continuation pieces (WordPiece '##' pieces, ...) as replacements")
    p.add_argument("--allow-punctuation", action="store_true", help="allow punctuation as replacements")


@command("hotflip", "HotFlip: replace the highest-gradient pieces by first-order loss-maximizing tokens "
         "until the prediction changes.",
         "examples:\n  unmask hotflip \"a gripping , funny and moving film\" --model runs/sst2\n"
         "  unmask hotflip \"A man sleeps.\" --pair \"A person rests.\" --model runs/rte --segment 0 "
         "--stop-words-only\n  unmask hotflip \"a fine film\" --model runs/sst2 --max-flips 3 --json flips.json")
def run_hotflip(args: argparse.Namespace) -> int:
    from unmask.perturbation import hotflip

    _, r = _one_input(args, hotflip, max_flips=args.max_flips, segment=args.segment,
                      stop_words_only=args.stop_words_only, allow_subwords=args.allow_subwords,
                      allow_punctuation=args.allow_punctuation)
    names = r.label_names
    if r.success:
        print(f"prediction flipped {names[r.original_prediction]} -> {names[r.final_prediction]} "
              f"after {len(r.steps)} flip(s)")
    else:
        print(f"prediction not flipped after {len(r.steps)} flip(s) ({r.stopped})")
    emit_json(args.json, r.to_dict())
    return 0


@builder("triggers")
def build_triggers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="model directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", choices=["sst2", "rte"],
                     help="bundled task: search on its train split, evaluate on its dev split")
    src.add_argument("--data", default=None, help="a .tsv/.csv/.jsonl file; half of the class's inputs "
                                                   "are used for the search, the other half held out")
    p.add_argument("--text-col", default="text")
    p.add_argument("--pair-col", default=None)
    p.add_argument("--label-col", default="label")
    p.add_argument("--label", required=True, help="class whose inputs the trigger should flip (index or name)")
    p.add_argument("--target", default=None, help="flip to this class (default: to any other class)")
    p.add_argument("--length", type=int, default=3, help="trigger length in word pieces (default 3)")
    p.add_argument("--beam", type=int, default=1, help="beam size over trigger positions (default 1)")
    p.add_argument("--candidates", type=int, default=40, help="candidate tokens per position (default 40)")
    p.add_argument("--iterations", type=int, default=10, help="search iterations (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per iteration (default 32)")
    p.add_argument("--segment", type=int, default=None,
                   help="where the trigger goes (default: text; hypothesis for pairs)")
    p.add_argument("--search-limit", type=int, default=512, help="at most this many search inputs")
    p.add_argument("--eval-limit", type=int, default=None, help="at most this many held-out inputs")
    p.add_argument("--seed", type=int, default=0)
    add_json_argument(p, "the trigger, its search history and evaluation")
    add_quiet_argument(p, "no progress bar for the search")


def _class_examples(args: argparse.Namespace, label: int):
    from unmask.data import load_task, read_examples
    from unmask.errors import UnmaskError

    if args.task:
        search = [e for e in load_task(args.task, "train") if e.label == label]
        held = [e for e in load_task(args.task, "dev") if e.label == label]
    else:
        data = [e for e in read_examples(args.data, args.text_col, args.label_col, args.pair_col)
                if e.label == label]
        random.Random(args.seed).shuffle(data)
        search, held = data[: len(data) // 2], data[len(data) // 2:]
    if not search or not held:
        raise UnmaskError(f"not enough inputs of class {label} to search and evaluate a trigger")
    random.Random(args.seed).shuffle(search)
    return search[: args.search_limit], held[: args.eval_limit] if args.eval_limit else held


@command("triggers", "Universal adversarial triggers: search a phrase that flips the inputs of a class.",
         "examples:\n  unmask triggers --model runs/sst2 --task sst2 --label positive\n"
         "  unmask triggers --model runs/rte --task rte --label entailment --length 2 --beam 3\n"
         "  unmask triggers --model my_model --data reviews.csv --label 1 --target 0 --json trig.json\n"
         "  unmask triggers --model runs/sst2 --task sst2 --label negative --quiet --json - | jq .tokens")
def run_triggers(args: argparse.Namespace) -> int:
    from unmask.data import pairs_of
    from unmask.models import load_model
    from unmask.perturbation import evaluate_trigger, search_trigger

    model = load_model(args.model)
    label = model.label_index(args.label)
    search, held = _class_examples(args, label)
    print(f"searching on {len(search)} inputs of class {model.label_names[label]!r}, "
          f"evaluating on {len(held)} held-out inputs")
    result = search_trigger(model, [e.text for e in search], pairs_of(search), label=label, target=args.target,
                            length=args.length, segment=args.segment, beam_size=args.beam,
                            candidates=args.candidates, iterations=args.iterations, batch_size=args.batch_size,
                            seed=args.seed, progress=not args.quiet)
    evaluate_trigger(model, result, [e.text for e in held], pairs_of(held))
    print(result.describe())
    print(f"trigger found: {model.tokenizer.convert_tokens_to_string(result.tokens)!r}")
    emit_json(args.json, result.to_dict())
    return 0
