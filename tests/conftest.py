"""Shared fixtures: tiny random models that run in milliseconds."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


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
