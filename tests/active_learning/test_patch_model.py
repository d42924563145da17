"""Patch networks at the scans' own resolution: the native grid, patch training, sliding-window
inference and MC dropout, top-k uncertainty, calibration, the training budget, old checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from active_learning import model_card, native_grid, network, training, uncertainty

TINY = dict(labels=(0, 1, 2), channels=(4, 8), strides=(2,), working_shape=(16, 16, 16))
PATCH = network.NetworkConfig(**TINY, mode="patch", patch_shape=(16, 16, 16))


def _phantom(seed: int, shape=(30, 26, 20)):
    """A noisy box (label 2, a "tissue") holding a bright ball (label 1, a "lesion")."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.05, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    image[3:-3, 3:-3, 3:-3] += 1.0
    labels[3:-3, 3:-3, 3:-3] = 2
    centre = [rng.integers(8, n - 8) for n in shape]
    ball = sum((g - c) ** 2 for g, c in zip(np.indices(shape), centre, strict=True)) <= 9
    labels[ball] = 1
    image[ball] = 2.0 + rng.normal(0.0, 0.05, int(ball.sum()))
    return image, labels


def test_native_grid_keeps_the_scans_voxels_and_maps_back_exactly():
    image, labels = _phantom(0)
    volume, geometry = native_grid.to_native(image, config=PATCH, spacing=(2.0, 2.0, 2.0))
    assert not geometry.resampled and geometry.spacing_mm == (2.0, 2.0, 2.0)
    assert volume.shape == geometry.shape == tuple(b - a for a, b in geometry.crop)
    target = native_grid.labels_to_native(labels, geometry, config=PATCH)
    np.testing.assert_array_equal(target, labels[geometry.crop_slices])  # voxel for voxel
    onehot = np.eye(3, dtype=np.float32)[target].transpose(3, 0, 1, 2)
    back = native_grid.native_probabilities_to_labels(onehot, geometry, config=PATCH)
    np.testing.assert_array_equal(back[geometry.crop_slices], labels[geometry.crop_slices])
    assert not back[: geometry.crop[0][0]].any()  # background outside the crop

    # Another spacing than the project's target: resampled to it (1 mm -> 2 mm halves each axis).
    config = network.NetworkConfig(**TINY, mode="patch", patch_shape=(16, 16, 16), target_spacing_mm=(2.0, 2.0, 2.0))
    volume, geometry = native_grid.to_native(image, config=config, spacing=(1.0, 1.0, 1.0))
    box = [b - a for a, b in geometry.crop]
    assert geometry.resampled and volume.shape == tuple(round(n / 2) for n in box)
    assert native_grid.labels_to_native(labels, geometry, config=config).shape == volume.shape


def test_checkpoints_written_before_patches_read_back_as_whole_volume_networks():
    config = network.NetworkConfig(**TINY)
    old = {k: v for k, v in config.to_dict().items() if k not in ("mode", "patch_shape", "target_spacing_mm")}
    restored = network.NetworkConfig.from_dict(old)
    assert restored.mode == "whole" and restored == config
    _, loaded = network.load_checkpoint(network.save_checkpoint(network.build_network(PATCH), PATCH))
    assert loaded == PATCH and loaded.mode == "patch"
    with pytest.raises(ValueError, match="mode"):
        network.NetworkConfig(**TINY, mode="tiles")
    with pytest.raises(ValueError, match="patch_shape"):
        network.NetworkConfig(**TINY, mode="patch", patch_shape=(15, 16, 16))


@pytest.fixture(scope="module")
def patch_model():
    torch.set_num_threads(1)
    cases = [_phantom(seed) for seed in range(5)]
    prepared = [native_grid.to_native(im, config=PATCH, spacing=(2.0, 2.0, 2.0)) for im, _ in cases]
    targets = [
        native_grid.labels_to_native(lab, geo, config=PATCH) for (_, lab), (_, geo) in zip(cases, prepared, strict=True)
    ]
    messages = []
    result = training.train_segmentation(
        [v for v, _ in prepared[:4]],
        targets[:4],
        config=PATCH,
        training=training.TrainingConfig(steps=120, steps_per_scan=0, batch_size=2, learning_rate=1e-2),
        callback=lambda f, m: messages.append((f, m)),
    )
    return result, prepared[4], targets[4], cases[4], messages


