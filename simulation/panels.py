"""Random rater-panel designs for benchmarking consensus (label fusion). All SIMULATED.

A consensus method tuned on a handful of fixed panels (say expert, generous,
conservative, sloppy, misses) can learn those panels rather than the problem. This
module draws *designs* of panels from a seeded generator instead: how many raters, which
task, which voxel grid, and for every rater an explicit error model (:class:`RaterSpec`)
with randomly drawn parameters. A benchmark run on ``draw_designs(n, seed=s)`` for a seed
nobody tuned on is a test set, not a training set (``bench/bench_consensus_panels.py``).

Everything here is SIMULATED: the truths are simulated subjects of
:mod:`simulation` (the real MNI152 2009a template, deformed and given synthetic
lesions) and the raters are seeded perturbations of those truths. They are not real
patients or real annotators, and results on them must be reported as such.

Pure module: numpy and scipy (and :mod:`simulation`, which lazily imports
nilearn for the template). No Django, torch or Celery.

The designs, the rater kinds and how each rater is simulated: ``docs/simulation.md``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import _shared as label_values
from ._shared import _check_seed
from .anatomy import Anatomy, mni152_anatomy
from .raters import drop_label_components
from .subjects import simulate_subject

__all__ = [
    "GRIDS",
    "RATER_KINDS",
    "TASKS",
    "PanelDesign",
    "RaterSpec",
    "draw_designs",
    "simulate_design",
    "simulate_rater_spec",
]

RATER_KINDS: tuple[str, ...] = (
    "good",
    "biased",
    "sloppy",
    "misses",
    "false_positives",
    "empty",
    "one_label",
    "mixed",
)
TASKS: tuple[str, ...] = ("tissue", "lesion")
GRIDS: tuple[str, ...] = ("1mm", "2mm", "1x1x3mm")

# Label values of each task, background included.
_TASK_LABELS = {"tissue": (0, 1, 2, 3, 4), "lesion": (0, 1)}

# ---- Design distribution ------------------------------------------------------------
_RATER_COUNTS = np.arange(2, 10)
_RATER_COUNT_P = np.array([0.12, 0.40, 0.12] + [0.072] * 5)
_TASK_P = {"tissue": 0.6, "lesion": 0.4}
_GRID_P = {"1mm": 0.25, "2mm": 0.5, "1x1x3mm": 0.25}
_SCENARIOS = ("no_good", "one_good", "opposite", "free")
_SCENARIO_P = (0.30, 0.25, 0.20, 0.25)
_FREE_GOOD_P = 0.4
_POOR_KINDS = ("biased", "sloppy", "misses", "false_positives", "mixed")
_POOR_KIND_P = (0.30, 0.20, 0.20, 0.15, 0.15)
_MIXABLE = ("biased", "sloppy", "misses", "false_positives")
_EMPTY_P = 0.05
_ONE_LABEL_P = 0.05  # tissue task only

# ---- Rater parameters (mm, fractions) -----------------------------------------------
_GOOD_GROW_MM = 0.3
_GOOD_NOISE = (0.0, 0.05)
_BIAS_MM = 2.5
_BIAS_MIN_MM = 0.5  # biased shifts: magnitudes uniform in [0.5, 2.5] mm
_SLOPPY_NOISE = (0.10, 0.40)
_MISS_FRACTION = (0.30, 0.80)
_FP_BLOBS = (2, 8)
_FP_RADIUS_MM = (1.0, 4.0)
_FP_REACH_MM = {"tissue": 5.0, "lesion": 15.0}

# ---- Grids and subjects -------------------------------------------------------------
_CROP_1MM = (96, 96, 64)
_CROP_MARGIN_1MM = 10  # voxels simulated around the box, then cut off (deformation edge)
_THICK_SLICE_STEP = 3
_LESIONS = {"tissue": (2, 6), "lesion": (4, 8)}  # inclusive
_SUBJECT_TRIES = 20
_RATER_MARGIN_MM = 12.0  # raters only work on the truth's non-zero box plus this


@dataclass(frozen=True)
class RaterSpec:
    """One simulated rater's error model (see the module notes for the semantics).

    Attributes
    ----------
    kind : str
        One of :data:`RATER_KINDS`; descriptive (the fields below drive the simulation).
    grow_mm : dict of int to float
        Per label value, the signed boundary shift in mm (+ dilation, - erosion),
        applied in nesting order (ascending label value).
    noise : float
        Fraction (0-1) of boundary voxels whose label is replaced by a random
        neighbour's label.
    miss_fraction : float
        Fraction (0-1) of the connected components of the small labels dropped (at
        least one when > 0).
    fp_blobs : int
        Number of false-positive blobs.
    only_label : int or None
        For ``"one_label"``: the only value this rater labels.
    """

    kind: str
    grow_mm: dict[int, float]
    noise: float = 0.0
    miss_fraction: float = 0.0
    fp_blobs: int = 0
    only_label: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RATER_KINDS:
            raise ValueError(f"kind: expected one of {RATER_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise: expected a fraction in [0, 1], got {self.noise}")
        if not 0.0 <= self.miss_fraction <= 1.0:
            raise ValueError(f"miss_fraction: expected a fraction in [0, 1], got {self.miss_fraction}")
        if self.fp_blobs < 0:
            raise ValueError(f"fp_blobs: expected >= 0, got {self.fp_blobs}")
        if self.kind == "one_label" and not self.only_label:
            raise ValueError("one_label: only_label must be a non-zero label value")

    def describe(self) -> str:
        """A few characters, e.g. ``biased(+1.2mm)`` or ``mixed(sloppy 25%+misses 50%)``."""
        if self.kind == "empty":
            return "empty"
        if self.kind == "one_label":
            return f"one_label({self.only_label})"
        parts = self._error_parts()
        if self.kind == "mixed":
            return "mixed(" + "+".join(parts) + ")"
        if self.kind == "good" or not parts:
            return self.kind
        return parts[0].replace(" ", "(", 1) + ")" if " " in parts[0] else parts[0]

    def _error_parts(self) -> list[str]:
        parts = []
        shifts = list(self.grow_mm.values())
        if shifts and max(abs(v) for v in shifts) > _GOOD_GROW_MM:
            lo, hi = min(shifts), max(shifts)
            if lo >= 0 or hi <= 0:
                parts.append(f"biased {np.mean(shifts):+.1f}mm")
            else:
                parts.append(f"biased {lo:+.1f}..{hi:+.1f}mm")
        if self.noise >= _SLOPPY_NOISE[0]:
            parts.append(f"sloppy {100 * self.noise:.0f}%")
        if self.miss_fraction > 0:
            parts.append(f"misses {100 * self.miss_fraction:.0f}%")
        if self.fp_blobs > 0:
            parts.append(f"fp {self.fp_blobs}")
        return parts


@dataclass(frozen=True)
class PanelDesign:
    """One random panel design: task, grid and raters, plus the seed that simulates it.

    Attributes
    ----------
    index : int
        Position in :func:`draw_designs`' list.
    seed : int
        Seeds :func:`simulate_design` (subject, crop and raters).
    task : str
        ``"tissue"`` (labels 0..4) or ``"lesion"`` (binary 0/1).
    grid : str
        ``"1mm"``, ``"2mm"`` or ``"1x1x3mm"``.
    raters : tuple of RaterSpec
        2 to 9 raters.
    """

    index: int
    seed: int
    task: str
    grid: str
    raters: tuple[RaterSpec, ...]

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid: expected one of {GRIDS}, got {self.grid!r}")
        if not 2 <= len(self.raters) <= 9:
            raise ValueError(f"raters: expected 2 to 9, got {len(self.raters)}")

    @property
    def labels(self) -> tuple[int, ...]:
        """Every label value of the task, background included."""
        return _TASK_LABELS[self.task]

    def describe(self) -> str:
        """One short line, e.g. ``tissue 2mm R=3: biased(+1.2mm), sloppy(25%), misses(50%)``."""
        raters = ", ".join(spec.describe() for spec in self.raters)
        return f"{self.task} {self.grid} R={len(self.raters)}: {raters}"


# --------------------------------------------------------------------------------------
# Drawing designs
# --------------------------------------------------------------------------------------


def draw_designs(n: int, *, seed: int) -> list[PanelDesign]:
    """Draw ``n`` random panel designs; the same ``seed`` gives the same list.

    Design ``i`` depends only on ``seed`` and ``i`` (``draw_designs(5, seed=s)`` is the
    start of ``draw_designs(40, seed=s)``). See the module notes for the distribution.

    Examples
    --------
    >>> designs = draw_designs(3, seed=0)
    >>> [len(d.raters) >= 2 for d in designs]
    [True, True, True]
    >>> designs == draw_designs(3, seed=0)
    True
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    seed = _check_seed(seed)
    children = np.random.SeedSequence(seed).spawn(int(n))
    return [_draw_design(i, child) for i, child in enumerate(children)]


