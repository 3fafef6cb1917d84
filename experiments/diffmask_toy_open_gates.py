"""Issue 14 diagnostics: why input gates stay open on some non-query symbols of the toy task.

For a trained toy run (``experiments/diffmask_toy.py --out OUT``): per vote, the mean pre-tanh probe output
and gate location on positions holding n or m and on the non-query positions of each symbol; for input
layers 1 and 2, the gradient of the expected L0 and of lambda x KL (20 gate samples) w.r.t. each vote's
location; and KL(original || masked) with deterministic gates when the non-query positions of some
symbols are closed as well. Usage: python experiments/diffmask_toy_open_gates.py runs/dm67/toy
"""
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from unmask.data.toy_counting import generate_toy
from unmask.models.gru_toy import load_toy_model
from unmask.masking import ToyAdapter, load_diffmask, kl_divergence
from unmask.masking.hard_concrete import HardConcrete

out = Path(sys.argv[1]); dmdir = Path(sys.argv[2]) if len(sys.argv) > 2 else out / "diffmask_input"
data = generate_toy(10000, seed=0); train, dev = data.split(0.1)
model, _, _ = load_toy_model(out / "gru"); model.eval()
for p in model.parameters(): p.requires_grad_(False)
dm, saved = load_diffmask(dmdir)
print("multipliers", dm.multipliers.tolist(), "biases", [float(p.bias.detach()) for p in dm.probes.probes])
ad = ToyAdapter(model, dev); st = ad.states(dev)
rel = dev.relevant() & dev.mask; oth = dev.mask & ~rel; sym = dev.sequences
groups = {"query": rel, **{f"o{s}": oth & (sym == s) for s in range(10)}}
with torch.no_grad():
    for j in range(3):
        p = dm.probes.probes[j]
        pre = p.mlp(torch.cat([st.inputs, st.hidden[j]], -1)).squeeze(-1)
        lg = dm.probes.layer(st.hidden, j, st.inputs)
        print(f"vote {j}: " + "  ".join(f"{g}: pre {float(pre[m].mean()):+.2f} logit {float(lg[m].mean()):+.2f}"
                                         f" [{float(lg[m].min()):+.1f},{float(lg[m].max()):+.1f}]" for g, m in groups.items()))
# gradients of the layer-k Lagrangian parts w.r.t. each vote's logit (dev set, KL averaged over samples)
for k in (1, 2):
    logits = dm.probes.upto(st.hidden, k, st.inputs).detach().requires_grad_(True)
    mask = st.mask.float()
    dist = HardConcrete(logits, dm.temperature, dm.left, dm.right)
    keep = dist.log_expected_l0().sum(-1).exp() * mask
    l0 = ((keep).sum(1) / mask.sum(1)).mean()
    g_l0, = torch.autograd.grad(l0, logits)
    g_kl = torch.zeros_like(logits); S = 20; kls = []
    torch.manual_seed(0)
    for _ in range(S):
        z = dist.rsample().prod(-1)
        ml = dm.masked_logits(ad, dev, st, k, z)
        kl = kl_divergence(st.logits, ml).mean(); kls.append(float(kl))
        g, = torch.autograd.grad(kl * dm.multipliers[k].detach(), logits)
        g_kl += g / S
    print(f"layer {k}: sampled KL {sum(kls)/S:.4f}, lambda {float(dm.multipliers[k]):.3f}, l0 {float(l0):.3f}")
    n = dev.mask.sum()
    for g, m in groups.items():
        # per-position gradients scaled back by number of positions (so comparable between groups)
        a = (g_l0[m] * n).mean(0).tolist(); b = (g_kl[m] * n).mean(0).tolist()
        print(f"  {g:6s} n={int(m.sum()):4d} keep {float(keep[m].mean()):.3f}  dL0/dlogit per vote "
              + " ".join(f"{v:+.1e}" for v in a) + "   d(lam KL)/dlogit " + " ".join(f"{v:+.1e}" for v in b))
    # what if the non-query 6/7 positions were closed (deterministic gates otherwise)?
    with torch.no_grad():
        det = dm.deterministic_gates(st, k)
        for close in ([], [6, 7], list(range(10))):
            z = det.clone()
            for s in close: z[oth & (sym == s)] = 0
            print(f"  deterministic gates, closing non-query {close}: KL {float(kl_divergence(st.logits, dm.masked_logits(ad, dev, st, k, z)).mean()):.4f}")
        gt = rel.float()
        print(f"  ground-truth mask with learned baseline: KL {float(kl_divergence(st.logits, dm.masked_logits(ad, dev, st, k, gt)).mean()):.4f}")
