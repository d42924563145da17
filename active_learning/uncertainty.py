"""Scan scoring and ordering for active learning: MC-dropout uncertainty, strategies.

Pure module: numpy and scipy only. No torch model, no Django, no paths, no database.
The MC-dropout samples come from :func:`active_learning.training.mc_dropout_probabilities`
(or any other source of per-sample class probabilities).

Entropies are in nats; BALD is clipped at 0 (float rounding). Why a scan's score is the mean
over the predicted foreground and its margin, how the combined strategy weighs rater
disagreement, and the cold-start order: ``docs/active_learning.md``.

References
----------
.. [1] Gal Y, Islam R, Ghahramani Z. Deep Bayesian active learning with image data.
   ICML 2017. (BALD with MC dropout.)
.. [2] Houlsby N, Huszar F, Ghahramani Z, Lengyel M. Bayesian active learning for
   classification and preference learning. arXiv:1112.5745, 2011. (BALD.)
.. [3] Nath V, Yang D, Landman BA, Xu D, Roth HR. Diminishing uncertainty within the
   training pool: active learning for medical image segmentation. IEEE TMI
   40(10):2534-2547, 2021.
.. [4] Sener O, Savarese S. Active learning for convolutional neural networks: a
   core-set approach. ICLR 2018. (Greedy k-centre.)
.. [5] Diaz-Pinto A, et al. MONAI Label: a framework for AI-assisted interactive
   labeling of 3D medical images. MedIA 95:103207, 2024. (Whole-volume epistemic score.)

Examples
--------
>>> import numpy as np
>>> samples = np.stack([[[0.9], [0.1]], [[0.1], [0.9]]])  # T=2 passes, C=2, 1 voxel
>>> round(float(predictive_entropy(samples)[0]), 4)  # mean p = (0.5, 0.5): log 2
0.6931
>>> round(float(bald(samples)[0]), 4)  # log 2 - H(0.9, 0.1)
0.3681
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import rankdata

__all__ = [
    "STRATEGIES",
    "ScanUncertainty",
    "bald",
    "calibration_bins",
    "calibration_summary",
    "combined_scores",
    "diversity_order",
    "expected_entropy",
    "image_features",
    "predictive_entropy",
    "random_order",
    "random_scores",
    "rank_normalise",
    "rank_order",
    "rater_disagreement",
    "scan_uncertainty",
    "scores_from_order",
    "scoring_region",
    "stratified_order",
    "uncertainty_from_moments",
]

#: Strategy names understood by the project (the Django layer maps them to functions).
STRATEGIES: tuple[str, ...] = ("random", "entropy", "bald", "combined", "stratified")

_SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------
# Voxel maps
# --------------------------------------------------------------------------------------


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_samples(samples: Any) -> np.ndarray:
    samples = _as_numpy(samples)
    if samples.ndim < 3:
        raise ValueError(
            f"samples: expected shape (T, C, *spatial) with at least one spatial axis, got {samples.shape}"
        )
    if samples.shape[0] < 1 or samples.shape[1] < 2:
        raise ValueError(f"samples: expected T >= 1 samples of C >= 2 classes, got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"samples: expected floating probabilities, got dtype {samples.dtype}")
    samples = samples.astype(np.float64, copy=False)
    if not np.isfinite(samples).all():
        raise ValueError("samples: contains NaN or infinite values")
    if samples.min() < -_SUM_TOLERANCE or samples.max() > 1 + _SUM_TOLERANCE:
        raise ValueError(
            f"samples: probabilities must lie in [0, 1], got {samples.min():.4g}.."
            f"{samples.max():.4g} (pass softmax outputs, not logits)"
        )
    sums = samples.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > _SUM_TOLERANCE:
        raise ValueError(f"samples: class probabilities must sum to 1 over axis 1, off by up to {worst:.3g}")
    return samples


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Shannon entropy in nats along ``axis``; 0 log 0 = 0."""
    p = np.clip(p, 0.0, 1.0)
    return -(p * np.log(np.maximum(p, np.finfo(np.float64).tiny))).sum(axis=axis)


