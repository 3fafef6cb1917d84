"""Structural evidence for the facade audit: is the network a sum of (nearly) independent sub-networks?

A Facade merge keeps f's and g's hidden units apart: every Linear is block diagonal. An adversary can
hide that by permuting units (any consistent permutation is exact), adding small noise to the zero
blocks (Facade paper, section 3.3), fine-tuning briefly, or writing ordinary LayerNorm. None of these
makes the off-block weights comparable to the on-block ones without changing the function, so we
measure magnitudes instead of looking for exact zeros:

1. Layout by shapes only: the residual width H is the word-embedding width; inside every transformer
   layer the H->H Linears in registration order are Q, K, V (or one fused H->3H QKV) and, the last
   before the feed-forward block, the attention output (H->H projections of relative positions or of
   global attention in between, as in DeBERTa and Longformer, are skipped); an H->I / I->H pair is the
   feed-forward block; outside the layers, H->H Linears form the readout chain (pooler, pre-classifier,
   RoBERTa's dense) and the last H->labels Linear is the classifier. BERT, DistilBERT, RoBERTa, ELECTRA,
   MPNet, DeBERTa and Longformer classifiers need no per-architecture code.
2. Affinity of residual units: every internal unit k (an attention head, an FFN unit, a readout unit)
   gives a vector u_k of the absolute weights it reads from and writes to the residual stream, each
   matrix scaled by a robust magnitude (its 90th percentile |W|); A = sum_k u_k u_k^T per layer block,
   each block scaled to unit trace. This contains |W_out||W_in| (FFN), |W_Q|^T|W_K| and |W_O||W_V|
   (per head) and the co-membership of units through a shared head or FFN unit.
3. Spectral bisection: Fiedler vector of the normalized affinity, sweep cut of least conductance with
   parts of at least one head's width; a part is split again (up to ``max_parts``) when that split is
   itself nearly independent.
4. The coupling ratio: internal units are assigned to the part they read / write most per entry, then
   for every matrix median |W| over cross-part entries / median |W| over within-part entries; the
   model's coupling is the median over matrices. An honest model measures close to 1 for any split
   (the best one a bit less: the split is chosen to make it small); a merge measures noise / typical
   weight (1e-6..1e-2), and a brief fine-tune leaves it far below 1.
5. With texts: each part's share of the logit margin and of the Eq. 1 gradient attribution, from the
   model run with the other parts' classifier readout zeroed; and a weight-free check, the mean
   |correlation| of hidden activations between units of different parts over that within a part.

Limits. Only the weights' block structure is measured. A facade trained end to end inside one ordinary
model (no merge) has no block structure and passes; a long fine-tune of a merge fills the zero blocks
until the coupling approaches the clean range; an adversary may add large off-block weights that the
data never excite, e.g. a rank-one block along the direction a LayerNorm output cannot take (its
normalized output sums to zero per block): the weight coupling then rises while the activations stay
independent (the activation check still shows it, but that check is weaker: parts that read the same
tokens correlate). The weight statistics ignore LayerNorm, so a merge written with ordinary LayerNorm
(no longer exactly f + g) looks like one with split LayerNorm. The behavioral audit is the main line.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier

RESIDUAL = "residual"


# ------------------------------------------------------------------------------------------ records
@dataclass
class StructuralPart:
    """One candidate sub-network: its residual units and what it contributes to the output."""

    units: list[int]
    size: int
    classifier_share: float             # share of sum |W_classifier| read from this part's readout units
    margin_share: float | None = None   # share of |logit margin| (texts given), mean over inputs
    gradient_share: float | None = None  # share of the Eq. 1 attribution mass (texts given), mean over inputs


@dataclass
class StructuralEvidence:
    """Result of :func:`structural_evidence`; ``coupling`` << 1 means independent sub-networks."""

    hidden_size: int
    parts: list[StructuralPart]
    coupling: float                      # median over matrices of median|cross| / median|within|
    coupling_by_type: dict[str, float]   # the same, per matrix type (query, key, ..., readout)
    conductance: float                   # affinity cut / min(volume) of the first split
    n_matrices: int
    activation_coupling: float | None = None          # median over layers (texts given)
    activation_coupling_by_layer: list[float] | None = None
    n_texts: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ layout
SAMPLE = 1 << 16  # entries per matrix the medians are taken over (all of them in smaller matrices)


@dataclass
class _Matrix:
    """One weight matrix W (out x in), as a fixed sample of its entries, with the label spaces of its
    rows and columns."""

    kind: str
    module: str             # the Linear's name in the model
    rows: str               # label space of the rows
    cols: str               # label space of the columns
    values: np.ndarray      # |W| / robust scale at the sampled entries
    row_at: np.ndarray      # internal unit of ``rows`` of each sampled entry (heads: row -> head)
    col_at: np.ndarray

    @classmethod
    def of(cls, kind: str, module: str, weight: torch.Tensor, rows: str, cols: str,
           row_index: np.ndarray | None = None, col_index: np.ndarray | None = None) -> "_Matrix":
        """Sample ``weight``'s entries (fixed seed, with replacement; every entry when it has <= SAMPLE)."""
        n_rows, n_cols = weight.shape
        flat = _sample_index(n_rows * n_cols, n_rows * 7919 + n_cols)
        r, c = flat // n_cols, flat % n_cols
        values = weight.numpy().reshape(-1)[flat]
        return cls(kind, module, rows, cols, values, row_index[r] if row_index is not None else r,
                   col_index[c] if col_index is not None else c)


