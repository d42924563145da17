"""The editing tools radiologists expect, in headless Chromium against the real server.

Round and sphere brushes in millimetres, threshold painting, locks, fill between slices
(previewed), per-label display, MRI window presets, the ruler and the volumes; the server's
clean-up operations and grow from seeds. Every test paints on the oblique, anisotropic,
LSP-uploaded scans of ``viewer_world`` (stored RAS+, 2 x 3 x 2.5 mm, rotated 8 degrees) and asserts on what the
server stored (the revision, read with nibabel), never on pixels. One test runs the automatic
fill range of the browser (threshold.js, under node) on simulated scans.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from tests.frontend.conftest import FRONTEND, missing_tool
from tests.frontend.helpers import (
    canvas_point,
    click,
    crosshair,
    drawing,
    latest_revision,
    log_in,
    open_assignment,
    read_nifti,
    revision_labels,
    scan_image,
    stroke,
    wait_state,
)

GREY, LESION, CSF = 2, 4, 1


def spacing_of(scan) -> np.ndarray:
    """The stored scan's voxel sizes as its header says (NiiVue's pixDims, float32)."""
    return np.asarray(read_nifti(scan.image.name).header.get_zooms()[:3], dtype=np.float64)


def ball(shape, centre, diameter_mm: float, spacing, axis: int | None) -> np.ndarray:
    """Voxels within diameter / 2 of ``centre`` in mm (a disc in the slice ``axis`` holds, or a ball)."""
    grid = np.indices(shape).astype(float)
    d2 = sum(((grid[k] - centre[k]) * spacing[k]) ** 2 for k in range(3))
    inside = d2 <= (diameter_mm / 2) ** 2 * (1 + 1e-6) + 1e-9  # brush.js's tolerance
    if axis is not None:
        inside &= grid[axis] == centre[axis]
    return inside


def js(page, expression: str):
    return page.evaluate(f"(() => {{ const app = window.mriannot; return {expression}; }})()")


def stored(assignment) -> np.ndarray:
    return revision_labels(latest_revision(assignment))


def open_axial(page, live_server, world, assignment):
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.keyboard.press("a")


def open_first(page, live_server, world):
    """The first rater's first assignment open in the axial view: (assignment, image, spacing)."""
    assignment = world["mine"][0]
    image, _ = scan_image(assignment.scan)
    open_axial(page, live_server, world, assignment)
    return assignment, image, spacing_of(assignment.scan)


def set_brush_voxels(page, voxels: int) -> None:
    page.evaluate(f"window.mriannot.tools.setPenSize({voxels})")


def tap(page, point) -> list[int]:
    """One click with a painting tool: a stroke of one point; returns the voxel under it."""
    page.mouse.move(*point)
    page.mouse.down()
    voxel = crosshair(page)
    page.mouse.up()
    return voxel


