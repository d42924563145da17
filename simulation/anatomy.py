"""The MNI152 2009a anatomy that nilearn ships: T1, tissue labels, brain mask.

Everything here is SIMULATED; the package docstring says how and why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from ._shared import BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER

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
