"""Editing operations on a label map that the browser cannot do fast: islands, margin, smoothing,
fill between slices, grow from seeds.

Every operation takes a rater's label map (uint8, ``(X, Y, Z)`` on the scan's stored RAS+ grid),
the voxel size in mm, and returns a new label map; the input is never modified. ``locked`` holds
label values (1..255) the operation never changes: a voxel of a locked label keeps its value and
no voxel becomes one. An operation aimed at a locked label is refused (:class:`EditRefused`,
code ``label_locked``); background (0) cannot be locked. Distances and sizes are in millimetres
with the voxel spacing, so anisotropic voxels are handled. Pure: numpy, scipy, scikit-image.

- :func:`islands`: connected pieces of a label (26-connected: voxels touching by a face, an edge
  or a corner), and remove those under a volume, keep the largest, or keep the one under a
  voxel; removed voxels become background.
- :func:`margin`: grow a label by ``mm`` (Euclidean distance) into unlocked voxels, or shrink it
  (negative ``mm``) into background.
- :func:`smooth`: Gaussian smoothing of a label's mask (sigma in mm) thresholded at 0.5: the
  label loses voxels to background and gains only background voxels.
- :func:`interpolate`: shape-based fill between the drawn slices of a label along one axis
  (signed distance maps of consecutive drawn slices, linearly interpolated).
- :func:`grow_from_seeds`: strokes of two or more labels grown over a region of an image by a
  geodesic-distance competition (each unknown voxel takes the label of the seed nearest along
  the image, the cost of a path growing with the intensity gradient it crosses, as Slicer's Grow
  from seeds), computed by raster sweeps, the boundary then refined by the seeds' intensities.
  How this was chosen, with measurements: ``docs/editing.md``.

>>> labels = np.zeros((6, 6, 6), np.uint8); labels[1:4, 1:4, 1:4] = 1; labels[5, 5, 5] = 1
>>> int((islands(labels, spacing=(1, 1, 1), label=1, mode="remove_small", min_mm3=2) == 1).sum())
27
>>> grown = margin(labels, spacing=(1, 1, 1), label=1, mm=1)
>>> int((grown == 1).sum()) - int((labels == 1).sum())
57
>>> seeds = np.zeros((4, 3, 3), np.uint8); seeds[0] = 1; seeds[3] = 2
>>> image = np.array([0, 0, 10, 10], np.float32)[:, None, None] * np.ones((4, 3, 3), np.float32)
>>> grow_from_seeds(seeds, image, spacing=(1, 1, 1))[:, 1, 1].tolist()
[1, 1, 2, 2]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence

import numpy as np
from scipy import ndimage as ndi

from mriannot.refusals import InputRefused

__all__ = [
    "ISLAND_MODES",
    "EditRefused",
    "changed_voxels",
    "default_roi",
    "grow_from_seeds",
    "interpolate",
    "islands",
    "margin",
    "smooth",
]

#: The ways :func:`islands` treats the pieces of a label.
ISLAND_MODES = ("remove_small", "keep_largest", "keep_at")
#: 26-connectivity: voxels touching by a face, an edge or a corner are one island.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
#: The largest margin, smoothing sigma (mm) an operation accepts.
MAX_MM = 100.0
#: Grow from seeds: the region grows by this share of the seeds' bounding box on each side
#: (Slicer's ``extentGrowthRatio``), and by at least ``ROI_MIN_PAD`` voxels.
ROI_GROWTH = 0.1
ROI_MIN_PAD = 2
#: Grow from seeds: the image is smoothed by this sigma, in voxels along each axis, for its
#: gradient (half a voxel: chosen by measuring, docs/editing.md).
GRADIENT_SIGMA_VOXELS = 0.5
#: Grow from seeds: the cost of 1 mm of path through a flat region, in units of the noise per mm
#: (keeps paths short where the image is flat).
FLAT_COST = 0.01
#: Grow from seeds: the sweeps stop after this many rounds if labels still change (winding paths).
MAX_ROUNDS = 12
#: Grow from seeds: the boundary is refined by the seeds' intensities when every label has at
#: least this many seed voxels.
REFINE_MIN_SEEDS = 100


class EditRefused(InputRefused):
    """An operation's parameters do not fit the label map (the API answers 400 with ``code``)."""


