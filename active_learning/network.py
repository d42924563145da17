"""Segmentation network, working-resolution geometry and checkpoints for active learning.

Pure module: numpy, scipy, scikit-image, torch and MONAI. No Django, no paths, no
database. The Django layer stores what :func:`save_checkpoint` returns as a file and
gives the bytes back to :func:`load_checkpoint`.

API
---
``NetworkConfig``
    Frozen dataclass: ``labels`` (label values, output channel ``i`` is ``labels[i]``,
    ``labels[0] == 0`` is background), ``working_shape``, ``channels``, ``strides``,
    ``num_res_units``, ``dropout``, ``crop_foreground``, ``crop_margin_mm``,
    ``clip_z``. ``to_dict()`` / ``NetworkConfig.from_dict(d)`` round-trip through JSON.
``build_network(config) -> torch.nn.Module``
    MONAI ``UNet(spatial_dims=3, in_channels=1, out_channels=len(labels), ...)`` with
    dropout, freshly initialised from torch's global RNG (seed it, or use
    :func:`active_learning.training.train_segmentation`).
``WorkingGeometry``
    Frozen dataclass recording how a scan was mapped to the working grid, so that a
    prediction can be mapped back to the scan's ORIGINAL grid.
``to_working(image, *, config, spacing=(1, 1, 1)) -> (ndarray, WorkingGeometry)``
    Crop, z-score and resample a scan to ``config.working_shape`` (float32).
``labels_to_working(labels, geometry, *, config) -> ndarray``
    A label map (label values) to class indices 0..C-1 on the working grid (uint8).
``probabilities_to_labels(probabilities, geometry, *, config) -> ndarray``
    Class probabilities on the working grid to a label map (label values, uint8) at the
    scan's original shape: the pre-label.
``mc_dropout(model)``
    Context manager: evaluation mode with only the dropout layers sampling.
``save_checkpoint(model, config, *, metadata=None) -> bytes``
``load_checkpoint(data) -> (model, config)``
``checkpoint_metadata(data) -> dict``

Working grid
------------
Volumes are indexed ``(X, Y, Z)`` as stored (after ``nibabel.as_closest_canonical`` in
this project); ``spacing`` is the voxel size in mm along those axes.

1. Foreground: ``image > threshold_otsu(image)`` [3]_. It separates tissue from the
   noisy, not necessarily zero background of MR images (on skull-stripped images with a
   zero background it is close to the non-zero mask). A constant image is all
   foreground.
2. Crop (``crop_foreground``): the bounding box of the slices holding at least 0.5 % of
   the largest slice count of foreground voxels (stray noise voxels do not widen it),
   grown by ``crop_margin_mm`` on each side and clipped to the volume.
3. Normalise: ``z = (image - mean) / std`` over the foreground voxels of the whole
   scan, clipped to ``[-clip_z, clip_z]``.
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

Checkpoint format
-----------------
``torch.save`` of a dict, loaded back with ``torch.load(weights_only=True)`` (no
pickled code is executed)::

    {"format": "mriannot.active_learning.checkpoint/1",
     "config": "<json of NetworkConfig.to_dict()>",
     "metadata": "<json of the caller's metadata dict>",
     "state_dict": {parameter name: tensor, ...}}

References
----------
.. [1] Ronneberger O, Fischer P, Brox T. U-Net: convolutional networks for biomedical
   image segmentation. MICCAI 2015. (MONAI ``UNet``, residual units after Kerfoot et
   al., "Left-ventricle quantification using residual U-Net", STACOM 2018.)
.. [2] Isensee F, Jaeger PF, Kohl SAA, et al. nnU-Net: a self-configuring method for
   deep learning-based biomedical image segmentation. Nat Methods 18:203-211, 2021.
   (Foreground crop, z-score normalisation, fixed-iteration training.)
.. [3] Otsu N. A threshold selection method from gray-level histograms. IEEE Trans
   Syst Man Cybern 9(1):62-66, 1979.
.. [4] Gal Y, Ghahramani Z. Dropout as a Bayesian approximation. ICML 2016.
   (MC dropout.)

Examples
--------
>>> import numpy as np
>>> config = NetworkConfig(labels=(0, 1), working_shape=(16, 16, 16), channels=(4, 8),
...                        strides=(2,))
>>> image = np.zeros((20, 20, 20), dtype=np.float32); image[5:15, 5:15, 5:15] = 1.0
>>> work, geometry = to_working(image, config=config, spacing=(2.0, 2.0, 2.0))
>>> work.shape, work.dtype
((16, 16, 16), dtype('float32'))
>>> model, cfg = load_checkpoint(save_checkpoint(build_network(config), config))
>>> cfg == config
True
"""

