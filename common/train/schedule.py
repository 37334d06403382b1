"""The learning-rate schedules: the multiplier of the base learning rate after a step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def lr_factor(
    schedule: Any, steps_per_epoch: int, total_steps: int, lr: float
) -> Callable[[int], float]:
    """Multiplier of the base learning rate ``lr`` after ``step`` optimizer steps: linear
    warm-up, then constant, step (every ``step_size`` epochs), multistep (``gamma`` after each
    of the ``milestones``, fractions of ``total_steps``), cosine (to ``min_lr``) or linear
    (to 0 at the last step, after the warm-up: HF's ``get_linear_schedule_with_warmup``
    decay)."""
    floor = schedule.min_lr / lr
    # the step at which each milestone is passed: "x0.2 at 30 % of training" = step 0.3 T
    marks = [round(m * total_steps) for m in getattr(schedule, "milestones", ())]

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / schedule.warmup_steps) if schedule.warmup_steps else 1.0
        if schedule.name == "step":
            f = schedule.gamma ** ((step // steps_per_epoch) // schedule.step_size)
        elif schedule.name == "multistep":
            f = schedule.gamma ** sum(step >= mark for mark in marks)
        elif schedule.name == "cosine":
            cos = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
            f = floor + (1 - floor) * cos
        elif schedule.name == "linear":
            decay = max(1, total_steps - schedule.warmup_steps)
            f = max(0.0, min(1.0, (total_steps - step) / decay))
        else:
            f = 1.0
        return warm * f

    return factor
