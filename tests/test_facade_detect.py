"""Facade detection: structure of merged models and a trained tiny facade is flagged, f alone is not."""
import pytest
import torch

from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.facade.detect import detect_facade
from unmask.facade.merge import merge
from unmask.facade.objective import FacadeObjective
from unmask.facade.structure import component_logits, hidden_components
from unmask.facade.train import FacadeConfig, train_facade
from unmask.models.tiny import tiny_classifier

WORDS = "the a movie film good bad is was very not and of it".split()


def _texts(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (6,), generator=gen).tolist()) for _ in range(n)]


def test_single_model_is_one_component():
    f = tiny_classifier(seed=1)
    assert [len(c) for c in hidden_components(f)] == [32]


def test_merged_model_splits_into_its_parts_and_logits_add_up():
    f = tiny_classifier(seed=1)
    g = tiny_classifier(seed=2, hidden=16, heads=2)
    merged = merge(f, g)
    comps = hidden_components(merged)
    assert [len(c) for c in comps] == [32, 16]
    assert comps[1].tolist() == list(range(32, 48))
    b = merged.encode(["a fine film", "bad"])
    parts = component_logits(merged, b.input_ids, b.attention_mask, b.token_type_ids, comps)
    assert torch.allclose(parts.sum(0) + merged.model.classifier.bias, merged.logits(b), atol=1e-6)
    assert torch.allclose(parts[0] + f.model.classifier.bias, f.logits(f.encode(["a fine film", "bad"])), atol=1e-5)


def test_small_noise_on_zero_blocks_does_not_hide_the_split():
    merged = merge(tiny_classifier(seed=1), tiny_classifier(seed=2, hidden=16, heads=2))
    with torch.no_grad():
        for p in merged.model.parameters():
            if p.ndim == 2:
                p.add_(1e-9 * torch.randn_like(p))
    assert len(hidden_components(merged, rel_tol=1e-6)) == 2
    assert len(hidden_components(merged, rel_tol=0.0)) == 1


def test_trained_facade_is_flagged_and_plain_model_is_not(tmp_path):
    from unmask.training import TrainConfig, train_classifier

    texts = _texts(160)
    label = lambda t: int("good" in t.split())  # noqa: E731
    train = [Example(t, label(t)) for t in texts[:128]]
    dev = [Example(t, label(t)) for t in texts[128:]]
    f = tiny_classifier(seed=3)
    result = train_classifier(f, train, dev, tmp_path / "f", TrainConfig(epochs=12, batch_size=16, lr=3e-3),
                              progress=False, log=lambda s: None)
    assert result["best_dev_accuracy"] >= 90
    g = tiny_classifier(seed=4, hidden=16, heads=2)
    cfg = FacadeConfig(steps=60, batch_size=16, lr=3e-3, eval_every=60, eval_size=32, checkpoint_every=60,
                       objective=FacadeObjective(entropy_weight=1e3, agreement_weight=1e4))
    train_facade(g, train, dev, "stop", tmp_path / "g", cfg, f=f, progress=False, log=lambda s: None)
    merged = merge(f, g)
    probe = _texts(24, seed=1)
    flagged = detect_facade(merged, probe, ig_steps=8)
    clean = detect_facade(f, probe, ig_steps=8)
    assert flagged.suspicious and any(c.facade for c in flagged.components), flagged
    assert not any(c.facade for c in clean.components) and len(clean.components) == 1
    assert not clean.suspicious, clean.verdict  # the plain model passes the whole check, rank agreement included
    facade = next(c for c in flagged.components if c.facade)
    assert facade.size == 16 and facade.gradient_share > 0.5 and facade.margin_share < 0.1


def test_rank_agreement_names_the_papers_gradient_gradient_x_input(monkeypatch):
    """The detector's "Gradient" is Eq. 1 (g . x): keyed and worded gradient_x_input, never the registry's
    ``gradient`` (the L2 norm), in the result and in the verdict."""
    import unmask.facade.detect as detect

    det = detect_facade(tiny_classifier(seed=1), _texts(4), ig_steps=2)
    assert set(det.rank_agreement_with_occlusion) == {"gradient_x_input", "integrated_gradients"}
    monkeypatch.setattr(detect, "_rank_agreement", lambda *a: {"gradient_x_input": 0.1, "integrated_gradients": 0.9})
    det = detect_facade(tiny_classifier(seed=1), _texts(4), ig_steps=2)
    assert det.suspicious and "Gradient x input (Eq. 1) agrees with occlusion far less than IG" in det.verdict


def test_detection_needs_texts():
    with pytest.raises(UnmaskError, match="at least one"):
        detect_facade(tiny_classifier(), [])
