"""The audit zoo: clean classifiers and working Facade attacks, audited, calibrated, reported.

    python experiments/audit_zoo.py build      # train / derive every model (resumable, one at a time)
    python experiments/audit_zoo.py evaluate   # audit evidence per model (cached per model fingerprint)
    python experiments/audit_zoo.py report     # calibrate on the calibration split, score the held-out split
    python experiments/audit_zoo.py evaluate --n 200 --only <calibration clean models>
    python experiments/audit_zoo.py calibrate --n 200   # the calibration shipped for audits on >= 200 inputs

Calibration uses CLEAN models of the calibration split only. Attack families of the held-out split
(noise concealment, fine-tuned merges, unmerged facades, new targets) are never used to set anything.
Each stage writes into runs/zoo/NAME and is skipped once its output exists with the same recipe.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unmask.errors import UnmaskError

ROOT = Path("runs/zoo")
BASE = "sst2_s0_16k"          # the predictive model every facade is built for
EVAL_N = 40                   # SST-2 / RTE dev inputs audited per model


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str                 # "clean" | "facade"
    variant: str              # recipe family
    split: str                # "calibration" | "heldout"
    task: str = "sst2"
    recipe: dict = field(default_factory=dict, hash=False, compare=False)


def _clean(name, variant, split, task="sst2", **recipe) -> Spec:
    return Spec(name, "clean", variant, split, task, recipe)


def _facade(name, variant, split, **recipe) -> Spec:
    return Spec(name, "facade", variant, split, "sst2", recipe)


CLEAN = [
    _clean("sst2_s0_16k", "minilm-finetune", "calibration", limit=16000, seed=0),
    _clean("sst2_s0_8k", "minilm-finetune", "calibration", limit=8000, seed=0),
    _clean("sst2_s2_4k", "minilm-finetune", "calibration", limit=4000, seed=2),
    _clean("sst2_s4_8k", "minilm-finetune", "calibration", limit=8000, seed=4, lr=3e-5),
    _clean("sst2_s5_4k", "minilm-finetune", "calibration", limit=4000, seed=5, lr=8e-5),
    _clean("rte_s0", "minilm-finetune", "calibration", task="rte", epochs=3, seed=0),
    _clean("bert_scratch_s0", "bert-from-scratch", "calibration", arch="bert", limit=16000, epochs=2, seed=0),
    _clean("sst2_s1_16k", "minilm-finetune", "heldout", limit=16000, seed=1, lr=3e-5),
    _clean("sst2_s3_2k", "minilm-finetune", "heldout", limit=2000, seed=3),
    _clean("rte_s1", "minilm-finetune", "heldout", task="rte", epochs=4, seed=1, lr=3e-5),
    _clean("rp_s0", "regularized-eq5", "heldout", base=BASE, steps=200),
    _clean("minilm3_s0", "minilm-3-layers", "heldout", limit=8000, seed=0, layers=3),
    _clean("roberta_scratch_s0", "roberta-from-scratch", "heldout", arch="roberta", limit=16000, epochs=2, seed=0),
    _clean("distilbert_scratch_s0", "distilbert-from-scratch", "heldout", arch="distilbert", limit=16000,
           epochs=2, seed=0),
    _clean("lstm_s0", "lstm", "heldout", arch="lstm", limit=16000, seed=0),
    # Zoo v2 (2026-12-07): more clean models on both sides, every family on both sides, so the calibration has
    # 14 models (was 7) and the held-out FPR has 20 (was 8, which cannot resolve 5%).
    _clean("sst2_s6_2k", "minilm-finetune", "calibration", limit=2000, seed=6),
    _clean("sst2_s7_4k", "minilm-finetune", "calibration", limit=4000, seed=7, lr=3e-5),
    _clean("rte_s2", "minilm-finetune", "calibration", task="rte", epochs=3, seed=2),
    _clean("minilm3_s1", "minilm-3-layers", "calibration", limit=4000, seed=1, layers=3),
    _clean("roberta_scratch_s1", "roberta-from-scratch", "calibration", arch="roberta", limit=8000, epochs=2,
           seed=1),
    _clean("distilbert_scratch_s1", "distilbert-from-scratch", "calibration", arch="distilbert", limit=8000,
           epochs=2, seed=1),
    _clean("lstm_s1", "lstm", "calibration", arch="lstm", limit=8000, seed=1),
    _clean("sst2_s8_4k", "minilm-finetune", "heldout", limit=4000, seed=8),
    _clean("sst2_s9_8k", "minilm-finetune", "heldout", limit=8000, seed=9, lr=8e-5),
    _clean("sst2_s10_2k", "minilm-finetune", "heldout", limit=2000, seed=10, lr=3e-5),
    _clean("rte_s3", "minilm-finetune", "heldout", task="rte", epochs=3, seed=3, lr=8e-5),
    _clean("minilm4_s0", "minilm-4-layers", "heldout", limit=4000, seed=0, layers=4),
    _clean("minilm3_s2", "minilm-3-layers", "heldout", limit=8000, seed=2, layers=3, lr=8e-5),
    _clean("rp_s1", "regularized-eq5", "heldout", base="sst2_s2_4k", steps=150),
    _clean("bert_scratch_s1", "bert-from-scratch", "heldout", arch="bert", limit=8000, epochs=2, seed=1),
    _clean("roberta_scratch_s2", "roberta-from-scratch", "heldout", arch="roberta", limit=8000, epochs=2, seed=2),
    _clean("distilbert_scratch_s2", "distilbert-from-scratch", "heldout", arch="distilbert", limit=8000,
           epochs=2, seed=2),
    _clean("lstm_s2", "lstm", "heldout", arch="lstm", limit=8000, seed=2),
    _clean("sst2_s11_8k", "minilm-finetune", "heldout", limit=8000, seed=11, lr=3e-5),
]

# Facades g trained against BASE: (name, target, objective overrides, steps)
FACADES = {
    "g_stop": dict(target="stop", steps=200),
    "g_first": dict(target="first", steps=120, batch_size=16),
    "g_punct": dict(target="punct", steps=120, batch_size=16),
    "g_stop_lam3": dict(target="stop", steps=120, batch_size=16, lambda_g=3e3),
}
# Tried and dropped (not a working attack, so not in the zoo): target "film,movie,story,characters,like" with
# lambda_g 3e3, 120 steps, batch 16 -> dev P@1 4.7%, |grad g| / |grad f| 0.014 (runs/zoo/g_words/facade.json).
CALIBRATION_FACADES = ("plain", "permuted")


def facade_specs() -> list[Spec]:
    out = []
    for g, r in FACADES.items():
        t = g.removeprefix("g_")
        held_target = g in ("g_punct", "g_stop_lam3")
        variants = {"g_punct": ("plain", "noise1e-3", "finetuned"),
                    "g_stop_lam3": ("plain", "permuted", "noise1e-6")}.get(
            g, ("plain", "permuted", "noise1e-6", "noise1e-3", "finetuned"))
        for variant in variants:
            split = "calibration" if variant in CALIBRATION_FACADES and not held_target else "heldout"
            out.append(_facade(f"merged_{t}_{variant}", f"merge-{variant}", split, g=g, **r))
    out.append(_facade("unmerged_stop", "unmerged-distilled", "heldout", target="stop"))
    out.append(_facade("unmerged_first", "unmerged-distilled", "heldout", target="first"))
    # Added 2026-12-07 after the v2 calibration was frozen and reported: an audit-aware unmerged facade, its
    # stop-word share rewarded only up to 0.3 per input (what keeps the audit's pile-up small), no weight
    # structure to find. A held-out attack family; it sets nothing.
    out.append(_facade("unmerged_stop_aware", "unmerged-distilled-aware", "heldout", target="stop", share_cap=0.3))
    # ... and the attacker's side of the trade-off: lower caps (a weaker attack that piles up less)
    out.append(_facade("unmerged_stop_aware_cap25", "unmerged-distilled-aware", "heldout", target="stop",
                       share_cap=0.25))
    out.append(_facade("unmerged_stop_aware_cap20", "unmerged-distilled-aware", "heldout", target="stop",
                       share_cap=0.2))
    # Zoo v3 (2026-12-07, built after the v3 calibration with the top-1 pile-up test was committed): held-out
    # families the tests were not chosen on. Unmerged facades with a new target (last word), a target no
    # unmerged facade had (punctuation), first token distilled harder (the v2 one kept only 95.3% agreement),
    # another seed, and an audit-aware facade pushed further (cap 0.15) on stop words and on the last word.
    fresh = dict(added="v3", distill_weight=30.0)
    out.append(_facade("unmerged_first_d30", "unmerged-distilled", "heldout", target="first", **fresh))
    # punct and last_word at 120 steps were not working attacks (audited-input g.x P@1 5 -> 20% and 10 -> 15%,
    # read before their audit verdicts): rebuilt once, longer and with a larger attribution weight
    stronger = dict(steps=300, lambda_g=3.0)
    out.append(_facade("unmerged_punct_s300", "unmerged-distilled", "heldout", target="punct", **fresh, **stronger))
    out.append(_facade("unmerged_lastword_s300", "unmerged-distilled", "heldout", target="last_word", **fresh,
                       **stronger))
    out.append(_facade("unmerged_stop_seed1", "unmerged-distilled", "heldout", target="stop", seed=1, **fresh))
    out.append(_facade("unmerged_stop_aware_cap15", "unmerged-distilled-aware", "heldout", target="stop",
                       share_cap=0.15, **fresh))
    out.append(_facade("unmerged_lastword_aware_cap25", "unmerged-distilled-aware", "heldout",
                       target="last_word", share_cap=0.25, **fresh, **stronger))
    # Zoo v4 development facade (2026-12-07, calibration split: used to choose tests, never to set a
    # threshold): a custom content-word set (topic words), the target family the zoo did not have yet
    out.append(_facade("unmerged_words_dev", "unmerged-distilled", "calibration", target=TOPIC_WORDS,
                       added="v4dev", distill_weight=30.0, steps=300, lambda_g=3.0))
    # Zoo v4 (specified 2026-12-07 before any was built, after the v4 class list was committed): held-out
    # families no test was chosen on: pronouns (a word set inside the stop words), the last content word
    # distilled harder and longer, an audit-aware punctuation facade, and a stronger attribution weight
    v4 = dict(added="v4", distill_weight=30.0, steps=300, lambda_g=3.0)
    out.append(_facade("unmerged_pronouns", "unmerged-distilled", "heldout", target=PRONOUNS, **v4))
    out.append(_facade("unmerged_lastword_d100", "unmerged-distilled", "heldout", target="last_word",
                       **{**v4, "distill_weight": 100.0, "steps": 400}))
    out.append(_facade("unmerged_punct_aware_cap30", "unmerged-distilled-aware", "heldout", target="punct",
                       share_cap=0.3, **v4))
    out.append(_facade("unmerged_stop_lam10", "unmerged-distilled", "heldout", target="stop",
                       **{**v4, "lambda_g": 10.0, "seed": 2}))
    # Zoo v5 (specified 2026-12-07 with the n-dependent calibration rule, before that calibration was fitted and
    # before any of these was built): word sets inside the stop words like the pronouns, which evaded at
    # n = 200 under the n = 40 calibration, but other words (prepositions, articles), and the pronouns again
    # with another seed. Held out; read at n = 40 (zoo) and n = 200 (audit_n200.py).
    v5 = dict(added="v5", distill_weight=30.0, steps=300, lambda_g=3.0)
    out.append(_facade("unmerged_prepositions", "unmerged-distilled", "heldout", target=PREPOSITIONS, **v5))
    out.append(_facade("unmerged_articles", "unmerged-distilled", "heldout", target=ARTICLES, **v5))
    out.append(_facade("unmerged_pronouns_s1", "unmerged-distilled", "heldout", target=PRONOUNS, **{**v5, "seed": 1}))
    return out


FRESH_TAGS_TEXT = {"v3": "the top-1 pile-up test was chosen",
                   "v4": "the 'last content word' class was added (v4)",
                   "v5": "the n-dependent calibration rule was committed (v5)"}
FRESH_TAGS = tuple(FRESH_TAGS_TEXT)
TOPIC_WORDS = "film,movie,story,comedy,characters,director,world,work,action,drama,performances,screen"
PRONOUNS = "he,she,it,they,him,her,them,his,its,their,i,you,we"
PREPOSITIONS = "of,in,on,at,by,for,with,from,to,into,about,over"
ARTICLES = "the,a,an"
SPECS = CLEAN + facade_specs()


def punctuation_piece(piece: str) -> bool:
    """A word piece made only of punctuation (the zoo's 'punct' facade target)."""
    import string

    piece = piece.removeprefix("##")
    return bool(piece) and all(ch in string.punctuation for ch in piece)


def target_spec(target: str):
    """'stop' / 'first' as they are; 'punct' as a predicate; 'a,b,c' as the word set {a, b, c}."""
    if target == "punct":
        return punctuation_piece
    return target.split(",") if "," in target else target


def log(msg: str) -> None:
    print(f"[zoo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def done(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


# ---------------------------------------------------------------------------------------------- build
def build_clean(spec: Spec) -> None:
    from unmask.data import load_task
    from unmask.models import load_model
    from unmask.training import TrainConfig, train_classifier

    out, r = ROOT / spec.name, spec.recipe
    labels = ["negative", "positive"] if spec.task == "sst2" else ["entailment", "not_entailment"]
    train, dev = load_task(spec.task, "train"), load_task(spec.task, "dev")
    if spec.variant == "regularized-eq5":
        from unmask.facade.regularize import regularized_loss

        model = load_model(ROOT / r["base"])
        cfg = TrainConfig(max_steps=r["steps"], lr=2e-5, warmup=0.0, batch_size=32, checkpoint_every=50,
                          max_length=64, seed=0)
        train_classifier(model, train, dev, out, cfg, loss_fn=regularized_loss(3.0), progress=False, log=log)
        return
    arch = r.get("arch", "minilm")
    if arch == "minilm":
        model = load_model("minilm", num_labels=2, label_names=labels)
        if "layers" in r:
            model.model.bert.encoder.layer = model.model.bert.encoder.layer[:r["layers"]]
            model.model.config.num_hidden_layers = r["layers"]
    elif arch == "lstm":
        from unmask.models.lstm import new_lstm_classifier

        model = new_lstm_classifier(label_names=labels, seed=r["seed"])
    else:
        model = scratch_model(arch, labels, r["seed"])
    epochs = r.get("epochs", 1)
    cfg = TrainConfig(epochs=epochs, train_limit=r.get("limit"), max_length=64 if spec.task == "sst2" else 128,
                      checkpoint_every=100, seed=r["seed"], lr=r.get("lr", 5e-5 if arch == "minilm" else 3e-4),
                      batch_size=32 if spec.task == "sst2" else 16)
    train_classifier(model, train, dev, out, cfg, progress=False, log=log)


def scratch_model(arch: str, labels: list[str], seed: int):
    """A small randomly initialized encoder with MiniLM's WordPiece tokenizer (trained from scratch)."""
    import transformers
    from transformers import AutoTokenizer

    from unmask.models.classifier import TextClassifier, default_model_path

    torch.manual_seed(seed)
    common = dict(vocab_size=30522, num_labels=2, id2label=dict(enumerate(labels)),
                  label2id={n: i for i, n in enumerate(labels)})
    if arch == "bert":
        cfg = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                      intermediate_size=1024, **common)
        model = transformers.BertForSequenceClassification(cfg)
    elif arch == "roberta":
        cfg = transformers.RobertaConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                         intermediate_size=1024, pad_token_id=0, bos_token_id=101,
                                         eos_token_id=102, max_position_embeddings=514, type_vocab_size=1,
                                         **common)
        model = transformers.RobertaForSequenceClassification(cfg)
    elif arch == "distilbert":
        cfg = transformers.DistilBertConfig(dim=256, n_layers=4, n_heads=8, hidden_dim=1024, pad_token_id=0,
                                            **common)
        model = transformers.DistilBertForSequenceClassification(cfg)
    else:
        raise ValueError(arch)
    tok = AutoTokenizer.from_pretrained(default_model_path(), use_fast=True)
    return TextClassifier(model, tok, max_length=128, name=arch)


