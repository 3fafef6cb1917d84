"""Structural facade detection: is a transformer classifier a sum of independent sub-networks?

A merged model f + g keeps f's and g's hidden units apart: every weight matrix is block diagonal (up to
a permutation, which hides nothing here) and every LayerNorm normalizes each block on its own. We build
the graph of hidden units connected by non-negligible weights (attention Q/K/V/output, feed-forward
paths through the intermediate units, the readout before the classifier (BERT's pooler), and the
LayerNorm groups) and take its connected components. An honest transformer with ordinary LayerNorm is
one component; a merged model is two or more, and each component's share of the logits and of the input
gradient can then be measured apart.

No module paths of one family: layers, attention and feed-forward Linears, readout and classifier are
found by ``unmask.models.encoder_layout`` (shapes and registration order); every LayerNorm over the hidden
units couples its groups. Superseded as a detector by ``unmask.audit.structure`` (robust to noise on the
zero blocks and to ordinary LayerNorm).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from unmask.models.classifier import TextClassifier
from unmask.models.encoder_layout import encoder_layout
from unmask.models.split_layernorm import SplitLayerNorm


def _nonzero(w: torch.Tensor, rel_tol: float) -> np.ndarray:
    w = w.detach().abs().float()
    return (w > rel_tol * w.max().clamp_min(1e-30)).numpy()


def _layernorm_groups(module: nn.Module, hidden: int) -> list[np.ndarray]:
    if isinstance(module, SplitLayerNorm):  # index groups: contiguous blocks, or permuted ones
        return [np.asarray(g) for g in module.groups]
    return [np.arange(hidden)]


WHAT = "structural facade detection"


def hidden_unit_graph(model: TextClassifier, rel_tol: float = 1e-6) -> np.ndarray:
    """Boolean (hidden x hidden) adjacency of hidden units that interact anywhere in the network."""
    hf = model.model
    layout = encoder_layout(model, WHAT)
    hidden, heads = layout.hidden, layout.heads
    adj = np.eye(hidden, dtype=bool)

    def couple(groups: list[np.ndarray]) -> None:
        for g in groups:
            adj[np.ix_(g, g)] = True

    for m in hf.modules():  # every LayerNorm over the hidden units: embeddings' and each layer's
        if (isinstance(m, SplitLayerNorm) and sum(m.sizes) == hidden) or (
                isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (hidden,)):
            couple(_layernorm_groups(m, hidden))
    head = layout.head_size
    for query, key, value, output, up, down in layout.layers:
        for lin in (query, key, value, output):
            adj |= _nonzero(lin.weight, rel_tol)
        # query and key of one head interact through their dot product; so do value dims of a head
        qk = _nonzero(query.weight, rel_tol) | _nonzero(key.weight, rel_tol)
        for h in range(heads):
            rows = slice(h * head, (h + 1) * head)
            inputs = np.nonzero(qk[rows].any(0))[0]
            couple([np.concatenate([np.arange(h * head, (h + 1) * head), inputs])])
        ffn_in = _nonzero(up.weight, rel_tol).astype(np.float32)     # inter x hidden
        ffn_out = _nonzero(down.weight, rel_tol).astype(np.float32)  # hidden x inter
        adj |= (ffn_out @ ffn_in) > 0
    for lin in layout.readout:
        adj |= _nonzero(lin.weight, rel_tol)
    return adj | adj.T


def hidden_components(model: TextClassifier, rel_tol: float = 1e-6) -> list[np.ndarray]:
    """Hidden-unit index sets of the independent sub-networks, largest first."""
    n, labels = connected_components(csr_matrix(hidden_unit_graph(model, rel_tol)), directed=False)
    comps = [np.nonzero(labels == i)[0] for i in range(n)]
    return sorted(comps, key=len, reverse=True)


@torch.no_grad()
def component_logits(model: TextClassifier, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None, components: list[np.ndarray]) -> torch.Tensor:
    """(components, rows, labels): each component's additive share of the logits (bias excluded).

    Valid because components never interact: the classifier's input (BERT: the pooled output) restricted
    to a component depends on that component alone, and the classifier is linear. That input is read with
    a forward hook on the classifier Linear, so no family's pooler or head is named here.
    """
    classifier = encoder_layout(model, WHAT).classifier
    seen: list[torch.Tensor] = []
    hook = classifier.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
    try:
        model.forward_embeds(model.embed(input_ids), attention_mask, token_type_ids)
    finally:
        hook.remove()
    pooled = seen[-1]
    if pooled.dim() == 3:  # a classifier applied per token: the first token is the readout
        pooled = pooled[:, 0]
    w = classifier.weight
    return torch.stack([pooled[:, c] @ w[:, c].T for c in (torch.as_tensor(c) for c in components)])


def block_gradient_mass(model: TextClassifier, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None, blocks: list[np.ndarray]) -> torch.Tensor:
    """(rows, blocks): sum over tokens of |sum_{d in block} g_d x_d|, the Eq. 1 attribution mass of each
    block of embedding dimensions, for the loss gradient at the model's own prediction."""
    x = model.embed(input_ids).detach().requires_grad_(True)
    logits = model.forward_embeds(x, attention_mask, token_type_ids).logits
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    mask = attention_mask.to(grad.dtype)
    per = [((grad[..., c] * x.detach()[..., c]).sum(-1).abs() * mask).sum(-1)
           for c in (torch.as_tensor(c) for c in blocks)]
    return torch.stack(per, -1)
