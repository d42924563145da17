"""The working grid: how a scan is mapped to the network's input and a prediction back.

Pure module: numpy, scikit-image and torch. Volumes are indexed ``(X, Y, Z)`` as stored
(after ``nibabel.as_closest_canonical`` in this project); ``spacing`` is the voxel size in mm along those axes.

1. Foreground: ``image > threshold_otsu(image)`` [3]_. It separates tissue from the
   noisy, not necessarily zero background of MR images (on skull-stripped images with a
   zero background it is close to the non-zero mask). A constant image is all
   foreground.
2. Crop (``crop_foreground``): the bounding box of the slices holding at least 0.5 % of
   the largest slice count of foreground voxels (stray noise voxels do not widen it),
   grown by ``crop_margin_mm`` on each side and clipped to the volume.
3. Normalise: ``z = (image - mean) / std`` over the foreground voxels of the whole
   scan, clipped to ``[-clip_z, clip_z]``. A scan of several co-registered channels
   (``(C, X, Y, Z)``: T1w, FLAIR, ...) is cropped by its first channel's foreground, and each
   channel is z-scored on its own foreground, resampled alike and stacked channel-first.
4. Resample with ONE isotropic factor, so that anatomy keeps its physical proportions:
   the largest mm-per-voxel grid on which the crop fits ``working_shape``. Shrinking
   averages over each output voxel (area, ``adaptive_avg_pool3d``), enlarging is
   trilinear. Label maps are resampled as one-hot fractions and take the majority
   class. The result sits centred in ``working_shape``, padded with the lowest
   value of the resampled scan (label: background).

The default ``working_shape`` (48, 56, 48) puts the simulated MNI152 brains (about
146 x 180 x 156 mm of brain plus margins) on a grid of about 3.4 mm: 8 MC-dropout
passes of the default network take a fraction of a second on 2 cores, against ~3 s
for a 96^3 crop (see ``bench/bench_scoring.py`` and ``docs/active_learning.md``).

Examples
--------
>>> import numpy as np
>>> from active_learning.network import NetworkConfig
>>> config = NetworkConfig(labels=(0, 1), working_shape=(16, 16, 16), channels=(4, 8),
...                        strides=(2,))
>>> image = np.zeros((20, 20, 20), dtype=np.float32); image[5:15, 5:15, 5:15] = 1.0
>>> work, geometry = to_working(image, config=config, spacing=(2.0, 2.0, 2.0))
>>> work.shape, work.dtype
((16, 16, 16), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .network import NetworkConfig

__all__ = ["WorkingGeometry", "labels_to_working", "probabilities_to_labels", "to_working"]

# Slices with fewer foreground voxels than this fraction of the fullest slice do not
# count for the crop (isolated noise voxels above the Otsu threshold).
_CROP_SLICE_FRACTION = 0.005

# --------------------------------------------------------------------------------------
# Working grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkingGeometry:
    """How one scan was mapped to the working grid.

    Attributes
    ----------
    original_shape : tuple of 3 int
        Shape of the scan as given.
    crop : tuple of 3 (start, stop)
        Box of the original grid that was resampled.
    content_shape : tuple of 3 int
        Size of the resampled box on the working grid.
    offset : tuple of 3 int
        Where the box starts on the working grid (centred, padded around).
    working_spacing_mm : float
        Approximate voxel size of the working grid, mm (the same on every axis).
    mean, std : float
        Foreground intensity statistics used for the z-score.
    """

    original_shape: tuple[int, int, int]
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    content_shape: tuple[int, int, int]
    offset: tuple[int, int, int]
    working_spacing_mm: float
    mean: float
    std: float

    @property
    def content(self) -> tuple[slice, slice, slice]:
        """Slices of the working grid holding the resampled scan."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.content_shape, strict=True))

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """Slices of the original grid that were resampled."""
        return tuple(slice(a, b) for a, b in self.crop)


