"""Facade objective: second-order gradient vs finite differences; training raises P@1 quickly."""
import torch

from unmask.data.readers import Example
from unmask.facade.objective import FacadeObjective, facade_loss, partner_logit_scores
from unmask.facade.targets import TargetPositions
from unmask.facade.train import FacadeConfig, train_facade
from unmask.models.tiny import tiny_classifier
from unmask.training.batches import collate, tokenize_examples

TEXTS = ["the film is a joy to watch", "it was not very good at all", "a dull , lifeless story of it",
         "an honest and moving portrait"]


def _batch(model, texts=TEXTS):
    data = tokenize_examples(model, [Example(t, i % 2) for i, t in enumerate(texts)])
    return collate(data, list(range(len(texts))), model.tokenizer.pad_token_id)


def _loss(g, b, partner=None, **kw):
    t = TargetPositions("stop", g.tokenizer).mask(b["input_ids"], b["attention_mask"])
    return facade_loss(g, b, t, FacadeObjective(**kw), partner)


def test_stop_targets_are_stop_word_pieces_only():
    g = tiny_classifier()
    b = _batch(g)
    mask = TargetPositions("stop", g.tokenizer).mask(b["input_ids"], b["attention_mask"])
    tokens = g.tokenizer.convert_ids_to_tokens(b["input_ids"][1].tolist())
    assert [t for t, m in zip(tokens, mask[1]) if m] == ["it", "was", "not", "very", "at", "all"]
    first = TargetPositions("first", g.tokenizer).mask(b["input_ids"], b["attention_mask"])
    assert first.sum(1).tolist() == [1, 1, 1, 1] and first[:, 1].all()


def _check_fd(g, b, partner=None, **kw):
    params = [p for n, p in g.model.named_parameters() if "encoder.layer.0.attention.self.query.weight" in n]
    p = params[0]
    torch.manual_seed(0)  # the path term draws its alpha per call: the same draws for every evaluation
    loss, _ = _loss(g, b, partner, **kw)
    (analytic,) = torch.autograd.grad(loss, p)
    for idx in [(0, 0), (3, 5), (7, 2)]:
        eps = 1e-6
        with torch.no_grad():
            p[idx] += eps
        torch.manual_seed(0)
        up, _ = _loss(g, b, partner, **kw)
        with torch.no_grad():
            p[idx] -= 2 * eps
        torch.manual_seed(0)
        down, _ = _loss(g, b, partner, **kw)
        with torch.no_grad():
            p[idx] += eps
        numeric = (up.detach() - down.detach()) / (2 * eps)
        assert torch.allclose(analytic[idx], numeric, rtol=1e-4, atol=1e-7), (idx, analytic[idx], numeric)


def test_second_order_objective_gradient_matches_finite_differences():
    g = tiny_classifier(seed=3)
    g.model.double()
    b = _batch(g)
    _check_fd(g, b, lambda_g=10.0, entropy_weight=1.0)
    _check_fd(g, b, lambda_g=10.0, entropy_weight=1.0, baseline_weight=2.0)


def test_merged_objective_gradient_matches_finite_differences():
    g = tiny_classifier(seed=3)
    f = tiny_classifier(seed=4)
    g.model.double()
    f.model.double()
    b = _batch(g)
    partner = partner_logit_scores(f, b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert _loss(g, b, partner, margin_keep=0.9)[1]["margin_loss"] > 0  # the hinge is active here
    _check_fd(g, b, partner, lambda_g=10.0, entropy_weight=1.0, agreement_weight=5.0, margin_weight=3.0,
              margin_keep=0.9, baseline_weight=2.0)
    _check_fd(g, b, partner, lambda_g=10.0, agreement_weight=5.0, path_weight=3.0)


def test_path_term_is_g_gradient_x_input_inside_the_ig_path():
    """Oracle: central differences of g's centered logit along each token's embedding at alpha * x."""
    from unmask.facade.objective import path_attribution

    g = tiny_classifier(seed=9)
    g.model.double()
    b = _batch(g)
    x = g.embed(b["input_ids"]).detach()
    y = torch.tensor([0, 1, 1, 0])
    reference = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=x.dtype)
    torch.manual_seed(1)
    value = path_attribution(g, x, b, y, reference, alpha_max=0.7)
    torch.manual_seed(1)
    alpha = torch.rand(x.shape[0], 1, 1, dtype=x.dtype) * 0.7

    def centered(z):
        logits = g.forward_embeds(z, b["attention_mask"], b["token_type_ids"]).logits
        return (logits - logits.mean(-1, keepdim=True)).gather(1, y[:, None])[:, 0]

    eps, mass = 1e-6, torch.zeros(x.shape[0], dtype=x.dtype)
    with torch.no_grad():
        for i in range(x.shape[1]):
            step = torch.zeros_like(x)
            step[:, i] = eps * x[:, i]
            mass += ((centered(alpha * x + step) - centered(alpha * x - step)) / (2 * eps)).abs() \
                * b["attention_mask"][:, i]
    assert torch.allclose(value, (mass / reference).mean(), rtol=1e-6), (value, (mass / reference).mean())
    assert float(alpha.max()) <= 0.7 and value > 0


