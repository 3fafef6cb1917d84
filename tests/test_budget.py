"""Token budgets from the model's size (attribution/budget.py)."""
import pytest
import torch

import unmask
from unmask.attribution import base
from unmask.attribution.budget import (AUTO_TOKEN_BUDGET, CPU_CHUNK_TOKENS, activation_bytes_per_token,
                                       is_auto, memory_budget, parse_memory, token_budget_for)
from unmask.attribution.gradient import Gradient
from unmask.errors import UnmaskError
from unmask.models.tiny import tiny_classifier


def test_formula_by_hand_on_a_tiny_config():
    # h=32, f=64, a=4 heads, L=2 layers, width 16, float32
    saved = 2 * (8 * 32 + 2 * 64 + 4 * 16) + 2 * 32          # 2 x 448 + 64 = 960 floats
    transient = 4 * 32 + 2 * 64 + 2 * 4 * 16                  # 384 floats
    assert activation_bytes_per_token(32, 64, 4, 2, 16, "backward") == 4 * (960 + 384) == 5376
    assert activation_bytes_per_token(32, 64, 4, 2, 16, "forward") == 4 * 384
    assert activation_bytes_per_token(32, 64, 4, 2, 16, "double_backward") == 3 * 5376
    assert activation_bytes_per_token(32, 64, 4, 2, 16, "backward", dtype_bytes=8) == 2 * 5376
    m = tiny_classifier()  # the same config
    assert token_budget_for(m, width=16, memory=5376 * 100) == 100


def saved_bytes_per_token(m, rows: int, width: int, double: bool = False) -> float:
    """Bytes autograd keeps per token (saved_tensors_hooks; parameters and repeated storages excluded) for a
    forward to the log-probability, and with ``double`` a create_graph gradient and its backward too."""
    params = {p.untyped_storage().data_ptr() for p in m.model.parameters()}
    sizes = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            sizes[ptr] = max(sizes.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    x = torch.randn(rows, width, m.model.config.hidden_size, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = m.forward_embeds(x, torch.ones(rows, width, dtype=torch.long)).logits.log_softmax(-1)[:, 0].sum()
        if double:
            (grads,) = torch.autograd.grad(out, x, create_graph=True)
            (grads * x).sum().backward()
    return sum(sizes.values()) / (rows * width)


def test_formula_matches_what_autograd_saves():
    """The saved part of the formula vs the bytes autograd really keeps on forward to the log-probability:
    within 5%."""
    for cfg in (dict(), dict(hidden=64, heads=8, intermediate=256, layers=3)):
        m = tiny_classifier(**cfg)
        width = 48
        measured = saved_bytes_per_token(m, 4, width)
        c = m.model.config
        h, f, a, L = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers
        predicted = 4 * (L * (8 * h + 2 * f + a * width) + 2 * h)
        assert measured == pytest.approx(predicted, rel=0.05)


def test_a_wider_model_gets_a_smaller_budget():
    narrow, wide = tiny_classifier(hidden=32, heads=4), tiny_classifier(hidden=128, heads=4, intermediate=256)
    memory = 8 << 20
    assert token_budget_for(wide, 64, memory=memory) < token_budget_for(narrow, 64, memory=memory)
    # longer rows cost more per token (attention), and double backward three times as much as backward
    assert token_budget_for(narrow, 256, memory=memory) < token_budget_for(narrow, 16, memory=memory)
    assert token_budget_for(narrow, 64, "double_backward", memory) == pytest.approx(
        token_budget_for(narrow, 64, "backward", memory) / 3, abs=1)


def test_cpu_cap_and_one_row_minimum(tiny_model):
    assert token_budget_for(tiny_model, 16, memory="64GiB") == CPU_CHUNK_TOKENS
    assert token_budget_for(tiny_model, 300, memory=1000) == 300  # never less than one row


def test_memory_from_the_environment(tiny_model, monkeypatch):
    monkeypatch.setenv("UNMASK_MEMORY_BUDGET", "1MiB")
    assert memory_budget() == 1 << 20
    assert token_budget_for(tiny_model, 16) == (1 << 20) // 5376
    monkeypatch.delenv("UNMASK_MEMORY_BUDGET")
    assert memory_budget() == 512 << 20
    assert parse_memory("1.5G") == 1_500_000_000 and parse_memory(2048) == 2048
    for bad in ("lots", "-1GiB", "0", "5 parsecs"):
        with pytest.raises(UnmaskError, match="memory budget"):
            parse_memory(bad)


def test_default_is_auto_and_explicit_wins(tiny_model, monkeypatch):
    assert is_auto(Gradient().token_budget) and is_auto(base.DEFAULT_TOKEN_BUDGET)
    assert Gradient().params["token_budget"] == "auto"
    assert not is_auto(Gradient(token_budget=2048).token_budget)
    assert Gradient(token_budget=2048).params["token_budget"] == 2048
    seen = []
    real = base.row_chunks
    monkeypatch.setattr(base, "row_chunks", lambda mask, budget: seen.append(budget) or real(mask, budget))
    monkeypatch.setenv("UNMASK_MEMORY_BUDGET", "100KiB")  # small: the derived budget is a few rows
    texts = ["a gripping , funny film ."] * 6
    auto = unmask.explain(tiny_model, texts, methods=[Gradient()])["gradient"]
    width = len(auto[0].tokens)
    assert seen == [token_budget_for(tiny_model, width)] and seen[0] < 6 * width
    seen.clear()
    explicit = unmask.explain(tiny_model, texts, methods=[Gradient(token_budget=4096)])["gradient"]
    assert seen == [4096]
    for a, b in zip(auto, explicit):  # the budget changes the chunks, never the scores
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_models_without_an_encoder_config_fall_back():
    class Plain:
        model = torch.nn.Linear(2, 2)

    assert token_budget_for(Plain()) == 2048
    assert int(AUTO_TOKEN_BUDGET) == 2048


def test_double_backward_figure_bounds_what_create_graph_saves():
    """With create_graph=True autograd keeps more than twice what the forward keeps; the double-backward
    figure (3x backward) must cover it (train mode, as in Facade training)."""
    for cfg in (dict(), dict(hidden=64, heads=8, intermediate=256, layers=3)):
        m = tiny_classifier(**cfg)
        m.model.train()
        width = 48
        measured = saved_bytes_per_token(m, 4, width, double=True)
        c = m.model.config
        shape = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers)
        figure = activation_bytes_per_token(*shape, width=width, mode="double_backward")
        assert 0.4 * figure < measured <= figure


def test_facade_micro_batches_shrink_with_the_graphs_the_objective_keeps(monkeypatch):
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.train import _chunk_rows

    g = tiny_classifier()
    memory = "4MiB"
    plain, with_base, with_path = (FacadeObjective(), FacadeObjective(baseline_weight=1.0),
                                   FacadeObjective(baseline_weight=1.0, path_weight=1.0))
    assert (plain.graph_cost, with_path.graph_cost) == (1.0, pytest.approx(7 / 3))
    monkeypatch.setenv("UNMASK_MEMORY_BUDGET", memory)
    rows = [_chunk_rows(g, None, 16, o) for o in (plain, with_base, with_path)]
    per_row = activation_bytes_per_token(32, 64, 4, 2, 16, "double_backward") * 16
    assert rows == [(4 << 20) // per_row, int((4 << 20) * 3 / 4) // per_row, int((4 << 20) * 3 / 7) // per_row]
