"""Tests for consensus.agreement (pure: no database).

Four kinds: hand-checkable arrays with the expected value inline, outside
oracles (MONAI 1.6, scikit-learn, statsmodels, krippendorff), invariants, and
edge cases. Volumes are small so the module runs in a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from consensus import agreement as ag

ANISO = (0.8, 1.0, 2.5)


def _cube(shape=(10, 10, 12), lo=(2, 2, 2), size=4):
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def _blob(seed, shape=(40, 36, 24), sigma=3.0, level=0.0):
    """Smooth random blob (thresholded Gaussian-filtered noise), seeded."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


def _perturb(mask, seed, amount=1.6):
    """Flip a few smooth patches of ``mask``: a second rater's version of it."""
    return mask ^ _blob(seed + 1000, mask.shape, sigma=2.0, level=amount)


def _label_panel(seed, n_raters=4, shape=(30, 28, 20), n_labels=3, noise=0.4):
    """(R, X, Y, Z) uint8 label maps: a smooth truth plus per-rater smooth noise."""
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.standard_normal((n_labels + 1, *shape)), (0, 3, 3, 3))
    truth /= truth.std()
    truth[0] += 0.5  # a little more background
    maps = []
    for _ in range(n_raters):
        jitter = ndimage.gaussian_filter(rng.standard_normal(truth.shape), (0, 1.5, 1.5, 1.5))
        noisy = truth + noise * jitter / jitter.std()
        maps.append(np.argmax(noisy, axis=0).astype(np.uint8))
    return np.stack(maps)


# --------------------------------------------------------------------------- #
# Hand-checkable arrays
# --------------------------------------------------------------------------- #
def test_overlap_of_two_cubes_offset_by_two_voxels():
    a = _cube()
    b = np.roll(a, 2, axis=0)  # 4^3 cubes overlapping in 2 x 4 x 4 = 32 voxels
    assert ag.dice(a, b) == pytest.approx(2 * 32 / (64 + 64))  # 0.5
    assert ag.jaccard(a, b) == pytest.approx(32 / 96)  # 1/3


def test_surface_distances_of_two_cubes_offset_along_the_coarse_axis():
    # Two 4^3 cubes, the second 2 voxels further along z, spacing (0.8, 1.0, 2.5).
    # Each cube has 56 surface voxels. From A to B's surface:
    #   z = 2 face (16 voxels): 2 slices below B's bottom face -> 5.0 mm
    #   z = 3 rim  (12 voxels): 1 slice below                  -> 2.5 mm
    #   z = 4 rim  (12) and z = 5 rim (12): on B's surface     -> 0
    #   z = 5 face centre (4 voxels): inside B, nearest B surface is the x rim -> 0.8 mm
    # and the same from B to A by symmetry.
    a = _cube()
    b = np.roll(a, 2, axis=2)
    assert ag.hausdorff95(a, b, spacing=ANISO) == pytest.approx(5.0)
    assert ag.assd(a, b, spacing=ANISO) == pytest.approx((16 * 5.0 + 12 * 2.5 + 4 * 0.8) / 56)
    assert ag.surface_dice(a, b, spacing=ANISO, tolerance=2.0) == pytest.approx(28 / 56)
    assert ag.surface_dice(a, b, spacing=ANISO, tolerance=2.5) == pytest.approx(40 / 56)  # d <= tau counts


def test_spacing_scales_distances_along_its_own_axis():
    a = _cube()
    # 3 voxels along x: HD is 3 * 0.8 mm, not 3 mm or 3 * 2.5 mm.
    assert ag.hausdorff95(a, np.roll(a, 3, axis=0), spacing=ANISO) == pytest.approx(2.4)
    assert ag.hausdorff95(a, np.roll(a, 3, axis=1), spacing=ANISO) == pytest.approx(3.0)
    assert ag.hausdorff95(a, np.roll(a, 3, axis=2), spacing=ANISO) == pytest.approx(7.5)


def test_cohen_kappa_by_hand():
    a = np.array([0, 0, 1, 1]).reshape(1, 1, 4)
    b = np.array([0, 1, 1, 1]).reshape(1, 1, 4)
    # p_o = 3/4, p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> kappa = 1/2
    assert ag.cohen_kappa(a, b) == pytest.approx(0.5)
    # restricted to the last three voxels: p_o = 2/3, p_e = 1/3 * 0 + 2/3 * 1 = 2/3 -> 0
    assert ag.cohen_kappa(a, b, mask=np.array([0, 1, 1, 1], bool).reshape(1, 1, 4)) == pytest.approx(0.0)


