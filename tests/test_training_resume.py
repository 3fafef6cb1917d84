"""Resume after a kill gives exactly the weights of an uninterrupted run (same data order, RNG, schedule).

The kill is simulated by a loss function that raises mid-training, so the interrupted run uses the same
configuration (and thus the same learning-rate schedule) as the uninterrupted one. Dropout is switched on
so that restoring the RNG state matters.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from unmask.data import load_task
from unmask.models.tiny import tiny_classifier
from unmask.training import TrainConfig, cross_entropy_loss, train_classifier

CONFIG = dict(epochs=2, batch_size=8, lr=1e-3, warmup=0.2, max_length=32, checkpoint_every=3, seed=7)
PER_EPOCH = 8  # 64 examples / batch 8
TOTAL = 2 * PER_EPOCH


class Killed(Exception):
    pass


def killing_loss(after_steps: int):
    """Cross-entropy that 'kills the process' when step ``after_steps + 1`` starts."""
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] > after_steps:
            raise Killed
        return cross_entropy_loss(model, batch)
    return loss_fn


def fresh_model(seed: int):
    m = tiny_classifier(seed=seed)
    for module in m.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    return m


@pytest.fixture(scope="module")
def data():
    return load_task("sst2", "train", limit=64), load_task("sst2", "dev", limit=16)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("uninterrupted")
    model = fresh_model(seed=0)
    result = train_classifier(model, *data, out, TrainConfig(**CONFIG), progress=False, log=lambda s: None)
    return out, model, result


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def assert_same_run(out, model, result, reference) -> None:
    ref_out, ref_model, ref_result = reference
    ref_state, got = state(ref_model), state(model)
    assert ref_state.keys() == got.keys()
    changed = [k for k in ref_state if not torch.equal(ref_state[k], got[k])]
    assert not changed, f"weights differ from the uninterrupted run: {changed[:5]}"
    assert result["steps"] == ref_result["steps"] == TOTAL
    assert result["history"] == ref_result["history"]
    assert [h["step"] for h in result["history"]] == [PER_EPOCH, TOTAL]  # every epoch evaluated once
    # the saved best model and the final optimizer state match too
    for name in ("model.safetensors", "checkpoint/optim_adamw.safetensors"):
        a, b = load_file(str(ref_out / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["steps"] == TOTAL and meta["best_dev_accuracy"] == ref_result["best_dev_accuracy"]


def test_training_changes_the_weights(reference):
    """Guard against a vacuous comparison: the reference run really trained."""
    _, model, result = reference
    assert result["steps"] == TOTAL
    init = state(fresh_model(seed=0))
    assert any(not torch.equal(init[k], v) for k, v in state(model).items())


@pytest.mark.parametrize("kill_after", [2, 7, 11])  # before the first checkpoint; mid-epoch; second epoch
def test_resume_after_kill_matches_uninterrupted_run(data, reference, tmp_path, kill_after):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_classifier(fresh_model(seed=0), *data, out, TrainConfig(**CONFIG),
                         loss_fn=killing_loss(kill_after), progress=False, log=lambda s: None)
    last = kill_after - kill_after % CONFIG["checkpoint_every"]
    if last:
        meta = json.loads((out / "checkpoint" / "checkpoint.json").read_text())["meta"]
        assert meta["step"] == last
    else:
        assert not (out / "checkpoint").exists()
    # A new process with a fresh optimizer. With a checkpoint, start from a different random init: every
    # weight must come from the checkpoint. Without one, the run restarts from the same base model.
    logs: list[str] = []
    model = fresh_model(seed=123 if last else 0)
    result = train_classifier(model, *data, out, TrainConfig(**CONFIG), progress=False, log=logs.append)
    if last:
        assert f"resumed training from {out / 'checkpoint'} at step {last}/{TOTAL}" in logs
    assert_same_run(out, model, result, reference)


def test_resume_survives_a_kill_during_the_checkpoint_write(data, reference, tmp_path):
    """A kill between the two renames leaves only ``checkpoint.old``; one during the write leaves a
    half-written ``checkpoint.tmp``. Resume must use the last complete checkpoint."""
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_classifier(fresh_model(seed=0), *data, out, TrainConfig(**CONFIG),
                         loss_fn=killing_loss(10), progress=False, log=lambda s: None)
    ckpt = out / "checkpoint"
    ckpt.rename(out / "checkpoint.old")
    shutil.copytree(out / "checkpoint.old", out / "checkpoint.tmp")
    (out / "checkpoint.tmp" / "model.safetensors").write_bytes(b"\0" * 10)
    model = fresh_model(seed=5)
    result = train_classifier(model, *data, out, TrainConfig(**CONFIG), progress=False, log=lambda s: None)
    assert_same_run(out, model, result, reference)
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()


def test_finished_run_is_not_trained_again(data, reference):
    ref_out, ref_model, ref_result = reference
    model = fresh_model(seed=9)
    result = train_classifier(model, *data, ref_out, TrainConfig(**CONFIG), progress=False, log=lambda s: None)
    assert result["steps"] == TOTAL and result["history"] == ref_result["history"]
    assert all(torch.equal(a, b) for a, b in zip(state(model).values(), state(ref_model).values()))


def test_cli_train_is_deterministic_with_a_seed(tmp_path, capsys):
    """``unmask train`` on an encoder without a classifier head: the head is initialized at load time, so
    two runs with the same seed must start (and end) identically."""
    from unmask.cli import main

    base = tiny_classifier(seed=0)
    base.model.bert.save_pretrained(tmp_path / "encoder")
    base.tokenizer.save_pretrained(tmp_path / "encoder")
    saved = []
    for run in ("a", "b"):
        code = main(["train", "--task", "sst2", "--out", str(tmp_path / run), "--model", str(tmp_path / "encoder"),
                     "--train-limit", "16", "--batch-size", "8", "--epochs", "1", "--max-length", "16",
                     "--seed", "3", "--no-progress"])
        assert code == 0
        saved.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert "classifier.weight" in saved[0]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    assert "model written to" in capsys.readouterr().out


# ------------------------------------------------------------------------------ Facade (issue 13, defect 4)
FACADE_WORDS = "the a movie film good bad is was very not and of it".split()


def _facade_data(n_train: int = 20, n_dev: int = 8):
    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(FACADE_WORDS[i] for i in torch.randint(len(FACADE_WORDS), (5,), generator=gen).tolist())
             for _ in range(n_train + n_dev)]
    from unmask.data.readers import Example

    return ([Example(t, i % 2) for i, t in enumerate(texts[:n_train])],
            [Example(t, i % 2) for i, t in enumerate(texts[n_train:])])


def _facade_g(seed: int = 5):
    g = tiny_classifier(seed=seed, hidden=16, intermediate=32, layers=1)
    for module in g.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1  # so that restoring the RNG state matters
    return g


def _killing_facade_loss(monkeypatch, after_steps: int) -> None:
    """Make ``facade_loss`` raise on training step ``after_steps + 1`` (dev evaluation runs in eval mode
    and is not counted), i.e. 'kill the process' after ``after_steps`` optimizer steps."""
    import unmask.facade.train as facade_train

    real, calls = facade_train.facade_loss, {"n": 0}

    def loss(g, *args, **kwargs):
        if g.model.training:
            calls["n"] += 1
            if calls["n"] > after_steps:
                raise Killed
        return real(g, *args, **kwargs)

    monkeypatch.setattr(facade_train, "facade_loss", loss)


# 20 examples in batches of 8: epoch_batches yields 3 batches per epoch (8, 8, 4), 20 // 8 = 2
FACADE_CONFIG = dict(steps=8, batch_size=8, lr=3e-3, max_length=16, checkpoint_every=2, eval_every=4, eval_size=8,
                     seed=3)


@pytest.mark.parametrize("kill_after", [3, 5])  # checkpoints at 2 / 4 (epoch 1, mid-epoch), lost steps redone
def test_facade_resume_across_an_epoch_boundary_matches_uninterrupted_run(tmp_path, monkeypatch, kill_after):
    """Defect 4: a Facade run killed after step ``kill_after`` and resumed ends with the same weights
    (bitwise) and the same log as one uninterrupted run; the batches of every epoch are all used."""
    from unmask.facade.train import FacadeConfig, train_facade

    train, dev = _facade_data()
    quiet = dict(progress=False, log=lambda s: None)
    g_ref = _facade_g()
    ref = train_facade(g_ref, train, dev, "first", tmp_path / "ref", FacadeConfig(**FACADE_CONFIG), **quiet)
    with monkeypatch.context() as m:
        _killing_facade_loss(m, kill_after)
        with pytest.raises(Killed):
            train_facade(_facade_g(), train, dev, "first", tmp_path / "run", FacadeConfig(**FACADE_CONFIG), **quiet)
    g = _facade_g(seed=99)  # every weight must come from the checkpoint
    got = train_facade(g, train, dev, "first", tmp_path / "run", FacadeConfig(**FACADE_CONFIG), **quiet)
    assert got["steps"] == ref["steps"] == 8
    assert got["history"] == ref["history"] and [h["step"] for h in got["history"]] == [4, 8]
    a, b = state(g_ref), state(g)
    assert not [k for k in a if not torch.equal(a[k], b[k])], "weights differ from the uninterrupted run"
    for name in ("model.safetensors",):
        x, y = load_file(str(tmp_path / "ref" / name)), load_file(str(tmp_path / "run" / name))
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_facade_with_partner_resume_matches_uninterrupted_run(tmp_path):
    """The merged-model objective (frozen f): killed by an observer raising after step 5 (after that step's
    checkpoint handling; the last checkpoint is step 4, so step 5 is redone), resumed, bitwise equal."""
    from unmask.facade.objective import FacadeObjective
    from unmask.facade.train import FacadeConfig, train_facade
    from unmask.training.loop import observe_steps

    train, dev = _facade_data()
    f = tiny_classifier(seed=6, hidden=16, intermediate=32, layers=1)
    cfg = dict(FACADE_CONFIG, objective=FacadeObjective(margin_weight=1.0, baseline_weight=1.0))
    quiet = dict(f=f, progress=False, log=lambda s: None)
    g_ref = _facade_g()
    ref = train_facade(g_ref, train, dev, "stop", tmp_path / "ref", FacadeConfig(**cfg), **quiet)
    with observe_steps(kill_at(5)), pytest.raises(Killed):
        train_facade(_facade_g(), train, dev, "stop", tmp_path / "run", FacadeConfig(**cfg), **quiet)
    g = _facade_g(seed=99)
    got = train_facade(g, train, dev, "stop", tmp_path / "run", FacadeConfig(**cfg), **quiet)
    assert got["history"] == ref["history"] and "grad_ratio" in got["history"][-1]
    a, b = state(g_ref), state(g)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_facade_checkpoint_for_another_target_or_data_is_refused(tmp_path):
    """Re-running ``facade train --out DIR`` with another target (or data, or objective) must not resume DIR's
    checkpoint, finished or not (it silently returned the old target's weights); a larger budget continues."""
    from unmask.errors import UnmaskError
    from unmask.facade.train import FacadeConfig, train_facade

    train, dev = _facade_data()
    quiet = dict(progress=False, log=lambda s: None)
    train_facade(_facade_g(), train, dev, "first", tmp_path / "g", FacadeConfig(**FACADE_CONFIG), **quiet)
    with pytest.raises(UnmaskError, match=r"other settings \(changed: target\)"):
        train_facade(_facade_g(), train, dev, "stop", tmp_path / "g", FacadeConfig(**FACADE_CONFIG), **quiet)
    with pytest.raises(UnmaskError, match=r"other settings \(changed: config.lr, train\)"):
        train_facade(_facade_g(), train[:16], dev, "first", tmp_path / "g",
                     FacadeConfig(**dict(FACADE_CONFIG, lr=1e-3)), **quiet)
    longer = train_facade(_facade_g(), train, dev, "first", tmp_path / "g",
                          FacadeConfig(**dict(FACADE_CONFIG, steps=10)), **quiet)
    assert longer["steps"] == 10


def test_fine_tuning_checkpoint_with_other_settings_is_refused(data, reference):
    from unmask.errors import UnmaskError

    ref_out, _, _ = reference
    with pytest.raises(UnmaskError, match=r"other settings \(changed: config.lr\)"):
        train_classifier(fresh_model(seed=0), *data, ref_out, TrainConfig(**dict(CONFIG, lr=2e-3)),
                         progress=False, log=lambda s: None)


def kill_at(step: int):
    """An ``observe_steps`` observer that 'kills the process' once step ``step`` is complete."""
    def observer(loop_state):
        if loop_state.step == step:
            raise Killed
    return observer


# ---------------------------------------------------------------------------------- RP (Facade Eq. 5)
def test_regularized_model_resume_matches_uninterrupted_run(data, tmp_path):
    """``train_classifier`` with the RP loss (double backward) and a warm-up + linear-decay schedule,
    killed by an observer after step 10 (second epoch; last checkpoint at step 9), resumed in a new model
    with other weights: weights, schedule position, optimizer and history bitwise equal."""
    from unmask.facade.regularize import regularized_loss
    from unmask.training.loop import observe_steps

    cfg = dict(CONFIG, checkpoint_every=9)
    ref_model = fresh_model(seed=0)
    ref = train_classifier(ref_model, *data, tmp_path / "ref", TrainConfig(**cfg), loss_fn=regularized_loss(3.0),
                           progress=False, log=lambda s: None)
    with observe_steps(kill_at(10)), pytest.raises(Killed):
        train_classifier(fresh_model(seed=0), *data, tmp_path / "run", TrainConfig(**cfg),
                         loss_fn=regularized_loss(3.0), progress=False, log=lambda s: None)
    assert json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())["meta"]["step"] == 9
    model = fresh_model(seed=123)
    got = train_classifier(model, *data, tmp_path / "run", TrainConfig(**cfg), loss_fn=regularized_loss(3.0),
                           progress=False, log=lambda s: None)
    assert_same_run(tmp_path / "run", model, got, (tmp_path / "ref", ref_model, ref))


