"""Tests of active_learning.network and active_learning.training.

Pure (no database). Tiny volumes (16^3) and tiny networks keep the file to seconds.
The learning test trains on a synthetic two-object task and checks held-out Dice
against an untrained network of the same seed, so it fails if training, the loss or
the label alignment break.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from active_learning.network import (
    CHECKPOINT_FORMAT,
    NetworkConfig,
    build_network,
    checkpoint_metadata,
    load_checkpoint,
    mc_dropout,
    save_checkpoint,
)
from active_learning.training import (
    TrainingConfig,
    TrainingResult,
    _next_scan,
    dice_per_label,
    evaluate_dice,
    mc_dropout_probabilities,
    predict_labels,
    predict_probabilities,
    score_scan,
    train_segmentation,
)
from active_learning.uncertainty import ScanUncertainty
from active_learning.working_grid import WorkingGeometry, labels_to_working, probabilities_to_labels, to_working

TINY = NetworkConfig(
    labels=(0, 1, 2),
    working_shape=(16, 16, 16),
    channels=(8, 16),
    strides=(2,),
    num_res_units=0,
    dropout=0.1,
    crop_foreground=False,
)


def _synthetic(seed: int, shape=(16, 16, 16)):
    """A noisy volume with a bright box (class 1) and a dark ball (class 2)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    target = np.zeros(shape, dtype=np.uint8)
    lo = rng.integers(1, 5, size=3)
    size = rng.integers(4, 7, size=3)
    box = tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))
    target[box] = 1
    centre = rng.uniform(9, 12, size=3)
    radius = rng.uniform(2.0, 3.5)
    ball = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0) <= radius**2
    target[ball & (target == 0)] = 2
    image = np.choose(target, [0.0, 2.0, -2.0]) + rng.normal(0, 0.5, shape)
    return image.astype(np.float32), target


def _working_pair(seed: int):
    """:func:`_synthetic` mapped to TINY's working grid (z-scored image, class indices)."""
    image, target = _synthetic(seed)
    work, geometry = to_working(image, config=TINY)
    return work, labels_to_working(target, geometry, config=TINY)


# ---------------------------------------------------------------------------- config


def test_config_round_trips_through_json():
    config = NetworkConfig(labels=(0, 3, 7), working_shape=(32, 40, 32))
    again = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.n_classes == 3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"labels": (1, 2)}, "labels"),
        ({"labels": (0, 1, 1)}, "labels"),
        ({"labels": (0,)}, "labels"),
        ({"working_shape": (48, 50, 48)}, "working_shape"),
        ({"strides": (2, 2)}, "strides"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation_names_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NetworkConfig(**kwargs)


def test_build_network_output_shape():
    net = build_network(TINY)
    assert net(torch.zeros(2, 1, 16, 16, 16)).shape == (2, 3, 16, 16, 16)


# ------------------------------------------------------------------------ working grid


def test_to_working_z_scores_and_resamples_without_changing_input():
    rng = np.random.default_rng(1)
    image = rng.normal(10, 1, size=(32, 24, 20)).astype(np.float32)
    image[4:28, 4:20, 4:16] += 100.0  # foreground
    before = image.copy()
    config = NetworkConfig(labels=(0, 1), working_shape=(16, 16, 16), channels=(4, 8), strides=(2,), crop_margin_mm=2.0)
    work, geometry = to_working(image, config=config, spacing=(1.0, 1.0, 1.0))
    assert np.array_equal(image, before)
    assert work.shape == (16, 16, 16) and work.dtype == np.float32
    # Crop: foreground box 4..28 x 4..20 x 4..16 grown by 2 voxels.
    assert geometry.crop == ((2, 30), (2, 22), (2, 18))
    # One isotropic factor: 28 mm -> 16 voxels, so 20 -> 11 and 16 -> 9 (rounded).
    assert geometry.content_shape == (16, 11, 9)
    assert geometry.working_spacing_mm == pytest.approx(28 / 16)
    assert geometry.offset == (0, 2, 3)
    assert geometry.mean == pytest.approx(110.0, abs=0.1)
    # Padding takes the lowest value; the foreground is z-scored around 0.
    assert work[:, :2].max() == pytest.approx(work.min())
    centre = work[4:12, 5:11, 5:9]
    assert abs(float(centre.mean())) < 0.3


def test_label_round_trip_is_exact_on_an_identity_grid():
    config = NetworkConfig(
        labels=(0, 2, 7), working_shape=(8, 8, 8), channels=(4, 8), strides=(2,), crop_foreground=False
    )
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 2, 7], dtype=np.uint8), size=(8, 8, 8))
    image = rng.normal(size=(8, 8, 8)).astype(np.float32)
    _, geometry = to_working(image, config=config)
    classes = labels_to_working(labels, geometry, config=config)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 1, 2}
    assert np.array_equal(np.array([0, 2, 7])[classes], labels)
    onehot = np.eye(3, dtype=np.float32)[classes].transpose(3, 0, 1, 2)
    back = probabilities_to_labels(onehot, geometry, config=config)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)