def test_fleiss_and_alpha_by_hand():
    # 3 raters, 4 voxels; per-voxel counts (n0, n1): (3,0), (2,1), (0,3), (0,3).
    s = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]).reshape(3, 1, 1, 4)
    p_bar = (1 + 1 / 3 + 1 + 1) / 4
    p_e = (5 / 12) ** 2 + (7 / 12) ** 2
    assert ag.fleiss_kappa(s) == pytest.approx((p_bar - p_e) / (1 - p_e))
    # alpha: n = 12 values, o_01 + o_10 = 2 * (2 * 1) / 2 = 2, n_0 n_1 = 35
    assert ag.krippendorff_alpha(s) == pytest.approx(1 - (12 - 1) * 2 / (2 * 35))


# --------------------------------------------------------------------------- #
# Outside oracles
# --------------------------------------------------------------------------- #
def _monai_figures(a, b, spacing, tolerance):
    """MONAI 1.6 metric classes on one (pred=a, gt=b) pair of binary masks."""
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    yp = torch.as_tensor(a[None, None].astype(np.float32))
    y = torch.as_tensor(b[None, None].astype(np.float32))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": metrics.DiceMetric(include_background=True)(yp, y).item(),
            "hausdorff95": metrics.HausdorffDistanceMetric(include_background=True, percentile=95)(
                yp, y, spacing=sp
            ).item(),
            "assd": metrics.SurfaceDistanceMetric(include_background=True, symmetric=True)(yp, y, spacing=sp).item(),
            "surface_dice": metrics.SurfaceDiceMetric([tolerance], include_background=True)(yp, y, spacing=sp).item(),
        }