@pytest.mark.browser
def test_round_and_sphere_brushes_in_millimetres_and_their_eraser(live_server, page, viewer_world, shot):
    assignment, image, spacing = open_first(page, live_server, viewer_world)
    shape = image.shape

    # The brush's size is in mm of the finest spacing: ] steps 1, 2, 3, 4, 5, 6, 8 voxels of 2 mm.
    page.keyboard.press("b")
    page.keyboard.press("2")
    for _ in range(6):
        page.keyboard.press("]")
    assert page.inner_text("#pen-size-value") == "8"
    assert page.inner_text("#pen-size-mm") == "16.0 mm"
    centre = tap(page, canvas_point(page, 0.45, 0.45))
    wait_state(page, "saved")
    shot(page, "disc")
    disc = ball(shape, centre, 16.0, spacing, axis=2)
    labels = stored(assignment)
    np.testing.assert_array_equal(labels == GREY, disc)
    np.testing.assert_array_equal(labels, drawing(page))
    assert set(np.argwhere(labels == GREY)[:, 2]) == {centre[2]}, "a disc stays in its axial slice"

    # The sphere (Shift+B) is round in mm across slices of 2.5 mm: 16 mm reaches 3 slices each way.
    page.keyboard.press("Shift+B")
    assert js(page, "app.tools.shape") == "sphere"
    page.keyboard.press("3")  # Lesion
    centre2 = tap(page, canvas_point(page, 0.62, 0.6))
    wait_state(page, "saved")
    sphere = ball(shape, centre2, 16.0, spacing, axis=None)
    labels = stored(assignment)
    expected = np.where(sphere, LESION, np.where(disc, GREY, 0))
    np.testing.assert_array_equal(labels, expected)
    assert spacing[2] == pytest.approx(2.5)
    assert sorted(set(np.argwhere(labels == LESION)[:, 2] - centre2[2])) == [-3, -2, -1, 0, 1, 2, 3]

    # The sphere eraser, smaller ([ twice: 5 voxels, 10 mm), removes a ball and nothing else.
    page.keyboard.press("e")
    page.keyboard.press("[")
    page.keyboard.press("[")
    assert page.inner_text("#pen-size-mm") == "10.0 mm"
    centre3 = tap(page, canvas_point(page, 0.62, 0.6))
    wait_state(page, "saved")
    hole = ball(shape, centre3, 10.0, spacing, axis=None)
    labels = stored(assignment)
    np.testing.assert_array_equal(labels, np.where(hole, 0, expected))

    # A drag with the round brush paints the disc at every voxel of the line (one undoable edit).
    page.keyboard.press("Shift+B")  # back to the disc
    page.keyboard.press("b")
    page.keyboard.press("1")  # CSF
    set_brush_voxels(page, 3)
    before = stored(assignment)
    first, last = stroke(page, canvas_point(page, 0.3, 0.75), canvas_point(page, 0.5, 0.8))
    wait_state(page, "saved")
    labels = stored(assignment)
    painted = (labels == CSF) & (before != CSF)
    assert labels[tuple(first)] == CSF and labels[tuple(last)] == CSF
    assert ball(shape, first, 6.0, spacing, axis=2)[painted].any()
    assert (painted & ~(before == CSF)).sum() > ball(shape, first, 6.0, spacing, axis=2).sum()
    page.keyboard.press("Control+z")
    wait_state(page, "saved")
    np.testing.assert_array_equal(stored(assignment), before)


@pytest.mark.browser
def test_threshold_painting_locks_and_per_label_display(live_server, page, viewer_world, shot):
    assignment, image, spacing = open_first(page, live_server, viewer_world)
    shape = image.shape

    # Grey matter painted with a big disc, then locked (Shift+L on the selected label).
    page.keyboard.press("b")
    page.keyboard.press("2")
    set_brush_voxels(page, 6)
    grey_centre = tap(page, canvas_point(page, 0.5, 0.5))
    wait_state(page, "saved")
    grey = stored(assignment) == GREY
    page.keyboard.press("Shift+L")
    assert js(page, "[...app.tools.locked]") == [GREY]
    assert "locked" in page.get_attribute("#palette li[data-value='2']", "class")

    # Threshold painting (T) with a range typed in: a larger lesion disc over the grey disc
    # paints only the in-range voxels and never the locked grey matter.
    value = float(image[tuple(grey_centre)])
    lo, hi = value - 30.0, value + 30.0
    page.fill("#fill-lo", f"{lo}")
    page.fill("#fill-hi", f"{hi}")
    page.press("#fill-hi", "Tab")
    page.keyboard.press("t")
    assert page.is_checked("#threshold")
    page.keyboard.press("3")  # Lesion
    set_brush_voxels(page, 12)
    centre = tap(page, canvas_point(page, 0.5, 0.5))
    wait_state(page, "saved")
    shot(page, "threshold-lock")
    labels = stored(assignment)
    disc = ball(shape, centre, 24.0, spacing, axis=2)
    in_range = (image.astype(np.float64) >= lo) & (image.astype(np.float64) <= hi)  # as the page: in float64
    np.testing.assert_array_equal(labels == LESION, disc & in_range & ~grey)
    np.testing.assert_array_equal(labels == GREY, grey)
    assert (disc & ~in_range & ~grey).any(), "the range did exclude voxels of the disc"

    # The eraser leaves the locked label too; unlocking it lets the eraser through.
    page.keyboard.press("t")  # threshold off
    page.keyboard.press("e")
    tap(page, canvas_point(page, 0.5, 0.5))
    wait_state(page, "saved")
    labels = stored(assignment)
    np.testing.assert_array_equal(labels == GREY, grey)
    assert not (labels == LESION).any()
    page.click("#palette li[data-value='2'] .label-lock")
    assert js(page, "[...app.tools.locked]") == []
    tap(page, canvas_point(page, 0.5, 0.5))
    wait_state(page, "saved")
    assert not stored(assignment).any()

    # A fill in 3D stops at a locked label (it is a wall) ...
    page.keyboard.press("Control+z")  # the grey disc again
    wait_state(page, "saved")
    page.keyboard.press("2")
    page.keyboard.press("Shift+L")
    page.keyboard.press("Shift+F")
    page.fill("#fill-lo", f"{float(image.min()) - 1}")
    page.fill("#fill-hi", f"{float(image.max()) + 1}")
    page.press("#fill-hi", "Tab")
    page.keyboard.press("1")  # CSF: the whole volume but the locked grey disc
    click(page, canvas_point(page, 0.42, 0.3))
    wait_state(page, "saved")
    labels = stored(assignment)
    np.testing.assert_array_equal(labels, np.where(grey, GREY, CSF))

    # ... and per-label show/hide (H) and opacity are NiiVue's colour table alphas.
    page.keyboard.press("1")
    page.keyboard.press("h")
    lut_alpha = "(v) => window.mriannot.viewer.nv.drawLut.lut[4 * v + 3]"
    assert page.evaluate(lut_alpha, CSF) == 0
    assert not page.is_checked("#palette li[data-value='1'] .label-visible")
    page.keyboard.press("h")
    assert page.evaluate(lut_alpha, CSF) == 255
    page.fill("#palette li[data-value='2'] .label-opacity", "40")
    page.dispatch_event("#palette li[data-value='2'] .label-opacity", "input")
    assert page.evaluate(lut_alpha, GREY) == round(0.4 * 255)
    np.testing.assert_array_equal(stored(assignment), labels), "display changes no voxel"


