"""Tests of consensus.staple: binary and multi-label STAPLE.

Pure: no database.  Four kinds of test:

- hand-checkable arrays, with the expected values worked out inline;
- SimpleITK as an outside oracle (``STAPLEImageFilter``, ``MultiLabelSTAPLEImageFilter``;
  SimpleITK 2.5 = ITK 5.4, a test-only dependency from requirements-dev.txt), compared
  with ``region="all", prior="global"``, the options that reproduce ITK;
- invariants: rater order, identical raters, relabelling, numpy vs torch, inputs untouched;
- a seeded simulated panel (simulation: MNI152 anatomy, simulated raters) where
  the defaults must beat majority vote and ITK's whole-volume model.
"""

import warnings

import numpy as np
import pytest
import torch

from consensus.staple import (
    BinaryStapleResult,
    MultiLabelStapleResult,
    staple_binary,
    staple_multilabel,
)
from consensus.voting import majority_vote

ITK = {"region": "all", "prior": "global"}
# ITK's multi-label filter: the posterior argmax decides every voxel.
ITK_ML = {**ITK, "overrule": "any"}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / total if total else 1.0


@pytest.fixture(scope="module")
def panel():
    """Seeded 2 mm panel: truth 0..4 (with 4 lesions) and the five rater profiles."""
    simulation = pytest.importorskip("simulation")
    anatomy = simulation.mni152_anatomy(resolution=2)
    subject = simulation.simulate_subject(anatomy, seed=3, n_lesions=4)
    segs = simulation.simulate_panel(subject.labels, profiles=simulation.RATER_PROFILES, seed=3)
    return subject.labels, segs


@pytest.fixture(scope="module")
def crop(panel):
    """A 40 x 48 x 40 box of the panel around the ventricles (all five labels occur)."""
    truth, segs = panel
    lesion = np.argwhere(truth == 4)
    centre = lesion[0] if len(lesion) else np.array(truth.shape) // 2
    lo = np.clip(centre - [20, 24, 20], 0, np.array(truth.shape) - [40, 48, 40])
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, (40, 48, 40), strict=True))
    return truth[box], segs[(slice(None), *box)]


# --- hand-checkable ---------------------------------------------------------------------


def test_binary_one_iteration_by_hand():
    # Raters x voxels.  ITK's start: W0 = mean vote = [1, 2/3, 1/3, 0], g = mean(W0) = 1/2.
    # M-step: p = sum_{D=1} W0 / sum W0 = [(1+2/3)/2, 1/2, (1+2/3+1/3)/2] = [5/6, 1/2, 1]
    #         q = sum_{D=0} (1-W0) / sum(1-W0) = [5/6, 1, 1/2].
    # E-step, voxel 1 (D = 1,0,1): a = g p1 (1-p2) p3 = 5/24, b = (1-g)(1-q1) q2 (1-q3) = 1/24
    #   -> W = 5/6; voxel 2 (0,0,1): a = 1/24, b = 5/24 -> W = 1/6; voxels 0 and 3 are
    #   decided by a factor (1-q2) = 0 or (1-p3) = 0, clamped to 1e-6 -> W = 1 - 2e-7, 2e-7.
    masks = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=np.uint8)
    result = staple_binary(masks, max_iter=1, **ITK)
    np.testing.assert_allclose(result.probability, [1, 5 / 6, 1 / 6, 0], atol=1e-6)
    # Reported p, q: one M-step on that W (sum W = 2, sum 1-W = 2):
    # p = [(1+5/6)/2, 1/2, (1+5/6+1/6)/2] = [11/12, 1/2, 1], q = [11/12, 1, 1/2].
    np.testing.assert_allclose(result.sensitivity, [11 / 12, 1 / 2, 1], atol=1e-6)
    np.testing.assert_allclose(result.specificity, [11 / 12, 1, 1 / 2], atol=1e-6)
    assert result.iterations == 1 and not result.converged
    assert result.probability.dtype == np.float32


