"""Several sequences of a scan (T1w + FLAIR on one grid) in the viewer and the review page.

Headless Chromium against the real server. What is shown is read from NiiVue's state (the
volumes it holds, their names, windows and opacities); what is saved from the stored revision.
One pixel is read back from WebGL: that the labels stay above an opaque overlay sequence.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.storage import default_storage

from labeling import services, volumes
from tests import factories
from tests.frontend.helpers import (
    canvas_point,
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
from tests.frontend.lead_helpers import SHAPE, purge_queues, rated_project

pytestmark = pytest.mark.browser

GREY_MATTER = (0x22, 0xAA, 0x55)  # label 2's colour in viewer_world


def flair_of(t1: np.ndarray) -> np.ndarray:
    """A FLAIR-like image: the inverse contrast, in another intensity range (about 1600-3600)."""
    return (4000.0 - 4.0 * t1).astype(np.float32)


def add_flair(scan, lead, affine) -> None:
    project = scan.project
    project.refresh_from_db()
    if project.channels != ["T1w", "FLAIR"]:
        services.project_update(project=project, actor=lead, channels=["T1w", "FLAIR"])
        project.refresh_from_db()
    t1 = np.asarray(read_nifti(scan.image.name).dataobj, dtype=np.float32)  # stored RAS+
    services.scan_channel_add(scan=scan, actor=lead, raw=factories.nifti_bytes(flair_of(t1), affine), role="FLAIR")


@pytest.fixture
def channel_world(viewer_world):
    """viewer_world with T1w + FLAIR declared; the first scan has both, the second only its T1w."""
    world = viewer_world
    scan = world["scans"][0]
    _, affine = scan_image(scan)
    add_flair(scan, world["lead"], affine)
    return world


def state(page) -> dict:
    return page.evaluate("window.mriannot.channels.state()")


def volumes_shown(page) -> list[dict]:
    return page.evaluate(
        "window.mriannot.viewer.nv.volumes.map((v) => ({name: v.name, min: v.cal_min, max: v.cal_max, opacity: v.opacity}))"
    )


def window_level(page) -> dict:
    return page.evaluate("window.mriannot.viewer.windowLevel()")


def wait_background(page, role: str) -> None:
    page.wait_for_selector(f"body[data-channel-background='{role}']")


def blur(page) -> None:
    """Give the keyboard back to the page (a focused select keeps the shortcuts off)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")


def pixel_at(page, point) -> list[int]:
    """The RGBA NiiVue draws at a page point (a frame drawn and read back at once)."""
    return page.evaluate(
        """([x, y]) => {
          const nv = window.mriannot.viewer.nv;
          const canvas = nv.canvas;
          const rect = canvas.getBoundingClientRect();
          const px = Math.floor(((x - rect.left) * canvas.width) / rect.width);
          const py = Math.floor(((y - rect.top) * canvas.height) / rect.height);
          nv.drawScene();
          const out = new Uint8Array(4);
          nv.gl.readPixels(px, canvas.height - 1 - py, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, out);
          return Array.from(out);
        }""",
        list(point),
    )


