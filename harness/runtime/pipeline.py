"""Pipeline schedules: the order of forward (F) and backward (B) micro-batch actions per stage."""

from __future__ import annotations

from typing import Literal

Action = tuple[Literal["F", "B"], int]


def gpipe(stages: int, micro: int, stage: int) -> list[Action]:
    """All forwards, then all backwards in reverse order (Huang et al.; the paper's)."""
    return [("F", m) for m in range(micro)] + [("B", m) for m in reversed(range(micro))]


def one_f_one_b(stages: int, micro: int, stage: int) -> list[Action]:
    """PipeDream-flush 1F1B: warm-up forwards, then alternate one forward and one backward."""
    warm = min(stages - stage - 1, micro)
    acts: list[Action] = [("F", m) for m in range(warm)]
    for i in range(micro - warm):
        acts += [("F", warm + i), ("B", i)]
    acts += [("B", m) for m in range(micro - warm, micro)]
    return acts


SCHEDULES = {"gpipe": gpipe, "1f1b": one_f_one_b}


def backward_order(name: str, micro: int) -> list[int]:
    """The micro-batch order of backwards (the same on every stage for both schedules)."""
    return [m for kind, m in SCHEDULES[name](2, micro, 0) if kind == "B"]
