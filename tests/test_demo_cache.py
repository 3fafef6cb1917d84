"""`unmask demo` caches are keyed on their inputs (issue 13 defect 5): the fine-tuned f_orig on the base model,
training settings and data slice; the audit cache on the audited model's weights, n and the calibration."""
import importlib
import json

import pytest

from unmask.commands.demo_cmd import cached_audit, fine_tune_f_orig
from unmask.models.tiny import tiny_classifier


def _stamp(d):
    st = (d / "model.safetensors").stat()
    return st.st_size, st.st_mtime_ns


def test_f_orig_is_rebuilt_when_its_base_model_or_settings_change(tmp_path, capsys):
    base = tiny_classifier(seed=0, layers=1).save(tmp_path / "base")
    f_dir = tmp_path / "work" / "f_orig"
    assert fine_tune_f_orig(f_dir, str(base), 16, progress=False)
    record = json.loads((f_dir / "stage.json").read_text())
    assert record["done"] is True and set(record["inputs"]) == {"base_model", "train_config", "train", "dev"}
    first = _stamp(f_dir)
    capsys.readouterr()

    assert not fine_tune_f_orig(f_dir, str(base), 16, progress=False)  # same inputs: reused as it is
    assert _stamp(f_dir) == first and "fine-tuning" not in capsys.readouterr().out

    assert fine_tune_f_orig(f_dir, str(base), 24, progress=False)  # --train-limit changed
    out = capsys.readouterr().out
    assert "was made from other inputs (changed: train, train_config); fine-tuning it again" in out
    assert json.loads((f_dir / "stage.json").read_text())["inputs"]["train_config"]["train_limit"] == 24

    tiny_classifier(seed=1, layers=1).save(base)  # another base model at the same path
    assert fine_tune_f_orig(f_dir, str(base), 24, progress=False)
    assert "(changed: base_model)" in capsys.readouterr().out

    (f_dir / "stage.json").unlink()  # as written before the demo recorded its inputs
    assert fine_tune_f_orig(f_dir, str(base), 24, progress=False)
    assert "(no record of its inputs)" in capsys.readouterr().out


def test_audit_cache_follows_the_model_weights_and_n(tmp_path, monkeypatch, capsys):
    calls = []

    class Report:
        def __init__(self, n):
            self.n = n

        def to_dict(self):
            return {"verdict": "trustworthy", "n": self.n, "run": len(calls)}

    def fake_audit(model, texts, progress=None):
        calls.append(len(texts))
        return Report(len(texts))

    monkeypatch.setattr(importlib.import_module("unmask.audit"), "audit", fake_audit)  # the module, not unmask.audit()
    model_dir = tiny_classifier(seed=0, layers=1).save(tmp_path / "m")
    cache = tmp_path / "audit"
    first = cached_audit(model_dir, cache, 3, progress=False)
    assert cached_audit(model_dir, cache, 3, progress=False) == first and calls == [3]
    assert cached_audit(model_dir, cache, 4, progress=False)["n"] == 4 and calls == [3, 4]
    tiny_classifier(seed=1, layers=1).save(model_dir)  # retrained model, same directory
    again = cached_audit(model_dir, cache, 3, progress=False)
    assert calls == [3, 4, 3] and again != first
    assert len(list(cache.glob("*.json"))) == 3


def test_audit_cache_needs_a_saved_model(tmp_path):
    from unmask.errors import UnmaskError

    with pytest.raises(UnmaskError, match="no saved model to fingerprint"):
        cached_audit(tmp_path / "missing", tmp_path / "audit", 3, progress=False)


def test_f_orig_is_the_same_whichever_process_fine_tunes_it(tmp_path):
    """The demo fine-tunes in a fresh process (unmask.isolate); the new classifier head must not depend on
    that process's unseeded RNG: two spawned fine-tunes and an in-process one give identical weights."""
    import hashlib

    import torch

    from unmask.isolate import run_isolated

    from safetensors.torch import load_file, save_file

    base = tiny_classifier(seed=0, layers=1).save(tmp_path / "base")
    weights = base / "model.safetensors"  # an encoder without a classifier head, as the bundled MiniLM
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}, weights,
              metadata={"format": "pt"})
    digests = []
    for i, isolated in enumerate((True, True, False)):
        f_dir = tmp_path / f"f{i}"
        if isolated:
            run_isolated(fine_tune_f_orig, f_dir, str(base), 16, False)
        else:
            torch.manual_seed(1234)  # whatever state the caller's RNG is in
            fine_tune_f_orig(f_dir, str(base), 16, progress=False)
        digests.append(hashlib.sha256((f_dir / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1] == digests[2]
