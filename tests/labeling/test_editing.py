"""The server's editing operations: the kernel against scipy / scikit-image oracles and hand-checkable
shapes, and the API's contract (who may, what comes back, nothing saved)."""

from __future__ import annotations

import gzip
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.graph import MCP_Geometric
from skimage.morphology import remove_small_objects

from labeling import editing
from labeling.editing import EditRefused
from tests.bench import load_bench

ANISOTROPIC = (0.8, 1.0, 2.5)


def _blobs(shape=(30, 28, 16), values=(1, 2, 3), seed=0, density=0.5) -> np.ndarray:
    """Random blobby label map: smoothed noise thresholded per label (many islands of all sizes)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for value in values:
        field = ndi.gaussian_filter(rng.standard_normal(shape), 1.5)
        labels[(field > np.quantile(field, 1 - density / len(values))) & (labels == 0)] = value
    return labels


def _ball(shape, centre, radius_mm, spacing) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    distance = np.sqrt(sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    return distance <= radius_mm


# --------------------------------------------------------------------------- islands


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISOTROPIC])
@pytest.mark.parametrize("min_mm3", [0.5, 4.0, 30.0, 200.0])
def test_remove_small_islands_matches_skimage(spacing, min_mm3):
    labels = _blobs(seed=1)
    voxel = float(np.prod(spacing))
    out = editing.islands(labels, spacing=spacing, label=2, mode="remove_small", min_mm3=min_mm3)
    # skimage removes pieces of at most max_size voxels; ours those under min_mm3 mm³
    kept = remove_small_objects(labels == 2, max_size=math.ceil(min_mm3 / voxel) - 1, connectivity=3)
    expected = labels.copy()
    expected[(labels == 2) & ~kept] = 0
    np.testing.assert_array_equal(out, expected)


def test_remove_small_islands_of_every_label():
    labels = _blobs(seed=2)
    out = editing.islands(labels, spacing=ANISOTROPIC, label=None, mode="remove_small", min_mm3=20, locked=[3])
    voxel = float(np.prod(ANISOTROPIC))
    expected = labels.copy()
    for value in (1, 2):
        kept = remove_small_objects(labels == value, max_size=math.ceil(20 / voxel) - 1, connectivity=3)
        expected[(labels == value) & ~kept] = 0
    np.testing.assert_array_equal(out, expected)
    assert (labels == 3).sum() > 0 and np.array_equal(out == 3, labels == 3)


def test_keep_largest_matches_scipy_label():
    labels = _blobs(seed=3)
    out = editing.islands(labels, spacing=(1, 1, 1), label=1, mode="keep_largest")
    pieces, count = ndi.label(labels == 1, structure=np.ones((3, 3, 3)))
    assert count > 3
    largest = 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    expected = labels.copy()
    expected[(pieces > 0) & (pieces != largest)] = 0
    np.testing.assert_array_equal(out, expected)


def test_keep_at_keeps_the_island_under_the_voxel():
    labels = _blobs(seed=4)
    pieces, _ = ndi.label(labels == 3, structure=np.ones((3, 3, 3)))
    chosen = 1 + int(np.argsort(np.bincount(pieces.ravel())[1:])[-2])  # the second largest
    point = tuple(int(v) for v in np.argwhere(pieces == chosen)[0])
    out = editing.islands(labels, spacing=(1, 1, 1), label=3, mode="keep_at", point=point)
    expected = labels.copy()
    expected[(pieces > 0) & (pieces != chosen)] = 0
    np.testing.assert_array_equal(out, expected)
    # label=all takes the label under the voxel
    np.testing.assert_array_equal(
        editing.islands(labels, spacing=(1, 1, 1), label=None, mode="keep_at", point=point), out
    )


def test_islands_are_26_connected():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = labels[3, 3, 3] = 1  # the first two touch by a corner
    out = editing.islands(labels, spacing=(1, 1, 1), label=1, mode="keep_largest")
    assert out[0, 0, 0] == out[1, 1, 1] == 1 and out[3, 3, 3] == 0


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"label": 1, "mode": "keep_at", "point": (0, 0, 0)}, "point_not_in_label"),
        ({"label": None, "mode": "keep_at", "point": (0, 0, 0)}, "point_not_in_label"),
        ({"label": 1, "mode": "keep_at", "point": (99, 0, 0)}, "bad_point"),
        ({"label": 1, "mode": "remove_small", "min_mm3": -1}, "bad_min_mm3"),
        ({"label": 1, "mode": "shrink"}, "bad_mode"),
        ({"label": 2, "mode": "keep_largest", "locked": [2]}, "label_locked"),
        ({"label": 2, "mode": "keep_largest", "locked": [0]}, "bad_locked"),
    ],
)
def test_islands_refusals(kwargs, code):
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[2:4, 2:4, 2:4] = 1
    labels[0, 4, 4] = 2
    with pytest.raises(EditRefused) as refused:
        editing.islands(labels, spacing=(1, 1, 1), **kwargs)
    assert refused.value.code == code and refused.value.message


# --------------------------------------------------------------------------- margin, smooth


@pytest.mark.parametrize("mm", [1.0, 2.6, 5.0, -1.0, -2.6])
def test_margin_matches_a_distance_transform(mm):
    labels = _blobs(seed=5, density=0.6)
    out = editing.margin(labels, spacing=ANISOTROPIC, label=2, mm=mm, locked=[3])
    mask = labels == 2
    expected = labels.copy()
    if mm > 0:
        distance = ndi.distance_transform_edt(~mask, sampling=ANISOTROPIC)
        expected[(distance <= mm) & ~mask & (labels != 3)] = 2
    else:
        distance = ndi.distance_transform_edt(mask, sampling=ANISOTROPIC)
        expected[mask & (distance <= -mm)] = 0
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, labels)


def test_margin_counts_millimetres_not_voxels():
    labels = np.zeros((15, 15, 15), np.uint8)
    labels[7, 7, 7] = 1
    out = editing.margin(labels, spacing=(1.0, 1.0, 3.0), label=1, mm=3.0)
    line_x, line_z = out[:, 7, 7], out[7, 7, :]
    assert line_x.sum() == 7 and line_z.sum() == 3  # 3 voxels each way along x, 1 along z
    shrunk = editing.margin(out, spacing=(1.0, 1.0, 3.0), label=1, mm=-1.0)
    assert shrunk.sum() < out.sum() and shrunk[7, 7, 7] == 1


def test_smooth_matches_a_gaussian_and_keeps_other_labels():
    labels = _blobs(seed=6, density=0.7)
    sigma_mm = 1.2
    out = editing.smooth(labels, spacing=ANISOTROPIC, label=1, mm=sigma_mm)
    mask = labels == 1
    blurred = ndi.gaussian_filter(mask.astype(np.float32), [sigma_mm / s for s in ANISOTROPIC], mode="nearest")
    expected = labels.copy()
    expected[mask & (blurred < 0.5)] = 0
    expected[(blurred >= 0.5) & (labels == 0)] = 1
    np.testing.assert_array_equal(out, expected)
    other = (labels != 0) & (labels != 1)
    np.testing.assert_array_equal(out[other], labels[other])  # other labels are never overwritten


def test_smooth_removes_a_spike_and_fills_a_dent():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    labels[15, 10, 10] = 1  # a one-voxel spike
    labels[10, 10, 5] = 0  # a one-voxel dent
    out = editing.smooth(labels, spacing=(1, 1, 1), label=1, mm=1.0)
    assert out[15, 10, 10] == 0 and out[10, 10, 5] == 1 and out[10, 10, 10] == 1


@pytest.mark.parametrize(
    ("kernel", "mm", "code"),
    [(editing.margin, 0, "bad_mm"), (editing.margin, math.inf, "bad_mm"), (editing.smooth, -1, "bad_mm")],
)
def test_margin_and_smooth_refuse_bad_millimetres(kernel, mm, code):
    with pytest.raises(EditRefused) as refused:
        kernel(np.ones((3, 3, 3), np.uint8), spacing=(1, 1, 1), label=1, mm=mm)
    assert refused.value.code == code


# --------------------------------------------------------------------------- interpolate


def test_interpolation_of_two_discs_is_the_disc_between():
    """A disc of radius 10 on slice 0 and 20 on slice 10 gives radius 15 on slice 5 (hand-checkable)."""
    shape = (61, 61, 11)
    x, y = np.indices(shape[:2])
    r = np.hypot(x - 30, y - 30)
    labels = np.zeros(shape, np.uint8)
    labels[..., 0][r <= 10] = 1
    labels[..., 10][r <= 20] = 1
    out = editing.interpolate(labels, spacing=(1, 1, 1), label=1, axis=2)
    np.testing.assert_array_equal(out[..., 5] == 1, r <= 15)
    radii = [math.sqrt((out[..., k] == 1).sum() / math.pi) for k in range(11)]
    np.testing.assert_allclose(radii, np.linspace(10, 20, 11), atol=0.5)
    np.testing.assert_array_equal(out[..., [0, 10]], labels[..., [0, 10]])  # the drawn slices stay


def test_interpolation_along_another_axis_with_anisotropic_voxels():
    spacing = (3.0, 0.5, 1.0)  # slices along axis 0, 3 mm apart; in-plane 0.5 x 1 mm
    shape = (5, 81, 41)
    y, z = np.indices(shape[1:])
    ellipse = lambda a: np.hypot((y - 40) * 0.5, (z - 20) * 1.0) <= a  # noqa: E731 (radius in mm)
    labels = np.zeros(shape, np.uint8)
    labels[0][ellipse(6)] = 2
    labels[4][ellipse(14)] = 2
    labels[2, 40, 0:3] = 3  # another label, locked: kept
    out = editing.interpolate(labels, spacing=spacing, label=2, axis=0, locked=[3])
    expected = ellipse(10) & (labels[2] != 3)
    wrong = (out[2] == 2) != expected
    assert wrong.sum() <= 8  # on the outline only: within half the coarser in-plane voxel of 10 mm
    assert np.all(np.abs(np.hypot((y - 40) * 0.5, (z - 20) * 1.0)[wrong] - 10) <= 0.5)
    assert (out[2] == 3).sum() == 3 and (out[1] == 2).sum() > (out[0] == 2).sum()


def test_interpolation_fills_only_between_drawn_slices_and_overwrites_unlocked_labels():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[2:7, 2:7, 2] = 1
    labels[2:7, 2:7, 6] = 1
    labels[4, 4, 4] = 2  # unlocked: the fill takes it
    out = editing.interpolate(labels, spacing=(1, 1, 1), label=1, axis=2)
    assert (out[..., 3:6] == 1).sum() == 75 and out[4, 4, 4] == 1
    np.testing.assert_array_equal(out[..., [0, 1, 7, 8]], labels[..., [0, 1, 7, 8]])


def test_interpolation_needs_two_drawn_slices():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1:3, 1:3, 2] = 1
    with pytest.raises(EditRefused) as refused:
        editing.interpolate(labels, spacing=(1, 1, 1), label=1, axis=2)
    assert refused.value.code == "too_few_slices"
    with pytest.raises(EditRefused) as refused:
        editing.interpolate(labels, spacing=(1, 1, 1), label=1, axis=3)
    assert refused.value.code == "bad_axis"


# --------------------------------------------------------------------------- grow from seeds


@pytest.mark.parametrize("seed", range(3))
def test_geodesic_sweep_equals_skimage_mcp(seed):
    rng = np.random.default_rng(seed)
    cost = ndi.gaussian_filter(rng.random((24, 20, 14)), 1.0).astype(np.float32) * 5 + 0.1
    cost[10:14, :, :7] = np.inf  # a wall with a way around
    seeds = np.zeros(cost.shape, np.uint8)
    for value in (1, 2, 3):
        for _ in range(3):
            seeds[tuple(rng.integers(0, n) for n in cost.shape)] = value
    seeds[np.isinf(cost)] = 0
    grown, distance = editing.geodesic_sweep(cost, seeds, ANISOTROPIC, exact=True)
    mcp = MCP_Geometric(cost.astype(np.float64), fully_connected=False, sampling=ANISOTROPIC)
    expected = np.full(cost.shape, np.inf)
    winner = np.zeros(cost.shape, np.uint8)
    for value in (1, 2, 3):
        costs, _ = mcp.find_costs([tuple(p) for p in np.argwhere(seeds == value)])
        better = costs < expected
        expected[better], winner[better] = costs[better], value
    reachable = np.isfinite(expected)
    np.testing.assert_allclose(distance[reachable], expected[reachable], rtol=1e-5)
    np.testing.assert_array_equal(grown[reachable], winner[reachable])
    assert np.all(np.isinf(distance[~reachable])) and np.all(grown[~reachable] == 0)
    fast, _ = editing.geodesic_sweep(cost, seeds, ANISOTROPIC)  # stops when no label changes
    assert np.mean(fast == grown) > 0.999


def _two_regions(shape=(40, 40, 30), seed=0, noise=0.15):
    """A bright ellipsoid in a dark background with noise and a smooth bias: (image, truth)."""
    rng = np.random.default_rng(seed)
    truth = _ball(shape, (20, 21, 15), 9.0, (1.0, 1.2, 1.0))
    bias = 1 + 0.2 * np.linspace(-1, 1, shape[0])[:, None, None]
    image = (truth * 1.0 + 0.2) * bias + rng.normal(0, noise, shape)
    return image.astype(np.float32), truth


def _strokes(truth, outside_value=2, inside_value=1):
    seeds = np.zeros(truth.shape, np.uint8)
    z = truth.shape[2] // 2
    seeds[16:25, 21, z] = inside_value  # a line inside
    seeds[20, 17:26, z - 3 : z + 4 : 3] = inside_value
    ring = ndi.binary_dilation(truth[..., z], iterations=4) & ~ndi.binary_dilation(truth[..., z], iterations=3)
    seeds[..., z][ring] = outside_value
    seeds[20, 21, [1, truth.shape[2] - 2]] = outside_value  # a dab above and below
    return seeds


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(("noise", "dice"), [(0.05, 0.97), (0.15, 0.95), (0.3, 0.9)])
def test_grow_from_seeds_finds_a_bright_region(noise, dice):
    image, truth = _two_regions(noise=noise)
    seeds = _strokes(truth)
    out = editing.grow_from_seeds(seeds, image, spacing=(1.0, 1.2, 1.0), roi=[(0, 40), (0, 40), (0, 30)])
    assert _dice(out == 1, truth) > dice
    assert np.all(out[seeds > 0] == seeds[seeds > 0])  # seeds never change
    assert set(np.unique(out)) == {1, 2}  # every unknown voxel of the region got a label


def test_grow_keeps_locked_labels_as_walls_and_clears_the_outside_value():
    image, truth = _two_regions(seed=1)
    seeds = _strokes(truth, outside_value=9)
    seeds[:, :, 20:] = np.where(seeds[:, :, 20:] == 0, 0, seeds[:, :, 20:])
    seeds[5:35, 5:35, 22] = 3  # a locked slab
    out = editing.grow_from_seeds(seeds, image, spacing=(1.0, 1.2, 1.0), locked=[3], outside=9)
    np.testing.assert_array_equal(out == 3, seeds == 3)
    assert not (out == 9).any()
    assert _dice(out == 1, truth & (np.arange(30) < 22)[None, None, :]) > 0.9


def test_grow_works_inside_its_region_only():
    image, truth = _two_regions(seed=2)
    seeds = _strokes(truth)
    box = editing.default_roi(seeds > 0)
    out = editing.grow_from_seeds(seeds, image, spacing=(1.0, 1.2, 1.0))
    outside_box = np.ones(seeds.shape, bool)
    outside_box[box] = False
    np.testing.assert_array_equal(out[outside_box], seeds[outside_box])
    assert (out[box] > 0).all()
    given = editing.grow_from_seeds(seeds, image, spacing=(1.0, 1.2, 1.0), roi=[(10, 30), (10, 30), (5, 25)])
    assert (given[10:30, 10:30, 5:25] > 0).all() and given[0:10].sum() == seeds[0:10].sum()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"roi": [(0, 5), (0, 5), (0, 50)]}, "bad_roi"),
        ({"roi": [(3, 3), (0, 5), (0, 5)]}, "bad_roi"),
        ({"locked": [2]}, "too_few_seed_labels"),
        ({"outside": 2, "locked": [2]}, "label_locked"),
    ],
)
def test_grow_refusals(kwargs, code):
    seeds = np.zeros((10, 10, 10), np.uint8)
    seeds[2, 2, 2], seeds[7, 7, 7] = 1, 2
    with pytest.raises(EditRefused) as refused:
        editing.grow_from_seeds(seeds, np.zeros(seeds.shape, np.float32), spacing=(1, 1, 1), **kwargs)
    assert refused.value.code == code
    one_label = np.where(seeds == 2, 0, seeds).astype(np.uint8)
    with pytest.raises(EditRefused):
        editing.grow_from_seeds(one_label, np.zeros(seeds.shape, np.float32), spacing=(1, 1, 1))


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_grow_from_seeds")


@pytest.mark.slow
def test_grow_from_seeds_on_a_simulated_scan(bench):
    """Simulated 2 mm subject (seed 21, neither a tuning nor a report subject of the bench), strokes
    as the bench paints them: measured Dice 0.84 on the ventricles and 0.97 on the lesion."""
    import simulation as sim

    anatomy = sim.mni152_anatomy(resolution=2)
    subject = sim.simulate_subject(anatomy, seed=21, n_lesions=4)
    found = {}
    for name, seeds, truth in bench.cases(subject, anatomy.spacing, 21)[:2]:
        out = editing.grow_from_seeds(seeds, subject.image, spacing=anatomy.spacing, outside=bench.OUTSIDE)
        found[name] = bench.score(out, truth)
        assert not (out == bench.OUTSIDE).any()
    assert found["ventricles"] > 0.8 and found["lesion"] > 0.9, found


# --------------------------------------------------------------------------- locked labels, every operation

OPERATIONS = {
    "islands remove_small": lambda labels, locked, image: editing.islands(
        labels, spacing=ANISOTROPIC, label=None, mode="remove_small", min_mm3=25, locked=locked
    ),
    "islands keep_largest": lambda labels, locked, image: editing.islands(
        labels, spacing=ANISOTROPIC, label=None, mode="keep_largest", locked=locked
    ),
    "margin +": lambda labels, locked, image: editing.margin(labels, spacing=ANISOTROPIC, label=1, mm=3, locked=locked),
    "margin -": lambda labels, locked, image: editing.margin(
        labels, spacing=ANISOTROPIC, label=1, mm=-2, locked=locked
    ),
    "smooth": lambda labels, locked, image: editing.smooth(labels, spacing=ANISOTROPIC, label=1, mm=2, locked=locked),
    "interpolate": lambda labels, locked, image: editing.interpolate(
        labels, spacing=ANISOTROPIC, label=1, axis=2, locked=locked
    ),
    "grow": lambda labels, locked, image: editing.grow_from_seeds(labels, image, spacing=ANISOTROPIC, locked=locked),
    "grow (a region)": lambda labels, locked, image: editing.grow_from_seeds(
        labels, image, spacing=ANISOTROPIC, locked=locked, roi=[(0, 20), (3, 20), (2, 16)]
    ),
}


@pytest.mark.parametrize("name", list(OPERATIONS))
@pytest.mark.parametrize("seed", range(4))
def test_locked_labels_never_change(name, seed):
    rng = np.random.default_rng(seed)
    labels = _blobs(seed=10 + seed, values=(1, 2, 3, 4), density=0.45)
    if name == "interpolate":
        labels[:, :, 1:15:4] = np.where(labels[:, :, 1:15:4] == 1, 0, labels[:, :, 1:15:4])  # gaps to fill
    if name.startswith("grow"):
        labels[rng.random(labels.shape) < 0.85] = 0  # sparse strokes
    image = ndi.gaussian_filter(rng.random(labels.shape), 1).astype(np.float32)
    out = OPERATIONS[name](labels, [2, 3], image)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    for value in (2, 3):
        np.testing.assert_array_equal(out == value, labels == value, err_msg=f"{name}: locked {value} changed")
    assert not np.array_equal(out, labels), f"{name} changed nothing: the check proves nothing"


def test_the_input_is_never_modified():
    labels = _blobs(seed=30)
    before = labels.copy()
    for name, operation in OPERATIONS.items():
        operation(labels, [], np.ones(labels.shape, np.float32))
        np.testing.assert_array_equal(labels, before, err_msg=name)


# --------------------------------------------------------------------------- the API

OCTET = "application/octet-stream"


@pytest.fixture
def api(world):
    from labeling.models import Assignment
    from tests import factories

    scan = factories.add_scan(world, shape=(12, 10, 8))
    own, corater = list(Assignment.objects.filter(scan=scan).order_by("annotator_id"))
    labels = factories.label_array()
    labels[10, 8, 6] = 1  # an island of one voxel
    return {"world": world, "scan": scan, "own": own, "corater": corater, "labels": labels}


def _post(api, user, operation, query, labels=None, *, affine=None):
    from tests import factories

    labels = api["labels"] if labels is None else labels
    body = factories.nifti_bytes(labels, factories.AFFINE if affine is None else affine)
    url = f"/api/v1/assignments/{api['own'].pk}/operations/{operation}/?{query}"
    return api["world"].client(user).post(url, body, content_type=OCTET)


def _labels_of(response) -> tuple[np.ndarray, np.ndarray]:
    image = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.django_db
def test_an_operation_answers_the_labels_on_the_same_grid_and_saves_nothing(api, stored_files):
    from labeling.models import AnnotationRevision

    files, revisions = stored_files(), AnnotationRevision.objects.count()
    response = _post(api, api["own"].annotator, "islands", "label=1&mode=remove_small&min_mm3=10")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/gzip"
    assert response["X-Changed-Voxels"] == "1"
    assert int(response["X-Operation-Ms"]) >= 0
    labels, affine = _labels_of(response)
    expected = api["labels"].copy()
    expected[10, 8, 6] = 0
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(affine, np.asarray(api["scan"].affine), atol=1e-5)
    assert labels.dtype == np.uint8
    assert AnnotationRevision.objects.count() == revisions and stored_files() == files


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("operation", "query"),
    [
        ("islands", "label=all&mode=keep_largest"),
        ("islands", "label=1&mode=keep_at&point=2,2,2"),
        ("margin", "label=1&mm=2.5&locked=2"),
        ("margin", "label=2&mm=-2"),
        ("smooth", "label=1&mm=1"),
        ("interpolate", "label=1&axis=2"),
        ("grow", "locked=3"),
        ("grow", "roi=0,12,0,10,0,8&channel=T1w"),
        ("grow", "outside=9"),
    ],
)
def test_every_operation_through_the_api_equals_the_kernel(api, operation, query):
    labels = api["labels"].copy()
    if operation == "interpolate":
        labels[:, :, 3] = 0  # label 1 on slices 2 and 4
    if operation == "grow":
        labels = np.zeros(labels.shape, np.uint8)
        labels[3, 3, 3], labels[8, 6, 4] = 1, 2
        if "outside" in query:
            labels[8, 6, 4] = 9
    response = _post(api, api["own"].annotator, operation, query, labels)
    assert response.status_code == 200, response.json()
    got, _ = _labels_of(response)
    scan = api["scan"]
    spacing = tuple(scan.spacing)
    params = dict(part.split("=") for part in query.split("&"))
    locked = [int(v) for v in params.get("locked", "").split(",") if v]
    if operation == "islands":
        label = None if params["label"] == "all" else int(params["label"])
        point = tuple(int(v) for v in params["point"].split(",")) if "point" in params else None
        expected = editing.islands(labels, spacing=spacing, label=label, mode=params["mode"], point=point)
    elif operation in ("margin", "smooth"):
        kernel = editing.margin if operation == "margin" else editing.smooth
        expected = kernel(labels, spacing=spacing, label=int(params["label"]), mm=float(params["mm"]), locked=locked)
    elif operation == "interpolate":
        expected = editing.interpolate(labels, spacing=spacing, label=1, axis=2)
    else:
        from tests import factories

        image = factories.image_array((12, 10, 8), 0)  # the scan's image (add_scan, seed 0)
        outside = 9 if "outside" in params else None
        roi = None
        if "roi" in params:
            bounds = [int(v) for v in params["roi"].split(",")]
            roi = list(zip(bounds[0::2], bounds[1::2], strict=True))
        expected = editing.grow_from_seeds(labels, image, spacing=spacing, locked=locked, outside=outside, roi=roi)
    np.testing.assert_array_equal(got, expected)
    assert int(response["X-Changed-Voxels"]) == editing.changed_voxels(labels, expected) > 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("own", 200),
        ("corater", 404),
        ("other", 404),
        ("lead", 200),
        ("siteadmin", 200),
        ("outsider", 404),
        ("anon", 401),
    ],
)
def test_who_may_run_an_operation(api, who, status):
    world = api["world"]
    users = {
        "own": api["own"].annotator,
        "corater": api["corater"].annotator,
        "other": next(
            u for u in world.annotators if u.pk not in (api["own"].annotator_id, api["corater"].annotator_id)
        ),
        "lead": world.lead,
        "siteadmin": world.site_admin,
        "outsider": world.outsider,
        "anon": None,
    }
    response = _post(api, users[who], "margin", "label=1&mm=2")
    assert response.status_code == status, getattr(response, "content", b"")[:300]
    if status >= 400:
        body = response.json()
        assert body["error"] and body["detail"]


@pytest.mark.django_db
def test_a_submitted_assignment_refuses_its_annotator_but_not_the_lead(api):
    from labeling import services
    from tests import factories

    own = api["own"]
    services.revision_create(
        assignment=own,
        actor=own.annotator,
        raw=factories.nifti_bytes(api["labels"], factories.AFFINE),
        base_revision_id=None,
    )
    services.assignment_submit(assignment=own, actor=own.annotator)
    refused = _post(api, own.annotator, "smooth", "label=1&mm=1")
    assert refused.status_code == 409 and refused.json()["error"] == "submitted"
    assert _post(api, api["world"].lead, "smooth", "label=1&mm=1").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("operation", "query", "code"),
    [
        ("islands", "label=7&mode=keep_largest", "bad_label"),
        ("islands", "label=one&mode=keep_largest", "bad_label"),
        ("islands", "label=1&mode=remove_small", "missing_min_mm3"),
        ("islands", "label=1&mode=remove_small&min_mm3=nan", "bad_min_mm3"),
        ("islands", "label=1&mode=keep_at&point=1,2", "bad_point"),
        ("islands", "label=1&mode=keep_at&point=0,0,0", "point_not_in_label"),
        ("islands", "label=1&mode=explode", "bad_mode"),
        ("islands", "label=1", "missing_mode"),
        ("margin", "label=1&mm=0", "bad_mm"),
        ("margin", "label=1&mm=1e999", "bad_mm"),
        ("margin", "label=1&mm=2&locked=1", "label_locked"),
        ("margin", "label=1&mm=2&locked=0", "bad_locked"),
        ("margin", "label=1&mm=2&locked=a", "bad_locked"),
        ("margin", "label=1&mm=2&size=3", "unknown_parameter"),
        ("margin", "label=%C2%B3&mm=2", "bad_label"),  # a superscript 3 is a digit to Python, not to us
        ("margin", "label=1&mm=2&locked=%D9%A3", "bad_locked"),  # an Arabic-Indic 3
        ("smooth", "label=all&mm=1", "bad_label"),
        ("interpolate", "label=1&axis=3", "bad_axis"),
        ("grow", "roi=0,12,0,10,0", "bad_roi"),
        ("grow", "roi=0,13,0,10,0,8", "bad_roi"),
        ("grow", "channel=FLAIR", "bad_channel"),
        ("grow", "outside=2", "bad_outside"),
        ("grow", "locked=1", "too_few_seed_labels"),
    ],
)
def test_bad_parameters_are_a_clear_400(api, operation, query, code):
    response = _post(api, api["own"].annotator, operation, query)
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["error"] == code and body["detail"], body


@pytest.mark.django_db
def test_a_label_map_off_the_scans_grid_or_schema_is_refused(api):
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[0, 3] = 10
    response = _post(api, api["own"].annotator, "margin", "label=1&mm=2", affine=shifted)
    assert response.status_code == 400 and response.json()["error"] == "affine_mismatch"
    labels = api["labels"].copy()
    labels[0, 0, 0] = 9  # not in the schema (only grow's outside value may be)
    response = _post(api, api["own"].annotator, "margin", "label=1&mm=2", labels)
    assert response.status_code == 400 and response.json()["error"] == "labels_outside_schema"


@pytest.mark.django_db
def test_interpolation_of_a_label_drawn_on_one_slice_is_a_clear_400(api):
    labels = np.zeros((12, 10, 8), np.uint8)
    labels[3:6, 3:6, 4] = 1
    response = _post(api, api["own"].annotator, "interpolate", "label=1&axis=2", labels)
    assert response.status_code == 400 and response.json()["error"] == "too_few_slices"
    assert "at least two" in response.json()["detail"]


@pytest.mark.django_db
def test_an_unknown_operation_is_not_found(api):
    response = _post(api, api["own"].annotator, "explode", "label=1")
    assert response.status_code == 404 and response.json()["error"] == "unknown_operation"
    assert "islands" in response.json()["detail"]


@pytest.mark.django_db
def test_grow_reads_another_sequence_of_the_scan(api):
    from labeling import services
    from tests import factories

    project = api["world"].project
    services.project_update(project=project, actor=api["world"].lead, channels=["T1w", "FLAIR"])
    scan = type(api["scan"]).objects.get(pk=api["scan"].pk)  # with the project as updated
    flair = np.zeros((12, 10, 8), np.float32)
    flair[:6] = 100.0  # a sharp edge between x=5 and x=6, which the T1w image does not have
    services.scan_channel_add(
        scan=scan, actor=api["world"].lead, raw=factories.nifti_bytes(flair, factories.AFFINE), role="FLAIR"
    )
    seeds = np.zeros((12, 10, 8), np.uint8)
    seeds[1, :, :] = 1
    seeds[10, :, :] = 2
    response = _post(api, api["own"].annotator, "grow", "channel=FLAIR&roi=0,12,0,10,0,8", seeds)
    assert response.status_code == 200, response.json()
    got, _ = _labels_of(response)
    assert (got[:6] == 1).all() and (got[6:] == 2).all()
