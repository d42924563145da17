"""consensus.fusion: a run's arithmetic, apart from the database (pure: no Django)."""

from __future__ import annotations

import numpy as np
import pytest

from consensus import fusion

SEGS = np.array([[0, 1, 1, 2, 0], [0, 1, 2, 2, 0], [0, 1, 1, 2, 2]], dtype=np.uint8)


def test_method_defaults_are_the_kernels_keyword_defaults():
    assert fusion.method_defaults("staple") == {
        "region": "disagreement",
        "prior": "spatial",
        "max_iter": 1000,
        "tol": 1e-7,
        "overrule": "ties",
    }
    assert fusion.method_defaults("majority_vote") == {}


def test_majority_vote_posterior_is_the_vote_share_and_reports_ties():
    result = fusion.fuse(SEGS[:2], method="majority_vote", options={}, values=[0, 1, 2])
    assert result.labels.tolist() == [0, 1, 1, 2, 0]  # the 1-vs-2 tie goes to the lowest label
    assert result.options == {"ties": 1} and result.confusion is None
    np.testing.assert_allclose(result.posterior[:, 2], [0, 0.5, 0.5])


def test_rater_performance_against_the_consensus_by_hand():
    result = fusion.fuse(SEGS, method="majority_vote", options={}, values=[0, 1, 2])
    # consensus [0, 1, 1, 2, 0]; rater 3 said [0, 1, 1, 2, 2]: label 2 drawn on 2 voxels, 1 right.
    third = fusion.rater_performance(SEGS, result)[2]
    assert third["dice"] == {"0": pytest.approx(2 / 3), "1": 1.0, "2": pytest.approx(2 / 3)}
    assert third["sensitivity"]["2"] == 1.0 and third["specificity"]["2"] == pytest.approx(3 / 4)
    assert third["confusion"] is None


def test_ambiguity_counts_labelled_voxels_whose_label_is_unsure():
    result = fusion.fuse(SEGS[:2], method="majority_vote", options={}, values=[0, 1, 2])
    score, details = fusion.ambiguity(SEGS[:2], result, None)
    # labelled: voxels 1-3 (a rater or the consensus drew there); unsure: the 50/50 voxel 2.
    assert (details["labelled_voxels"], details["uncertain_voxels"]) == (3, 1)
    assert score == pytest.approx(1 / 3)
    assert details["expected_error_fraction"] == pytest.approx(0.5 / 3)


def test_label_posterior_is_the_posterior_of_the_label_chosen():
    result = fusion.fuse(SEGS, method="staple", options={}, values=[0, 1, 2])
    chosen = fusion.label_posterior(result)
    index = {v: i for i, v in enumerate(result.label_values)}
    expected = [result.posterior[index[int(label)], x] for x, label in enumerate(result.labels)]
    np.testing.assert_allclose(chosen, expected)