def _check_volume(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D array (X, Y, Z), got shape {array.shape}")
    if min(array.shape) < 1:
        raise ValueError(f"{name}: empty array of shape {array.shape}")
    return array


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise ValueError(f"spacing: expected 3 positive voxel sizes in mm, got {spacing!r}")
    return values


def _resize(volume: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample ``(N, C, X, Y, Z)`` float to ``size``: area when every axis shrinks or
    stays, trilinear otherwise."""
    size = tuple(int(n) for n in size)
    if tuple(volume.shape[2:]) == size:
        return volume
    if all(o <= i for o, i in zip(size, volume.shape[2:], strict=True)):
        return F.adaptive_avg_pool3d(volume, size)
    return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)


def _foreground(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    lo, hi = float(image.min()), float(image.max())
    if not hi > lo:
        return np.ones(image.shape, dtype=bool)
    return image > threshold_otsu(image)


def _crop_box(mask: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> tuple[tuple[int, int], ...]:
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        profile = mask.sum(axis=others)
        keep = np.flatnonzero(profile >= max(1.0, _CROP_SLICE_FRACTION * profile.max()))
        margin = int(np.ceil(margin_mm / spacing[axis] - 1e-9))
        n = mask.shape[axis]
        box.append((max(int(keep[0]) - margin, 0), min(int(keep[-1]) + 1 + margin, n)))
    return tuple(box)


def to_working(
    image: np.ndarray,
    *,
    config: NetworkConfig,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, WorkingGeometry]:
    """Map a scan to the working grid: crop, z-score, resample (see module notes).

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z), or (C, X, Y, Z) for C co-registered channels, real
        The scan at its original resolution; finite; not modified. With several channels the
        first (the scan's own image) sets the foreground crop; each channel is z-scored on
        its own foreground and padded with its own lowest value.
    config : NetworkConfig
        Gives ``working_shape``, ``crop_foreground``, ``crop_margin_mm`` and ``clip_z``.
    spacing : sequence of 3 float
        Voxel size in mm along X, Y, Z (``header.get_zooms()[:3]``).

    Returns
    -------
    volume : ndarray of shape ``config.working_shape`` (or ``(C, *working_shape)``), float32
        z-scored intensities on the working grid, the input's rank.
    geometry : WorkingGeometry
        What :func:`labels_to_working` and :func:`probabilities_to_labels` need (``mean`` and
        ``std`` of the first channel).

    Examples
    --------
    >>> cfg = NetworkConfig(labels=(0, 1), working_shape=(8, 8, 8), channels=(4, 8),
    ...                     strides=(2,), crop_foreground=False)
    >>> vol, geo = to_working(np.arange(16 ** 3, dtype=np.float32).reshape(16, 16, 16),
    ...                       config=cfg)
    >>> vol.shape, geo.content_shape, geo.working_spacing_mm
    ((8, 8, 8), (8, 8, 8), 2.0)
    >>> to_working(np.stack([np.ones((16, 16, 16)), np.eye(16)[:, :, None] * np.ones(16)]),
    ...            config=cfg)[0].shape
    (2, 8, 8, 8)
    """
    channels, stacked, spacing, mask, crop = _prepare(image, config, spacing)
    extent_mm = [(b - a) * s for (a, b), s in zip(crop, spacing, strict=True)]
    scale = min(w / e for w, e in zip(config.working_shape, extent_mm, strict=True))
    content = tuple(int(min(max(round(e * scale), 1), w)) for e, w in zip(extent_mm, config.working_shape, strict=True))
    offset = tuple((w - c) // 2 for w, c in zip(config.working_shape, content, strict=True))

    outs, stats = [], []
    for index, channel in enumerate(channels):
        z, mean, std = _z_crop(channel, mask if index == 0 else None, crop, config)
        stats.append((mean, std))
        z = _resize(z[None, None], content)[0, 0]
        out = torch.full(config.working_shape, float(z.min()), dtype=torch.float32)
        out[tuple(slice(o, o + c) for o, c in zip(offset, content, strict=True))] = z
        outs.append(out.numpy())
    geometry = WorkingGeometry(
        original_shape=tuple(int(n) for n in channels[0].shape),
        crop=tuple((int(a), int(b)) for a, b in crop),
        content_shape=content,
        offset=offset,
        working_spacing_mm=float(1.0 / scale),
        mean=stats[0][0],
        std=stats[0][1],
    )
    return (np.stack(outs) if stacked else outs[0]), geometry


def _prepare(image: Any, config: NetworkConfig, spacing: Sequence[float]):
    """Checked channels (a list of 3-D float32), whether the input was stacked, the spacing, the
    first channel's foreground and the crop box (shared by the working and the native grid)."""
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig, got {type(config).__name__}")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    stacked = image.ndim == 4
    if stacked and image.shape[0] < 1:
        raise ValueError(f"image: expected at least one channel, got shape {image.shape}")
    channels = (
        [_check_image(c, f"image[{i}]") for i, c in enumerate(image)] if stacked else [_check_image(image, "image")]
    )
    spacing = _check_spacing(spacing)
    mask = _foreground(channels[0])
    if config.crop_foreground:
        crop = _crop_box(mask, spacing, config.crop_margin_mm)
    else:
        crop = tuple((0, n) for n in channels[0].shape)
    return channels, stacked, spacing, mask, crop


def _z_crop(channel: np.ndarray, mask: np.ndarray | None, crop, config: NetworkConfig):
    """The crop of one channel z-scored on its foreground (``mask``, or its own Otsu foreground),
    clipped; with the mean and SD used."""
    values = channel[_foreground(channel) if mask is None else mask]
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if not std > 0:
        std = 1.0
    cropped = torch.from_numpy(np.ascontiguousarray(channel[tuple(slice(a, b) for a, b in crop)]))
    z = ((cropped.double() - mean) / std).clamp_(-config.clip_z, config.clip_z).float()
    return z, mean, std


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """A finite real 3-D scan as float32."""
    image = _check_volume(image, name)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"{name}: expected real intensities, got dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return image


def _check_geometry(geometry: WorkingGeometry, config: NetworkConfig) -> None:
    if not isinstance(geometry, WorkingGeometry):
        raise TypeError(f"geometry: expected a WorkingGeometry, got {type(geometry).__name__}")
    ends = [o + c for o, c in zip(geometry.offset, geometry.content_shape, strict=True)]
    if any(e > w for e, w in zip(ends, config.working_shape, strict=True)):
        raise ValueError(
            f"geometry: content {geometry.content_shape} at {geometry.offset} does not fit "
            f"working_shape {config.working_shape}; was it made with another config?"
        )


def _crop_classes(labels: Any, geometry, config: NetworkConfig) -> np.ndarray:
    """The crop box of a label map as class indices (uint8), after checking shape and values."""
    labels = _check_volume(labels, "labels")
    if labels.shape != geometry.original_shape:
        raise ValueError(f"labels: shape {labels.shape} differs from the image shape {geometry.original_shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected an integer label map, got dtype {labels.dtype}")
    unknown = sorted(set(np.unique(labels).tolist()) - set(config.labels))
    if unknown:
        raise ValueError(f"labels: values {unknown} are not among the configured labels {config.labels}")
    lut = np.zeros(256, dtype=np.uint8)
    lut[list(config.labels)] = np.arange(config.n_classes)
    return lut[labels[geometry.crop_slices].astype(np.int64)]


def labels_to_working(labels: np.ndarray, geometry: WorkingGeometry, *, config: NetworkConfig) -> np.ndarray:
    """Map a label map to class indices on the working grid (majority of each voxel).

    Parameters
    ----------
    labels : ndarray of shape ``geometry.original_shape``, integer
        Label values of ``config.labels``; not modified.
    geometry : WorkingGeometry
        From :func:`to_working` on the matching image.
    config : NetworkConfig

    Returns
    -------
    ndarray of shape ``config.working_shape``, uint8
        Class indices 0..C-1 (``i`` stands for ``config.labels[i]``); padding is 0.

    Raises
    ------
    ValueError
        Wrong shape, or values that are not in ``config.labels`` (the message lists them).
    """
    _check_geometry(geometry, config)
    classes = torch.from_numpy(_crop_classes(labels, geometry, config).astype(np.int64))
    onehot = F.one_hot(classes, config.n_classes).permute(3, 0, 1, 2)[None].float()
    fractions = _resize(onehot, geometry.content_shape)[0]
    out = np.zeros(config.working_shape, dtype=np.uint8)
    out[geometry.content] = fractions.argmax(dim=0).numpy().astype(np.uint8)
    return out


def probabilities_to_labels(
    probabilities: np.ndarray | torch.Tensor,
    geometry: WorkingGeometry,
    *,
    config: NetworkConfig,
) -> np.ndarray:
    """Map class probabilities on the working grid back to a label map at the scan's
    original shape and grid (the pre-label).

    Parameters
    ----------
    probabilities : ndarray or Tensor of shape (C, *working_shape), float
        Softmax (or mean MC-dropout softmax) per class, channel ``i`` for
        ``config.labels[i]``; not modified.
    geometry : WorkingGeometry
        From :func:`to_working` on the scan.
    config : NetworkConfig

    Returns
    -------
    ndarray of shape ``geometry.original_shape``, uint8
        Label values of ``config.labels``: the argmax of the probabilities resampled
        (trilinear, or area when shrinking) to the crop box; background (0) outside it.
    """
    _check_geometry(geometry, config)
    if isinstance(probabilities, torch.Tensor):
        probs = probabilities.detach().cpu().float()
    else:
        probs = torch.from_numpy(np.asarray(probabilities, dtype=np.float32))
    expected = (config.n_classes, *config.working_shape)
    if tuple(probs.shape) != expected:
        raise ValueError(f"probabilities: expected shape {expected}, got {tuple(probs.shape)}")
    box_shape = tuple(b - a for a, b in geometry.crop)
    content = probs[(slice(None), *geometry.content)][None]
    classes = _resize(content, box_shape)[0].argmax(dim=0).numpy()
    values = np.asarray(config.labels, dtype=np.uint8)
    out = np.zeros(geometry.original_shape, dtype=np.uint8)
    out[geometry.crop_slices] = values[classes]
    return out
