"""Tests for simulation (pure: no database, no Django).

Everything here is SIMULATED from the MNI152 template. Kinds of test: the anatomy
against nilearn's own loaders (outside oracle), hand-made label maps, invariants
(determinism, stream independence, panel = raters), and seeded subjects and raters at
2 mm with the expected direction of each error. The file runs in about 10 s.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import simulation as sim

TISSUES = (sim.CSF, sim.GREY_MATTER, sim.WHITE_MATTER)
ALL_26 = np.ones((3, 3, 3), dtype=bool)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 2.0 * int((x & y).sum()) / total if total else 1.0


def n_components(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=ALL_26)[1]


@pytest.fixture(scope="module")
def anatomy() -> sim.Anatomy:
    return sim.mni152_anatomy(resolution=2)


@pytest.fixture(scope="module")
def subject(anatomy) -> sim.Subject:
    return sim.simulate_subject(anatomy, seed=5, n_lesions=3)


@pytest.fixture(scope="module")
def twin(anatomy) -> sim.Subject:
    """The lesion-free twin of ``subject``: same seed, no lesions."""
    return sim.simulate_subject(anatomy, seed=5, n_lesions=0)


@pytest.fixture(scope="module")
def nested_cubes() -> np.ndarray:
    """Background, a CSF shell, a grey shell, a white cube and one lesion voxel block."""
    truth = np.zeros((24, 24, 24), dtype=np.uint8)
    truth[4:20, 4:20, 4:20] = sim.CSF
    truth[6:18, 6:18, 6:18] = sim.GREY_MATTER
    truth[9:15, 9:15, 9:15] = sim.WHITE_MATTER
    truth[11:13, 11:13, 11:13] = sim.LESION
    return truth


# ----------------------------------------------------------------------------- labels


def test_labels_table():
    assert list(sim.LABELS) == [0, 1, 2, 3, 4]
    assert sim.LABELS[0] == ("Background", "#000000")
    names = [name for name, _ in sim.LABELS.values()]
    assert names == ["Background", "CSF", "Grey matter", "White matter", "Lesion"]
    colours = [colour for _, colour in sim.LABELS.values()]
    assert len(set(colours)) == 5
    for colour in colours:
        assert len(colour) == 7 and colour[0] == "#"
        int(colour[1:], 16)


# ----------------------------------------------------------------------------- anatomy


def test_anatomy_grid(anatomy):
    assert anatomy.t1.shape == anatomy.labels.shape == (99, 117, 95)
    assert anatomy.t1.dtype == np.float32 and anatomy.labels.dtype == np.uint8
    assert anatomy.affine.dtype == np.float64
    expected = np.array([[2, 0, 0, -98], [0, 2, 0, -134], [0, 0, 2, -72], [0, 0, 0, 1]], float)
    np.testing.assert_array_equal(anatomy.affine, expected)
    assert anatomy.spacing == (2.0, 2.0, 2.0)
    assert nib.aff2axcodes(anatomy.affine) == ("R", "A", "S")
    assert set(np.unique(anatomy.labels)) == {0, 1, 2, 3}
    assert np.isfinite(anatomy.t1).all() and 0.0 <= anatomy.t1.min() <= anatomy.t1.max() <= 1.0


def test_anatomy_is_cached_and_read_only(anatomy):
    assert sim.mni152_anatomy(resolution=2) is anatomy
    assert sim.mni152_anatomy() is anatomy
    with pytest.raises(ValueError):
        anatomy.labels[0, 0, 0] = 1


def test_anatomy_matches_nilearn_at_2mm(anatomy):
    """Outside oracle: nilearn's own 2 mm resampling of the template and brain mask."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    np.testing.assert_array_equal(template.affine, anatomy.affine)
    np.testing.assert_allclose(np.asarray(template.dataobj), anatomy.t1, rtol=0, atol=1e-6)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    np.testing.assert_array_equal(mask, anatomy.labels > 0)


