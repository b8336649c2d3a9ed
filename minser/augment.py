"""Training-time augmentation of log-Mel batches ``(batch, n_mels, frames)`` with valid lengths.

All randomness comes from an explicit ``torch.Generator`` (seeded per fold and epoch by
:mod:`minser.train`), so a run resumes bit for bit and turning one augmentation on leaves the
others' draws unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["masked_with_mean", "mixup_pairs", "random_crops", "spec_augment_masks"]

# SpecAugment masks per training utterance: 2 frequency masks of up to 20% of the Mel bands (8 of 40;
# a fixed count would blank every band of a front end with few) and 2 time masks of up to 40 frames
# (0.4 s), each at most 10% of the utterance's valid frames (a short utterance is not blanked out).
FREQ_MASKS, FREQ_MASK_SHARE, TIME_MASKS, TIME_MASK_FRAMES, TIME_MASK_SHARE = 2, 0.2, 2, 40, 0.1


def spec_augment_masks(lengths: torch.Tensor, n_mels: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment masks ``(batch, n_mels, frames)``, True where a training input is blanked.

    Per utterance, :data:`FREQ_MASKS` bands of up to :data:`FREQ_MASK_SHARE` of the Mel bands and
    :data:`TIME_MASKS` spans of up to :data:`TIME_MASK_FRAMES` frames (at most
    :data:`TIME_MASK_SHARE` of its ``lengths`` valid frames), placed uniformly inside the valid
    frames; neither kind reaches past them. Widths and positions come from ``generator`` only, so a run resumes
    bit for bit.
    """
    batch = len(lengths)
    bands, steps = torch.arange(n_mels), torch.arange(frames)
    # Frequency masks too stop at the valid frames: under --pad-to full the network sees the padding
    # (silence), which bands filled with the utterance's mean turned into loud stripes no test input has.
    valid = (steps < lengths[:, None])[:, None, :]
    mask = torch.zeros(batch, n_mels, frames, dtype=torch.bool)
    uniform = lambda: torch.rand(batch, generator=generator)
    widest = int(FREQ_MASK_SHARE * n_mels)  # floored, "up to 20%": round() let 2 of 8 bands (25%) through
    for _ in range(FREQ_MASKS):
        width = (uniform() * (widest + 1)).long()
        start = (uniform() * (n_mels - width + 1)).long()
        mask |= ((bands >= start[:, None]) & (bands < (start + width)[:, None]))[:, :, None] & valid
    longest = torch.clamp((lengths.float() * TIME_MASK_SHARE).long(), max=TIME_MASK_FRAMES)
    for _ in range(TIME_MASKS):
        width = (uniform() * (longest + 1)).long()
        start = (uniform() * (lengths - width + 1)).long()
        mask |= ((steps >= start[:, None]) & (steps < (start + width)[:, None]))[:, None, :]
    return mask


def random_crops(x: torch.Tensor, lengths: torch.Tensor, frames: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each utterance of ``x (batch, n_mels, steps)`` cut to a window of ``min(lengths[b], frames)``
    frames at a uniform random start inside its valid frames.

    Returns ``(windows, window_lengths)``: ``windows (batch, n_mels, longest window)``, whose steps
    past a window's length are arbitrary frames (the model masks them), and ``window_lengths (batch,)``.
    """
    cut = lengths.clamp(max=frames)
    starts = (torch.rand(len(lengths), generator=generator) * (lengths - cut + 1)).long()
    steps = (starts[:, None] + torch.arange(int(cut.max()))).clamp(max=x.shape[-1] - 1)
    return x.gather(2, steps[:, None, :].expand(-1, x.shape[1], -1)), cut


def masked_with_mean(x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x (batch, n_mels, frames)`` with ``mask`` positions set to each utterance's mean over its valid frames
    (log-Mels are in dB, not normalised: zero would be a loud value, the padding value is silence)."""
    valid = torch.arange(x.shape[-1], device=x.device) < lengths[:, None].to(x.device)
    mean = (x * valid[:, None]).sum((1, 2)) / (valid.sum(1) * x.shape[1])
    return torch.where(mask.to(x.device), mean[:, None, None], x)


def mixup_pairs(batch: int, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup partners and weights for a batch of ``batch`` utterances.

    Returns ``(partner, weight)``, both ``(batch,)``: utterance ``b`` is mixed as
    ``weight[b] * x[b] + (1 - weight[b]) * x[partner[b]]`` (and its loss likewise), with ``partner`` a
    random permutation and ``weight ~ Beta(alpha, alpha)`` per utterance (float32). Draws come from
    ``generator`` only (torch has no seeded Beta sampler, so a numpy generator is seeded from it).
    """
    partner = torch.randperm(batch, generator=generator)
    seed = int(torch.randint(2**62, (1,), generator=generator))
    weight = np.random.default_rng(seed).beta(alpha, alpha, size=batch).astype(np.float32)
    return partner, torch.from_numpy(weight)
