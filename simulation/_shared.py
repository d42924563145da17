"""Labels, structuring elements and argument checks shared by the simulation modules.

Everything here is SIMULATED; the package docstring says how and why.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER, LESION = 0, 1, 2, 3, 4

#: Label value -> (name, colour). Colours are the Okabe-Ito colour-blind-safe palette.
LABELS: dict[int, tuple[str, str]] = {
    BACKGROUND: ("Background", "#000000"),
    CSF: ("CSF", "#56B4E9"),
    GREY_MATTER: ("Grey matter", "#009E73"),
    WHITE_MATTER: ("White matter", "#F0E442"),
    LESION: ("Lesion", "#D55E00"),
}

# 26-connectivity: the structure used to count and drop connected components.
_COMPONENTS_3D = np.ones((3, 3, 3), dtype=bool)
# 6-connectivity: one "voxel" of growth or shrinkage for the raters.
_FACES_3D = ndi.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _nonzero_bounds(array: np.ndarray) -> list[tuple[int, int]] | None:
    """Per axis, ``(first, last + 1)`` of the non-zero voxels; None when there are none."""
    bounds = []
    for axis in range(array.ndim):
        others = tuple(a for a in range(array.ndim) if a != axis)
        hits = np.flatnonzero(array.any(axis=others))
        if hits.size == 0:
            return None
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    return bounds


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def _check_truth(truth: np.ndarray) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"truth: expected a 3-D label map (X, Y, Z), got shape {truth.shape}")
    if truth.dtype == bool:
        truth = truth.astype(np.uint8)
    if not np.issubdtype(truth.dtype, np.integer):
        raise ValueError(f"truth: expected an integer label map, got dtype {truth.dtype}")
    if truth.dtype != np.uint8:
        if truth.size and (truth.min() < 0 or truth.max() > 255):
            raise ValueError(f"truth: label values must lie in 0..255, got {truth.min()}..{truth.max()}")
        truth = truth.astype(np.uint8)
    return truth


def _check_labels(labels: Sequence[int] | None, truth: np.ndarray) -> tuple[int, ...]:
    if labels is None:
        present = np.flatnonzero(np.bincount(truth.reshape(-1), minlength=256))
        return tuple(int(v) for v in present if v != 0)
    values = []
    for value in labels:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"labels: expected integers, got {value!r}")
        if not 1 <= value <= 255:
            raise ValueError(f"labels: values must lie in 1..255 (0 is background), got {value}")
        values.append(int(value))
    if not values:
        raise ValueError("labels: expected at least one label value")
    return tuple(sorted(set(values)))