def test_anatomy_labels_agree_with_t1_contrast(anatomy):
    """On a T1, CSF < grey < white; misaligned labels would blur the medians together."""
    median = {k: float(np.median(anatomy.t1[anatomy.labels == k])) for k in TISSUES}
    assert median[sim.CSF] < 0.5 < median[sim.GREY_MATTER] < 0.75 < median[sim.WHITE_MATTER]
    counts = np.bincount(anatomy.labels.ravel(), minlength=4)
    assert counts[sim.GREY_MATTER] > counts[sim.WHITE_MATTER] > counts[sim.CSF] > 0


@pytest.mark.parametrize("resolution", [0, 3, 1.5, True, "2"])
def test_anatomy_rejects_other_resolutions(resolution):
    with pytest.raises(ValueError, match="resolution"):
        sim.mni152_anatomy(resolution=resolution)


def test_anatomy_validates_its_arrays():
    t1 = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="labels"):
        sim.Anatomy(t1=t1, labels=np.zeros((4, 4, 5), np.uint8), affine=np.eye(4))
    with pytest.raises(ValueError, match="t1"):
        sim.Anatomy(
            t1=t1.astype(np.float64),
            labels=np.zeros((4, 4, 4), np.uint8),
            affine=np.eye(4),
        )


# ----------------------------------------------------------------------------- subjects


def test_subject_grid_and_types(anatomy, subject):
    assert subject.image.shape == subject.labels.shape == anatomy.t1.shape
    assert subject.image.dtype == np.float32 and subject.labels.dtype == np.uint8
    assert np.isfinite(subject.image).all()
    np.testing.assert_array_equal(subject.affine, anatomy.affine)
    assert subject.seed == 5
    assert set(np.unique(subject.labels)) <= set(sim.LABELS)
    assert set(np.unique(subject.labels)) == {0, 1, 2, 3, 4}


def test_subject_is_deterministic(anatomy, subject):
    again = sim.simulate_subject(anatomy, seed=5, n_lesions=3)
    np.testing.assert_array_equal(again.image, subject.image)
    np.testing.assert_array_equal(again.labels, subject.labels)
    other = sim.simulate_subject(anatomy, seed=6, n_lesions=3)
    assert not np.array_equal(other.labels, subject.labels)
    assert not np.allclose(other.image, subject.image)


def test_subject_image_is_t1_like(subject):
    """Deformed image and deformed labels stay aligned: CSF < grey < white in the image."""
    median = {k: float(np.median(subject.image[subject.labels == k])) for k in TISSUES}
    assert median[sim.CSF] < median[sim.GREY_MATTER] < median[sim.WHITE_MATTER]
    background = float(np.median(subject.image[subject.labels == 0]))
    assert background < 0.25 * median[sim.WHITE_MATTER]


def test_deformation_moves_tissue_but_keeps_it_recognisable(anatomy, twin):
    brain = (anatomy.labels > 0) | (twin.labels > 0)
    changed = float((anatomy.labels != twin.labels)[brain].mean())
    assert changed > 0.05
    assert 0.6 < dice(twin.labels, anatomy.labels, sim.GREY_MATTER) < 0.95
    assert 0.6 < dice(twin.labels, anatomy.labels, sim.WHITE_MATTER) < 0.95


def test_lesions_lie_in_deformed_white_matter(subject, twin):
    lesion = subject.labels == sim.LESION
    assert n_components(lesion) == 3
    assert len(subject.parameters["lesions"]) == 3
    assert float((twin.labels[lesion] == sim.WHITE_MATTER).mean()) > 0.85
    # Outside the lesions, the twin has the very same labels (independent random streams).
    np.testing.assert_array_equal(subject.labels[~lesion], twin.labels[~lesion])


def test_lesions_change_the_image_only_around_them(subject, twin):
    near = ndimage.binary_dilation(subject.labels == sim.LESION, iterations=3)
    np.testing.assert_array_equal(subject.image[~near], twin.image[~near])
    assert not np.array_equal(subject.image[near], twin.image[near])


