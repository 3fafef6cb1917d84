"""Where the parts of a transformer encoder classifier are, found without one family's module paths.

The transformer layers are the adapter's ``hidden_state_modules()`` (embedding block, then the layers);
inside a layer the hidden x hidden Linears in registration order are Q, K, V and the attention output and a
hidden -> I / I -> hidden pair is the feed-forward block; outside the layers the hidden x hidden Linears are
the readout (BERT's pooler, RoBERTa's ``classifier.dense``, DistilBERT's ``pre_classifier``) and the last Linear
with one output per label is the classifier. That is BERT's structure (and RoBERTa's, DistilBERT's, ELECTRA's)
without its attribute names. Used by the structural detector (``facade/structure.py``) and by concealment
(``facade/conceal.py``); a model of another shape gets one ``UnmaskError`` naming its architecture.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unmask.errors import UnmaskError


def architecture(model) -> str:
    """``"BertForSequenceClassification (model_type 'bert')"``: how errors name a model's architecture."""
    net = getattr(model, "model", model)
    kind = getattr(getattr(net, "config", None), "model_type", None)
    return f"{type(net).__name__}" + (f" (model_type {kind!r})" if kind else "")


def linears(module: nn.Module) -> list[nn.Linear]:
    """The Linear modules inside ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def encoder_modules(model, what: str) -> list[nn.Module]:
    """The embedding block, then each transformer layer (the adapter's ``hidden_state_modules()``)."""
    if not hasattr(model, "hidden_state_modules"):
        raise UnmaskError(f"{what} needs a transformer classifier; {architecture(model)} has no "
                          "hidden_state_modules()")
    try:
        return list(model.hidden_state_modules())
    except UnmaskError as e:
        raise UnmaskError(f"{what}: {e}") from None


def readout_and_classifier(model, layers: list[nn.Module], what: str) -> tuple[list[nn.Linear], nn.Linear]:
    """(readout hidden x hidden Linears outside the layers, in order; the classifier Linear)."""
    hidden = int(model.model.config.hidden_size)
    inside = {id(m) for layer in layers for m in linears(layer)}
    outside = [m for m in linears(model.model) if id(m) not in inside]
    classifier = next((m for m in reversed(outside) if m.out_features == model.num_labels), None)
    if classifier is None or classifier.in_features != hidden:
        raise UnmaskError(f"{what}: {architecture(model)} has no classifier Linear reading the {hidden} hidden "
                          f"units with {model.num_labels} outputs")
    readout = [m for m in outside if m is not classifier and m.in_features == hidden and m.out_features == hidden]
    return readout, classifier


def attention_and_ffn(layer: nn.Module, hidden: int, index: int, what: str, arch: str = "this model"):
    """(Q, K, V, O, FFN in, FFN out) Linears of one layer, by shape and registration order."""
    lins = linears(layer)
    hh = [m for m in lins if m.in_features == hidden and m.out_features == hidden]
    up = [m for m in lins if m.in_features == hidden and m.out_features != hidden]
    down = [m for m in lins if m.out_features == hidden and m.in_features != hidden]
    if len(hh) == 6 and not up and not down:  # intermediate size == hidden
        hh, up, down = hh[:4], hh[4:5], hh[5:]
    if len(hh) != 4 or len(up) != 1 or len(down) != 1 or up[0].out_features != down[0].in_features:
        raise UnmaskError(f"{what}: layer {index} of {arch} is not a Q/K/V/output attention block and a "
                          f"feed-forward block ({len(hh)} {hidden}x{hidden} Linears, {len(up)} up, "
                          f"{len(down)} down)")
    return (*hh, up[0], down[0])


@dataclass
class EncoderLayout:
    """The parts of a transformer encoder classifier, each an ``nn.Module`` of the model."""

    hidden: int
    heads: int
    embeddings: nn.Module
    layers: list[tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear, nn.Linear, nn.Linear]]  # Q K V O up down
    layer_modules: list[nn.Module]
    readout: list[nn.Linear]
    classifier: nn.Linear

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


def encoder_layout(model, what: str) -> EncoderLayout:
    """The ``EncoderLayout`` of a ``TextClassifier``, or one ``UnmaskError`` naming the architecture."""
    arch = architecture(model)
    modules = encoder_modules(model, what)
    embeddings, layer_modules = modules[0], modules[1:]
    config = model.model.config
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if not hidden or not heads or int(hidden) % int(heads):
        raise UnmaskError(f"{what}: {arch}: the config gives no hidden size divisible into attention heads")
    hidden, heads = int(hidden), int(heads)
    width = model.embedding_matrix.shape[1]
    if int(width) != hidden:
        raise UnmaskError(f"{what}: {arch}: word embeddings are {width} wide but the hidden size is {hidden} "
                          "(factorized embeddings are not supported)")
    layers = [attention_and_ffn(layer, hidden, i, what, arch) for i, layer in enumerate(layer_modules)]
    readout, classifier = readout_and_classifier(model, layer_modules, what)
    return EncoderLayout(hidden, heads, embeddings, layers, layer_modules, readout, classifier)