# --------------------------------------------------------------------------- arguments


def _labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels: expected 3 axes (X, Y, Z), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels: expected uint8, got {labels.dtype}")
    return labels


def _spacing(spacing) -> tuple[float, float, float]:
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing: expected 3 positive voxel sizes in mm, got {spacing!r}")
    return values  # type: ignore[return-value]


def _locked(locked: Collection[int]) -> np.ndarray:
    values = sorted({int(v) for v in locked})
    if values and (values[0] < 1 or values[-1] > 255):
        raise EditRefused(
            "bad_locked", f"locked: label values 1..255 only (background cannot be locked), got {values}."
        )
    return np.array(values, dtype=np.uint8)


def _label(label: int, locked: np.ndarray) -> int:
    label = int(label)
    if not 1 <= label <= 255:
        raise EditRefused("bad_label", f"label: expected a label value 1..255, got {label}.")
    if label in locked:
        raise EditRefused("label_locked", f"Label {label} is locked; unlock it to change it.")
    return label


def _mm(mm: float, *, name: str, negative: bool) -> float:
    mm = float(mm)
    low = -MAX_MM if negative else 0.0
    if not math.isfinite(mm) or mm == 0 or not low <= mm <= MAX_MM:
        allowed = f"-{MAX_MM:g}..{MAX_MM:g} mm, not 0" if negative else f"0..{MAX_MM:g} mm, more than 0"
        raise EditRefused(f"bad_{name}", f"{name}: expected {allowed}, got {mm:g}.")
    return mm


