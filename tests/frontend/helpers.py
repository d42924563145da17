"""Steps the browser tests share: log in, open a scan, paint, wait for a save, read the server."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
from django.core.files.storage import default_storage

from labeling.models import AnnotationRevision, Assignment


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Log in; a rater lands on the worklist, a lead or admin who rates nothing on the project pages."""
    page.goto(f"{base_url}/login/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-button")
    # "commit", not "load": the landing page's readiness is what the test needs, and a slow static
    # file on a busy machine must not read as a failed log-in.
    try:
        page.wait_for_url(
            lambda url: url.split(base_url, 1)[-1].split("?")[0] == "/" or "/projects/" in url, wait_until="commit"
        )
    except Exception as error:
        raise AssertionError(
            f"Log-in as {username} did not leave {page.url}: {page.inner_text('#login-error')!r}"
        ) from error
    if "/projects/" in page.url:
        page.wait_for_selector("body[data-ready]")
    else:
        page.wait_for_function("document.getElementById('worklist-summary').textContent !== 'Loading…'")


def open_assignment(page, base_url: str, assignment_id: int) -> None:
    page.goto(f"{base_url}/annotate/{assignment_id}/")
    wait_ready(page)


def wait_ready(page) -> None:
    page.wait_for_selector("body[data-ready]")
    state = page.evaluate("document.body.dataset.ready")
    if state != "true":
        raise AssertionError(f"The viewer did not open: {page.inner_text('#page-error')}")


def wait_state(page, state: str, timeout: float = 20000) -> None:
    page.wait_for_selector(f"#save-state[data-state={state}]", timeout=timeout)


def canvas_point(page, fx: float, fy: float) -> tuple[float, float]:
    """A point of the canvas, as fractions of its width and height."""
    box = page.locator("#gl").bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def crosshair(page) -> list[int]:
    return page.evaluate("window.mriannot.viewer.crosshairVoxel()")


def stroke(page, start, end, steps: int = 10) -> tuple[list[int], list[int]]:
    """Drag the left button from start to end; returns the voxels under both ends."""
    page.mouse.move(*start)
    page.mouse.down()
    first = crosshair(page)
    page.mouse.move(*end, steps=steps)
    last = crosshair(page)
    page.mouse.up()
    return first, last


def click(page, point) -> list[int]:
    page.mouse.click(*point)
    return crosshair(page)


def drawing(page) -> np.ndarray:
    """NiiVue's drawing bitmap as an (X, Y, Z) array (x fastest, as stored)."""
    dims = page.evaluate("window.mriannot.viewer.dims")
    flat = page.evaluate("Array.from(window.mriannot.viewer.bitmap)")
    return np.asarray(flat, dtype=np.uint8).reshape(dims, order="F")


def latest_revision(assignment: Assignment) -> AnnotationRevision | None:
    return AnnotationRevision.objects.filter(assignment=assignment).order_by("-number").first()


def read_nifti(name: str) -> nib.Nifti1Image:
    """A NIfTI file from storage (plain or gzip), read by nibabel."""
    with default_storage.open(name, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return nib.Nifti1Image.from_bytes(raw)


def revision_labels(revision: AnnotationRevision) -> np.ndarray:
    """The stored label map of a revision."""
    return np.asarray(read_nifti(revision.file.name).dataobj).astype(np.uint8)


def scan_image(scan) -> tuple[np.ndarray, np.ndarray]:
    """The stored (canonical RAS+) scan: voxels and affine."""
    img = read_nifti(scan.image.name)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine
