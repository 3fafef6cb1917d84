"""LIME and KernelSHAP: unmask vs Captum's Lime / KernelShap, 500 samples on one 25-token SST-2 sentence.

Same process, same model, same tokenized sentence, configurations run round-robin. Captum gets a
feature mask (one feature per word piece, [CLS]/[SEP] in a group whose baseline equals the input, so
perturbing it changes nothing) and [MASK] baselines (Captum cannot delete tokens), with
``perturbations_per_eval`` at its documented default (1) and batched (64). unmask runs its defaults
(removal, the sequence re-packed) and ``perturbation="mask"`` (the same inputs Captum builds).
``--floor`` adds the bare batched forward of 502 full-length rows in unmask's token-budgeted chunks.
``precision="bfloat16"`` (bf16 autocast of the matrix products) is timed beside float32.

    OMP_NUM_THREADS=1 taskset -c 1 python bench/bench_lime_shap.py --threads 1 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from captum.attr import KernelShap as CaptumKernelShap  # noqa: E402
from captum.attr import Lime as CaptumLime  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench_common import ROOT, default_model_spec, load_average, machine_info, timed  # noqa: E402
from unmask.attribution.base import DEFAULT_TOKEN_BUDGET, row_chunks  # noqa: E402
from unmask.attribution.explain import attribute_batch  # noqa: E402
from unmask.attribution.kernel_shap import KernelShap  # noqa: E402
from unmask.attribution.lime import Lime  # noqa: E402
from unmask.io import write_json_atomic  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.models.classifier import TextClassifier  # noqa: E402

SENTENCE = ("although laced with humor and a few fanciful touches , the film is a refreshingly serious "
            "look at young women .")  # SST-2 dev #5: 25 word pieces with [CLS] / [SEP]
SAMPLES = 500
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The ``flags`` line of /proc/cpuinfo (what lscpu prints as Flags)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def captum_call(model: TextClassifier, batch, target: int, kind: str, per_eval: int):
    """One Captum Lime / KernelShap call on the sentence: returns the token scores (numpy)."""
    ids, mask = batch.input_ids, batch.attention_mask
    tti = batch.token_type_ids if batch.token_type_ids is not None else torch.zeros_like(ids)

    def forward(input_ids):
        n = input_ids.shape[0]
        out = model.model(input_ids=input_ids, attention_mask=mask.expand(n, -1),
                          token_type_ids=tti.expand(n, -1)).logits
        return out.log_softmax(-1)

    special = batch.special_mask()[0]
    feature_mask = torch.zeros_like(ids)
    feature_mask[0, ~special] = torch.arange(1, int((~special).sum()) + 1)
    baselines = torch.where(special[None, :], ids, model.tokenizer.mask_token_id)
    method = CaptumLime(forward) if kind == "lime" else CaptumKernelShap(forward)
    with torch.no_grad():
        scores = method.attribute(ids, baselines=baselines, target=target, feature_mask=feature_mask,
                                  n_samples=SAMPLES, perturbations_per_eval=per_eval)
    out = scores[0].detach().double().numpy()
    out[special.numpy()] = 0.0
    return out


def floor_call(model: TextClassifier, batch, rows: int) -> None:
    """The bare forwards unmask's mask perturbation needs: ``rows`` full-length copies, chunked."""
    ids = batch.input_ids.expand(rows, -1)
    mask = batch.attention_mask.expand(rows, -1)
    with torch.no_grad():
        for sl, width in row_chunks(mask, DEFAULT_TOKEN_BUDGET):
            model.forward_embeds(model.embed(ids[sl, :width]), mask[sl, :width]).logits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: runs/sst2 if trained, else "
                    "MiniLM with a random 2-label head)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--captum-batched", type=int, default=64, help="perturbations_per_eval of the batched Captum runs")
    ap.add_argument("--floor", action="store_true", help="also time the bare forwards of 502 full-length rows")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "lime_shap_1thread.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = args.model or default_model_spec()
    torch.manual_seed(0)  # the random head of bare MiniLM
    model = load_model(spec, num_labels=2) if spec == "minilm" else load_model(spec)
    batch = model.encode([SENTENCE])
    assert batch.lengths[0] == 25, batch.lengths
    logits = model.logits(batch)
    target = logits.argmax(-1)

    def unmask_call(method):
        def call():
            rec = attribute_batch(model, batch, method, target, logits)[0]
            return rec.scores, rec.extras
        return call

    configs: dict[str, tuple[str, object]] = {}
    for kind, cls in (("lime", Lime), ("kernel_shap", KernelShap)):
        configs[f"{kind}/unmask_remove"] = (kind, unmask_call(cls(samples=SAMPLES)))
        configs[f"{kind}/unmask_mask"] = (kind, unmask_call(cls(samples=SAMPLES, perturbation="mask")))
        configs[f"{kind}/unmask_remove_bf16"] = (kind, unmask_call(cls(samples=SAMPLES, precision="bfloat16")))
        configs[f"{kind}/captum_ppe1"] = (kind, lambda k=kind: (captum_call(model, batch, int(target), k, 1), {}))
        configs[f"{kind}/captum_ppe{args.captum_batched}"] = (
            kind, lambda k=kind: (captum_call(model, batch, int(target), k, args.captum_batched), {}))
    if args.floor:
        configs["floor/502_rows"] = ("floor", lambda: (floor_call(model, batch, SAMPLES + 2), {}))

    # warm-up (allocator, oneDNN kernels, bf16 kernels), not timed; small so the whole run stays short
    attribute_batch(model, batch, KernelShap(samples=64), target, logits)
    attribute_batch(model, batch, KernelShap(samples=64, precision="bfloat16"), target, logits)
    times: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    outputs: dict[str, object] = {}
    loads = [load_average()[0]]
    for _ in range(args.repeats):
        for name, (_, fn) in configs.items():
            wall, cpu_s, out = timed(fn)
            times[name].append(wall)
            cpu[name].append(cpu_s)
            outputs[name] = out
        loads.append(load_average()[0])

    results = {}
    for name, (kind, _) in configs.items():
        ms = 1000 * statistics.median(times[name])
        results[name] = {"ms_per_sentence": ms, "cpu_ms_per_sentence": 1000 * statistics.median(cpu[name]),
                         "seconds": times[name], "cpu_seconds": cpu[name]}
        scores, extras = outputs[name]
        if extras:
            results[name]["extras"] = {k: v for k, v in extras.items() if isinstance(v, (int, float))}
    for kind in ("lime", "kernel_shap"):
        ref = results[f"{kind}/captum_ppe1"]["ms_per_sentence"]
        ref_cpu = results[f"{kind}/captum_ppe1"]["cpu_ms_per_sentence"]
        inner = ~batch.special_mask()[0].numpy()
        captum_scores = outputs[f"{kind}/captum_ppe1"][0][inner]
        for name in results:
            if name.startswith(kind + "/"):
                results[name]["speedup_vs_captum_ppe1"] = ref / results[name]["ms_per_sentence"]
                results[name]["cpu_speedup_vs_captum_ppe1"] = ref_cpu / results[name]["cpu_ms_per_sentence"]
                results[name]["spearman_with_captum_ppe1"] = float(
                    spearmanr(outputs[name][0][inner], captum_scores).statistic)
    flags = cpu_flags()
    record = {"command": "OMP_NUM_THREADS=%s taskset -c %s python bench/bench_lime_shap.py %s" % (
                  os.environ.get("OMP_NUM_THREADS", "?"), ",".join(map(str, sorted(os.sched_getaffinity(0)))),
                  " ".join(argv if argv is not None else sys.argv[1:])),
              "date": time.strftime("%Y-%m-%d %H:%M"), "model": spec, "sentence": SENTENCE, "tokens": 25,
              "samples": SAMPLES, "machine": machine_info(), "cpu_flags": flags,
              "cpu_flags_relevant": [f for f in CPU_FLAGS if f in flags], "load_average": loads,
              "results": results}
    write_json_atomic(args.json, record)
    print(f"{spec}, {args.threads} thread(s), load {loads[0]:.2f} -> {loads[-1]:.2f}; "
          f"flags: {' '.join(record['cpu_flags_relevant'])}")
    nan = float("nan")
    print(f"{'configuration':28s} {'wall ms':>9s} {'CPU ms':>9s} {'wall vs ppe1':>13s} {'CPU vs ppe1':>12s} "
          f"{'spearman':>9s}")
    for name, r in results.items():
        print(f"{name:28s} {r['ms_per_sentence']:9.1f} {r['cpu_ms_per_sentence']:9.1f} "
              f"{r.get('speedup_vs_captum_ppe1', nan):12.2f}x {r.get('cpu_speedup_vs_captum_ppe1', nan):11.2f}x "
              f"{r.get('spearman_with_captum_ppe1', nan):9.3f}")
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
