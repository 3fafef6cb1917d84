"""The shared training loop (unmask.training.loop) on a tiny regression model: batch order, budget,
evaluation / checkpoint schedule, exact resume at every kill point, early stopping, clipping, errors.

Kills are simulated by an ``observe_steps`` observer that raises once step k is complete (after that step's
checkpoint handling), which is what a kill between two steps leaves behind; steps after the last
checkpoint are lost and redone by the resumed run.
"""
import json

import pytest
import torch

from unmask.errors import UnmaskError
from unmask.training.batches import epoch_batches, shuffled_batches
from unmask.training.checkpoint import save_checkpoint
from unmask.training.loop import LoopState, TensorStore, TrainingLoop, observe_steps, steps_for

N, BATCH = 10, 4  # 3 batches per epoch: 4, 4, 2
X = torch.linspace(-1, 1, N * 3).reshape(N, 3)
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3


class Killed(Exception):
    pass


def kill_at(step: int):
    def observer(state: LoopState) -> None:
        if state.step == step:
            raise Killed
    return observer


class Run:
    """A loop over a dropout-regularized linear model with SGD + momentum and a step schedule."""

    def __init__(self, out, seed_init: int = 0, max_steps: int = 8, **loop_kwargs) -> None:
        torch.manual_seed(seed_init)
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(3, 1))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.seen: list[tuple[int, list[int]]] = []  # (step, batch) as the loss saw them
        self.evaluated: list[int] = []
        kwargs = dict(checkpoint_dir=out / "checkpoint", checkpoint_every=2, eval_every=3, eval_at_epoch_end=False,
                      progress=False, log=lambda s: None, seed=11) | loop_kwargs
        self.loop = TrainingLoop(batches=lambda epoch: shuffled_batches(N, BATCH, 5, epoch), loss=self.loss,
                                 optimizers={"sgd": self.opt}, schedulers={"step": self.sched},
                                 modules={"model": self.model}, max_steps=max_steps, evaluate=self.evaluate,
                                 after_update=lambda state, stats: state.ema("loss", stats["loss"], 0.9),
                                 **kwargs)

    def loss(self, index, state):
        self.seen.append((state.step, list(index)))
        self.model.train()
        pred = self.model(X[index])[:, 0]
        return ((pred - Y[index]) ** 2).mean(), {"n": float(len(index))}

    def evaluate(self, state):
        self.evaluated.append(state.step)
        with torch.no_grad():
            self.model.eval()
            state.history.append({"step": state.step, "mse": float(((self.model(X)[:, 0] - Y) ** 2).mean())})

    def weights(self):
        return {k: v.clone() for k, v in self.model.state_dict().items()}


def test_every_epoch_uses_all_its_batches_in_the_order_of_seed_and_epoch(tmp_path):
    run = Run(tmp_path, max_steps=8)
    state = run.loop.run()
    expected = [b for e in range(3) for b in shuffled_batches(N, BATCH, 5, e)][:8]
    assert [b for _, b in run.seen] == expected
    assert [s for s, _ in run.seen] == list(range(8))
    assert (state.step, state.epoch, state.offset) == (8, 2, 2)  # next: batch 2 of epoch 2
    assert sorted(i for _, b in run.seen[:3] for i in b) == list(range(N))  # one epoch = every example once


def test_batch_orders_depend_only_on_seed_and_epoch():
    assert shuffled_batches(N, BATCH, 5, 2) == shuffled_batches(N, BATCH, 5, 2)
    assert shuffled_batches(N, BATCH, 5, 2) != shuffled_batches(N, BATCH, 5, 3)
    lengths = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    a = epoch_batches(lengths, 4, 0, 1)
    torch.manual_seed(123)  # global RNG state must not matter
    assert epoch_batches(lengths, 4, 0, 1) == a and sorted(i for b in a for i in b) == list(range(11))


def test_eval_and_checkpoint_schedule(tmp_path):
    run = Run(tmp_path, max_steps=7, eval_every=None, eval_at_epoch_end=True, checkpoint_every=5,
              checkpoint_at_epoch_end=True)
    saved = []
    with observe_steps(lambda s: saved.append(json.loads((tmp_path / "checkpoint" / "checkpoint.json")
                                                         .read_text())["meta"]["step"])
                       if (tmp_path / "checkpoint").exists() else None):
        run.loop.run()
    assert run.evaluated == [3, 6, 7]  # epoch ends and the end of the budget
    assert sorted(set(saved)) == [3, 5, 6, 7]  # epoch ends, every 5, the end


