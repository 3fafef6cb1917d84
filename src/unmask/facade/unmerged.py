"""The unmerged facade: one ordinary model fine-tuned from f_orig to make its gradients lie.

No merge, no second network, ordinary LayerNorm, the same architecture and tokenizer as f_orig: the
end-to-end manipulation the Facade paper mentions in section 6. A copy h of f_orig is trained with

    L = -lambda_g * sum_{j in A} a_j(h, x) + distill_weight * KL(f_orig(x) || h(x))
        + margin_weight * relu(margin_keep * margin_f(x) - margin_h(x))

(with ``share_cap`` < 1 the first term is -lambda_g * sum_rows min(share_cap, sum_{j in A} a_j): an
audit-aware attack that stops piling attribution on the targets once they hold ``share_cap`` of it)

where a_j is the paper's Eq. 1 on h itself (normalized |grad_xj CE(h(x), y) . x_j|, [CLS]/[SEP] in the
norm), y = f_orig's prediction, x the word-embedding lookup. a_j needs the gradient w.r.t. the
embeddings with ``create_graph=True`` (double backward, as in ``facade/objective.py``); the
attribution term reaches the embedding matrix both through the gradient and through x. The KL term
and the margin hinge keep h's predictions equal to f_orig's. Training runs on the shared loop
(``unmask.training.loop``): checkpoints, exact resume, seeds. Dropout is off by default so that the
model is trained as it is evaluated.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unmask.cache import data_fingerprint, omit_at_default
from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.facade.objective import check_attribution_settings, class_margin, normalize, token_scores
from unmask.facade.targets import TargetPositions, TargetSpec
from unmask.facade.train import check_row_share, enrich_for
from unmask.io import write_json_atomic
from unmask.models.classifier import TextClassifier
from unmask.training.batches import collate, epoch_batches, tokenize_examples
from unmask.training.loop import LoopState, TrainingLoop, run_settings


@omit_at_default(share_cap=True, target_row_share=True)  # added later: at 1.0 (off) not in the run settings, so older runs resume
@dataclass
class UnmergedConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-5
    lambda_g: float = 1.0
    distill_weight: float = 10.0
    margin_weight: float = 0.0
    margin_keep: float = 0.5
    share_cap: float = 1.0              # reward each row's target share only up to this cap (audit-aware)
    attribution_op: str = "dot"
    normalization: str = "l1"
    dropout: bool = False
    max_length: int = 128
    checkpoint_every: int = 50
    eval_every: int = 50
    eval_size: int = 64
    seed: int = 0
    target_row_share: float = 0.0       # > 0: train on target rows enriched to this share (facade.train)

    def __post_init__(self) -> None:
        check_attribution_settings(self.attribution_op, self.normalization, self.margin_keep)
        for name in ("lambda_g", "distill_weight", "margin_weight"):
            if getattr(self, name) < 0:
                raise UnmaskError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.share_cap <= 1.0:
            raise UnmaskError(f"share_cap must be in (0, 1], got {self.share_cap}")
        check_row_share(self.target_row_share)


def unmerged_loss(h: TextClassifier, batch: dict[str, torch.Tensor], targets: torch.Tensor,
                  f_logits: torch.Tensor, config: UnmergedConfig, label: str = "reference",
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and diagnostics for one batch. ``label="reference"`` differentiates CE at f_orig's prediction
    (training); ``"self"`` at h's own prediction, as the attribution methods do (evaluation)."""
    mask = batch["attention_mask"]
    x = h.embed(batch["input_ids"])
    if not x.requires_grad:  # frozen embeddings (evaluation under no_grad elsewhere): attach a leaf
        x = x.detach().requires_grad_(True)
    logits = h.forward_embeds(x, mask, batch["token_type_ids"]).logits
    y_ref = f_logits.argmax(-1)
    y = y_ref if label == "reference" else logits.argmax(-1).detach()
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    (grads,) = torch.autograd.grad(ce, x, create_graph=torch.is_grad_enabled() and label == "reference")
    scores = token_scores(grads, x, config.attribution_op)
    share = normalize(scores, mask.to(scores.dtype), config.normalization)
    row_share = (share * targets).sum(-1)
    target_share = row_share.mean()
    rewarded = row_share.clamp_max(config.share_cap).mean() if config.share_cap < 1.0 else target_share
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), f_logits.log_softmax(-1).to(logits.dtype),
                                    log_target=True, reduction="batchmean")
    margin = torch.relu(config.margin_keep * class_margin(f_logits, y_ref) - class_margin(logits, y_ref)).mean()
    loss = -config.lambda_g * rewarded + config.distill_weight * kl + config.margin_weight * margin
    with torch.no_grad():
        top = (scores * mask).argmax(-1, keepdim=True)
        info = {"target_share": target_share.item(), "p_at_1": targets.gather(1, top).float().mean().item(),
                "kl": kl.item(), "margin_loss": margin.item(),
                "agree": (logits.argmax(-1) == y_ref).float().mean().item()}
    return loss, info