def test_tiny_facade_learns_first_token_within_seconds(tmp_path):
    torch.manual_seed(0)
    g = tiny_classifier(seed=5)
    words = "the a movie film good bad is was very not and of it".split()
    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(words[i] for i in torch.randint(len(words), (6,), generator=gen).tolist()) for _ in range(96)]
    train = [Example(t, i % 2) for i, t in enumerate(texts[:64])]
    dev = [Example(t, i % 2) for i, t in enumerate(texts[64:])]
    cfg = FacadeConfig(steps=40, batch_size=16, lr=3e-3, eval_every=40, eval_size=32, checkpoint_every=20)
    t = TargetPositions("first", g.tokenizer)
    b = collate(tokenize_examples(g, dev), list(range(len(dev))), g.tokenizer.pad_token_id)
    _, info0 = facade_loss(g, b, t.mask(b["input_ids"], b["attention_mask"]), cfg.objective)
    result = train_facade(g, train, dev, "first", tmp_path / "g", cfg, progress=False, log=lambda s: None)
    assert result["final"]["p_at_1"] > 0.9 > info0["p_at_1"] + 0.3
    assert (tmp_path / "g" / "model.safetensors").is_file() and (tmp_path / "g" / "facade.json").is_file()


def test_merged_objective_equals_attribution_of_the_merged_model():
    """Oracle: the training-time merged attribution is what gradient_x_input measures on merge(f, g)."""
    import unmask
    from unmask.facade.merge import merge

    f = tiny_classifier(seed=6)
    g = tiny_classifier(seed=7)
    merged = merge(f, g)
    b = _batch(g)
    partner = partner_logit_scores(f, b["input_ids"], b["attention_mask"], b["token_type_ids"])
    positions = TargetPositions("stop", g.tokenizer)
    t = positions.mask(b["input_ids"], b["attention_mask"])
    _, info = facade_loss(g, b, t, FacadeObjective(), partner)
    f_pred = partner[0].argmax(-1).tolist()
    records = unmask.explain(merged, TEXTS, methods="gradient_x_input", target=f_pred)["gradient_x_input"]
    shares = [float((r.normalized() * positions.mask_tokens(r.tokens, r.sequence_ids)).sum()) for r in records]
    assert abs(sum(shares) / len(shares) - info["target_share"]) < 1e-5


def test_baseline_gap_is_the_ig_gap_of_g():
    """Oracle: the baseline term is g's IG total (F(x) - F(x'), zero word-embedding baseline), centered."""
    from unmask.attribution.integrated_gradients import IntegratedGradients

    g = tiny_classifier(seed=8)
    b = _batch(g)
    _, info = _loss(g, b, baseline_weight=1.0)
    batch = g.encode(TEXTS)
    ig = IntegratedGradients(steps=4, tolerance=None, objective="logit")
    gaps = [torch.tensor([e["delta"] for e in ig.attribute(g, batch, torch.full((len(TEXTS),), k))[1]])
            for k in range(2)]
    expected = float(((gaps[0] - gaps[1]) ** 2 / 2).mean())
    assert info["baseline_gap"] > 0 and abs(info["baseline_gap"] - expected) < 1e-4 * max(1.0, expected)


def test_micro_batched_backward_equals_the_whole_batch():
    """Facade training's micro-batches (bounded memory) accumulate exactly the whole batch's gradient."""
    from unmask.facade.train import batch_backward

    f, g = tiny_classifier(seed=11), tiny_classifier(seed=12)
    f.model.double().requires_grad_(False)
    g.model.double()
    texts = TEXTS + ["the movie , sadly , is long and the acting is worse .", "good"]
    data = tokenize_examples(g, [Example(t, i % 2) for i, t in enumerate(texts)])
    targets = TargetPositions("stop", g.tokenizer)
    objective = FacadeObjective(entropy_weight=10.0, agreement_weight=100.0, margin_weight=30.0, baseline_weight=10.0)
    grads, losses = [], []
    for rows in (len(texts), 2, 1):
        g.model.zero_grad(set_to_none=True)
        loss, info = batch_backward(g, f, data, list(range(len(texts))), targets, objective, rows)
        grads.append([p.grad.clone() for p in g.model.parameters() if p.grad is not None])
        losses.append(float(loss))
    assert len(grads[0]) > 0 and all(len(gr) == len(grads[0]) for gr in grads)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert losses[1] == losses[0] or abs(losses[1] - losses[0]) < 1e-9 * max(1.0, abs(losses[0]))
