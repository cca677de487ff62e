"""Auxiliary regression targets for a network: principal components of handcrafted features.

A survival network learns its image measurements from the Cox loss alone, and a
few hundred patients give that loss little to learn from. Handcrafted radiomic
features of the same ROI (volume, sphericity, texture) are measurements that
need no outcome, so a network can be asked to predict them alongside the risk
(an auxiliary task): its pooled features are pushed to span what they measure,
and the risk head (and its ridge refit) chooses among them. The targets are
the leading principal components of the training patients' features, each
scaled to unit variance, so that a minor direction (the margin's shape, say)
weighs as much as the volume that dominates most feature families.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import rankdata


def normal_scores(x: np.ndarray) -> np.ndarray:
    """Rank-based inverse normal transform of each column of ``x`` (n, p).

    ``Phi^-1((rank - 0.5) / n)``, ties given their mean rank: heavy-tailed features
    (volume, energy) and bounded ones (sphericity) end on one scale.
    """
    n = x.shape[0]
    return ndtri((rankdata(x, axis=0) - 0.5) / n)


def feature_targets(features: pd.DataFrame, ids: Sequence[str], modalities: Sequence[str],
                    n_components: int) -> np.ndarray:
    """Principal-component scores of the handcrafted features of ``ids``, unit variance.

    Parameters
    ----------
    features : DataFrame
        ``patient_id`` and one column per feature, named ``<modality>_<feature>``
        (as ``deepnomo extract`` writes them).
    ids : sequence of str, length n
        The patients to compute targets for (training patients only: the
        components are fitted on them).
    modalities : sequence of str
        Feature columns whose prefix is one of these are used.
    n_components : int
        Components kept, at most the number of usable features and ``n - 1``.

    Returns
    -------
    ndarray, shape (n, n_components), float32
        Column ``j`` is the ``j``-th principal component of the features'
        normal scores (:func:`normal_scores`, each standardized), divided by its
        SD; its sign makes the feature loading most on it load positively.

    Raises
    ------
    ValueError
        Missing patients, no feature columns of ``modalities``, missing or
        non-finite values, or too few patients or features for ``n_components``.
    """
    if n_components < 1:
        raise ValueError(f"n_components: must be >= 1, got {n_components}")
    if "patient_id" not in features.columns:
        raise ValueError("features: column 'patient_id' is missing")
    table = features.assign(patient_id=features["patient_id"].astype(str))
    if table["patient_id"].duplicated().any():
        dup = table.loc[table["patient_id"].duplicated(), "patient_id"].tolist()
        raise ValueError(f"features: duplicate patient_id(s) {dup[:5]}")
    table = table.set_index("patient_id")
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise ValueError(f"features: no row for patient(s) {missing[:5]}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    cols = [c for c in table.columns if c.split("_", 1)[0] in set(modalities)]
    if not cols:
        raise ValueError(f"features: no column of modalities {list(modalities)} "
                         "(expected names '<modality>_<feature>')")
    try:
        x = table.loc[ids, cols].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"features: non-numeric values in {cols[:3]}...: {exc}") from exc
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"features: missing or non-finite value for patient '{ids[r]}', "
                         f"feature '{cols[c]}' ({int(bad.sum())} in all)")
    x = x[:, np.ptp(x, axis=0) > 0]
    n, p = x.shape
    if n_components > min(p, n - 1):
        raise ValueError(f"n_components: {n_components} exceeds what {n} patients and {p} "
                         "varying features allow")
    z = normal_scores(x)
    z = (z - z.mean(0)) / z.std(0)
    u, _, vt = np.linalg.svd(z, full_matrices=False)
    u, vt = u[:, :n_components], vt[:n_components]
    sign = np.sign(vt[np.arange(n_components), np.abs(vt).argmax(axis=1)])
    scores = u * sign * np.sqrt(n)  # each column: mean 0, SD 1
    return scores.astype(np.float32)