def test_binary_converges_to_the_consistent_raters():
    # Raters 1 and 3 agree with the converged W everywhere; rater 2 misses voxel 1 and
    # rater 3 adds voxel 2.  At the fixed point p = [1, 1/2, 1], q = [1, 1, 1/2].
    masks = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=np.uint8)
    result = staple_binary(masks, **ITK)
    assert result.converged
    np.testing.assert_allclose(result.probability, [1, 1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(result.sensitivity, [1, 0.5, 1], atol=1e-5)
    np.testing.assert_allclose(result.specificity, [1, 1, 0.5], atol=1e-5)


def test_disagreement_region_assigns_unanimous_voxels_directly():
    masks = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1]], dtype=np.uint8)
    result = staple_binary(masks)  # defaults: region="disagreement", prior="spatial"
    assert result.region_voxels == 2  # voxels 1 and 2
    assert result.probability[[0, 3, 4]].tolist() == [1.0, 0.0, 1.0]
    # Contested voxels are decided by the EM: two votes of three in both, so the spatial
    # prior (2/3 vs 1/3) and the raters' estimated performance decide; both stay strict.
    assert 0 < result.probability[1] < 1 and 0 < result.probability[2] < 1


def test_multilabel_with_two_labels_is_binary_staple():
    rng = np.random.default_rng(11)
    truth = np.zeros((16, 16, 8), dtype=np.uint8)
    truth[4:12, 3:13, 2:6] = 1
    flips = rng.random((4, *truth.shape)) < [[[[0.02]]], [[[0.05]]], [[[0.1]]], [[[0.2]]]]
    masks = (truth[None] ^ flips).astype(np.uint8)
    for options in ({}, ITK):
        binary = staple_binary(masks, **options)
        multi = staple_multilabel(masks, **options, overrule="any")  # the fitted posterior
        np.testing.assert_allclose(multi.posterior[1], binary.probability, atol=1e-6)
        np.testing.assert_allclose(multi.confusion[:, 1, 1], binary.sensitivity, atol=1e-9)
        np.testing.assert_allclose(multi.confusion[:, 0, 0], binary.specificity, atol=1e-9)
        assert multi.iterations == binary.iterations


def test_contested_voxels_choose_among_their_candidate_labels():
    # Candidates: the most-voted label and the runner-up; a tie for runner-up goes to the
    # label with more votes over the contested voxels; a shared top keeps all tied labels.
    # (The fitted posterior: overrule="any"; the default returns the calibrated vote share.)
    segs = np.array(
        [[0, 0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 0, 1, 1], [1, 0, 1, 0, 0, 1, 2], [2, 0, 1, 1, 0, 1, 3]], dtype=np.uint8
    )
    result = staple_multilabel(segs, overrule="any")
    # Voxel 0 votes 0,0,1,2: runner-up tie 1 vs 2; label 1 has more contested votes
    # (voxels 0, 3, 6: 1 + 3 + 1 = 5 against 1 + 0 + 1 = 2) -> candidates {0, 1}.
    assert result.posterior[2, 0] == 0.0 and result.posterior[3, 0] == 0.0
    assert result.labels[0] == 0  # two votes for 0 against one each for 1 and 2
    # Voxel 6 votes 0,1,2,3: all four share the top vote -> all are candidates.
    assert np.all(result.posterior[:, 6] > 0)
    np.testing.assert_allclose(result.posterior.sum(axis=0), 1.0, atol=1e-6)
    # Unanimous voxels: one-hot, outside the EM region.
    assert result.posterior[:, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert result.region_voxels == 3


# --- SimpleITK oracle -------------------------------------------------------------------


def test_binary_matches_simpleitk(panel):
    """Oracle: SimpleITK 2.5.7 (ITK 5.4) STAPLEImageFilter, foreground 1, on each label
    of a simulated 2 mm panel; ours with region="all", prior="global"."""
    sitk = pytest.importorskip("SimpleITK")
    _, segs = panel
    for label in (1, 4):  # CSF (thin, large) and lesion (small)
        masks = (segs == label).astype(np.uint8)
        itk = sitk.STAPLEImageFilter()
        itk.SetForegroundValue(1.0)
        w_itk = sitk.GetArrayFromImage(itk.Execute([sitk.GetImageFromArray(m) for m in masks]))
        ours = staple_binary(masks, **ITK)
        assert np.abs(ours.sensitivity - np.array(itk.GetSensitivity())).max() < 0.01
        assert np.abs(ours.specificity - np.array(itk.GetSpecificity())).max() < 0.01
        assert _dice(ours.probability >= 0.5, w_itk >= 0.5) >= 0.99


def test_multilabel_matches_simpleitk(panel):
    """Oracle: SimpleITK 2.5.7 MultiLabelSTAPLEImageFilter (undecided label = max + 1) on
    a simulated 2 mm panel; ours with region="all", prior="global" must give ITK's label
    on >= 99.5 % of the voxels ITK decides."""
    sitk = pytest.importorskip("SimpleITK")
    _, segs = panel
    itk = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE([sitk.GetImageFromArray(s) for s in segs]))
    ours = staple_multilabel(segs, **ITK_ML)
    decided = itk != int(segs.max()) + 1
    assert decided.mean() > 0.99
    assert (ours.labels[decided] == itk[decided]).mean() >= 0.995
    assert ours.converged


