"""Caches keyed on their inputs: fingerprints (unmask.cache) and the Facade pipeline's stages and eval cache."""
import json
import os

import pytest

from unmask.cache import (data_fingerprint, file_stamp, inputs_fingerprint, model_fingerprint, settings_fingerprint,
                          stage_state, write_stage)
from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.models.tiny import tiny_classifier


# ----------------------------------------------------------------------------------- fingerprints
def test_settings_fingerprint_is_the_sha256_of_canonical_json():
    import hashlib
    from dataclasses import dataclass

    @dataclass
    class Config:
        steps: int = 3
        methods: tuple = ("a", "b")

    expected = hashlib.sha256(b'{"methods":["a","b"],"steps":3}').hexdigest()
    assert settings_fingerprint(Config()) == expected == settings_fingerprint({"steps": 3, "methods": ["a", "b"]})
    assert settings_fingerprint({"a": 1, "b": 2}) == settings_fingerprint({"b": 2, "a": 1})
    assert settings_fingerprint({"lr": 1e-4}) != settings_fingerprint({"lr": 2e-4})
    assert settings_fingerprint({"x": 1}) != settings_fingerprint({"x": 1.5})
    assert inputs_fingerprint(a="1", b=Config()) != inputs_fingerprint(a="1", b=Config(steps=4))
    with pytest.raises(TypeError, match="cannot fingerprint"):
        settings_fingerprint({"x": object()})


def test_data_fingerprint_sees_texts_pairs_labels_and_order():
    a = [Example("good film", 1), Example("bad", 0)]
    base = data_fingerprint(a)
    assert data_fingerprint([Example("good film", 1), Example("bad", 0)]) == base
    assert data_fingerprint([Example("good film", 1), Example("bad", 1)]) != base  # a label
    assert data_fingerprint(a[::-1]) != base  # order
    assert data_fingerprint([Example("good film", 1, "p"), Example("bad", 0, "p")]) != base  # pairs
    assert data_fingerprint(["good film", "bad"], [1, 0]) == base  # texts + labels give the same key
    with pytest.raises(UnmaskError, match="2 texts, 2 pairs, 1 labels"):
        data_fingerprint(["a", "b"], [1])


def test_model_fingerprint_follows_config_and_weights(tmp_path):
    d = tiny_classifier(seed=0).save(tmp_path / "m")
    fp = model_fingerprint(d)
    assert model_fingerprint(d) == fp  # untouched: the same
    weights = d / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert model_fingerprint(d) != fp  # rewritten weights (new mtime)
    assert file_stamp(weights) == f"{st.st_size}:{st.st_mtime_ns + 1_000_000_000}"
    fp2 = model_fingerprint(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_labels": 3}))
    assert model_fingerprint(d) != fp2  # config changed
    # same size and mtime, different bytes: only the content hash sees it
    content = model_fingerprint(d, content=True)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    st = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_fingerprint(d, content=True) != content
    with pytest.raises(UnmaskError, match="no saved model"):
        model_fingerprint(tmp_path / "nothing")


def test_stage_state(tmp_path):
    d = tmp_path / "stage"
    assert stage_state(d, "x") == "absent"
    d.mkdir()
    (d / "model.safetensors").write_text("old")
    assert stage_state(d, "x") == "stale"  # output without a record of its inputs
    write_stage(d, "x", {"a": 1}, done=False)
    assert stage_state(d, "x") == "partial" and stage_state(d, "y") == "stale"
    write_stage(d, "x", {"a": 1}, done=True)
    assert stage_state(d, "x") == "done"


# ----------------------------------------------------------------------------------- the Facade pipeline
def run_pipeline(tmp_path, lr: float = 1e-4):
    from unmask.facade.evaluate import EvalConfig
    from unmask.facade.pipeline import FacadePipeline, PipelineConfig
    from unmask.facade.train import FacadeConfig

    logs = []
    config = PipelineConfig(task="rte", f_orig=str(tmp_path / "f"), root=str(tmp_path / "facade"),
                            facade=FacadeConfig(steps=2, batch_size=4, eval_size=4, lr=lr), facade_hidden=16,
                            with_rp=False, targets=("ft",), eval_limit=5, train_limit=16,
                            evaluation=EvalConfig(ig_steps=2, methods=("gradient_x_input",)))
    results = FacadePipeline(config, log=logs.append, progress=False).run("test")
    return results, logs


def events(logs):
    """(action, model) for every stage that ran: trained, merged, evaluated."""
    out = []
    for line in logs:
        words = line.split()
        if words[1] in ("training", "merging", "evaluating"):
            out.append((words[1], words[2]))
    return out


def test_pipeline_stages_are_keyed_on_their_inputs(tmp_path):
    tiny_classifier(seed=5, hidden=16, heads=2).save(tmp_path / "f")
    first, logs = run_pipeline(tmp_path)
    assert events(logs) == [("training", "g_ft"), ("merging", "f_orig"), ("evaluating", "f_orig"),
                            ("evaluating", "g_ft"), ("evaluating", "merged_ft")]
    for stage in ("g_ft", "merged_ft"):
        record = json.loads((tmp_path / "facade" / stage / "stage.json").read_text())
        assert record["done"] is True and record["fingerprint"] == inputs_fingerprint(**record["inputs"])

    again, logs = run_pipeline(tmp_path)  # same inputs: every stage and evaluation is reused
    assert events(logs) == [] and again["saliency"] == first["saliency"]

    _, logs = run_pipeline(tmp_path, lr=3e-4)  # a training setting changed: g and everything after it
    assert "[facade] g_ft: " in logs[0] and "(changed: facade); rebuilding it" in logs[0]
    assert events(logs) == [("training", "g_ft"), ("merging", "f_orig"), ("evaluating", "g_ft"),
                            ("evaluating", "merged_ft")]
    assert any("merged_ft: " in line and "changed: g_ft" in line for line in logs)

    tiny_classifier(seed=6, hidden=16, heads=2).save(tmp_path / "f")  # the upstream model changed
    changed, logs = run_pipeline(tmp_path, lr=3e-4)
    assert events(logs) == [("training", "g_ft"), ("merging", "f_orig"), ("evaluating", "f_orig"),
                            ("evaluating", "g_ft"), ("evaluating", "merged_ft")]
    assert any("g_ft: " in line and "changed: f_orig" in line for line in logs)
    assert changed["accuracy"]["f_orig"] is not None


def test_a_stage_without_a_record_of_its_inputs_is_rebuilt(tmp_path):
    tiny_classifier(seed=5, hidden=16, heads=2).save(tmp_path / "f")
    run_pipeline(tmp_path)
    (tmp_path / "facade" / "g_ft" / "stage.json").unlink()  # as left by a version without fingerprints
    _, logs = run_pipeline(tmp_path)
    assert any("g_ft: " in line and "(no record of its inputs); rebuilding it" in line for line in logs)
    assert ("training", "g_ft") in events(logs)
