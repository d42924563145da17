"""Simulated subjects: a deformed anatomy with lesions, contrast, bias and noise.

Everything here is SIMULATED; the package docstring says how and why.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._shared import GREY_MATTER, LESION, WHITE_MATTER, _check_seed, _nonzero_bounds
from .anatomy import Anatomy
from .fields import _BSPLINE_POWER, _bspline_basis, _n_nodes, _random_fields, _spline_field

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
# On the other contrasts white-matter lesions are bright whatever their T1 (oedema, gliosis,
# demyelination lengthen T2): painted again after the map, as a ratio to the mapped white
# matter, drawn from a stream of their own so the T1w image of a seed does not change.
_LESION_BRIGHT = {"T2w": (1.5, 2.0), "PDw": (1.2, 1.5), "FLAIR": (1.35, 1.75)}


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
      above white). Lesions are then painted again, bright on all three (1.2-2.0 times
      the mapped white matter, per contrast, from a stream of their own: the T1w image of
      a seed is unchanged). These are contrast-LIKE images, not simulations of MR physics.
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
    >>> from simulation import mni152_anatomy
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
    lesions, lesion_paint = _add_lesions(
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
        mapped_wm = float(np.interp(wm_level, *_CONTRAST_FROM_T1[contrast]))
        rng_bright = np.random.default_rng([seed, 0xF1A1])
        for (lesion_box, weight), lesion in zip(lesion_paint, lesions, strict=True):
            lesion[f"{contrast}_contrast"] = ratio = float(rng_bright.uniform(*_LESION_BRIGHT[contrast]))
            t1[lesion_box] += (np.float32(ratio * mapped_wm) - t1[lesion_box]) * weight
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
) -> tuple[list[dict[str, Any]], list[tuple[tuple[slice, ...], np.ndarray]]]:
    """Paint ``n_lesions`` ellipsoidal lesions into ``t1`` and ``labels`` in place.

    Returns the lesions' facts and, per lesion, its box and partial-volume weights (to paint it
    again on another contrast).
    """
    lesions: list[dict[str, Any]] = []
    paint: list[tuple[tuple[slice, ...], np.ndarray]] = []
    if n_lesions == 0:
        return lesions, paint
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
        weight = weight.astype(np.float32)
        local_t1 += (np.float32(contrast * wm_level) - local_t1) * weight
        local_labels[painted] = LESION
        paint.append((box, weight))
        lesions.append(
            {
                "centre_voxel": tuple(float(c) for c in centre),
                "semi_axes_mm": tuple(float(a) for a in axes),
                "contrast": contrast,
                "voxels": int(painted.sum()),
            }
        )
    return lesions, paint


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
