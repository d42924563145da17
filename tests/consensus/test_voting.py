"""Tests of consensus.voting: majority vote and the vote-pattern grouping it shares with STAPLE.

Pure: no database.  Kinds: hand-checkable arrays (expected values inline), a brute-force
numpy reference, invariants (rater order, identical raters, relabelling), validation.
"""

import warnings

import numpy as np
import pytest
import torch

from consensus import voting
from consensus.voting import VoteResult, majority_vote


def _reference_vote(segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: count every value at every voxel, lowest value wins ties."""
    values = np.unique(segs)
    counts = np.stack([(segs == v).sum(axis=0) for v in values])
    top = counts.max(axis=0)
    return values[np.argmax(counts, axis=0)], (counts == top).sum(axis=0) > 1


# --- hand-checkable ---------------------------------------------------------------------


def test_hand_checked_votes_and_ties():
    segs = np.array([[0, 1, 2, 2, 3], [0, 1, 1, 2, 0], [1, 1, 0, 2, 1]], dtype=np.uint8)
    result = majority_vote(segs)
    # voxel 0: 0,0,1 -> 0; voxel 1: 1,1,1 -> 1; voxel 2: 2,1,0 -> three-way tie -> 0;
    # voxel 3: 2; voxel 4: 3,0,1 -> three-way tie -> 0.
    assert result.labels.tolist() == [0, 1, 0, 2, 0]
    assert result.ties == 2
    assert result.tie_mask.tolist() == [False, False, True, False, True]
    assert result.label_values.tolist() == [0, 1, 2, 3]
    assert result.labels.dtype == np.uint8


def test_two_raters_tie_goes_to_the_lowest_value():
    segs = np.array([[5, 7, 7], [7, 5, 7]], dtype=np.int32)
    result = majority_vote(segs)
    assert result.labels.tolist() == [5, 5, 7]
    assert result.ties == 2
    assert result.labels.dtype == np.int32


def test_result_is_frozen():
    result = majority_vote(np.zeros((2, 3), dtype=np.uint8))
    assert isinstance(result, VoteResult)
    with pytest.raises(AttributeError):
        result.ties = 3


# --- reference and code paths -----------------------------------------------------------


@pytest.mark.parametrize(
    "n_raters, n_values, dtype",
    [(2, 2, np.uint8), (5, 4, np.uint8), (7, 6, np.int16), (9, 5, np.int64), (4, 300, np.int32)],
)
def test_matches_brute_force(n_raters, n_values, dtype):
    rng = np.random.default_rng(n_raters * 100 + n_values)
    segs = (rng.integers(0, n_values, (n_raters, 9, 8, 7)) * 3).astype(dtype)
    expected, tied = _reference_vote(segs)
    result = majority_vote(segs)
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_array_equal(result.tie_mask, tied)
    assert result.ties == int(tied.sum())
    assert result.labels.dtype == dtype


@pytest.mark.parametrize("limit", [64, 4])
def test_pattern_renumbering_and_sort_fallback_agree(monkeypatch, limit):
    rng = np.random.default_rng(7)
    segs = rng.integers(0, 4, (6, 20, 30)).astype(np.uint8)
    expected = majority_vote(segs)
    # A tiny dense-code limit forces the renumbering (64) and the sort fallback (4).
    monkeypatch.setattr(voting, "_MAX_DENSE_CODES", limit)
    result = majority_vote(segs)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert result.ties == expected.ties


def test_negative_and_sparse_label_values():
    segs = np.array([[-6, -3, 0, 1000], [-6, 0, 0, 1000], [-3, -3, 1000, 0]], dtype=np.int64)
    result = majority_vote(segs)
    assert result.labels.tolist() == [-6, -3, 0, 1000]
    assert result.label_values.tolist() == [-6, -3, 0, 1000]


# --- invariants -------------------------------------------------------------------------


def test_rater_order_does_not_matter():
    rng = np.random.default_rng(3)
    segs = rng.integers(0, 4, (5, 10, 10, 4)).astype(np.uint8)
    a = majority_vote(segs)
    b = majority_vote(segs[[3, 0, 4, 1, 2]])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.ties == b.ties


def test_identical_raters_reproduce_the_map():
    rng = np.random.default_rng(4)
    one = rng.integers(0, 5, (6, 7, 8)).astype(np.uint8)
    result = majority_vote(np.stack([one] * 3))
    np.testing.assert_array_equal(result.labels, one)
    assert result.ties == 0


def test_relabelling_permutes_the_result():
    rng = np.random.default_rng(5)
    segs = rng.integers(0, 3, (5, 12, 12)).astype(np.uint8)
    # With an odd number of raters and 3 labels, 2-2-1 ties can happen: compare off ties.
    mapping = np.array([20, 10, 30], dtype=np.uint8)  # 0 -> 20, 1 -> 10, 2 -> 30
    a = majority_vote(segs)
    b = majority_vote(mapping[segs])
    decided = ~a.tie_mask
    np.testing.assert_array_equal(mapping[a.labels][decided], b.labels[decided])
    np.testing.assert_array_equal(a.tie_mask, b.tie_mask)


def test_torch_input_gives_the_same_numpy_result_and_inputs_are_untouched():
    rng = np.random.default_rng(6)
    segs = rng.integers(0, 4, (4, 6, 6, 6)).astype(np.int16)
    before = segs.copy()
    tensor = torch.from_numpy(segs.copy())
    a = majority_vote(segs)
    b = majority_vote(tensor)
    np.testing.assert_array_equal(segs, before)
    np.testing.assert_array_equal(tensor.numpy(), before)
    assert isinstance(b.labels, np.ndarray)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_list_of_maps_and_bool_masks():
    masks = [np.array([True, False, True]), np.array([True, True, False]), np.array([False, False, True])]
    result = majority_vote(masks)
    assert result.labels.tolist() == [True, False, True]
    assert result.labels.dtype == bool


def test_labels_argument():
    segs = np.array([[0, 1], [0, 2]], dtype=np.uint8)
    result = majority_vote(segs, labels=[0, 1, 2, 3])
    assert result.label_values.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"labels: the raters used values \[2\]"):
        majority_vote(segs, labels=[0, 1])


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((1, 4, 4), np.uint8), ValueError, "segmentations: need at least 2 raters"),
        (np.zeros(4, np.uint8), ValueError, r"segmentations: expected shape \(R, X, Y, Z\)"),
        (np.zeros((3, 0), np.uint8), ValueError, "segmentations: the label maps are empty"),
        (np.zeros((2, 3), np.float32), TypeError, "segmentations: expected an integer"),
        (
            [np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8)],
            ValueError,
            r"segmentations: raters disagree in shape: \(3, 3\) vs \(3, 4\)",
        ),
    ],
)
def test_validation_names_the_argument(bad, error, message):
    with pytest.raises(error, match=message):
        majority_vote(bad)


def test_read_only_input_is_accepted_without_warnings():
    segs = np.array([[0, 1, 1], [0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    segs.setflags(write=False)  # e.g. a memory-mapped NIfTI or a cached template
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert majority_vote(segs).labels.tolist() == [0, 1, 0]
