"""Simulated brain-MRI subjects and simulated raters, built from the MNI152 template.

Everything this module returns is SIMULATED. There is no multi-subject brain MRI
available offline, so cohorts for the demo, the STAPLE and agreement benchmarks and
the active-learning benchmarks are generated from one real anatomy: the MNI152 2009a
symmetric template (T1, grey- and white-matter probability maps and brain mask) that
nilearn ships inside its package. Each simulated subject is that template with a smooth
random deformation, a change of contrast, a bias field, Rician noise and synthetic white
matter lesions (optionally with another contrast, a head tilt or thick slices, to build
heterogeneous multi-site cohorts); each simulated rater is a seeded perturbation of a truth label map.
Neither is a real patient or a real annotator, and results obtained on them must be
reported as such.

The module is pure: numpy, scipy, nibabel and (lazily, on the first call of
:func:`mni152_anatomy`) nilearn. It never imports Django.

Conventions
-----------
- Arrays are indexed ``(X, Y, Z)`` in the voxel order nibabel stores them after
  :func:`nibabel.as_closest_canonical` (RAS+); the affine maps ``(i, j, k)`` to
  millimetres.
- Label values are those of :data:`LABELS`: 0 background, 1 CSF, 2 grey matter,
  3 white matter, 4 lesion.
- Every random draw comes from ``np.random.default_rng`` seeded by the caller's
  ``seed`` (through :class:`numpy.random.SeedSequence` children, so that independent
  parts of a simulation use independent streams). The same arguments always give
  bit-identical arrays on the same numpy/scipy versions.
- Deformations and bias fields are defined in millimetres on a node grid anchored to
  the volume, so the same seed deforms the 1 mm and the 2 mm anatomy in the same way
  (lesion positions are drawn per grid and differ between resolutions).
- Raters work in voxels: a rater "one voxel too generous" is 1 mm off at 1 mm and
  2 mm off at 2 mm.

Performance
-----------
Measured on the project machine (2 cores, Python 3.11, numpy 2.4, scipy 1.17, nilearn
0.14) while other jobs shared it, so the figures are CPU seconds per call, which is
the wall time on an idle machine (the code is single-threaded); wall times at low load
agreed.

=========================================  ===========  ===========  ==========
call                                       2 mm         1 mm         target
=========================================  ===========  ===========  ==========
``mni152_anatomy``, first call in a        1.9 s        2.5 s        < 3 s
process (~1.6 s of it is ``import          (2.1-2.5 s   (2 mm)
nilearn.datasets``)                        wall)
``mni152_anatomy``, later calls (cached)   ~10 us       ~10 us
``simulate_subject``                       0.3 s        2.0 s        1.5 / 15 s
``simulate_rater``, slowest (``sloppy``)   0.14 s       1.0 s        3 s (1 mm)
``simulate_rater``, other profiles         0.06-0.08 s  0.25-0.7 s
=========================================  ===========  ===========  ==========

``import labeling.simulation`` itself takes ~0.3 s (numpy, scipy.ndimage, nibabel);
nilearn is imported only by :func:`mni152_anatomy`. Peak memory of a 1 mm subject is
about 0.6 GB.

The 2 mm anatomy is taken as every second voxel of nilearn's 1 mm template. The 2 mm
grid of ``load_mni152_template(resolution=2)`` is exactly that sub-grid (same origin,
double spacing), and nilearn's spline resampling at grid points returns the samples
themselves, so the arrays agree to about 1e-16 (``tests/labeling/test_simulation.py``
checks it) while skipping ~3 s of resampling.

References
----------
.. [1] Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases
   for pediatric studies. NeuroImage 54(1):313-327, 2011. (MNI152 2009 templates.)
.. [2] Rueckert D, Sonoda LI, Hayes C, et al. Nonrigid registration using free-form
   deformations: application to breast MR images. IEEE TMI 18(8):712-721, 1999.
   (Cubic B-spline displacement fields.)
.. [3] Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. Magn Reson
   Med 34(6):910-914, 1995.
.. [4] Warfield SK, Zou KH, Wells WM. Simultaneous truth and performance level
   estimation (STAPLE). IEEE TMI 23(7):903-921, 2004. (What the raters are for.)
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtri

__all__ = [
    "BACKGROUND",
    "CSF",
    "GREY_MATTER",
    "LABELS",
    "LESION",
    "RATER_PROFILES",
    "WHITE_MATTER",
    "Anatomy",
    "Subject",
    "mni152_anatomy",
    "rater_seed",
    "simulate_panel",
    "simulate_rater",
    "simulate_subject",
]

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER, LESION = 0, 1, 2, 3, 4

#: Label value -> (name, colour). Colours are the Okabe-Ito colour-blind-safe palette.
LABELS: dict[int, tuple[str, str]] = {
    BACKGROUND: ("Background", "#000000"),
    CSF: ("CSF", "#56B4E9"),
    GREY_MATTER: ("Grey matter", "#009E73"),
    WHITE_MATTER: ("White matter", "#F0E442"),
    LESION: ("Lesion", "#D55E00"),
}

#: Names accepted by :func:`simulate_rater` and :func:`simulate_panel`.
RATER_PROFILES: tuple[str, ...] = (
    "expert",
    "generous",
    "conservative",
    "sloppy",
    "misses_components",
)

# Mean over positions of the sum of squared cubic B-spline weights (= integral of B^2).
# A field of i.i.d. N(0, s^2) coefficients has RMS s * sqrt(_BSPLINE_POWER) per axis.
_BSPLINE_POWER = 151.0 / 315.0

# 26-connectivity: the structure used to count and drop connected components.
_COMPONENTS_3D = np.ones((3, 3, 3), dtype=bool)
# 6-connectivity: one "voxel" of growth or shrinkage for the raters.
_FACES_3D = ndi.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One anatomy on one voxel grid: the template every subject is simulated from.

    Attributes
    ----------
    t1 : ndarray of shape (X, Y, Z), float32
        T1-weighted intensities (skull-stripped MNI152 template, scaled to [0, 1]).
    labels : ndarray of shape (X, Y, Z), uint8
        Tissue labels in :data:`LABELS` values 0..3 (the template has no lesions).
    affine : ndarray of shape (4, 4), float64
        Voxel ``(i, j, k)`` to millimetres, RAS+.

    Notes
    -----
    Equality is identity (``eq=False``): comparing arrays field by field is ambiguous.
    The arrays of the cached anatomy returned by :func:`mni152_anatomy` are read-only;
    copy them before changing them.
    """

    t1: np.ndarray
    labels: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.t1.ndim != 3:
            raise ValueError(f"t1: expected a 3-D array, got shape {self.t1.shape}")
        if self.labels.shape != self.t1.shape:
            raise ValueError(f"labels: shape {self.labels.shape} differs from t1 shape {self.t1.shape}")
        if self.t1.dtype != np.float32:
            raise ValueError(f"t1: expected float32, got {self.t1.dtype}")
        if self.labels.dtype != np.uint8:
            raise ValueError(f"labels: expected uint8, got {self.labels.dtype}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine: expected shape (4, 4), got {self.affine.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the three array axes."""
        x, y, z = np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0))
        return (float(x), float(y), float(z))


