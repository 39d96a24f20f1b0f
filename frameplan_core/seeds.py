"""One meaning of ``seed`` for every model (predictor and planner): ``None`` is 0, so a call without a seed is
reproducible; an int seeds one CPU ``torch.Generator``, so a seed gives the same noise on any device."""
from __future__ import annotations

import operator

import torch

from frameplan_core.errors import ConfigError


def check_seed(seed: object, where: str = "seed") -> int:
    """``None`` -> 0; otherwise an integer torch.Generator accepts (floats, strings and bools are refused)."""
    if seed is None:
        return 0
    try:
        if isinstance(seed, bool):
            raise TypeError
        value = operator.index(seed)
    except TypeError:
        raise ConfigError(f"{where}: expected an integer or None, got {seed!r}") from None
    if not -(2**63) <= value < 2**64:
        raise ConfigError(f"{where}: {value} is outside the 64-bit range of a torch.Generator seed")
    return value


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with a checked seed: sampling noise is drawn here and moved, so it is device-independent."""
    return torch.Generator("cpu").manual_seed(seed)
