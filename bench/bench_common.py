"""Shared pieces of the benchmarks: inputs, the machine / load record, median-of-repeats timing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unmask.models.batch import Batch
from unmask.models.classifier import TextClassifier

ROOT = Path(__file__).resolve().parent.parent
FINE_TUNED = ROOT / "runs" / "sst2"


def default_model_spec() -> str:
    """The fine-tuned SST-2 MiniLM if it exists, else the bundled MiniLM with a fresh 2-label head."""
    return str(FINE_TUNED) if (FINE_TUNED / "config.json").is_file() else "minilm"


@dataclass
class Inputs:
    """Pre-tokenized sentences and the labels every method explains (the model's predictions)."""

    texts: list[str]
    batch: Batch                      # all sentences, padded to the longest
    singles: list[Batch]              # one unpadded batch per sentence (Captum's one-per-call usage)
    targets: torch.Tensor             # predicted label per sentence
    logits: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return self.batch.lengths


def make_inputs(model: TextClassifier, texts: list[str]) -> Inputs:
    batch = model.encode(texts)
    with torch.no_grad():
        logits = model.logits(batch)
    singles = [batch.select([i]) for i in range(len(texts))]
    return Inputs(texts, batch, singles, logits.argmax(-1), logits)


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


BF16_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "avx2", "fma")


def lscpu_info() -> dict:
    """The CPU as ``lscpu`` reports it (model name, vendor, cores, caches, all flags) and whether the flags
    that decide bf16 speed are present: ``native_bf16`` = avx512_bf16 or amx_bf16, the rule
    ``precision="auto"`` uses (``unmask.attribution.precision``). Falls back to /proc/cpuinfo."""
    import subprocess

    fields: dict = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        source = "lscpu"
    except (OSError, subprocess.SubprocessError):
        source = "/proc/cpuinfo"
    flags = fields.pop("Flags", "").split()
    if not flags:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
        except OSError:
            pass
    keep = ("Model name", "Vendor ID", "Architecture", "CPU(s)", "Thread(s) per core", "Core(s) per socket",
            "Socket(s)", "CPU max MHz", "L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor")
    present = set(flags)
    return {"source": source, **{k: fields[k] for k in keep if k in fields},
            "flags_of_interest": {f: f in present for f in BF16_FLAGS},
            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & present), "flags": flags}


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import captum
    import transformers

    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "torch": torch.__version__, "captum": captum.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "lscpu": lscpu_info()}


@dataclass
class Timing:
    """Wall-clock seconds of each repeat of one configuration, and the load when each started."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)   # process CPU time (all threads)
    loads: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def add_dev_model_arguments(p, threads: int) -> None:
    """``--model``, ``--n`` (first SST-2 dev sentences), ``--threads`` and ``--json`` (result file)."""
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--json", default=None)


def dev_model(args) -> tuple[TextClassifier, list[str]]:
    """Set the torch threads, load ``args.model`` and the first ``args.n`` SST-2 dev sentences."""
    from unmask.data import load_task
    from unmask.models import load_model

    torch.set_num_threads(args.threads)
    return load_model(args.model), [e.text for e in load_task("sst2", "dev", limit=args.n)]