@pytest.mark.browser
def test_fill_between_slices_is_previewed_then_accepted_or_rejected(live_server, page, viewer_world, shot):
    assignment, image, spacing = open_first(page, live_server, viewer_world)
    shape = image.shape

    # The same 14 mm disc on two axial slices four apart.
    page.keyboard.press("b")
    page.keyboard.press("3")
    set_brush_voxels(page, 7)
    point = canvas_point(page, 0.5, 0.5)
    low = tap(page, point)
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    high = tap(page, point)
    wait_state(page, "saved")
    assert high[2] == low[2] + 4 and high[:2] == low[:2]
    drawn = stored(assignment)
    disc = ball(shape, low, 14.0, spacing, axis=2)[:, :, low[2]]

    # I: a preview, outlined; nothing is saved while it waits; Esc rejects it.
    page.keyboard.press("i")
    page.wait_for_selector("body[data-preview=pending]")
    assert js(page, "app.viewer.outline") is True
    assert js(page, "app.tools.pending.changed") == 3 * int(disc.sum())
    page.wait_for_timeout(600)  # longer than the autosave delay
    np.testing.assert_array_equal(stored(assignment), drawn)
    shot(page, "interpolation-preview")
    page.keyboard.press("Escape")
    page.wait_for_selector("body[data-preview=none]")
    np.testing.assert_array_equal(drawing(page), drawn)
    assert js(page, "app.viewer.outline") is False

    # I, then Enter: the slices between hold the same disc, saved as one revision; one undo.
    page.keyboard.press("i")
    page.wait_for_selector("body[data-preview=pending]")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-preview=none]")
    wait_state(page, "saved")
    labels = stored(assignment)
    for z in range(low[2], high[2] + 1):
        np.testing.assert_array_equal(labels[:, :, z] == LESION, disc)
    assert (labels == LESION).sum() == 5 * disc.sum()
    np.testing.assert_array_equal(labels, drawing(page))
    page.keyboard.press("Control+z")
    wait_state(page, "saved")
    np.testing.assert_array_equal(stored(assignment), drawn)


