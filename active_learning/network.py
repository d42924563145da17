"""Segmentation network and checkpoints for active learning (the working grid: ``working_grid``).

Pure module: numpy, scipy, scikit-image, torch and MONAI. No Django, no paths, no
database. The Django layer stores what :func:`save_checkpoint` returns as a file and
gives the bytes back to :func:`load_checkpoint`.

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
>>> model, cfg = load_checkpoint(save_checkpoint(build_network(config), config))
>>> cfg == config
True
"""

from __future__ import annotations

import contextlib
import io
import json
import numbers
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODES",
    "NetworkConfig",
    "build_network",
    "checkpoint_metadata",
    "load_checkpoint",
    "mc_dropout",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "mriannot.active_learning.checkpoint/1"
#: How a network reads a scan (``NetworkConfig.mode``).
MODES = ("whole", "patch")


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
    input_roles : tuple of str
        Names of the input channels, in order (the sequences of a scan, e.g.
        ``("T1w", "FLAIR")``), stacked channel-first; the first sets the crop. Empty: one
        unnamed channel, the scan's own image (checkpoints written before channels had names
        read back so).
    mode : {"whole", "patch"}
        ``"whole"``: the network reads one whole working volume of ``working_shape``
        (:mod:`active_learning.working_grid`; every checkpoint written before patches existed
        reads back so). ``"patch"``: it trains on patches of ``patch_shape`` at the scan's own
        resolution (:mod:`active_learning.native_grid`) and predicts by sliding window with
        Gaussian blending.
    patch_shape : tuple of 3 int
        Training patch and sliding-window size with ``mode="patch"``; each divisible by
        ``prod(strides)``.
    target_spacing_mm : tuple of 3 float or None
        With ``mode="patch"``: scans whose spacing differs are resampled to it; None keeps
        every scan's own spacing.
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
    input_roles: tuple[str, ...] = ()
    mode: str = "whole"
    patch_shape: tuple[int, int, int] = (48, 48, 48)
    target_spacing_mm: tuple[float, float, float] | None = None

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
        roles = tuple(self.input_roles)
        if not all(isinstance(r, str) and r for r in roles) or len(set(roles)) != len(roles):
            raise ValueError(f"input_roles: expected distinct non-empty names, got {roles}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        patch = tuple(_int(v, "patch_shape") for v in self.patch_shape)
        if len(patch) != 3 or min(patch) < 1 or any(n % factor for n in patch):
            raise ValueError(f"patch_shape: expected 3 positive sizes divisible by {factor}, got {patch}")
        target = self.target_spacing_mm
        if target is not None:
            target = tuple(float(v) for v in target)
            if len(target) != 3 or not all(np.isfinite(target)) or min(target) <= 0:
                raise ValueError(f"target_spacing_mm: expected None or 3 positive sizes in mm, got {target}")
        object.__setattr__(self, "patch_shape", patch)
        object.__setattr__(self, "target_spacing_mm", target)
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
        object.__setattr__(self, "input_roles", roles)

    @property
    def in_channels(self) -> int:
        """Number of input channels: ``len(input_roles)``, 1 when unnamed."""
        return max(1, len(self.input_roles))

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
        Input ``(N, config.in_channels, X, Y, Z)`` float32 on the working grid, output logits
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
        in_channels=config.in_channels,
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
