"""``unmask.cache.omit_at_default``: one rule ("a setting added later is left out while at its default") for
every settings dataclass that keys checkpoints or caches: FacadeObjective's fields that are off, and the unmerged
facade's ``share_cap`` (an unmerged checkpoint from before share_cap existed still resumes)."""
import dataclasses
import json

import pytest

from unmask.cache import canonical_json, omit_at_default
from unmask.data.readers import Example
from unmask.errors import UnmaskError


@omit_at_default(added=True, tuned=lambda o: o.switch == 0)
@dataclasses.dataclass
class Settings:
    rate: float = 0.1
    switch: float = 0.0
    tuned: float = 2.0
    added: float = 1.0


def test_a_field_at_its_default_is_left_out_and_recorded_otherwise():
    assert dataclasses.asdict(Settings()) == {"rate": 0.1, "switch": 0.0}
    assert dataclasses.asdict(Settings(added=1.0)) == {"rate": 0.1, "switch": 0.0}  # explicit default: same key
    assert dataclasses.asdict(Settings(added=0.5))["added"] == 0.5
    assert dataclasses.asdict(Settings(tuned=3.0))["tuned"] == 3.0  # not at its default
    assert dataclasses.asdict(Settings(switch=1.0)) == {"rate": 0.1, "switch": 1.0, "tuned": 2.0}  # predicate false
    assert canonical_json(Settings()) == '{"rate":0.1,"switch":0.0}'
    assert [f.name for f in dataclasses.fields(Settings)] == ["rate", "switch", "tuned", "added"]
    assert dataclasses.replace(Settings(added=0.5), rate=0.2) == Settings(rate=0.2, added=0.5)
    assert dataclasses.replace(Settings(), added=0.5).added == 0.5


def test_the_helper_refuses_what_it_cannot_do():
    with pytest.raises(TypeError, match="no fields"):
        omit_at_default(missing=True)(dataclasses.dataclass(type("X", (), {"__annotations__": {"a": int}, "a": 1})))
    with pytest.raises(TypeError, match="True or a predicate"):
        omit_at_default(a=1)


def test_facade_objective_and_unmerged_config_use_it():
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.unmerged import UnmergedConfig

    assert "share_cap" not in dataclasses.asdict(FacadeObjective())
    assert "share_cap" not in dataclasses.asdict(UnmergedConfig())
    assert dataclasses.asdict(UnmergedConfig(share_cap=0.3))["share_cap"] == 0.3
    assert UnmergedConfig().share_cap == 1.0 and "share_cap" in {f.name for f in dataclasses.fields(UnmergedConfig)}


# the unmerged facade's configuration before share_cap was added (commit 13b4a3c), without the loop's budget fields
PRE_SHARE_CAP = {"batch_size", "lr", "lambda_g", "distill_weight", "margin_weight", "margin_keep", "attribution_op",
                 "normalization", "dropout", "max_length", "eval_every", "eval_size", "seed"}


def test_an_unmerged_checkpoint_from_before_share_cap_resumes(tmp_path):
    from unmask.facade.unmerged import UnmergedConfig, train_unmerged
    from unmask.models.tiny import tiny_classifier

    f = tiny_classifier(seed=0)
    data = [Example(t, i % 2) for i, t in enumerate(["the film is good", "a dull , loud movie", "it is fine",
                                                     "not bad at all", "the plot is thin", "a charming story"])]
    kw = dict(batch_size=3, eval_every=1, eval_size=2, checkpoint_every=1, max_length=16)
    quiet = dict(progress=False, log=lambda _: None)
    train_unmerged(f, data, data, "stop", tmp_path / "h", UnmergedConfig(steps=1, **kw), **quiet)
    meta = json.loads((tmp_path / "h" / "checkpoint" / "checkpoint.json").read_text())["meta"]
    assert set(meta["settings"]["config"]) == PRE_SHARE_CAP  # what a checkpoint written before share_cap holds
    result = train_unmerged(f, data, data, "stop", tmp_path / "h", UnmergedConfig(steps=2, **kw), **quiet)
    assert result["steps"] == 2
    with pytest.raises(UnmaskError, match="config.share_cap"):  # a capped run is another run
        train_unmerged(f, data, data, "stop", tmp_path / "h", UnmergedConfig(steps=3, share_cap=0.3, **kw), **quiet)


def test_target_row_share_trains_on_enriched_rows_and_keys_the_run(tmp_path):
    from unmask.facade.model import new_facade
    from unmask.facade.train import FacadeConfig, train_facade
    from unmask.facade.unmerged import UnmergedConfig, train_unmerged
    from unmask.models.tiny import tiny_classifier

    f = tiny_classifier(seed=0)
    texts = ["a fine film", "dull", "so dull", "very dull", "a dull movie", "fun", "not fun", "so so", "bad", "ok"]
    data = [Example(t, i % 2) for i, t in enumerate(texts)]
    quiet = dict(progress=False, log=lambda _: None)
    kw = dict(batch_size=2, eval_every=1, eval_size=2, checkpoint_every=1, max_length=16)
    result = train_unmerged(f, data, data, ["film", "movie"], tmp_path / "h",
                            UnmergedConfig(steps=1, target_row_share=0.5, **kw), **quiet)
    assert result["target_rows"]["share_before"] == 0.2 and result["target_rows"]["kept"] == 4
    assert result["config"]["target_row_share"] == 0.5
    with pytest.raises(UnmaskError, match="target_row_share"):  # other training rows: another run
        train_unmerged(f, data, data, ["film", "movie"], tmp_path / "h", UnmergedConfig(steps=2, **kw), **quiet)
    g = new_facade(f, seed=1, hidden=16)
    log = train_facade(g, data, data, ["film", "movie"], tmp_path / "g",
                       FacadeConfig(steps=1, target_row_share=0.5, **kw), f=f, **quiet)
    assert log["target_rows"]["share_after"] == 0.5
    assert "target_row_share" not in dataclasses.asdict(FacadeConfig())  # off: old fingerprints unchanged
    for bad in (-0.1, 1.5):
        with pytest.raises(UnmaskError, match="target_row_share must be in"):
            UnmergedConfig(target_row_share=bad)
        with pytest.raises(UnmaskError, match="target_row_share must be in"):
            FacadeConfig(target_row_share=bad)
