"""Issue 14 diagnostics: input-gate DiffMask on the toy GRU with one lever changed, several DiffMask seeds.

Prints, per seed, KL(ground truth || keep probabilities) per layer on the dev set, the training objective's
parts on 2000 training examples and the symbols whose non-query positions stay open. Levers (monkeypatched
here, not library options): --dm / --cfg (DiffMask / DiffMaskTrainConfig keyword arguments as JSON),
--bound G (location G * tanh(MLP + c)), --logl0 (log of the expected L0 as the penalty, as in the authors'
released code), --nox (vote probes of layers >= 1 do not read the input embedding), --tangent-vote0 (the
tangent-continued L0 of ``l0_bound`` on vote 0 too; the library keeps vote 0's L0 exact), --init0 B (vote 0's
location starts at B instead of init_bias), --track N (print the
vote-0 and vote-1 locations per symbol every N steps), --mode hidden (hidden-state gates on layers 1, 2 as
experiments/diffmask_toy.py trains them; --steps 8000 there). --tag names the scratch directories
runs/dm67/TAG_sSEED; training resumes from a checkpoint there, so give each setting its own tag. Example, run from the repository root after
experiments/diffmask_toy.py --out runs/dm67/toy:

    python experiments/diffmask_toy_levers.py --seeds 0 1 2 --cfg '{"lr_multipliers": 0.1}'
"""
import argparse, json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, "experiments")
from diffmask_toy import divergences
from unmask.data.toy_counting import generate_toy
from unmask.models.gru_toy import load_toy_model
from unmask.masking import (DiffMaskTrainConfig, ToyAdapter, diffmask_for, evaluate_diffmask,
                            keep_probabilities, train_diffmask)

p = argparse.ArgumentParser()
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
p.add_argument("--steps", type=int, default=10000)
p.add_argument("--track", type=int, default=0)
p.add_argument("--tag", default="base")
p.add_argument("--gru", default="runs/dm67/toy/gru")
p.add_argument("--dm", default="{}")  # json kwargs for diffmask_for
p.add_argument("--cfg", default="{}")  # json kwargs for DiffMaskTrainConfig
p.add_argument("--bound", type=float, default=None)
p.add_argument("--logl0", action="store_true")
p.add_argument("--nox", action="store_true")
p.add_argument("--tangent-vote0", action="store_true")
p.add_argument("--init0", type=float, default=None)
p.add_argument("--mode", choices=["input", "hidden"], default="input")
a = p.parse_args()
if a.nox:
    import unmask.masking.probes as P
    def layer(self, hidden, k, inputs=None):
        x = torch.cat([inputs if k == 0 else torch.zeros_like(inputs), hidden[k]], -1) if self.with_input else hidden[k]
        return self.probes[k](x)
    P.LayerProbes.layer = layer
if a.tangent_vote0:
    import unmask.masking.diffmask as D
    def penalty_keep(self, states, layer):
        votes = self.distribution(states, layer).expected_l0_tangent(self.l0_bound)
        return votes.prod(-1) * states.mask.to(votes.dtype)
    D.DiffMask.penalty_keep = penalty_keep
if a.logl0:
    import unmask.masking.diffmask as D
    def lagr(self, adapter, batch, states, layer):
        gates = self.sample_gates(states, layer)
        logits = self.masked_logits(adapter, batch, states, layer, gates)
        kl = D.kl_divergence(states.logits, logits).mean()
        mask = states.mask.to(gates.dtype)
        lk = self.distribution(states, layer).log_expected_l0().sum(-1)
        l0 = ((lk * mask).sum(1) / mask.sum(1)).mean()
        loss = l0 + self.multipliers[layer] * (kl - self.eps)
        kept = (((gates > 0).to(mask.dtype) * mask).sum(1) / mask.sum(1)).mean()
        return {"loss": loss, "kl": kl.detach(), "l0": l0.detach().exp(), "sampled_kept": kept.detach()}
    D.DiffMask.lagrangian = lagr
