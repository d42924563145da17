"""Training and inference loops on working-grid arrays for active learning.

Pure module: numpy, torch and MONAI. No Django, no paths, no database. Arrays come
from :func:`active_learning.working_grid.to_working` and
:func:`active_learning.working_grid.labels_to_working`; models and checkpoints from
:mod:`active_learning.network`; scores are summarised by
:mod:`active_learning.uncertainty`.

The recipe (steps per scan, loss-prioritised scan sampling, augmentation, loss, schedule) and
how it was chosen: ``docs/active_learning.md``. Seeds apply inside ``torch.random.fork_rng``
(the caller's RNG is left as it was); the thread count is the caller's to set.

References
----------
.. [1] Taghanaki SA, et al. Combo loss: handling input and output imbalance in
   multi-organ segmentation. Comput Med Imaging Graph 75:24-33, 2019. (Dice + CE.)
.. [2] Isensee F, et al. nnU-Net. Nat Methods 18:203-211, 2021.
.. [3] Gal Y, Ghahramani Z. Dropout as a Bayesian approximation. ICML 2016.
.. [4] Schaul T, et al. Prioritized experience replay. ICLR 2016; Loshchilov I,
   Hutter F. Online batch selection for faster training of neural networks.
   ICLR workshop 2016.

Examples
--------
>>> import numpy as np
>>> from active_learning.network import NetworkConfig
>>> config = NetworkConfig(labels=(0, 1), working_shape=(8, 8, 8), channels=(4, 8),
...                        strides=(2,))
>>> image = np.zeros((8, 8, 8), np.float32); target = np.zeros((8, 8, 8), np.uint8)
>>> image[2:6, 2:6, 2:6] = 1.0; target[2:6, 2:6, 2:6] = 1
>>> result = train_segmentation([image], [target], config=config,
...                             training=TrainingConfig(steps=2, steps_per_scan=0))
>>> mc_dropout_probabilities(result.model, image, n_samples=3).shape
(3, 2, 8, 8, 8)
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from active_learning.native_grid import network_input, network_prelabel
from active_learning.network import NetworkConfig, build_network, mc_dropout
from active_learning.uncertainty import ScanUncertainty, calibration_bins, uncertainty_from_moments

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "dice_per_label",
    "evaluate_dice",
    "evaluate_dice_per_scan",
    "evaluate_validation",
    "mc_dropout_moments",
    "mc_dropout_probabilities",
    "mean_dice",
    "predict_labels",
    "predict_probabilities",
    "score_scan",
    "train_segmentation",
]

ProgressCallback = Callable[[float, str], None]

_GRAD_CLIP = 12.0
_POLY_EXPONENT = 0.9
_PROGRESS_REPORTS = 20
_BUDGET_PROBE_STEPS = 10
#: Sliding-window overlap (nnU-Net's step 0.5) and MONAI's Gaussian blending.
SW_OVERLAP = 0.5
SCAN_SAMPLING = ("uniform", "loss")


@dataclass(frozen=True)
class TrainingConfig:
    """Training hyperparameters (see "Training recipe" above).

    Attributes
    ----------
    steps : int
        Fewest optimiser steps (forward/backward passes of ``batch_size`` patches).
    steps_per_scan : int
        Steps per training scan; 0 trains exactly ``steps`` whatever the scans.
    max_steps : int
        Most steps, ``>= steps``: bounds the cost of a round for large projects.
    batch_size : int
    patch_shape : tuple of 3 int or None
        Training patch on the working grid, each size divisible by the network's
        ``prod(strides)``; None trains on whole working volumes.
    learning_rate : float
        Initial AdamW learning rate.
    weight_decay : float
    seed : int
    flip_axes : tuple of int
        Axes (0, 1, 2 = X, Y, Z) mirrored at random. Leave empty when labels are
        lateralised (left/right structures); (0,) suits left-right symmetric labels.
    intensity_jitter : float
        Half-width of the random scale and shift of the z-scored intensities.
    foreground_oversampling : float
        Fraction of patches centred on a voxel of a random non-background class.
    scan_sampling : {"loss", "uniform"}
        After the first pass, draw scans in proportion to their last training loss
        (mixed with uniform) or keep shuffled passes.
    loss_share : float
        With ``"loss"``: the share of the draw probability given by the losses.
    time_budget_s : float or None
        Wall-clock budget of the optimiser loop: after ``_BUDGET_PROBE_STEPS`` steps the
        step count is cut to what fits (and the learning-rate schedule follows the new count).
        None: always ``steps_for(n)`` steps (reproducible; the benchmark and tests).
    augment : bool
        Patch networks only: MONAI intensity transforms on every patch (Gaussian noise,
        gamma contrast, Gaussian smoothing; each with probability 0.15, as nnU-Net).
    """

    steps: int = 500
    steps_per_scan: int = 60
    max_steps: int = 6000
    batch_size: int = 1
    patch_shape: tuple[int, int, int] | None = None
    learning_rate: float = 2e-2
    weight_decay: float = 1e-5
    seed: int = 0
    flip_axes: tuple[int, ...] = ()
    intensity_jitter: float = 0.1
    foreground_oversampling: float = 0.33
    scan_sampling: str = "loss"
    loss_share: float = 0.5
    time_budget_s: float | None = None
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "steps_per_scan", "max_steps", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name}: expected an integer, got {value!r}")
        if self.steps < 1 or self.batch_size < 1 or self.seed < 0:
            raise ValueError(
                f"steps, batch_size: expected >= 1 and seed >= 0, got {self.steps}, {self.batch_size}, {self.seed}"
            )
        if self.steps_per_scan < 0 or self.max_steps < self.steps:
            raise ValueError(
                f"steps_per_scan: expected >= 0, got {self.steps_per_scan}; max_steps: "
                f"expected >= steps ({self.steps}), got {self.max_steps}"
            )
        patch = None
        if self.patch_shape is not None:
            patch = tuple(int(n) for n in self.patch_shape)
            if len(patch) != 3 or min(patch) < 1:
                raise ValueError(f"patch_shape: expected 3 positive sizes or None, got {patch}")
        axes = tuple(int(a) for a in self.flip_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"flip_axes: expected distinct axes among 0, 1, 2, got {axes}")
        if not float(self.learning_rate) > 0 or not float(self.weight_decay) >= 0:
            raise ValueError("learning_rate: expected > 0; weight_decay: expected >= 0")
        if not 0 <= float(self.intensity_jitter) < 1:
            raise ValueError(f"intensity_jitter: expected [0, 1), got {self.intensity_jitter}")
        if not 0 <= float(self.foreground_oversampling) <= 1:
            raise ValueError(f"foreground_oversampling: expected [0, 1], got {self.foreground_oversampling}")
        if self.scan_sampling not in SCAN_SAMPLING:
            raise ValueError(f"scan_sampling: expected one of {SCAN_SAMPLING}, got {self.scan_sampling!r}")
        if not 0 <= float(self.loss_share) <= 1:
            raise ValueError(f"loss_share: expected [0, 1], got {self.loss_share}")
        if self.time_budget_s is not None and not float(self.time_budget_s) > 0:
            raise ValueError(f"time_budget_s: expected None or > 0 seconds, got {self.time_budget_s}")
        object.__setattr__(self, "loss_share", float(self.loss_share))
        object.__setattr__(self, "time_budget_s", None if self.time_budget_s is None else float(self.time_budget_s))
        object.__setattr__(self, "augment", bool(self.augment))
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "steps_per_scan", int(self.steps_per_scan))
        object.__setattr__(self, "max_steps", int(self.max_steps))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "patch_shape", patch)
        object.__setattr__(self, "flip_axes", axes)
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "weight_decay", float(self.weight_decay))
        object.__setattr__(self, "intensity_jitter", float(self.intensity_jitter))
        object.__setattr__(self, "foreground_oversampling", float(self.foreground_oversampling))

    def steps_for(self, n_scans: int) -> int:
        """Optimiser steps for ``n_scans`` training scans: ``steps_per_scan * n_scans``
        clipped to ``[steps, max_steps]``."""
        return min(max(self.steps, self.steps_per_scan * int(n_scans)), self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"training: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True, eq=False)
class TrainingResult:
    """What :func:`train_segmentation` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained network, in evaluation mode, on the CPU.
    config : NetworkConfig
    training : TrainingConfig
    losses : tuple of float
        Training loss after each step.
    seconds : float
        Wall-clock training time.
    n_scans : int
        Number of training scans.
    """

    model: torch.nn.Module
    config: NetworkConfig
    training: TrainingConfig
    losses: tuple[float, ...]
    seconds: float
    n_scans: int

    def hyperparameters(self) -> dict[str, Any]:
        """``{"network": config.to_dict(), "training": training.to_dict()}``."""
        return {"network": self.config.to_dict(), "training": self.training.to_dict()}


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def _working_image(image: Any, config: NetworkConfig | None, name: str) -> np.ndarray:
    """A network input as ``(C, X, Y, Z)`` float32 (a 3-D one is one channel): the working grid
    for whole-volume networks, any size for patch networks."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] < 1:
        raise ValueError(f"{name}: expected a working image (X, Y, Z) or (C, X, Y, Z), got {image.shape}")
    if config is not None and config.mode == "whole" and image.shape[1:] != config.working_shape:
        raise ValueError(
            f"{name}: shape {image.shape[1:]} differs from working_shape {config.working_shape}; "
            "map scans with active_learning.working_grid.to_working first"
        )
    if config is not None and image.shape[0] != config.in_channels:
        raise ValueError(f"{name}: {image.shape[0]} channels, the network takes {config.in_channels}")
    if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
        raise ValueError(f"{name}: expected finite real intensities")
    return image.astype(np.float32, copy=False)