def test_two_sequences_background_overlay_window_and_save(live_server, page, channel_world, shot):
    world = channel_world
    assignment = world["mine"][0]
    scan = assignment.scan
    t1, affine = scan_image(scan)
    flair_channel = scan.channels.get(role="FLAIR")
    flair = np.asarray(read_nifti(flair_channel.image.name).dataobj, dtype=np.float32)
    np.testing.assert_allclose(flair, flair_of(t1), rtol=1e-5)
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.wait_for_selector("body[data-channels=ready]")

    # Both sequences are listed; the scan's own image (T1w) is the background, no overlay.
    assert page.is_visible("#channel-controls")
    assert page.locator("#channel-background option").all_inner_texts() == ["T1w", "FLAIR"]
    assert page.locator("#channel-overlay option").all_inner_texts() == ["None", "T1w", "FLAIR"]
    assert page.input_value("#channel-background") == "T1w" and page.input_value("#channel-overlay") == ""
    assert page.is_disabled("#channel-opacity")
    assert page.is_disabled("#channel-overlay option[value='T1w']"), "the background cannot be its own overlay"
    seen = state(page)
    assert seen["roles"] == ["T1w", "FLAIR"] and seen["loaded"] == ["T1w", "FLAIR"]
    assert seen["shown"] == ["T1w"] and seen["overlay"] is None
    assert [v["name"] for v in volumes_shown(page)] == ["scan.nii.gz"]
    t1_auto = window_level(page)
    assert t1_auto["max"] < 1000, "the T1w's robust range"

    # The T1w's window: the "narrow" preset.
    page.select_option("#wl-preset", "narrow")
    t1_narrow = window_level(page)
    assert t1_narrow["window"] < t1_auto["window"]

    # FLAIR as the background: NiiVue shows it (its own window, NiiVue's robust range), and the
    # read-out gives the FLAIR's intensity at the crosshair, on the same voxel.
    page.select_option("#channel-background", "FLAIR")
    wait_background(page, "FLAIR")
    shown = volumes_shown(page)
    assert [v["name"] for v in shown] == ["FLAIR.nii.gz"] and state(page)["shown"] == ["FLAIR"]
    flair_auto = window_level(page)
    assert flair_auto["min"] > 1000, "the FLAIR's range, not the T1w's"
    assert page.input_value("#wl-preset") == "auto"
    vox = [20, 24, 18]
    page.evaluate("(vox) => window.mriannot.viewer.setCrosshairVoxel(vox)", vox)
    assert float(page.inner_text("#readout-value")) == pytest.approx(float(flair[tuple(vox)]), abs=0.01)
    page.select_option("#wl-preset", "bright")
    flair_bright = window_level(page)
    assert flair_bright["min"] > flair_auto["min"]
    shot(page, "flair-background")

    # Shift+C cycles the background; each sequence has its own window back.
    blur(page)
    page.keyboard.press("Shift+C")
    wait_background(page, "T1w")
    assert state(page)["shown"] == ["T1w"]
    assert window_level(page) == pytest.approx(t1_narrow)
    assert page.input_value("#wl-preset") == "narrow"
    assert page.input_value("#channel-background") == "T1w"
    page.keyboard.press("Shift+C")
    wait_background(page, "FLAIR")
    assert window_level(page) == pytest.approx(flair_bright)
    assert page.input_value("#wl-preset") == "bright"
    windows = state(page)["windows"]
    assert windows["T1w"]["min"] == pytest.approx(t1_narrow["min"]) and windows["FLAIR"]["min"] == pytest.approx(
        flair_bright["min"]
    )
    page.keyboard.press("?")
    assert "Next sequence as the background" in page.inner_text("#help-content")
    page.keyboard.press("?")

    # The T1w on top of the FLAIR, at 50 % then 100 %; the labels stay above it.
    page.select_option("#channel-overlay", "T1w")
    page.wait_for_selector("body[data-channel-overlay='T1w']")
    shown = volumes_shown(page)
    assert [v["name"] for v in shown] == ["FLAIR.nii.gz", "scan.nii.gz"]
    assert shown[1]["opacity"] == pytest.approx(0.5) and shown[0]["opacity"] == 1
    assert shown[1]["min"] == pytest.approx(t1_narrow["min"]), "the overlay keeps its own window"
    assert page.is_enabled("#channel-opacity") and page.inner_text("#channel-opacity-value") == "50 %"
    page.fill("#channel-opacity", "100")
    page.dispatch_event("#channel-opacity", "input")
    assert volumes_shown(page)[1]["opacity"] == pytest.approx(1.0)
    assert page.inner_text("#channel-opacity-value") == "100 %"
    assert state(page)["labelsOnTop"] is True
    assert window_level(page) == pytest.approx(flair_bright), "the window/level controls act on the background"

    # Paint with the FLAIR as the background and the T1w above it: exactly the drawn voxels are
    # stored, on the scan's grid, with the scan's header.
    page.fill("#label-opacity", "100")
    page.dispatch_event("#label-opacity", "input")
    blur(page)
    page.keyboard.press("a")
    page.keyboard.press("b")
    page.keyboard.press("2")  # Grey matter, value 2
    start = canvas_point(page, 0.42, 0.40)
    first, last = stroke(page, start, canvas_point(page, 0.58, 0.62))
    wait_state(page, "saved")
    shot(page, "painted-over-overlay")
    revision = latest_revision(assignment)
    stored = revision_labels(revision)
    np.testing.assert_array_equal(stored, drawing(page))
    assert stored[tuple(first)] == 2 and stored[tuple(last)] == 2
    assert set(np.unique(stored).tolist()) == {0, 2}
    assert stored.shape == tuple(scan.shape)
    np.testing.assert_allclose(read_nifti(revision.file.name).affine, affine, atol=1e-4)
    with default_storage.open(revision.file.name, "rb") as handle:
        assert volumes.storable_as_sent(handle.read()), "the labels carry the scan's own header"

    # The painted voxel shows the label's colour through the opaque overlay (every T1w voxel
    # opaque: voxels at or below the bottom of an overlay's window are transparent in NiiVue).
    page.evaluate(
        """() => {
          const nv = window.mriannot.viewer.nv;
          nv.volumes[1].cal_min = nv.volumes[1].global_min - 1;
          nv.updateGLVolume();
        }"""
    )
    page.evaluate("(z) => window.mriannot.viewer.setCrosshairVoxel([1, 1, z])", first[2])
    page.keyboard.press("l")  # labels hidden: the T1w alone
    overlay_only = pixel_at(page, start)
    page.keyboard.press("l")
    red, green, blue, _ = pixel_at(page, start)
    assert (red, green, blue) == pytest.approx(GREY_MATTER, abs=3)

    # No overlay again: NiiVue's own slice shader, the FLAIR alone.
    page.select_option("#channel-overlay", "")
    page.wait_for_selector("body[data-channel-overlay='']")
    assert state(page)["shown"] == ["FLAIR"] and state(page)["labelsOnTop"] is False
    assert page.is_disabled("#channel-opacity")
    page.keyboard.press("l")
    assert pixel_at(page, start) != overlay_only, "the overlay was drawn there"
    page.keyboard.press("l")
    # Choosing the overlay as the background makes it the background alone.
    page.select_option("#channel-overlay", "T1w")
    page.wait_for_selector("body[data-channel-overlay='T1w']")
    page.select_option("#channel-background", "T1w")
    wait_background(page, "T1w")
    assert state(page)["shown"] == ["T1w"] and state(page)["overlay"] is None
    assert volumes_shown(page)[0]["opacity"] == 1
    assert page.input_value("#channel-overlay") == ""
    np.testing.assert_array_equal(drawing(page), stored)  # the drawing never changes with the sequences