def test_label_round_trip_through_a_coarser_grid():
    # 2x2x2 blocks of one label on a 16^3 grid, working grid 8^3: exact both ways.
    config = NetworkConfig(
        labels=(0, 1, 2), working_shape=(8, 8, 8), channels=(4, 8), strides=(2,), crop_foreground=False
    )
    coarse = np.random.default_rng(2).integers(0, 3, size=(8, 8, 8)).astype(np.uint8)
    labels = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    _, geometry = to_working(np.ones((16, 16, 16), np.float32), config=config, spacing=(0.5, 0.5, 0.5))
    assert geometry.working_spacing_mm == pytest.approx(1.0)
    assert np.array_equal(labels_to_working(labels, geometry, config=config), coarse)
    # Back to the original 16^3 grid: one-hot upsampled, argmax; interiors of blocks
    # are exact, and every value is a configured label value.
    onehot = np.eye(3, dtype=np.float32)[coarse].transpose(3, 0, 1, 2)
    back = probabilities_to_labels(onehot, geometry, config=config)
    assert back.shape == (16, 16, 16) and set(np.unique(back)) <= {0, 1, 2}
    assert (back == labels).mean() > 0.6


def test_prelabel_is_background_outside_the_crop_and_uses_label_values():
    config = NetworkConfig(labels=(0, 5), working_shape=(8, 8, 8), channels=(4, 8), strides=(2,), crop_margin_mm=0.0)
    image = np.zeros((20, 20, 20), np.float32)
    image[5:15, 6:14, 7:13] = 1.0
    _, geometry = to_working(image, config=config)
    assert geometry.crop == ((5, 15), (6, 14), (7, 13))
    probs = np.zeros((2, 8, 8, 8), np.float32)
    probs[1] = 1.0  # everything foreground on the working grid
    out = probabilities_to_labels(probs, geometry, config=config)
    expected = np.zeros((20, 20, 20), np.uint8)
    expected[5:15, 6:14, 7:13] = 5
    assert out.shape == image.shape and np.array_equal(out, expected)


def test_labels_to_working_rejects_unknown_values_and_shapes():
    image, target = _synthetic(0)
    _, geometry = to_working(image, config=TINY)
    with pytest.raises(ValueError, match=r"labels: values \[9\]"):
        labels_to_working(np.where(target == 2, 9, target), geometry, config=TINY)
    with pytest.raises(ValueError, match="labels: shape"):
        labels_to_working(target[:8], geometry, config=TINY)
    with pytest.raises(ValueError, match="probabilities"):
        probabilities_to_labels(np.zeros((2, 16, 16, 16)), geometry, config=TINY)


def test_to_working_validates_inputs():
    with pytest.raises(ValueError, match="image"):
        to_working(np.zeros((4, 4)), config=TINY)
    with pytest.raises(ValueError, match="image"):
        to_working(np.full((4, 4, 4), np.nan), config=TINY)
    with pytest.raises(ValueError, match="spacing"):
        to_working(np.zeros((4, 4, 4)), config=TINY, spacing=(1, 0, 1))
    work, _ = to_working(np.full((4, 4, 4), 3.0), config=TINY)  # constant: no crash
    assert np.isfinite(work).all()


# ------------------------------------------------------------------------- checkpoint