@dataclass
class _Space:
    """Internal units of one block: u (units x H) reads/writes on the residual stream, or a readout
    space reading another space through ``source`` with weight ``reads`` (units x source units)."""

    name: str
    u: torch.Tensor | None = None
    source: str = RESIDUAL
    reads: torch.Tensor | None = None


@dataclass
class _Layout:
    hidden: int
    head_size: int
    matrices: list[_Matrix]
    spaces: list[_Space]
    classifier: nn.Linear
    classifier_space: str


def _sample_index(n: int, seed: int) -> np.ndarray:
    """Every flat index when n <= SAMPLE, else SAMPLE indices drawn uniformly (fixed seed)."""
    return np.arange(n) if n <= SAMPLE else np.random.default_rng(seed).integers(0, n, SAMPLE)


def _scaled_abs(w: torch.Tensor) -> torch.Tensor:
    """|W| divided by its 90th-percentile magnitude (robust to outliers and to up to 90% zeros), the
    percentile taken over a fixed sample of the entries."""
    a = w.detach().abs().float()
    flat = a.flatten().numpy()
    sample = np.sort(flat[_sample_index(flat.size, flat.size)])
    scale = float(sample[min(sample.size - 1, int(0.9 * sample.size))])
    if not scale > 0:
        scale = float(flat.max())
    return a / max(scale, 1e-30)


def _linears(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]


def _layer_list(model: nn.Module, hidden: int) -> nn.ModuleList:
    """The ModuleList of transformer layers: the longest one whose items all read the residual stream."""
    best = None
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and all(
                sum(lin.in_features == hidden for _, lin in _linears(item)) >= 2 for item in m):
            if best is None or len(m) > len(best):
                best = m
    if best is None:
        raise UnmaskError("structural evidence: no list of transformer layers reading the "
                          f"{hidden}-wide residual stream found in this model")
    return best


def _num_heads(config) -> int:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    if not heads:
        raise UnmaskError("structural evidence: the model config gives no number of attention heads")
    return int(heads)


def _head_vectors(q, k, v, o, heads: int) -> tuple[torch.Tensor, np.ndarray]:
    """(heads x H) residual read/write mass of each head, and row -> head of Q/K/V (= column of O)."""
    d = q.shape[0] // heads
    reads = (q + k + v).reshape(heads, d, -1).sum(1)
    writes = o.T.reshape(heads, d, -1).sum(1)
    return reads + writes, np.repeat(np.arange(heads), d)