def test_lesion_contrast_follows_its_parameters(subject, twin):
    components, _ = ndimage.label(subject.labels == sim.LESION, structure=ALL_26)
    sigma = subject.parameters["noise_sigma"]
    contrasts = [lesion["contrast"] for lesion in subject.parameters["lesions"]]
    assert min(contrasts) < 1.0 < max(contrasts)  # seed 5 has both kinds
    for lesion in subject.parameters["lesions"]:
        centre = tuple(round(c) for c in lesion["centre_voxel"])
        voxels = components == components[centre]
        assert components[centre] > 0
        shift = float(subject.image[voxels].mean() - twin.image[voxels].mean())
        if lesion["contrast"] < 1.0:
            assert shift < -sigma
        else:
            assert shift > sigma


def test_no_lesions_when_asked(twin):
    assert not (twin.labels == sim.LESION).any()
    assert twin.parameters["lesions"] == []


def test_lesion_count_drawn_from_seed(anatomy):
    counts = [n_components(sim.simulate_subject(anatomy, seed=seed).labels == sim.LESION) for seed in range(6)]
    assert all(0 <= count <= 4 for count in counts)
    assert len(set(counts)) > 1


def sphere_anatomy(step: int) -> sim.Anatomy:
    """Nested spheres (WM < 8 mm < GM < 14 mm < CSF < 17 mm) on a 40 mm cube."""
    x = np.arange(0, 41, step, dtype=float) - 20
    r = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)
    labels = np.select([r < 8, r < 14, r < 17], [3, 2, 1], 0).astype(np.uint8)
    t1 = np.choose(labels, [0.0, 0.35, 0.65, 0.85]).astype(np.float32)
    return sim.Anatomy(t1=t1, labels=labels, affine=np.diag([step, step, step, 1.0]))


def test_same_seed_same_deformation_at_1_and_2_mm():
    """Fields live in millimetres: a seed deforms a 1 mm and a 2 mm grid alike."""
    fine, coarse = sphere_anatomy(1), sphere_anatomy(2)
    for seed in (0, 1):
        a = sim.simulate_subject(fine, seed=seed, n_lesions=0)
        b = sim.simulate_subject(coarse, seed=seed, n_lesions=0)
        c = sim.simulate_subject(coarse, seed=seed + 100, n_lesions=0)
        assert a.parameters == b.parameters
        same = float((a.labels[::2, ::2, ::2] != b.labels).mean())
        other = float((a.labels[::2, ::2, ::2] != c.labels).mean())
        assert same < 0.5 * other


# ------------------------------------------------------- acquisition variations (sites)


def _tissue_medians(subject):
    return {k: float(np.median(subject.image[subject.labels == k])) for k in TISSUES}


@pytest.mark.parametrize(
    ("contrast", "order"),
    [
        ("T2w", (sim.WHITE_MATTER, sim.GREY_MATTER, sim.CSF)),  # CSF brightest
        ("PDw", (sim.WHITE_MATTER, sim.GREY_MATTER, sim.CSF)),  # as T2w, flatter
        ("FLAIR", (sim.CSF, sim.WHITE_MATTER, sim.GREY_MATTER)),  # CSF darkest
    ],
)
def test_other_contrasts_reorder_tissues_and_keep_the_labels(anatomy, twin, contrast, order):
    other = sim.simulate_subject(anatomy, seed=5, n_lesions=0, contrast=contrast)
    np.testing.assert_array_equal(other.labels, twin.labels)  # same anatomy, other sequence
    median = _tissue_medians(other)
    assert median[order[0]] < median[order[1]] < median[order[2]], median
    assert other.parameters["contrast"] == contrast


