"""WeightEMA: the average it keeps, its warm-up, and a bit-exact state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minser.ema import WeightEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_average_follows_the_formula_and_copies_counters() -> None:
    net = _net()
    ema = WeightEMA(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(1, 31):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * step)
        net.train()(torch.randn(5, 3))  # moves the BatchNorm statistics and its integer counter
        ema.update(net)
        d = min(0.9, (1 + step) / (10 + step))
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    for k, v in ema.model.state_dict().items():
        assert torch.allclose(v, expected[k], rtol=1e-5, atol=1e-6), k
    assert ema.model.state_dict()["1.num_batches_tracked"] == 30
    assert not torch.allclose(ema.model[0].weight, net[0].weight)  # an average, not a copy
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_state_round_trip_continues_bit_for_bit() -> None:
    net = _net()
    a = WeightEMA(net, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            net[0].weight.mul_(1.1)
        a.update(net)
    b = WeightEMA(_net(), decay=0.99)
    b.load_state_dict(a.state_dict())
    a.update(net), b.update(net)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(_net(), decay)