@pytest.mark.parametrize("kill_after", range(1, 8))
def test_resume_after_a_kill_at_any_step_is_bitwise_equal(tmp_path, kill_after):
    ref = Run(tmp_path / "ref")
    ref_state = ref.loop.run()
    with observe_steps(kill_at(kill_after)), pytest.raises(Killed):
        Run(tmp_path / "run").loop.run()
    last = kill_after - kill_after % 2  # the last checkpoint (every 2 steps)
    # With a checkpoint, other initial weights: every weight must come from it. Without, a restart.
    run = Run(tmp_path / "run", seed_init=99 if last else 0)
    logs = []
    run.loop.log = logs.append
    state = run.loop.run()
    if last:
        assert logs == [f"resumed training from {tmp_path / 'run' / 'checkpoint'} at step {last}/8"]
        assert run.seen[0][0] == last  # lost steps are redone, no others
    a, b = ref.weights(), run.weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert state.meta() == ref_state.meta()
    assert run.sched.state_dict() == ref.sched.state_dict()
    assert run.opt.param_groups[0]["lr"] == ref.opt.param_groups[0]["lr"] == 0.1 * 0.5 ** 2
    assert run.seen == ref.seen[len(ref.seen) - len(run.seen):]


def test_a_finished_run_is_not_trained_again_and_a_larger_budget_continues(tmp_path):
    ref = Run(tmp_path / "ref", max_steps=8)
    ref.loop.run()
    Run(tmp_path / "run", max_steps=5).loop.run()
    again = Run(tmp_path / "run", seed_init=3, max_steps=5)
    assert again.loop.run().step == 5 and again.seen == []
    longer = Run(tmp_path / "run", seed_init=3, max_steps=8)
    longer.loop.run()
    assert [s for s, _ in longer.seen] == [5, 6, 7]
    # the StepLR schedule has no budget in it, so 5 + 3 steps equal 8 straight steps
    assert all(torch.equal(a, b) for a, b in zip(ref.weights().values(), longer.weights().values()))


def test_early_stop_is_kept_by_a_resumed_run(tmp_path):
    def stop_at_4(state):
        if state.step == 4:
            state.stop()

    first = Run(tmp_path, max_steps=20, eval_every=None)
    first.loop.after_update = lambda state, stats: stop_at_4(state)
    state = first.loop.run()
    assert state.step == 4 and state.stopped and first.evaluated == [4]  # evaluated when it stopped
    again = Run(tmp_path, max_steps=20)
    assert again.loop.run().step == 4 and again.seen == []


def test_checkpoint_from_before_the_shared_loop_resumes_at_the_right_batch(tmp_path):
    """Old checkpoints stored only the step (and trainer keys): the epoch position is recomputed."""
    ref = Run(tmp_path / "ref")
    ref.loop.run()
    with observe_steps(kill_at(4)), pytest.raises(Killed):
        Run(tmp_path / "run").loop.run()
    d = tmp_path / "run" / "checkpoint"
    sidecar = json.loads((d / "checkpoint.json").read_text())
    meta = sidecar["meta"]
    sidecar["meta"] = {"step": meta["step"], "history": meta["history"], "best": 1.5}  # no epoch / offset / sched
    (d / "checkpoint.json").write_text(json.dumps(sidecar))
    run = Run(tmp_path / "run", seed_init=5)
    state = run.loop.run()
    assert run.seen[0] == ref.seen[4]  # step 4 = epoch 1, batch 1
    assert state.extra == {"best": 1.5}
    assert run.sched.state_dict()["last_epoch"] == ref.sched.state_dict()["last_epoch"] == 8  # schedule replayed


def test_gradient_clipping_and_update_order(tmp_path):
    """One SGD step (lr 1, no momentum) with clip_norm 0.5: the update is the gradient scaled to norm 0.5."""
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    order = []
    loop = TrainingLoop(batches=lambda e: [[0]], loss=lambda b, s: ((w * w).sum() / 2, {}),
                        optimizers={"sgd": opt}, modules={}, max_steps=1, clip_params=[w], clip_norm=0.5,
                        before_update=lambda s: order.append(w.grad.clone()), progress=False)
    loop.run()
    assert torch.equal(order[0], torch.tensor([3.0, 4.0]))  # before_update sees the raw gradient
    assert torch.allclose(w.detach(), torch.tensor([3.0 - 0.3, 4.0 - 0.4]))