# --- invariants -------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, ITK])
def test_rater_order_does_not_matter(crop, options):
    _, segs = crop
    order = [3, 0, 4, 2, 1]
    a = staple_multilabel(segs, **options)
    b = staple_multilabel(segs[order], **options)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.posterior, b.posterior, atol=1e-5)
    np.testing.assert_allclose(a.confusion[order], b.confusion, atol=1e-6)
    masks = segs == 2
    p = staple_binary(masks, **options)
    q = staple_binary(masks[order], **options)
    np.testing.assert_allclose(p.probability, q.probability, atol=1e-5)
    np.testing.assert_allclose(p.sensitivity[order], q.sensitivity, atol=1e-6)


@pytest.mark.parametrize("options", [{}, ITK])
def test_identical_raters_are_perfect(crop, options):
    truth, _ = crop
    segs = np.stack([truth] * 3)
    result = staple_multilabel(segs, **options)
    np.testing.assert_array_equal(result.labels, truth)
    np.testing.assert_allclose(result.posterior.max(axis=0), 1.0, atol=1e-6)
    for r in range(3):
        np.testing.assert_allclose(result.confusion[r], np.eye(5), atol=1e-6)
    masks = np.stack([truth == 2] * 4)
    binary = staple_binary(masks, **options)
    np.testing.assert_allclose(binary.sensitivity, 1.0, atol=1e-6)
    np.testing.assert_allclose(binary.specificity, 1.0, atol=1e-6)
    np.testing.assert_allclose(binary.probability, masks[0], atol=1e-6)


@pytest.mark.parametrize("options", [{}, ITK])
def test_relabelling_permutes_results_consistently(crop, options):
    _, segs = crop
    new_values = np.array([7, 3, 0, 9, 5], dtype=np.uint8)  # 0->7, 1->3, 2->0, 3->9, 4->5
    a = staple_multilabel(segs, **options)
    b = staple_multilabel(new_values[segs], **options)
    assert b.label_values.tolist() == [0, 3, 5, 7, 9]
    axis = np.searchsorted(b.label_values, new_values)  # old axis i -> new axis axis[i]
    np.testing.assert_allclose(b.posterior[axis], a.posterior, atol=1e-5)
    np.testing.assert_allclose(b.confusion[:, axis][:, :, axis], a.confusion, atol=1e-6)
    top = np.sort(a.posterior, axis=0)
    decided = top[-1] - top[-2] > 1e-4  # exact posterior ties go to the first label
    np.testing.assert_array_equal(new_values[a.labels][decided], b.labels[decided])


