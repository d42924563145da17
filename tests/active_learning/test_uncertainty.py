"""Tests of active_learning.uncertainty: hand-computed values, invariants, edge cases.

Pure (no database, no torch model). Hand values: H(p) = -sum p log p in nats, so
H(0.5, 0.5) = log 2 = 0.693147, H(0.9, 0.1) = 0.325083, H(0.25, 0.75) = 0.562335.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from active_learning.uncertainty import (
    STRATEGIES,
    ScanUncertainty,
    bald,
    combined_scores,
    diversity_order,
    expected_entropy,
    image_features,
    predictive_entropy,
    random_order,
    random_scores,
    rank_normalise,
    rank_order,
    rater_disagreement,
    scan_uncertainty,
    scoring_region,
    stratified_order,
)

H_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325083
H_025 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.562335
LOG2 = math.log(2.0)


def _opposite_passes():
    """Two passes on one voxel: (0.9, 0.1) and (0.1, 0.9). Shape (T=2, C=2, 1)."""
    return np.array([[[0.9], [0.1]], [[0.1], [0.9]]])


# --------------------------------------------------------------------------- voxel maps


def test_entropy_and_bald_hand_values():
    s = _opposite_passes()
    assert predictive_entropy(s)[0] == pytest.approx(LOG2, abs=1e-6)
    assert expected_entropy(s)[0] == pytest.approx(H_09, abs=1e-6)
    assert bald(s)[0] == pytest.approx(LOG2 - H_09, abs=1e-6)  # 0.368064


def test_entropy_three_classes_hand_value():
    # One pass, p = (0.5, 0.25, 0.25): H = 0.5 log 2 + 2 * 0.25 log 4 = 1.5 log 2.
    s = np.array([0.5, 0.25, 0.25]).reshape(1, 3, 1, 1, 1)
    assert predictive_entropy(s).shape == (1, 1, 1)
    assert predictive_entropy(s).dtype == np.float32
    assert predictive_entropy(s)[0, 0, 0] == pytest.approx(1.5 * LOG2, abs=1e-6)
    # One pass: no epistemic part.
    assert bald(s)[0, 0, 0] == pytest.approx(0.0, abs=1e-7)


def test_uniform_is_maximal_and_one_hot_is_zero():
    c = 5
    uniform = np.full((4, c, 2, 2, 2), 1.0 / c)
    assert np.allclose(predictive_entropy(uniform), math.log(c), atol=1e-6)
    assert np.allclose(bald(uniform), 0.0, atol=1e-7)  # flat but identical passes
    one_hot = np.zeros((3, c, 2, 2, 2))
    one_hot[:, 2] = 1.0
    assert np.all(predictive_entropy(one_hot) == 0.0)
    assert np.all(bald(one_hot) == 0.0)


def test_confident_disagreeing_passes_are_pure_bald():
    s = np.array([[[1.0], [0.0]], [[0.0], [1.0]]])
    assert bald(s)[0] == pytest.approx(LOG2, abs=1e-6)
    assert expected_entropy(s)[0] == 0.0


def test_bald_bounds_and_sample_order_invariance():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4, 3, 3, 3)) * 2
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    b, h = bald(s), predictive_entropy(s)
    assert np.all(b >= 0) and np.all(b <= h + 1e-6)
    perm = s[rng.permutation(6)]
    assert np.allclose(bald(perm), b, atol=1e-6)
    assert np.allclose(predictive_entropy(perm), h, atol=1e-6)


def test_accepts_torch_and_does_not_modify_input():
    s = _opposite_passes()
    before = s.copy()
    assert predictive_entropy(torch.from_numpy(s))[0] == pytest.approx(LOG2, abs=1e-6)
    bald(s)
    scan_uncertainty(s)
    assert np.array_equal(s, before)


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.ones((2, 2)), "shape"),
        (np.full((2, 2, 3), 3.0), "logits"),  # not probabilities
        (np.full((2, 2, 3), 0.3), "sum to 1"),
        (np.full((2, 1, 3), 1.0), "C >= 2"),
        (np.array([[[np.nan], [1.0]]]), "NaN"),
        (np.ones((1, 2, 1), dtype=int), "floating"),
    ],
)
def test_sample_validation_names_the_argument(samples, message):
    with pytest.raises(ValueError, match="samples") as info:
        predictive_entropy(samples)
    assert message in str(info.value)


# ---------------------------------------------------------------------- scan summary


def _background_probs(shape, c=2):
    p = np.zeros((c, *shape))
    p[0] = 1.0
    return p


def test_scoring_region_is_a_euclidean_ball():
    p = _background_probs((7, 7, 7))
    p[:, 3, 3, 3] = (0.1, 0.9)
    counts = {}
    for margin in (0, 1, 1.5, 2):
        region, whole = scoring_region(p, margin=margin)
        assert not whole
        counts[margin] = int(region.sum())
    # 0: the voxel; 1: + 6 faces; 1.5 (< sqrt 3): + 12 edges; 2: + 8 corners
    # (sqrt 3) + 6 at distance 2.
    assert counts == {0: 1, 1: 7, 1.5: 19, 2: 33}


def test_scoring_region_falls_back_to_whole_volume():
    region, whole = scoring_region(_background_probs((3, 4, 5)), margin=3)
    assert whole and region.all() and region.shape == (3, 4, 5)


def test_scoring_region_validates_margin():
    with pytest.raises(ValueError, match="margin"):
        scoring_region(_background_probs((3, 3)), margin=-1)


def test_scan_uncertainty_hand_value_ignores_far_background():
    # 1-D scan of 9 voxels. Voxel 2: passes (0, 1) and (0.5, 0.5): mean (0.25, 0.75),
    # foreground. Voxel 8: both passes (0.6, 0.4), predicted background, far away.
    s = np.zeros((2, 2, 9))
    s[:, 0] = 1.0
    s[0, :, 2] = (0.0, 1.0)
    s[1, :, 2] = (0.5, 0.5)
    s[:, :, 8] = (0.6, 0.4)
    u = scan_uncertainty(s, margin=1)
    assert isinstance(u, ScanUncertainty)
    assert (u.foreground_voxels, u.region_voxels, u.whole_volume) == (1, 3, False)
    assert u.entropy == pytest.approx(H_025 / 3, abs=1e-9)
    # BALD at voxel 2: H(.25, .75) - (0 + log 2) / 2.
    assert u.bald == pytest.approx((H_025 - LOG2 / 2) / 3, abs=1e-9)
    assert u.score("entropy") == u.entropy and u.score("bald") == u.bald
    # A whole-volume mean would include voxel 8's entropy.
    h8 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert u.entropy != pytest.approx((H_025 + h8) / 9)


def test_scan_uncertainty_empty_prediction_uses_whole_volume():
    s = np.zeros((2, 2, 4))
    s[:, :, :] = np.array([0.75, 0.25])[None, :, None]
    u = scan_uncertainty(s, margin=3)
    assert u.whole_volume and u.region_voxels == 4 and u.foreground_voxels == 0
    assert u.entropy == pytest.approx(H_025, abs=1e-9)
    assert u.bald == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------ strategies


def test_strategy_names():
    assert STRATEGIES == ("random", "entropy", "bald", "combined", "stratified")


def test_random_scores_and_order_are_seeded():
    assert np.array_equal(random_scores(10, seed=3), random_scores(10, seed=3))
    assert not np.array_equal(random_scores(10, seed=3), random_scores(10, seed=4))
    order = random_order(10, seed=1)
    assert sorted(order.tolist()) == list(range(10))
    assert np.array_equal(order, random_order(10, seed=1))
    assert random_scores(0, seed=0).shape == (0,)
    with pytest.raises(ValueError, match="seed"):
        random_scores(3, seed=-1)


def test_rank_order_and_rank_normalise():
    assert rank_order([0.2, 0.9, 0.2, 0.5]).tolist() == [1, 3, 0, 2]
    assert rank_normalise([3.0, 1.0, 2.0, 2.0]).tolist() == [1.0, 0.0, 0.5, 0.5]
    assert rank_normalise([7.0]).tolist() == [0.5]
    with pytest.raises(ValueError, match="scores"):
        rank_order([1.0, np.nan])


def test_rater_disagreement_hand_values():
    a = np.array([0, 1, 1, 1, 1, 0])
    b = np.array([0, 0, 1, 1, 1, 1])
    assert rater_disagreement(np.stack([a, b])) == pytest.approx(0.25)
    assert rater_disagreement(np.stack([a, a, a])) == 0.0
    assert math.isnan(rater_disagreement(a[None]))
    # Two labels: label 1 Dice 2*1/(2+1) = 2/3, label 2 Dice 1: mean 5/6.
    c = np.array([1, 1, 2, 0])
    d = np.array([1, 0, 2, 0])
    assert rater_disagreement(np.stack([c, d])) == pytest.approx(1 / 6)
    # Three raters: pairs (a, b) 0.75, (a, a) 1, (b, a) 0.75 -> 1 - 2.5 / 3.
    assert rater_disagreement(np.stack([a, b, a])) == pytest.approx(1 - 2.5 / 3)
    # Both empty for the requested label: they agree.
    assert rater_disagreement(np.stack([a, b]), labels=[5]) == 0.0


def test_combined_scores_hand_values():
    out = combined_scores([0.1, 0.3, 0.2], [np.nan, 0.0, 0.8], weight=0.5)
    assert out.tolist() == pytest.approx([0.0, 0.5, 0.65])
    # weight 0 ignores raters; no raters anywhere is the rank order of the model.
    assert combined_scores([0.1, 0.3, 0.2], [0.9, 0.9, 0.9], weight=0.0).tolist() == [
        0.0,
        1.0,
        0.5,
    ]
    assert combined_scores([5.0, 1.0], [np.nan, np.nan]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="disagreement"):
        combined_scores([0.1, 0.2], [1.5, np.nan])
    with pytest.raises(ValueError, match="disagreement"):
        combined_scores([0.1, 0.2], [0.5])
    with pytest.raises(ValueError, match="weight"):
        combined_scores([0.1, 0.2], [0.5, 0.5], weight=2)


def test_stratified_order_hand_example():
    # Strata by volume: {0, 1}, {2, 3}, {4, 5}; the best of each (1, 2, 4) by score, then the rest.
    order = stratified_order([0.1, 0.9, 0.5, 0.2, 0.8, 0.3], [0.0, 0.1, 5.0, 6.0, 10.0, 11.0], n_strata=3)
    assert order.tolist() == [1, 4, 2, 5, 3, 0]
    # Plain entropy would take 1, 4, 2: here the same; with the scores moved into one stratum it differs.
    skewed = stratified_order([0.1, 0.2, 0.3, 0.4, 0.8, 0.9], [0.0, 0.1, 5.0, 6.0, 10.0, 11.0], n_strata=3)
    assert skewed.tolist() == [5, 3, 1, 4, 2, 0]
    assert rank_order([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]).tolist()[:3] == [5, 4, 3]


def test_stratified_order_batches_cover_every_stratum():
    rng = np.random.default_rng(0)
    scores, volume = rng.random(40), rng.gamma(1.0, 5.0, 40)
    order = stratified_order(scores, volume, n_strata=8)
    assert sorted(order.tolist()) == list(range(40))
    stratum = np.empty(40, dtype=int)
    for k, members in enumerate(np.array_split(np.argsort(volume, kind="stable"), 8)):
        stratum[members] = k
    for start in range(0, 40, 8):
        assert sorted(stratum[order[start : start + 8]].tolist()) == list(range(8))
    # Within a stratum the higher score comes first.
    for k in range(8):
        in_order = [i for i in order if stratum[i] == k]
        assert list(scores[in_order]) == sorted(scores[in_order], reverse=True)


def test_stratified_order_limits():
    scores = [0.3, 0.1, 0.2]
    assert stratified_order(scores, [1.0, 2.0, 3.0], n_strata=1).tolist() == rank_order(scores).tolist()
    assert stratified_order(scores, [1.0, 2.0, 3.0], n_strata=10).tolist() == rank_order(scores).tolist()
    assert stratified_order([], [], n_strata=3).tolist() == []
    with pytest.raises(ValueError, match="n_strata"):
        stratified_order(scores, [1.0, 2.0, 3.0], n_strata=0)
    with pytest.raises(ValueError, match="strata_by"):
        stratified_order(scores, [1.0, 2.0], n_strata=2)
    with pytest.raises(ValueError, match="strata_by"):
        stratified_order(scores, [1.0, np.nan, 2.0], n_strata=2)


def test_diversity_order_hand_example_and_selected():
    f = np.array([[0.0], [1.0], [4.0], [-3.0], [10.0]])  # mean 2.4
    assert diversity_order(f).tolist() == [1, 4, 3, 2, 0]
    # Scans 4 and 3 already labelled: farthest from {10, -3} is 4 (6 away), then 1, 0.
    assert diversity_order(f, selected=[4, 3]).tolist() == [2, 0, 1]
    # Scaling a feature column does not change the order (standardised columns).
    assert diversity_order(f * 100 + 7).tolist() == [1, 4, 3, 2, 0]
    assert diversity_order(np.zeros((0, 3))).tolist() == []
    with pytest.raises(ValueError, match="selected"):
        diversity_order(f, selected=[9])


def test_diversity_order_picks_outliers_before_duplicates():
    rng = np.random.default_rng(0)
    typical = rng.normal(0, 0.01, size=(6, 4))
    outliers = np.array([[5.0, 0, 0, 0], [0, -5.0, 0, 0]])
    order = diversity_order(np.vstack([typical, outliers]))
    assert set(order[1:3].tolist()) == {6, 7}
    assert sorted(order.tolist()) == list(range(8))


def test_image_features():
    image = np.zeros((8, 8, 8), dtype=np.float32)
    image[:4] = 1.0
    features = image_features(image, thumbnail_shape=(2, 1, 1), bins=4, value_range=(-2, 2))
    assert features.shape == (6,)
    assert features[:2].tolist() == [1.0, 0.0]  # block means along X
    assert features[2:].sum() == pytest.approx(1.0)  # histogram fractions
    assert features[2:].tolist() == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="image"):
        image_features(np.zeros((4, 4)))