def _ours(a, b, spacing, tolerance):
    return {
        "dice": ag.dice(a, b),
        "hausdorff95": ag.hausdorff95(a, b, spacing=spacing),
        "assd": ag.assd(a, b, spacing=spacing),
        "surface_dice": ag.surface_dice(a, b, spacing=spacing, tolerance=tolerance),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_surface_metrics_match_monai_on_blobs_with_anisotropic_spacing(seed):
    """Oracle: MONAI 1.6.1 DiceMetric, HausdorffDistanceMetric(percentile=95),
    SurfaceDistanceMetric(symmetric=True), SurfaceDiceMetric (edge voxels)."""
    a = _blob(seed)
    b = _perturb(a, seed)
    expected = _monai_figures(a, b, ANISO, 2.0)
    got = _ours(a, b, ANISO, 2.0)
    assert got["hausdorff95"] > 0 and got["surface_dice"] < 1  # not a trivial pair
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


def test_surface_metrics_match_monai_for_masks_touching_the_array_border():
    """The array border counts as background for the surface (MONAI pads, we pad)."""
    a = _blob(7, shape=(24, 20, 16), sigma=2.5, level=-0.3)
    b = _perturb(a, 7)
    assert a[0].any() and a[:, :, -1].any()
    expected = _monai_figures(a, b, (1.2, 0.9, 3.0), 3.0)
    got = _ours(a, b, (1.2, 0.9, 3.0), 3.0)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


def test_far_surface_voxels_beyond_the_search_band_match_monai():
    """Voxels ~30 mm from the other surface are answered by the KD-tree fallback."""
    a = np.zeros((60, 40, 24), bool)
    a[5:20, 5:20, 5:15] = True
    b = a.copy()
    b[50:53, 30:33, 18:20] = True  # a far-away island in b only
    b[8:12, 8:12, 15] = True  # and a bump
    expected = _monai_figures(a, b, ANISO, 2.0)
    got = _ours(a, b, ANISO, 2.0)
    _, d_ba = ag._surface_distances(a, b, ANISO)
    assert d_ba.max() > 2 * ag._band(ANISO)[1].max()  # well beyond the band
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize(
    ("band_offsets", "block"),
    [(6, 1 << 20), (2048, 0), (2048, 1 << 40), (30, 0)],
    ids=["tiny band: KD-tree", "one offset shell at a time", "all offsets in one gather", "tiny band, shells"],
)
def test_search_strategies_give_identical_distances(monkeypatch, band_offsets, block):
    a, b = _blob(13), _perturb(_blob(13), 13)
    reference = _ours(a, b, ANISO, 2.0)
    monkeypatch.setattr(ag, "_BAND_OFFSETS", band_offsets)
    monkeypatch.setattr(ag, "_BLOCK", block)
    ag._band.cache_clear()
    try:
        got = _ours(a, b, ANISO, 2.0)
    finally:
        ag._band.cache_clear()
    assert got == reference


def test_two_dimensional_masks_match_monai():
    a = _blob(15, shape=(60, 50))
    b = _perturb(a, 15)
    expected = _monai_figures(a, b, (0.7, 1.3), 2.0)
    got = _ours(a, b, (0.7, 1.3), 2.0)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize("use_mask", [False, True])
def test_cohen_kappa_matches_sklearn(use_mask):
    """Oracle: sklearn.metrics.cohen_kappa_score on the flattened (masked) maps."""
    cohen_kappa_score = pytest.importorskip("sklearn.metrics").cohen_kappa_score
    panel = _label_panel(3, n_raters=2)
    mask = _blob(5, panel.shape[1:]) if use_mask else None
    sel = mask if use_mask else np.ones(panel.shape[1:], bool)
    expected = cohen_kappa_score(panel[0][sel], panel[1][sel])
    got = ag.cohen_kappa(panel[0], panel[1], mask=mask)
    assert 0.2 < got < 0.95
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("use_mask", [False, True])
def test_fleiss_kappa_matches_statsmodels(use_mask):
    """Oracle: statsmodels.stats.inter_rater.fleiss_kappa(aggregate_raters(...))."""
    ir = pytest.importorskip("statsmodels.stats.inter_rater")
    panel = _label_panel(4, n_raters=5)
    mask = _blob(6, panel.shape[1:]) if use_mask else None
    sel = mask if use_mask else np.ones(panel.shape[1:], bool)
    table, _ = ir.aggregate_raters(panel[:, sel].T)
    expected = ir.fleiss_kappa(table, method="fleiss")
    got = ag.fleiss_kappa(panel, mask=mask)
    assert 0.2 < got < 0.95
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("use_mask", [False, True])
def test_krippendorff_alpha_matches_the_krippendorff_package(use_mask):
    """Oracle: krippendorff.alpha(reliability_data, level_of_measurement="nominal")."""
    krippendorff = pytest.importorskip("krippendorff")
    panel = _label_panel(5, n_raters=4)
    mask = _blob(8, panel.shape[1:]) if use_mask else None
    sel = mask if use_mask else np.ones(panel.shape[1:], bool)
    expected = krippendorff.alpha(reliability_data=panel[:, sel].astype(float), level_of_measurement="nominal")
    got = ag.krippendorff_alpha(panel, mask=mask)
    assert 0.2 < got < 0.95
    assert got == pytest.approx(expected, rel=1e-9)


def test_report_pairs_match_monai_and_overall_matches_statsmodels():
    """End to end: every pair figure against MONAI, every overall figure against statsmodels."""
    ir = pytest.importorskip("statsmodels.stats.inter_rater")
    panel = _label_panel(9, n_raters=3)
    rep = ag.agreement_report(panel, spacing=ANISO, tolerance=1.5)
    assert rep.labels == (1, 2, 3)
    assert len(rep.pairs) == 3 * 3
    for p in rep.pairs:
        a, b = panel[p["rater_a"]] == p["label"], panel[p["rater_b"]] == p["label"]
        expected = _monai_figures(a, b, ANISO, 1.5)
        assert p["jaccard"] == pytest.approx(expected["dice"] / (2 - expected["dice"]), rel=1e-4)
        for key, value in expected.items():
            assert p[key] == pytest.approx(value, rel=1e-4), (p["label"], p["rater_a"], p["rater_b"], key)
    for lab in (1, 2, 3):
        table, _ = ir.aggregate_raters((panel == lab).reshape(3, -1).T)
        assert rep.overall[lab]["fleiss_kappa"] == pytest.approx(ir.fleiss_kappa(table), rel=1e-9)
    table, _ = ir.aggregate_raters(panel.reshape(3, -1).T)
    assert rep.overall["all"]["fleiss_kappa"] == pytest.approx(ir.fleiss_kappa(table), rel=1e-9)


# --------------------------------------------------------------------------- #
# Report: consistency with the single functions
# --------------------------------------------------------------------------- #
def _check_report_against_functions(panel, rep, spacing, tolerance, mask=None):
    for p in rep.pairs:
        a, b = panel[p["rater_a"]] == p["label"], panel[p["rater_b"]] == p["label"]
        for key, value in _ours(a, b, spacing, tolerance).items():
            assert p[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
        assert p["jaccard"] == pytest.approx(ag.jaccard(a, b), nan_ok=True)
    for lab in rep.labels:
        binary = (panel == lab).astype(np.uint8)
        assert rep.overall[lab]["fleiss_kappa"] == pytest.approx(ag.fleiss_kappa(binary, mask=mask), nan_ok=True)
        assert rep.overall[lab]["krippendorff_alpha"] == pytest.approx(
            ag.krippendorff_alpha(binary, mask=mask), nan_ok=True
        )
    assert rep.overall["all"]["fleiss_kappa"] == pytest.approx(ag.fleiss_kappa(panel, mask=mask))
    assert rep.overall["all"]["krippendorff_alpha"] == pytest.approx(ag.krippendorff_alpha(panel, mask=mask))


@pytest.mark.parametrize("use_mask", [False, True])
def test_report_equals_the_single_functions_with_a_margin_of_background(use_mask):
    panel = np.zeros((4, 44, 40, 30), np.uint8)
    panel[:, 5:35, 6:34, 4:24] = _label_panel(12, n_raters=4)  # background around: exercises the crop
    mask = None
    if use_mask:
        mask = np.zeros(panel.shape[1:], bool)
        mask[3:40, 3:38, 2:28] = True
    rep = ag.agreement_report(panel, spacing=ANISO, tolerance=2.0, mask=mask)
    assert rep.kappa_voxels == (int(mask.sum()) if use_mask else 44 * 40 * 30)
    _check_report_against_functions(panel, rep, ANISO, 2.0, mask=mask)


def test_report_volumes_are_millilitres_per_rater_and_label():
    panel = np.zeros((2, 10, 10, 10), np.uint8)
    panel[0, :5] = 1  # 500 voxels
    panel[1, :2] = 2  # 200 voxels
    rep = ag.agreement_report(panel, spacing=(2.0, 1.0, 0.5))  # 1 mm^3 per voxel
    assert rep.volumes == [
        {"rater": 0, "label": 1, "ml": pytest.approx(0.5)},
        {"rater": 0, "label": 2, "ml": 0.0},
        {"rater": 1, "label": 1, "ml": 0.0},
        {"rater": 1, "label": 2, "ml": pytest.approx(0.2)},
    ]


def test_report_pairwise_table_fallback_equals_joint_histogram(monkeypatch):
    """Many raters x categories use one pass per pair; same figures."""
    panel = _label_panel(13, n_raters=3)
    joint = ag.agreement_report(panel, spacing=ANISO)
    monkeypatch.setattr(ag, "_JOINT_MAX_BINS", 1)
    pairwise = ag.agreement_report(panel, spacing=ANISO)
    assert pairwise.to_dict() == joint.to_dict()


def test_report_accepts_large_and_negative_label_values():
    panel = _label_panel(14, n_raters=3).astype(np.int32)
    remapped = np.choose(panel, [-7, 1000, 2000, 5000]).astype(np.int32)
    a = ag.agreement_report(panel, spacing=1.0)
    b = ag.agreement_report(remapped, spacing=1.0, labels=[1000, 2000, 5000])
    assert [p["dice"] for p in a.pairs] == pytest.approx([p["dice"] for p in b.pairs])
    assert [p["assd"] for p in a.pairs] == pytest.approx([p["assd"] for p in b.pairs])
    assert a.overall["all"]["fleiss_kappa"] == pytest.approx(b.overall["all"]["fleiss_kappa"])
    # -7 plays background only for the "all" figure; each label is binary anyway.
    assert b.overall[1000]["fleiss_kappa"] == pytest.approx(a.overall[1]["fleiss_kappa"])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16, np.float32])