def _pad_to(x: np.ndarray, y: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad an image ``(C, *s)`` (with each channel's lowest value) and its target (background)
    at the end of every axis shorter than the patch."""
    pad = [max(0, p - n) for p, n in zip(patch, y.shape, strict=True)]
    if not any(pad):
        return x, y
    widths = [(0, w) for w in pad]
    x = np.stack([np.pad(c, widths, constant_values=float(c.min())) for c in x])
    return x, np.pad(y, widths)


def _fitted_patch(config: NetworkConfig, shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """``config.patch_shape``, cut on each axis to the largest volume rounded up to a multiple of
    ``prod(strides)`` (as nnU-Net caps its patch at the image size): small scans are not padded
    to a patch they would fill a fraction of."""
    factor = int(np.prod(config.strides))
    largest = [max(s[axis] for s in shapes) for axis in range(3)]
    return tuple(min(p, -(-n // factor) * factor) for p, n in zip(config.patch_shape, largest, strict=True))


def _augmenter(seed: int):
    """MONAI intensity transforms applied to each patch (nnU-Net's probabilities), seeded."""
    from monai.transforms import Compose, RandAdjustContrast, RandGaussianNoise, RandGaussianSmooth

    transform = Compose(
        [
            RandGaussianNoise(prob=0.15, std=0.1),
            RandGaussianSmooth(prob=0.15, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandAdjustContrast(prob=0.15, gamma=(0.7, 1.5), retain_stats=True),
        ]
    )
    transform.set_random_state(seed=seed)
    return transform


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"3 min"``, ``"1 h 05 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _patch_start(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    patch: tuple[int, ...],
    centre: tuple[int, ...] | None,
) -> tuple[int, ...]:
    if centre is None:
        return tuple(int(rng.integers(0, n - p + 1)) for n, p in zip(shape, patch, strict=True))
    return tuple(int(min(max(c - p // 2, 0), n - p)) for c, p, n in zip(centre, patch, shape, strict=True))


def _next_scan(
    rng: np.random.Generator,
    queue: list[int],
    scan_loss: np.ndarray,
    training: TrainingConfig,
) -> int:
    """The next training scan: shuffled passes, or loss-prioritised after the first pass."""
    n = len(scan_loss)
    if training.scan_sampling == "loss" and not np.isnan(scan_loss).any():
        share = training.loss_share
        weights = np.maximum(scan_loss, 0.0)
        total = weights.sum()
        p = np.full(n, 1.0 / n)
        if total > 0:
            p = (1.0 - share) * p + share * weights / total
        return int(rng.choice(n, p=p))
    if not queue:
        queue.extend(rng.permutation(n).tolist())
    return queue.pop(0)


def train_segmentation(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    config: NetworkConfig,
    training: TrainingConfig = TrainingConfig(),
    callback: ProgressCallback | None = None,
) -> TrainingResult:
    """Train a new network on working-grid scans (see "Training recipe" above).

    Parameters
    ----------
    images : sequence of ndarray of shape ``config.working_shape`` or ``(C, *working_shape)``, float
        z-scored scans from :func:`active_learning.working_grid.to_working`, with
        ``C = config.in_channels`` channels; not modified.
    targets : sequence of ndarray of shape ``config.working_shape``, integer
        Class indices 0..C-1 from :func:`active_learning.working_grid.labels_to_working`,
        one per image; not modified.
    config : NetworkConfig
    training : TrainingConfig
    callback : callable(fraction: float, message: str), optional
        Progress, about 20 calls; the last one has fraction 1.0. Exceptions it raises
        abort training.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        No scans, mismatched counts or shapes, class indices out of range, or a patch
        that does not fit the working shape or the network's strides.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig, got {type(config).__name__}")
    if not isinstance(training, TrainingConfig):
        raise TypeError(f"training: expected a TrainingConfig, got {type(training).__name__}")
    images = list(images)
    targets = list(targets)
    if not images:
        raise ValueError("images: expected at least one training scan")
    if len(targets) != len(images):
        raise ValueError(f"targets: expected {len(images)} (one per image), got {len(targets)}")
    xs = [_working_image(im, config, f"images[{i}]") for i, im in enumerate(images)]
    patch_mode = config.mode == "patch"
    ys = []
    for i, target in enumerate(targets):
        target = np.asarray(target)
        shape = xs[i].shape[1:] if patch_mode else config.working_shape
        if target.shape != shape or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(
                f"targets[{i}]: expected integer class indices of shape {shape}, got {target.dtype} {target.shape}"
            )
        if target.size and (target.min() < 0 or target.max() >= config.n_classes):
            raise ValueError(
                f"targets[{i}]: class indices must lie in 0..{config.n_classes - 1}, got "
                f"{target.min()}..{target.max()} (pass labels_to_working output, not labels)"
            )
        ys.append(target.astype(np.int64))
    if patch_mode:
        patch = _fitted_patch(config, [y.shape for y in ys])
        pairs = [_pad_to(x, y, patch) for x, y in zip(xs, ys, strict=True)]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        patch = training.patch_shape or config.working_shape
        factor = int(np.prod(config.strides))
        if any(p > n for p, n in zip(patch, config.working_shape, strict=True)) or any(p % factor for p in patch):
            raise ValueError(
                f"patch_shape: {patch} must fit working_shape {config.working_shape} and be "
                f"divisible by prod(strides) = {factor}"
            )
    if callback is not None and not callable(callback):
        raise TypeError("callback: expected a callable(fraction, message) or None")

    # Voxels of each class per scan, for foreground oversampling.
    class_voxels = [[np.flatnonzero(y == c) for c in range(1, config.n_classes)] for y in ys]
    steps = training.steps_for(len(xs))
    planned = steps
    report_every = max(1, steps // _PROGRESS_REPORTS)
    rng = np.random.default_rng(training.seed)
    augment = _augmenter(training.seed) if patch_mode and training.augment else None
    start_time = time.perf_counter()
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        from monai.losses import DiceCELoss

        model = build_network(config)
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        queue: list[int] = []
        scan_loss = np.full(len(xs), np.nan)
        step = 0
        while step < steps:
            lr = training.learning_rate * (1.0 - step / steps) ** _POLY_EXPONENT
            for group in optimiser.param_groups:
                group["lr"] = lr
            batch_x, batch_y, batch_index = [], [], []
            for _ in range(training.batch_size):
                index = _next_scan(rng, queue, scan_loss, training)
                batch_index.append(index)
                x, y = xs[index], ys[index]
                centre = None
                if rng.random() < training.foreground_oversampling:
                    present = [v for v in class_voxels[index] if v.size]
                    if present:
                        voxels = present[int(rng.integers(len(present)))]
                        centre = np.unravel_index(int(rng.choice(voxels)), y.shape)
                start = _patch_start(rng, y.shape, patch, centre)
                box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
                px, py = x[(slice(None), *box)], y[box]
                for axis in training.flip_axes:
                    if rng.random() < 0.5:
                        px, py = np.flip(px, axis + 1), np.flip(py, axis)
                if training.intensity_jitter:  # a scale and a shift per channel
                    jitter = rng.uniform(-training.intensity_jitter, training.intensity_jitter, (len(px), 2))
                    a, b = jitter[:, :1, None, None], jitter[:, 1:, None, None]
                    px = px * (1.0 + a).astype(np.float32) + b.astype(np.float32)
                if augment is not None:
                    px = np.asarray(augment(np.ascontiguousarray(px, dtype=np.float32)), dtype=np.float32)
                batch_x.append(np.ascontiguousarray(px, dtype=np.float32))
                batch_y.append(np.ascontiguousarray(py))
            tx = torch.from_numpy(np.stack(batch_x))
            ty = torch.from_numpy(np.stack(batch_y))[:, None]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx), ty)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
            optimiser.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training diverged at step {step}: loss {value}")
            losses.append(value)
            scan_loss[batch_index] = value
            step += 1
            elapsed = time.perf_counter() - start_time
            if training.time_budget_s is not None and step == _BUDGET_PROBE_STEPS and step < steps:
                fits = step + int((training.time_budget_s - elapsed) / (elapsed / step))
                steps = max(step + 1, min(steps, fits))
                report_every = max(1, steps // _PROGRESS_REPORTS)
            if callback is not None and step % report_every == 0 and step < steps:
                remaining = elapsed / step * (steps - step)
                callback(step / steps, f"step {step}/{steps}, loss {value:.4f}, about {_duration(remaining)} left")
    model.eval()
    seconds = time.perf_counter() - start_time
    if callback is not None:
        cut = f" (time budget: {steps} of {planned} planned)" if steps < planned else ""
        callback(1.0, f"trained {steps} steps on {len(xs)} scans in {seconds:.1f} s{cut}")
    return TrainingResult(
        model=model,
        config=config,
        training=training,
        losses=tuple(losses),
        seconds=seconds,
        n_scans=len(xs),
    )


# --------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------


def _sliding_window(model: torch.nn.Module, x: torch.Tensor, config: NetworkConfig, predictor) -> torch.Tensor:
    """MONAI ``sliding_window_inference`` over ``x`` ``(1, C, *s)`` with windows of
    ``config.patch_shape``, overlap 0.5 and Gaussian blending [2]_; a volume smaller than a
    window is padded with each channel's lowest value and the output cropped back."""
    from monai.inferers import sliding_window_inference

    shape = tuple(x.shape[2:])
    roi = _fitted_patch(config, [shape])
    pad = [max(0, p - n) for p, n in zip(roi, shape, strict=True)]
    if any(pad):
        lows = x.amin(dim=(2, 3, 4), keepdim=True)
        padded = lows.expand(*x.shape[:2], *(n + w for n, w in zip(shape, pad, strict=True))).clone()
        padded[(slice(None), slice(None), *(slice(0, n) for n in shape))] = x
        x = padded
    out = sliding_window_inference(
        x, roi_size=roi, sw_batch_size=1, predictor=predictor, overlap=SW_OVERLAP, mode="gaussian"
    )
    return out[(slice(None), slice(None), *(slice(0, n) for n in shape))]


def _patch_mode(config: NetworkConfig | None) -> bool:
    if config is not None and not isinstance(config, NetworkConfig):
        raise TypeError(f"config: expected a NetworkConfig or None, got {type(config).__name__}")
    return config is not None and config.mode == "patch"


def predict_probabilities(
    model: torch.nn.Module, image: np.ndarray, *, config: NetworkConfig | None = None
) -> np.ndarray:
    """Softmax of one deterministic pass (dropout off).

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`train_segmentation` or ``load_checkpoint``; its train/eval mode is
        restored afterwards.
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), float
        The network's input (``to_working``, or ``to_native`` for a patch network), the
        model's input channels; not modified.
    config : NetworkConfig, keyword-only, optional
        A patch network's config: predict by sliding window (Gaussian blending). None or a
        whole-volume config: one pass over the whole image.

    Returns
    -------
    ndarray of shape (C, X, Y, Z), float32
    """
    model = _check_model(model)
    x = torch.from_numpy(_working_image(image, None, "image").copy())[None]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            if _patch_mode(config):
                return _sliding_window(model, x, config, lambda w: torch.softmax(model(w), dim=1))[0].numpy()
            return torch.softmax(model(x), dim=1)[0].numpy()
    finally:
        model.train(was_training)


def _check_mc(n_samples: Any, seed: Any, batch_size: Any) -> int:
    for name, value, low in (("n_samples", n_samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if batch_size is None:
        batch_size = n_samples
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return int(batch_size)


def _mc_passes(model: torch.nn.Module, x: torch.Tensor, n_samples: int, batch_size: int) -> torch.Tensor:
    """Softmax of ``n_samples`` dropout passes of a batch ``(b, C, *s)``: ``(T, b, K, *s)``."""
    outputs = []
    done = 0
    while done < n_samples:
        count = min(batch_size, n_samples - done)
        batch = x.repeat(count, *([1] * (x.ndim - 1)))
        outputs.append(torch.softmax(model(batch), dim=1).reshape(count, *x.shape[:1], -1, *x.shape[2:]))
        done += count
    return torch.cat(outputs)


def mc_dropout_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    n_samples: int = 8,
    seed: int = 0,
    batch_size: int | None = None,
    config: NetworkConfig | None = None,
) -> np.ndarray:
    """Softmax of ``n_samples`` passes with dropout sampling (MC dropout [3]_).

    Parameters
    ----------
    model : torch.nn.Module
        With dropout layers; only they are set to sample, normalisation stays in
        evaluation mode; every mode is restored afterwards.
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), float
        The network's input, its input channels; not modified.
    n_samples : int, keyword-only
        Number of passes T (default 8; MONAI Label uses 5).
    seed : int, keyword-only
        Seeds the dropout masks (the global torch RNG is left as it was): the same
        model, image, seed and batch_size give the same samples.
    batch_size : int, keyword-only, optional
        Passes per forward call (default: all T in one batch; smaller batches use less
        memory and draw different, equally valid masks).
    config : NetworkConfig, keyword-only, optional
        A patch network's config: every window gets T passes, blended per pass (Gaussian).
        Memory ``T x C`` maps of the image; scoring uses :func:`mc_dropout_moments`.

    Returns
    -------
    ndarray of shape (T, C, X, Y, Z), float32
    """
    model = _check_model(model)
    batch_size = _check_mc(n_samples, seed, batch_size)
    x = torch.from_numpy(_working_image(image, None, "image").copy())[None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        with mc_dropout(model), torch.inference_mode():
            if _patch_mode(config):

                def predictor(window: torch.Tensor) -> torch.Tensor:
                    passes = _mc_passes(model, window, n_samples, batch_size)  # (T, b, K, *s)
                    return passes.transpose(0, 1).flatten(1, 2)  # (b, T*K, *s)

                out = _sliding_window(model, x, config, predictor)[0]
                return out.reshape(n_samples, -1, *out.shape[1:]).numpy()
            return _mc_passes(model, x, n_samples, batch_size)[:, 0].numpy()


def mc_dropout_moments(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    n_samples: int = 8,
    seed: int = 0,
    config: NetworkConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two maps entropy and BALD need, without keeping T softmax maps.

    Per window (patch networks; the whole image otherwise) T dropout passes give the mean
    softmax and the mean of the per-pass entropies, and the sliding window blends both
    (Gaussian). The blended mean equals the mean of the blended passes; the blended entropy is
    the windows' weighted mean entropy, equal to ``mean H`` of the blended passes where one
    window covers a voxel and at most it where windows overlap (entropy is concave), so BALD
    can read slightly higher there. Predictive entropy is ``H(mean)``, BALD ``H(mean) - mean H``
    (:func:`active_learning.uncertainty.uncertainty_from_moments`).

    Returns
    -------
    mean_probabilities : ndarray of shape (C, X, Y, Z), float32
    expected_entropy : ndarray of shape (X, Y, Z), float32
        Mean over passes of each pass's entropy, nats.
    """
    model = _check_model(model)
    _check_mc(n_samples, seed, None)
    x = torch.from_numpy(_working_image(image, None, "image").copy())[None]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        passes = _mc_passes(model, window, n_samples, n_samples)  # (T, b, K, *s)
        entropy = -(passes * torch.log(passes.clamp_min(1e-12))).sum(dim=2, keepdim=True)
        return torch.cat([passes.mean(dim=0), entropy.mean(dim=0)], dim=1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        with mc_dropout(model), torch.inference_mode():
            out = _sliding_window(model, x, config, predictor) if _patch_mode(config) else predictor(x)
    out = out[0].numpy()
    return out[:-1], out[-1]


def score_scan(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    n_samples: int = 8,
    margin: float = 3,
    seed: int = 0,
    config: NetworkConfig | None = None,
    top_k: int | None = None,
) -> ScanUncertainty:
    """MC-dropout uncertainty of one network input, summarised over the predicted
    foreground dilated by ``margin`` voxels (:func:`active_learning.uncertainty.uncertainty_from_moments`);
    ``config`` of a patch network: by sliding window.

    Returns
    -------
    ScanUncertainty
        ``entropy`` and ``bald`` in nats.
    """
    mean, aleatoric = mc_dropout_moments(model, image, n_samples=n_samples, seed=seed, config=config)
    return uncertainty_from_moments(mean, aleatoric, margin=margin, top_k=top_k)


def predict_labels(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    config: NetworkConfig,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """The pre-label of a scan: the model's label map at the scan's ORIGINAL grid.

    Parameters
    ----------
    model : torch.nn.Module
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), real
        The scan as stored (original resolution), the model's input channels; not modified.
    config : NetworkConfig
        The model's config (from ``load_checkpoint``): a whole-volume network reads the
        working grid, a patch network the native grid by sliding window.
    spacing : sequence of 3 float, keyword-only
        Voxel size in mm.

    Returns
    -------
    ndarray of shape image.shape, uint8
        Values among ``config.labels``; background outside the crop box.
    """
    volume, geometry = network_input(image, config=config, spacing=spacing)
    probabilities = predict_probabilities(model, volume, config=config)
    return network_prelabel(probabilities, geometry, config=config)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, *, labels: Sequence[int]) -> dict[int, float]:
    """Dice of each label value between two label maps.

    Parameters
    ----------
    prediction, truth : ndarray of the same shape, integer
        Label maps; not modified.
    labels : sequence of int, keyword-only
        Values to score (usually the non-zero labels).

    Returns
    -------
    dict of int to float
        ``2 |P & T| / (|P| + |T|)``; NaN when neither map has the label (nothing to
        score; leave it out of means), 0 when only one has it.

    Examples
    --------
    >>> dice_per_label(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), labels=[1, 2, 3])
    {1: 0.6666666666666666, 2: 0.6666666666666666, 3: nan}
    """
    prediction = np.asarray(prediction)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction: shape {prediction.shape} differs from truth {truth.shape}")
    out = {}
    for value in labels:
        p, t = prediction == value, truth == value
        total = int(p.sum()) + int(t.sum())
        out[int(value)] = 2.0 * int((p & t).sum()) / total if total else float("nan")
    return out


def evaluate_dice_per_scan(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    config: NetworkConfig,
) -> list[dict[int, float]]:
    """Dice per label of each scan on the working grid (validation split).

    Parameters
    ----------
    model : torch.nn.Module
    images : sequence of working images (:func:`active_learning.working_grid.to_working`)
    targets : sequence of working class-index maps (``labels_to_working``)
    config : NetworkConfig

    Returns
    -------
    list of dict of int to float
        One dict per image, in order, keyed by label VALUE (``config.labels[1:]``); NaN where
        the label is in neither the truth nor the prediction.
    """
    images, targets = list(images), list(targets)
    if len(images) != len(targets):
        raise ValueError(f"targets: expected {len(images)} (one per image), got {len(targets)}")
    out = []
    for image, target in zip(images, targets, strict=True):
        predicted = predict_probabilities(model, image, config=config).argmax(axis=0)
        scores = dice_per_label(predicted, np.asarray(target), labels=range(1, config.n_classes))
        out.append({value: scores[index] for index, value in enumerate(config.labels[1:], start=1)})
    return out


def evaluate_validation(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    config: NetworkConfig,
) -> tuple[list[dict[int, float]], list[dict[str, list]]]:
    """:func:`evaluate_dice_per_scan` and, from the same predictions, each scan's calibration bins
    (:func:`active_learning.uncertainty.calibration_bins`)."""
    images, targets = list(images), list(targets)
    if len(images) != len(targets):
        raise ValueError(f"targets: expected {len(images)} (one per image), got {len(targets)}")
    dice, bins = [], []
    for image, target in zip(images, targets, strict=True):
        probabilities = predict_probabilities(model, image, config=config)
        target = np.asarray(target)
        scores = dice_per_label(probabilities.argmax(axis=0), target, labels=range(1, config.n_classes))
        dice.append({value: scores[index] for index, value in enumerate(config.labels[1:], start=1)})
        bins.append(calibration_bins(probabilities, target))
    return dice, bins


def mean_dice(per_scan: Sequence[dict[int, float]], *, labels: Sequence[int]) -> dict[int, float]:
    """Mean Dice per label over scans, leaving out the scans where a label was not measured (NaN).

    >>> mean_dice([{1: 0.5, 2: float("nan")}, {1: 1.0, 2: 0.8}], labels=[1, 2, 3])
    {1: 0.75, 2: 0.8, 3: nan}
    """
    means = {}
    for value in labels:
        scores = [d[value] for d in per_scan if value in d and not math.isnan(d[value])]
        means[int(value)] = float(np.mean(scores)) if scores else float("nan")
    return means


def evaluate_dice(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    config: NetworkConfig,
) -> dict[int, float]:
    """Mean Dice per label over scans on the working grid (validation split).

    Parameters
    ----------
    model : torch.nn.Module
    images : sequence of working images (:func:`active_learning.working_grid.to_working`)
    targets : sequence of working class-index maps (``labels_to_working``)
    config : NetworkConfig

    Returns
    -------
    dict of int to float
        Keyed by label VALUE (``config.labels[1:]``); each the mean over scans where the
        label is in the truth or the prediction; NaN when in none. The mean of
        :func:`evaluate_dice_per_scan` (:func:`mean_dice`).
    """
    per_scan = evaluate_dice_per_scan(model, images, targets, config=config)
    return mean_dice(per_scan, labels=config.labels[1:])
