"""The viewer in headless Chromium against the real server: paint, orientation, undo, fill.

The editing tools (round and sphere brushes, thresholds, locks, fill between slices, server
operations, grow from seeds, presets, measurements) have their own tests on the same oblique
scans: tests/frontend/test_editing_tools.py.

Each test asserts on what the server stored (the revision file, read with nibabel) and on
NiiVue's drawing state, never on pixels; screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.storage import default_storage
from scipy import ndimage

from labeling import volumes
from tests.frontend.helpers import (
    canvas_point,
    click,
    drawing,
    latest_revision,
    log_in,
    open_assignment,
    read_nifti,
    revision_labels,
    scan_image,
    stroke,
    wait_ready,
    wait_state,
)

pytestmark = pytest.mark.browser


def readout(page) -> dict:
    """What the read-out under the viewer says about the crosshair."""
    return {
        "vox": [int(v) for v in page.inner_text("#readout-vox").split(",")],
        "mm": [float(v) for v in page.inner_text("#readout-mm").split(",")],
        "value": float(page.inner_text("#readout-value")),
        "label": page.inner_text("#readout-label"),
    }


def test_paint_lands_on_the_stored_voxels(live_server, page, viewer_world, shot):
    """A stroke drawn with the mouse is stored on the same voxels (oblique, non-RAS upload)."""
    world = viewer_world
    assignment = world["mine"][0]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    assert page.inner_text("#starting-point") == "an empty label volume"
    shot(page, "opened")

    page.keyboard.press("a")  # axial view
    page.keyboard.press("b")  # brush
    page.keyboard.press("2")  # second label of the palette: Grey matter, value 2
    first, last = stroke(page, canvas_point(page, 0.42, 0.40), canvas_point(page, 0.58, 0.62))
    wait_state(page, "saved")
    shot(page, "painted-axial")

    revision = latest_revision(assignment)
    assert revision is not None and revision.base is None and revision.source == "manual"
    stored = revision_labels(revision)
    shown = drawing(page)
    assert stored.shape == tuple(assignment.scan.shape)
    np.testing.assert_array_equal(stored, shown)  # every voxel, not just the stroke
    painted = np.argwhere(stored == 2)
    assert stored[tuple(first)] == 2 and stored[tuple(last)] == 2
    assert set(painted[:, 2].tolist()) == {first[2]}, "an axial stroke stays in one axial slice"
    assert len(painted) >= max(abs(last[0] - first[0]), abs(last[1] - first[1])) + 1
    assert set(np.unique(stored).tolist()) == {0, 2}
    # The page sends the canonical form, so the server keeps the bytes as sent
    # (volumes.storable_as_sent) instead of re-encoding them, which would give other bytes.
    with default_storage.open(revision.file.name, "rb") as handle:
        raw = handle.read()
    assert volumes.storable_as_sent(raw)
    assert raw != volumes.label_map_to_bytes(stored, np.asarray(assignment.scan.affine))

    # The crosshair read-out agrees with the stored scan: world position and intensity.
    image, affine = scan_image(assignment.scan)
    page.evaluate("(vox) => window.mriannot.viewer.setCrosshairVoxel(vox)", first)
    seen = readout(page)
    assert seen["vox"] == list(first)
    np.testing.assert_allclose(seen["mm"], (affine @ [*first, 1])[:3], atol=0.06)
    assert seen["value"] == pytest.approx(float(image[tuple(first)]), abs=0.006)
    assert seen["label"] == "2 (Grey matter)"

    # The round brush in a coronal slice of this oblique, anisotropic scan: a disc in mm on the
    # stored grid (the 3 mm j axis is the one held), the stored voxels equal to the drawing.
    page.keyboard.press("c")
    page.keyboard.press("3")  # Lesion (4)
    page.evaluate("window.mriannot.tools.setPenSize(5)")  # 10 mm across (5 voxels of the finest 2 mm)
    page.mouse.move(*canvas_point(page, 0.5, 0.5))
    page.mouse.down()
    centre = page.evaluate("window.mriannot.viewer.crosshairVoxel()")
    page.mouse.up()
    wait_state(page, "saved")
    revision = latest_revision(assignment)
    stored = revision_labels(revision)
    np.testing.assert_array_equal(stored, drawing(page))
    zooms = np.asarray(read_nifti(assignment.scan.image.name).header.get_zooms()[:3], dtype=float)
    grid = np.indices(stored.shape).astype(float)
    d2 = sum(((grid[k] - centre[k]) * zooms[k]) ** 2 for k in (0, 2))
    disc = (d2 <= 25 * (1 + 1e-6)) & (grid[1] == centre[1])
    np.testing.assert_array_equal(stored == 4, disc)
    assert set(np.argwhere(stored == 4)[:, 1]) == {centre[1]}, "a coronal disc keeps j"

    # Reopening starts from this revision, on the same voxels.
    page.reload()
    wait_ready(page)
    assert page.inner_text("#starting-point") == f"your latest revision (#{revision.pk})"
    np.testing.assert_array_equal(drawing(page), stored)


def test_undo_and_redo_are_saved(live_server, page, viewer_world):
    world = viewer_world
    assignment = world["mine"][0]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")
    page.keyboard.press("b")
    page.keyboard.press("1")  # CSF, value 1
    stroke(page, canvas_point(page, 0.45, 0.45), canvas_point(page, 0.55, 0.45))
    wait_state(page, "saved")
    page.keyboard.press("3")  # the third label: Lesion, value 4
    page.keyboard.press("]")  # brush size 2
    stroke(page, canvas_point(page, 0.45, 0.55), canvas_point(page, 0.55, 0.55))
    wait_state(page, "saved")
    both = revision_labels(latest_revision(assignment))
    assert set(np.unique(both).tolist()) == {0, 1, 4}

    page.keyboard.press("Control+z")
    wait_state(page, "saved")
    undone = latest_revision(assignment)
    labels = revision_labels(undone)
    assert set(np.unique(labels).tolist()) == {0, 1}
    np.testing.assert_array_equal(labels == 1, both == 1)
    assert undone.number == 3 and undone.base.number == 2, "an undo is saved as a new revision"

    page.keyboard.press("Control+y")
    wait_state(page, "saved")
    np.testing.assert_array_equal(revision_labels(latest_revision(assignment)), both)
    np.testing.assert_array_equal(drawing(page), both)

    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    wait_state(page, "saved")
    assert not revision_labels(latest_revision(assignment)).any(), "two undos: back to empty"
    assert page.is_disabled("#undo") and page.is_enabled("#redo")


def test_eraser_filled_pen_and_fill_in_an_intensity_range(live_server, page, viewer_world, shot):
    """Filled pen fills its outline; fills match a scipy oracle on the stored scan."""
    world = viewer_world
    assignment = world["mine"][0]
    image, _ = scan_image(assignment.scan)
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")

    # Filled pen: a closed triangle; its inside is filled.
    page.keyboard.press("p")
    page.keyboard.press("1")
    points = [canvas_point(page, *p) for p in [(0.40, 0.35), (0.60, 0.35), (0.50, 0.60), (0.40, 0.35)]]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()
    wait_state(page, "saved")
    pen = revision_labels(latest_revision(assignment))
    slice_z = int(np.argwhere(pen == 1)[0, 2])
    filled = ndimage.binary_fill_holes(pen[:, :, slice_z] == 1)
    assert (pen[:, :, slice_z] == 1).sum() == filled.sum() > 30, "the outline's inside is filled"

    # Eraser: a stroke through the middle of the triangle removes label 1 there.
    page.keyboard.press("e")
    page.keyboard.press("]")
    stroke(page, canvas_point(page, 0.45, 0.45), canvas_point(page, 0.55, 0.45))
    wait_state(page, "saved")
    erased = revision_labels(latest_revision(assignment))
    assert 0 < (erased == 1).sum() < (pen == 1).sum()
    assert not ((erased == 1) & (pen != 1)).any(), "the eraser only removes"

    # Fill in the slice, intensity range [lo, hi]: equals the 4-connected component of the
    # in-range voxels of that slice containing the seed, on the stored scan.
    page.keyboard.press("Escape")
    seed = click(page, canvas_point(page, 0.35, 0.5))
    value = float(image[tuple(seed)])
    lo, hi = value - 15, value + 15
    page.fill("#fill-lo", f"{lo}")
    page.fill("#fill-hi", f"{hi}")
    page.press("#fill-hi", "Tab")
    page.keyboard.press("3")  # Lesion (4)
    page.keyboard.press("f")
    assert click(page, canvas_point(page, 0.35, 0.5)) == seed
    wait_state(page, "saved")
    shot(page, "fill-slice")
    stored = revision_labels(latest_revision(assignment))
    in_range = (image >= lo) & (image <= hi)
    components, _ = ndimage.label(in_range[:, :, seed[2]])  # 4-connected in 2D
    expected = np.zeros_like(in_range)
    expected[:, :, seed[2]] = components == components[seed[0], seed[1]]
    np.testing.assert_array_equal(stored == 4, expected)
    last = page.evaluate("window.mriannot.tools.lastFill")
    assert last["filled"] == int(expected.sum()) and last["plane"] == "axial"

    # Fill in 3D with another range: the 6-connected component in the volume.
    page.keyboard.press("Shift+F")
    lo3, hi3 = value - 40, value + 40
    page.fill("#fill-lo", f"{lo3}")
    page.fill("#fill-hi", f"{hi3}")
    page.press("#fill-hi", "Tab")
    page.keyboard.press("2")  # Grey matter (2)
    click(page, canvas_point(page, 0.35, 0.5))
    wait_state(page, "saved")
    shot(page, "fill-3d")
    stored3 = revision_labels(latest_revision(assignment))
    components3, _ = ndimage.label((image >= lo3) & (image <= hi3))  # 6-connected in 3D
    expected3 = components3 == components3[tuple(seed)]
    assert expected3[:, :, seed[2] + 1].any() or expected3[:, :, seed[2] - 1].any(), "the region spans slices"
    np.testing.assert_array_equal(stored3 == 2, expected3)
    # voxels outside the region keep their labels
    np.testing.assert_array_equal(stored3[~expected3], stored[~expected3])