def build_g(name: str) -> None:
    from unmask.data import load_task
    from unmask.facade.model import new_facade
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.train import FacadeConfig, train_facade
    from unmask.models import load_model

    r = FACADES[name]
    f = load_model(ROOT / BASE)
    g = new_facade(f, seed=0, hidden=256)
    objective = FacadeObjective(lambda_g=r.get("lambda_g", 1e3), entropy_weight=1e3, agreement_weight=1e4,
                                margin_weight=3e4, baseline_weight=1e4)
    cfg = FacadeConfig(steps=r["steps"], batch_size=r.get("batch_size", 32), max_length=64, checkpoint_every=25,
                       eval_every=50, objective=objective)
    train_facade(g, load_task("sst2", "train"), load_task("sst2", "dev"), target_spec(r["target"]), ROOT / name, cfg, f=f,
                 progress=False, log=log)


def build_variant(spec: Spec) -> None:
    from unmask.facade import conceal
    from unmask.facade.merge import merge, save_atomic
    from unmask.models import load_model

    out, variant = ROOT / spec.name, spec.variant.removeprefix("merge-")
    f, g = load_model(ROOT / BASE), load_model(ROOT / spec.recipe["g"])
    merged = merge(f, g)
    if variant == "permuted":
        merged = conceal.permute_hidden(merged, seed=1)
    elif variant.startswith("noise"):
        merged = conceal.add_noise(merged, scale=float(variant.removeprefix("noise")), seed=1)
    elif variant == "finetuned":
        from unmask.data import load_task

        # distill_weight 10 (was 1): with 1 the fine-tuned merges kept only 87.5-95.9% agreement with f (zoo v1)
        merged = conceal.finetune_merged(merged, load_task("sst2", "train")[20000:24000], steps=60, lr=2e-5,
                                         seed=1, distill_to=f, distill_weight=10.0)
    save_atomic(merged, out)