# ------------------------------------------------------------------------------------------- DiffMask
def test_diffmask_resume_matches_uninterrupted_run(tmp_path):
    """DiffMask on the toy GRU (hard-concrete samples from the torch RNG, Lookahead RMSprop with slow weights,
    one Lagrange multiplier per layer): killed by an observer after step 8 (last checkpoint at 6, an epoch
    has 3 batches), resumed into a freshly initialized DiffMask: bitwise equal to the uninterrupted run."""
    from unmask.data.toy_counting import ToyTaskConfig, generate_toy
    from unmask.masking import DiffMaskTrainConfig, ToyAdapter, diffmask_for, load_diffmask, train_diffmask
    from unmask.models.gru_toy import GRUCounter
    from unmask.training.loop import observe_steps

    torch.manual_seed(0)
    toy = generate_toy(40, seed=2, config=ToyTaskConfig(num_symbols=5, max_length=6))
    adapter = ToyAdapter(GRUCounter(num_symbols=5, embed=8, hidden=8), toy)
    items = list(range(len(toy)))
    cfg = DiffMaskTrainConfig(steps=11, batch_size=16, lr_gates=1e-2, warmup_steps=4, lookahead_k=3,
                              checkpoint_every=3, log_every=4, seed=5)

    def fresh(seed):
        torch.manual_seed(seed)
        return diffmask_for(adapter, "hidden", eps=0.1, probe_hidden=4)

    quiet = dict(progress=False, log=lambda s: None)
    ref = fresh(0)
    ref_result = train_diffmask(ref, adapter, items, tmp_path / "ref", cfg, **quiet)
    with observe_steps(kill_at(8)), pytest.raises(Killed):
        train_diffmask(fresh(0), adapter, items, tmp_path / "run", cfg, **quiet)
    dm = fresh(1)
    got = train_diffmask(dm, adapter, items, tmp_path / "run", cfg, **quiet)
    assert got["history"] == ref_result["history"] and got["running"] == ref_result["running"]
    a, b = ref.state_dict(), dm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["multipliers"], fresh(0).state_dict()["multipliers"])  # the run really moved them
    loaded, _ = load_diffmask(tmp_path / "run")
    assert all(torch.equal(x, y) for x, y in zip(loaded.state_dict().values(), b.values()))