def test_label_map_dtype_does_not_change_the_figures(dtype):
    panel = _label_panel(16, n_raters=3)
    reference = ag.agreement_report(panel, spacing=ANISO).to_dict()
    assert ag.agreement_report(panel.astype(dtype), spacing=ANISO).to_dict() == reference
    assert ag.cohen_kappa(panel[0].astype(dtype), panel[1].astype(dtype)) == pytest.approx(
        ag.cohen_kappa(panel[0], panel[1]), rel=1e-12
    )


# --------------------------------------------------------------------------- #
# Invariants
# --------------------------------------------------------------------------- #
def test_pair_metrics_are_symmetric():
    a, b = _blob(21), _perturb(_blob(21), 21)
    assert ag.dice(a, b) == ag.dice(b, a)
    assert ag.jaccard(a, b) == ag.jaccard(b, a)
    assert ag.hausdorff95(a, b, spacing=ANISO) == ag.hausdorff95(b, a, spacing=ANISO)
    assert ag.assd(a, b, spacing=ANISO) == pytest.approx(ag.assd(b, a, spacing=ANISO), rel=1e-12)
    assert ag.surface_dice(a, b, spacing=ANISO, tolerance=2) == ag.surface_dice(b, a, spacing=ANISO, tolerance=2)
    assert ag.cohen_kappa(a, b) == pytest.approx(ag.cohen_kappa(b, a), rel=1e-12)


