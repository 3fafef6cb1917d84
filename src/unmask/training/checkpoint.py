"""Crash-safe checkpoints in safetensors (weights, optimizer moments, RNG) plus a JSON sidecar.

A checkpoint directory is written under a temporary name and renamed into place, so a kill during
the write leaves the previous checkpoint intact. Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{pid}.{key}"] = t.detach().contiguous().clone()
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_checkpoint(directory: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], meta: dict) -> Path:
    """Atomically write ``directory`` with every module's and optimizer's state and ``meta`` (JSON)."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sidecar = {"meta": meta, "optimizers": {}}
    for name, module in modules.items():
        state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / f"{name}.safetensors"))
    for name, opt in optimizers.items():
        tensors, groups = _optimizer_tensors(opt)
        save_file(tensors, str(tmp / f"optim_{name}.safetensors"))
        sidecar["optimizers"][name] = groups
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    (tmp / "checkpoint.json").write_text(json.dumps(sidecar, indent=1))
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoint_dir(directory: str | Path) -> Path | None:
    """The directory holding the last complete checkpoint (``directory`` or, after a kill between the two
    renames, its ``.old`` sibling), or ``None``."""
    d = Path(directory)
    if (d / "checkpoint.json").is_file():
        return d
    old = d.with_name(d.name + ".old")
    return old if (old / "checkpoint.json").is_file() else None


def read_checkpoint_meta(directory: str | Path) -> dict | None:
    """The ``meta`` of the checkpoint in ``directory`` without restoring anything (``None`` if absent)."""
    d = _checkpoint_dir(directory)
    return None if d is None else json.loads((d / "checkpoint.json").read_text())["meta"]


def load_checkpoint(directory: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict | None:
    """Restore states saved by ``save_checkpoint``; returns its ``meta`` or ``None`` if absent."""
    d = _checkpoint_dir(directory)
    if d is None:
        return None
    sidecar = json.loads((d / "checkpoint.json").read_text())
    for name, module in modules.items():
        module.load_state_dict(load_file(str(d / f"{name}.safetensors")))
    for name, opt in optimizers.items():
        _restore_optimizer(opt, load_file(str(d / f"optim_{name}.safetensors")), sidecar["optimizers"][name])
    torch.set_rng_state(load_file(str(d / "rng.safetensors"))["torch"])
    return sidecar["meta"]
