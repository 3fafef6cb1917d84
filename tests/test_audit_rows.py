"""The audit's faithfulness curves share one RowCache: the evidence is that of separate calls, with fewer rows."""
from __future__ import annotations

import numpy as np

from test_faithfulness import Spy
from unmask.audit.behavior import REFERENCE, behavioral_evidence
from unmask.metrics import faithfulness as fm

TEXTS = ["a fine film", "a dull , long film", "the plot is thin but the cast is good", "not bad at all",
         "it was a very good movie", "the worst film of the year"]


def test_audit_curves_run_each_distinct_row_once_and_match_separate_calls(tiny_model, monkeypatch):
    caches: list[fm.RowCache] = []
    ran: list[int] = []

    class Recording(fm.RowCache):
        def __init__(self, model) -> None:
            super().__init__(model)
            caches.append(self)

    run = fm._Rows._run
    monkeypatch.setattr(fm, "RowCache", Recording)
    monkeypatch.setattr(fm._Rows, "_run", lambda self, rows, *a: ran.append(len(rows)) or run(self, rows, *a))
    recs: dict = {}
    ev = behavioral_evidence(tiny_model, TEXTS, methods=("gradient", "gradient_x_input", "smoothgrad"),
                             records_out=recs)
    audit_rows = sum(ran)
    (cache,) = caches
    spy = Spy(tiny_model)
    ref = fm.faithfulness(spy, recs[REFERENCE])
    rand = fm.random_faithfulness(spy, recs[REFERENCE], seed=0)
    for name, m in ev.methods.items():
        alone = fm.faithfulness(spy, recs[name])
        np.testing.assert_allclose([m.aopc_comprehensiveness, m.aopc_random, m.aopc_reference],
                                   [alone.aopc_comprehensiveness, rand.aopc_comprehensiveness,
                                    ref.aopc_comprehensiveness], atol=1e-5)
    np.testing.assert_allclose(ev.extras["reference_aopc_sufficiency"], ref.aopc_sufficiency, atol=1e-5)
    assert len(cache) == len({(tuple(i), tuple(t or ())) for i, t in spy.seen}) < len(spy.seen)
    assert audit_rows == len(cache) - len(TEXTS)  # each perturbed row ran once; the inputs not again