@pytest.mark.parametrize("contrast", ["T2w", "FLAIR", "PDw"])
def test_lesions_are_bright_on_t2w_flair_and_pdw_where_t1w_lesions_are_dark(anatomy, contrast):
    t1 = sim.simulate_subject(anatomy, seed=5, n_lesions=3)
    other = sim.simulate_subject(anatomy, seed=5, n_lesions=3, contrast=contrast)
    dark = [les for les in t1.parameters["lesions"] if les["contrast"] < 1]
    assert dark, "seed 5 should have a hypointense lesion"
    wm = t1.labels == sim.WHITE_MATTER
    for number in range(len(t1.parameters["lesions"])):  # each lesion, not just on average
        one = _lesion_mask(t1, number)
        assert np.median(other.image[one]) > np.median(other.image[wm]), (contrast, number)
    lesion = t1.labels == sim.LESION
    assert np.median(t1.image[lesion]) < np.median(t1.image[wm])
    np.testing.assert_array_equal(other.labels, t1.labels)


def _lesion_mask(subject, number: int) -> np.ndarray:
    """The voxels of one lesion: the connected lesion component that holds its centre."""
    components, _ = ndimage.label(subject.labels == sim.LESION)
    centre = tuple(round(c) for c in subject.parameters["lesions"][number]["centre_voxel"])
    return components == components[centre]


def _principal_axis(mask, spacing):
    points = np.argwhere(mask) * np.asarray(spacing)
    points -= points.mean(axis=0)
    _, vectors = np.linalg.eigh(points.T @ points)
    return vectors[:, -1]  # the longest axis of the brain (anterior-posterior)


def test_tilt_rotates_the_head_by_the_asked_angle(anatomy, twin):
    tilted = sim.simulate_subject(anatomy, seed=5, n_lesions=0, tilt_deg=25)
    brain, brain_tilted = twin.labels > 0, tilted.labels > 0
    assert abs(int(brain_tilted.sum()) - int(brain.sum())) < 0.02 * brain.sum()  # rigid: volume kept
    v = _principal_axis(brain, anatomy.spacing)
    w = _principal_axis(brain_tilted, anatomy.spacing)
    measured = np.degrees(np.arccos(min(1.0, abs(float(v @ w)))))
    # Rotating v by 25 degrees about the recorded axis a turns it by
    # arccos(cos 25 + (1 - cos 25) (v.a)^2) (exactly 25 when a is perpendicular to v).
    a = np.asarray(tilted.parameters["tilt_axis"])
    c = np.cos(np.radians(25))
    expected = np.degrees(np.arccos(c + (1 - c) * float(v @ a) ** 2))
    assert abs(measured - expected) < 2.0, (measured, expected)
    assert abs(a[0]) > 0.9  # near left-right: a pitch, as a head tilts in a scanner


def test_thick_slices_blur_along_the_last_axis_only(anatomy, twin):
    thick = sim.simulate_subject(anatomy, seed=5, n_lesions=0, slice_thickness_mm=6)
    np.testing.assert_array_equal(thick.labels, twin.labels)
    assert thick.parameters["slice_thickness_mm"] == 6.0  # slabs of 3 voxels of 2 mm
    brain = (twin.labels > 0)[:, :, :-1]  # where a z-step starts in the brain
    boundary = np.arange(brain.shape[2]) % 3 == 2  # steps from one slab to the next

    def mean_step(image, where):
        steps = np.abs(np.diff(image, axis=2))
        return float(steps[:, :, where][brain[:, :, where]].mean())

    within, between = mean_step(thick.image, ~boundary), mean_step(thick.image, boundary)
    assert between > 1.5 * within  # inside a slab only the noise changes
    assert within < 0.8 * mean_step(twin.image, ~boundary)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "n_lesions": -1}, "n_lesions"),
        ({"seed": 0, "contrast": "T3w"}, "contrast"),
        ({"seed": 0, "tilt_deg": -5}, "tilt_deg"),
        ({"seed": 0, "tilt_deg": 60}, "tilt_deg"),
        ({"seed": 0, "slice_thickness_mm": 0}, "slice_thickness_mm"),
    ],
)
def test_subject_rejects_bad_arguments(anatomy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.simulate_subject(anatomy, **kwargs)


# ----------------------------------------------------------------------------- raters


@pytest.mark.parametrize("profile", sim.RATER_PROFILES)
def test_rater_shape_dtype_determinism(subject, profile):
    before = subject.labels.copy()
    a = sim.simulate_rater(subject.labels, profile=profile, seed=11)
    b = sim.simulate_rater(subject.labels, profile=profile, seed=11)
    c = sim.simulate_rater(subject.labels, profile=profile, seed=12)
    np.testing.assert_array_equal(subject.labels, before)  # input untouched
    assert a.shape == subject.labels.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, subject.labels)
    assert set(np.unique(a)) <= set(np.unique(subject.labels))