def test_identical_raters_agree_perfectly():
    one = _label_panel(22, n_raters=1)[0]
    panel = np.stack([one, one, one])
    rep = ag.agreement_report(panel, spacing=ANISO)
    assert rep.pairs and all(p["empty"] is None for p in rep.pairs)
    for p in rep.pairs:
        assert (p["dice"], p["jaccard"], p["hausdorff95"], p["assd"], p["surface_dice"]) == (1, 1, 0, 0, 1)
    for figures in rep.overall.values():
        assert figures == {"fleiss_kappa": pytest.approx(1.0), "krippendorff_alpha": pytest.approx(1.0)}
    assert ag.cohen_kappa(one, one) == pytest.approx(1.0)


def test_rater_order_does_not_change_overall_figures_and_permutes_pairs():
    panel = _label_panel(23, n_raters=4)
    order = [2, 0, 3, 1]
    rep = ag.agreement_report(panel, spacing=ANISO)
    perm = ag.agreement_report(panel[order], spacing=ANISO)
    for key in rep.overall:
        for name in ("fleiss_kappa", "krippendorff_alpha"):
            assert perm.overall[key][name] == pytest.approx(rep.overall[key][name], rel=1e-12)
    original = {(p["label"], frozenset((p["rater_a"], p["rater_b"]))): p for p in rep.pairs}
    for p in perm.pairs:
        q = original[p["label"], frozenset((order[p["rater_a"]], order[p["rater_b"]]))]
        for key in ("dice", "hausdorff95", "assd", "surface_dice"):
            assert p[key] == pytest.approx(q[key], rel=1e-9)


def test_inputs_are_not_modified_and_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    panel = _label_panel(24, n_raters=3)
    before = panel.copy()
    rep = ag.agreement_report(panel, spacing=ANISO)
    ag.fleiss_kappa(panel)
    ag.hausdorff95(panel[0] == 1, panel[1] == 1, spacing=ANISO)
    np.testing.assert_array_equal(panel, before)
    from_tensor = ag.agreement_report(torch.from_numpy(panel), spacing=ANISO)
    assert from_tensor.to_dict() == rep.to_dict()
    assert ag.dice(torch.from_numpy(panel[0] == 2), panel[1] == 2) == ag.dice(panel[0] == 2, panel[1] == 2)


# --------------------------------------------------------------------------- #
# Edge cases
# --------------------------------------------------------------------------- #
def test_both_masks_empty_gives_nan_everywhere():
    z = np.zeros((6, 6, 6), bool)
    assert math.isnan(ag.dice(z, z)) and math.isnan(ag.jaccard(z, z))
    assert math.isnan(ag.hausdorff95(z, z, spacing=1.0))
    assert math.isnan(ag.assd(z, z, spacing=1.0))
    assert math.isnan(ag.surface_dice(z, z, spacing=1.0, tolerance=1.0))


@pytest.mark.parametrize("empty_first", [True, False])
def test_one_mask_empty(empty_first):
    z, c = np.zeros((8, 8, 8), bool), _cube((8, 8, 8), size=3)
    a, b = (z, c) if empty_first else (c, z)
    assert ag.dice(a, b) == 0.0 and ag.jaccard(a, b) == 0.0
    assert ag.hausdorff95(a, b, spacing=ANISO) == math.inf  # MONAI 1.6 says nan here
    assert ag.assd(a, b, spacing=ANISO) == math.inf
    assert ag.surface_dice(a, b, spacing=ANISO, tolerance=2.0) == 0.0


