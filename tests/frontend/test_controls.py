"""Views, window/level, zoom and pan, label display and the shortcut help, in headless Chromium."""

from __future__ import annotations

import pytest

from tests.frontend.helpers import canvas_point, log_in, open_assignment

pytestmark = pytest.mark.browser


def nv(page, expression: str):
    return page.evaluate(f"(() => {{ const nv = window.mriannot.viewer.nv; return {expression}; }})()")


def test_views_window_level_zoom_pan_and_label_display(live_server, page, viewer_world, shot):
    world = viewer_world
    log_in(page, live_server.url, "rater1", world["password"])
    page.evaluate("window.localStorage.removeItem('mriannot.view')")  # a first visit
    open_assignment(page, live_server.url, world["mine"][0].pk)

    # Views: multiplanar (with 3D) by default, then axial, coronal, sagittal and 3D.
    assert nv(page, "nv.opts.sliceType") == 3
    shot(page, "opened-multiplanar")
    for key, slice_type, name in [
        ("a", 0, "axial"),
        ("c", 1, "coronal"),
        ("s", 2, "sagittal"),
        ("d", 4, "3d"),
        ("m", 3, "multiplanar"),
    ]:
        page.keyboard.press(key)
        assert nv(page, "nv.opts.sliceType") == slice_type
        shot(page, f"view-{name}")
    page.click("#view-buttons [data-view=axial]")
    assert nv(page, "nv.opts.sliceType") == 0
    assert page.get_attribute("#view-buttons [data-view=axial]", "class") == "active"
    page.reload()  # the last view is remembered
    page.wait_for_selector("body[data-ready=true]")
    assert nv(page, "nv.opts.sliceType") == 0

    # Slice navigation follows the view: in axial, arrow up moves one slice up (z + 1).
    z = nv(page, "Array.from(nv.frac2vox(nv.scene.crosshairPos))")[2]
    page.keyboard.press("ArrowUp")
    assert nv(page, "Array.from(nv.frac2vox(nv.scene.crosshairPos))")[2] == z + 1
    assert page.inner_text("#readout-vox").endswith(f", {z + 1}")

    # Window/level: presets (W cycles), and right-drag changes it (3D Slicer style).
    robust = nv(page, "[nv.volumes[0].robust_min, nv.volumes[0].robust_max]")
    assert nv(page, "[nv.volumes[0].cal_min, nv.volumes[0].cal_max]") == pytest.approx(robust)
    page.keyboard.press("w")
    assert page.input_value("#wl-preset") == "full"
    assert nv(page, "[nv.volumes[0].cal_min, nv.volumes[0].cal_max]") == pytest.approx(
        nv(page, "[nv.volumes[0].global_min, nv.volumes[0].global_max]")
    )
    page.select_option("#wl-preset", "narrow")
    narrow = nv(page, "nv.volumes[0].cal_max - nv.volumes[0].cal_min")
    assert narrow == pytest.approx((robust[1] - robust[0]) / 2)
    start = canvas_point(page, 0.5, 0.5)
    page.mouse.move(*start)
    page.mouse.down(button="right")
    page.mouse.move(start[0] + 80, start[1] - 40, steps=5)
    page.mouse.up(button="right")
    assert nv(page, "nv.volumes[0].cal_max - nv.volumes[0].cal_min") != pytest.approx(narrow)
    assert page.input_value("#wl-preset") == "custom"
    assert page.inner_text("#wl-value").startswith("Window ")

    # Zoom (+, Ctrl+wheel) and reset (R); pan with the middle button.
    page.keyboard.press("+")
    assert nv(page, "nv.scene.pan2Dxyzmm[3]") == pytest.approx(1.25)
    page.mouse.move(*start)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    assert nv(page, "nv.scene.pan2Dxyzmm[3]") == pytest.approx(1.25 * 1.15)
    assert page.inner_text("#zoom-value") == "144 %"
    pan = nv(page, "Array.from(nv.scene.pan2Dxyzmm)")
    page.mouse.down(button="middle")
    page.mouse.move(start[0] + 60, start[1] + 30, steps=5)
    page.mouse.up(button="middle")
    assert nv(page, "Array.from(nv.scene.pan2Dxyzmm)")[:3] != pan[:3]
    shot(page, "zoomed-panned")
    page.keyboard.press("r")
    assert nv(page, "Array.from(nv.scene.pan2Dxyzmm)") == [0, 0, 0, 1]

    # Label display: opacity, outline, show/hide; the palette follows keys 1-9.
    page.fill("#label-opacity", "30")
    page.dispatch_event("#label-opacity", "input")
    assert nv(page, "nv.drawOpacity") == pytest.approx(0.3)
    page.keyboard.press("o")
    assert nv(page, "nv.drawRimOpacity") == pytest.approx(0.3) and nv(page, "nv.drawOpacity") < 0.01
    assert page.is_checked("#outline")
    page.keyboard.press("l")
    assert nv(page, "nv.drawOpacity") == 0 and nv(page, "nv.drawRimOpacity") < 0
    assert not page.is_checked("#labels-visible")
    page.keyboard.press("l")
    page.keyboard.press("o")
    assert nv(page, "nv.drawOpacity") == pytest.approx(0.3)
    page.keyboard.press("3")
    assert page.evaluate("window.mriannot.tools.label") == 4  # third palette entry: Lesion (value 4)
    assert page.evaluate("window.mriannot.tools.tool") == "brush"
    assert "active" in page.get_attribute("#palette button[data-value='4']", "class")
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert nv(page, "nv.opts.penSize") == 3 and page.inner_text("#pen-size-value") == "3"

    # The help overlay lists the shortcuts; '?' opens and closes it.
    page.keyboard.press("?")
    assert page.is_visible("#help-dialog")
    help_text = page.inner_text("#help-content")
    for expected in ("Undo", "Redo", "Brush", "Eraser", "Fill in 3D", "Axial", "Next window/level preset"):
        assert expected in help_text
    shot(page, "help")
    page.keyboard.press("?")
    assert not page.is_visible("#help-dialog")
