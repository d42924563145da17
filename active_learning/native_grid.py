"""The native grid: a scan at its own resolution (or a project target spacing) for patch models.

Pure module: numpy, scikit-image and torch. Volumes are ``(X, Y, Z)`` as stored, ``spacing``
in mm along the same axes. A network of ``NetworkConfig(mode="patch")`` reads what
:func:`to_native` returns; the whole-volume networks of earlier versions read
:func:`active_learning.working_grid.to_working` (``mode="whole"``).

1. Foreground and crop as the working grid: Otsu foreground [1]_, the bounding box of the
   slices holding at least 0.5 % of the fullest slice's foreground, grown by
   ``crop_margin_mm``.
2. z-score each channel on its own foreground, clipped to ``[-clip_z, clip_z]``.
3. Resample to ``target_spacing_mm`` only when the scan's spacing differs from it (by more
   than 1 %): trilinear for images, one-hot fractions and majority for labels (area
   averaging when shrinking). No target (None): the scan's own spacing, no resampling, so a
   ground truth reaches the network voxel for voxel (nnU-Net [2]_ trains at the data's
   median spacing; a project whose scans differ sets one).
4. Nothing is padded here: volumes of any size come out; patches and the sliding window
   pad what is smaller than a patch.

References
----------
.. [1] Otsu N. IEEE Trans Syst Man Cybern 9(1):62-66, 1979.
.. [2] Isensee F, et al. nnU-Net. Nat Methods 18:203-211, 2021.

Examples
--------
>>> import numpy as np
>>> from active_learning.network import NetworkConfig
>>> config = NetworkConfig(labels=(0, 1), channels=(4, 8), strides=(2,), working_shape=(8, 8, 8),
...                        mode="patch", patch_shape=(8, 8, 8))
>>> image = np.zeros((20, 20, 20), np.float32); image[5:15, 5:15, 5:15] = 1.0
>>> volume, geometry = to_native(image, config=config, spacing=(2.0, 2.0, 2.0))
>>> volume.shape, geometry.crop   # 10 voxels of foreground + 2 voxels (4 mm) each side
((14, 14, 14), ((3, 17), (3, 17), (3, 17)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .network import NetworkConfig
from .working_grid import (
    WorkingGeometry,
    _crop_classes,
    _prepare,
    _resize,
    _z_crop,
    labels_to_working,
    probabilities_to_labels,
    to_working,
)

__all__ = [
    "NativeGeometry",
    "labels_to_native",
    "native_probabilities_to_labels",
    "network_input",
    "network_prelabel",
    "network_target",
    "to_native",
    "voxel_volume_ml",
]

_SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class NativeGeometry:
    """How one scan was mapped to the native grid.

    Attributes
    ----------
    original_shape : tuple of 3 int
    crop : tuple of 3 (start, stop)
        Box of the original grid that was kept.
    shape : tuple of 3 int
        Shape on the native grid (the crop box, resampled when ``resampled``).
    spacing_mm : tuple of 3 float
        Voxel size on the native grid.
    resampled : bool
        False when the native grid is the scan's own (voxel for voxel).
    mean, std : float
        First channel's foreground statistics used for the z-score.
    """

    original_shape: tuple[int, int, int]
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    resampled: bool
    mean: float
    std: float

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.crop)


def _target_shape(box: Sequence[int], spacing, target) -> tuple[tuple[int, ...], tuple[float, ...], bool]:
    if target is None:
        return tuple(box), tuple(spacing), False
    if all(abs(s - t) <= _SPACING_TOLERANCE * t for s, t in zip(spacing, target, strict=True)):
        return tuple(box), tuple(spacing), False
    shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(box, spacing, target, strict=True))
    return shape, tuple(float(t) for t in target), True


def to_native(
    image: np.ndarray,
    *,
    config: NetworkConfig,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, NativeGeometry]:
    """Crop, z-score and (when needed) resample a scan for a patch network.

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), real
        The scan as stored; co-registered channels stacked first (the first sets the crop).
        Finite; not modified.
    config : NetworkConfig
        ``crop_foreground``, ``crop_margin_mm``, ``clip_z`` and ``target_spacing_mm``.
    spacing : sequence of 3 float
        Voxel size in mm.

    Returns
    -------
    volume : ndarray of shape ``geometry.shape`` (or ``(C, *geometry.shape)``), float32
    geometry : NativeGeometry
    """
    channels, stacked, spacing, mask, crop = _prepare(image, config, spacing)
    box = tuple(b - a for a, b in crop)
    shape, native_spacing, resampled = _target_shape(box, spacing, config.target_spacing_mm)
    outs, stats = [], []
    for index, channel in enumerate(channels):
        z, mean, std = _z_crop(channel, mask if index == 0 else None, crop, config)
        stats.append((mean, std))
        if resampled:
            z = F.interpolate(z[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]
        outs.append(z.numpy())
    geometry = NativeGeometry(
        original_shape=tuple(int(n) for n in channels[0].shape),
        crop=tuple((int(a), int(b)) for a, b in crop),
        shape=tuple(int(n) for n in shape),
        spacing_mm=tuple(float(s) for s in native_spacing),
        resampled=resampled,
        mean=stats[0][0],
        std=stats[0][1],
    )
    return (np.stack(outs) if stacked else outs[0]), geometry


def _check_native_geometry(geometry: NativeGeometry) -> None:
    if not isinstance(geometry, NativeGeometry):
        raise TypeError(f"geometry: expected a NativeGeometry, got {type(geometry).__name__}")


def labels_to_native(labels: np.ndarray, geometry: NativeGeometry, *, config: NetworkConfig) -> np.ndarray:
    """A label map as class indices on the native grid (voxel for voxel unless resampled).

    Parameters
    ----------
    labels : ndarray of shape ``geometry.original_shape``, integer
        Values of ``config.labels``; not modified.

    Returns
    -------
    ndarray of shape ``geometry.shape``, uint8
        Class indices 0..C-1; resampled label maps take the majority of one-hot fractions.

    Raises
    ------
    ValueError
        Wrong shape or values not in ``config.labels``.
    """
    _check_native_geometry(geometry)
    classes = _crop_classes(labels, geometry, config)
    if not geometry.resampled:
        return classes
    onehot = F.one_hot(torch.from_numpy(classes.astype(np.int64)), config.n_classes).permute(3, 0, 1, 2)[None]
    return _resize(onehot.float(), geometry.shape)[0].argmax(dim=0).numpy().astype(np.uint8)


def native_probabilities_to_labels(
    probabilities: np.ndarray | torch.Tensor, geometry: NativeGeometry, *, config: NetworkConfig
) -> np.ndarray:
    """Class probabilities on the native grid to a label map on the scan's own grid (the pre-label).

    Parameters
    ----------
    probabilities : ndarray or Tensor of shape (C, *geometry.shape), float

    Returns
    -------
    ndarray of shape ``geometry.original_shape``, uint8
        Label values; background outside the crop box. Resampled grids are mapped back
        trilinearly (area when shrinking) before the argmax.
    """
    _check_native_geometry(geometry)
    if isinstance(probabilities, torch.Tensor):
        probs = probabilities.detach().cpu().float()
    else:
        probs = torch.from_numpy(np.asarray(probabilities, dtype=np.float32))
    expected = (config.n_classes, *geometry.shape)
    if tuple(probs.shape) != expected:
        raise ValueError(f"probabilities: expected shape {expected}, got {tuple(probs.shape)}")
    box = tuple(b - a for a, b in geometry.crop)
    if geometry.resampled:
        probs = _resize(probs[None], box)[0]
    values = np.asarray(config.labels, dtype=np.uint8)
    out = np.zeros(geometry.original_shape, dtype=np.uint8)
    out[geometry.crop_slices] = values[probs.argmax(dim=0).numpy()]
    return out


# --------------------------------------------------------------------------------------
# Either grid, by the network's mode
# --------------------------------------------------------------------------------------


def voxel_volume_ml(geometry: NativeGeometry | WorkingGeometry) -> float:
    """Volume of one voxel of the network grid a scan was mapped to (``network_input``), mL
    (approximate for the whole-volume working grid, whose voxels are nearly isotropic).

    Examples
    --------
    >>> voxel_volume_ml(NativeGeometry((4, 4, 4), ((0, 4),) * 3, (4, 4, 4), (2.0, 2.0, 2.0), False, 0.0, 1.0))
    0.008
    """
    if isinstance(geometry, NativeGeometry):
        return float(np.prod(geometry.spacing_mm)) / 1000.0
    return float(geometry.working_spacing_mm) ** 3 / 1000.0


def network_input(
    image: np.ndarray, *, config: NetworkConfig, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, NativeGeometry | WorkingGeometry]:
    """The scan as ``config``'s network reads it: :func:`to_native` for a patch network,
    :func:`active_learning.working_grid.to_working` for a whole-volume one."""
    if config.mode == "patch":
        return to_native(image, config=config, spacing=spacing)
    return to_working(image, config=config, spacing=spacing)


def network_target(labels: np.ndarray, geometry, *, config: NetworkConfig) -> np.ndarray:
    """A label map as class indices on the grid of :func:`network_input`."""
    if config.mode == "patch":
        return labels_to_native(labels, geometry, config=config)
    return labels_to_working(labels, geometry, config=config)


def network_prelabel(probabilities, geometry, *, config: NetworkConfig) -> np.ndarray:
    """Class probabilities on the grid of :func:`network_input` to a label map on the scan's grid."""
    if config.mode == "patch":
        return native_probabilities_to_labels(probabilities, geometry, config=config)
    return probabilities_to_labels(probabilities, geometry, config=config)