def test_report_flags_empty_raters_and_absent_labels():
    panel = np.zeros((3, 12, 12, 12), np.uint8)
    panel[0, 2:8, 2:8, 2:8] = 1
    panel[1, 3:9, 2:8, 2:8] = 1  # rater 2 drew nothing
    rep = ag.agreement_report(panel, spacing=1.0, labels=[1, 4])
    by = {(p["label"], p["rater_a"], p["rater_b"]): p for p in rep.pairs}
    assert by[1, 0, 1]["empty"] is None and by[1, 0, 1]["hausdorff95"] == pytest.approx(1.0)
    assert by[1, 0, 2]["empty"] == "rater_b"
    assert by[1, 0, 2]["dice"] == 0 and by[1, 0, 2]["hausdorff95"] == math.inf
    assert by[1, 0, 2]["assd"] == math.inf and by[1, 0, 2]["surface_dice"] == 0
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        p = by[4, i, j]
        assert p["empty"] == "both"
        assert all(math.isnan(p[k]) for k in ("dice", "jaccard", "hausdorff95", "assd", "surface_dice"))
    assert math.isnan(rep.overall[4]["fleiss_kappa"])  # label 4 absent: one category
    assert rep.overall[1]["fleiss_kappa"] < 1


def test_to_dict_is_strict_json_and_names_non_finite_figures():
    panel = np.zeros((2, 8, 8, 8), np.uint8)
    panel[0, 2:5, 2:5, 2:5] = 1
    rep = ag.agreement_report(panel, spacing=1.0, labels=[1, 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.pairs = []
    out = rep.to_dict()
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    p1, p2 = back["pairs"]
    assert p1["empty"] == "rater_b" and p1["hausdorff95"] is None and p1["dice"] == 0.0
    assert p1["nonfinite"] == {"hausdorff95": "inf", "assd": "inf"}
    assert p2["empty"] == "both" and p2["nonfinite"] == {k: "nan" for k in ag._PAIR_METRICS}
    assert set(back["overall"]) == {"1", "2", "all"}
    assert back["overall"]["2"] == {
        "fleiss_kappa": None,
        "krippendorff_alpha": None,
        "nonfinite": {"fleiss_kappa": "nan", "krippendorff_alpha": "nan"},
    }
    assert back["spacing_mm"] == [1.0, 1.0, 1.0] and back["tolerance_mm"] == 2.0


def test_one_rater_has_no_pairwise_figures():
    panel = _label_panel(25, n_raters=1)
    with pytest.raises(ValueError, match="at least 2"):
        ag.fleiss_kappa(panel)
    with pytest.raises(ValueError, match="at least 2"):
        ag.krippendorff_alpha(panel)
    rep = ag.agreement_report(panel, spacing=1.0)
    assert rep.pairs == [] and rep.n_raters == 1
    assert all(math.isnan(v) for fig in rep.overall.values() for v in fig.values())
    assert len(rep.volumes) == len(rep.labels) == 3
    json.dumps(rep.to_dict(), allow_nan=False)


def test_a_single_category_gives_nan_kappa():
    ones = np.ones((2, 3, 3, 3), np.uint8)
    assert math.isnan(ag.cohen_kappa(ones[0], ones[1]))
    assert math.isnan(ag.fleiss_kappa(ones))
    assert math.isnan(ag.krippendorff_alpha(ones))
    # Two raters each using one, different, category: p_e = 0, kappa = 0 (sklearn agrees).
    assert ag.cohen_kappa(ones[0], 2 * ones[1]) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ag.dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 4))), "b: shape"),
        (lambda: ag.hausdorff95(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1, 1)), "spacing: expected 3"),
        (lambda: ag.assd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1, 0, 1)), "spacing: values"),
        (lambda: ag.assd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=None), "spacing: required"),
        (lambda: ag.surface_dice(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=1, tolerance=-1), "tolerance"),
        (lambda: ag.hausdorff95(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)), spacing=1), "3-D"),
        (lambda: ag.fleiss_kappa(np.zeros((2, 3, 3, 3)), mask=np.zeros((3, 3), bool)), "mask: shape"),
        (lambda: ag.cohen_kappa(np.zeros((3, 3)), np.zeros((3, 3)), mask=np.zeros((3, 3), bool)), "no voxel"),
        (lambda: ag.agreement_report(np.zeros((2, 3, 3)), spacing=1), r"\(R, X, Y, Z\)"),
        (lambda: ag.agreement_report(np.zeros((2, 3, 3, 3), int), spacing=1, labels=[1, 1]), "duplicates"),
    ],
)
def test_invalid_arguments_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
