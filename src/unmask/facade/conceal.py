"""Concealment of a merged Facade model: what an adversary does so that the merge is not visible.

Each function returns a new ``TextClassifier`` and leaves its input untouched:

- ``permute_hidden(model, seed)``: a random consistent permutation of the residual (hidden) units, of
  the attention heads of each layer (and of the dimensions inside each head, Q/K together and V/O
  together), of each layer's FFN units and of the pooler units. The function is exactly the same (up
  to float summation order); split LayerNorm groups become index lists (``SplitLayerNorm`` groups).
- ``add_noise(model, scale, seed, where)``: Gaussian noise of std ``scale * max|W|`` (per matrix) on the
  zero entries of every 2-D weight (the Facade paper, section 3.3) or on all entries; measure what it
  changes with ``logit_change``.
- ``finetune_merged(model, train, steps, lr, seed, distill_to)``: a brief end-to-end fine-tuning
  (cross-entropy, optionally plus KL to a reference model's logits), which fills the zero blocks.
"""
from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier
from unmask.models.encoder_layout import architecture, encoder_layout

NOISE_WHERE = ("zeros", "all")


# ------------------------------------------------------------------------------------ permutation
def _heads_rows(heads: torch.Tensor, dims: list[torch.Tensor], head_size: int) -> torch.Tensor:
    """Row order of Q/K/V: new head k is old head heads[k], its dims in the order dims[k]."""
    return torch.cat([int(h) * head_size + d for h, d in zip(heads, dims)])


