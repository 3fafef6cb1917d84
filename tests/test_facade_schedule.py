"""Facade training schedules: cosine learning-rate decay and a warm-up of the IG-baseline term."""
import dataclasses
import math

import pytest
import torch

from unmask.cache import settings_fingerprint
from unmask.data.readers import Example
from unmask.errors import UnmaskError
from unmask.facade.model import new_facade
from unmask.facade.objective import FacadeObjective
from unmask.facade.train import FacadeConfig, train_facade
from unmask.models.tiny import tiny_classifier

WORDS = "the a movie film good bad is was very not and of it".split()


def test_cosine_decays_from_lr_to_zero_over_the_steps():
    cfg = FacadeConfig(steps=100, lr=2e-4, lr_schedule="cosine")
    assert cfg.lr_at(0) == pytest.approx(2e-4)
    assert cfg.lr_at(50) == pytest.approx(1e-4)
    assert cfg.lr_at(25) == pytest.approx(1e-4 * (1 + math.cos(math.pi / 4)))
    assert cfg.lr_at(100) == pytest.approx(0.0, abs=1e-15)
    assert cfg.lr_at(130) == pytest.approx(0.0, abs=1e-15)  # never negative past the budget
    assert FacadeConfig(steps=100, lr=2e-4).lr_at(99) == 2e-4


def test_baseline_warmup_ramps_the_weight_linearly():
    cfg = FacadeConfig(objective=FacadeObjective(baseline_weight=1e5), baseline_warmup=40)
    assert cfg.objective_at(0).baseline_weight == 0.0
    assert cfg.objective_at(10).baseline_weight == pytest.approx(2.5e4)
    assert cfg.objective_at(40) is cfg.objective
    assert cfg.objective_at(10).lambda_g == cfg.objective.lambda_g  # nothing else changes
    assert FacadeConfig(objective=FacadeObjective(baseline_weight=1e5)).objective_at(0).baseline_weight == 1e5


def test_bad_schedule_settings_name_the_problem():
    with pytest.raises(UnmaskError, match="lr schedule 'linear'"):
        FacadeConfig(lr_schedule="linear")
    with pytest.raises(UnmaskError, match="baseline_warmup"):
        FacadeConfig(baseline_warmup=-1)


def test_defaults_keep_earlier_fingerprints_and_used_settings_are_recorded():
    plain = dataclasses.asdict(FacadeConfig())
    assert "lr_schedule" not in plain and "baseline_warmup" not in plain
    used = dataclasses.asdict(FacadeConfig(lr_schedule="cosine", baseline_warmup=5))
    assert used["lr_schedule"] == "cosine" and used["baseline_warmup"] == 5
    assert settings_fingerprint(used) != settings_fingerprint(plain)


def test_training_follows_the_schedule(tmp_path, monkeypatch):
    """The optimizer sees the cosine learning rate and the loss the ramped baseline weight, step by step."""
    import unmask.facade.train as train_module

    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (5,), generator=gen).tolist()) for _ in range(24)]
    data = [Example(t, int("good" in t.split())) for t in texts]
    f = tiny_classifier(seed=1)
    g = new_facade(f, seed=0, hidden=16, intermediate=32, head_size=8)
    seen: list[float] = []
    real = train_module.batch_backward

    def spy(g_, f_, tr, index, targets, objective, rows):
        seen.append(objective.baseline_weight)
        return real(g_, f_, tr, index, targets, objective, rows)

    monkeypatch.setattr(train_module, "batch_backward", spy)
    lrs: list[float] = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    cfg = FacadeConfig(steps=4, batch_size=8, lr=1e-3, eval_every=4, eval_size=8, checkpoint_every=4,
                       objective=FacadeObjective(baseline_weight=100.0), lr_schedule="cosine", baseline_warmup=2)
    train_facade(g, data[:16], data[16:], "stop", tmp_path / "g", cfg, f=f, progress=False, log=lambda s: None)
    assert lrs == pytest.approx([cfg.lr_at(s) for s in range(4)])
    assert seen == pytest.approx([0.0, 50.0, 100.0, 100.0])


def test_override_config_sets_config_and_objective_fields_with_their_types():
    from unmask.facade.train import override_config

    base = FacadeConfig(steps=500, batch_size=32, objective=FacadeObjective(lambda_g=2e3, baseline_weight=1e5))
    cfg = override_config(base, "steps=400, batch-size=16,baseline_warmup=1e2,path_weight=100,lr_schedule=cosine")
    assert (cfg.steps, cfg.batch_size, cfg.baseline_warmup, cfg.lr_schedule) == (400, 16, 100, "cosine")
    assert isinstance(cfg.steps, int) and cfg.objective.path_weight == 100.0
    assert cfg.objective.lambda_g == 2e3 and cfg.objective.baseline_weight == 1e5  # untouched fields kept
    assert base.steps == 500 and base.objective.path_weight == 0.0  # the shared config is not modified
    assert override_config(base, "") == base


@pytest.mark.parametrize("text, message", [
    ("stpes=4", "unknown facade setting 'stpes'"),
    ("steps", "write KEY=VALUE"),
    ("steps=1.5", "expected a int"),
    ("lambda_g=big", "expected a float"),
    ("lr_schedule=linear", "unknown lr schedule"),
])
def test_override_config_rejects_bad_settings_by_name(text, message):
    from unmask.facade.train import override_config

    with pytest.raises(UnmaskError, match=message):
        override_config(FacadeConfig(), text)


def test_pipeline_trains_each_target_with_its_own_settings(tmp_path):
    import json

    from unmask.facade.evaluate import EvalConfig
    from unmask.facade.pipeline import FacadePipeline, PipelineConfig

    f = tiny_classifier(seed=3)
    f.save(tmp_path / "f")
    shared = FacadeConfig(steps=2, batch_size=4, eval_size=4, eval_every=1)
    own = dataclasses.replace(shared, steps=3, objective=FacadeObjective(path_weight=5.0))
    config = PipelineConfig(task="sst2", f_orig=str(tmp_path / "f"), root=str(tmp_path / "facade"), facade=shared,
                            target_facades={"ft": own}, facade_hidden=16, with_rp=False, eval_limit=4,
                            train_limit=16, evaluation=EvalConfig(ig_steps=2, smoothgrad_samples=2,
                                                                  methods=("gradient_x_input",)))
    results = FacadePipeline(config, log=lambda line: None, progress=False).run("test")
    logs = {key: json.loads((tmp_path / "facade" / f"g_{key}" / "facade.json").read_text()) for key in ("ft", "stop")}
    assert logs["ft"]["config"]["steps"] == 3 and logs["ft"]["config"]["objective"]["path_weight"] == 5.0
    assert logs["stop"]["config"]["steps"] == 2 and "path_weight" not in logs["stop"]["config"]["objective"]
    assert results["config"]["target_facades"]["ft"]["steps"] == 3
    with pytest.raises(UnmaskError, match="unknown target keys"):
        PipelineConfig(target_facades={"first": own})
    against_rp = dataclasses.replace(own, steps=7)
    config = PipelineConfig(facade=shared, target_facades={"ft": own, "ft_rp": against_rp})
    assert config.facade_for("ft") is own and config.facade_for("ft", "rp") is against_rp
    assert config.facade_for("stop", "rp") is shared and config.facade_for("stop") is shared