def test_patch_network_learns_and_predicts_by_sliding_window(patch_model):
    result, (volume, _), target, (image, labels), messages = patch_model
    assert volume.shape[0] > PATCH.patch_shape[0]  # several windows along x
    probabilities = training.predict_probabilities(result.model, volume, config=PATCH)
    assert probabilities.shape == (3, *volume.shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    dice = training.dice_per_label(probabilities.argmax(axis=0), target, labels=(1, 2))
    assert dice[1] > 0.8 and dice[2] > 0.9, dice  # held-out phantom
    prelabel = training.predict_labels(result.model, image, config=PATCH, spacing=(2.0, 2.0, 2.0))
    assert prelabel.shape == image.shape
    assert training.dice_per_label(prelabel, labels, labels=(1,))[1] > 0.8
    untrained = network.build_network(PATCH)
    naive = training.predict_probabilities(untrained, volume, config=PATCH).argmax(axis=0)
    assert training.dice_per_label(naive, target, labels=(1,))[1] < 0.5
    # Progress: about 20 reports with the remaining time, the last one at 1.0.
    assert 15 <= len(messages) <= 21 and messages[-1][0] == 1.0
    assert all("left" in m for f, m in messages[:-1]) and "trained 120 steps" in messages[-1][1]


def test_mc_moments_equal_the_moments_of_the_mc_samples(patch_model):
    result, (volume, _), _, _, _ = patch_model
    samples = training.mc_dropout_probabilities(result.model, volume, n_samples=4, seed=3, config=PATCH)
    mean, aleatoric = training.mc_dropout_moments(result.model, volume, n_samples=4, seed=3, config=PATCH)
    assert samples.shape == (4, 3, *volume.shape)
    assert not np.allclose(samples[0], samples[1])  # dropout samples
    np.testing.assert_allclose(mean, samples.mean(axis=0), atol=1e-5)
    # The windows' per-pass entropies are blended, not recomputed from blended passes: equal where
    # one window covers a voxel, at most the entropy of the blend where windows overlap (concavity).
    reference = uncertainty.expected_entropy(samples)
    assert (aleatoric <= reference + 1e-5).all()
    single = np.zeros(volume.shape, bool)
    corner = min(8, *(n - 16 for n in volume.shape))  # windows of 16^3 start at 0, 8, ... and n - 16
    assert corner >= 2
    single[:corner, :corner, :corner] = True  # the corner only the first window covers
    np.testing.assert_allclose(aleatoric[single], reference[single], atol=1e-5)
    summary = training.score_scan(result.model, volume, n_samples=4, seed=3, config=PATCH)
    exact = uncertainty.scan_uncertainty(samples, margin=3)
    assert summary.entropy == pytest.approx(exact.entropy, abs=1e-5)  # from the mean alone
    assert summary.bald >= exact.bald - 1e-6


def test_top_k_scores_a_scan_by_its_most_uncertain_voxels():
    mean = np.zeros((2, 10))
    mean[0] = 1.0
    mean[:, 4] = (0.3, 0.7)  # predicted foreground at 4 ...
    mean[:, 5] = (0.5, 0.5)  # ... and an undecided voxel next to it
    aleatoric = np.zeros(10)
    h = -(0.3 * np.log(0.3) + 0.7 * np.log(0.7))
    region = uncertainty.uncertainty_from_moments(mean, aleatoric, margin=1)
    top = uncertainty.uncertainty_from_moments(mean, aleatoric, margin=1, top_k=1)
    assert region.region_voxels == 3 and region.entropy == pytest.approx((h + np.log(2)) / 3)
    assert top.entropy == pytest.approx(np.log(2)) and top.bald == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="top_k"):
        uncertainty.uncertainty_from_moments(mean, aleatoric, top_k=0)


def test_calibration_error_by_hand():
    p = np.array([[0.9, 0.3, 0.6, 0.15], [0.1, 0.7, 0.4, 0.85]])
    target = np.array([0, 1, 1, 0])
    bins = uncertainty.calibration_bins(p, target, n_bins=2)
    # voxel 0 (background, right) is left out; bin [0.5, 1): 0.7 right, 0.6 wrong, 0.85 wrong.
    assert bins["count"] == [0, 3] and bins["correct"] == [0.0, 1.0]
    summary = uncertainty.calibration_summary([bins, bins])
    assert summary["ece"] == pytest.approx(abs(1 / 3 - (0.7 + 0.6 + 0.85) / 3))
    assert summary["voxels"] == 6 and summary["bins"][0]["accuracy"] is None


def test_a_time_budget_cuts_the_steps_and_says_so():
    image, labels = _phantom(1)
    volume, geometry = native_grid.to_native(image, config=PATCH, spacing=(2.0, 2.0, 2.0))
    messages = []
    result = training.train_segmentation(
        [volume],
        [native_grid.labels_to_native(labels, geometry, config=PATCH)],
        config=PATCH,
        training=training.TrainingConfig(steps=500, steps_per_scan=0, time_budget_s=1e-6),
        callback=lambda f, m: messages.append(m),
    )
    assert len(result.losses) == 11  # the probe steps and one more
    assert "of 500 planned" in messages[-1]


def test_model_card_markdown_lists_truths_dice_and_calibration():
    card = {
        "version": 2,
        "project": {"name": "Lesions"},
        "labels": {"1": "lesion"},
        "data": {"train": [{"id": 7, "scan": 3, "sha256": "ab" * 32}], "validation": []},
        "validation": {"dice": {"1": 0.6512}, "calibration": {"ece": 0.0412, "voxels": 1234}},
    }
    text = model_card.card_markdown(json.loads(json.dumps(card)))
    assert "| lesion | 0.651 |" in text and "| 7 | 3 | `abababababababab` |" in text
    assert "expected calibration error 0.041 over 1,234 voxels" in text
    assert "Known limits" in text and "SIMULATED" in text
