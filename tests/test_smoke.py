import numpy as np

import unmask
from unmask.attribution import METHODS


def test_every_registered_method_returns_one_record_per_text(tiny_model):
    texts = ["a great movie , really .", "bad"]
    names = sorted({c.name for c in METHODS.values()})
    records = unmask.explain(tiny_model, texts, methods=names)
    assert set(records) == set(names)
    for name, recs in records.items():
        assert len(recs) == 2
        for r, text in zip(recs, texts):
            assert r.text == text and r.method == name
            assert r.tokens[0] == "[CLS]" and r.tokens[-1] == "[SEP]"
            assert len(r.scores) == len(r.tokens)
            assert np.isfinite(r.scores).all()