def mni152_anatomy(*, resolution: int = 2) -> Anatomy:
    """Load the MNI152 2009a template as an :class:`Anatomy` (cached).

    The T1 is nilearn's ``load_mni152_template``. Labels: outside
    ``load_mni152_brain_mask`` 0; inside, the argmax of (CSF, GM, WM) with GM and WM the
    probability templates and ``CSF = clip(1 - GM - WM, 0, 1)``, so voxels of the mask
    with little GM and WM are CSF. All four volumes share one grid and one affine,
    reoriented to the closest canonical (RAS+) orientation.

    Parameters
    ----------
    resolution : {1, 2}
        Voxel size in mm: 1 gives 197 x 233 x 189 voxels, 2 gives 99 x 117 x 95.

    Returns
    -------
    Anatomy
        The same object on every call with the same resolution; its arrays are
        read-only.

    Notes
    -----
    Data are the real MNI152 template; the subjects made from it are SIMULATED.
    nilearn is imported on the first call (about 1.6 s); at 2 mm the arrays are the
    1 mm arrays sampled every second voxel, which equals nilearn's own 2 mm resampling
    (see the module notes).

    Examples
    --------
    >>> anatomy = mni152_anatomy(resolution=2)
    >>> anatomy.t1.shape, anatomy.spacing
    ((99, 117, 95), (2.0, 2.0, 2.0))
    """
    if isinstance(resolution, bool) or resolution not in (1, 2):
        raise ValueError(f"resolution: expected 1 or 2 (mm), got {resolution!r}")
    return _mni152_anatomy_cached(int(resolution))


@functools.lru_cache(maxsize=2)
def _mni152_anatomy_cached(resolution: int) -> Anatomy:
    # Imported here: ``import nilearn.datasets`` costs ~1.6 s (pandas, scikit-learn), which
    # importing this module (e.g. from Django) should not pay.
    from nilearn import datasets

    images = [
        nib.as_closest_canonical(loader(resolution=1))
        for loader in (
            datasets.load_mni152_template,
            datasets.load_mni152_gm_template,
            datasets.load_mni152_wm_template,
            datasets.load_mni152_brain_mask,
        )
    ]
    affine = np.asarray(images[0].affine, dtype=np.float64)
    for image in images[1:]:
        if image.shape != images[0].shape or not np.allclose(image.affine, affine):
            raise RuntimeError("nilearn's MNI152 volumes are not on one grid")
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError(
            "nilearn's 1 mm MNI152 template is no longer an axis-aligned 1 mm grid; "
            "the 2 mm sub-grid shortcut of mni152_anatomy needs revisiting"
        )
    t1, gm, wm, mask = (np.asarray(image.dataobj) for image in images)
    step = resolution
    t1, gm, wm, mask = (a[::step, ::step, ::step] for a in (t1, gm, wm, mask))
    affine = affine @ np.diag([step, step, step, 1.0])

    gm = gm.astype(np.float32)
    wm = wm.astype(np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    # argmax over (CSF, GM, WM), first maximum wins, without stacking three volumes.
    labels = np.full(gm.shape, CSF, dtype=np.uint8)
    best = csf
    labels[gm > best] = GREY_MATTER
    best = np.maximum(best, gm)
    labels[wm > best] = WHITE_MATTER
    labels[mask == 0] = BACKGROUND

    t1 = np.ascontiguousarray(t1, dtype=np.float32)
    labels = np.ascontiguousarray(labels)
    for array in (t1, labels, affine):
        array.setflags(write=False)
    return Anatomy(t1=t1, labels=labels, affine=affine)


# --------------------------------------------------------------------------------------
# Smooth random fields
# --------------------------------------------------------------------------------------


def _bspline_basis(positions: np.ndarray, node_spacing: float, n_nodes: int) -> np.ndarray:
    """Cubic B-spline weights, shape (len(positions), n_nodes), float32.

    Node ``j`` sits at ``(j - 1) * node_spacing``; positions are in the same unit.
    """
    t = np.abs(positions[:, None] / node_spacing - (np.arange(n_nodes)[None, :] - 1.0))
    weights = np.where(
        t < 1.0,
        2.0 / 3.0 - t**2 + 0.5 * t**3,
        np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0),
    )
    return weights.astype(np.float32)


def _n_nodes(extent: float, node_spacing: float) -> int:
    """Nodes needed so that every position in [0, extent] has its four B-spline nodes."""
    return int(np.floor(extent / node_spacing)) + 4