from __future__ import annotations

import contextlib
import io
import json
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CHECKPOINT_FORMAT",
    "NetworkConfig",
    "WorkingGeometry",
    "build_network",
    "checkpoint_metadata",
    "labels_to_working",
    "load_checkpoint",
    "mc_dropout",
    "probabilities_to_labels",
    "save_checkpoint",
    "to_working",
]

CHECKPOINT_FORMAT = "mriannot.active_learning.checkpoint/1"

# Slices with fewer foreground voxels than this fraction of the fullest slice do not
# count for the crop (isolated noise voxels above the Otsu threshold).
_CROP_SLICE_FRACTION = 0.005


# --------------------------------------------------------------------------------------
# Configuration and network
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild the network and its input pipeline.

    Attributes
    ----------
    labels : tuple of int
        Label values in output-channel order; ``labels[0]`` must be 0 (background),
        values unique in 0..255. Predictions are written with these values.
    working_shape : tuple of 3 int
        Grid the network sees, ``(X, Y, Z)``; each divisible by ``prod(strides)``.
    channels : tuple of int
        Feature maps per U-Net level (MONAI ``UNet(channels=...)``).
    strides : tuple of int
        Down-sampling per level; ``len(channels) - 1`` entries.
    num_res_units : int
        Residual units per block (MONAI); 0 gives plain convolutions.
    dropout : float
        Dropout probability in every convolution block, in [0, 1); > 0 for MC dropout.
    crop_foreground : bool
        Crop to the foreground bounding box before resampling (see the module notes).
    crop_margin_mm : float
        Margin added around the foreground box, mm.
    clip_z : float
        z-scores are clipped to ``[-clip_z, clip_z]``.
    """

    labels: tuple[int, ...] = (0, 1, 2, 3, 4)
    working_shape: tuple[int, int, int] = (48, 56, 48)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    dropout: float = 0.2
    crop_foreground: bool = True
    crop_margin_mm: float = 4.0
    clip_z: float = 5.0

    def __post_init__(self) -> None:
        labels = tuple(_int(v, "labels") for v in self.labels)
        if len(labels) < 2:
            raise ValueError(f"labels: expected background and at least one label, got {labels}")
        if labels[0] != 0:
            raise ValueError(f"labels: the first value must be 0 (background), got {labels}")
        if len(set(labels)) != len(labels) or min(labels) < 0 or max(labels) > 255:
            raise ValueError(f"labels: expected unique values in 0..255, got {labels}")
        shape = tuple(_int(v, "working_shape") for v in self.working_shape)
        channels = tuple(_int(v, "channels") for v in self.channels)
        strides = tuple(_int(v, "strides") for v in self.strides)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"working_shape: expected 3 positive sizes, got {shape}")
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels: expected at least 2 positive sizes, got {channels}")
        if len(strides) != len(channels) - 1 or min(strides) < 1:
            raise ValueError(
                f"strides: expected {len(channels) - 1} positive values (one fewer than channels), got {strides}"
            )
        factor = int(np.prod(strides))
        if any(n % factor for n in shape):
            raise ValueError(f"working_shape: every size must be divisible by prod(strides) = {factor}, got {shape}")
        if _int(self.num_res_units, "num_res_units") < 0:
            raise ValueError(f"num_res_units: expected >= 0, got {self.num_res_units}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if not float(self.crop_margin_mm) >= 0.0:
            raise ValueError(f"crop_margin_mm: expected >= 0, got {self.crop_margin_mm}")
        if not float(self.clip_z) > 0.0:
            raise ValueError(f"clip_z: expected > 0, got {self.clip_z}")
        # Normalise to plain tuples and Python scalars (JSON round trip, equality).
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "working_shape", shape)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "num_res_units", int(self.num_res_units))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "crop_foreground", bool(self.crop_foreground))
        object.__setattr__(self, "crop_margin_mm", float(self.crop_margin_mm))
        object.__setattr__(self, "clip_z", float(self.clip_z))

    @property
    def n_classes(self) -> int:
        """Number of output channels, ``len(labels)``."""
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected integers, got {value!r}")
    return int(value)


def build_network(config: NetworkConfig) -> torch.nn.Module:
    """A MONAI 3-D U-Net with dropout for ``config`` [1]_.

    Parameters
    ----------
    config : NetworkConfig

    Returns
    -------
    torch.nn.Module
        Input ``(N, 1, X, Y, Z)`` float32 on the working grid, output logits
        ``(N, C, X, Y, Z)`` with ``C = config.n_classes``. Weights are drawn from torch's
        global RNG; the module is in training mode.

    Examples
    --------
    >>> net = build_network(NetworkConfig(labels=(0, 1), working_shape=(8, 8, 8),
    ...                                   channels=(4, 8), strides=(2,)))
    >>> net(torch.zeros(1, 1, 8, 8, 8)).shape
    torch.Size([1, 2, 8, 8, 8])
    """
    from monai.networks.nets import UNet

    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig, got {type(config).__name__}")
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=config.n_classes,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
    )


@contextlib.contextmanager
def mc_dropout(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluation mode with the dropout layers left sampling (MC dropout [4]_).

    Normalisation layers stay in evaluation mode, so only dropout is random. The
    previous training/evaluation mode of every submodule is restored on exit.
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.train()
        yield model
    finally:
        for module, mode in modes.items():
            module.train(mode)


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
    image : ndarray of shape (X, Y, Z), real
        The scan at its original resolution; finite; not modified.
    config : NetworkConfig
        Gives ``working_shape``, ``crop_foreground``, ``crop_margin_mm`` and ``clip_z``.
    spacing : sequence of 3 float
        Voxel size in mm along X, Y, Z (``header.get_zooms()[:3]``).

    Returns
    -------
    volume : ndarray of shape ``config.working_shape``, float32
        z-scored intensities on the working grid.
    geometry : WorkingGeometry
        What :func:`labels_to_working` and :func:`probabilities_to_labels` need.

    Examples
    --------
    >>> cfg = NetworkConfig(labels=(0, 1), working_shape=(8, 8, 8), channels=(4, 8),
    ...                     strides=(2,), crop_foreground=False)
    >>> vol, geo = to_working(np.arange(16 ** 3, dtype=np.float32).reshape(16, 16, 16),
    ...                       config=cfg)
    >>> vol.shape, geo.content_shape, geo.working_spacing_mm
    ((8, 8, 8), (8, 8, 8), 2.0)
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig, got {type(config).__name__}")
    image = _check_volume(image, "image")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"image: expected real intensities, got dtype {image.dtype}")
    spacing = _check_spacing(spacing)
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError("image: contains NaN or infinite values")

    mask = _foreground(image)
    values = image[mask]
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if not std > 0:
        std = 1.0
    if config.crop_foreground:
        crop = _crop_box(mask, spacing, config.crop_margin_mm)
    else:
        crop = tuple((0, n) for n in image.shape)
    cropped = image[tuple(slice(a, b) for a, b in crop)]

    extent_mm = [(b - a) * s for (a, b), s in zip(crop, spacing, strict=True)]
    scale = min(w / e for w, e in zip(config.working_shape, extent_mm, strict=True))
    content = tuple(int(min(max(round(e * scale), 1), w)) for e, w in zip(extent_mm, config.working_shape, strict=True))
    offset = tuple((w - c) // 2 for w, c in zip(config.working_shape, content, strict=True))

    z = (torch.from_numpy(np.ascontiguousarray(cropped)).double() - mean) / std
    z = z.clamp_(-config.clip_z, config.clip_z).float()[None, None]
    z = _resize(z, content)[0, 0]
    out = torch.full(config.working_shape, float(z.min()), dtype=torch.float32)
    out[tuple(slice(o, o + c) for o, c in zip(offset, content, strict=True))] = z
    geometry = WorkingGeometry(
        original_shape=tuple(int(n) for n in image.shape),
        crop=tuple((int(a), int(b)) for a, b in crop),
        content_shape=content,
        offset=offset,
        working_spacing_mm=float(1.0 / scale),
        mean=mean,
        std=std,
    )
    return out.numpy(), geometry


def _check_geometry(geometry: WorkingGeometry, config: NetworkConfig) -> None:
    if not isinstance(geometry, WorkingGeometry):
        raise TypeError(f"geometry: expected a WorkingGeometry, got {type(geometry).__name__}")
    ends = [o + c for o, c in zip(geometry.offset, geometry.content_shape, strict=True)]
    if any(e > w for e, w in zip(ends, config.working_shape, strict=True)):
        raise ValueError(
            f"geometry: content {geometry.content_shape} at {geometry.offset} does not fit "
            f"working_shape {config.working_shape}; was it made with another config?"
        )


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
    labels = _check_volume(labels, "labels")
    _check_geometry(geometry, config)
    if labels.shape != geometry.original_shape:
        raise ValueError(f"labels: shape {labels.shape} differs from the image shape {geometry.original_shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected an integer label map, got dtype {labels.dtype}")
    present = np.unique(labels)
    unknown = sorted(set(present.tolist()) - set(config.labels))
    if unknown:
        raise ValueError(f"labels: values {unknown} are not among the configured labels {config.labels}")
    lut = np.zeros(256, dtype=np.int64)
    lut[list(config.labels)] = np.arange(config.n_classes)
    classes = torch.from_numpy(lut[labels[geometry.crop_slices].astype(np.int64)])
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


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(
    model: torch.nn.Module,
    config: NetworkConfig,
    *,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """Serialise a network and its config (see "Checkpoint format" above).

    Parameters
    ----------
    model : torch.nn.Module
        Built by :func:`build_network` from ``config``; not modified.
    config : NetworkConfig
    metadata : dict, optional
        JSON-serialisable extras (training hyperparameters, scan ids, validation Dice,
        code version); read back with :func:`checkpoint_metadata`.

    Returns
    -------
    bytes
        About 4 bytes per parameter plus a few kB.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig, got {type(config).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    try:
        metadata_json = json.dumps({} if metadata is None else dict(metadata), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata: not JSON-serialisable ({error})") from None
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(config.to_dict(), sort_keys=True),
            "metadata": metadata_json,
            "state_dict": state,
        },
        buffer,
    )
    return buffer.getvalue()


def _read_checkpoint(data: bytes) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    try:
        payload = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types on corrupt bytes
        raise ValueError(f"data: not a readable checkpoint ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"data: expected checkpoint format {CHECKPOINT_FORMAT!r}, got {found!r}")
    return payload


def load_checkpoint(data: bytes) -> tuple[torch.nn.Module, NetworkConfig]:
    """Rebuild the network saved by :func:`save_checkpoint`.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    model : torch.nn.Module
        On the CPU, in evaluation mode.
    config : NetworkConfig

    Raises
    ------
    ValueError
        Not a checkpoint of this format, or weights that do not fit the config.
    """
    payload = _read_checkpoint(data)
    config = NetworkConfig.from_dict(json.loads(payload["config"]))
    model = build_network(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"data: weights do not match the stored config ({error})") from None
    model.eval()
    return model, config


def checkpoint_metadata(data: bytes) -> dict[str, Any]:
    """The ``metadata`` dict given to :func:`save_checkpoint`."""
    return json.loads(_read_checkpoint(data)["metadata"])