def test_numpy_and_torch_inputs_agree_and_are_untouched(crop):
    _, segs = crop
    segs16 = segs.astype(np.int16)
    before = segs16.copy()
    tensor = torch.from_numpy(segs16.copy())
    a = staple_multilabel(segs16)
    b = staple_multilabel(tensor)
    c = staple_multilabel(list(segs16))
    np.testing.assert_array_equal(segs16, before)
    np.testing.assert_array_equal(tensor.numpy(), before)
    for other in (b, c):
        assert isinstance(other.labels, np.ndarray) and other.labels.dtype == np.int16
        np.testing.assert_array_equal(a.labels, other.labels)
        np.testing.assert_allclose(a.posterior, other.posterior, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_input_gives_the_cpu_result(crop):
    _, segs = crop
    cpu = staple_multilabel(segs)
    gpu = staple_multilabel(torch.from_numpy(segs).cuda())
    assert isinstance(gpu.posterior, np.ndarray)
    np.testing.assert_array_equal(cpu.labels, gpu.labels)
    np.testing.assert_allclose(cpu.posterior, gpu.posterior, atol=1e-5)


# --- empty and degenerate cases ---------------------------------------------------------


@pytest.mark.parametrize("options", [{}, ITK])
def test_all_background_panel(options):
    # ITK <= 5.4.7 divides 0 by 0 here; we answer directly: no foreground, p undefined.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = staple_binary(np.zeros((3, 4, 5), dtype=np.uint8), **options)
    assert np.all(result.probability == 0)
    assert np.all(np.isnan(result.sensitivity))
    np.testing.assert_array_equal(result.specificity, 1.0)
    assert result.converged


def test_all_foreground_panel():
    result = staple_binary(np.ones((3, 6), dtype=bool), **ITK)
    np.testing.assert_array_equal(result.probability, 1.0)
    np.testing.assert_array_equal(result.sensitivity, 1.0)
    assert np.all(np.isnan(result.specificity))


@pytest.mark.parametrize("options", [{}, ITK])
def test_two_raters_work(crop, options):
    _, segs = crop
    result = staple_multilabel(segs[:2], **options)
    agree = segs[0] == segs[1]
    assert np.isfinite(result.posterior).all()
    np.testing.assert_array_equal(result.labels[agree], segs[0][agree])
    if not options:
        # Default: a contested voxel gets one of the two labels proposed.  (ITK's model
        # on the whole volume may pick a third label there, from the prior.)
        contested = ~agree
        assert np.all(
            (result.labels[contested] == segs[0][contested]) | (result.labels[contested] == segs[1][contested])
        )
    binary = staple_binary(segs[:2] == 3, **options)
    assert np.isfinite(binary.probability).all()


def test_label_listed_but_never_used():
    segs = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    result = staple_multilabel(segs, labels=[0, 1, 2], region="all", prior="global")
    assert result.label_values.tolist() == [0, 1, 2]
    assert np.all(result.posterior[2] == 0)
    assert np.all(np.isnan(result.confusion[:, :, 2]))
    assert result.prior[2] == 0


def test_options_are_recorded_and_defaults_are_the_app_method():
    segs = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    result = staple_multilabel(segs)
    assert isinstance(result, MultiLabelStapleResult)
    assert result.options["region"] == "disagreement"
    assert result.options["prior"] == "spatial"
    assert {"max_iter", "tol", "dirichlet_kappa", "confusion_floor"} <= set(result.options)
    binary = staple_binary(segs == 1, region="all", prior="global", max_iter=7, tol=1e-3)
    assert isinstance(binary, BinaryStapleResult)
    assert binary.options["region"] == "all" and binary.options["max_iter"] == 7
    with pytest.raises(AttributeError):
        result.iterations = 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: staple_multilabel(s[:1]), "segmentations: need at least 2 raters"),
        (lambda s: staple_binary(s[:1]), "segmentations: need at least 2 raters"),
        (lambda s: staple_binary(s), r"segmentations: expected 0/1 \(or bool\) masks"),
        (lambda s: staple_multilabel(s, region="roi"), "region: expected one of"),
        (lambda s: staple_multilabel(s, prior="atlas"), "prior: expected one of"),
        (lambda s: staple_multilabel(s, max_iter=0), "max_iter: expected a positive integer"),
        (lambda s: staple_binary(s > 0, tol=-1.0), "tol: expected a finite number"),
        (lambda s: staple_multilabel(s, labels=[0, 1]), r"labels: the raters used values \[2\]"),
    ],
)
def test_validation_names_the_argument(call, message):
    segs = np.array([[0, 1, 2], [0, 2, 2], [1, 1, 2]], dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        call(segs)


def test_float_input_is_a_type_error():
    with pytest.raises(TypeError, match="segmentations: expected an integer"):
        staple_multilabel(np.zeros((3, 4), dtype=np.float64))


# --- seeded simulated panel -------------------------------------------------------------


def test_defaults_beat_majority_vote_and_the_whole_volume_model(panel):
    """Seeded 2 mm MNI152 panel (simulated raters: expert, generous, conservative, sloppy,
    misses_components).  The defaults must beat majority vote and ITK's model (region all,
    global prior) on mean Dice, and majority vote on every label by more than noise."""
    truth, segs = panel
    labels = range(5)

    def dices(label_map):
        return np.array([_dice(label_map == k, truth == k) for k in labels])

    ours = dices(staple_multilabel(segs).labels)
    vote = dices(majority_vote(segs).labels)
    whole = dices(staple_multilabel(segs, **ITK).labels)
    assert ours.mean() > vote.mean() and ours.mean() > whole.mean()
    assert np.all(ours >= vote - 0.002)
    assert ours[4] > 0.9  # lesions