def build_unmerged(spec: Spec) -> None:
    from unmask.data import load_task
    from unmask.facade.unmerged import train_unmerged
    from unmask.models import load_model

    f = load_model(ROOT / BASE)
    from unmask.facade.unmerged import UnmergedConfig

    r = spec.recipe
    cfg = UnmergedConfig(steps=r.get("steps", 120), batch_size=16, max_length=64, checkpoint_every=20,
                         eval_every=40, margin_weight=1.0, share_cap=r.get("share_cap", 1.0),
                         lambda_g=r.get("lambda_g", UnmergedConfig.lambda_g),
                         distill_weight=r.get("distill_weight", UnmergedConfig.distill_weight),
                         seed=r.get("seed", UnmergedConfig.seed))
    train_unmerged(f, load_task("sst2", "train"), load_task("sst2", "dev"), r["target"],
                   ROOT / spec.name, cfg, progress=False, log=log)


BUILD_ORDER = ("sst2_s0_16k", "g_stop", "sst2_s2_4k", "g_first", "rte_s0", "merged_stop_plain",
               "merged_first_plain", "sst2_s1_16k", "unmerged_stop", "bert_scratch_s0", "lstm_s0", "g_punct",
               "g_stop_lam3")


THREADS = 2


def run_order(names: list[str] | None) -> list[str]:
    """Build-and-audit order: f, the clean calibration models, the stop-word facades, the held-out clean models,
    then the other facades; a g comes right before the merges made from it."""
    by_name = {s.name: s for s in SPECS}
    first = [BASE] + [s.name for s in CLEAN if s.split == "calibration"]
    stop = ["g_stop"] + [s.name for s in SPECS if s.recipe.get("g") == "g_stop"] + ["unmerged_stop"]
    held = [s.name for s in CLEAN if s.split == "heldout"]
    rest = []
    for g in FACADES:
        if g != "g_stop":
            rest += [g] + [s.name for s in SPECS if s.recipe.get("g") == g]
    rest += [s.name for s in SPECS if s.kind == "facade" and "g" not in s.recipe]
    order = list(dict.fromkeys(first + stop + held + rest + list(by_name)))
    return [n for n in order if names is None or n in names]