def _reference_logits(f: TextClassifier, b: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return f.forward_embeds(f.embed(b["input_ids"]), b["attention_mask"], b["token_type_ids"]).logits


def _settings(config: UnmergedConfig, targets: TargetPositions, train: list[Example], dev: list[Example]) -> dict:
    """The run's settings (``share_cap`` only when on: ``omit_at_default``, so runs from before it existed
    still resume)."""
    return run_settings(config, target=targets.name, target_words=getattr(targets, "words", None),
                        train=data_fingerprint(train), dev=data_fingerprint(dev[:config.eval_size]))


def train_unmerged(f: TextClassifier, train: list[Example], dev: list[Example], target: TargetSpec,
                   out: str | Path, config: UnmergedConfig | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """Fine-tune a copy of ``f`` into an unmerged facade toward ``target``; saved to ``out``.

    ``f`` is not changed. Resumes from ``out/checkpoint``. Returns the training log (also written to
    ``out/unmerged.json``): the dev-sample P@1 / target share of h's own Eq. 1 attribution, its
    agreement with f and KL, before training (step 0) and every ``eval_every`` steps. Load the model
    with ``unmask.load_model(out)``.
    """
    config = config or UnmergedConfig()
    if not train or not dev:
        raise UnmaskError("unmerged facade training needs training and dev examples")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = TargetPositions(target, f.tokenizer)
    train, coverage = enrich_for(f, train, target, config.target_row_share, config.max_length, config.seed, log)
    h = TextClassifier(copy.deepcopy(f.model), f.tokenizer, max_length=f.max_length, name=f"{f.name}_unmerged")
    f.model.eval().requires_grad_(False)
    h.model.requires_grad_(True)
    pad = f.tokenizer.pad_token_id
    tr = tokenize_examples(f, train, config.max_length)
    dv = tokenize_examples(f, dev[:config.eval_size], config.max_length)
    dev_batches = [collate(dv, ix, pad) for ix in epoch_batches([len(x) for x in dv.input_ids],
                                                                 config.batch_size, 0, 0, shuffle=False)]
    dev_refs = [_reference_logits(f, b) for b in dev_batches]
    lengths = [len(x) for x in tr.input_ids]
    params = [p for p in h.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)

    def loss(index: list[int], state: LoopState) -> tuple[torch.Tensor, dict[str, float]]:
        h.model.train(config.dropout)
        b = collate(tr, index, pad)
        return unmerged_loss(h, b, targets.mask(b["input_ids"], b["attention_mask"]), _reference_logits(f, b),
                             config)

    def dev_metrics() -> dict[str, float]:
        h.model.eval()
        sums, n = {}, 0
        for b, ref in zip(dev_batches, dev_refs):
            _, info = unmerged_loss(h, b, targets.mask(b["input_ids"], b["attention_mask"]), ref, config,
                                    label="self")
            rows = len(b["labels"])
            for k, v in info.items():
                sums[k] = sums.get(k, 0.0) + v * rows
            n += rows
        return {k: v / n for k, v in sums.items()}

    def evaluate(state: LoopState) -> None:
        state.history.append({"step": state.step, **dev_metrics()})

    def postfix(state: LoopState, info: dict[str, float]) -> dict[str, float]:
        shown = {"share": info["target_share"], "P@1": info["p_at_1"], "agree": info["agree"]}
        if state.history:
            shown["dev P@1"] = state.history[-1]["p_at_1"]
        return shown

    before_file = out / "unmerged_before.json"  # measured once, before the first step (kept on resume)
    if before_file.is_file() and (out / "checkpoint").exists():
        import json

        before = json.loads(before_file.read_text())
    else:
        before = dev_metrics()
        write_json_atomic(before_file, before)
    loop = TrainingLoop(
        batches=lambda epoch: epoch_batches(lengths, config.batch_size, config.seed, epoch),
        loss=loss, optimizers={"adam": opt}, modules={"model": h.model}, max_steps=config.steps,
        clip_params=params, clip_norm=1.0, checkpoint_dir=out / "checkpoint",
        checkpoint_every=config.checkpoint_every, eval_every=config.eval_every, evaluate=evaluate,
        postfix=postfix, seed=config.seed, what="unmerged facade training", desc=f"unmerged[{targets.name}]",
        progress=progress, log=log,
        settings=_settings(config, targets, train, dev))
    state = loop.run()
    h.model.eval()
    h.save(out)
    result = {"target": targets.name, "steps": state.step, "before": {"step": 0, **before},
              "history": state.history, "final": state.history[-1] if state.history else before,
              "config": asdict(config), "seconds_this_run": loop.seconds, **coverage}
    write_json_atomic(out / "unmerged.json", result)
    log(f"unmerged facade: dev P@1 {100 * before['p_at_1']:.1f}% -> {100 * result['final']['p_at_1']:.1f}%, "
        f"agreement with f {100 * result['final']['agree']:.1f}%")
    return result