def test_expert_is_close_to_truth(subject):
    rater = sim.simulate_rater(subject.labels, profile="expert", seed=5)
    for label in TISSUES:
        assert dice(rater, subject.labels, label) > 0.95, sim.LABELS[label][0]
    assert dice(rater, subject.labels, sim.LESION) > 0.8


def test_generous_and_conservative_move_boundaries_in_opposite_directions(subject):
    truth = subject.labels
    generous = sim.simulate_rater(truth, profile="generous", seed=5)
    conservative = sim.simulate_rater(truth, profile="conservative", seed=5)
    assert (generous > 0).sum() > 1.03 * (truth > 0).sum()
    assert (conservative > 0).sum() < 0.97 * (truth > 0).sum()
    # Label-aware: tissue/tissue boundaries move too (white matter is inside grey matter).
    wm = int((truth == sim.WHITE_MATTER).sum())
    assert (generous == sim.WHITE_MATTER).sum() > 1.1 * wm
    assert (conservative == sim.WHITE_MATTER).sum() < 0.9 * wm
    tissue_to_tissue = (truth > 0) & (generous > 0) & (truth != generous)
    assert tissue_to_tissue.sum() > 0.05 * (truth > 0).sum()


def test_generous_grows_by_about_one_voxel(nested_cubes):
    rater = sim.simulate_rater(nested_cubes, profile="generous", seed=2)
    far = ~ndimage.binary_dilation(nested_cubes > 0, iterations=3)
    assert not rater[far].any()
    for label in (sim.GREY_MATTER, sim.WHITE_MATTER, sim.LESION):
        inside_truth = nested_cubes >= label
        assert (rater >= label).sum() > inside_truth.sum()
        assert not (rater >= label)[~ndimage.binary_dilation(inside_truth, iterations=3)].any()


def test_conservative_shrinks_nested_structures(nested_cubes):
    rater = sim.simulate_rater(nested_cubes, profile="conservative", seed=2)
    for label in (sim.CSF, sim.GREY_MATTER, sim.WHITE_MATTER):
        assert (rater >= label).sum() < (nested_cubes >= label).sum()


def test_sloppy_is_worse_than_expert(subject):
    truth = subject.labels
    for seed in (1, 2):
        expert = sim.simulate_rater(truth, profile="expert", seed=seed)
        sloppy = sim.simulate_rater(truth, profile="sloppy", seed=seed)
        for label in TISSUES:
            assert dice(sloppy, truth, label) < dice(expert, truth, label) - 0.05
    assert (sloppy > 0).sum() == pytest.approx((truth > 0).sum(), rel=0.03)  # no bias


def test_speckle_stays_on_boundaries():
    """The sloppy profile's speckle (private helper): only voxels touching the other
    label change, and they take a neighbour's label."""
    seg = np.zeros((12, 12, 12), dtype=np.uint8)
    seg[:, :, 6:] = sim.WHITE_MATTER
    out = seg.copy()
    sim.raters._add_speckle(np.random.default_rng(0), out, 0.5)
    changed = np.nonzero(out != seg)
    assert changed[0].size > 10
    assert set(changed[2].tolist()) == {5, 6}


