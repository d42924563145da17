"""Fusing raters' label maps for a consensus run, and what is measured on the result.

The arithmetic of a run, apart from the database: run a fusion kernel by method name
(:func:`fuse`), each rater's performance against the consensus (:func:`rater_performance`),
and how unsure the consensus is (:func:`ambiguity`). Pure: numpy and the kernels only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from . import staple, voting

#: Method names (``consensus.models.Method`` values).
STAPLE = "staple"
MAJORITY_VOTE = "majority_vote"
KERNELS = {STAPLE: staple.staple_multilabel, MAJORITY_VOTE: voting.majority_vote}
_NOT_OPTIONS = {"segmentations", "labels"}

#: A voxel is uncertain when the posterior of its consensus label is below this.
UNCERTAIN_BELOW = 0.9


def method_defaults(method: str) -> dict:
    """The kernel's keyword options and their defaults: what the app runs when nothing is asked."""
    signature = inspect.signature(KERNELS[method])
    return {
        name: param.default
        for name, param in signature.parameters.items()
        if name not in _NOT_OPTIONS and param.default is not inspect.Parameter.empty
    }


@dataclass(frozen=True)
class Fusion:
    labels: np.ndarray  # (X, Y, Z) consensus labels
    posterior: np.ndarray  # (L, X, Y, Z) float32
    label_values: list[int]
    confusion: np.ndarray | None  # (R, L, L) rater label x true label, or None
    prior: np.ndarray | None
    iterations: int | None
    converged: bool | None
    options: dict
    decision: dict | None = None  # what STAPLE's decision rule did (collapse, margin)


def fuse(segmentations: np.ndarray, *, method: str, options: dict, values: list[int]) -> Fusion:
    """Run the method's kernel; for majority vote the 'posterior' is the vote fraction.

    Examples
    --------
    >>> segs = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [0, 1, 1, 2]], dtype=np.uint8)
    >>> fusion = fuse(segs, method="staple", options={}, values=[0, 1, 2])
    >>> fusion.labels.tolist(), fusion.decision["rule"]
    ([0, 1, 1, 2], 'majority vote: 3 raters')
    >>> round(float(label_posterior(fusion)[2]), 3)  # a 2-1 vote of three raters, calibrated
    0.965
    >>> rater_performance(segs, fusion)[1]["dice"]["2"]
    0.6666666666666666
    """
    if method == STAPLE:
        result = staple.staple_multilabel(segmentations, labels=values, **options)
        return Fusion(
            labels=result.labels,
            posterior=result.posterior,
            label_values=[int(v) for v in result.label_values],
            confusion=result.confusion,
            prior=result.prior,
            iterations=result.iterations,
            converged=result.converged,
            options={**result.options, "decision": result.decision},
            decision=result.decision,
        )
    result = voting.majority_vote(segmentations, labels=values, **options)
    label_values = [int(v) for v in result.label_values]
    fractions = np.stack([(segmentations == v).mean(axis=0, dtype=np.float32) for v in label_values])
    return Fusion(
        labels=result.labels,
        posterior=fractions,
        label_values=label_values,
        confusion=None,
        prior=None,
        iterations=None,
        converged=None,
        options={**options, "ties": int(result.ties)},
    )


def rater_performance(segmentations: np.ndarray, fusion: Fusion) -> list[dict]:
    """Per rater and label: sensitivity, specificity (from STAPLE's confusion matrix when there is
    one, else measured against the consensus) and Dice against the consensus."""
    values = fusion.label_values
    n = len(values)
    index = np.zeros(max(values) + 1, np.intp)
    index[values] = np.arange(n)
    truth = index[fusion.labels.ravel()]
    # Specificity weighs the other true labels by their mass over the whole volume (the
    # kernel's prior may describe only the contested voxels).
    mass = fusion.posterior.reshape(n, -1).sum(axis=1, dtype=np.float64)
    rows = []
    for r in range(segmentations.shape[0]):
        said = index[segmentations[r].ravel()]
        counts = np.bincount(said * n + truth, minlength=n * n).reshape(n, n).astype(np.float64)  # [said][truth]
        sens, spec, dice = {}, {}, {}
        for i, value in enumerate(values):
            tp = counts[i, i]
            fn = counts[:, i].sum() - tp
            fp = counts[i, :].sum() - tp
            tn = counts.sum() - tp - fn - fp
            dice[str(value)] = _finite(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else None
            if fusion.confusion is not None:
                theta = fusion.confusion[r]
                others = [c for c in range(n) if c != i]
                weight = mass[others]
                sens[str(value)] = _finite(theta[i, i])
                spec[str(value)] = _finite(
                    np.nansum(weight * (1.0 - theta[i, others])) / weight.sum() if weight.sum() else np.nan
                )
            else:
                sens[str(value)] = _finite(tp / (tp + fn)) if (tp + fn) else None
                spec[str(value)] = _finite(tn / (tn + fp)) if (tn + fp) else None
        rows.append(
            {
                "sensitivity": sens,
                "specificity": spec,
                "dice": dice,
                "confusion": None if fusion.confusion is None else _jsonable(fusion.confusion[r]),
            }
        )
    return rows


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(array: np.ndarray) -> list:
    return [[_finite(v) for v in row] for row in np.asarray(array, dtype=np.float64)]


def label_posterior(fusion: Fusion) -> np.ndarray:
    """The posterior of the consensus label at every voxel: how likely that label is right."""
    index = np.zeros(max(fusion.label_values) + 1, np.intp)
    index[fusion.label_values] = np.arange(len(fusion.label_values))
    return np.take_along_axis(fusion.posterior, index[fusion.labels][None], axis=0)[0]


def ambiguity(segmentations: np.ndarray, fusion: Fusion, report: dict | None) -> tuple[float, dict]:
    """How unsure the consensus is: the fraction of labelled voxels whose consensus label has a
    posterior below :data:`UNCERTAIN_BELOW` (the score), the expected fraction of labelled voxels
    whose label is wrong (the mean of 1 - posterior; the kernel's posterior is calibrated), and
    the lowest pairwise rater Dice."""
    labelled = (segmentations != 0).any(axis=0) | (fusion.labels != 0)
    n = int(labelled.sum())
    chosen = label_posterior(fusion)[labelled]
    uncertain = int((chosen < UNCERTAIN_BELOW).sum()) if n else 0
    score = uncertain / n if n else 0.0
    details = {
        "uncertain_fraction": score,
        "uncertain_voxels": uncertain,
        "labelled_voxels": n,
        "uncertain_below": UNCERTAIN_BELOW,
        "expected_error_fraction": float((1.0 - chosen.astype(np.float64)).mean()) if n else 0.0,
    }
    if report and report.get("pairs"):
        per_pair: dict[tuple, list] = {}
        for pair in report["pairs"]:
            if pair.get("dice") is not None:
                per_pair.setdefault((pair["rater_a"], pair["rater_b"]), []).append(pair["dice"])
        if per_pair:
            means = {k: float(np.mean(v)) for k, v in per_pair.items()}
            worst = min(means, key=means.get)
            details["min_pair_mean_dice"] = means[worst]
            details["min_pair"] = list(worst)
    return score, details