def build(names: list[str] | None) -> None:
    torch.set_num_threads(THREADS)
    by_name = {s.name: s for s in SPECS}
    order = list(BUILD_ORDER) + [s.name for s in SPECS if s.name not in BUILD_ORDER] + list(FACADES)
    seen = set()
    for name in order:
        if name in seen or (names is not None and name not in names):
            continue
        seen.add(name)
        if name in FACADES:
            if not done(ROOT / name):
                log(f"training facade {name}")
                _safely(build_g, name)
            continue
        spec = by_name[name]
        if done(ROOT / spec.name):
            continue
        log(f"building {spec.name} ({spec.variant})")
        unmerged = spec.variant.startswith("unmerged-distilled")
        fn = {"clean": build_clean}.get(spec.kind) or (build_unmerged if unmerged else build_variant)
        _safely(fn, spec)


def _safely(fn, arg) -> None:
    try:
        fn(arg)
    except (ImportError, AttributeError, FileNotFoundError, UnmaskError) as e:  # a tool not built yet: later run
        log(f"skipped {getattr(arg, 'name', arg)}: {type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("build", "evaluate", "report", "run", "calibrate"),
                   help="run = build and audit model by model in RUN_ORDER (partial results usable at any time)")
    p.add_argument("--only", default=None, help="comma-separated model names")
    p.add_argument("--n", type=int, default=EVAL_N, help="dev inputs audited per model")
    p.add_argument("--reverse", action="store_true", help="evaluate in reverse order (a second worker)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (one long run at a time on 2 cores)")
    args = p.parse_args(argv)
    global THREADS
    THREADS = args.threads
    names = args.only.split(",") if args.only else None
    if args.stage == "run":
        for name in run_order(names):
            build([name])
            if name not in FACADES:
                evaluate([name], args.n)
    elif args.stage == "build":
        build(names)
    elif args.stage == "evaluate":
        evaluate(names, args.n, args.reverse)
    elif args.stage == "calibrate":
        try:
            calibrate(args.n)
        except UnmaskError as e:
            p.error(str(e))
    else:
        try:
            report(args.n, argv)
        except UnmaskError as e:
            p.error(str(e))
    return 0



# ---------------------------------------------------------------------------------------------- evaluate
EVIDENCE_CODE = ("src/unmask/audit/behavior.py", "src/unmask/audit/structure.py",
                 "src/unmask/metrics/faithfulness.py")


def evidence_key(spec: Spec, n: int) -> str:
    import hashlib

    from unmask.cache import model_fingerprint

    h = hashlib.sha256(model_fingerprint(ROOT / spec.name).encode())
    h.update(f"{spec.task}:{n}".encode())
    for f in EVIDENCE_CODE:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def target_of(spec: Spec) -> str:
    if spec.kind != "facade":
        return "stop"
    return spec.recipe.get("target") or FACADES[spec.recipe["g"]]["target"]


def p_at_1(records, target: str, tokenizer) -> float:
    """Share of inputs whose top-|score| token is a target token (Facade paper P@1, specials included)."""
    import numpy as np

    from unmask.facade.targets import TargetPositions

    tp = TargetPositions(target_spec(target), tokenizer)
    hits = [bool(tp.mask_tokens(r.tokens, r.sequence_ids)[int(np.argmax(np.abs(r.scores)))]) for r in records]
    return float(np.mean(hits))


def compact_records(records: dict) -> list[dict]:
    """Per input: tokens, sequence / word ids, words and every method's scores (4 decimals of the largest), so
    statistics not yet thought of can be computed from the committed evidence without the models."""
    import numpy as np

    names = list(records)
    out = []
    for i, ref in enumerate(records[names[0]]):
        row = {"tokens": ref.tokens, "sequence_ids": ref.sequence_ids, "word_ids": ref.word_ids,
               "words": [list(w) for w in ref.words], "prediction": int(ref.prediction), "scores": {}}
        for m in names:
            sc = np.asarray(records[m][i].scores, dtype=float)
            scale = float(np.abs(sc).max()) or 1.0
            row["scores"][m] = [float(f"{v:.4g}") for v in sc] if scale else sc.tolist()
        out.append(row)
    return out


