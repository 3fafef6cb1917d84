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