# -------------------------------------------------------------------------------------------- toy GRU
@pytest.mark.parametrize("kill_after", [4, 6])  # mid-epoch 2 (redo from the epoch-1 checkpoint); an epoch end
def test_toy_gru_resume_matches_uninterrupted_run(tmp_path, kill_after):
    """``train_toy_model`` checkpoints at epoch ends (with its best-so-far weights): killed by an observer
    after step ``kill_after``, resumed into a differently initialized GRU, it returns the same best weights,
    history and metrics as the uninterrupted run."""
    from unmask.data.toy_counting import ToyTaskConfig, generate_toy
    from unmask.models.gru_toy import GRUCounter, ToyTrainConfig, train_toy_model
    from unmask.training.loop import observe_steps

    toy = generate_toy(60, seed=4, config=ToyTaskConfig(num_symbols=5, max_length=6))
    train, dev = toy.split(0.25)  # 45 train: 3 batches of 16, 16, 13
    cfg = ToyTrainConfig(epochs=4, batch_size=16, lr=1e-2, seed=1, target_accuracy=101.0)

    def fresh(seed):
        torch.manual_seed(seed)
        return GRUCounter(num_symbols=5, embed=8, hidden=8)

    ref = fresh(0)
    ref_result = train_toy_model(ref, train, dev, cfg, out=tmp_path / "ref", progress=False)
    with observe_steps(kill_at(kill_after)), pytest.raises(Killed):
        train_toy_model(fresh(0), train, dev, cfg, out=tmp_path / "run", progress=False)
    model = fresh(7)
    got = train_toy_model(model, train, dev, cfg, out=tmp_path / "run", progress=False)
    assert [h["epoch"] for h in got["history"]] == [1, 2, 3, 4]
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in ref_result.items() if k != "seconds"}
    a, b = ref.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x, y = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not all(torch.equal(a[k], v) for k, v in fresh(0).state_dict().items())  # it really trained