def _draw_design(index: int, seed_sequence: np.random.SeedSequence) -> PanelDesign:
    rng = np.random.default_rng(seed_sequence)
    design_seed = int(seed_sequence.generate_state(1, dtype=np.uint32)[0])
    task = str(rng.choice(list(_TASK_P), p=list(_TASK_P.values())))
    grid = str(rng.choice(list(_GRID_P), p=list(_GRID_P.values())))
    n_raters = int(rng.choice(_RATER_COUNTS, p=_RATER_COUNT_P / _RATER_COUNT_P.sum()))
    scenario = str(rng.choice(_SCENARIOS, p=_SCENARIO_P))
    labels = [v for v in _TASK_LABELS[task] if v]

    raters: list[RaterSpec] = []
    protected: set[int] = set()  # raters the degenerate one must not replace
    if scenario == "one_good":
        raters.append(_good(rng, labels))
        protected.add(0)
    elif scenario == "opposite":
        raters.append(_biased(rng, labels, sign=+1.0))
        raters.append(_biased(rng, labels, sign=-1.0))
        protected.update((0, 1))
    while len(raters) < n_raters:
        if scenario == "free" and rng.random() < _FREE_GOOD_P:
            raters.append(_good(rng, labels))
        else:
            raters.append(_poor(rng, labels))

    u = rng.random()
    candidates = [i for i in range(len(raters)) if i not in protected]
    if candidates and u < _EMPTY_P + (_ONE_LABEL_P if task == "tissue" else 0.0):
        replace = int(rng.choice(candidates))
        if u < _EMPTY_P:
            raters[replace] = RaterSpec(kind="empty", grow_mm={})
        else:
            only = int(rng.choice(labels))
            raters[replace] = RaterSpec(
                kind="one_label",
                grow_mm=_good(rng, labels).grow_mm,
                noise=float(rng.uniform(*_GOOD_NOISE)),
                only_label=only,
            )
    order = rng.permutation(len(raters))
    return PanelDesign(
        index=int(index),
        seed=design_seed,
        task=task,
        grid=grid,
        raters=tuple(raters[i] for i in order),
    )