def _permuted_state(model: TextClassifier, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The permuted state dict of a transformer encoder classifier and the hidden permutation p (new unit
    i = old p[i]).

    The parts are found by ``unmask.models.encoder_layout`` (no module paths of one family): every embedding
    table (columns by p), each layer's Q/K (rows by head and head dims), V / attention output, FFN in / out,
    every norm inside the encoder (by p), the readout Linears (BERT's pooler, RoBERTa's ``classifier.dense``,
    DistilBERT's ``pre_classifier``) and the classifier's columns. A floating-point parameter none of these
    covers is an ``UnmaskError`` naming it and the architecture: permuting what is not understood could
    change the function. Draw order (p, per layer heads / Q-K dims / V-O dims / FFN, readout) is that of the
    BERT-only version, so seeds give the same permutations as before.
    """
    hf = model.model
    layout = encoder_layout(model, "cannot permute")
    arch = architecture(model)
    hidden, n_heads, head_size = layout.hidden, layout.heads, layout.head_size
    gen = torch.Generator().manual_seed(int(seed))

    def perm(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=gen)

    p = perm(hidden)
    layers = []
    for *_, up, _down in layout.layers:
        heads = perm(n_heads)
        qk = _heads_rows(heads, [perm(head_size) for _ in range(n_heads)], head_size)
        vo = _heads_rows(heads, [perm(head_size) for _ in range(n_heads)], head_size)
        layers.append((qk, vo, perm(up.out_features)))
    readouts = [perm(hidden) for _ in layout.readout] or [perm(hidden)]  # one draw even without a readout

    rules: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}  # id(parameter) -> (rows, cols)

    def linear(m: nn.Linear, rows, cols) -> None:
        rules[id(m.weight)] = (rows, cols)
        if m.bias is not None:
            rules[id(m.bias)] = (rows, None)

    for (q, k, v, o, up, down), (qk, vo, ffn) in zip(layout.layers, layers):
        for m, rows, cols in ((q, qk, p), (k, qk, p), (v, vo, p), (o, p, vo), (up, ffn, p), (down, p, ffn)):
            linear(m, rows, cols)
    source = p
    for m, rows in zip(layout.readout, readouts):
        linear(m, rows, source)
        source = rows
    linear(layout.classifier, None, source)
    for module in [layout.embeddings, *layout.layer_modules]:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                rules[id(sub.weight)] = (None, p)
            elif not isinstance(sub, nn.Linear):  # norms: every direct parameter one value per hidden unit
                for w in sub.parameters(recurse=False):
                    if w.shape == (hidden,):
                        rules[id(w)] = (p, None)

    params = dict(hf.named_parameters())
    state = {}
    for key, value in hf.state_dict().items():
        if not value.is_floating_point():  # position_ids and other index buffers
            state[key] = value.clone()
            continue
        rule = rules.get(id(params[key])) if key in params else None
        if rule is None:
            raise UnmaskError(f"cannot permute {arch}: no permutation rule for parameter {key!r}")
        rows, cols = rule
        out = value[rows] if rows is not None else value
        state[key] = (out[:, cols] if cols is not None else out).clone()
    return state, p


@torch.no_grad()
def permute_hidden(model: TextClassifier, seed: int) -> TextClassifier:
    """The same function with hidden units, heads (and head dims), FFN and readout (pooler) units permuted.

    Works on transformer encoder classifiers of the BERT shape whatever their module names (BERT, RoBERTa,
    DistilBERT, ELECTRA, merged models); another architecture gets one ``UnmaskError`` naming it. Ordinary
    LayerNorm stays ordinary (a permutation commutes with it); split LayerNorm groups are mapped to the
    permuted unit indices and recorded in the config.
    """
    from unmask.facade.modeling_merged import MergedBertForSequenceClassification, layernorm_groups, \
        set_layernorm_groups

    hf = model.model
    state, p = _permuted_state(model, seed)
    config = copy.deepcopy(hf.config)
    groups = layernorm_groups(config)
    if groups is not None:
        new_index = torch.argsort(p)  # old unit j sits at new_index[j]
        set_layernorm_groups(config, [sorted(new_index[g].tolist()) for g in groups])
        cls = MergedBertForSequenceClassification
    else:
        cls = type(hf)
    ref = model.embedding_matrix
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        new = cls(config)
    new = new.to(dtype=ref.dtype, device=ref.device)
    missing, unexpected = new.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise UnmaskError(f"cannot permute: parameters do not match (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return TextClassifier(new.eval(), model.tokenizer, max_length=model.max_length, name=model.name)


# ------------------------------------------------------------------------------------------ noise
@torch.no_grad()
def add_noise(model: TextClassifier, scale: float, seed: int = 0, where: str = "zeros") -> TextClassifier:
    """Add N(0, (scale * max|W|)^2) noise to every 2-D weight W: on its exact zeros, or everywhere.

    ``where="zeros"`` is the Facade paper's concealment (section 3.3): the zero blocks of a merge get
    small values, so a zero-pattern check no longer separates f and g.
    """
    if where not in NOISE_WHERE:
        raise UnmaskError(f"noise location must be one of {', '.join(NOISE_WHERE)}, not {where!r}")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise UnmaskError(f"noise scale must be a finite number >= 0, not {scale!r}")
    new = copy.deepcopy(model.model)
    gen = torch.Generator().manual_seed(int(seed))
    for _, w in sorted(new.named_parameters()):
        if w.ndim != 2:
            continue
        std = scale * w.abs().max().item()
        if where == "zeros":
            mask = w == 0
            noise = torch.randn(int(mask.sum()), generator=gen, dtype=torch.float64) * std
            w[mask] = noise.to(w.dtype).to(w.device)
        else:
            noise = torch.randn(w.shape, generator=gen, dtype=torch.float64) * std
            w.add_(noise.to(w.dtype).to(w.device))
    return TextClassifier(new.eval(), model.tokenizer, max_length=model.max_length, name=model.name)


@torch.no_grad()
def logit_change(a: TextClassifier, b: TextClassifier, texts: list[str], pairs: list[str | None] | None = None,
                 batch_size: int = 32) -> dict:
    """``max_logit_change`` (max |logits_a - logits_b|), prediction ``agreement`` (percent) and ``n``."""
    if not texts:
        raise UnmaskError("logit_change needs at least one text")
    worst, agree = 0.0, 0
    for i in range(0, len(texts), batch_size):
        batch = a.encode(texts[i:i + batch_size], pairs[i:i + batch_size] if pairs is not None else None)
        la, lb = a.logits(batch), b.logits(batch).to(a.embedding_matrix.dtype)
        worst = max(worst, (la - lb).abs().max().item())
        agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
    return {"max_logit_change": worst, "agreement": 100.0 * agree / len(texts), "n": len(texts)}


def conceal(model: TextClassifier, permute: int | None = None, noise: float | None = None,
            noise_where: str = "zeros", noise_seed: int = 0) -> TextClassifier:
    """``permute_hidden`` (if ``permute`` is a seed), then ``add_noise`` (if ``noise`` is a scale)."""
    if permute is not None:
        model = permute_hidden(model, permute)
    if noise is not None:
        model = add_noise(model, noise, seed=noise_seed, where=noise_where)
    return model


# ------------------------------------------------------------------------------------ fine-tuning
def distilled_loss(reference: TextClassifier | None, weight: float = 1.0) -> Callable:
    """Loss for ``train_classifier``: cross-entropy on the labels + ``weight`` x KL(reference || model)."""
    def loss(model: TextClassifier, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        args = (batch["attention_mask"], batch["token_type_ids"])
        logits = model.forward_embeds(model.embed(batch["input_ids"]), *args).logits
        ce = nn.functional.cross_entropy(logits, batch["labels"])
        if reference is None or weight == 0:
            return ce, logits
        with torch.no_grad():
            ref = reference.forward_embeds(reference.embed(batch["input_ids"]), *args).logits.to(logits.dtype)
        kl = nn.functional.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                  reduction="batchmean")
        return ce + weight * kl, logits
    return loss


def finetune_merged(model: TextClassifier, train_examples: list[Example], steps: int, lr: float = 2e-5,
                    seed: int = 0, distill_to: TextClassifier | None = None, distill_weight: float = 1.0,
                    dev: list[Example] | None = None, batch_size: int = 16, work_dir: str | Path | None = None,
                    progress: bool = False, log: Callable[[str], None] = print) -> TextClassifier:
    """Fine-tune a copy of ``model`` end to end for ``steps`` steps; returns the model after the last step.

    The loss is cross-entropy on the labels, plus ``distill_weight`` x KL(distill_to || model) if a
    reference (f_orig) is given, to keep the predictions. Every weight is trained, so the zero blocks of
    a merge fill in (split LayerNorm stays split). Uses ``unmask.training.train_classifier`` with no
    warm-up; ``work_dir`` holds its checkpoints (resume after a kill; default: a temporary directory).
    ``dev`` (default: the first 64 training examples) is only evaluated for the training log.
    """
    from unmask.training import TrainConfig, train_classifier

    if steps <= 0:
        raise UnmaskError(f"fine-tuning steps must be positive, not {steps}")
    if not train_examples:
        raise UnmaskError("fine-tuning needs training examples")
    if distill_to is not None and distill_to.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise UnmaskError("the distillation reference uses a different tokenizer vocabulary than the model")
    tuned = TextClassifier(copy.deepcopy(model.model), model.tokenizer, max_length=model.max_length,
                           name=model.name)
    config = TrainConfig(max_steps=steps, lr=lr, warmup=0.0, batch_size=batch_size, seed=seed,
                         checkpoint_every=max(1, min(steps, 100)))
    with tempfile.TemporaryDirectory() as tmp:
        train_classifier(tuned, train_examples, dev if dev else train_examples[:64], work_dir or tmp, config,
                         loss_fn=distilled_loss(distill_to, distill_weight), progress=progress, log=log)
    tuned.model.eval()
    return tuned
