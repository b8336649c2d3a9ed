"""Exponential moving average of a network's weights (``python -m minser.train --ema DECAY``).

Validating and testing an average of the recent weights instead of the last step's smooths
the epoch-to-epoch swings of a small corpus trained at a high learning rate (Polyak averaging;
"mean teacher" style EMA). The average covers every entry of the state dict: parameters and
BatchNorm running statistics are averaged, integer counters are copied.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """A copy of ``model`` whose floating-point state follows ``model``'s after every :meth:`update`.

    After update ``t`` (1-based) each entry is ``w_ema <- d_t * w_ema + (1 - d_t) * w``, with
    ``d_t = min(decay, (1 + t) / (10 + t))``: the warm-up lets the first epochs' average follow the
    fast-moving weights instead of remembering the random initialisation.

    Args:
        model: the network being trained; it is deep-copied (same device and dtype).
        decay: the long-run decay per optimiser step, in ``(0, 1)``; with ``s`` steps per epoch
            the average spans about ``1 / ((1 - decay) * s)`` epochs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} must lie in (0, 1)")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (same architecture)."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        # state_dict() tensors share storage with the module, so the in-place ops update it.
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if average.is_floating_point():
                average.lerp_(current.detach(), 1.0 - d)
            else:
                average.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to continue the average bit for bit."""
        return {"updates": self.updates, "state_dict": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["state_dict"])
