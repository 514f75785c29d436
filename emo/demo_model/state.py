"""Resumable training state: modules, optimiser, EMA, step, random generators and the loss log in one file,
written to a temporary name and renamed, read back with weights_only loading."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class LossLog:
    """One line of JSON per logged step in `path`: step, loss, seconds since the stage began."""

    path: Path
    started: float = field(default_factory=time.perf_counter)
    offset: float = 0.0  # seconds spent before a resume

    def write(self, step: int, **values: float) -> None:
        row = {"step": step, "seconds": round(self.offset + time.perf_counter() - self.started, 1),
               **{k: round(float(v), 6) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.started


class TrainState:
    """What a stage needs to resume exactly: named modules and optimisers, the step, generators, elapsed time."""

    def __init__(self, path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 generators: dict[str, torch.Generator]):
        self.path, self.modules, self.optimizers, self.generators = Path(path), modules, optimizers, generators
        self.step = 0
        self.elapsed = 0.0

    def save(self, elapsed: float) -> None:
        blob = {
            "step": self.step, "elapsed": elapsed,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "generators": {k: g.get_state() for k, g in self.generators.items()},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)

    def load(self) -> bool:
        """Resume from the file when it exists -> whether it did."""
        if not self.path.is_file():
            return False
        blob = torch.load(self.path, weights_only=True)
        for k, m in self.modules.items():
            m.load_state_dict(blob["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(blob["optimizers"][k])
        for k, g in self.generators.items():
            g.set_state(blob["generators"][k])
        self.step, self.elapsed = int(blob["step"]), float(blob["elapsed"])
        return True


class EMA(nn.Module):
    """An exponential moving average of a module's parameters (and a copy of its buffers)."""

    def __init__(self, module: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = nn.ParameterDict({k.replace(".", "/"): nn.Parameter(p.detach().clone(), requires_grad=False)
                                        for k, p in module.named_parameters()})

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm up: follow the weights closely at first
        for k, p in module.named_parameters():
            self.shadow[k.replace(".", "/")].lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k.replace(".", "/")])
