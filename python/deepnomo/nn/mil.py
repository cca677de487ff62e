"""Multiple-instance learning: a patient is a bag of instances, pooled to one risk.

Bags of different sizes travel in one batch as a flat instance tensor plus a
``bag_index`` (which bag each instance belongs to), so that no padding is
needed; pooling is done per segment with scatter operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

POOLINGS = ("mean", "max", "attention")


def collate_bags(bags: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate bags ``(k_i, C, *spatial)`` into ``(sum k_i, C, *spatial)`` plus bag indices.

    Raises
    ------
    ValueError
        If a bag has no instances or the instance shapes differ.
    """
    if len(bags) == 0:
        raise ValueError("bags: empty batch")
    for i, b in enumerate(bags):
        if b.ndim < 2 or b.shape[0] == 0:
            raise ValueError(f"bags[{i}]: bag with zero instances (shape {tuple(b.shape)})")
        if b.shape[1:] != bags[0].shape[1:]:
            raise ValueError(f"bags[{i}]: instance shape {tuple(b.shape[1:])} differs from "
                             f"{tuple(bags[0].shape[1:])}")
    sizes = torch.tensor([b.shape[0] for b in bags])
    index = torch.repeat_interleave(torch.arange(len(bags)), sizes)
    return torch.cat(list(bags)), index


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` cast up to float32 when it is half precision (bf16 autocast on CUDA)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``scores`` (shape (m,)) within each segment of ``index`` (half-precision
    scores are cast up to float32 first)."""
    scores = _full_precision(scores)
    peak = torch.full((n,), -torch.inf, dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - peak[index])
    total = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add(0, index, e)
    return e / total[index]


def segment_pool(features: torch.Tensor, index: torch.Tensor, n: int, mode: str,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pool instance features ``(m, F)`` to bags ``(n, F)``.

    ``mode`` is ``"mean"``, ``"max"`` or ``"attention"`` (weighted sum with
    ``weights``, shape (m,), summing to one within each bag).
    """
    f = features.shape[1]
    counts = torch.bincount(index, minlength=n)
    if (counts == 0).any():
        raise ValueError(f"bag_index: bag(s) {torch.nonzero(counts == 0).flatten().tolist()} "
                         "have zero instances")
    if mode == "mean":
        total = features.new_zeros(n, f).index_add(0, index, features)
        return total / counts.to(features.dtype)[:, None]
    if mode == "max":
        out = features.new_full((n, f), -torch.inf)
        return out.scatter_reduce(0, index[:, None].expand(-1, f), features, reduce="amax",
                                  include_self=True)
    if mode == "attention":
        if weights is None:
            raise ValueError("weights: attention pooling needs instance weights")
        return features.new_zeros(n, f).index_add(0, index, features * weights[:, None])
    raise ValueError(f"pooling: expected one of {POOLINGS}, got {mode!r}")


class GatedAttention(nn.Module):
    """Gated attention scores ``w^T (tanh(V h) * sigmoid(U h))`` (Ilse et al. 2018)."""

    def __init__(self, in_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.v = nn.Linear(in_features, hidden)
        self.u = nn.Linear(in_features, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)


class MILOutput(NamedTuple):
    """Outputs of :class:`SurvivalMIL` for ``n`` bags and ``m`` instances."""

    risk: torch.Tensor       # (n,) log relative hazard, higher = higher risk
    logit: torch.Tensor      # (n,) k-year event logit (pretraining head)
    embedding: torch.Tensor  # (n, F) pooled bag features
    weights: torch.Tensor    # (m,) instance weights within each bag
    aux: torch.Tensor        # (n, A) auxiliary targets' predictions (A = 0 without that head)


class SurvivalMIL(nn.Module):
    """Instance encoder -> pooling -> dropout -> linear risk (and k-year logit).

    Parameters
    ----------
    encoder : nn.Module
        Maps ``(m, C, *spatial)`` to ``(m, encoder.out_features)``.
    pooling : {"mean", "max", "attention"}
    attention_hidden : int
    dropout : float
        Dropout on the pooled features.
    shape_encoder : nn.Module, optional
        Maps one ROI patch per bag, ``(n, 1, D, H, W)``, to ``(n, shape_encoder.out_features)``
        (:class:`deepnomo.nn.shape.ROIShapeEncoder`); its features are appended to
        the pooled instance features before dropout and the heads.
    aux_outputs : int
        Outputs of a linear auxiliary head on the pooled features (0: none).
    """

    def __init__(self, encoder: nn.Module, pooling: str = "attention",
                 attention_hidden: int = 64, dropout: float = 0.25,
                 shape_encoder: nn.Module | None = None, aux_outputs: int = 0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        f = encoder.out_features
        self.attention = GatedAttention(f, attention_hidden) if pooling == "attention" else None
        self.shape_encoder = shape_encoder
        if shape_encoder is not None:
            f += shape_encoder.out_features
        self.dropout = nn.Dropout(dropout)
        self.risk_head = nn.Linear(f, 1)
        self.kyear_head = nn.Linear(f, 1)
        self.aux_head = nn.Linear(f, aux_outputs) if aux_outputs else None

    def pool(self, h: torch.Tensor, bag_index: torch.Tensor,
             n_bags: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features ``(n, F)`` and instance weights ``(m,)``."""
        if self.attention is not None:
            w = segment_softmax(self.attention(h), bag_index, n_bags)
        else:
            counts = torch.bincount(bag_index, minlength=n_bags).to(h.dtype)
            w = 1.0 / counts[bag_index]
        return segment_pool(h, bag_index, n_bags, self.pooling, w), w

    def forward(self, instances: torch.Tensor, bag_index: torch.Tensor,
                n_bags: int | None = None, roi: torch.Tensor | None = None) -> MILOutput:
        """Outputs for the bags of ``instances``; ``roi`` (n, 1, D, H, W): one ROI patch per
        bag, required exactly when the network has a shape encoder."""
        n_bags = int(bag_index.max()) + 1 if n_bags is None else n_bags
        if instances.shape[0] != bag_index.shape[0]:
            raise ValueError(f"bag_index: {bag_index.shape[0]} entries for "
                             f"{instances.shape[0]} instances")
        if (roi is None) != (self.shape_encoder is None):
            raise ValueError("roi: the network has a shape encoder; pass one ROI patch per bag"
                             if roi is None else "roi: given, but the network has no shape "
                             "encoder")
        # pooling sums in full precision: under bf16 autocast the features are cast up
        h = _full_precision(self.encoder(instances))
        z, w = self.pool(h, bag_index.to(h.device), n_bags)
        if self.shape_encoder is not None:
            if roi.shape[0] != n_bags:
                raise ValueError(f"roi: {roi.shape[0]} ROI patches for {n_bags} bags")
            z = torch.cat([z, _full_precision(self.shape_encoder(roi))], dim=1)
        z = self.dropout(z)
        aux = z[:, :0] if self.aux_head is None else self.aux_head(z)
        return MILOutput(self.risk_head(z).squeeze(-1), self.kyear_head(z).squeeze(-1), z, w,
                         aux)


class RiskEnsemble(nn.Module):
    """Mean of several :class:`SurvivalMIL` members' standardized risks.

    The ensemble's risk is :math:`\\frac1K \\sum_k (\\eta_k - \\mu_k) / \\sigma_k`,
    where :math:`\\eta_k` is member ``k``'s log relative hazard and
    :math:`\\mu_k, \\sigma_k` its mean and SD on the patients it was trained on
    (set when the member is locked), so that no member dominates by the scale of
    its scores. The k-year logit and instance weights are the members' means;
    the embedding is the members' embeddings concatenated, shape (n, K * F).

    Parameters
    ----------
    members : sequence of SurvivalMIL
        Same configuration, different training folds and seeds.
    """

    def __init__(self, members: Sequence[SurvivalMIL]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"members: an ensemble needs at least 2, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.register_buffer("shift", torch.zeros(len(members)))
        self.register_buffer("scale", torch.ones(len(members)))

    def forward(self, instances: torch.Tensor, bag_index: torch.Tensor,
                n_bags: int | None = None, roi: torch.Tensor | None = None) -> MILOutput:
        outs = [m(instances, bag_index, n_bags, roi) for m in self.members]
        risk = torch.stack([(o.risk - self.shift[k]) / self.scale[k]
                            for k, o in enumerate(outs)]).mean(0)
        return MILOutput(risk, torch.stack([o.logit for o in outs]).mean(0),
                         torch.cat([o.embedding for o in outs], dim=1),
                         torch.stack([o.weights for o in outs]).mean(0),
                         torch.stack([o.aux for o in outs]).mean(0))


def members(model: nn.Module) -> list[SurvivalMIL]:
    """The :class:`SurvivalMIL` networks of a model: itself, or an ensemble's members."""
    return list(model.members) if isinstance(model, RiskEnsemble) else [model]
