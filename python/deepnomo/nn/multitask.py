"""Prognostic and predictive scores from one network (modified covariate method).

Per-sequence deep features are concatenated and passed through a shared trunk
to two heads: a prognostic score ``g(x)`` (risk under either treatment) and a
predictive score ``f(x)`` (log relative hazard of the treatment, ICT+CCRT vs
CCRT). Following the modified covariate method (Tian et al. 2014), the
treatment enters as ``T = +1/2`` (treated) or ``-1/2`` (control), and the
Cox loss is applied to the log hazard ``g(x) + T f(x)``: ``f`` is then the
log hazard ratio of treated vs control for a patient with features ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def treatment_interaction(prognostic: torch.Tensor, predictive: torch.Tensor,
                          treated: torch.Tensor) -> torch.Tensor:
    """Log hazard ``g + T f`` with ``T = treated - 1/2`` (``treated`` coded 0/1).

    Parameters
    ----------
    prognostic, predictive : Tensor, shape (n,)
    treated : Tensor, shape (n,), values 0 or 1
    """
    if not bool(((treated == 0) | (treated == 1)).all()):
        raise ValueError("treated: must be coded 0 (control) or 1 (treated)")
    return prognostic + (treated.to(predictive.dtype) - 0.5) * predictive


class MultiTaskCox(nn.Module):
    """Shared trunk with a prognostic and a predictive head.

    Parameters
    ----------
    in_features : int or sequence of int
        Feature width, or the width of each sequence's features (concatenated).
    hidden : sequence of int
        Trunk layer widths; ``()`` makes both heads linear in the features.
    dropout : float
    """

    def __init__(self, in_features: int | Sequence[int], hidden: Sequence[int] = (64,),
                 dropout: float = 0.25) -> None:
        super().__init__()
        widths = [in_features] if isinstance(in_features, int) else list(in_features)
        self.in_features = sum(widths)
        layers: list[nn.Module] = []
        width = self.in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.prognostic = nn.Linear(width, 1)
        self.predictive = nn.Linear(width, 1)
        # feature standardization learned on the training cohort, applied locked
        self.register_buffer("shift", torch.zeros(self.in_features))
        self.register_buffer("scale", torch.ones(self.in_features))

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prognostic and predictive scores, each of shape (n,)."""
        x = features if isinstance(features, torch.Tensor) else torch.cat(list(features), dim=1)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"features: expected (n, {self.in_features}), got {tuple(x.shape)}")
        z = self.trunk((x - self.shift) / self.scale)
        return self.prognostic(z).squeeze(-1), self.predictive(z).squeeze(-1)

    def log_hazard(self, features: torch.Tensor | Sequence[torch.Tensor],
                   treated: torch.Tensor) -> torch.Tensor:
        """``g(x) + (treated - 1/2) f(x)``, the quantity that enters the Cox loss."""
        g, f = self(features)
        return treatment_interaction(g, f, treated)


class MultiTaskEnsemble(nn.Module):
    """Mean of several :class:`MultiTaskCox` members' prognostic and predictive scores.

    The scores are averaged on their own scale, :math:`\\bar g = \\frac1K \\sum_k g_k`
    and :math:`\\bar f = \\frac1K \\sum_k f_k`, so that :math:`\\bar f` stays a log
    hazard ratio of the treatment and :math:`\\bar g + T \\bar f` is the mean of the
    members' log hazards.

    Parameters
    ----------
    members : sequence of MultiTaskCox
        Same input width; trained on different folds.
    """

    def __init__(self, members: Sequence[MultiTaskCox]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"members: an ensemble needs at least 2, got {len(members)}")
        widths = {m.in_features for m in members}
        if len(widths) != 1:
            raise ValueError(f"members: input widths differ ({sorted(widths)})")
        self.members = nn.ModuleList(members)
        self.in_features = widths.pop()

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean prognostic and predictive scores, each of shape (n,)."""
        g, f = zip(*(m(features) for m in self.members), strict=True)
        return torch.stack(g).mean(0), torch.stack(f).mean(0)

    log_hazard = MultiTaskCox.log_hazard  # of the mean scores
