"""DiffMask (De Cao et al. 2020): amortized hard-concrete masks on inputs or hidden states.

Input mode (section 3.1): probe k votes on every input position from hidden state k; the gate for
"layer k" is the product of the votes of layers 0..k, and masked input vectors are replaced by one
learned baseline vector: ``x_hat = z * x + (1 - z) * b``.

Hidden mode (section 3.2): probe k gates layer k's own states, which are replaced by a learned
per-layer baseline ``b_k``; the network is rerun from layer k on.

Objective (Eq. 6): minimize the expected L0 (share of positions kept) subject to
``KL(original || masked) <= eps``, relaxed with one Lagrange multiplier per layer. The multipliers get
the gradient of the same Lagrangian with the sign flipped (gradient ascent) and are clamped to
``[0, multiplier_max]`` by the trainer.

Saturation (``l0_bound``): the expected L0 of a gate, sigmoid(location + const), has derivative
``p (1 - p)``, which vanishes far in the open region. Probe parameters shared with needed positions can
drag unneeded gates there (toy task: the vote-1 locations of two non-query symbols at +12..+14, L0
gradient 1e-5..1e-7, left open on every DiffMask seed although closing them keeps KL <= eps), and then
nothing closes them. So the penalty continues each gate's expected L0 by its tangent beyond location
``l0_bound`` (default 5, keep 0.995): an upper bound on the L0, exact below the bound, whose gradient
never falls below the slope at the bound. The reported L0 stays exact. In input mode vote 0 keeps the
exact L0: it reads only the input vector, so it can only drop a token type everywhere, and the batch-mean
KL constraint allows that; with the tangent on vote 0 the toy's layer-0 votes closed whole symbols (1 or
2 of 3 seeds), while with the exact L0 they stay open as the paper expects (Figure 3e).

Vote 0's start (``vote0_init_bias``, input mode): the other probes start at ``init_bias`` (5), vote 0 at
10, in the saturated region. At the start nothing is masked, so layer 0's KL is far below eps and its
multiplier drops to 0 within a few steps; at location 5 the exact L0 (slope 5e-3) then pushes every
vote-0 location down, and unless the KL of layers 1..L lifts them first, one token type can cross into
the closed region and stay there (toy, ``l0_bound`` 5: one symbol closed at layer 0 on each of seeds
3-5; traced on seed 3, its vote 0 at +1.1 after 1000 steps and -3.7 after 2000 while the others rose to
+6..+9; layers 1 and 2 inherit the closed symbol through the product of votes). Started at 10 (L0 slope 3.3e-5; in that run the open
symbols' vote-0 locations rose to +8..+14 anyway) vote 0 stayed open on all six seeds measured; it can
still close a token type, only much more slowly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from unmask.errors import UnmaskError
from unmask.masking.adapters import MaskableModel, ModelStates, masked_mean
from unmask.masking.hard_concrete import LEFT, RIGHT, TEMPERATURE, HardConcrete, check_hard_concrete
from unmask.masking.probes import LayerProbes

MODES = ("input", "hidden")


def check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise UnmaskError(f"eps (the KL tolerance) must be a positive finite number, got {eps!r}")
    return float(eps)


def check_optional_number(name: str, value: float | None, minimum: float = -math.inf) -> float | None:
    """``value`` as a float (None passes), or an ``UnmaskError`` unless it is a finite number >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise UnmaskError(f"{name} must be None or a finite number >= {minimum}, got {value!r}")
    return float(value)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per row."""
    log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


class DiffMask(nn.Module):
    """Probes, baselines and Lagrange multipliers for one model (``layer_sizes`` = sizes of layers 0..L)."""

    def __init__(self, input_size: int, layer_sizes: list[int], mode: str = "input", eps: float = 0.1,
                 probe_hidden: int = 64, max_activation: float | None = 10.0, init_bias: float = 5.0,
                 temperature: float = TEMPERATURE,
                 left: float = LEFT, right: float = RIGHT, multiplier_init: float = 1.0,
                 multiplier_max: float = 200.0, l0_bound: float | None = 5.0,
                 vote0_init_bias: float | None = 10.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise UnmaskError(f"unknown DiffMask mode {mode!r}; choose one of {', '.join(MODES)}")
        if not layer_sizes:
            raise UnmaskError("DiffMask needs at least one hidden layer")
        if probe_hidden < 1:
            raise UnmaskError(f"probe_hidden must be positive, got {probe_hidden}")
        if not multiplier_max > 0 or multiplier_init < 0:
            raise UnmaskError(f"need multiplier_init >= 0 and multiplier_max > 0, got {multiplier_init}, "
                              f"{multiplier_max}")
        check_hard_concrete(temperature, left, right)
        self.l0_bound = check_optional_number("l0_bound", l0_bound, 0.0)
        self.vote0_init_bias = check_optional_number("vote0_init_bias", vote0_init_bias)
        self.mode, self.eps = mode, check_eps(eps)
        self.input_size, self.layer_sizes = int(input_size), [int(s) for s in layer_sizes]
        self.probe_hidden, self.max_activation, self.init_bias = probe_hidden, max_activation, init_bias
        self.temperature, self.left, self.right = temperature, left, right
        self.multiplier_init, self.multiplier_max = multiplier_init, multiplier_max
        self.probes = LayerProbes(self.layer_sizes, self.input_size if mode == "input" else None, probe_hidden,
                                  max_activation, init_bias)
        if mode == "input" and vote0_init_bias is not None:
            with torch.no_grad():
                self.probes.probes[0].bias.fill_(self.vote0_init_bias)
        sizes = [self.input_size] if mode == "input" else self.layer_sizes
        self.baselines = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in sizes)
        self.multipliers = nn.Parameter(torch.full((len(self.layer_sizes),), float(multiplier_init)))
        self.register_buffer("baselines_ready", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ bookkeeping
    @property
    def num_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def spec(self) -> dict:
        """Constructor arguments (saved next to the weights)."""
        return {"input_size": self.input_size, "layer_sizes": self.layer_sizes, "mode": self.mode,
                "eps": self.eps, "probe_hidden": self.probe_hidden, "max_activation": self.max_activation,
                "init_bias": self.init_bias,
                "temperature": self.temperature, "left": self.left, "right": self.right,
                "multiplier_init": self.multiplier_init, "multiplier_max": self.multiplier_max,
                "l0_bound": self.l0_bound, "vote0_init_bias": self.vote0_init_bias}

    def check_layer(self, layer) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.num_layers:
            raise UnmaskError(f"layer index must be an integer in 0..{self.num_layers}, got {layer!r}")
        return layer

    def check_states(self, states: ModelStates) -> None:
        if len(states.hidden) != len(self.layer_sizes):
            raise UnmaskError(f"this DiffMask was built for {len(self.layer_sizes)} hidden states, the model "
                              f"gives {len(states.hidden)}")
        for k, (h, size) in enumerate(zip(states.hidden, self.layer_sizes)):
            if h.shape[-1] != size:
                raise UnmaskError(f"layer {k} has size {h.shape[-1]}, this DiffMask expects {size}")

    @torch.no_grad()
    def init_baselines(self, adapter: MaskableModel, states: ModelStates) -> None:
        """Input mode: the adapter's choice ([MASK] embedding for BERT); hidden: mean state of each layer."""
        if bool(self.baselines_ready):
            return
        if self.mode == "input":
            self.baselines[0].copy_(adapter.input_baseline(states).to(self.baselines[0].dtype))
        else:
            for b, h in zip(self.baselines, states.hidden):
                b.copy_(masked_mean(h, states.mask).to(b.dtype))
        self.baselines_ready.fill_(True)

    def clamp_multipliers(self) -> None:
        with torch.no_grad():
            self.multipliers.clamp_(0.0, self.multiplier_max)

    # ------------------------------------------------------------------ gates
    def distribution(self, states: ModelStates, layer: int) -> HardConcrete:
        """Gates of ``layer``: locations (B, T, layer + 1) of all votes (input) or (B, T) (hidden)."""
        layer = self.check_layer(layer)
        logits = self.probes.upto(states.hidden, layer, states.inputs) if self.mode == "input" \
            else self.probes.layer(states.hidden, layer)
        return HardConcrete(logits, self.temperature, self.left, self.right)

    def _combine(self, values: torch.Tensor) -> torch.Tensor:
        return values.prod(-1) if self.mode == "input" else values

    def keep_probability(self, states: ModelStates, layer: int) -> torch.Tensor:
        """P(gate != 0) per position (B, T): the expected L0 contribution, zero at padding."""
        dist = self.distribution(states, layer)
        log_keep = dist.log_expected_l0()
        keep = (log_keep.sum(-1) if self.mode == "input" else log_keep).exp()
        return keep * states.mask.to(keep.dtype)

    def keep_all_layers(self, states: ModelStates) -> torch.Tensor:
        """(B, L + 1, T) keep probabilities for every layer from one pass of all probes (amortized)."""
        inputs = states.inputs if self.mode == "input" else None
        dist = HardConcrete(self.probes.upto(states.hidden, self.num_layers, inputs), self.temperature,
                            self.left, self.right)
        log_keep = dist.log_expected_l0()  # (B, T, L + 1)
        if self.mode == "input":
            log_keep = log_keep.cumsum(-1)
        return log_keep.exp().transpose(1, 2) * states.mask[:, None, :].to(log_keep.dtype)

    def penalty_keep(self, states: ModelStates, layer: int) -> torch.Tensor:
        """The keep probability the L0 penalty uses, zero at padding: with ``l0_bound`` set, each gate's
        expected L0 is continued by its tangent beyond that location (``HardConcrete.expected_l0_tangent``);
        in input mode vote 0 keeps the exact L0 (see the module docstring)."""
        if self.l0_bound is None:
            return self.keep_probability(states, layer)
        keep = self._combine(self.penalty_votes(self.distribution(states, layer)))
        return keep * states.mask.to(keep.dtype)

    def penalty_votes(self, dist: HardConcrete) -> torch.Tensor:
        """Per vote, the expected L0 the penalty uses: exact, or continued by its tangent beyond ``l0_bound``
        (input mode: vote 0 always exact; see the module docstring)."""
        if self.l0_bound is None:
            return dist.expected_l0()
        votes = dist.expected_l0_tangent(self.l0_bound)
        if self.mode == "input":
            votes = torch.cat([dist.expected_l0()[..., :1], votes[..., 1:]], -1)
        return votes

    def sample_gates(self, states: ModelStates, layer: int) -> torch.Tensor:
        return self._combine(self.distribution(states, layer).rsample())

    def deterministic_gates(self, states: ModelStates, layer: int) -> torch.Tensor:
        return self._combine(self.distribution(states, layer).deterministic())

    # ------------------------------------------------------------------ masked forward and objective
    def masked_logits(self, adapter: MaskableModel, batch, states: ModelStates, layer: int,
                      gates: torch.Tensor) -> torch.Tensor:
        """Rerun the model with gated states; padding positions are left untouched."""
        gates = torch.where(states.mask, gates, torch.ones_like(gates))[..., None]
        if self.mode == "input":
            new = gates * states.inputs + (1 - gates) * self.baselines[0]
            return adapter.logits_with(batch, "input", new)
        new = gates * states.hidden[layer] + (1 - gates) * self.baselines[layer]
        return adapter.logits_with(batch, layer, new)

    def lagrangian(self, adapter: MaskableModel, batch, states: ModelStates, layer: int) -> dict[str, torch.Tensor]:
        """``penalty + lambda_layer * (KL - eps)`` on sampled gates, the penalty being the expected L0 (continued
        beyond ``l0_bound``, see ``penalty_keep``); also returns the parts (per batch means; ``l0`` exact)."""
        self.check_states(states)
        layer = self.check_layer(layer)
        gates = self.sample_gates(states, layer)
        logits = self.masked_logits(adapter, batch, states, layer, gates)
        kl = kl_divergence(states.logits, logits).mean()
        mask = states.mask.to(gates.dtype)
        l0 = (self.keep_probability(states, layer).sum(1) / mask.sum(1)).mean()
        penalty = l0 if self.l0_bound is None else (self.penalty_keep(states, layer).sum(1) / mask.sum(1)).mean()
        loss = penalty + self.multipliers[layer] * (kl - self.eps)
        kept = (((gates > 0).to(mask.dtype) * mask).sum(1) / mask.sum(1)).mean()
        return {"loss": loss, "kl": kl.detach(), "l0": l0.detach(), "sampled_kept": kept.detach()}


def diffmask_for(adapter: MaskableModel, mode: str = "input", **kwargs) -> DiffMask:
    """A fresh DiffMask sized for ``adapter``'s model (same dtype as the model's parameters)."""
    dm = DiffMask(adapter.input_size, adapter.layer_sizes, mode=mode, **kwargs)
    params = adapter.parameters()
    return dm.to(params[0].dtype) if params else dm