def _spline_field(coefficients: np.ndarray, bases: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate a tensor-product spline: ``sum_abc c[a, b, c] Bx[i, a] By[j, b] Bz[k, c]``."""
    bx, by, bz = bases
    c = coefficients.astype(np.float32)
    out = c.reshape(-1, c.shape[2]) @ bz.T  # (a*b, k)
    out = by @ out.reshape(c.shape[0], c.shape[1], -1)  # (a, j, k), batched over a
    out = bx @ out.reshape(c.shape[0], -1)  # (i, j*k)
    return out.reshape(bx.shape[0], by.shape[0], bz.shape[0])


def _random_fields(
    rng: np.random.Generator,
    axis_positions: Sequence[np.ndarray],
    axis_extents: Sequence[float],
    node_spacing: float,
    rms: float,
    count: int,
) -> tuple[list[np.ndarray], float]:
    """``count`` smooth Gaussian fields of about ``rms`` RMS, as cubic B-splines [2]_.

    Returns the fields (float32, shape ``tuple(len(p) for p in axis_positions)``) and a
    bound on their absolute value (B-spline weights are >= 0 and sum to 1).
    """
    n_nodes = [_n_nodes(extent, node_spacing) for extent in axis_extents]
    bases = [_bspline_basis(positions, node_spacing, n) for positions, n in zip(axis_positions, n_nodes, strict=True)]
    scale = rms / _BSPLINE_POWER ** (len(n_nodes) / 2.0)
    fields, bound = [], 0.0
    for _ in range(count):
        coefficients = rng.standard_normal(n_nodes) * scale
        bound = max(bound, float(np.abs(coefficients).max()))
        fields.append(_spline_field(coefficients, bases))
    return fields, bound


def _voxel_fields(
    rng: np.random.Generator,
    shape: Sequence[int],
    node_spacing: float,
    rms: float,
    count: int,
) -> list[np.ndarray]:
    """Smooth fields in voxel units on a grid of ``shape`` (node spacing in voxels)."""
    positions = [np.arange(n, dtype=np.float64) for n in shape]
    extents = [float(n - 1) for n in shape]
    fields, _ = _random_fields(rng, positions, extents, node_spacing, rms, count)
    return fields


# --------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Subject:
    """One SIMULATED subject: an image and its true labels on the anatomy's grid.

    Attributes
    ----------
    image : ndarray of shape (X, Y, Z), float32
        Simulated image, T1-weighted unless another ``contrast`` was asked; finite,
        arbitrary scanner-like units (a few hundred to ~2000 in white matter).
    labels : ndarray of shape (X, Y, Z), uint8
        Ground truth in :data:`LABELS` values 0..4.
    affine : ndarray of shape (4, 4), float64
        The anatomy's affine (a copy).
    seed : int
        The seed it was simulated with.
    parameters : dict
        What was drawn: displacement RMS (mm), intensity scale, offset, gamma, bias
        amplitude, noise sigma, and one dict per lesion (centre in voxels, semi-axes in
        mm, contrast factor, voxel count). For reports; not needed to reproduce.
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    seed: int
    parameters: dict[str, Any] = field(default_factory=dict)


# Simulation constants (mm unless stated).
_DEFORM_NODE_SPACING_MM = 24.0
_DEFORM_RMS_MM = (1.0, 1.8)  # per component, drawn uniformly per subject
_BIAS_NODE_SPACING_MM = 80.0
_BIAS_AMPLITUDE = (0.05, 0.15)  # RMS of log bias field
_SCALE = (600.0, 1600.0)  # log-uniform global intensity scale
_OFFSET = (-0.03, 0.05)  # times the scale
_GAMMA = (0.85, 1.2)  # log-uniform contrast change t1 ** gamma
_NOISE = (0.01, 0.04)  # noise sigma as a fraction of the white-matter signal
_LESION_COUNT = (0, 4)  # inclusive, when n_lesions is None
_LESION_RADIUS_MAX_MM = 7.5  # equivalent radius; diameter up to 15 mm
_LESION_HYPO_PROBABILITY = 0.7
_LESION_HYPO = (0.45, 0.75)  # lesion intensity / white-matter intensity
_LESION_HYPER = (1.12, 1.3)
_LESION_MIN_WM_FRACTION = 0.9
_LESION_TRIES = 60


# Other contrasts are maps of the template's T1 intensity (anchors T1 -> new, in [0, 1];
# template medians: CSF 0.40, grey 0.66, white 0.84; the brain edge ramps up from the
# dark background): contrast-LIKE images, not MR physics. T2w: CSF bright, grey above
# white, T1-dark lesions bright. PDw: the same order, flatter. FLAIR:
# CSF dark, grey above white.
_CONTRAST_FROM_T1 = {
    "T2w": ((0.0, 0.25, 0.40, 0.66, 0.84, 1.0, 2.0), (0.0, 1.0, 0.95, 0.6, 0.4, 0.3, 0.2)),
    "PDw": ((0.0, 0.25, 0.40, 0.66, 0.84, 1.0, 2.0), (0.0, 0.8, 0.85, 0.8, 0.62, 0.55, 0.5)),
    "FLAIR": ((0.0, 0.25, 0.40, 0.66, 0.84, 1.0, 2.0), (0.0, 0.15, 0.2, 0.75, 0.55, 0.5, 0.45)),
}
CONTRASTS = ("T1w", *_CONTRAST_FROM_T1)


def simulate_subject(
    anatomy: Anatomy,
    *,
    seed: int,
    n_lesions: int | None = None,
    contrast: str = "T1w",
    tilt_deg: float = 0.0,
    slice_thickness_mm: float | None = None,
) -> Subject:
    """Simulate one subject (image and truth) from an anatomy. Data are SIMULATED.

    Steps, all seeded:

    1. Smooth random deformation: a cubic B-spline displacement field [2]_ with nodes
       every 24 mm and 1.0-1.8 mm RMS per component (a few mm at most), applied with
       :func:`scipy.ndimage.map_coordinates`: linear for the image, nearest for labels.
    2. Lesions (label 4): ellipsoids with equivalent radius log-uniform between
       ``max(2 mm, 1.25 voxels)`` and 7.5 mm (a few voxels up to ~15 mm across), random
       axis ratios and orientation, centred in deformed white matter and accepted only
       if at least 90 % of their voxels are white matter and no other lesion lies within
       ~1.5 voxels (so ``n_lesions`` lesions are ``n_lesions`` connected components).
       Lesion voxels are labelled 4 where the deformed tissue is grey or white matter.
       70 % are hypointense (0.45-0.75 of white matter), the others hyperintense
       (1.12-1.3); their edge is blended over about one voxel (partial volume).
    3. Contrast ``t1 ** gamma`` (gamma 0.85-1.2), a multiplicative bias field
       ``exp(b)`` (b a smooth field, nodes every 80 mm, 5-15 % RMS), a global scale
       (600-1600) and Rician noise [3]_ (sigma 1-4 % of white matter), then a global
       offset (-3 % to +5 % of the scale).

    Acquisition variations, off by default (a heterogeneous, multi-site cohort):

    - ``contrast``: before step 3 the T1 intensities are mapped through a fixed curve:
      "T2w" (CSF bright, grey above white matter, T1-dark lesions bright), "PDw"
      (flatter than T2w: CSF, then grey, above white) or "FLAIR" (CSF dark, grey
      above white). These are contrast-LIKE images, not simulations of MR physics.
    - ``tilt_deg``: the head is rotated by that angle about the centre of the brain,
      around an axis near left-right (pitch, with a random 0-30 % roll/yaw part), as in
      clinical scans not aligned to a template; labels move with it.
    - ``slice_thickness_mm``: before the noise, the signal is averaged over slabs of
      that thickness along the last axis and shown on the original grid (a 2-D
      thick-slice acquisition; partial volume between slices).

    Parameters
    ----------
    anatomy : Anatomy
        Usually ``mni152_anatomy(resolution=...)``.
    seed : int
        Non-negative. Same seed and anatomy give identical arrays.
    n_lesions : int or None
        Number of lesions; None draws 0..4 from the seed. The deformation, contrast,
        bias and noise do not depend on it: ``simulate_subject(a, seed=s, n_lesions=0)``
        is the lesion-free twin of any other call with seed ``s``.
    contrast : {"T1w", "T2w", "PDw", "FLAIR"}
        See above.
    tilt_deg : float
        Head rotation in degrees, 0 to 45.
    slice_thickness_mm : float or None
        Thick-slice acquisition along the last axis; None (or at most one voxel) for
        none.

    Returns
    -------
    Subject
        ``image`` float32 (X, Y, Z), ``labels`` uint8 (X, Y, Z) in 0..4, ``affine``.

    Examples
    --------
    >>> subject = simulate_subject(mni152_anatomy(resolution=2), seed=0, n_lesions=2)
    >>> subject.image.dtype, subject.labels.dtype, subject.labels.shape
    (dtype('float32'), dtype('uint8'), (99, 117, 95))
    >>> len(subject.parameters["lesions"])
    2
    """
    if not isinstance(anatomy, Anatomy):
        raise TypeError(f"anatomy: expected an Anatomy, got {type(anatomy).__name__}")
    seed = _check_seed(seed)
    if n_lesions is not None and (
        isinstance(n_lesions, bool) or not isinstance(n_lesions, numbers.Integral) or n_lesions < 0
    ):
        raise ValueError(f"n_lesions: expected None or an integer >= 0, got {n_lesions!r}")

    if contrast not in CONTRASTS:
        raise ValueError(f"contrast: expected one of {CONTRASTS}, got {contrast!r}")
    tilt_deg = float(tilt_deg)
    if not 0.0 <= tilt_deg <= 45.0:
        raise ValueError(f"tilt_deg: expected 0 to 45 degrees, got {tilt_deg}")
    if slice_thickness_mm is not None and not float(slice_thickness_mm) > 0:
        raise ValueError(f"slice_thickness_mm: expected None or > 0, got {slice_thickness_mm!r}")

    # Children 0-3 are the streams of the original design; 4 (tilt axis) is new, so
    # subjects without variations are unchanged.
    rng_deform, rng_contrast, rng_lesions, rng_noise, rng_tilt = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(5)
    )
    shape = anatomy.t1.shape
    spacing = np.asarray(anatomy.spacing)
    extents_mm = [(n - 1) * s for n, s in zip(shape, spacing, strict=True)]

    # 1. Deformation, evaluated on the brain's bounding box grown by the largest possible
    # displacement: outside it the warped anatomy is empty.
    deform_rms = float(rng_deform.uniform(*_DEFORM_RMS_MM))
    n_nodes = [_n_nodes(extent, _DEFORM_NODE_SPACING_MM) for extent in extents_mm]
    scale = deform_rms / _BSPLINE_POWER**1.5
    coefficients = [rng_deform.standard_normal(n_nodes) * scale for _ in range(3)]
    bound_mm = max(float(np.abs(c).max()) for c in coefficients)
    margin = np.ceil(bound_mm / spacing).astype(int) + 2
    bounds = _nonzero_bounds(np.asarray(anatomy.labels))
    if bounds is None:
        raise ValueError("anatomy: labels are all background")
    rotation = None
    if tilt_deg > 0:
        rotation = _tilt(rng_tilt, tilt_deg)
        centre_mm = np.array([(a + b - 1) / 2 for a, b in bounds]) * spacing
        lo, hi = [0, 0, 0], list(shape)  # a rotated brain may leave the template's box
    else:
        lo = [max(a - m, 0) for (a, _), m in zip(bounds, margin, strict=True)]
        hi = [min(b + m, n) for (_, b), m, n in zip(bounds, margin, shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    positions = [np.arange(a, b) * s for a, b, s in zip(lo, hi, spacing, strict=True)]
    bases = [_bspline_basis(p, _DEFORM_NODE_SPACING_MM, n) for p, n in zip(positions, n_nodes, strict=True)]
    box_shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    grid = np.indices(box_shape, dtype=np.float32)
    if rotation is not None:
        # Sample the template at centre + R^T (x - centre): the head appears rotated by R.
        offsets_mm = [
            (grid[axis] + lo[axis]) * np.float32(spacing[axis]) - np.float32(centre_mm[axis]) for axis in range(3)
        ]
        grid = np.stack(
            [
                (sum(np.float32(rotation[j, axis]) * offsets_mm[j] for j in range(3)) + np.float32(centre_mm[axis]))
                / np.float32(spacing[axis])
                - lo[axis]
                for axis in range(3)
            ]
        )
        del offsets_mm
    coords = np.empty((3, *box_shape), dtype=np.float32)
    for axis in range(3):
        displacement = _spline_field(coefficients[axis], bases)
        coords[axis] = grid[axis] + (lo[axis] + displacement / spacing[axis])
    del grid
    t1 = ndi.map_coordinates(
        np.asarray(anatomy.t1),
        coords,
        order=1,
        mode="constant",
        cval=0.0,
        output=np.float32,
    )
    labels = ndi.map_coordinates(
        np.asarray(anatomy.labels),
        coords,
        order=0,
        mode="constant",
        cval=0,
        output=np.uint8,
    )
    del coords

    # 2. Lesions, placed in deformed white matter.
    anatomy_labels = np.asarray(anatomy.labels)
    wm_level = float(np.asarray(anatomy.t1)[anatomy_labels == WHITE_MATTER].mean())
    if n_lesions is None:
        n_lesions = int(rng_lesions.integers(_LESION_COUNT[0], _LESION_COUNT[1] + 1))
    lesions = _add_lesions(
        rng_lesions,
        t1,
        labels,
        spacing=spacing,
        n_lesions=int(n_lesions),
        wm_level=wm_level,
    )

    # 3. Contrast, bias, scale, Rician noise, offset.
    gamma = float(np.exp(rng_contrast.uniform(*np.log(_GAMMA))))
    intensity_scale = float(np.exp(rng_contrast.uniform(*np.log(_SCALE))))
    offset = float(rng_contrast.uniform(*_OFFSET)) * intensity_scale
    bias_rms = float(rng_contrast.uniform(*_BIAS_AMPLITUDE))
    noise_fraction = float(rng_contrast.uniform(*_NOISE))
    (log_bias,), _ = _random_fields(rng_contrast, positions, extents_mm, _BIAS_NODE_SPACING_MM, bias_rms, 1)
    np.clip(t1, 0.0, None, out=t1)
    if contrast != "T1w":
        t1 = np.interp(t1, *_CONTRAST_FROM_T1[contrast]).astype(np.float32)
    signal = np.zeros(shape, dtype=np.float32)
    signal[box] = (t1**gamma) * np.exp(log_bias) * np.float32(intensity_scale)
    del t1, log_bias
    slab = 1 if slice_thickness_mm is None else round(float(slice_thickness_mm) / float(spacing[2]))
    if slab > 1:
        signal = _thick_slices(signal, slab)
    sigma = np.float32(noise_fraction * intensity_scale * wm_level**gamma)
    real = rng_noise.standard_normal(shape, dtype=np.float32)
    real *= sigma
    real += signal
    imag = rng_noise.standard_normal(shape, dtype=np.float32)
    imag *= sigma
    image = np.hypot(real, imag, out=real)
    image += np.float32(offset)
    del signal, imag

    full_labels = np.zeros(shape, dtype=np.uint8)
    full_labels[box] = labels
    parameters = {
        "contrast": contrast,
        "tilt_deg": tilt_deg,
        "tilt_axis": None if rotation is None else _rotation_axis(rotation),
        "slice_thickness_mm": None if slab <= 1 else float(slab * spacing[2]),
        "displacement_rms_mm": deform_rms,
        "gamma": gamma,
        "intensity_scale": intensity_scale,
        "offset": offset,
        "bias_rms": bias_rms,
        "noise_sigma": float(sigma),
        "lesions": [
            {
                **lesion,
                "centre_voxel": tuple(float(c + o) for c, o in zip(lesion["centre_voxel"], lo, strict=True)),
            }
            for lesion in lesions
        ],
    }
    return Subject(
        image=image,
        labels=full_labels,
        affine=np.array(anatomy.affine, dtype=np.float64),
        seed=seed,
        parameters=parameters,
    )


def _tilt(rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about a random axis near the left-right (x) axis."""
    axis = np.array([1.0, *rng.uniform(-0.3, 0.3, size=2)])
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(degrees) * (1 if rng.random() < 0.5 else -1)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)  # Rodrigues


def _rotation_axis(rotation: np.ndarray) -> tuple[float, float, float]:
    w = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    return tuple(float(v) for v in w / (np.linalg.norm(w) or 1.0))


def _thick_slices(signal: np.ndarray, slab: int) -> np.ndarray:
    """Average ``slab`` consecutive slices along the last axis, shown on the same grid."""
    n = signal.shape[2]
    blocks = -(-n // slab)
    padded = np.pad(signal, ((0, 0), (0, 0), (0, blocks * slab - n)), mode="edge")
    means = padded.reshape(*signal.shape[:2], blocks, slab).mean(axis=3)
    return np.ascontiguousarray(np.repeat(means, slab, axis=2)[:, :, :n])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _add_lesions(
    rng: np.random.Generator,
    t1: np.ndarray,
    labels: np.ndarray,
    *,
    spacing: np.ndarray,
    n_lesions: int,
    wm_level: float,
) -> list[dict[str, Any]]:
    """Paint ``n_lesions`` ellipsoidal lesions into ``t1`` and ``labels`` in place."""
    lesions: list[dict[str, Any]] = []
    if n_lesions == 0:
        return lesions
    wm_voxels = np.flatnonzero(labels == WHITE_MATTER)
    if wm_voxels.size == 0:
        raise ValueError("anatomy: no white matter to place lesions in")
    voxel = float(spacing.max())
    r_min = max(2.0, 1.25 * voxel)
    gap_mm = 1.5 * voxel
    for _ in range(n_lesions):
        radius = float(np.exp(rng.uniform(np.log(r_min), np.log(_LESION_RADIUS_MAX_MM))))
        ratios = np.exp(rng.uniform(-0.35, 0.35, size=3))
        ratios /= np.cbrt(ratios.prod())
        rotation = _random_rotation(rng)
        if rng.random() < _LESION_HYPO_PROBABILITY:
            contrast = float(rng.uniform(*_LESION_HYPO))
        else:
            contrast = float(rng.uniform(*_LESION_HYPER))
        best = None
        for attempt in range(_LESION_TRIES):
            if attempt and attempt % 20 == 0:
                radius = max(r_min, 0.8 * radius)  # hard to fit: try smaller
            axes = np.maximum(radius * ratios, 0.75 * voxel)
            centre = np.array(np.unravel_index(rng.choice(wm_voxels), labels.shape), float)
            # Sub-voxel jitter small enough that the centre voxel is always inside.
            centre += rng.uniform(-0.25, 0.25, size=3)
            candidate = _ellipsoid(centre, axes, rotation, spacing, labels.shape, gap_mm)
            box, rho, rho_gap = candidate
            local = labels[box]
            inside = rho <= 1.0
            wm_fraction = float((local[inside] == WHITE_MATTER).mean())
            clear = not (local[rho_gap <= 1.0] == LESION).any()
            score = wm_fraction if clear else wm_fraction - 1.0
            if best is None or score > best[0]:
                best = (score, centre, axes, candidate)
            if clear and wm_fraction >= _LESION_MIN_WM_FRACTION:
                break
        _, centre, axes, (box, rho, _) = best
        local_labels = labels[box]
        local_t1 = t1[box]
        tissue = (local_labels == GREY_MATTER) | (local_labels == WHITE_MATTER) | (local_labels == LESION)
        painted = (rho <= 1.0) & tissue
        # Partial volume: the intensity ramps from lesion to tissue over about one voxel.
        edge = float((axes / spacing.max()).min())
        weight = np.clip((1.0 - rho) * edge + 0.5, 0.0, 1.0) * tissue
        local_t1 += (np.float32(contrast * wm_level) - local_t1) * weight.astype(np.float32)
        local_labels[painted] = LESION
        lesions.append(
            {
                "centre_voxel": tuple(float(c) for c in centre),
                "semi_axes_mm": tuple(float(a) for a in axes),
                "contrast": contrast,
                "voxels": int(painted.sum()),
            }
        )
    return lesions


def _ellipsoid(
    centre: np.ndarray,
    axes: np.ndarray,
    rotation: np.ndarray,
    spacing: np.ndarray,
    shape: tuple[int, ...],
    gap_mm: float,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Local box around an ellipsoid, with its normalised radius and a grown one."""
    reach = np.ceil((axes.max() + gap_mm) / spacing).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.floor(centre).astype(int) + reach + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    offsets = np.indices(tuple(hi - lo), dtype=np.float64)
    mm = (offsets + (lo - centre)[:, None, None, None]) * spacing[:, None, None, None]
    local = np.tensordot(rotation.T, mm, axes=(1, 0))  # ellipsoid frame
    rho = np.sqrt(((local / axes[:, None, None, None]) ** 2).sum(axis=0))
    rho_gap = np.sqrt(((local / (axes + gap_mm)[:, None, None, None]) ** 2).sum(axis=0))
    return box, rho, rho_gap


# --------------------------------------------------------------------------------------
# Raters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RaterProfile:
    warp_rms: float  # voxels, RMS of the smooth displacement per component
    warp_node_spacing: float  # voxels
    grow: tuple[float, float] = (0.0, 0.0)  # chance of a 1st / 2nd voxel outward
    shrink: tuple[float, float] = (0.0, 0.0)  # chance of a 1st / 2nd voxel inward
    speckle: float = 0.0  # fraction of near-boundary voxels given a nearby label
    miss_fraction: float = 0.0  # fraction of small-class components dropped


_PROFILES: dict[str, _RaterProfile] = {
    "expert": _RaterProfile(warp_rms=0.2, warp_node_spacing=8.0),
    "generous": _RaterProfile(warp_rms=0.2, warp_node_spacing=8.0, grow=(0.75, 0.2)),
    "conservative": _RaterProfile(warp_rms=0.2, warp_node_spacing=8.0, shrink=(0.75, 0.2)),
    "sloppy": _RaterProfile(warp_rms=0.9, warp_node_spacing=5.0, speckle=0.1),
    "misses_components": _RaterProfile(warp_rms=0.2, warp_node_spacing=8.0, miss_fraction=0.5),
}
assert tuple(_PROFILES) == RATER_PROFILES

_ACCEPT_NODE_SPACING = 4.0  # voxels: patchiness of generous / conservative growth
_SMALL_CLASS_FRACTION = 0.05  # classes below 5 % of the foreground are "small"
_SPECKLE_REACH = 1  # voxels: speckle copies a label from at most this far
_CROP_MARGIN = 10  # voxels around the foreground that a rater may change


def simulate_rater(
    truth: np.ndarray,
    *,
    profile: str,
    seed: int,
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """Simulate one rater's label map from a truth label map. Raters are SIMULATED.

    Every profile moves boundaries between any two labels, tissue against tissue as
    well as tissue against background. Units are voxels. Directed errors (generous,
    conservative) follow the label values as a nesting order, from outside in:
    background 0 < CSF 1 < grey matter 2 < white matter 3 < lesion 4.

    ``expert``
        Tiny boundary noise: truth sampled through a smooth random displacement of
        0.2 voxel RMS (nodes every 8 voxels), nearest neighbour, so a minority of
        boundary voxels flip to the neighbouring label.
    ``generous``
        Expert noise, then every boundary moves outward: a voxel next to a higher label
        takes that label, in smooth random patches covering ~75 % of the boundary, and
        a second voxel in ~20 %. Lesions grow into white matter, white matter into grey
        matter, grey matter into CSF, every tissue into background: more foreground.
    ``conservative``
        The mirror image: every boundary moves inward (~75 % one voxel, ~20 % two);
        less foreground.
    ``sloppy``
        A larger, less smooth displacement (0.9 voxel RMS, nodes every 5 voxels), plus
        speckle: 10 % of the voxels that touch another label copy the label of a
        random voxel of their 3 x 3 x 3 neighbourhood (ragged, jagged edges that stay
        attached to the structures; nothing changes far from a boundary, so lesion
        counts are kept).
    ``misses_components``
        Drops half (at least one) of the 26-connected components of each small class
        (a label under 5 % of the truth's non-zero voxels, e.g. lesions, or the only
        label the rater annotates); a dropped component takes the most common label
        around it. Then expert noise. With no small class it is an expert.

    Typical agreement with the truth, 2 mm MNI subjects with 3 lesions, seeds 0-7
    (mean Dice; ``fg`` is the rater's non-zero volume over the truth's):

    =================  =====  =====  =====  ======  =====
    profile            CSF    GM     WM     lesion  fg
    =================  =====  =====  =====  ======  =====
    expert             0.98   0.99   0.99   0.99    1.00
    generous           0.36   0.74   0.79   0.62    1.08
    conservative       0.47   0.78   0.73   0.53    0.93
    sloppy             0.38   0.77   0.77   0.52    1.00
    misses_components  0.98   0.99   0.99   0.37    1.00
    =================  =====  =====  =====  ======  =====

    At 1 mm the same voxel-sized errors cost less (generous: CSF 0.50, GM 0.86, WM
    0.88). CSF is thin at 2 mm, hence its low Dice under every biased profile.

    Parameters
    ----------
    truth : ndarray of shape (X, Y, Z), integer
        True labels, values 0..255; not modified.
    profile : str
        One of :data:`RATER_PROFILES`.
    seed : int
        Non-negative. Same arguments give identical output.
    labels : sequence of int, optional
        Label values this rater annotates (non-zero). Truth values not listed count as
        background for this rater, so the output holds only 0 and these values. None:
        every non-zero value in ``truth``.

    Returns
    -------
    ndarray of shape (X, Y, Z), uint8
        The rater's label map. An all-background truth gives all background.

    Raises
    ------
    ValueError
        Unknown profile (the message lists the valid ones), bad truth, labels or seed.

    Examples
    --------
    >>> truth = np.zeros((12, 12, 12), dtype=np.uint8)
    >>> truth[3:9, 3:9, 3:9] = 3
    >>> seg = simulate_rater(truth, profile="generous", seed=0)
    >>> seg.shape, seg.dtype
    ((12, 12, 12), dtype('uint8'))
    >>> bool((seg > 0).sum() > (truth > 0).sum())
    True
    """
    if profile not in _PROFILES:
        raise ValueError(f"profile: unknown rater profile {profile!r}; valid profiles are " + ", ".join(RATER_PROFILES))
    truth = _check_truth(truth)
    seed = _check_seed(seed)
    selected = _check_labels(labels, truth)
    settings = _PROFILES[profile]

    lut = np.zeros(256, dtype=np.uint8)
    lut[list(selected)] = list(selected)
    mapped = lut[truth]
    out = np.zeros(truth.shape, dtype=np.uint8)
    bounds = _nonzero_bounds(mapped)
    if bounds is None:
        return out
    box = tuple(
        slice(max(a - _CROP_MARGIN, 0), min(b + _CROP_MARGIN, n)) for (a, b), n in zip(bounds, truth.shape, strict=True)
    )
    rng = np.random.default_rng(seed)
    seg = mapped[box].copy()

    if settings.miss_fraction > 0:
        foreground = int(np.count_nonzero(truth))
        _drop_components(rng, seg, selected, settings.miss_fraction, foreground)
    seg = _warp_labels(rng, seg, settings.warp_rms, settings.warp_node_spacing)
    if any(settings.grow) or any(settings.shrink):
        outward = any(settings.grow)
        first, second = settings.grow if outward else settings.shrink
        (accept,) = _voxel_fields(rng, seg.shape, _ACCEPT_NODE_SPACING, 1.0, 1)
        # Thresholds on the (about standard normal) field: P(field < t) ~ probability.
        seg = _move_boundaries(seg, accept < _normal_quantile(first), outward)
        seg = _move_boundaries(seg, accept < _normal_quantile(second), outward)
    if settings.speckle > 0:
        _add_speckle(rng, seg, settings.speckle)

    out[box] = seg
    return out


def _normal_quantile(p: float) -> float:
    return float(ndtri(p)) if p > 0 else -np.inf


def _warp_labels(rng: np.random.Generator, seg: np.ndarray, rms: float, node_spacing: float) -> np.ndarray:
    """Resample labels through a smooth random displacement, nearest neighbour."""
    displacement = _voxel_fields(rng, seg.shape, node_spacing, rms, 3)
    steps = [np.rint(d).astype(np.int16) for d in displacement]
    moving = (steps[0] != 0) | (steps[1] != 0) | (steps[2] != 0)
    if np.count_nonzero(moving) > 0.1 * moving.size:
        # Large displacements: only voxels with another label within reach can change,
        # and finding them is cheaper than indexing every moving voxel.
        size = 2 * max(int(np.abs(s).max()) for s in steps) + 1
        moving &= ndi.maximum_filter(seg, size=size) != ndi.minimum_filter(seg, size=size)
    where = np.nonzero(moving)
    source = tuple(np.clip(w + s[where], 0, n - 1) for w, s, n in zip(where, steps, seg.shape, strict=True))
    out = seg.copy()
    out[where] = seg[source]
    return out


def _move_boundaries(seg: np.ndarray, accept: np.ndarray, outward: bool) -> np.ndarray:
    """One voxel of boundary motion, where ``accept``: outward takes the highest label
    among the 6 face neighbours when it is higher, inward the lowest when it is lower."""
    combine = np.maximum if outward else np.minimum
    neighbour = seg.copy()
    for axis in range(seg.ndim):
        before = [slice(None)] * seg.ndim
        after = [slice(None)] * seg.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        # Shifted views; the volume edge counts as its own neighbour (mode "nearest").
        combine(neighbour[tuple(after)], seg[tuple(before)], out=neighbour[tuple(after)])
        combine(neighbour[tuple(before)], seg[tuple(after)], out=neighbour[tuple(before)])
    change = accept & ((neighbour > seg) if outward else (neighbour < seg))
    return np.where(change, neighbour, seg)


def _drop_components(
    rng: np.random.Generator,
    seg: np.ndarray,
    selected: Sequence[int],
    fraction: float,
    foreground: int,
) -> None:
    """Remove a fraction of the components of small classes, in place.

    Small: under ``_SMALL_CLASS_FRACTION`` of ``foreground`` (the truth's non-zero
    voxels), or the only label the rater annotates (a binary lesion mask).
    """
    for value in selected:
        volume = int(np.count_nonzero(seg == value))
        small = len(selected) == 1 or volume < _SMALL_CLASS_FRACTION * foreground
        if volume == 0 or not small:
            continue
        drop_label_components(rng, seg, value, fraction)


def drop_label_components(rng: np.random.Generator, seg: np.ndarray, value: int, fraction: float) -> None:
    """Drop a fraction (at least one, at most all) of the 26-connected components of one
    label, in place; a dropped component takes the most common other label of its shell."""
    components, count = ndi.label(seg == value, structure=_COMPONENTS_3D)
    if count == 0:
        return
    n_drop = min(count, max(1, round(fraction * count)))
    dropped = rng.choice(np.arange(1, count + 1), size=n_drop, replace=False)
    slices = ndi.find_objects(components)
    for index in np.sort(dropped):
        region = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(slices[index - 1], seg.shape, strict=True)
        )
        mask = components[region] == index
        shell = ndi.binary_dilation(mask, structure=_COMPONENTS_3D) & ~mask
        around = seg[region][shell & (seg[region] != value)]
        seg[region][mask] = np.bincount(around).argmax() if around.size else 0


def _add_speckle(rng: np.random.Generator, seg: np.ndarray, rate: float) -> None:
    """Speckle, in place: a fraction ``rate`` of the voxels that have a different label
    within ``_SPECKLE_REACH`` voxels copy the label of a random voxel that close."""
    size = 2 * _SPECKLE_REACH + 1
    band = np.flatnonzero(ndi.maximum_filter(seg, size=size) != ndi.minimum_filter(seg, size=size))
    hit = band[rng.random(band.size) < rate]
    if hit.size == 0:
        return
    where = np.unravel_index(hit, seg.shape)
    source = tuple(
        np.clip(
            w + rng.integers(-_SPECKLE_REACH, _SPECKLE_REACH + 1, size=hit.size),
            0,
            n - 1,
        )
        for w, n in zip(where, seg.shape, strict=True)
    )
    seg[where] = seg[source]


def rater_seed(seed: int, rater: int) -> int:
    """The seed :func:`simulate_panel` gives rater number ``rater`` (0-based).

    ``simulate_panel(t, profiles=p, seed=s)[r]`` equals
    ``simulate_rater(t, profile=p[r], seed=rater_seed(s, r))``.
    """
    seed = _check_seed(seed)
    if isinstance(rater, bool) or not isinstance(rater, numbers.Integral) or rater < 0:
        raise ValueError(f"rater: expected an integer >= 0, got {rater!r}")
    state = np.random.SeedSequence([seed, int(rater)]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def simulate_panel(truth: np.ndarray, *, profiles: Sequence[str], seed: int) -> np.ndarray:
    """Simulate a panel of raters on one truth. Raters are SIMULATED.

    Parameters
    ----------
    truth : ndarray of shape (X, Y, Z), integer
        True labels, values 0..255; not modified.
    profiles : sequence of str
        One profile per rater (see :func:`simulate_rater`); repeats allowed, e.g.
        ``["expert"] * 3 + ["sloppy"]``.
    seed : int
        Non-negative. Rater ``r`` uses ``rater_seed(seed, r)``, so raters with the same
        profile still make different errors.

    Returns
    -------
    ndarray of shape (R, X, Y, Z), uint8
        One label map per rater, in the order of ``profiles``.

    Examples
    --------
    >>> truth = np.zeros((10, 10, 10), dtype=np.uint8)
    >>> truth[2:8, 2:8, 2:8] = 2
    >>> simulate_panel(truth, profiles=["expert", "sloppy"], seed=1).shape
    (2, 10, 10, 10)
    """
    if isinstance(profiles, str):
        raise TypeError("profiles: expected a sequence of profile names, got one string")
    profiles = list(profiles)
    if not profiles:
        raise ValueError("profiles: expected at least one rater profile")
    unknown = [p for p in profiles if p not in _PROFILES]
    if unknown:
        raise ValueError(
            f"profiles: unknown rater profile(s) {unknown!r}; valid profiles are " + ", ".join(RATER_PROFILES)
        )
    truth = _check_truth(truth)
    seed = _check_seed(seed)
    return np.stack(
        [simulate_rater(truth, profile=profile, seed=rater_seed(seed, r)) for r, profile in enumerate(profiles)]
    )


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