@pytest.mark.browser
def test_mri_presets_window_from_a_region_ruler_and_volumes(live_server, page, viewer_world, shot):
    assignment, image, spacing = open_first(page, live_server, viewer_world)

    # Presets: auto, full, brain, tight from the scan's own percentiles; no CT window names.
    options = page.eval_on_selector_all("#wl-preset option", "els => els.map(e => e.value)")
    assert options[:4] == ["auto", "full", "brain", "tight"]
    names = " ".join(page.eval_on_selector_all("#wl-preset option", "els => els.map(e => e.textContent)")).lower()
    for ct in ("subdural", "stroke", "bone", "hounsfield"):
        assert ct not in names
    page.select_option("#wl-preset", "tight")
    window = js(page, "[app.viewer.volume.cal_min, app.viewer.volume.cal_max]")
    values = np.sort(image.ravel())
    p2, p995 = np.quantile(values, [0.02, 0.995])
    head = values[values > p2 + 0.15 * (p995 - p2)]
    assert window == pytest.approx(np.quantile(head, [0.2, 0.99]), rel=0.02)

    # W/L from a region (Shift+W): drag a rectangle; the window is its 1-99 % intensities.
    page.keyboard.press("Shift+W")
    a, b = canvas_point(page, 0.4, 0.4), canvas_point(page, 0.55, 0.6)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=6)
    page.mouse.up()
    assert page.input_value("#wl-preset") == "region"
    region = js(page, "app.tools.lastRegion")
    corners = [region["start"], region["end"]]
    assert corners[0][2] == corners[1][2], "a rectangle in one axial slice"
    lo = np.minimum(corners[0], corners[1])
    hi = np.maximum(corners[0], corners[1])
    box = image[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    window = js(page, "[app.viewer.volume.cal_min, app.viewer.volume.cal_max]")
    assert window == pytest.approx(np.quantile(box, [0.01, 0.99]), rel=1e-3)

    # The ruler (Shift+R): NiiVue's measurement in world millimetres.
    page.keyboard.press("Shift+R")
    page.mouse.move(*canvas_point(page, 0.3, 0.5))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, 0.7, 0.5), steps=6)
    page.mouse.up()
    measured = js(page, "app.tools.measurements[app.tools.measurements.length - 1]")
    assert measured["distance"] == pytest.approx(
        np.linalg.norm(np.subtract(measured["endMM"], measured["startMM"])), rel=1e-6
    )
    assert measured["distance"] > 20
    assert page.inner_text("#ruler-value") == f"{measured['distance']:.1f} mm"

    # Volumes: each label's mL in the palette (live), and the island under the crosshair.
    page.keyboard.press("b")
    page.keyboard.press("2")
    set_brush_voxels(page, 5)
    centre = tap(page, canvas_point(page, 0.5, 0.5))
    page.keyboard.press("3")
    set_brush_voxels(page, 2)
    tap(page, canvas_point(page, 0.42, 0.3))
    wait_state(page, "saved")
    labels = stored(assignment)
    voxel_ml = float(np.prod(spacing)) / 1000
    page.wait_for_function("window.mriannot.measure.volumes[2] > 0")
    volumes = js(page, "app.measure.volumes")
    assert volumes["2"] == pytest.approx((labels == GREY).sum() * voxel_ml, rel=1e-6)
    assert volumes["4"] == pytest.approx((labels == LESION).sum() * voxel_ml, rel=1e-6)
    assert volumes["1"] == 0
    page.evaluate("(vox) => window.mriannot.viewer.setCrosshairVoxel(vox)", centre)
    page.wait_for_function("window.mriannot.measure.island && window.mriannot.measure.island.value === 2")
    island, _ = ndimage.label(labels == GREY, structure=np.ones((3, 3, 3)))  # 26-connected, as the server
    assert js(page, "app.measure.island.voxels") == int((island == island[tuple(centre)]).sum())
    assert "mL" in page.inner_text("#readout-island")
    shot(page, "measured")