def _good(rng: np.random.Generator, labels: Sequence[int]) -> RaterSpec:
    return RaterSpec(
        kind="good",
        grow_mm=_rounded(rng.uniform(-_GOOD_GROW_MM, _GOOD_GROW_MM, len(labels)), labels),
        noise=float(rng.uniform(*_GOOD_NOISE)),
    )


def _biased(rng: np.random.Generator, labels: Sequence[int], sign: float | None = None) -> RaterSpec:
    """A biased rater; ``sign`` None draws one-sign (half the time) or mixed shifts."""
    if sign is None and rng.random() < 0.5:
        sign = 1.0 if rng.random() < 0.5 else -1.0
    magnitudes = rng.uniform(_BIAS_MIN_MM, _BIAS_MM, len(labels))
    if sign is None:
        shifts = magnitudes * rng.choice([-1.0, 1.0], size=len(labels))
    else:
        shifts = sign * magnitudes
    return RaterSpec(
        kind="biased",
        grow_mm=_rounded(shifts, labels),
        noise=float(rng.uniform(*_GOOD_NOISE)),
    )


def _poor(rng: np.random.Generator, labels: Sequence[int]) -> RaterSpec:
    kind = str(rng.choice(_POOR_KINDS, p=_POOR_KIND_P))
    if kind != "mixed":
        return _single_error(rng, labels, kind)
    first, second = rng.choice(len(_MIXABLE), size=2, replace=False)
    a = _single_error(rng, labels, _MIXABLE[first])
    b = _single_error(rng, labels, _MIXABLE[second])
    biased = a if a.kind == "biased" else b if b.kind == "biased" else None
    return RaterSpec(
        kind="mixed",
        grow_mm=dict(biased.grow_mm) if biased else _good(rng, labels).grow_mm,
        noise=max(a.noise, b.noise),
        miss_fraction=max(a.miss_fraction, b.miss_fraction),
        fp_blobs=max(a.fp_blobs, b.fp_blobs),
    )


