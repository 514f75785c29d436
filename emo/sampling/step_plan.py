"""How each denoising step runs: the plan the sampling loop hands a backend with each step's inputs.

- guided: both CFG halves (batch 2) through the UNet, combined with the guidance scale; otherwise the conditional
  half alone (batch 1, half the cost): outside the guidance interval, and on every step at guidance scale 1;
- cache: "off" (the plain UNet), "store" (the full UNet, keeping the input of its outer up blocks) or "reuse"
  (only the outer levels run, the deep features taken from the last "store" step of the clip: DeepCache, Ma et
  al. 2023).

A backend refuses a plan it does not implement, so no plan is ever silently run as another. `plans` derives the
plans of a run from its settings; a run with every step guided and a cache interval of 1 is planned exactly as
before the plans existed (every step "guided, off").
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig

CACHE_MODES = ("off", "store", "reuse")


@dataclass(frozen=True)
class StepPlan:
    guided: bool = True  # both CFG halves (else the conditional half only)
    cache: str = "off"  # "off" | "store" | "reuse"
    levels: int = 1  # outer levels a "reuse" step runs ("store" keeps their input)

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ValueError(f"unknown cache mode {self.cache!r}")

    @property
    def halves(self) -> int:
        return 2 if self.guided else 1


GUIDED = StepPlan()
CONDITIONAL = StepPlan(guided=False)


def plans(run: RunConfig) -> list[StepPlan]:
    """The plan of every step of `run`: guided inside the guidance interval (RunConfig.guided); with a cache
    interval N > 1, a full "store" step every N steps and "reuse" steps between (running run.cache_levels outer
    levels). A step reuses only features
    stored for at least its halves (a guided step after conditional-only ones stores afresh)."""
    out, stored, since = [], 0, 0
    for i in range(run.steps):
        guided = run.guided(i)
        halves = 2 if guided else 1
        if run.cache_interval == 1:
            cache = "off"
        elif since + 1 < run.cache_interval and stored >= halves:
            cache, since = "reuse", since + 1
        else:
            cache, stored, since = "store", halves, 0
        out.append(StepPlan(guided, cache, run.cache_levels))
    return out


def refuse_cache(plan: StepPlan, backend: str) -> None:
    """ValueError, in one line, for a plan that stores or reuses deep features (a backend without them)."""
    if plan.cache != "off":
        raise ValueError(f"the {backend} backend does not reuse deep features (cache interval 1 only); "
                         "use the torch or torch-fast backend")
