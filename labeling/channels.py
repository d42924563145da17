"""Several sequences of one scan on one grid: check a channel's grid, resample it onto the scan's.

The sequences of a session (T1w, T2w, FLAIR) are taken as co-registered in world coordinates,
as a scanner writes them in one DICOM session: a channel on another grid is resampled onto the
scan's by its affine alone (trilinear, nibabel's ``resample_from_to``), with no registration.
Pure: numpy, nibabel.

>>> ref = np.diag([2.0, 2.0, 2.0, 1.0])
>>> same_grid((4, 4, 4), ref, (4, 4, 4), ref + 1e-6)
True
>>> moved = np.diag([1.0, 1.0, 1.0, 1.0])
>>> out = resample_onto(np.ones((8, 8, 8), np.float32), moved, shape=(4, 4, 4), affine=ref)
>>> out.data.shape, round(out.coverage, 3), out.transform[0][0]
((4, 4, 4), 1.0, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

GRID_TOLERANCE_MM = 0.01  # affines closer than this on every entry are one grid
MIN_COVERAGE = 0.5  # a channel must see at least half of the scan's voxels


@dataclass(frozen=True)
class Resampled:
    """A channel on the scan's grid, with what was done to put it there."""

    data: np.ndarray  # the scan's shape, float32 (or the input's dtype when not resampled)
    resampled: bool
    transform: list[list[float]] | None  # 4x4: scan voxel index -> channel voxel index
    coverage: float  # fraction of the scan's voxels inside the channel's field of view


def same_grid(shape_a, affine_a, shape_b, affine_b, *, tol: float = GRID_TOLERANCE_MM) -> bool:
    """Whether two volumes share their voxel grid (same shape, affines equal within ``tol`` mm)."""
    return tuple(shape_a) == tuple(shape_b) and bool(
        np.allclose(np.asarray(affine_a, float), np.asarray(affine_b, float), atol=tol, rtol=0)
    )


def coverage(source_shape, source_affine, *, shape, affine) -> float:
    """Fraction of the voxel centres of the (``shape``, ``affine``) grid inside the source volume."""
    index_map = np.linalg.inv(np.asarray(source_affine, float)) @ np.asarray(affine, float)
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    # The map is affine: the source index along each axis is a sum of one term per target axis,
    # so counting inside-voxels needs no full grid of coordinates, only one slab per pair.
    inside = np.ones(tuple(shape), dtype=bool)
    for row, limit in zip(index_map[:3], source_shape, strict=True):
        value = row[3] + sum((row[k] * axes[k]).reshape([-1 if j == k else 1 for j in range(3)]) for k in range(3))
        inside &= (value > -0.5) & (value < limit - 0.5)
    return float(inside.mean())


def resample_onto(data: np.ndarray, source_affine, *, shape, affine) -> Resampled:
    """Put a channel (RAS+ ``data`` with ``source_affine``) on the grid (``shape``, ``affine``).

    On the same grid the data is kept as it is; otherwise it is resampled trilinearly, 0 outside
    the channel's field of view. ``transform`` maps the grid's voxel indices to the channel's.
    """
    if same_grid(data.shape, source_affine, shape, affine):
        return Resampled(data=data, resampled=False, transform=None, coverage=1.0)
    source = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(source_affine, float))
    target = resample_from_to(source, (tuple(shape), np.asarray(affine, float)), order=1, mode="constant", cval=0.0)
    index_map = np.linalg.inv(np.asarray(source_affine, float)) @ np.asarray(affine, float)
    return Resampled(
        data=np.asarray(target.dataobj, dtype=np.float32),
        resampled=True,
        transform=[[float(v) for v in row] for row in index_map],
        coverage=coverage(data.shape, source_affine, shape=shape, affine=affine),
    )