def _single_error(rng: np.random.Generator, labels: Sequence[int], kind: str) -> RaterSpec:
    if kind == "biased":
        return _biased(rng, labels)
    base = _good(rng, labels)
    if kind == "sloppy":
        return RaterSpec(kind="sloppy", grow_mm=base.grow_mm, noise=float(rng.uniform(*_SLOPPY_NOISE)))
    if kind == "misses":
        return RaterSpec(
            kind="misses",
            grow_mm=base.grow_mm,
            noise=base.noise,
            miss_fraction=round(float(rng.uniform(*_MISS_FRACTION)), 3),
        )
    if kind == "false_positives":
        return RaterSpec(
            kind="false_positives",
            grow_mm=base.grow_mm,
            noise=base.noise,
            fp_blobs=int(rng.integers(_FP_BLOBS[0], _FP_BLOBS[1] + 1)),
        )
    raise ValueError(f"unknown error kind {kind!r}")


def _rounded(values: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Label -> value, rounded to 0.01 (readable reprs; mm precision is ample)."""
    return {int(k): round(float(v), 2) for k, v in zip(labels, values, strict=True)}


# --------------------------------------------------------------------------------------
# Simulating a design
# --------------------------------------------------------------------------------------


def simulate_design(
    design: PanelDesign,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Simulate a design: its truth and one segmentation per rater. SIMULATED data.

    Returns
    -------
    truth : ndarray of shape (X, Y, Z), uint8
        Tissue task: values 0..4; lesion task: 0/1. Always holds a lesion voxel.
    segmentations : ndarray of shape (R, X, Y, Z), uint8
        Rater ``r`` follows ``design.raters[r]``.
    spacing : tuple of 3 floats
        Voxel size in mm along the three axes.
    """
    if not isinstance(design, PanelDesign):
        raise TypeError(f"design: expected a PanelDesign, got {type(design).__name__}")
    subject_seq, *rater_seqs = np.random.SeedSequence(design.seed).spawn(1 + len(design.raters))
    truth, spacing = _simulate_truth(design, np.random.default_rng(subject_seq))
    segmentations = np.empty((len(design.raters), *truth.shape), dtype=np.uint8)
    for r, (spec, seq) in enumerate(zip(design.raters, rater_seqs, strict=True)):
        rater_seed = int(seq.generate_state(1, dtype=np.uint32)[0])
        segmentations[r] = simulate_rater_spec(truth, spec, spacing=spacing, seed=rater_seed)
    return truth, segmentations, spacing


def _simulate_truth(design: PanelDesign, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The truth of a design (redrawn until it has a lesion voxel) and its spacing."""
    low, high = _LESIONS[design.task]
    for _ in range(_SUBJECT_TRIES):
        subject_seed = int(rng.integers(0, 2**32))
        n_lesions = int(rng.integers(low, high + 1))
        if design.grid == "2mm":
            anatomy = mni152_anatomy(resolution=2)
            labels = simulate_subject(anatomy, seed=subject_seed, n_lesions=n_lesions).labels
            spacing = anatomy.spacing
        else:
            labels, spacing = _simulate_1mm_crop(rng, design.grid, subject_seed, n_lesions)
        if design.task == "lesion":
            labels = (labels == label_values.LESION).astype(np.uint8)
            if labels.any():
                return labels, spacing
        elif (labels == label_values.LESION).any():
            return np.ascontiguousarray(labels, dtype=np.uint8), spacing
    raise RuntimeError(f"design {design.index}: no lesion in the truth after {_SUBJECT_TRIES} subjects")


def _simulate_1mm_crop(
    rng: np.random.Generator, grid: str, subject_seed: int, n_lesions: int
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A box of a 1 mm subject around a random white-matter voxel (see module notes)."""
    anatomy = mni152_anatomy(resolution=1)
    template = np.asarray(anatomy.labels)
    shape = template.shape
    size = list(_CROP_1MM)
    if grid == "1x1x3mm":
        size[2] = shape[2]  # all slices; every third is kept below
    wm = np.flatnonzero(template == label_values.WHITE_MATTER)
    centre = np.unravel_index(int(wm[rng.integers(wm.size)]), shape)
    lo = [min(max(c - s // 2, 0), n - s) for c, s, n in zip(centre, size, shape, strict=True)]
    margin = _CROP_MARGIN_1MM
    outer_lo = [max(a - margin, 0) for a in lo]
    outer_hi = [min(a + s + margin, n) for a, s, n in zip(lo, size, shape, strict=True)]
    outer = tuple(slice(a, b) for a, b in zip(outer_lo, outer_hi, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = outer_lo
    cropped = Anatomy(
        t1=np.ascontiguousarray(anatomy.t1[outer]),
        labels=np.ascontiguousarray(template[outer]),
        affine=np.asarray(anatomy.affine) @ shift,
    )
    labels = simulate_subject(cropped, seed=subject_seed, n_lesions=n_lesions).labels
    inner = tuple(slice(a - o, a - o + s) for a, o, s in zip(lo, outer_lo, size, strict=True))
    labels = labels[inner]
    spacing = anatomy.spacing
    if grid == "1x1x3mm":
        offset = int(rng.integers(_THICK_SLICE_STEP))
        labels = labels[:, :, offset::_THICK_SLICE_STEP]
        spacing = (spacing[0], spacing[1], spacing[2] * _THICK_SLICE_STEP)
    return np.ascontiguousarray(labels), spacing


# --------------------------------------------------------------------------------------
# Simulating one rater
# --------------------------------------------------------------------------------------


def simulate_rater_spec(
    truth: np.ndarray,
    spec: RaterSpec,
    *,
    spacing: Sequence[float],
    seed: int,
) -> np.ndarray:
    """Simulate one rater's label map from a truth, following ``spec``. SIMULATED.

    Parameters
    ----------
    truth : ndarray of shape (X, Y, Z), integer
        True labels (0 background); not modified. A truth with one non-zero value is a
        binary task: that value is the small label.
    spec : RaterSpec
        The error model (see the module notes for the steps and their order).
    spacing : sequence of 3 floats
        Voxel size in mm along each axis; boundary shifts and blob radii are in mm.
    seed : int
        Non-negative; the same arguments give the same array.

    Returns
    -------
    ndarray of shape (X, Y, Z), uint8

    Examples
    --------
    >>> truth = np.zeros((20, 20, 10), dtype=np.uint8)
    >>> truth[5:15, 5:15, 3:7] = 1
    >>> spec = RaterSpec(kind="biased", grow_mm={1: 2.0})
    >>> seg = simulate_rater_spec(truth, spec, spacing=(1.0, 1.0, 3.0), seed=0)
    >>> int((seg == 1).sum()) > int((truth == 1).sum())
    True
    """
    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"truth: expected a 3-D array, got shape {truth.shape}")
    if truth.dtype.kind not in "biu" or (truth.size and (truth.min() < 0 or truth.max() > 255)):
        raise ValueError("truth: expected integer labels in 0..255")
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if spacing_arr.shape != (3,) or not (spacing_arr > 0).all():
        raise ValueError(f"spacing: expected 3 positive numbers, got {spacing!r}")
    seed = _check_seed(seed)
    out = np.zeros(truth.shape, dtype=np.uint8)
    if spec.kind == "empty":
        return out
    present = [int(v) for v in np.unique(truth) if v != 0]
    if not present:
        return out
    small = present if len(present) == 1 else [v for v in present if v == label_values.LESION]

    rng_miss, rng_noise, rng_blobs = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))
    seg = truth.astype(np.uint8)
    if spec.only_label is not None:
        seg = np.where(seg == spec.only_label, seg, 0).astype(np.uint8)
    # Work on the non-zero box plus a margin: nothing farther can change.
    reach = _RATER_MARGIN_MM + max(
        [abs(v) for v in spec.grow_mm.values()] + [_FP_REACH_MM["lesion"] + _FP_RADIUS_MM[1]]
    )
    box = _box(truth != 0, np.ceil(reach / spacing_arr).astype(int))
    work = seg[box].copy()

    if spec.miss_fraction > 0:
        _drop_components(rng_miss, work, small, spec.miss_fraction)
    for label in sorted(spec.grow_mm):
        shift = float(spec.grow_mm[label])
        if label != 0 and abs(shift) > 0:
            work = _shift_label(work, label, shift, spacing_arr)
    if spec.noise > 0:
        _boundary_noise(rng_noise, work, spec.noise)
    if spec.fp_blobs > 0:
        labels = present if spec.only_label is None else [spec.only_label]
        blob_small = [v for v in small if v in labels]
        reach_mm = _FP_REACH_MM["lesion" if len(present) == 1 else "tissue"]
        anchor = truth[box] != 0 if len(present) > 1 else np.isin(truth[box], small)
        _add_blobs(rng_blobs, work, anchor, spec.fp_blobs, labels, blob_small, spacing_arr, reach_mm)
    out[box] = work
    return out


def _box(mask: np.ndarray, margin: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        n = mask.shape[axis]
        if hit.size == 0:
            box.append(slice(0, n))
        else:
            box.append(slice(max(int(hit[0]) - margin[axis], 0), min(int(hit[-1]) + 1 + margin[axis], n)))
    return tuple(box)


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray | None:
    """Structuring element of a boundary shift of ``radius_mm``: the voxel offsets inside
    the ellipsoid of semi-axes ``radius_mm + spacing / 2`` (the boundary sits half a
    voxel from the last voxel centre). None when it is the centre voxel alone."""
    semi_axes = radius_mm + spacing / 2.0
    reach = np.ceil(semi_axes / spacing).astype(int) - 1
    if not reach.any():
        return None
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    scaled = sum((g * s / a) ** 2 for g, s, a in zip(grids, spacing, semi_axes, strict=True))
    return scaled < 1.0


def _shift_label(seg: np.ndarray, label: int, shift_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Move the boundaries between ``label`` and lower labels by ``shift_mm`` (+ out)."""
    structure = _ball(abs(shift_mm), spacing)
    if structure is None or not (seg == label).any():
        return seg
    if shift_mm > 0:
        grown = _dilate(seg == label, structure) & (seg < label)
        return np.where(grown, np.uint8(label), seg)
    # Erosion of everything from ``label`` inwards; the volume edge is not a boundary.
    kept = ~_dilate(seg < label, structure)
    removed = (seg == label) & ~kept
    if not removed.any():
        return seg
    out = seg.copy()
    out[removed] = _nearest_lower(seg, removed, label, structure, spacing)
    return out


def _dilate(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_dilation(mask, structure)`` for a symmetric, convex ``structure``
    (a ball), about 3x faster: 1-D dilations along the last axis, one per column height
    of the structure, then OR-ed at the structure's offsets in the first two axes."""
    cx, cy, cz = (n // 2 for n in structure.shape)
    mask8 = np.ascontiguousarray(mask).view(np.uint8)
    columns: dict[int, np.ndarray] = {}
    out = np.zeros(mask.shape, dtype=bool)
    nx, ny, _ = mask.shape
    for i in range(structure.shape[0]):
        for j in range(structure.shape[1]):
            column = np.flatnonzero(structure[i, j])
            if column.size == 0:
                continue
            half = int(column.max()) - cz
            if half not in columns:
                grown = mask8
                if half:
                    grown = ndi.maximum_filter1d(mask8, size=2 * half + 1, axis=2, mode="constant", cval=0)
                columns[half] = grown.view(bool)
            dx, dy = i - cx, j - cy
            target = out[max(dx, 0) : nx + min(dx, 0), max(dy, 0) : ny + min(dy, 0)]
            source = columns[half][max(-dx, 0) : nx - max(dx, 0), max(-dy, 0) : ny - max(dy, 0)]
            np.logical_or(target, source, out=target)
    return out


def _nearest_lower(
    seg: np.ndarray,
    removed: np.ndarray,
    label: int,
    structure: np.ndarray,
    spacing: np.ndarray,
) -> np.ndarray:
    """For each voxel of ``removed`` (in C order), the label of its nearest voxel (in
    mm, within ``structure``) with a label below ``label``; the highest at equal
    distance (the next label out in nesting order)."""
    centre = np.array(structure.shape) // 2
    offsets = np.argwhere(structure) - centre
    distances = np.round(np.sqrt(((offsets * spacing) ** 2).sum(axis=1)), 6)
    # Pad with a value that is never "lower", so that flat offsets need no clipping.
    padded = np.pad(seg, [(c, c) for c in centre], constant_values=255).ravel()
    padded_shape = tuple(n + 2 * c for n, c in zip(seg.shape, centre, strict=True))
    strides = np.array([padded_shape[1] * padded_shape[2], padded_shape[2], 1])
    where = np.nonzero(removed)
    positions = sum((w + c) * st for w, c, st in zip(where, centre, strides, strict=True))
    deltas = offsets @ strides
    result = np.zeros(positions.size, dtype=np.int16)
    pending = np.arange(positions.size)
    for distance in np.unique(distances):
        if distance == 0 or pending.size == 0:
            continue
        best = np.full(pending.size, -1, dtype=np.int16)
        here = positions[pending]
        for delta in deltas[distances == distance]:
            values = padded[here + delta].astype(np.int16)
            np.maximum(best, np.where(values < label, values, -1), out=best)
        found = best >= 0
        result[pending[found]] = best[found]
        pending = pending[~found]
    # Every removed voxel has a lower label within the structure (that is why it was
    # removed); background (0) would be the fallback all the same.
    return result.astype(np.uint8)


def _drop_components(rng: np.random.Generator, seg: np.ndarray, small: Sequence[int], fraction: float) -> None:
    """Drop a fraction (at least one) of the components of each small label, in place;
    a dropped component takes the most common other label of its 26-neighbour shell."""
    for value in small:
        drop_label_components(rng, seg, value, fraction)


def _boundary_noise(rng: np.random.Generator, seg: np.ndarray, fraction: float) -> None:
    """In place: ``fraction`` of the boundary voxels (another label in the 3 x 3 x 3
    neighbourhood) copy the label of a random one of their 26 neighbours."""
    band = np.flatnonzero(ndi.maximum_filter(seg, size=3) != ndi.minimum_filter(seg, size=3))
    hit = band[rng.random(band.size) < fraction]
    if hit.size == 0:
        return
    where = np.unravel_index(hit, seg.shape)
    offsets = rng.integers(0, 26, size=hit.size)
    offsets += offsets >= 13  # skip the centre (index 13 of the 27)
    steps = np.unravel_index(offsets, (3, 3, 3))
    source = tuple(np.clip(w + s - 1, 0, n - 1) for w, s, n in zip(where, steps, seg.shape, strict=True))
    seg[where] = seg[source]


def _add_blobs(
    rng: np.random.Generator,
    seg: np.ndarray,
    anchor: np.ndarray,
    count: int,
    labels: Sequence[int],
    small: Sequence[int],
    spacing: np.ndarray,
    reach_mm: float,
) -> None:
    """Paint ``count`` balls (radius 1-4 mm) near random ``anchor`` voxels, in place."""
    anchors = np.flatnonzero(anchor)
    if anchors.size == 0:
        return
    reach = np.floor(reach_mm / spacing).astype(int)
    for _ in range(count):
        if small and rng.random() < 0.5:
            value = int(rng.choice(small))
        else:
            value = int(rng.choice(labels))
        radius = float(rng.uniform(*_FP_RADIUS_MM))
        start = np.unravel_index(int(anchors[rng.integers(anchors.size)]), seg.shape)
        centre = [
            int(np.clip(c + rng.integers(-r, r + 1), 0, n - 1)) for c, r, n in zip(start, reach, seg.shape, strict=True)
        ]
        half = np.floor(radius / spacing).astype(int)
        lo = [max(c - h, 0) for c, h in zip(centre, half, strict=True)]
        hi = [min(c + h + 1, n) for c, h, n in zip(centre, half, seg.shape, strict=True)]
        grids = np.meshgrid(
            *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing, strict=True)],
            indexing="ij",
        )
        ball = sum(g**2 for g in grids) <= radius**2
        region = seg[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        region[ball] = value