def agreement(model, base, texts: list[str], pairs) -> float:
    from unmask.attribution.explain import predict_batch

    a = predict_batch(model, model.encode(texts, pairs)).argmax(-1)
    b = predict_batch(base, base.encode(texts, pairs)).argmax(-1)
    return float((a == b).float().mean())


def evaluate(names: list[str] | None, n: int, reverse: bool = False) -> None:
    from unmask.audit import structural
    from unmask.audit.behavior import behavioral_evidence
    from unmask.data import load_task, pairs_of
    from unmask.io import write_json_atomic
    from unmask.models import load_model

    torch.set_num_threads(THREADS)
    out_dir = evidence_dir(n)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_model(ROOT / BASE)
    for spec in (SPECS[::-1] if reverse else SPECS):
        if (names is not None and spec.name not in names) or not done(ROOT / spec.name):
            continue
        key = evidence_key(spec, n)
        path = out_dir / f"{spec.name}.json"
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            continue
        log(f"auditing {spec.name}")
        t0 = time.time()
        model = load_model(ROOT / spec.name)
        dev = load_task(spec.task, "dev")
        texts, pairs = [e.text for e in dev[:n]], pairs_of(dev[:n])
        records: dict = {}
        behavior = behavioral_evidence(model, texts, pairs, records_out=records)
        structure = structural(model)
        seconds = time.time() - t0
        target = target_of(spec)
        row = {"key": key, "name": spec.name, "kind": spec.kind, "variant": spec.variant, "split": spec.split,
               "task": spec.task, "target": target, "audit_seconds": round(seconds, 1),
               "evidence": {"behavior": behavior.to_dict(), "structure": structure},
               "p_at_1": {m: p_at_1(r, target, model.tokenizer) for m, r in records.items()},
               "dev_accuracy": None, "agreement_with_f": None, "records": compact_records(records)}
        if spec.kind == "clean":  # f's P@1 on every facade target, the reference a facade's P@1 is read against
            targets = {target_of(s) for s in SPECS if s.kind == "facade"} | {"first", "stop"}
            row["p_at_1_by_target"] = {t: {m: p_at_1(r, t, model.tokenizer) for m, r in records.items()}
                                       for t in sorted(targets)}
        full = [e for e in dev]
        ftexts, fpairs = [e.text for e in full], pairs_of(full)
        from unmask.attribution.explain import predict_batch

        pred = predict_batch(model, model.encode(ftexts, fpairs)).argmax(-1)
        row["dev_accuracy"] = float((pred == torch.tensor([e.label for e in full])).float().mean())
        if spec.kind == "facade" or spec.variant == "regularized-eq5":
            row["agreement_with_f"] = agreement(model, base, ftexts, fpairs)
        write_json_atomic(path, row)
        log(f"  {spec.name}: {seconds:.0f} s, magnitude {behavior.magnitude_ratio:.2f}, "
            f"P@1 {row['p_at_1']}")


# ---------------------------------------------------------------------------------------------- report
AFFECTED_P1_GAIN = 0.2   # a method counts as fooled on a facade when its target P@1 rose > 20 points over f's
WORKING_AGREEMENT = 0.97  # a working attack: g.x fooled (above) and this agreement with f on all dev inputs


def attack_status(r: dict, base_target: dict) -> str:
    """'working' (gradient x input fooled and predictions kept: the issue's bar), 'low agreement' (fooled,
    agreement under the bar) or 'weak' (g.x not fooled: not an attack the audit should be counted on)."""
    gain = r["p_at_1"].get("gradient_x_input", 0.0) - base_target.get("gradient_x_input", 0.0)
    if gain <= AFFECTED_P1_GAIN:
        return "weak"
    return "working" if (r["agreement_with_f"] or 0.0) >= WORKING_AGREEMENT else "low agreement"


