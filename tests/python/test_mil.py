"""Multiple-instance pooling: batches of unequal bags equal per-bag computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepnomo.nn.mil import SurvivalMIL, collate_bags, segment_pool, segment_softmax


class _TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.out_features = 6
        self.cam_layer = self.conv

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_batched_bags_equal_per_bag(pooling):
    torch.manual_seed(0)
    model = SurvivalMIL(_TinyEncoder(), pooling=pooling, attention_hidden=8).double().eval()
    bags = [torch.randn(k, 1, 8, 8, dtype=torch.float64) for k in (1, 4, 2, 7)]
    x, idx = collate_bags(bags)
    assert idx.tolist() == [0] + [1] * 4 + [2] * 2 + [3] * 7
    out = model(x, idx)
    for i, b in enumerate(bags):
        single = model(b, torch.zeros(len(b), dtype=torch.long))
        torch.testing.assert_close(out.risk[i], single.risk[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(out.embedding[i], single.embedding[0], rtol=0, atol=1e-12)
        h = model.encoder(b)  # independent pooling of the same instance features
        if pooling == "mean":
            direct = h.mean(0)
        elif pooling == "max":
            direct = h.max(0).values
        else:
            direct = (torch.softmax(model.attention(h), 0)[:, None] * h).sum(0)
        torch.testing.assert_close(out.embedding[i], direct, rtol=0, atol=1e-12)
    sums = torch.zeros(4, dtype=torch.float64).index_add(0, idx, out.weights)
    torch.testing.assert_close(sums, torch.ones(4, dtype=torch.float64))


def test_instance_order_within_bag_does_not_matter():
    torch.manual_seed(1)
    model = SurvivalMIL(_TinyEncoder(), pooling="attention").double().eval()
    b = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    idx = torch.zeros(5, dtype=torch.long)
    torch.testing.assert_close(model(b, idx).risk, model(b.flip(0), idx).risk)


def test_segment_softmax_is_stable():
    s = torch.tensor([1000.0, 1001.0, -5.0])
    w = segment_softmax(s, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(w, torch.tensor([1 / (1 + torch.e), torch.e / (1 + torch.e), 1.0]))


def test_empty_bags_are_refused():
    with pytest.raises(ValueError, match=r"bags\[1\]: bag with zero instances"):
        collate_bags([torch.zeros(2, 1, 4, 4), torch.zeros(0, 1, 4, 4)])
    with pytest.raises(ValueError, match=r"bag\(s\) \[1\] have zero instances"):
        segment_pool(torch.zeros(2, 3), torch.tensor([0, 2]), 3, "mean")
    with pytest.raises(ValueError, match="instance shape"):
        collate_bags([torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 5, 4)])