def test_checkpoint_round_trip():
    torch.manual_seed(0)
    model = build_network(TINY)
    data = save_checkpoint(model, TINY, metadata={"scans": [3, 5], "dice": {"1": 0.9}})
    assert isinstance(data, bytes)
    loaded, config = load_checkpoint(data)
    assert config == TINY and not loaded.training
    assert checkpoint_metadata(data) == {"scans": [3, 5], "dice": {"1": 0.9}}
    x = torch.randn(1, 1, 16, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_rejects_bad_input():
    with pytest.raises(ValueError, match="data"):
        load_checkpoint(b"not a checkpoint")
    import io

    buffer = io.BytesIO()
    torch.save({"format": "something/else"}, buffer)
    with pytest.raises(ValueError, match=CHECKPOINT_FORMAT.replace(".", r"\.")):
        load_checkpoint(buffer.getvalue())
    with pytest.raises(ValueError, match="metadata"):
        save_checkpoint(build_network(TINY), TINY, metadata={"x": object()})


# ------------------------------------------------------------------------ MC dropout


def test_mc_dropout_samples_are_seeded_and_vary():
    torch.manual_seed(0)
    model = build_network(TINY)
    model.train()
    image, _ = _synthetic(0)
    state = torch.random.get_rng_state()
    samples = mc_dropout_probabilities(model, image, n_samples=4, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert model.training  # mode restored
    assert samples.shape == (4, 3, 16, 16, 16) and samples.dtype == np.float32
    assert np.allclose(samples.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(samples[0], samples[1])  # dropout is on
    again = mc_dropout_probabilities(model, image, n_samples=4, seed=7)
    assert np.array_equal(samples, again)
    other = mc_dropout_probabilities(model, image, n_samples=4, seed=8)
    assert not np.allclose(samples, other)
    chunked = mc_dropout_probabilities(model, image, n_samples=4, seed=7, batch_size=3)
    assert chunked.shape == samples.shape
    deterministic = [predict_probabilities(model, image) for _ in range(2)]
    assert np.array_equal(deterministic[0], deterministic[1])  # dropout off


def test_mc_dropout_context_restores_modes():
    model = build_network(TINY)
    model.eval()
    with mc_dropout(model):
        modes = {type(m).__name__: m.training for m in model.modules()}
        assert modes["Dropout"] is True
        assert modes["InstanceNorm3d"] is False
    assert not any(m.training for m in model.modules())


# -------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained():
    pairs = [_working_pair(seed) for seed in range(6)]
    progress = []
    training = TrainingConfig(
        steps=60, steps_per_scan=0, batch_size=2, patch_shape=None, learning_rate=1e-2, seed=3, flip_axes=(0,)
    )
    result = train_segmentation(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        config=TINY,
        training=training,
        callback=lambda fraction, message: progress.append((fraction, message)),
    )
    return result, progress


def test_network_learns_a_tiny_synthetic_task(trained):
    result, _ = trained
    assert isinstance(result, TrainingResult) and result.n_scans == 6
    assert not result.model.training
    held_out = [_working_pair(seed) for seed in (100, 101, 102)]
    dice = evaluate_dice(result.model, [h[0] for h in held_out], [h[1] for h in held_out], config=TINY)
    assert set(dice) == {1, 2}
    assert dice[1] > 0.85 and dice[2] > 0.75, dice
    # The same network untrained (same seed) is far from it.
    with torch.random.fork_rng():
        torch.manual_seed(3)
        untrained = build_network(TINY).eval()
    before = evaluate_dice(untrained, [h[0] for h in held_out], [h[1] for h in held_out], config=TINY)
    assert np.nanmean(list(before.values())) < 0.5
    assert np.mean(result.losses[-10:]) < 0.6 * np.mean(result.losses[:5])


def test_training_reports_progress_and_hyperparameters(trained):
    result, progress = trained
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 10
    assert all(isinstance(m, str) and m for _, m in progress)
    params = result.hyperparameters()
    assert params["training"]["steps"] == 60 and params["network"]["labels"] == [0, 1, 2]
    assert TrainingConfig.from_dict(json.loads(json.dumps(params["training"]))) == result.training


def test_training_is_seeded_and_leaves_global_rng_alone():
    pairs = [_working_pair(seed) for seed in range(2)]
    images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    before = [i.copy() for i in images]
    config = TrainingConfig(steps=3, steps_per_scan=0, patch_shape=(8, 8, 8), seed=5, flip_axes=(0, 1))
    state = torch.random.get_rng_state()
    a = train_segmentation(images, targets, config=TINY, training=config)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_segmentation(images, targets, config=TINY, training=config)
    assert a.losses == b.losses
    assert all(np.array_equal(x, y) for x, y in zip(images, before, strict=True))


def test_steps_grow_with_the_training_scans_between_bounds():
    recipe = TrainingConfig(steps=10, steps_per_scan=4, max_steps=30)
    assert [recipe.steps_for(n) for n in (1, 2, 3, 5, 7, 8, 100)] == [10, 10, 12, 20, 28, 30, 30]
    assert TrainingConfig(steps=10, steps_per_scan=0).steps_for(1000) == 10
    pairs = [_working_pair(seed) for seed in range(3)]
    result = train_segmentation(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        config=TINY,
        training=TrainingConfig(steps=2, steps_per_scan=2, max_steps=5, patch_shape=(8, 8, 8)),
    )
    assert len(result.losses) == 5


def test_loss_sampling_draws_scans_in_proportion_to_their_last_loss():
    recipe = TrainingConfig(scan_sampling="loss", loss_share=0.5)
    rng = np.random.default_rng(0)
    # First pass: every scan exactly once, in a shuffled order, whatever the losses so far.
    queue, losses = [], np.array([np.nan, np.nan, np.nan, np.nan])
    first = [_next_scan(rng, queue, losses, recipe) for _ in range(4)]
    assert sorted(first) == [0, 1, 2, 3]
    # After it: p_i = 0.5 / 4 + 0.5 * L_i / sum(L) = [0.5, 0.25, 0.125, 0.125].
    losses = np.array([3.0, 1.0, 0.0, 0.0])
    draws = np.array([_next_scan(rng, queue, losses, recipe) for _ in range(40_000)])
    frequency = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(frequency, [0.5, 0.25, 0.125, 0.125], atol=0.01)
    # Uniform sampling ignores the losses: shuffled passes, every scan once per pass.
    uniform = TrainingConfig(scan_sampling="uniform")
    queue = []
    draws = [_next_scan(rng, queue, losses, uniform) for _ in range(400)]
    assert all(sorted(draws[k : k + 4]) == [0, 1, 2, 3] for k in range(0, 400, 4))
    # All losses zero (a perfect fit): uniform draws.
    draws = np.array([_next_scan(rng, [], np.zeros(4), recipe) for _ in range(40_000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / draws.size, 0.25, atol=0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 10, "max_steps": 9}, "max_steps"),
        ({"steps_per_scan": -1}, "steps_per_scan"),
        ({"scan_sampling": "hard"}, "scan_sampling"),
        ({"loss_share": 1.5}, "loss_share"),
        ({"steps_per_scan": 1.5}, "steps_per_scan"),
    ],
)
def test_training_config_rejects_bad_sampling_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**kwargs)


def test_training_validates_inputs():
    image, target = _synthetic(0)
    with pytest.raises(ValueError, match="images"):
        train_segmentation([], [], config=TINY)
    with pytest.raises(ValueError, match="targets"):
        train_segmentation([image], [], config=TINY)
    with pytest.raises(ValueError, match=r"targets\[0\]: class indices"):
        train_segmentation([image], [target * 3], config=TINY)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        train_segmentation([image[:8]], [target], config=TINY)
    with pytest.raises(ValueError, match="patch_shape"):
        train_segmentation([image], [target], config=TINY, training=TrainingConfig(patch_shape=(7, 8, 8)))


def test_prelabel_and_score_from_a_loaded_checkpoint(trained):
    result, _ = trained
    model, config = load_checkpoint(save_checkpoint(result.model, result.config))
    # An original scan at 2x the working resolution, 0.5 mm voxels.
    image, target = _synthetic(200)
    big_image = image.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    big_target = target.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    prelabel = predict_labels(model, big_image, config=config, spacing=(0.5, 0.5, 0.5))
    assert prelabel.shape == (32, 32, 32) and prelabel.dtype == np.uint8
    dice = dice_per_label(prelabel, big_target, labels=[1, 2])
    assert dice[1] > 0.8 and dice[2] > 0.6, dice
    work, _ = to_working(image, config=config)
    score = score_scan(model, work, n_samples=4, margin=2)
    assert isinstance(score, ScanUncertainty)
    assert 0 < score.bald <= score.entropy <= math.log(3)
    assert score.foreground_voxels > 0 and not score.whole_volume


def test_dice_per_label_hand_values():
    prediction = np.array([0, 1, 1, 2])
    truth = np.array([0, 1, 2, 2])
    dice = dice_per_label(prediction, truth, labels=[1, 2, 3])
    assert dice[1] == pytest.approx(2 / 3) and dice[2] == pytest.approx(2 / 3)
    assert math.isnan(dice[3])
    assert dice_per_label(np.array([1, 1]), np.array([0, 0]), labels=[1]) == {1: 0.0}
    assert isinstance(WorkingGeometry, type)