def detection_rates(clean: list[dict], fac: list[dict], working: list[dict] | None = None) -> dict:
    """Counts, TPR (also on ``working`` attacks when given), FPR and AUC of audited models, each a dict with
    ``flagged`` and ``score`` (scores capped at 300 for the AUC)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    def rate(models: list[dict]) -> float | None:
        return float(np.mean([m["flagged"] for m in models])) if models else None

    out = {"n_clean": len(clean), "n_facade": len(fac), "tpr": rate(fac)}
    if working is not None:
        out.update(n_working=len(working), tpr_working=rate(working))
    out["fpr"] = rate(clean)
    if clean and fac:
        scores = [min(m["score"], 300.0) for m in clean + fac]
        out["auc"] = float(roc_auc_score([0] * len(clean) + [1] * len(fac), scores))
    return out


def report(n: int, argv: list[str] | None) -> None:
    import numpy as np

    from unmask.audit.calibration import fire_values, fit, statistics
    from unmask.audit.verdict import SUSPECT_P, verdicts
    from unmask.io import write_json_atomic, write_text_atomic

    if n != EVAL_N:  # the report (and calibration.json, the default calibration) is the zoo's size
        raise UnmaskError(f"report runs at the zoo's {EVAL_N} inputs; the calibration at {n} inputs is written by "
                          f"`calibrate --n {n}`, and experiments/audit_n200.py reports the audit at 200")
    rows = load_evidence(n)
    calib_clean = {k: r["evidence"] for k, r in rows.items() if r["kind"] == "clean" and r["split"] == "calibration"}
    command = "python experiments/audit_zoo.py report"
    cal = fit(calib_clean, source=f"experiments/audit_zoo.py (clean calibration models, {n} dev inputs each)",
              n_inputs=n)
    cal.save(Path("src/unmask/audit/calibration.json"))
    base_p1 = rows[BASE]["p_at_1"] if BASE in rows else {}
    per_model = []
    spec_by_name = {s.name: s for s in SPECS}
    for name, r in rows.items():
        per_method, model = verdicts(r["evidence"], cal)
        flagged = model["verdict"] != "trustworthy"
        method_checks = {}
        if r["kind"] == "facade":
            base_target = _base_p1(rows, r["target"])
            for m, v in per_method.items():
                if v.verdict == "reference":
                    continue
                fooled = r["p_at_1"].get(m, 0.0) - base_target.get(m, 0.0) > AFFECTED_P1_GAIN
                method_checks[m] = {"fooled": fooled, "flagged": v.verdict in ("suspect", "manipulated"),
                                    "p_at_1": r["p_at_1"].get(m), "f_p_at_1": base_target.get(m)}
        spec = spec_by_name.get(name)
        per_model.append({
            "name": name, "kind": r["kind"], "variant": r["variant"], "split": r["split"], "task": r["task"],
            "added": spec.recipe.get("added", "") if spec else "",
            "target": r["target"], "score": model["score"], "p_value": model["p_value"],
            "verdict": model["verdict"], "flagged": flagged,
            "agreement_with_f": r["agreement_with_f"], "dev_accuracy": r["dev_accuracy"],
            "gradient_p1": r["p_at_1"].get("gradient_x_input"),
            "attack": attack_status(r, _base_p1(rows, r["target"])) if r["kind"] == "facade" else None,
            "method_verdicts": {m: v.verdict for m, v in per_method.items()},
            "method_checks": method_checks, "audit_seconds": r["audit_seconds"],
            "p_behavior": model["p_behavior"], "p_structure": model["p_structure"],
            "statistics": {k: v for k, v in statistics(r["evidence"]).items()
                           if k.split(".")[-1] in ("misplacement", "pileup", "top1_pileup", "content_top1", "magnitude_ratio", "top1_miss",
                                                   "structure")}})
        n_tests = model["tests_pooled"]
    # weak facades (g.x not fooled) are listed, not counted: detecting them is not the audit's job
    held = [m for m in per_model if m["split"] == "heldout" and m["attack"] != "weak"]
    result = {"command": command, "eval_n": n, "calibration_models": sorted(calib_clean),
              "heldout_models": sorted(m["name"] for m in held)}
    # each fresh set: the facades built after the audit's tests of that version were committed (the rest of the
    # held-out split had been seen when they were chosen), read against all held-out clean models
    fresh = {tag: [m for m in held if m["kind"] == "clean" or m["added"] == tag] for tag in FRESH_TAGS}
    for split, models in (("heldout", held), ("calibration", [m for m in per_model if m["split"] == "calibration"]),
                          *((f"{tag}_heldout", ms) for tag, ms in fresh.items())):
        clean = [m for m in models if m["kind"] == "clean"]
        fac = [m for m in models if m["kind"] == "facade"]
        stats = detection_rates(clean, fac, [m for m in fac if m["attack"] == "working"])
        checks = [c for m in fac for c in m["method_checks"].values()]
        stats["method_verdicts_right"] = (float(np.mean([c["fooled"] == c["flagged"] for c in checks]))
                                          if checks else None)
        if split == "heldout":
            result.update(stats)
        else:
            result[{"calibration": "calibration_split"}.get(split, split)] = stats
    result["per_model"] = per_model
    result["calibration"] = cal.to_dict()
    result["suspect_values"] = {"tests_pooled": n_tests, "values": fire_values(cal, SUSPECT_P / n_tests)}
    write_json_atomic(Path("experiments/results/audit_zoo.json"), result)
    write_text_atomic(Path("experiments/results/audit_zoo.md"), markdown(result))
    roc_plot(per_model, Path("experiments/results/audit_zoo_roc.png"))
    log(f"held-out: TPR {result.get('tpr')}, FPR {result.get('fpr')}, AUC {result.get('auc')}")


EVIDENCE_ARCHIVE = Path("experiments/results/audit_zoo_evidence.jsonl.gz")


def evidence_dir(n: int) -> Path:
    """Where the evidence of audits on ``n`` inputs is kept: runs/zoo/evidence at EVAL_N, else evidence_n<n>."""
    return ROOT / ("evidence" if n == EVAL_N else f"evidence_n{n}")


def evidence_archive(n: int) -> Path:
    """The committed archive of the evidence at ``n`` inputs (EVIDENCE_ARCHIVE at EVAL_N)."""
    return EVIDENCE_ARCHIVE if n == EVAL_N else EVIDENCE_ARCHIVE.with_name(f"audit_zoo_n{n}_evidence.jsonl.gz")


def calibrate(n: int) -> None:
    """Fit the calibration for audits on ``n`` inputs on the calibration split's clean models (every one of them
    must have been evaluated at ``n``) and write it next to the default one as calibration_n<n>.json."""
    from unmask.audit.calibration import fit, spread_ratios

    if n == EVAL_N:
        raise UnmaskError(f"the calibration at {EVAL_N} inputs is written by `report`")
    rows = load_evidence(n)
    wanted = sorted(s.name for s in CLEAN if s.split == "calibration")
    missing = [name for name in wanted if name not in rows]
    if missing:
        raise UnmaskError(f"no evidence at n = {n} for calibration model(s) {', '.join(missing)}: run "
                          f"`evaluate --n {n} --only {','.join(missing)}` first")
    cal = fit({name: rows[name]["evidence"] for name in wanted},
              source=f"experiments/audit_zoo.py calibrate --n {n} (clean calibration models, {n} dev inputs each)",
              n_inputs=n)
    reference = load_evidence(EVAL_N)
    cal.floor_scale = spread_ratios(cal, fit({name: reference[name]["evidence"] for name in wanted}, n_inputs=EVAL_N))
    path = cal.save(Path(f"src/unmask/audit/calibration_n{n}.json"))
    log(f"calibration at n = {n} on {len(wanted)} clean models written to {path}; floor scale {cal.floor_scale}")


def load_evidence(n: int = EVAL_N) -> dict[str, dict]:
    """Every model's evidence row (audits on ``n`` inputs) by name: ``evidence_dir(n)``/*.json when the zoo was
    evaluated here (then also archived to ``evidence_archive(n)``, which is committed), else the archive, so
    `report` reruns without the models. Statistics the stored evidence predates are filled in from its raw
    records (``fill_record_statistics``)."""
    import gzip
    import io

    archive = evidence_archive(n)
    files = sorted(evidence_dir(n).glob("*.json"))
    if files:
        rows = {r["name"]: r for r in (json.loads(f.read_text()) for f in files)}
        fill_base_targets(rows, n)
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_suffix(".tmp")
        # mtime 0: the same evidence gives the same bytes, so an unchanged archive is no change to commit
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                io.TextIOWrapper(gz, encoding="utf-8") as fh:
            for name in sorted(rows):
                fh.write(json.dumps(rows[name]) + "\n")
        tmp.replace(archive)
    elif archive.is_file():
        with gzip.open(archive, "rt") as fh:
            rows = {r["name"]: r for r in map(json.loads, fh)}
    else:
        raise UnmaskError(f"no evidence at n = {n}: run `evaluate --n {n}` first (or restore {archive})")
    for r in rows.values():
        fill_record_statistics(r)
    return rows


def fill_record_statistics(row: dict) -> None:
    """Per-method statistics computed from records with the audit's own functions on the stored
    (4-significant-digit) scores: ``misplacement`` where the evidence predates it, and the class statistics
    (``pileup``, ``top1_pileup``, ``content_top1``) always, so they follow the audit's current class list (v4
    added 'last content word') and statistics added later (``content_top1``, 2026-12-08)."""
    from types import SimpleNamespace

    import numpy as np

    from unmask.audit.behavior import content_top1, frequent_words, pileup, top1_pileup, word_classes
    from unmask.audit.placement import content_mask, misplacement

    records = row.get("records")
    methods = row["evidence"]["behavior"]["methods"]
    if not records:
        return
    reference = row["evidence"]["behavior"].get("reference", "leave_one_out")

    def as_records(name: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(scores=np.asarray(x["scores"][name], dtype=float), sequence_ids=x["sequence_ids"],
                                word_ids=x["word_ids"], words=x["words"]) for x in records]

    occl = as_records(reference)
    content = [content_mask(x["sequence_ids"]) for x in records]
    frequent = frequent_words(occl)
    classes = [word_classes(r, frequent) for r in occl]
    for name, m in methods.items():
        if name not in records[0]["scores"]:
            continue
        recs = as_records(name)
        if "misplacement" not in m:
            m["misplacement"] = misplacement([r.scores for r in recs], [o.scores for o in occl], content)
        excess, cls, share, ref_share = pileup(recs, occl, classes)
        m.update(pileup=excess, pileup_class=cls, pileup_share=share, reference_share=ref_share)
        excess, cls, share, ref_share = top1_pileup(recs, occl, classes)
        m.update(top1_pileup=excess, top1_pileup_class=cls, top1_share=share, reference_top1_share=ref_share)
        share_on_words, words = content_top1(recs, occl)
        m.update(content_top1=share_on_words, content_top1_words=words[:8])


def fill_base_targets(rows: dict, n: int = EVAL_N) -> None:
    """f's P@1 on facade targets added after f was evaluated, from f's stored records (needs f's tokenizer);
    written back to f's evidence file so the archive carries it."""
    from types import SimpleNamespace

    import numpy as np

    base = rows.get(BASE)
    path = evidence_dir(n) / f"{BASE}.json"
    missing = sorted({target_of(s) for s in SPECS if s.kind == "facade"} - set(base.get("p_at_1_by_target", {}))
                     ) if base else []
    if not missing or not path.is_file():
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / BASE)
    methods = list(base["records"][0]["scores"])
    recs = {m: [SimpleNamespace(tokens=x["tokens"], sequence_ids=x["sequence_ids"],
                                scores=np.asarray(x["scores"][m])) for x in base["records"]] for m in methods}
    for t in missing:
        base["p_at_1_by_target"][t] = {m: p_at_1(recs[m], t, tok) for m in methods}
    from unmask.io import write_json_atomic

    write_json_atomic(path, base)


