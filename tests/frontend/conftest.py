"""Browser-test fixtures: the built front end, headless Chromium (Debian's), a small world.

The browser tests drive the real pages, served by pytest-django's ``live_server`` (the real
Django app in a thread, static files included), with Python Playwright and the Chromium that
Debian installs at /usr/bin/chromium (never ``playwright install``). Screenshots go to
artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"
DIST = FRONTEND / "dist"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("MRIANNOT_CHROMIUM", "/usr/bin/chromium")
# Flags that work headless on these machines (docs: shared/reference/PLATFORM.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--use-gl=angle",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Playwright's sync API keeps an asyncio loop in the main thread; Django's ORM would then
# refuse to run from test code ("async context"). The test code is synchronous: allow it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def missing_tool(reason: str):
    """Skip on a developer machine without the tool; fail in CI, where it must be there."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _sources_newer_than_build() -> bool:
    built = DIST / "annotate.html"
    if not built.exists():
        return True
    stamp = built.stat().st_mtime
    sources = [FRONTEND / "package.json", FRONTEND / "vite.config.js", *(FRONTEND / "src").rglob("*")]
    return any(p.is_file() and p.stat().st_mtime > stamp for p in sources)


@pytest.fixture(scope="session")
def frontend_dist() -> Path:
    """frontend/dist, built now if it is missing or older than the sources."""
    if _sources_newer_than_build():
        npm = shutil.which("npm")
        if npm is None:
            missing_tool("npm is not installed: cannot build the front end (see scripts/test.sh)")
        if not (FRONTEND / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=FRONTEND, check=True)
        subprocess.run([npm, "run", "build", "--silent"], cwd=FRONTEND, check=True)
    return DIST


@pytest.fixture(autouse=True)
def _serve_frontend(request, settings):
    """Serve frontend/dist as static files even if it did not exist when settings were read."""
    if "live_server" in request.fixturenames:
        dist = request.getfixturevalue("frontend_dist")
        settings.STATICFILES_DIRS = [dist]
        # The pages run under the production Content-Security-Policy, with one addition:
        # Playwright's wait_for_function evaluates its predicate with eval. The pages' own code
        # needs no eval (the policy served has none: tests/labeling/test_auth_hardening.py).
        policy = settings.CONTENT_SECURITY_POLICY
        directives = {**policy["DIRECTIVES"], "script-src": [*policy["DIRECTIVES"]["script-src"], "'unsafe-eval'"]}
        settings.CONTENT_SECURITY_POLICY = {**policy, "DIRECTIVES": directives}


@pytest.fixture(scope="session")
def playwright_instance():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance):
    if not Path(CHROMIUM).exists():
        missing_tool(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser):
    """A fresh browser profile per test (cookies, IndexedDB), with a short autosave delay.

    The viewer opens in the axial view (the last view is remembered per browser): software GL
    draws a single slice much faster than the multiplanar layout with its 3D rendering.
    Tests of the default layout set "mriannot.view" themselves.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.add_init_script(
        """try {
          if (!sessionStorage.getItem('mriannot.test')) {  // once per tab, so tests may change them
            sessionStorage.setItem('mriannot.test', '1');
            localStorage.setItem('mriannot.autosaveDelayMs', '250');
            if (!localStorage.getItem('mriannot.view')) localStorage.setItem('mriannot.view', 'axial');
          }
        } catch (error) {}  // about:blank has no storage"""
    )
    yield context
    context.close()


class PageErrors(list):
    """JavaScript errors raised on the page (uncaught exceptions)."""


def _csp_violation(message) -> str | None:
    """Chromium reports a Content-Security-Policy violation as a console error."""
    text = message.text
    if message.type == "error" and "Content Security Policy" in text:
        return text
    return None


@pytest.fixture
def page(context):
    page = context.new_page()
    page.set_default_timeout(30000)
    errors = PageErrors()
    csp_violations: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: (v := _csp_violation(message)) and csp_violations.append(v))
    page.js_errors = errors
    page.csp_violations = csp_violations
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not csp_violations, f"Content-Security-Policy violations on the page: {csp_violations}"


@pytest.fixture
def shot(request):
    """shot(page, "step") saves artifacts/screenshots/<test>-<step>.png for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, step: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{step}.png"
        page.screenshot(path=str(path))
        return path

    return take


# --- data ---------------------------------------------------------------------------------------


# A non-identity, non-RAS, slightly oblique affine: voxel axes i -> left, j -> superior,
# k -> posterior (orientation "LSP"), anisotropic voxels, rotated 8 degrees about z, shifted.
# The server stores the scan reoriented to RAS+; the labels must land on the same voxels.
def oblique_lsp_affine() -> np.ndarray:
    axes = np.array([[-2.0, 0.0, 0.0], [0.0, 0.0, -3.0], [0.0, 2.5, 0.0]])
    a = np.deg2rad(8.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes
    affine[:3, 3] = [40.0, 70.0, -30.0]
    return affine


def asymmetric_image(shape, seed: int) -> np.ndarray:
    """A smooth, asymmetric float32 image with a bright blob: flips and swaps are visible."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape, dtype=np.float32)
    centre = np.array(shape, np.float32) * np.array([0.35, 0.55, 0.5], np.float32)
    blob = np.exp(-(((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * 6.0**2)))
    image = 100 + 2.0 * x + 1.0 * y + 0.5 * z + 400 * blob + rng.normal(0, 0.5, shape)
    return image.astype(np.float32)


@pytest.fixture(scope="session")
def local_queue(celery_session_app):
    """Tasks the app queues go to a real local Redis (no worker runs them)."""
    return celery_session_app


@pytest.fixture
def viewer_world(transactional_db, local_queue):
    """Two annotators on two scans (both rate both), a lead; labels CSF / GM / lesion.

    Scans are 40x48x36 voxels with the oblique LSP affine above; rater1's first scan has
    the higher priority. The project is marked simulated so the notice shows. The app may
    queue background tasks as it goes (on commit): they go to a real local Redis, and no
    worker runs them.
    """
    from labeling import services
    from labeling.models import Assignment, Project, Role
    from tests import factories

    lead = factories.UserFactory(username="lead")
    rater1 = factories.UserFactory(username="rater1")
    rater2 = factories.UserFactory(username="rater2")
    project = services.project_create(
        actor=lead,
        name="Browser test project",
        raters_per_scan=2,
        labels=[
            {"value": 1, "name": "CSF", "color": "#3366ff"},
            {"value": 2, "name": "Grey matter", "color": "#22aa55"},
            {"value": 4, "name": "Lesion", "color": "#ff5500"},
        ],
    )
    Project.objects.filter(pk=project.pk).update(is_simulated=True)
    for user in (rater1, rater2):
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    shape = (40, 48, 36)
    scans = []
    for i, subject in enumerate(["sub-01", "sub-02"]):
        raw = factories.nifti_bytes(asymmetric_image(shape, seed=i), oblique_lsp_affine())
        scans.append(services.scan_create(project=project, actor=lead, raw=raw, subject_id=subject))
    Assignment.objects.filter(scan=scans[0]).update(priority=0.9)
    Assignment.objects.filter(scan=scans[1]).update(priority=0.4)
    mine = list(Assignment.objects.filter(annotator=rater1).order_by("-priority"))
    theirs = list(Assignment.objects.filter(annotator=rater2).order_by("-priority"))
    return {
        "project": project,
        "lead": lead,
        "rater1": rater1,
        "rater2": rater2,
        "scans": scans,
        "mine": mine,
        "theirs": theirs,
        "password": factories.PASSWORD,
    }