def test_tensor_store_round_trips_through_a_checkpoint(tmp_path):
    store = TensorStore()
    store.set({"a.weight": torch.arange(3.0), "b": torch.ones(2, 2)})
    save_checkpoint(tmp_path / "c", {"best": store}, {}, {"step": 0})
    from unmask.training.checkpoint import load_checkpoint

    back = TensorStore()
    load_checkpoint(tmp_path / "c", {"best": back}, {})
    assert back.get().keys() == {"a.weight", "b"} and torch.equal(back.get()["a.weight"], torch.arange(3.0))


def test_steps_for_epochs():
    assert steps_for(2.5, 4) == 10 and steps_for(0.01, 4) == 1
    with pytest.raises(UnmaskError, match="epochs"):
        steps_for(0, 4)


def test_bad_loop_settings_are_clear_errors(tmp_path):
    with pytest.raises(UnmaskError, match="max_steps"):
        Run(tmp_path, max_steps=0)
    with pytest.raises(UnmaskError, match="checkpoint_every"):
        Run(tmp_path, checkpoint_every=0)
    run = Run(tmp_path)
    run.loop.batches = lambda epoch: []
    with pytest.raises(UnmaskError, match="no batches"):
        run.loop.run()
    run = Run(tmp_path / "nan")
    run.loop.loss = lambda b, s: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(UnmaskError, match="loss is nan at step 1"):
        run.loop.run()


def test_each_epoch_order_is_computed_once(tmp_path):
    run = Run(tmp_path, max_steps=8)
    calls = []
    batches = run.loop.batches
    run.loop.batches = lambda epoch: calls.append(epoch) or batches(epoch)
    run.loop.run()
    assert calls == [0, 1, 2]


def test_a_checkpoint_for_other_data_is_a_clear_error(tmp_path):
    with observe_steps(kill_at(2)), pytest.raises(Killed):
        Run(tmp_path).loop.run()
    run = Run(tmp_path)
    run.loop.batches = lambda epoch: [[0, 1]]  # one batch per epoch: batch 2 of epoch 0 does not exist
    with pytest.raises(UnmaskError, match="other data"):
        run.loop.run()


def test_a_checkpoint_written_with_other_settings_is_refused_before_anything_is_restored(tmp_path):
    """Issue 13 defect 5: a checkpoint is keyed on the run's settings (not its budget)."""
    from dataclasses import dataclass

    from unmask.training.loop import run_settings

    @dataclass
    class Config:
        lr: float = 0.1
        target: str = "first"
        steps: int = 8
        checkpoint_every: int = 2

    settings = run_settings(Config(), data="abc")
    assert settings == {"config": {"lr": 0.1, "target": "first"}, "data": "abc"}  # no budget, no cadence
    assert run_settings(Config(steps=100, checkpoint_every=7), data="abc") == settings
    ref = Run(tmp_path / "ref", settings=settings)
    ref.loop.run()
    with observe_steps(kill_at(4)), pytest.raises(Killed):
        Run(tmp_path / "run", settings=settings).loop.run()
    saved = json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())["meta"]["settings"]
    assert saved == settings
    for changed, names in ((run_settings(Config(lr=0.2), data="abc"), "config.lr"),
                           (run_settings(Config(target="stop"), data="xyz"), "config.target, data")):
        other = Run(tmp_path / "run", seed_init=5, settings=changed)
        before = other.weights()
        with pytest.raises(UnmaskError, match=f"written with other settings \\(changed: {names}\\)"):
            other.loop.run()
        assert all(torch.equal(before[k], v) for k, v in other.weights().items())  # nothing restored
    same = Run(tmp_path / "run", seed_init=5, settings=run_settings(Config(steps=8), data="abc"))
    same.loop.run()
    assert all(torch.equal(a, b) for a, b in zip(ref.weights().values(), same.weights().values()))
    # checkpoints written without settings (before they were recorded) still resume
    with observe_steps(kill_at(4)), pytest.raises(Killed):
        Run(tmp_path / "old").loop.run()
    old = Run(tmp_path / "old", seed_init=5, settings=settings)
    old.loop.run()
    assert all(torch.equal(a, b) for a, b in zip(ref.weights().values(), old.weights().values()))