def _layout(model: TextClassifier) -> _Layout:
    hf = model.model
    hidden = int(model.embedding_matrix.shape[1])
    config_hidden = getattr(hf.config, "hidden_size", None)
    if config_hidden is not None and int(config_hidden) != hidden:
        raise UnmaskError(f"structural evidence: word embeddings are {hidden} wide but the config says "
                          f"hidden_size={config_hidden} (factorized embeddings are not supported)")
    heads = _num_heads(hf.config)
    layers = _layer_list(hf, hidden)
    in_layers = {id(m) for layer in layers for _, m in _linears(layer)}
    names = {id(m): n for n, m in _linears(hf)}
    matrices: list[_Matrix] = []
    spaces: list[_Space] = []
    head_size = hidden // heads
    for li, layer in enumerate(layers):
        lins = [m for _, m in _linears(layer)]
        hh = [m for m in lins if m.in_features == hidden and m.out_features == hidden]
        fused = [m for m in lins if m.in_features == hidden and m.out_features == 3 * hidden]
        # the attention output is the last H->H Linear before the feed-forward block: H->H projections of
        # relative positions (DeBERTa) or of global attention (Longformer) sit between V and it
        up_at = next((i for i, m in enumerate(lins) if m.in_features == hidden
                      and m.out_features not in (hidden, 3 * hidden)), len(lins))
        before_ffn = [m for m in lins[:up_at] if m in hh] if up_at < len(lins) else []
        if len(fused) == 1 and len(hh) >= 1:
            q, k, v = _scaled_abs(fused[0].weight).split(hidden)
            qkv_names = [f"{names[id(fused[0])]}[{part}]" for part in "qkv"]
            o_lin = before_ffn[-1] if before_ffn else hh[0]
            ffn_hh = hh[hh.index(o_lin) + 1:]
        elif len(hh) >= 4:
            q, k, v = (_scaled_abs(m.weight) for m in hh[:3])
            qkv_names = [names[id(m)] for m in hh[:3]]
            o_lin = before_ffn[-1] if len(before_ffn) >= 4 else hh[3]
            ffn_hh = hh[hh.index(o_lin) + 1:]
        else:
            raise UnmaskError(f"structural evidence: layer {li} has no recognizable attention projections "
                              f"({len(hh)} {hidden}x{hidden} Linears)")
        if q.shape[0] % heads:
            raise UnmaskError(f"structural evidence: {q.shape[0]} attention dims do not split into {heads} heads")
        o = _scaled_abs(o_lin.weight)
        head_size = q.shape[0] // heads
        u, row_head = _head_vectors(q, k, v, o, heads)
        name = f"heads{li}"
        spaces.append(_Space(name, u=u))
        for kind, module, w in zip(("query", "key", "value"), qkv_names, (q, k, v)):
            matrices.append(_Matrix.of(kind, module, w, name, RESIDUAL, row_index=row_head))
        matrices.append(_Matrix.of("attention_output", names[id(o_lin)], o, RESIDUAL, name, col_index=row_head))
        up = [m for m in lins if m.in_features == hidden and m.out_features not in (hidden, 3 * hidden)]
        down = [m for m in lins if m.out_features == hidden and m.in_features != hidden]
        if len(ffn_hh) == 2 and not up and not down:  # intermediate size == hidden
            up, down = ffn_hh[:1], ffn_hh[1:]
        if not up or len(down) != 1 or any(m.out_features != down[0].in_features for m in up):
            raise UnmaskError(f"structural evidence: layer {li} has no recognizable feed-forward block")
        w_out = _scaled_abs(down[0].weight)
        w_ins = [_scaled_abs(m.weight) for m in up]
        name = f"ffn{li}"
        spaces.append(_Space(name, u=sum(w_ins) + w_out.T))
        matrices += [_Matrix.of("ffn_in", names[id(m)], w, name, RESIDUAL) for m, w in zip(up, w_ins)]
        matrices.append(_Matrix.of("ffn_out", names[id(down[0])], w_out, RESIDUAL, name))
    outside = [m for _, m in _linears(hf) if id(m) not in in_layers]
    classifier = next((m for m in reversed(outside) if m.out_features == model.num_labels), None)
    if classifier is None:
        raise UnmaskError(f"structural evidence: no classifier Linear with {model.num_labels} outputs found")
    source = RESIDUAL
    for i, m in enumerate(m for m in outside if m is not classifier and m.in_features == hidden
                          and m.out_features == hidden):
        w = _scaled_abs(m.weight)
        name = f"readout{i}"
        spaces.append(_Space(name, u=w if source == RESIDUAL else None, source=source, reads=w))
        matrices.append(_Matrix.of("readout", names[id(m)], w, name, source))
        source = name
    if classifier.in_features != hidden:
        raise UnmaskError(f"structural evidence: the classifier reads {classifier.in_features} features, "
                          f"not the {hidden}-wide hidden state")
    return _Layout(hidden, head_size, matrices, spaces, classifier, source)