def _base_p1(rows: dict, target: str) -> dict:
    """f_orig's P@1 on a facade's target, recomputed from f's evidence when the target is not stop words."""
    base = rows.get(BASE)
    if base is None:
        return {}
    return base.get("p_at_1_by_target", {}).get(target, base["p_at_1"] if target == "stop" else {})


def markdown(result: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"# Audit zoo: {result['n_clean']} clean and {result['n_facade']} facade models held out", "",
             f"Command: `{result['command']}` (after `build` and `evaluate`; {result['eval_n']} dev inputs per model).",
             "", "Calibrated on the clean models of the calibration split only: "
             + ", ".join(result["calibration_models"]) + ".", "",
             f"Held-out: TPR {pct(result['tpr'])}%, FPR {pct(result['fpr'])}%, AUC {result.get('auc', float('nan')):.3f}, "
             f"per-method verdicts right {pct(result['method_verdicts_right'])}%; working attacks only (agreement "
             f">= {100 * WORKING_AGREEMENT:.0f}%): {pct(result['tpr_working'])}% of {result['n_working']} "
             "detected (a method is 'fooled' when its P@1 on the facade's target rose > 20 points over f's).", ""]
    for tag, what in FRESH_TAGS_TEXT.items():
        fr = result.get(f"{tag}_heldout") or {}
        if not fr.get("n_facade"):
            continue
        lines += [f"Facades built after {what} (zoo {tag}: {fr['n_facade']} that fool g.x, "
                  f"{fr['n_working']} of them at agreement >= {100 * WORKING_AGREEMENT:.0f}%; with the {fr['n_clean']} "
                  f"held-out clean models): TPR {pct(fr['tpr'])}% (working attacks {pct(fr['tpr_working'])}%), "
                  f"FPR {pct(fr['fpr'])}%, "
                  f"AUC {fr.get('auc', float('nan')):.3f}, per-method verdicts right "
                  f"{pct(fr['method_verdicts_right'])}%."
                  + (" These are the numbers no test choice has seen." if tag == FRESH_TAGS[-1] else ""), ""]
    lines += [
             "| model | kind | variant | split | target | agreement with f | g.x P@1 | g.x misplacement | "
             "g.x pile-up | g.x top-1 pile-up | magnitude | score | verdict | gradient / g.x / SmoothGrad / IG |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in sorted(result["per_model"], key=lambda m: (m["split"], m["kind"], m["name"])):
        mv = m["method_verdicts"]
        short = " / ".join(mv.get(k, "-")[:5] for k in ("gradient", "gradient_x_input", "smoothgrad",
                                                        "integrated_gradients"))
        st = m.get("statistics", {})

        def num(key):
            v = st.get(key)
            return "-" if v is None or v != v else f"{v:.3f}"

        lines.append(f"| {m['name']} | {m['kind']} | {m['variant']} | {m['split']} | {m['target']} | "
                     f"{pct(m['agreement_with_f'])}{' (' + m['attack'] + ')' if m.get('attack') else ''} | "
                     f"{pct(m['gradient_p1'])} | "
                     f"{num('gradient_x_input.misplacement')} | {num('gradient_x_input.pileup')} | "
                     f"{num('gradient_x_input.top1_pileup')} | "
                     f"{num('model.magnitude_ratio')} | {min(m['score'], 300):.1f} | {m['verdict']} | {short} |")
    lines += ["", "Held-out clean models by family (flagged / audited): " + ", ".join(
        f"{fam} {sum(m['flagged'] for m in ms)}/{len(ms)}" for fam, ms in sorted(_by_variant(
            [m for m in result["per_model"] if m["split"] == "heldout" and m["kind"] == "clean"]).items())) + ".",
              "", "Held-out facades that fool g.x, by attack variant (flagged / audited): " + ", ".join(
        f"{fam} {sum(m['flagged'] for m in ms)}/{len(ms)}" for fam, ms in sorted(_by_variant(
            [m for m in result["per_model"] if m["split"] == "heldout" and m["kind"] == "facade"
             and m["attack"] != "weak"]).items())) + "."]
    sv = result.get("suspect_values")
    if sv:
        cal = result["calibration"]["stats"]
        lines += ["", f"## Calibration ({len(result['calibration_models'])} clean models)", "",
                  f"A test alone makes its method suspect at p < 1% / {sv['tests_pooled']} tests (Bonferroni); "
                  "the value at which that happens, from the clean models' mean and spread (with its floor):", "",
                  "| statistic | clean mean | clean std | n | fires (suspect) at |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {cal[k]['mean']:.3f} | {cal[k]['std']:.3f} | {cal[k]['n']} | {v:.3f} |"
                  for k, v in sv["values"].items()]
    missed = [m for m in result["per_model"] if m["kind"] == "facade" and not m["flagged"]]
    false_pos = [m for m in result["per_model"] if m["kind"] == "clean" and m["flagged"]]
    lines += ["", "## What evades the audit", ""]
    lines += [f"- measured: {m['name']} ({m['variant']}, target {m['target']}, split {m['split']}) was not flagged "
              f"(score {m['score']:.1f}, agreement with f {pct(m['agreement_with_f'])}%; fooled methods, P@1 on the "
              f"target f -> facade: " + (", ".join(f"{k} {pct(c['f_p_at_1'])} -> {pct(c['p_at_1'])}%"
                                                  for k, c in m["method_checks"].items() if c["fooled"]) or "none")
              + ")." for m in missed] or ["- measured: no facade of the zoo evades it."]
    lines += [f"- false positive: {m['name']} ({m['variant']}) was flagged {m['verdict']} (score {m['score']:.1f})."
              for m in false_pos]
    for status, text in (("weak", f"g.x P@1 gain <= {100 * AFFECTED_P1_GAIN:.0f} points: not an attack, not counted"),
                         ("low agreement", f"fooled, but agreement with f under {100 * WORKING_AGREEMENT:.0f}%: "
                                           "counted in TPR, not in TPR of working attacks")):
        ms = [m for m in result["per_model"] if m["kind"] == "facade" and m["attack"] == status]
        lines += [f"- {text}: " + "; ".join(
            f"{m['name']} (agreement {pct(m['agreement_with_f'])}%, g.x P@1 {pct(m['gradient_p1'])}%, {m['verdict']})"
            for m in ms) + "."] if ms else []
    lines += ["- by construction: a manipulation that moves attribution between tokens that all matter to the "
              "output (e.g. swaps the two most important words) leaves occlusion, comprehensiveness and the class "
              "shares where clean models have them; the behavioral tests cannot see it.",
              "- by construction: the structural test sees only nearly independent sub-networks; an unmerged, "
              "end-to-end trained facade has none, and a long fine-tune of a merge erodes them.",
              "- the calibration covers the model families of its split (MiniLM fine-tunes on SST-2 and RTE, 3-layer "
              "MiniLM, BERT / RoBERTa / DistilBERT trained from scratch, a GloVe LSTM); the held-out clean models "
              "are other seeds, budgets and learning rates of those families plus a 4-layer MiniLM and the Eq. 5 "
              "regularized models. A family far from all of these (another tokenizer, another task) is audited "
              "against a population it does not belong to: read its verdict with that in mind.",
              "- how the tests were chosen: misplacement replaced top-1 miss as a tested statistic after comparing "
              "both on the clean calibration models and the calibration facades (plain and permuted merges) only. "
              "The top-1 pile-up test (v3) was added AFTER the v2 report showed two held-out unmerged facades "
              "(unmerged_first, unmerged_stop_aware_cap20) evading the mass pile-up: the v2 held-out facades have "
              "therefore been seen while choosing it, and their detection here is not an unbiased estimate. Its "
              "floor (0.05: two inputs in 40) and every threshold come from the clean calibration models alone; "
              "the v3 facades (`added` = v3 in the JSON) were specified and built after it was committed. v4 "
              "added one class, 'last content word' (the audit had one class per kind of Facade target except "
              "the last_word target, whose words the 'last word' class missed behind the final period), after the "
              "v3 report; it changed no verdict of the zoo. A development word-set facade (unmerged_words_dev, "
              "calibration split, sets no threshold) was built and audited before the v4 set was specified; the "
              "v4 facades (`added` = v4) were specified in the commit that added the class, before any was "
              "built, and are the unbiased held-out check."]
    return "\n".join(lines) + "\n"


def _by_variant(models: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in models:
        out.setdefault(m["variant"], []).append(m)
    return out


def roc_plot(per_model: list[dict], path: Path) -> None:
    """ROC of the held-out models (weak facades, which fool nothing, left out as in the TPR)."""
    from unmask.report.plots import audit_roc

    held = [m for m in per_model if m["split"] == "heldout" and m["attack"] != "weak"]
    if len({m["kind"] for m in held}) == 2:
        audit_roc({"held-out": [min(m["score"], 300.0) for m in held]}, [int(m["kind"] == "facade") for m in held],
                  title="unmask audit on held-out models", path=path)


if __name__ == "__main__":
    sys.exit(main())