def test_a_scan_lacking_a_declared_sequence(live_server, page, channel_world):
    """The second scan has no FLAIR: listed as missing, not selectable; Shift+C says so."""
    world = channel_world
    assignment = world["mine"][1]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.wait_for_selector("body[data-channels=ready]")
    assert page.is_visible("#channel-controls")
    assert page.locator("#channel-background option").all_inner_texts() == ["T1w", "FLAIR (missing)"]
    assert page.is_disabled("#channel-background option[value='FLAIR']")
    page.keyboard.press("Shift+C")
    assert page.inner_text("#message") == "This scan has no other sequence to show."
    assert state(page)["shown"] == ["T1w"]


def test_one_sequence_shows_no_select(live_server, page, viewer_world):
    """A project that declares no sequences: the viewer as before, no sequence controls or key."""
    world = viewer_world
    assignment = world["mine"][0]
    log_in(page, live_server.url, "rater1", world["password"])
    open_assignment(page, live_server.url, assignment.pk)
    page.wait_for_selector("body[data-channels=ready]")
    assert page.is_hidden("#channel-controls")
    assert state(page)["roles"] == ["T1w"] and state(page)["shown"] == ["T1w"]
    assert [v["name"] for v in volumes_shown(page)] == ["scan.nii.gz"]
    page.keyboard.press("Shift+C")
    assert state(page)["shown"] == ["T1w"]
    page.keyboard.press("?")
    assert "Next sequence" not in page.inner_text("#help-content")


def test_review_page_offers_the_sequences(live_server, page, transactional_db, local_queue, shot):
    world = rated_project(n_raters=3, n_scans=1, drifting="rater3", ambiguity_threshold=0.0)
    purge_queues(local_queue)  # tasks queued while building the world: already run here
    scan = world.project.scans.get()
    _, affine = scan_image(scan)
    add_flair(scan, world.lead, affine)
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    page.goto(f"{live_server.url}/review/{scan.pk}/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")
    page.wait_for_selector("body[data-channels=ready]")
    assert page.is_visible("#channel-controls")
    assert page.locator("#channel-background option").all_inner_texts() == ["T1w", "FLAIR"]
    consensus = drawing(page)
    assert consensus.shape == SHAPE and consensus.any()

    page.select_option("#channel-background", "FLAIR")
    wait_background(page, "FLAIR")
    assert state(page)["shown"] == ["FLAIR"]
    assert window_level(page)["min"] > 1000
    page.select_option("#channel-overlay", "T1w")
    page.wait_for_selector("body[data-channel-overlay='T1w']")
    assert state(page)["shown"] == ["FLAIR", "T1w"]
    np.testing.assert_array_equal(drawing(page), consensus)  # the consensus overlay stays as it is

    # The uncertainty comes above the overlay sequence, and hides again with the consensus.
    page.check("#overlay-uncertainty")
    page.wait_for_selector("body[data-overlay=uncertainty]")
    assert state(page)["shown"] == ["FLAIR", "T1w", None]
    assert volumes_shown(page)[2]["opacity"] > 0
    shot(page, "review-flair-uncertainty")
    page.check("#overlay-consensus")
    page.wait_for_selector("body[data-overlay=consensus]")
    assert volumes_shown(page)[2]["opacity"] == 0
    np.testing.assert_array_equal(drawing(page), consensus)
    blur(page)
    page.keyboard.press("Shift+C")
    wait_background(page, "T1w")
    assert state(page)["shown"][:1] == ["T1w"] and state(page)["overlay"] is None