# ------------------------------------------------------------------------------------------ affinity
def _affinity(layout: _Layout) -> np.ndarray:
    """(H x H) nonnegative affinity of residual units; every block (heads, FFN, readout) weighs the same."""
    a = torch.zeros(layout.hidden, layout.hidden, dtype=torch.float64)
    for s in layout.spaces:
        if s.u is None:
            continue
        c = (s.u.T @ s.u).double()
        a += c / c.trace().clamp_min(1e-30)
    a = (a + a.T) / 2
    return a.numpy()


def _fiedler_order(a: np.ndarray) -> np.ndarray:
    deg = np.maximum(a.sum(1), 1e-12 * max(a.sum(1).max(), 1e-30))
    inv = 1 / np.sqrt(deg)
    m = a * inv[:, None] * inv[None, :]
    _, vecs = np.linalg.eigh(m)
    return np.argsort(vecs[:, -2] * inv, kind="stable")


def _bisect(a: np.ndarray, min_part: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Sweep cut of least conductance along the Fiedler order: (part, rest, conductance) as indices
    into ``a``."""
    n = len(a)
    order = _fiedler_order(a)
    s = a[np.ix_(order, order)]
    vol = s.sum(1).cumsum()
    inner = np.diagonal(s.cumsum(0).cumsum(1)).copy()
    total = vol[-1]
    cut = vol - inner
    ks = np.arange(1, n + 1)
    ok = (ks >= min_part) & (ks <= n - min_part)
    cond = np.where(ok, np.maximum(cut, 0) / np.maximum(np.minimum(vol, total - vol), 1e-300), np.inf)
    k = int(np.argmin(cond)) + 1
    return np.sort(order[:k]), np.sort(order[k:]), float(cond[k - 1])


# ------------------------------------------------------------------------------------------ coupling
def _space_labels(layout: _Layout, residual: np.ndarray, n_parts: int) -> dict[str, np.ndarray]:
    """Label every internal unit with the part it reads / writes most per entry; -1 when that is the
    unlabeled rest (units outside the parts being compared)."""
    labels = {RESIDUAL: residual}

    def assign(u: torch.Tensor, src: np.ndarray) -> np.ndarray:
        groups = np.where(src >= 0, src, n_parts)
        onehot = np.zeros((len(src), n_parts + 1), dtype=np.float32)
        onehot[np.arange(len(src)), groups] = 1
        counts = onehot.sum(0)
        if (counts[:n_parts] == 0).any():
            raise UnmaskError("structural evidence: empty part")
        best = (u.numpy() @ (onehot / np.maximum(counts, 1))).argmax(1)
        return np.where(best == n_parts, -1, best)

    for s in layout.spaces:
        w = s.u if s.u is not None else s.reads
        labels[s.name] = assign(w, labels[s.source])
    return labels


def _median_ratio(m: _Matrix, row_labels: np.ndarray, col_labels: np.ndarray) -> float | None:
    r, c = row_labels[m.row_at], col_labels[m.col_at]
    valid = (r >= 0) & (c >= 0)
    within, cross = m.values[valid & (r == c)], m.values[valid & (r != c)]
    if within.size == 0 or cross.size == 0:
        return None
    return float(np.median(cross) / max(float(np.median(within)), 1e-30))


def _coupling(layout: _Layout, residual: np.ndarray, n_parts: int) -> tuple[float, dict[str, float]]:
    labels = _space_labels(layout, residual, n_parts)
    ratios: list[float] = []
    by_type: dict[str, list[float]] = {}
    for m in layout.matrices:
        ratio = _median_ratio(m, labels[m.rows], labels[m.cols])
        if ratio is not None:
            ratios.append(ratio)
            by_type.setdefault(m.kind, []).append(ratio)
    if not ratios:
        return float("nan"), {}
    return float(np.median(ratios)), {k: float(np.median(v)) for k, v in by_type.items()}


def _partition(layout: _Layout, a: np.ndarray, max_parts: int, min_part: int,
               nested_coupling: float) -> tuple[list[np.ndarray], float]:
    first, rest, conductance = _bisect(a, min_part)
    parts = [first, rest]
    while len(parts) < max_parts:
        best = None
        for i, p in enumerate(parts):
            if len(p) < 2 * min_part:
                continue
            x, y, _ = _bisect(a[np.ix_(p, p)], min_part)
            labels = np.full(layout.hidden, -1)
            labels[p[x]], labels[p[y]] = 0, 1
            c, _ = _coupling(layout, labels, 2)
            if best is None or c < best[0]:
                best = (c, i, p[x], p[y])
        if best is None or not best[0] < nested_coupling:
            break
        _, i, x, y = best
        parts[i:i + 1] = [x, y]
    return sorted(parts, key=len, reverse=True), conductance


# ------------------------------------------------------------------------------------------ texts
class _CorrelationSums:
    """Running first and second moments of one layer's hidden units over tokens."""

    def __init__(self) -> None:
        self.n, self.sum, self.prod = 0, None, None

    def add(self, t: torch.Tensor) -> None:
        t = t.double()
        if self.sum is None:
            self.sum = torch.zeros(t.shape[1], dtype=torch.float64)
            self.prod = torch.zeros(t.shape[1], t.shape[1], dtype=torch.float64)
        self.n += len(t)
        self.sum += t.sum(0)
        self.prod += t.T @ t

    def cross_over_within(self, labels: np.ndarray) -> float:
        """Mean |corr| between units of different parts / mean |corr| between distinct units of one part."""
        mean = self.sum / self.n
        cov = self.prod / self.n - torch.outer(mean, mean)
        sd = cov.diagonal().clamp_min(0).sqrt()
        live = sd > 1e-8 * sd.max().clamp_min(1e-30)
        corr = (cov / torch.outer(sd, sd).clamp_min(1e-300)).abs()
        lab = torch.as_tensor(labels)
        ok = live[:, None] & live[None, :] & ~torch.eye(len(lab), dtype=torch.bool)
        same = lab[:, None] == lab[None, :]
        within, cross = corr[ok & same], corr[ok & ~same]
        if within.numel() == 0 or cross.numel() == 0:
            return float("nan")
        return float(cross.mean() / within.mean().clamp_min(1e-30))


def _text_evidence(model: TextClassifier, layout: _Layout, residual: np.ndarray, readout: np.ndarray,
                   n_parts: int, texts: list[str], pairs, batch_size: int,
                   progress: bool) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Per part: mean per-input share of |logit margin| and of the Eq. 1 attribution mass (readout
    decomposition); per hidden-state layer: the activation coupling. One forward pass per batch."""
    cls = layout.classifier
    w = cls.weight
    idx = [torch.as_tensor(np.nonzero(readout == p)[0]) for p in range(n_parts)]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(pairs[i] or "") if pairs else len(texts[i]))
    margins, grads = [], []
    layers: list[_CorrelationSums] = []
    for start in tqdm(range(0, len(order), batch_size), desc="structure: texts", disable=not progress):
        rows_idx = order[start:start + batch_size]
        batch = model.encode([texts[i] for i in rows_idx], [pairs[i] for i in rows_idx] if pairs else None)
        seen: list[torch.Tensor] = []
        hook = cls.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
        try:
            x = model.embed(batch.input_ids).detach().requires_grad_(True)
            out = model.forward_embeds(x, batch.attention_mask, batch.token_type_ids, output_hidden_states=True)
        finally:
            hook.remove()
        keep = batch.attention_mask.bool()
        for li, h in enumerate(out.hidden_states):
            if len(layers) <= li:
                layers.append(_CorrelationSums())
            layers[li].add(h.detach()[keep])
        logits = out.logits
        z = seen[-1]
        if z.dim() == 3:  # a classifier applied per token: the first token is the readout
            z = z[:, 0]
        parts = torch.stack([z[:, j] @ w[:, j].T for j in idx])            # (parts, rows, labels)
        pred = logits.argmax(-1)
        onehot = nn.functional.one_hot(pred, logits.shape[-1])
        rows = torch.arange(len(pred))
        runner = logits.detach().masked_fill(onehot.bool(), float("-inf")).argmax(-1)
        margin = (parts[:, rows, pred] - parts[:, rows, runner]).abs().detach()
        margins.append((margin / margin.sum(0).clamp_min(1e-30)).T)
        coeff = (logits.softmax(-1) - onehot.to(logits.dtype)).detach()
        mask = batch.attention_mask.to(x.dtype)
        mass = []
        for j in range(n_parts):
            (g,) = torch.autograd.grad((coeff * parts[j]).sum(), x, retain_graph=j < n_parts - 1)
            mass.append(((g * x.detach()).sum(-1).abs() * mask).sum(-1))
        mass_t = torch.stack(mass, -1)
        grads.append(mass_t / mass_t.sum(-1, keepdim=True).clamp_min(1e-30))
    return (torch.cat(margins).mean(0).numpy(), torch.cat(grads).mean(0).numpy(),
            [layer.cross_over_within(residual) for layer in layers])


# ------------------------------------------------------------------------------------------ entry point
def structural_evidence(model: TextClassifier, max_parts: int = 3, texts: list[str] | None = None,
                        pairs: list[str | None] | None = None, min_part: int | None = None,
                        nested_coupling: float = 0.1, batch_size: int = 32,
                        progress: bool = False) -> StructuralEvidence:
    """Find the most independent split of ``model``'s hidden units and measure how coupled it is.

    ``max_parts`` (>= 2) bounds the recursive bisection; a part is split again only when that split's
    own coupling is below ``nested_coupling``. ``min_part`` (default: one head's width, the smallest
    sub-network a merge can add) bounds part sizes. With ``texts`` (and ``pairs`` for sentence pairs)
    each part's margin and gradient shares and the activation coupling are measured too.

    Margin and gradient shares come from the classifier readout: part P's logits are the classifier
    applied to P's readout units only (the other parts' readout zeroed, bias left out); they sum to
    the model's logits, and P's gradient is (softmax - onehot(prediction)) . d logits_P / dx, which
    sums to the gradient of the loss at the prediction. When the parts are exactly independent this is
    each sub-network's own output and gradient; when they are not, it is the share that leaves the
    network through P's readout units, including what other parts' units feed into P along the way.
    """
    start = time.perf_counter()
    if not isinstance(max_parts, int) or isinstance(max_parts, bool) or max_parts < 2:
        raise UnmaskError(f"max_parts must be an integer >= 2, not {max_parts!r}")
    if texts is not None and not texts:
        raise UnmaskError("structural evidence: texts is empty (give None to skip the activation checks)")
    if pairs is not None and texts is None:
        raise UnmaskError("structural evidence: pairs given without texts")
    if batch_size < 1:
        raise UnmaskError(f"batch_size must be >= 1, not {batch_size}")
    with torch.no_grad():
        layout = _layout(model)
        min_part = layout.head_size if min_part is None else int(min_part)
        if not 1 <= min_part <= layout.hidden // 2:
            raise UnmaskError(f"min_part must be in [1, {layout.hidden // 2}], not {min_part}")
        a = _affinity(layout)
        parts, conductance = _partition(layout, a, max_parts, min_part, nested_coupling)
        residual = np.empty(layout.hidden, dtype=np.int64)
        for i, p in enumerate(parts):
            residual[p] = i
        coupling, by_type = _coupling(layout, residual, len(parts))
        readout = _space_labels(layout, residual, len(parts))[layout.classifier_space]
        w_cls = layout.classifier.weight.detach().abs().float().sum(0).numpy()
        cls_share = [float(w_cls[readout == i].sum() / max(w_cls.sum(), 1e-30)) for i in range(len(parts))]
    records = [StructuralPart(p.tolist(), len(p), s) for p, s in zip(parts, cls_share)]
    evidence = StructuralEvidence(layout.hidden, records, coupling, by_type, conductance, len(layout.matrices))
    if texts is not None:
        margin, grad, by_layer = _text_evidence(model, layout, residual, readout, len(parts), list(texts),
                                                list(pairs) if pairs is not None else None, batch_size, progress)
        for rec, m, g in zip(records, margin, grad):
            rec.margin_share, rec.gradient_share = float(m), float(g)
        evidence.activation_coupling_by_layer = by_layer
        evidence.activation_coupling = float(np.nanmedian(by_layer))
        evidence.n_texts = len(texts)
    evidence.seconds = time.perf_counter() - start
    return evidence