def test_misses_components_drops_lesions(subject):
    truth = subject.labels
    rater = sim.simulate_rater(truth, profile="misses_components", seed=5)
    assert 0 < n_components(rater == sim.LESION) < n_components(truth == sim.LESION)
    missed = (truth == sim.LESION) & (rater != sim.LESION)
    assert float((rater[missed] == sim.WHITE_MATTER).mean()) > 0.8
    for label in TISSUES:
        assert dice(rater, truth, label) > 0.95


def test_misses_components_drops_the_only_lesion():
    truth = np.full((16, 16, 16), sim.WHITE_MATTER, dtype=np.uint8)
    truth[6:10, 6:10, 6:10] = sim.LESION
    rater = sim.simulate_rater(truth, profile="misses_components", seed=0)
    assert not (rater == sim.LESION).any()
    assert (rater == sim.WHITE_MATTER).all()


def test_misses_components_on_a_binary_lesion_mask():
    """The only annotated label counts as small, however much of the mask it fills."""
    truth = np.zeros((30, 30, 30), dtype=np.uint8)
    for corner in (2, 12, 22):
        truth[corner : corner + 5, corner : corner + 5, corner : corner + 5] = sim.LESION
    rater = sim.simulate_rater(truth, profile="misses_components", seed=0)
    assert n_components(rater == sim.LESION) == 1  # round(0.5 * 3) = 2 dropped
    assert set(np.unique(rater)) == {0, sim.LESION}


def test_rater_on_a_subset_of_labels(subject):
    truth = subject.labels
    rater = sim.simulate_rater(truth, profile="generous", seed=1, labels=[sim.LESION])
    assert set(np.unique(rater)) == {0, sim.LESION}
    assert (rater == sim.LESION).sum() > (truth == sim.LESION).sum()


def test_rater_on_empty_truth():
    truth = np.zeros((8, 9, 10), dtype=np.int64)
    for profile in sim.RATER_PROFILES:
        rater = sim.simulate_rater(truth, profile=profile, seed=0)
        assert rater.dtype == np.uint8 and rater.shape == truth.shape and not rater.any()


def test_unknown_profile_names_the_valid_ones(nested_cubes):
    with pytest.raises(ValueError) as error:
        sim.simulate_rater(nested_cubes, profile="lazy", seed=0)
    for name in sim.RATER_PROFILES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("truth", "kwargs", "match"),
    [
        (np.zeros((4, 4), np.uint8), {}, "truth"),
        (np.zeros((4, 4, 4), np.float32), {}, "truth"),
        (np.full((4, 4, 4), 300, np.int32), {}, "truth"),
        (np.zeros((4, 4, 4), np.uint8), {"seed": -3}, "seed"),
        (np.zeros((4, 4, 4), np.uint8), {"labels": [0, 2]}, "labels"),
    ],
)
def test_rater_rejects_bad_arguments(truth, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.simulate_rater(truth, profile="expert", **{"seed": 0, **kwargs})


# ----------------------------------------------------------------------------- panels


def test_panel_is_its_raters(subject):
    profiles = ["expert", "expert", "misses_components"]
    panel = sim.simulate_panel(subject.labels, profiles=profiles, seed=9)
    assert panel.shape == (3, *subject.labels.shape) and panel.dtype == np.uint8
    for r, profile in enumerate(profiles):
        one = sim.simulate_rater(subject.labels, profile=profile, seed=sim.rater_seed(9, r))
        np.testing.assert_array_equal(panel[r], one)
    assert not np.array_equal(panel[0], panel[1])  # same profile, different errors


def test_rater_seeds_are_distinct():
    seeds = {sim.rater_seed(seed, r) for seed in range(5) for r in range(5)}
    assert len(seeds) == 25


@pytest.mark.parametrize(
    ("profiles", "error"),
    [([], ValueError), ("expert", TypeError), (["expert", "lazy"], ValueError)],
)
def test_panel_rejects_bad_profiles(nested_cubes, profiles, error):
    with pytest.raises(error, match="profiles"):
        sim.simulate_panel(nested_cubes, profiles=profiles, seed=0)


# ----------------------------------------------------------------------------- docs
