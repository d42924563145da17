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

from active_learning.network import NetworkConfig, build_network, mc_dropout
from active_learning.uncertainty import ScanUncertainty, scan_uncertainty
from active_learning.working_grid import probabilities_to_labels, to_working

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "dice_per_label",
    "evaluate_dice",
    "evaluate_dice_per_scan",
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
        object.__setattr__(self, "loss_share", float(self.loss_share))
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
    """A working image as ``(C, X, Y, Z)`` float32 (a 3-D one is one channel)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] < 1:
        raise ValueError(f"{name}: expected a working image (X, Y, Z) or (C, X, Y, Z), got {image.shape}")
    if config is not None and image.shape[1:] != config.working_shape:
        raise ValueError(
            f"{name}: shape {image.shape[1:]} differs from working_shape {config.working_shape}; "
            "map scans with active_learning.working_grid.to_working first"
        )
    if config is not None and image.shape[0] != config.in_channels:
        raise ValueError(f"{name}: {image.shape[0]} channels, the network takes {config.in_channels}")
    if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
        raise ValueError(f"{name}: expected finite real intensities")
    return image.astype(np.float32, copy=False)


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
    ys = []
    for i, target in enumerate(targets):
        target = np.asarray(target)
        if target.shape != config.working_shape or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(
                f"targets[{i}]: expected integer class indices of shape "
                f"{config.working_shape}, got {target.dtype} {target.shape}"
            )
        if target.size and (target.min() < 0 or target.max() >= config.n_classes):
            raise ValueError(
                f"targets[{i}]: class indices must lie in 0..{config.n_classes - 1}, got "
                f"{target.min()}..{target.max()} (pass labels_to_working output, not labels)"
            )
        ys.append(target.astype(np.int64))
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
    report_every = max(1, steps // _PROGRESS_REPORTS)
    rng = np.random.default_rng(training.seed)
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
        for step in range(steps):
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
            if callback is not None and (step + 1) % report_every == 0 and step + 1 < steps:
                callback((step + 1) / steps, f"step {step + 1}/{steps}, loss {value:.4f}")
    model.eval()
    seconds = time.perf_counter() - start_time
    if callback is not None:
        callback(1.0, f"trained {steps} steps on {len(xs)} scans in {seconds:.1f} s")
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


def predict_probabilities(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Softmax of one deterministic pass (dropout off) on a working image.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`train_segmentation` or ``load_checkpoint``; its train/eval mode is
        restored afterwards.
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), float
        Working image (:func:`active_learning.working_grid.to_working`), the model's input
        channels; not modified.

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
            return torch.softmax(model(x), dim=1)[0].numpy()
    finally:
        model.train(was_training)


def mc_dropout_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    n_samples: int = 8,
    seed: int = 0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Softmax of ``n_samples`` passes with dropout sampling (MC dropout [3]_).

    Parameters
    ----------
    model : torch.nn.Module
        With dropout layers; only they are set to sample, normalisation stays in
        evaluation mode; every mode is restored afterwards.
    image : ndarray of shape (X, Y, Z) or (C, X, Y, Z), float
        Working image, the model's input channels; not modified.
    n_samples : int, keyword-only
        Number of passes T (default 8; MONAI Label uses 5).
    seed : int, keyword-only
        Seeds the dropout masks (the global torch RNG is left as it was): the same
        model, image, seed and batch_size give the same samples.
    batch_size : int, keyword-only, optional
        Passes per forward call (default: all T in one batch; smaller batches use less
        memory and draw different, equally valid masks).

    Returns
    -------
    ndarray of shape (T, C, X, Y, Z), float32
    """
    model = _check_model(model)
    for name, value, low in (("n_samples", n_samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if batch_size is None:
        batch_size = n_samples
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    x = torch.from_numpy(_working_image(image, None, "image").copy())[None]
    outputs = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        with mc_dropout(model), torch.inference_mode():
            done = 0
            while done < n_samples:
                count = min(int(batch_size), n_samples - done)
                outputs.append(torch.softmax(model(x.expand(count, -1, -1, -1, -1)), dim=1))
                done += count
    return torch.cat(outputs).numpy()


def score_scan(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    n_samples: int = 8,
    margin: float = 3,
    seed: int = 0,
) -> ScanUncertainty:
    """MC-dropout uncertainty of one working image, summarised over the predicted
    foreground dilated by ``margin`` voxels (:func:`active_learning.uncertainty.scan_uncertainty`).

    Returns
    -------
    ScanUncertainty
        ``entropy`` and ``bald`` in nats.
    """
    samples = mc_dropout_probabilities(model, image, n_samples=n_samples, seed=seed)
    return scan_uncertainty(samples, margin=margin)


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
        The model's config (from ``load_checkpoint``).
    spacing : sequence of 3 float, keyword-only
        Voxel size in mm.

    Returns
    -------
    ndarray of shape image.shape, uint8
        Values among ``config.labels``; background outside the crop box.
    """
    working, geometry = to_working(image, config=config, spacing=spacing)
    probabilities = predict_probabilities(model, working)
    return probabilities_to_labels(probabilities, geometry, config=config)


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
        predicted = predict_probabilities(model, image).argmax(axis=0)
        scores = dice_per_label(predicted, np.asarray(target), labels=range(1, config.n_classes))
        out.append({value: scores[index] for index, value in enumerate(config.labels[1:], start=1)})
    return out


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
