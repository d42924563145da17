"""Tests for simulation.panels (pure: no database, no Django). All data SIMULATED.

Kinds of test: the design draw (reproducible, in range, the scenarios it promises),
hand-made truths with anisotropic spacing (boundary shifts in mm, degenerate raters),
and one small design simulated twice (bit-reproducible).
"""

from __future__ import annotations

import numpy as np
import pytest

from simulation import panels as rp

SPACING = (1.0, 1.5, 3.0)


def sphere(radius_mm: float, spacing=SPACING, shape=(41, 27, 13), value: int = 1) -> np.ndarray:
    """A ball of ``value`` (radius in mm) centred on the middle voxel of a volume."""
    grids = np.meshgrid(
        *[(np.arange(n) - n // 2) * s for n, s in zip(shape, spacing, strict=True)],
        indexing="ij",
    )
    truth = np.zeros(shape, dtype=np.uint8)
    truth[sum(g**2 for g in grids) <= radius_mm**2] = value
    return truth


def half_extents_mm(mask: np.ndarray, spacing=SPACING) -> np.ndarray:
    """Half the extent of the mask along each axis, on the lines through the middle voxel
    (voxel count x spacing / 2, so a boundary half a voxel beyond the last centre)."""
    c = [n // 2 for n in mask.shape]
    lines = (mask[:, c[1], c[2]], mask[c[0], :, c[2]], mask[c[0], c[1], :])
    return np.array([line.sum() * s / 2 for line, s in zip(lines, spacing, strict=True)])


def equivalent_radius_mm(mask: np.ndarray, spacing=SPACING) -> float:
    return float((3 * mask.sum() * np.prod(spacing) / (4 * np.pi)) ** (1 / 3))


def test_draw_designs_is_reproducible_and_depends_on_the_seed():
    a = rp.draw_designs(30, seed=7)
    assert a == rp.draw_designs(30, seed=7)
    assert a[:10] == rp.draw_designs(10, seed=7)  # design i does not depend on n
    assert [d.describe() for d in a] != [d.describe() for d in rp.draw_designs(30, seed=8)]
    assert [d.seed for d in a] != [d.seed for d in rp.draw_designs(30, seed=8)]


def test_designs_cover_the_promised_range():
    designs = rp.draw_designs(400, seed=0)
    counts = [len(d.raters) for d in designs]
    assert min(counts) >= 2 and max(counts) <= 9
    assert set(counts) == set(range(2, 10))
    assert 0.3 < counts.count(3) / len(counts) < 0.5
    assert {d.task for d in designs} == {"tissue", "lesion"}
    assert {d.grid for d in designs} == {"1mm", "2mm", "1x1x3mm"}
    good = [sum(s.kind == "good" for s in d.raters) for d in designs]
    assert good.count(0) > 40 and good.count(1) > 40
    opposite = [
        d
        for d in designs
        if any(s.kind == "biased" and min(s.grow_mm.values()) > 0 for s in d.raters)
        and any(s.kind == "biased" and max(s.grow_mm.values()) < 0 for s in d.raters)
    ]
    assert len(opposite) > 40
    for d in designs:
        assert sum(s.kind in ("empty", "one_label") for s in d.raters) <= 1
        assert all(k in d.labels for s in d.raters for k in s.grow_mm)
        assert d.describe().startswith(f"{d.task} {d.grid} R={len(d.raters)}: ")


@pytest.mark.parametrize("shift", [0.8, 2.0, 3.0, -1.6, -3.0])
def test_boundary_shift_moves_a_sphere_radius_by_about_the_shift_in_mm(shift):
    truth = sphere(9.0)
    spec = rp.RaterSpec(kind="biased", grow_mm={1: shift})
    seg = rp.simulate_rater_spec(truth, spec, spacing=SPACING, seed=0)
    change = half_extents_mm(seg == 1) - half_extents_mm(truth == 1)
    # Along each axis, whole voxels: within half a voxel of the shift when growing; the
    # pole of a voxelised sphere is a flat cap, so shrinking may take one voxel more.
    allowed = np.array(SPACING) / 2 if shift > 0 else np.array(SPACING)
    assert np.all(np.abs(change - shift) <= allowed), change
    # Over the whole surface, within about half of the coarsest voxel.
    radius_change = equivalent_radius_mm(seg == 1) - equivalent_radius_mm(truth == 1)
    assert abs(radius_change - shift) < 0.75, radius_change
    if shift > 0:
        assert (seg[truth == 1] == 1).all() and (seg == 1).sum() > (truth == 1).sum()
    else:
        assert (truth[seg == 1] == 1).all() and (seg == 1).sum() < (truth == 1).sum()


@pytest.mark.parametrize("shift", [0.8, 1.6, 3.0, -0.8, -1.6, -3.0])
def test_boundary_shift_moves_flat_faces_by_the_nearest_whole_voxels(shift):
    truth = np.zeros((41, 27, 13), dtype=np.uint8)
    truth[10:31, 7:20, 3:10] = 1
    seg = rp.simulate_rater_spec(truth, rp.RaterSpec(kind="biased", grow_mm={1: shift}), spacing=SPACING, seed=0)
    change = half_extents_mm(seg == 1) - half_extents_mm(truth == 1)
    expected = np.round(shift / np.array(SPACING)) * np.array(SPACING)
    assert np.allclose(change, expected), (change, expected)


def test_sub_voxel_shift_changes_nothing():
    truth = sphere(9.0)
    for shift in (0.3, -0.3):
        spec = rp.RaterSpec(kind="good", grow_mm={1: shift})
        seg = rp.simulate_rater_spec(truth, spec, spacing=SPACING, seed=0)
        assert np.array_equal(seg, truth)


def test_shifts_follow_the_nesting_order():
    """Eroding the inner label hands its rim to the label around it; growing it never
    overwrites a higher label."""
    truth = sphere(12.0, value=2)
    truth[sphere(6.0) == 1] = 3
    truth[sphere(2.0) == 1] = 4
    shrink = rp.simulate_rater_spec(truth, rp.RaterSpec(kind="biased", grow_mm={3: -2.0}), spacing=SPACING, seed=0)
    assert (shrink == 4).sum() == (truth == 4).sum()  # lesion untouched
    assert (shrink == 3).sum() < (truth == 3).sum()
    assert set(np.unique(shrink[(truth == 3) & (shrink != 3)])) == {2}
    grow = rp.simulate_rater_spec(truth, rp.RaterSpec(kind="biased", grow_mm={2: 2.0}), spacing=SPACING, seed=0)
    assert np.array_equal(grow == 3, truth == 3) and np.array_equal(grow == 4, truth == 4)


def test_empty_and_one_label_raters():
    truth = sphere(10.0)
    truth[sphere(5.0) == 1] = 2
    empty = rp.simulate_rater_spec(truth, rp.RaterSpec(kind="empty", grow_mm={}), spacing=SPACING, seed=1)
    assert empty.dtype == np.uint8 and not empty.any()
    one = rp.simulate_rater_spec(
        truth,
        rp.RaterSpec(kind="one_label", grow_mm={1: 0.1, 2: -0.2}, noise=0.02, only_label=2),
        spacing=SPACING,
        seed=1,
    )
    assert set(np.unique(one)) == {0, 2}


def test_misses_and_false_positives():
    truth = np.zeros((40, 40, 12), dtype=np.uint8)
    for x in (5, 15, 25, 33):
        truth[x : x + 3, 10:13, 5:7] = 1
    missed = rp.simulate_rater_spec(
        truth,
        rp.RaterSpec(kind="misses", grow_mm={}, miss_fraction=0.5),
        spacing=SPACING,
        seed=2,
    )
    assert (truth[missed == 1] == 1).all() and (missed == 1).sum() == 2 * 18
    blobs = rp.simulate_rater_spec(
        truth,
        rp.RaterSpec(kind="false_positives", grow_mm={}, fp_blobs=5),
        spacing=SPACING,
        seed=2,
    )
    assert set(np.unique(blobs)) == {0, 1} and (blobs == 1).sum() > (truth == 1).sum()


def test_simulate_design_is_bit_reproducible_and_lesion_truth_is_binary():
    design = rp.PanelDesign(
        index=0,
        seed=12345,
        task="lesion",
        grid="2mm",
        raters=(
            rp.RaterSpec(kind="good", grow_mm={1: 0.2}, noise=0.02),
            rp.RaterSpec(kind="mixed", grow_mm={1: 1.5}, noise=0.2, fp_blobs=3),
            rp.RaterSpec(kind="misses", grow_mm={1: -0.1}, miss_fraction=0.5),
        ),
    )
    truth, segs, spacing = rp.simulate_design(design)
    assert spacing == (2.0, 2.0, 2.0)
    assert truth.dtype == np.uint8 and set(np.unique(truth)) == {0, 1}
    assert segs.shape == (3, *truth.shape) and segs.dtype == np.uint8
    assert set(np.unique(segs)) <= {0, 1}
    again_truth, again_segs, _ = rp.simulate_design(design)
    assert np.array_equal(truth, again_truth) and np.array_equal(segs, again_segs)