def predictive_entropy(samples: Any) -> np.ndarray:
    """Entropy of the mean prediction, ``H[(1/T) sum_t p_t]``, per voxel.

    Parameters
    ----------
    samples : ndarray or Tensor of shape (T, C, *spatial), float
        Class probabilities of T stochastic passes (MC dropout), summing to 1 over C;
        not modified.

    Returns
    -------
    ndarray of shape spatial, float32
        Nats, in ``[0, log C]``.

    Examples
    --------
    >>> predictive_entropy(np.full((3, 2, 1), 0.5))
    array([0.6931472], dtype=float32)
    """
    samples = _check_samples(samples)
    return _entropy(samples.mean(axis=0), axis=0).astype(np.float32)


def expected_entropy(samples: Any) -> np.ndarray:
    """Mean entropy of the individual passes, ``(1/T) sum_t H[p_t]``, per voxel (nats).

    Same parameters and return as :func:`predictive_entropy`.

    Examples
    --------
    >>> s = np.stack([[[1.0], [0.0]], [[0.0], [1.0]]])  # two confident, opposite passes
    >>> expected_entropy(s)
    array([0.], dtype=float32)
    """
    samples = _check_samples(samples)
    return _entropy(samples, axis=1).mean(axis=0).astype(np.float32)


def bald(samples: Any) -> np.ndarray:
    """BALD mutual information ``H[mean_t p_t] - mean_t H[p_t]`` per voxel [1]_ [2]_.

    High where the passes are each confident but disagree (epistemic uncertainty); 0
    where every pass gives the same distribution, however flat.

    Same parameters as :func:`predictive_entropy`; returns float32 nats in
    ``[0, log C]`` (clipped at 0 against rounding).

    Examples
    --------
    >>> s = np.stack([[[1.0], [0.0]], [[0.0], [1.0]]])
    >>> bald(s)  # log 2 - 0
    array([0.6931472], dtype=float32)
    >>> bald(np.full((4, 2, 1), 0.5))  # flat but identical passes
    array([0.], dtype=float32)
    """
    samples = _check_samples(samples)
    total = _entropy(samples.mean(axis=0), axis=0)
    aleatoric = _entropy(samples, axis=1).mean(axis=0)
    return np.maximum(total - aleatoric, 0.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# Per-scan summary
# --------------------------------------------------------------------------------------


def _check_margin(margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real):
        raise ValueError(f"margin: expected a number of voxels >= 0, got {margin!r}")
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin: expected a number of voxels >= 0, got {margin!r}")
    return float(margin)


def scoring_region(mean_probabilities: Any, *, margin: float = 3) -> tuple[np.ndarray, bool]:
    """Voxels a scan's score averages over: predicted foreground dilated by ``margin``.

    Parameters
    ----------
    mean_probabilities : ndarray of shape (C, *spatial), float
        Mean class probabilities; class 0 is background. Not modified.
    margin : float, keyword-only
        Dilation radius in voxels (Euclidean distance to the nearest foreground voxel
        ``<= margin``). 0 keeps the predicted foreground only.

    Returns
    -------
    region : ndarray of shape spatial, bool
    whole_volume : bool
        True when nothing was predicted as foreground and ``region`` is all True.

    Examples
    --------
    >>> p = np.zeros((2, 7)); p[0] = 1.0; p[:, 3] = (0.2, 0.8)  # foreground at index 3
    >>> region, whole = scoring_region(p, margin=2)
    >>> region.astype(int).tolist(), whole
    ([0, 1, 1, 1, 1, 1, 0], False)
    """
    margin = _check_margin(margin)
    probs = _as_numpy(mean_probabilities)
    if probs.ndim < 2 or probs.shape[0] < 2:
        raise ValueError(f"mean_probabilities: expected shape (C, *spatial) with C >= 2, got {probs.shape}")
    foreground = np.argmax(probs, axis=0) != 0
    if not foreground.any():
        return np.ones(foreground.shape, dtype=bool), True
    if margin == 0:
        return foreground, False
    distance = ndi.distance_transform_edt(~foreground)
    return distance <= margin, False


@dataclass(frozen=True)
class ScanUncertainty:
    """One scan's uncertainty summary.

    Attributes
    ----------
    entropy : float
        Mean predictive entropy over the scoring region, nats.
    bald : float
        Mean BALD over the same region, nats.
    foreground_voxels : int
        Voxels predicted as foreground (argmax of the mean softmax != class 0).
    region_voxels : int
        Voxels averaged over.
    whole_volume : bool
        True when the prediction was empty and the whole volume was used.
    """

    entropy: float
    bald: float
    foreground_voxels: int
    region_voxels: int
    whole_volume: bool

    def score(self, strategy: str) -> float:
        """The value ranked by ``strategy`` ("entropy" or "bald")."""
        if strategy == "entropy":
            return self.entropy
        if strategy == "bald":
            return self.bald
        raise ValueError(f"strategy: expected 'entropy' or 'bald', got {strategy!r}")


def scan_uncertainty(samples: Any, *, margin: float = 3) -> ScanUncertainty:
    """Summarise MC-dropout samples of one scan (see "Scoring region" above).

    Parameters
    ----------
    samples : ndarray or Tensor of shape (T, C, *spatial), float
        Class probabilities of T passes on the working grid; class 0 is background.
    margin : float, keyword-only
        Dilation of the predicted foreground, in voxels (default 3).

    Returns
    -------
    ScanUncertainty

    Examples
    --------
    >>> s = np.zeros((2, 2, 5)); s[:, 0] = 1.0           # background everywhere ...
    >>> s[0, :, 2] = (0.0, 1.0); s[1, :, 2] = (0.5, 0.5)  # ... but voxel 2
    >>> u = scan_uncertainty(s, margin=1)
    >>> u.region_voxels, round(u.entropy, 4)  # voxels 1..3; (H(.25, .75) + 0 + 0) / 3
    (3, 0.1874)
    """
    samples = _check_samples(samples)
    return uncertainty_from_moments(samples.mean(axis=0), _entropy(samples, axis=1).mean(axis=0), margin=margin)


def _region_mean(values: np.ndarray, region: np.ndarray, top_k: int | None) -> float:
    inside = values[region]
    if top_k is None or top_k >= inside.size:
        return float(inside.sum() / inside.size)
    return float(np.partition(inside, inside.size - top_k)[inside.size - top_k :].mean())


def uncertainty_from_moments(
    mean_probabilities: Any, expected_entropy: Any, *, margin: float = 3, top_k: int | None = None
) -> ScanUncertainty:
    """Summarise a scan from the mean softmax and the mean per-pass entropy of T MC passes.

    Predictive entropy ``H(mean)``, BALD ``H(mean) - expected_entropy`` (clipped at 0), each
    averaged over the scoring region (:func:`scoring_region`), or over its ``top_k`` highest
    voxels: a scan with a few uncertain lesion voxels inside a large, confident brain then
    scores by those voxels, not by the brain's size.

    Parameters
    ----------
    mean_probabilities : ndarray of shape (C, *spatial), float
    expected_entropy : ndarray of shape spatial, float
        Mean over passes of each pass's entropy (nats; :func:`expected_entropy` of the samples).
    margin : float, keyword-only
    top_k : int or None, keyword-only
        None: the mean over the region.

    Examples
    --------
    >>> mean = np.array([[0.5, 1.0, 1.0, 0.9], [0.5, 0.0, 0.0, 0.1]])
    >>> u = uncertainty_from_moments(mean, np.zeros(4), margin=3, top_k=1)
    >>> round(u.entropy, 4), u.whole_volume   # nothing predicted: whole volume, the top voxel
    (0.6931, True)
    """
    mean = _check_samples(_as_numpy(mean_probabilities)[None])[0]
    aleatoric = _as_numpy(expected_entropy).astype(np.float64)
    if aleatoric.shape != mean.shape[1:]:
        raise ValueError(f"expected_entropy: shape {aleatoric.shape} differs from {mean.shape[1:]}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k: expected None or an integer >= 1, got {top_k!r}")
    region, whole = scoring_region(mean, margin=margin)
    total = _entropy(mean, axis=0)
    mutual = np.maximum(total - aleatoric, 0.0)
    return ScanUncertainty(
        entropy=_region_mean(total, region, top_k),
        bald=_region_mean(mutual, region, top_k),
        foreground_voxels=int((np.argmax(mean, axis=0) != 0).sum()),
        region_voxels=int(region.sum()),
        whole_volume=whole,
    )


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------

CALIBRATION_BINS = 10


def calibration_bins(probabilities: Any, target: Any, *, n_bins: int = CALIBRATION_BINS) -> dict[str, list]:
    """Reliability-diagram counts of one scan over the voxels predicted OR labelled as foreground.

    Background far from any structure is confidently right and would make every model look
    calibrated, so those voxels are left out. Per equal-width bin of confidence (the highest
    class probability): voxels, summed confidence, voxels whose argmax is the true class.

    Parameters
    ----------
    probabilities : ndarray of shape (C, *spatial), float
    target : ndarray of shape spatial, integer class indices

    Returns
    -------
    dict with lists ``count``, ``confidence``, ``correct`` of ``n_bins`` numbers (add them up
    over scans, then :func:`calibration_summary`).

    Examples
    --------
    >>> p = np.array([[0.9, 0.3, 0.6], [0.1, 0.7, 0.4]]); t = np.array([0, 1, 0])
    >>> calibration_bins(p, t, n_bins=2)["count"]   # voxels 0 and 2: background in both: left out
    [0, 1]
    """
    probs = _as_numpy(probabilities).astype(np.float64)
    target = np.asarray(target)
    if probs.ndim < 2 or probs.shape[1:] != target.shape:
        raise ValueError(f"target: shape {target.shape} does not match probabilities {probs.shape}")
    predicted = probs.argmax(axis=0)
    region = (predicted != 0) | (target != 0)
    confidence = probs.max(axis=0)[region]
    correct = (predicted == target)[region]
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    return {
        "count": np.bincount(index, minlength=n_bins).tolist(),
        "confidence": np.bincount(index, weights=confidence, minlength=n_bins).tolist(),
        "correct": np.bincount(index, weights=correct.astype(float), minlength=n_bins).tolist(),
    }


def calibration_summary(bins: Sequence[dict[str, list]]) -> dict[str, Any]:
    """Expected calibration error (Guo et al., ICML 2017) over scans' :func:`calibration_bins`.

    Returns
    -------
    dict
        ``ece`` (sum over bins of ``n_b / N * |accuracy_b - confidence_b|``; None without voxels),
        ``voxels`` (N), ``bins`` (per bin: ``low``, ``high``, ``count``, ``confidence``,
        ``accuracy``; None where empty) and ``region`` (which voxels).

    >>> calibration_summary([{"count": [0, 2], "confidence": [0, 1.4], "correct": [0, 1]}])["ece"]
    0.2
    """
    bins = list(bins)
    n_bins = len(bins[0]["count"]) if bins else CALIBRATION_BINS
    count = np.zeros(n_bins)
    confidence = np.zeros(n_bins)
    correct = np.zeros(n_bins)
    for b in bins:
        count += b["count"]
        confidence += b["confidence"]
        correct += b["correct"]
    total = float(count.sum())
    rows = []
    for i in range(n_bins):
        n = count[i]
        rows.append(
            {
                "low": i / n_bins,
                "high": (i + 1) / n_bins,
                "count": int(n),
                "confidence": float(confidence[i] / n) if n else None,
                "accuracy": float(correct[i] / n) if n else None,
            }
        )
    ece = float(sum(abs(correct[i] - confidence[i]) for i in range(n_bins)) / total) if total else None
    return {
        "ece": None if ece is None else round(ece, 6),
        "voxels": int(total),
        "bins": rows,
        "region": "validation voxels predicted or labelled as foreground",
    }


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n: expected a number of scans >= 0, got {n!r}")
    return int(n)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def _check_scores(values: Any, name: str, *, allow_nan: bool = False) -> np.ndarray:
    values = _as_numpy(values)
    if values.ndim != 1:
        raise ValueError(f"{name}: expected one value per scan (1-D), got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) & ~(np.isnan(values) if allow_nan else False)
    if bad.any():
        raise ValueError(f"{name}: non-finite values at indices {np.flatnonzero(bad)[:10].tolist()}")
    return values


def random_scores(n: int, *, seed: int) -> np.ndarray:
    """Uniform random scores in [0, 1) for ``n`` scans; same seed, same scores.

    Returns
    -------
    ndarray of shape (n,), float64

    Examples
    --------
    >>> bool((random_scores(4, seed=0) == random_scores(4, seed=0)).all())
    True
    """
    return np.random.default_rng(_check_seed(seed)).random(_check_count(n))


def random_order(n: int, *, seed: int) -> np.ndarray:
    """A seeded random permutation of ``range(n)`` (cold-start fallback).

    Examples
    --------
    >>> sorted(random_order(5, seed=3).tolist())
    [0, 1, 2, 3, 4]
    """
    return np.random.default_rng(_check_seed(seed)).permutation(_check_count(n))


def rank_order(scores: Any) -> np.ndarray:
    """Indices of ``scores`` from highest to lowest; ties keep the lower index first.

    Examples
    --------
    >>> rank_order([0.2, 0.9, 0.2, 0.5]).tolist()
    [1, 3, 0, 2]
    """
    scores = _check_scores(scores, "scores")
    return np.argsort(-scores, kind="stable")


def rank_normalise(values: Any) -> np.ndarray:
    """Ranks scaled to [0, 1]: ``(rank - 1) / (n - 1)``, ties share their mean rank.

    One value gives 0.5; no values give an empty array.

    Examples
    --------
    >>> rank_normalise([3.0, 1.0, 2.0, 2.0]).tolist()
    [1.0, 0.0, 0.5, 0.5]
    """
    values = _check_scores(values, "values")
    if values.size == 0:
        return values
    if values.size == 1:
        return np.array([0.5])
    return (rankdata(values, method="average") - 1.0) / (values.size - 1.0)


def rater_disagreement(label_maps: Any, *, labels: Sequence[int] | None = None) -> float:
    """1 - mean pairwise Dice between raters' label maps of one scan.

    A pair's Dice is the mean, over the labels either rater used (or ``labels``), of
    the per-label Dice; a pair where both raters left every such label empty agrees
    (Dice 1). Fewer than two raters: NaN (no disagreement can be measured; the
    combined strategy then uses the model alone).

    Parameters
    ----------
    label_maps : ndarray of shape (R, *spatial), integer
        One label map per rater, same grid; 0 is background. Not modified.
    labels : sequence of int, optional
        Label values to compare (non-zero). None: every non-zero value present.

    Returns
    -------
    float
        In [0, 1]; 0 when all raters agree.

    Examples
    --------
    >>> a = np.array([0, 1, 1, 1, 1, 0]); b = np.array([0, 0, 1, 1, 1, 1])
    >>> rater_disagreement(np.stack([a, b]))  # Dice 2*3/(4+4) = 0.75
    0.25
    """
    maps = _as_numpy(label_maps)
    if maps.ndim < 2:
        raise ValueError(f"label_maps: expected shape (R, *spatial), got {maps.shape}")
    if maps.dtype == bool:
        maps = maps.astype(np.uint8)
    if not np.issubdtype(maps.dtype, np.integer):
        raise ValueError(f"label_maps: expected integer label maps, got dtype {maps.dtype}")
    if maps.shape[0] < 2:
        return float("nan")
    if labels is None:
        values = [int(v) for v in np.unique(maps) if v != 0]
    else:
        values = []
        for v in labels:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v == 0:
                raise ValueError(f"labels: expected non-zero integers, got {v!r}")
            values.append(int(v))
    dices = []
    for i in range(maps.shape[0]):
        for j in range(i + 1, maps.shape[0]):
            per_label = []
            for v in values:
                a, b = maps[i] == v, maps[j] == v
                total = int(a.sum()) + int(b.sum())
                if total:
                    per_label.append(2.0 * int((a & b).sum()) / total)
            dices.append(float(np.mean(per_label)) if per_label else 1.0)
    return float(1.0 - np.mean(dices))


def combined_scores(uncertainty: Any, disagreement: Any, *, weight: float = 0.5) -> np.ndarray:
    """Blend model uncertainty with rater disagreement (see "Combined" above).

    Parameters
    ----------
    uncertainty : ndarray of shape (N,), float
        Model score per scan (entropy or BALD); finite.
    disagreement : ndarray of shape (N,), float
        Rater disagreement per scan in [0, 1]; NaN where no two raters labelled it.
    weight : float, keyword-only
        Weight of the disagreement, in [0, 1] (default 0.5).

    Returns
    -------
    ndarray of shape (N,), float64
        In [0, 1]; higher = label first.

    Examples
    --------
    >>> combined_scores([0.1, 0.3, 0.2], [np.nan, 0.0, 0.8], weight=0.5).tolist()
    [0.0, 0.5, 0.65]
    """
    u = _check_scores(uncertainty, "uncertainty")
    d = _check_scores(disagreement, "disagreement", allow_nan=True)
    if d.shape != u.shape:
        raise ValueError(f"disagreement: expected one value per scan ({u.size}), got {d.size}")
    known = ~np.isnan(d)
    if (d[known] < 0).any() or (d[known] > 1).any():
        raise ValueError("disagreement: values must lie in [0, 1] (NaN for no raters)")
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight <= 1:
        raise ValueError(f"weight: expected a number in [0, 1], got {weight!r}")
    ranked = rank_normalise(u)
    return np.where(known, (1.0 - weight) * ranked + weight * np.nan_to_num(d), ranked)


def scores_from_order(order: Any) -> np.ndarray:
    """Scores for a labelling order: 1.0 for ``order[0]`` down to 0.0 for the last (one scan: 1.0).

    Examples
    --------
    >>> scores_from_order([2, 0, 1]).tolist()
    [0.5, 0.0, 1.0]
    """
    order = _as_numpy(order).astype(np.int64)
    if order.ndim != 1 or sorted(order.tolist()) != list(range(order.size)):
        raise ValueError(f"order: expected a permutation of range(n), got {order.tolist()[:10]}")
    scores = np.empty(order.size)
    scores[order] = np.linspace(1.0, 0.0, order.size)
    return scores


def stratified_order(scores: Any, strata_by: Any, *, n_strata: int) -> np.ndarray:
    """Scans in labelling order, spread over strata of ``strata_by``, by ``scores`` within each.

    The scans are cut into ``n_strata`` strata of equal count by ``strata_by`` (lowest first,
    ties in index order); the order takes the best-scored scan of every stratum, then the
    second of every stratum, and so on, each round best score first. So any ``n_strata``
    consecutive scans from the top hold one scan of each stratum: a batch keeps the spread of
    ``strata_by`` (for lesions, the expected lesion volume, lesion-free-looking scans included)
    and uncertainty chooses within it. On the SIMULATED lesion cohort plain uncertainty picked
    lesion-rich cases and few negatives, and its models over-called (docs/active_learning.md).

    Parameters
    ----------
    scores : ndarray of shape (N,), float
        Higher = more worth labelling (entropy, BALD); finite.
    strata_by : ndarray of shape (N,), float
        The quantity to spread the batch over; finite.
    n_strata : int
        At least 1; more than N gives N strata of one scan (the order of ``scores``).

    Returns
    -------
    ndarray of shape (N,), int64
        A permutation of ``range(N)``.

    Examples
    --------
    >>> stratified_order([0.1, 0.9, 0.5, 0.2, 0.8, 0.3], [0, 0.1, 5, 6, 10, 11], n_strata=3).tolist()
    [1, 4, 2, 5, 3, 0]
    """
    scores = _check_scores(scores, "scores")
    strata_by = _check_scores(strata_by, "strata_by")
    if strata_by.shape != scores.shape:
        raise ValueError(f"strata_by: expected one value per scan ({scores.size}), got {strata_by.size}")
    if isinstance(n_strata, bool) or not isinstance(n_strata, numbers.Integral) or n_strata < 1:
        raise ValueError(f"n_strata: expected an integer >= 1, got {n_strata!r}")
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    strata = np.array_split(np.argsort(strata_by, kind="stable"), min(int(n_strata), scores.size))
    ranked = [stratum[np.argsort(-scores[stratum], kind="stable")] for stratum in strata]
    order = []
    for depth in range(max(len(r) for r in ranked)):
        layer = np.array([r[depth] for r in ranked if depth < len(r)])
        order.extend(layer[np.argsort(-scores[layer], kind="stable")].tolist())
    return np.asarray(order, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Cold start
# --------------------------------------------------------------------------------------


def _block_means(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Means over a grid of nearly equal blocks (``np.add.reduceat`` per axis)."""
    out = volume.astype(np.float64)
    for axis, k in enumerate(shape):
        n = out.shape[axis]
        k = min(int(k), n)
        starts = np.linspace(0, n, k + 1).astype(int)[:-1]
        counts = np.diff(np.append(starts, n))
        out = np.add.reduceat(out, starts, axis=axis)
        out /= counts.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    return out


def image_features(
    image: Any,
    *,
    thumbnail_shape: Sequence[int] = (6, 6, 6),
    bins: int = 16,
    value_range: tuple[float, float] = (-5.0, 5.0),
) -> np.ndarray:
    """Cheap appearance features of one scan for the cold-start diversity order.

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z), float
        Normalised intensities, e.g. the working image of
        :func:`active_learning.working_grid.to_working`; not modified.
    thumbnail_shape : sequence of 3 int, keyword-only
        Block means of the image on this coarse grid (layout, size, shape).
    bins : int, keyword-only
        Histogram bins over ``value_range`` (contrast); fractions of voxels, values
        outside the range go to the end bins.
    value_range : (float, float), keyword-only

    Returns
    -------
    ndarray of shape (prod(thumbnail_shape) + bins,), float64

    Examples
    --------
    >>> image_features(np.zeros((8, 8, 8)), thumbnail_shape=(2, 2, 2), bins=4).shape
    (12,)
    """
    image = _as_numpy(image)
    if image.ndim != 3:
        raise ValueError(f"image: expected a 3-D array (X, Y, Z), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
        raise ValueError("image: expected finite real intensities")
    shape = tuple(int(k) for k in thumbnail_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"thumbnail_shape: expected 3 positive sizes, got {thumbnail_shape!r}")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range: expected (low, high) with high > low, got {value_range!r}")
    thumb = _block_means(image, shape).reshape(-1)
    counts, _ = np.histogram(np.clip(image, lo, hi), bins=int(bins), range=(lo, hi))
    return np.concatenate([thumb, counts / max(image.size, 1)])


def diversity_order(features: Any, *, selected: Sequence[int] = ()) -> np.ndarray:
    """Greedy k-centre (farthest-point) order of scans for a cold start [4]_.

    Parameters
    ----------
    features : ndarray of shape (N, F), float
        One feature row per scan (:func:`image_features`); each column is standardised
        over the N scans (constant columns ignored). Not modified.
    selected : sequence of int, keyword-only
        Scans already labelled: they act as centres and are left out of the order.

    Returns
    -------
    ndarray of shape (N - len(selected),), int64
        Scan indices in labelling order. With nothing selected the first is the scan
        nearest the mean; each next is the one farthest (Euclidean) from every scan
        chosen or selected so far; ties go to the lower index. Deterministic.

    Examples
    --------
    >>> f = np.array([[0.0], [1.0], [4.0], [-3.0], [10.0]])  # mean 2.4
    >>> diversity_order(f).tolist()  # 1 is typical, then 10, -3, 4, 0
    [1, 4, 3, 2, 0]
    """
    x = _as_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"features: expected shape (N, F), got {x.shape}")
    if x.size and (not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all()):
        raise ValueError("features: expected finite numbers")
    n = x.shape[0]
    chosen = []
    for i in selected:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n:
            raise ValueError(f"selected: expected scan indices in 0..{n - 1}, got {i!r}")
        if int(i) not in chosen:
            chosen.append(int(i))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    x = x.astype(np.float64)
    std = x.std(axis=0)
    keep = std > 0
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep] if keep.any() else np.zeros((n, 1))
    order: list[int] = []
    remaining = np.ones(n, dtype=bool)
    remaining[chosen] = False
    if chosen:
        nearest = np.min(np.linalg.norm(z[:, None, :] - z[None, chosen, :], axis=2), axis=1)
    else:
        first = int(np.argmin(np.linalg.norm(z, axis=1)))
        order.append(first)
        remaining[first] = False
        nearest = np.linalg.norm(z - z[first], axis=1)
    while remaining.any():
        candidates = np.where(remaining, nearest, -np.inf)
        nxt = int(np.argmax(candidates))  # first maximum: lower index wins ties
        order.append(nxt)
        remaining[nxt] = False
        nearest = np.minimum(nearest, np.linalg.norm(z - z[nxt], axis=1))
    return np.asarray(order, dtype=np.int64)
