"""How one denoising step runs: the plan the sampling loop hands a backend with each step's inputs.

Today every step is guided: both CFG halves (batch 2) through the full UNet, combined with the guidance scale.
The next features add two plans: "conditional only" (the cond half alone, for guidance scale 1 and for models
distilled to run without guidance) and "reuse cached deep features" (the UNet's deep blocks skipped on some steps,
their features taken from an earlier step). A backend refuses a plan it does not implement, so no plan is ever
silently run as another.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    guided: bool = True  # both CFG halves through the full UNet


GUIDED = StepPlan()


def refuse_unless_guided(plan: StepPlan, backend: str) -> None:
    """ValueError, in one line, for a plan other than a guided step (all any backend implements so far)."""
    if plan != GUIDED:
        raise ValueError(f"the {backend} backend runs guided steps only (both CFG halves, full UNet), not {plan}")
