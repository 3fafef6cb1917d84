"""Shared fixtures: tiny random models that run in milliseconds."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_precision_probe: let precision='auto' time the real bf16 probe")


@pytest.fixture(autouse=True)
def _deterministic_auto_precision(request, monkeypatch):
    """precision="auto" times a bf16 probe on CPUs with native bf16; on a tiny model that verdict is timing
    noise (a clean-clone CI run once chose bf16 and a float32-reference test failed). Each test gets a
    planted probe with no speed-up (auto = float32) unless marked ``real_precision_probe``; tests of the
    rule plant their own."""
    if request.node.get_closest_marker("real_precision_probe"):
        return
    from unmask.attribution import precision as prec

    monkeypatch.setattr(prec, "_PROBES", {})
    monkeypatch.setattr(prec, "_measure", lambda model: prec.Probe(1.0, 1.0, 0.01, 1.0))


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer, 32-hidden random BERT classifier with MiniLM's tokenizer (float32)."""
    from unmask.models.tiny import tiny_classifier

    return tiny_classifier(seed=0)


@pytest.fixture(scope="session")
def tiny_model_f64():
    """The same architecture in float64, for finite-difference oracles."""
    from unmask.models.tiny import tiny_classifier

    m = tiny_classifier(seed=1)
    m.model.double()
    return m


@pytest.fixture(scope="module")
def sharp_model():
    """A float64 tiny BERT with 8x larger weight matrices: curved enough that IG needs several steps."""
    from unmask.models.tiny import tiny_classifier

    m = tiny_classifier(seed=1)
    m.model.double()
    with torch.no_grad():
        for p in m.model.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
    return m