def test_the_automatic_fill_range_on_simulated_scans(tmp_path):
    """threshold.js's automatic range on simulated subjects (2 mm): white and grey matter in a
    slice, and lesions in 3D, against the truth; the old rule (seed ± 10 % of the window) too.
    """
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not installed")
    import simulation

    anatomy = simulation.mni152_anatomy(resolution=2)
    rng = np.random.default_rng(0)
    cases = []
    for seed in (2026, 2027):
        subject = simulation.simulate_subject(anatomy, seed=seed, n_lesions=3)
        image, truth = subject.image, subject.labels
        path = tmp_path / f"{seed}.f32"
        image.astype(np.float32).ravel(order="F").tofile(path)
        seeds = []
        for tissue in (3, 2):
            core = np.argwhere(ndimage.binary_erosion(truth == tissue))
            for k in rng.choice(len(core), 12, replace=False):
                seeds.append({"tissue": tissue, "seed": core[k].tolist(), "axis": 2})
        components, n = ndimage.label(truth == 4)
        for c in range(1, n + 1):
            voxels = np.argwhere(components == c)
            centre = voxels.mean(axis=0)
            seeds.append(
                {
                    "tissue": 4,
                    "seed": voxels[np.argmin(((voxels - centre) ** 2).sum(1))].tolist(),
                    "axis": None,
                    "component": c,
                }
            )
        lo, hi = np.quantile(image, [0.02, 0.98])  # NiiVue's robust window (the old rule's)
        values = np.sort(image.ravel())
        p2, p995 = np.quantile(values, [0.02, 0.995])
        head = values[values > p2 + 0.15 * (p995 - p2)]
        tight = np.quantile(head, [0.2, 0.99])  # the "tight" preset's window
        cases.append(
            {
                "path": str(path),
                "dims": list(image.shape),
                "seeds": seeds,
                "window": float(hi - lo),
                "tight": float(tight[1] - tight[0]),
                "truth": truth,
                "components": components,
            }
        )

    script = tmp_path / "run.mjs"
    script.write_text(
        f"""
import {{ readFileSync }} from "node:fs";
import {{ floodFill }} from "{(FRONTEND / "src/js/fill.js").as_posix()}";
import {{ autoRange }} from "{(FRONTEND / "src/js/threshold.js").as_posix()}";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
for (const c of cases) {{
  const buffer = readFileSync(c.path);
  const image = new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4);
  const n = c.dims[0] * c.dims[1] * c.dims[2];
  const fills = [];
  for (const s of c.seeds) {{
    const fill = (lo, hi) => {{
      const labels = new Uint8Array(n);
      floodFill({{ labels, image, dims: c.dims, seed: s.seed, value: 1, lo, hi, axis: s.axis }});
      const idx = [];
      for (let i = 0; i < n; i++) if (labels[i]) idx.push(i);
      return idx;
    }};
    const r = autoRange({{ image, dims: c.dims, seed: s.seed, axis: s.axis }});
    const v = image[s.seed[0] + s.seed[1] * c.dims[0] + s.seed[2] * c.dims[0] * c.dims[1]];
    fills.push({{
      auto: fill(r.lo, r.hi),
      old: fill(v - 0.1 * c.window, v + 0.1 * c.window),
      oldTight: fill(v - 0.1 * c.tight, v + 0.1 * c.tight),
    }});
  }}
  out.push(fills);
}}
process.stdout.write(JSON.stringify(out));
"""
    )
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps([{k: c[k] for k in ("path", "dims", "seeds", "window", "tight")} for c in cases]))
    result = subprocess.run([node, str(script), str(spec)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout)

    def region(indices, shape):
        mask = np.zeros(int(np.prod(shape)), bool)
        mask[indices] = True
        return mask.reshape(shape, order="F")

    report = {rule: {2: [], 3: [], 4: []} for rule in ("auto", "old", "oldTight")}
    for case, fills in zip(cases, answers, strict=True):
        truth, shape = case["truth"], case["truth"].shape
        for s, fill in zip(case["seeds"], fills, strict=True):
            for rule in report:
                mask = region(fill[rule], shape)
                if s["tissue"] == 4:
                    target = case["components"] == s["component"]
                else:
                    target = np.zeros(shape, bool)
                    z = s["seed"][2]
                    target[:, :, z] = truth[:, :, z] == s["tissue"]
                size = int(mask.sum())
                precision = float((mask & target).sum() / max(size, 1))
                recall = float((mask & target).sum() / max(target.sum(), 1))
                report[rule][s["tissue"]].append((size, precision, recall))
    for rule in report:  # shown with -s; the figures in docs/editing.md
        for tissue, name in ((3, "white matter 2D"), (2, "grey matter 2D"), (4, "lesion 3D")):
            rows = np.array(report[rule][tissue])
            print(
                f"{rule:8} {name:16} size median {np.median(rows[:, 0]):7.0f} min {rows[:, 0].min():6.0f}"
                f"  precision median {np.median(rows[:, 1]):.2f}  recall median {np.median(rows[:, 2]):.2f}"
                f"  fills under 5 voxels {int((rows[:, 0] < 5).sum())}/{len(rows)}"
            )
    auto = report["auto"]
    # White matter in a slice: a region, not a few voxels, and mostly white matter.
    wm = np.array(auto[3])
    assert np.median(wm[:, 0]) > 150 and wm[:, 0].min() >= 30, wm[:, 0]
    assert np.median(wm[:, 1]) > 0.7, wm[:, 1]
    # Grey matter in a slice: mostly grey matter.
    gm = np.array(auto[2])
    assert np.median(gm[:, 1]) > 0.8 and np.median(gm[:, 0]) > 30, gm
    # Lesions in 3D, from their centre: most are found without leaking (precision and recall).
    lesions = np.array(auto[4])
    good = (lesions[:, 1] > 0.7) & (lesions[:, 2] > 0.5)
    assert good.mean() >= 0.6, lesions


def run_operation(page, key: str) -> dict:
    """Press a server operation's key; wait for its answer and for the save; the operation's record."""
    page.keyboard.press(key)
    page.wait_for_function("window.mriannot.operations.last && document.body.dataset.operation === 'idle'")
    last = js(page, "app.operations.last")
    assert "error" not in last, last
    return last


@pytest.mark.browser
def test_islands_margin_and_smooth_run_on_the_server_as_one_undoable_edit_each(live_server, page, viewer_world):
    from labeling import editing

    world = viewer_world
    assignment = world["mine"][0]
    spacing = tuple(float(s) for s in assignment.scan.spacing)
    open_axial(page, live_server, world, assignment)

    # Grey matter: a large disc and two specks; CSF beside it, locked.
    page.keyboard.press("b")
    page.keyboard.press("2")
    set_brush_voxels(page, 7)
    big = tap(page, canvas_point(page, 0.5, 0.5))
    set_brush_voxels(page, 1)
    speck = tap(page, canvas_point(page, 0.6, 0.3))
    tap(page, canvas_point(page, 0.42, 0.75))
    page.keyboard.press("1")
    set_brush_voxels(page, 4)
    tap(page, canvas_point(page, 0.56, 0.5))
    page.keyboard.press("2")
    page.keyboard.press("1")
    page.keyboard.press("Shift+L")  # CSF locked
    page.keyboard.press("2")  # back to grey matter, the label the operations act on
    wait_state(page, "saved")
    painted = stored(assignment)
    assert js(page, "[...app.tools.locked]") == [CSF]

    def check(expected, revisions_before):
        wait_state(page, "saved")
        labels = stored(assignment)
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(labels, drawing(page))
        np.testing.assert_array_equal(labels == CSF, painted == CSF)  # the locked label never changes
        assert latest_revision(assignment).number == revisions_before + 1, "one edit, one revision"
        page.keyboard.press("Control+z")
        wait_state(page, "saved")
        np.testing.assert_array_equal(stored(assignment), painted)

    # X: remove the islands under the size set (mm³).
    page.fill("#island-min", "40")
    page.press("#island-min", "Tab")
    number = latest_revision(assignment).number
    last = run_operation(page, "x")
    assert last["params"] == {"label": GREY, "mode": "remove_small", "min_mm3": 40, "locked": "1"}
    expected = editing.islands(painted, spacing=spacing, label=GREY, mode="remove_small", min_mm3=40, locked=[CSF])
    assert last["changed"] == last["serverChanged"] == 2
    check(expected, number)

    # Shift+X: keep the largest island; K: keep the island under the crosshair.
    number = latest_revision(assignment).number
    run_operation(page, "Shift+X")
    check(editing.islands(painted, spacing=spacing, label=GREY, mode="keep_largest", locked=[CSF]), number)
    page.keyboard.press("Escape")
    page.evaluate("(vox) => window.mriannot.viewer.setCrosshairVoxel(vox)", speck)
    number = latest_revision(assignment).number
    run_operation(page, "k")
    expected = editing.islands(painted, spacing=spacing, label=GREY, mode="keep_at", point=speck, locked=[CSF])
    assert (expected == GREY).sum() == 1
    check(expected, number)

    # > and <: grow and shrink by the margin (3 mm); Shift+S: smooth (2 mm).
    page.fill("#margin-mm", "3")
    page.press("#margin-mm", "Tab")
    for key, mm in ((">", 3.0), ("<", -3.0)):
        number = latest_revision(assignment).number
        last = run_operation(page, key)
        assert float(last["params"]["mm"]) == mm
        check(editing.margin(painted, spacing=spacing, label=GREY, mm=mm, locked=[CSF]), number)
    number = latest_revision(assignment).number
    run_operation(page, "Shift+S")
    check(editing.smooth(painted, spacing=spacing, label=GREY, mm=2.0, locked=[CSF]), number)
    assert painted[tuple(big)] == GREY


@pytest.mark.browser
def test_grow_from_seeds_is_previewed_and_the_outside_seeds_are_never_saved(live_server, page, viewer_world, shot):
    from labeling import editing

    world = viewer_world
    assignment = world["mine"][0]
    image, _ = scan_image(assignment.scan)
    spacing = tuple(float(s) for s in assignment.scan.spacing)
    open_axial(page, live_server, world, assignment)
    # the bright blob of the test image (400 above the ramp): its slice, and its centre
    blob = np.unravel_index(np.argmax(image), image.shape)
    page.evaluate("(vox) => window.mriannot.viewer.setCrosshairVoxel(vox)", [int(v) for v in blob])

    # A lesion stroke in the blob and outside seeds around it (key 0), in the blob's slice.
    page.keyboard.press("b")
    page.keyboard.press("3")
    set_brush_voxels(page, 2)
    centre = js(page, "app.viewer.crosshairVoxel()")
    xy = page.evaluate(
        """(v) => { const nv = window.mriannot.viewer.nv; const p = nv.frac2canvasPos(nv.vox2frac(v));
        const r = nv.canvas.getBoundingClientRect(); const d = nv.uiData.dpr || 1; return [r.left + p[0] / d, r.top + p[1] / d]; }""",
        centre,
    )
    stroke(page, (xy[0] - 4, xy[1]), (xy[0] + 4, xy[1]), steps=3)
    page.keyboard.press("0")
    assert js(page, "app.tools.label") == 255
    ring = [(xy[0] + 70 * np.cos(a), xy[1] + 70 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 25)]
    page.mouse.move(*ring[0])
    page.mouse.down()
    for point in ring[1:]:
        page.mouse.move(*point, steps=2)
    page.mouse.up()
    wait_state(page, "saved")
    seeds = drawing(page)
    assert set(np.unique(seeds)) == {0, LESION, 255}
    saved = stored(assignment)
    np.testing.assert_array_equal(saved, np.where(seeds == 255, 0, seeds)), "outside seeds are never saved"

    # G: a preview; Esc gives the seeds back; G, Enter: the grown lesion, saved once.
    run_operation(page, "g")
    page.wait_for_selector("body[data-preview=pending]")
    last = js(page, "app.operations.last")
    assert last["params"]["outside"] == 255
    roi = [int(v) for v in last["params"]["roi"].split(",")]
    shot(page, "grow-preview")
    page.wait_for_timeout(600)
    np.testing.assert_array_equal(stored(assignment), saved)
    page.keyboard.press("Escape")
    page.wait_for_selector("body[data-preview=none]")
    np.testing.assert_array_equal(drawing(page), seeds)
    run_operation(page, "g")
    page.wait_for_selector("body[data-preview=pending]")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-preview=none]")
    wait_state(page, "saved")
    grown = editing.grow_from_seeds(
        seeds, image, spacing=spacing, roi=list(zip(roi[0::2], roi[1::2], strict=True)), outside=255
    )
    labels = stored(assignment)
    np.testing.assert_array_equal(labels, grown)
    np.testing.assert_array_equal(labels, drawing(page))
    assert 255 not in labels
    lesion = labels == LESION
    assert lesion.sum() > (seeds == LESION).sum()
    assert (image[lesion] > image[tuple(blob)] - 250).mean() > 0.9, "the lesion grew over the bright blob"
    page.keyboard.press("Control+z")
    wait_state(page, "saved")
    np.testing.assert_array_equal(stored(assignment), saved)