def _box(mask: np.ndarray, pad) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` grown by ``pad`` voxels per axis (clipped), or None when empty."""
    found = ndi.find_objects(mask.astype(np.uint8, copy=False))
    if not found or found[0] is None:
        return None
    return tuple(
        slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(found[0], pad, mask.shape, strict=True)
    )


def changed_voxels(before: np.ndarray, after: np.ndarray) -> int:
    """How many voxels an operation changed.

    >>> changed_voxels(np.zeros((2, 2, 2), np.uint8), np.ones((2, 2, 2), np.uint8))
    8
    """
    return int(np.count_nonzero(np.asarray(before) != np.asarray(after)))


# --------------------------------------------------------------------------- islands


def islands(
    labels: np.ndarray,
    *,
    spacing: Sequence[float],
    label: int | None,
    mode: str,
    min_mm3: float | None = None,
    point: Sequence[int] | None = None,
    locked: Collection[int] = (),
) -> np.ndarray:
    """Remove islands (26-connected pieces) of a label; removed voxels become background.

    Parameters
    ----------
    labels : ndarray (X, Y, Z), uint8
    spacing : 3 floats, mm
    label : int or None
        The label; None: every unlocked label present (for ``keep_at``: the label under ``point``).
    mode : {"remove_small", "keep_largest", "keep_at"}
        ``remove_small``: pieces of less than ``min_mm3`` mm³; ``keep_largest``: all but the largest
        piece of each label (the first in voxel order on a tie); ``keep_at``: all pieces of the label
        but the one holding the voxel ``point`` (i, j, k).

    Examples
    --------
    >>> labels = np.zeros((5, 5, 5), np.uint8)
    >>> labels[0:2, 0:2, 0:2] = 2; labels[4, 4, 4] = 2; labels[3, 0, 0] = 1
    >>> kept = islands(labels, spacing=(2, 2, 2), label=2, mode="keep_at", point=(4, 4, 4))
    >>> int((kept == 2).sum()), int((kept == 1).sum())
    (1, 1)
    >>> int((islands(labels, spacing=(1, 1, 1), label=None, mode="keep_largest") > 0).sum())
    9
    """
    labels = _labels(labels)
    spacing = _spacing(spacing)
    locked_values = _locked(locked)
    if mode not in ISLAND_MODES:
        raise EditRefused("bad_mode", f"mode: expected one of {', '.join(ISLAND_MODES)}, got {mode!r}.")
    if mode == "remove_small":
        if min_mm3 is None or not math.isfinite(float(min_mm3)) or float(min_mm3) < 0:
            raise EditRefused("bad_min_mm3", "min_mm3: expected a volume in mm³, 0 or more.")
    at = None
    if mode == "keep_at":
        at = _point(point, labels.shape)
        under = int(labels[at])
        if label is None:
            if under == 0:
                raise EditRefused("point_not_in_label", f"The voxel {list(at)} is background: no island is there.")
            label = under
        elif under != int(label):
            raise EditRefused(
                "point_not_in_label", f"The voxel {list(at)} holds label {under}, not {int(label)}: no island is there."
            )
    if label is None:
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        targets = [int(v) for v in present if v != 0 and v not in locked_values]
    else:
        targets = [_label(label, locked_values)]

    out = labels.copy()
    boxes = ndi.find_objects(labels)
    voxel_mm3 = spacing[0] * spacing[1] * spacing[2]
    for value in targets:
        box = boxes[value - 1] if value <= len(boxes) else None
        if box is None:
            continue
        mask = labels[box] == value
        pieces, count = ndi.label(mask, structure=CONNECTIVITY_26)
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())
        drop = np.zeros(count + 1, dtype=bool)
        if mode == "remove_small":
            drop[1:] = sizes[1:] * voxel_mm3 < float(min_mm3)  # type: ignore[arg-type]
        elif mode == "keep_largest":
            drop[1:] = True
            drop[1 + int(np.argmax(sizes[1:]))] = False
        else:
            drop[1:] = True
            drop[pieces[tuple(a - s.start for a, s in zip(at, box, strict=True))]] = False  # type: ignore[arg-type]
        region = out[box]
        region[drop[pieces]] = 0
    return out


def _point(point, shape) -> tuple[int, int, int]:
    try:
        at = tuple(int(v) for v in point)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        at = ()
    if len(at) != 3:
        raise EditRefused("bad_point", "point: expected the voxel indices i,j,k of the stored grid.")
    if not all(0 <= a < n for a, n in zip(at, shape, strict=True)):
        raise EditRefused("bad_point", f"point: {list(at)} lies outside the volume {list(shape)}.")
    return at  # type: ignore[return-value]


# --------------------------------------------------------------------------- margin, smoothing


def margin(
    labels: np.ndarray, *, spacing: Sequence[float], label: int, mm: float, locked: Collection[int] = ()
) -> np.ndarray:
    """Grow (``mm`` > 0) or shrink (``mm`` < 0) a label by a Euclidean distance in mm.

    Growing gives the label every unlocked voxel whose centre lies within ``mm`` of a voxel
    centre of the label; shrinking returns to background every voxel of the label within ``-mm``
    of a voxel that is not the label (the edge of the volume is not a boundary).

    Examples
    --------
    >>> labels = np.zeros((1, 1, 9), np.uint8); labels[0, 0, 4] = 1; labels[0, 0, 7] = 2
    >>> margin(labels, spacing=(1, 1, 2), label=1, mm=4, locked=[2])[0, 0].tolist()
    [0, 0, 1, 1, 1, 1, 1, 2, 0]
    >>> int(margin(np.ones((3, 3, 3), np.uint8), spacing=(1, 1, 1), label=1, mm=-1).sum())
    27
    """
    labels = _labels(labels)
    spacing = _spacing(spacing)
    locked_values = _locked(locked)
    label = _label(label, locked_values)
    mm = _mm(mm, name="mm", negative=True)
    mask = labels == label
    pad = [math.ceil(abs(mm) / s) + 1 for s in spacing]
    box = _box(mask, pad)
    out = labels.copy()
    if box is None:
        return out
    inside = mask[box]
    region = out[box]
    if mm > 0:
        distance = ndi.distance_transform_edt(~inside, sampling=spacing)
        gain = (distance <= mm + 1e-6) & ~inside & ~np.isin(region, locked_values)
        region[gain] = label
    elif not inside.all():
        distance = ndi.distance_transform_edt(inside, sampling=spacing)
        region[inside & (distance <= -mm + 1e-6)] = 0
    return out


def smooth(
    labels: np.ndarray, *, spacing: Sequence[float], label: int, mm: float, locked: Collection[int] = ()
) -> np.ndarray:
    """Smooth a label: its mask blurred by a Gaussian of sigma ``mm`` (mm), thresholded at 0.5.

    The label loses voxels to background and gains background voxels only: other labels are
    never overwritten. Beyond the edge of the volume the mask continues as at the edge.

    Examples
    --------
    >>> labels = np.zeros((9, 9, 9), np.uint8); labels[2:7, 2:7, 2:7] = 1; labels[7, 4, 4] = 1
    >>> smoothed = smooth(labels, spacing=(1, 1, 1), label=1, mm=1)
    >>> int(smoothed[7, 4, 4]), int(smoothed[2, 2, 2]), int(smoothed[4, 4, 4])
    (0, 0, 1)
    """
    labels = _labels(labels)
    spacing = _spacing(spacing)
    locked_values = _locked(locked)
    label = _label(label, locked_values)
    mm = _mm(mm, name="mm", negative=False)
    sigma = [mm / s for s in spacing]
    mask = labels == label
    box = _box(mask, [math.ceil(4 * g) + 1 for g in sigma])
    out = labels.copy()
    if box is None:
        return out
    inside = mask[box]
    blurred = ndi.gaussian_filter(inside.astype(np.float32), sigma, mode="nearest", truncate=4.0)
    kept = blurred >= 0.5
    region = out[box]
    region[inside & ~kept] = 0
    region[kept & ~inside & (labels[box] == 0)] = label
    return out


# --------------------------------------------------------------------------- fill between slices


def interpolate(
    labels: np.ndarray, *, spacing: Sequence[float], label: int, axis: int, locked: Collection[int] = ()
) -> np.ndarray:
    """Fill a label into the slices between its drawn slices along ``axis`` (shape-based).

    The slices of ``axis`` that hold the label are the drawn ones. Between two consecutive drawn
    slices, each empty slice gets the zero level set of the linear blend of the two slices'
    signed distance maps (in-plane, in mm; negative inside). The fill takes unlocked voxels
    (background or another unlocked label); drawn slices and slices outside the first and last
    drawn one are not changed.

    Examples
    --------
    >>> labels = np.zeros((13, 13, 5), np.uint8)
    >>> labels[5:8, 5:8, 0] = 1; labels[1:12, 1:12, 4] = 1  # squares 3 and 11 voxels wide
    >>> filled = interpolate(labels, spacing=(1, 1, 1), label=1, axis=2)
    >>> [int(filled[6, :, k].sum()) for k in range(5)]
    [3, 5, 7, 9, 11]
    """
    labels = _labels(labels)
    spacing = _spacing(spacing)
    locked_values = _locked(locked)
    label = _label(label, locked_values)
    if isinstance(axis, bool) or int(axis) not in (0, 1, 2):
        raise EditRefused("bad_axis", f"axis: expected 0, 1 or 2 (an axis of the stored grid), got {axis!r}.")
    axis = int(axis)
    mask = np.moveaxis(labels == label, axis, 0)
    drawn = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if drawn.size < 2:
        raise EditRefused(
            "too_few_slices",
            f"Label {label} is drawn on {drawn.size} slice(s) along axis {axis}; draw it on at least two.",
        )
    out = labels.copy()
    plane = np.moveaxis(out, axis, 0)
    in_plane = tuple(s for a, s in enumerate(spacing) if a != axis)
    box = _box(mask.any(axis=0), (1, 1))
    assert box is not None
    fillable = ~np.isin(plane[:, box[0], box[1]], locked_values)
    for first, last in itertools.pairwise(drawn):
        if last - first < 2:
            continue
        near = _signed_distance(mask[first][box], in_plane)
        far = _signed_distance(mask[last][box], in_plane)
        for k in range(first + 1, last):
            t = (k - first) / (last - first)
            blend = (1 - t) * near + t * far
            target = plane[k][box]
            target[(blend <= 0) & fillable[k]] = label
    return out


def _signed_distance(mask2d: np.ndarray, sampling) -> np.ndarray:
    """In-plane signed distance (mm) to the drawn shape's outline, positive outside, negative
    inside. The outline runs half a voxel outside the drawn voxels' centres, so the zero level of
    a blend moves between outlines, not between centres; the plane is taken as surrounded by
    background."""
    padded = np.pad(mask2d, 1)
    half = min(sampling) / 2
    outside = ndi.distance_transform_edt(~padded, sampling=sampling)
    inside = ndi.distance_transform_edt(padded, sampling=sampling)
    return np.where(padded, half - inside, outside - half)[1:-1, 1:-1]


# --------------------------------------------------------------------------- grow from seeds


def default_roi(seeds: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The region grow-from-seeds works in when none is given: the bounding box of the seed
    voxels grown by ``ROI_GROWTH`` of its size on each side (at least ``ROI_MIN_PAD`` voxels),
    clipped to the volume; None without seeds.

    >>> seeds = np.zeros((40, 40, 40), bool); seeds[10:30, 20, 20] = True
    >>> default_roi(seeds)
    (slice(8, 32, None), slice(18, 23, None), slice(18, 23, None))
    """
    found = ndi.find_objects(np.asarray(seeds).astype(np.uint8, copy=False))
    if not found or found[0] is None:
        return None
    box = []
    for s, n in zip(found[0], seeds.shape, strict=True):
        pad = max(math.ceil((s.stop - s.start) * ROI_GROWTH), ROI_MIN_PAD)
        box.append(slice(max(s.start - pad, 0), min(s.stop + pad, n)))
    return tuple(box)  # type: ignore[return-value]


def grow_from_seeds(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    spacing: Sequence[float],
    roi: Sequence[tuple[int, int]] | None = None,
    locked: Collection[int] = (),
    outside: int | None = None,
) -> np.ndarray:
    """Give every background voxel of a region the label of the seeds that reach it first.

    Parameters
    ----------
    labels : ndarray (X, Y, Z), uint8
        The seeds: every voxel of an unlocked label is a seed of its label; background (0) is
        unknown. At least two unlocked labels must have seeds in the region.
    image : ndarray (X, Y, Z)
        The intensities the seeds grow over (one sequence), on the same grid.
    spacing : 3 floats, mm
    roi : ((i0, i1), (j0, j1), (k0, k1)) or None
        The region, half-open voxel ranges of the stored grid; None: :func:`default_roi` of the
        seeds. Voxels outside it are not changed.
    locked : label values
        Kept as they are and taken as walls: they neither grow nor let another label through.
    outside : int or None
        A scratch label for strokes that mark "none of these": it grows like the others, then
        every voxel of it (in the whole volume) becomes background.

    Notes
    -----
    The cost of 1 mm of path at a voxel is the intensity gradient there (:func:`gradient_cost`);
    each unknown voxel takes the label of the seed with the cheapest path to it
    (:func:`geodesic_sweep`), so labels stop where the image changes. When every label has at
    least ``REFINE_MIN_SEEDS`` seed voxels, the voxels at a boundary then go to whichever
    neighbouring label's seed intensities they fit best (:func:`_refine`).

    Examples
    --------
    >>> labels = np.zeros((6, 1, 1), np.uint8); labels[0] = 1; labels[5] = 2; labels[3] = 3
    >>> image = np.zeros((6, 1, 1), np.float32)
    >>> grow_from_seeds(labels, image, spacing=(1, 1, 1), locked=[3])[:, 0, 0].tolist()
    [1, 1, 1, 3, 2, 2]
    """
    labels = _labels(labels)
    spacing = _spacing(spacing)
    locked_values = _locked(locked)
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"image: shape {image.shape} differs from the labels' {labels.shape}")
    if outside is not None:
        outside = int(outside)
        if not 1 <= outside <= 255:
            raise EditRefused("bad_outside", f"outside: expected a label value 1..255, got {outside}.")
        if outside in locked_values:
            raise EditRefused("label_locked", f"The outside label {outside} cannot be locked.")
    walls_all = np.isin(labels, locked_values) if locked_values.size else np.zeros(labels.shape, bool)
    box = _roi(roi, labels.shape) if roi is not None else default_roi((labels > 0) & ~walls_all)
    if box is None:
        raise EditRefused("too_few_seed_labels", "Paint seed strokes of at least two labels first.")
    seeds = labels[box]
    walls = walls_all[box]
    seeds = np.where(walls, np.uint8(0), seeds)
    present = np.flatnonzero(np.bincount(seeds.ravel(), minlength=256)[1:]) + 1
    if present.size < 2:
        names = ", ".join(str(int(v)) for v in present) or "none"
        raise EditRefused(
            "too_few_seed_labels",
            f"Grow from seeds needs strokes of at least two unlocked labels in the region; it has {names}.",
        )
    out = labels.copy()
    unknown = (seeds == 0) & ~walls
    if unknown.any():
        values = np.asarray(image[box], dtype=np.float32)
        cost = gradient_cost(values, seeds, spacing)
        cost[walls] = np.inf
        grown, _ = geodesic_sweep(cost, seeds, spacing)
        if np.bincount(seeds.ravel())[present].min() >= REFINE_MIN_SEEDS:
            grown = _refine(values, seeds, grown, unknown)
        region = out[box]
        region[unknown] = grown[unknown]
    if outside is not None:
        out[out == outside] = 0
    return out


def _roi(roi, shape) -> tuple[slice, slice, slice]:
    try:
        ranges = [(int(a), int(b)) for a, b in roi]
    except (TypeError, ValueError):
        ranges = []
    if len(ranges) != 3 or not all(0 <= a < b <= n for (a, b), n in zip(ranges, shape, strict=True)):
        raise EditRefused(
            "bad_roi",
            f"roi: expected i0,i1,j0,j1,k0,k1 with 0 <= start < end <= size on each axis of {list(shape)} "
            "(end excluded).",
        )
    return tuple(slice(a, b) for a, b in ranges)  # type: ignore[return-value]


def _noise(values: np.ndarray, seeds: np.ndarray) -> float:
    """A robust intensity scale: the median over labels of the seeds' spread (MAD), else the image's."""
    spreads = []
    for value in np.flatnonzero(np.bincount(seeds.ravel())[1:]) + 1:
        x = values[seeds == value]
        spreads.append(1.4826 * float(np.median(np.abs(x - np.median(x)))))
    scale = float(np.median(spreads)) if spreads else 0.0
    if scale <= 0:
        scale = float(values.std())
    return scale if scale > 0 else 1.0


def gradient_cost(values: np.ndarray, seeds: np.ndarray, spacing) -> np.ndarray:
    """The cost of 1 mm of path at each voxel: the intensity gradient (Gaussian derivatives, sigma
    ``GRADIENT_SIGMA_VOXELS``) in units of the seeds' noise per mm, plus ``FLAT_COST``.

    >>> values = np.repeat(np.array([0.0, 0.0, 0.0, 4.0, 4.0, 4.0], np.float32), 4).reshape(6, 2, 2)
    >>> cost = gradient_cost(values, np.zeros(values.shape, np.uint8), (1, 1, 1))
    >>> bool(cost[2, 0, 0] > 10 * cost[0, 0, 0])
    True
    """
    sigma = [GRADIENT_SIGMA_VOXELS] * 3
    values = values.astype(np.float32, copy=False)
    squared = np.zeros(values.shape, np.float32)
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 1
        derivative = ndi.gaussian_filter(values, sigma, order=order, truncate=3.0)  # per voxel
        derivative /= np.float32(spacing[axis])  # per mm
        squared += derivative * derivative
    gradient = np.sqrt(squared, out=squared)
    gradient /= np.float32(_noise(values, seeds))
    gradient += np.float32(FLAT_COST)
    return gradient


def geodesic_sweep(
    cost: np.ndarray, seeds: np.ndarray, spacing, *, exact: bool = False, max_rounds: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label geodesic distance on the 6-connected grid by raster sweeps.

    The step between neighbours ``p``, ``q`` along axis ``a`` costs ``(cost[p] + cost[q]) / 2 *
    spacing[a]`` (as :class:`skimage.graph.MCP_Geometric`); an infinite cost is a wall. Each
    voxel takes the label of the seed (``seeds`` > 0) with the cheapest path to it. Every round
    sweeps each axis forwards and backwards (vectorised over the other two axes); rounds repeat
    until no label changes, or ``max_rounds`` (default ``MAX_ROUNDS``) have run: a path that winds
    needs a round per turn, and the last rounds of a large region change a few voxels for the
    time of all. ``exact``: until no distance changes, without a limit (for tests). Returns
    (labels, distances); unreachable voxels keep label 0 and an infinite distance.

    >>> cost = np.ones((5, 1, 1), np.float32); cost[2] = 9
    >>> seeds = np.zeros((5, 1, 1), np.uint8); seeds[0] = 1; seeds[4] = 2
    >>> grown, distance = geodesic_sweep(cost, seeds, (1, 1, 1))
    >>> grown[:, 0, 0].tolist(), distance[:, 0, 0].tolist()
    ([1, 1, 1, 2, 2], [0.0, 1.0, 6.0, 1.0, 0.0])
    """
    cost = np.asarray(cost, dtype=np.float32)
    distance = np.where(seeds > 0, np.float32(0), np.float32(np.inf))
    grown = np.array(seeds, dtype=np.uint8)
    steps = []
    for axis in range(3):
        c = np.ascontiguousarray(np.moveaxis(cost, axis, 0))
        step = c[:-1] + c[1:]
        step *= np.float32(spacing[axis] / 2)
        steps.append(step)
    rounds = 10**9 if exact else (MAX_ROUNDS if max_rounds is None else max_rounds)
    for _ in range(rounds):
        changes = 0
        for axis in range(3):
            if grown.shape[axis] < 2:
                continue
            if axis < 2:  # slices along the first two axes are fast to work on in place
                changes += _sweep_axis(
                    np.moveaxis(distance, axis, 0), np.moveaxis(grown, axis, 0), steps[axis], count_distances=exact
                )
                continue
            # along the last axis a slice is scattered in memory: sweep a transposed copy
            d = np.ascontiguousarray(np.moveaxis(distance, axis, 0))
            g = np.ascontiguousarray(np.moveaxis(grown, axis, 0))
            changes += _sweep_axis(d, g, steps[axis], count_distances=exact)
            distance = np.ascontiguousarray(np.moveaxis(d, 0, axis))
            grown = np.ascontiguousarray(np.moveaxis(g, 0, axis))
        if changes == 0:
            break
    return grown, distance


def _sweep_axis(d: np.ndarray, g: np.ndarray, step: np.ndarray, *, count_distances: bool) -> int:
    """One forward and one backward pass along axis 0, in place; the number of changes."""
    n = d.shape[0]
    candidate = np.empty(d.shape[1:], np.float32)
    better = np.empty(d.shape[1:], bool)
    relabel = np.empty(d.shape[1:], bool)
    changes = 0
    for order, offset in ((range(1, n), -1), (range(n - 2, -1, -1), 1)):
        for i in order:
            j = i + offset
            np.add(d[j], step[min(i, j)], out=candidate)
            np.less(candidate, d[i], out=better)
            np.copyto(d[i], candidate, where=better)
            np.not_equal(g[i], g[j], out=relabel)
            relabel &= better
            np.copyto(g[i], g[j], where=relabel)
            changes += int(np.count_nonzero(better if count_distances else relabel))
    return changes


def _refine(values, seeds, grown, unknown, *, bins: int = 64) -> np.ndarray:
    """Move the boundary to the seeds' intensities: an unknown voxel at a boundary (another label
    in its 26-neighbourhood) takes, among the labels around it and its own, the one whose seeds'
    intensity histogram (64 bins, smoothed) gives its intensity the highest share."""
    present = np.flatnonzero(np.bincount(seeds.ravel())[1:]) + 1
    band = unknown & (ndi.maximum_filter(grown, size=3) != ndi.minimum_filter(grown, size=3))
    where = np.flatnonzero(band)
    if where.size == 0:
        return grown
    sample = values.ravel()[:: max(1, values.size // 1_000_000)]
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    high = max(high, low + 1e-6)

    def bin_of(x):
        return np.clip(np.rint((x - low) / (high - low) * (bins - 1)), 0, bins - 1).astype(np.intp)

    table = []
    for value in present:
        counts = np.bincount(bin_of(values[seeds == value]), minlength=bins).astype(np.float64)
        counts = ndi.gaussian_filter1d(counts, 1.5, mode="constant") + 1e-3
        table.append(counts / counts.sum())
    share = np.array(table)
    share /= share.sum(axis=0)
    # the labels of each band voxel's 26 neighbours, read through a padded copy
    padded = np.pad(grown, 1)
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    at = np.stack(np.unravel_index(where, grown.shape), axis=1) + 1
    offsets = (np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), axis=-1).reshape(-1, 3) @ strides).astype(
        np.intp
    )
    around = padded.ravel()[(at @ strides)[:, None] + offsets[None, :]]
    fits = bin_of(values.ravel()[where])
    best = np.full(where.size, -1.0)
    chosen = grown.ravel()[where].copy()
    for k, value in enumerate(present):
        fit = np.where((around == value).any(axis=1), share[k][fits], -1.0)
        take = fit > best
        best[take] = fit[take]
        chosen[take] = value
    refined = grown.copy()
    refined.ravel()[where] = chosen
    return refined