if a.bound:
    import math
    import unmask.masking.probes as P
    def fwd(self, x):
        return a.bound * torch.tanh(self.mlp(x).squeeze(-1) + self.bias)
    P.Probe.forward = fwd
    _init = P.Probe.__init__
    def init(self, *args, **kw):
        _init(self, *args, **kw)
        with torch.no_grad():
            self.bias.fill_(math.atanh(float(self.bias) / a.bound))
    P.Probe.__init__ = init
data = generate_toy(10000, seed=0); train, dev = data.split(0.1)
model, _, _ = load_toy_model(Path(a.gru)); model.eval()
for prm in model.parameters(): prm.requires_grad_(False)
tr, dv = ToyAdapter(model, train), ToyAdapter(model, dev)
rel = dev.relevant() & dev.mask; oth = dev.mask & ~rel
rows = []
for seed in a.seeds:
    torch.manual_seed(seed)
    dm = diffmask_for(tr, a.mode, eps=0.1, **json.loads(a.dm))
    if a.init0 is not None:
        with torch.no_grad():
            dm.probes.probes[0].bias.fill_(a.init0)
    hidden = a.mode == "hidden"  # as experiments/diffmask_toy.py trains them: layers 1, 2, baseline lr = gate lr
    cfg = DiffMaskTrainConfig(**{**dict(steps=a.steps, batch_size=64, lr_gates=1e-3,
                                        lr_baselines=None if hidden else 2e-2, layers=[1, 2] if hidden else None,
                                        checkpoint_every=100000, log_every=500, seed=seed), **json.loads(a.cfg)})
    if a.track:
        orig, count = dm.lagrangian, [0]
        st = dv.states(dev)
        def lag(*args, **kw):
            if count[0] % a.track == 0:
                with torch.no_grad():
                    for v in (0, 1):
                        lg = dm.probes.layer(st.hidden, v, st.inputs)
                        print(f"  step {count[0]:5d} lam {[round(x, 2) for x in dm.multipliers.tolist()]} vote{v} logit query "
                              f"{float(lg[rel].mean()):+.1f} " + " ".join(f"o{s} {float(lg[oth & (dev.sequences == s)].mean()):+.1f}" for s in range(10)), flush=True)
            count[0] += 1
            return orig(*args, **kw)
        dm.lagrangian = lag
    t = time.time()
    out = Path(f"runs/dm67/{a.tag}_s{seed}")  # scratch output
    m = train_diffmask(dm, tr, list(range(len(train))), out, cfg, progress=False, log=lambda s: None)
    keep, _ = keep_probabilities(dm, dv, dev)
    trained = [1, 2] if hidden else [0, 1, 2]
    ev = evaluate_diffmask(dm, dv, list(range(len(dev))), layers=trained, batch_size=500)
    trev = evaluate_diffmask(dm, tr, list(range(2000)), layers=trained, batch_size=500)
    row = {"seed": seed, "seconds": round(time.time() - t, 1)}
    for k in trained:
        kk = keep[:, k]
        row[f"gt_kl{k}"] = round(divergences(kk, dev)["kl"], 4)
        row[f"dev_kl_sampled{k}"] = round(ev[str(k)]["kl_sampled"], 4)
        row[f"train_l0_{k}"] = round(trev[str(k)]["expected_kept"], 4)
        row[f"train_kl_sampled{k}"] = round(trev[str(k)]["kl_sampled"], 4)
        if k:
            row[f"open{k}"] = {s: round(float(kk[oth & (dev.sequences == s)].mean()), 3) for s in range(10)
                               if float(kk[oth & (dev.sequences == s)].mean()) > 0.5}
    print(json.dumps(row), flush=True)
    rows.append(row)
for k in trained:
    print(f"layer {k}: gt KL mean {sum(r[f'gt_kl{k}'] for r in rows) / len(rows):.4f} each {[r[f'gt_kl{k}'] for r in rows]}")
