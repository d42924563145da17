"""Benchmark of the annotation viewer, on loopback, in headless Chromium, in one run.

1. Opening: the time from navigation to the first frame of a 1 mm scan with its latest
   revision, in the real viewer page (/annotate/<id>/), against a bare NiiVue page that loads
   the same two files from the same server (the library's floor: new Niivue, attachToCanvas,
   loadVolumes, then the labels fetched and given to loadDrawing, as loadDrawingFromUrl does
   but with timing marks; one animation frame). Target: viewer <= 1.2 x bare.
2. Saving: the round trip of a 1 mm label volume from the real page: export the drawing
   (NiiVue saveImage), gzip it, POST it as a new revision, get the answer. Target: p95 < 300 ms.

The server is the app's own local server (``manage.py runserver``, as scripts/run.sh starts
it) on a throwaway database; the scan is the MNI152 2009a template at 1 mm (197x233x189,
shipped with nilearn), the revision a GM / WM / CSF labelling from its tissue masks.
The bare page is built by Vite from the same NiiVue package (frontend/node_modules) and served
from memory, so it pays no server round trip for its script: the comparison is conservative.
Page opens alternate (bare, viewer, bare, ...), each in a fresh browser profile (cold cache).

Usage:  .venv/bin/python bench/bench_viewer.py [--runs 5] [--saves 20] [--resolution 1]
Prints a table and writes bench/out/bench_viewer.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))
from tests.frontend.conftest import CHROMIUM, CHROMIUM_ARGS

VIEWPORT = {"width": 1280, "height": 860}
USER, PASSWORD = "bench", "bench-password-1"

BARE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>bare NiiVue</title></head>
<body style="margin:0;background:#000">
<canvas id="gl" style="display:block"></canvas>
<script type="module" src="./main.js"></script>
</body></html>
"""

# The bare page: only what NiiVue needs to show the scan and its drawing, with the viewer's
# layout (multiplanar grid with the 3D view, nearest-neighbour) on a canvas of the same size.
BARE_JS = """
import { MULTIPLANAR_TYPE, NVImage, Niivue, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
const params = new URLSearchParams(window.location.search);
const canvas = document.getElementById("gl");
canvas.style.width = `${params.get("w")}px`;
canvas.style.height = `${params.get("h")}px`;
const nv = new Niivue({
  sliceType: SLICE_TYPE.MULTIPLANAR,
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  multiplanarLayout: MULTIPLANAR_TYPE.GRID,
  isNearestInterpolation: true,
  isColorbar: false,
  logLevel: "warn",
});
const phases = { start: performance.now() };
await nv.attachToCanvas(canvas);
phases.attached = performance.now();
await nv.loadVolumes([{ url: params.get("image"), name: "scan.nii.gz" }]);
phases.imageLoaded = performance.now();
const response = await fetch(params.get("labels"));
const buffer = await response.arrayBuffer();
phases.labelsFetched = performance.now();
const drawing = await NVImage.loadFromUrl({ url: "labels.nii.gz", name: "labels.nii.gz", buffer });
phases.labelsParsed = performance.now();
const ok = nv.loadDrawing(drawing);
phases.labelsLoaded = performance.now();
await new Promise((resolve) => requestAnimationFrame(() => resolve()));
phases.firstFrame = performance.now();
window.bench = { firstFrame: phases.firstFrame, phases, drawingLoaded: ok, voxels: nv.drawBitmap ? nv.drawBitmap.length : 0 };
"""


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_frontend() -> None:
    if not (FRONTEND / "dist" / "annotate.html").exists():
        log("building the front end")
        if not (FRONTEND / "node_modules").is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=FRONTEND, check=True)
        subprocess.run(["npm", "run", "build", "--silent"], cwd=FRONTEND, check=True)


def build_bare_page() -> Path:
    """Build the bare NiiVue page with Vite, from the same NiiVue package as the viewer."""
    src = OUT / "bare-src"
    dist = OUT / "bare-dist"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "index.html").write_text(BARE_HTML)
    (src / "main.js").write_text(BARE_JS)
    niivue = FRONTEND / "node_modules" / "@niivue" / "niivue" / "build" / "niivue" / "index.js"
    config = {
        "root": str(src),
        "base": "/__bench__/",
        "logLevel": "warn",
        "resolve": {"alias": {"@niivue/niivue": str(niivue)}},
        "build": {"outDir": str(dist), "emptyOutDir": True, "target": "es2022", "chunkSizeWarningLimit": 8192},
    }
    (src / "vite.config.mjs").write_text(f"export default {json.dumps(config)};\n")
    vite = FRONTEND / "node_modules" / "vite" / "bin" / "vite.js"
    subprocess.run(["node", str(vite), "build", "--config", str(src / "vite.config.mjs")], cwd=src, check=True)
    return dist


def make_data(resolution: int) -> dict:
    """A project, a 1 mm MNI152 scan and one revision of GM / WM / CSF labels (in this process)."""
    import django

    django.setup()
    import nibabel as nib
    import numpy as np
    from django.contrib.auth import get_user_model
    from nilearn import datasets

    from labeling import services
    from labeling.models import Assignment, Role

    template = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_mask(resolution=resolution).get_fdata() > 0
    wm = datasets.load_mni152_wm_mask(resolution=resolution).get_fdata() > 0
    brain = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata() > 0
    labels = np.zeros(template.shape, np.uint8)
    labels[brain] = 1
    labels[gm] = 2
    labels[wm & ~gm] = 3
    image = nib.Nifti1Image(np.asarray(template.get_fdata(), np.float32), template.affine)

    User = get_user_model()
    lead = User.objects.create_user("bench-lead", password=PASSWORD)
    annotator = User.objects.create_user(USER, password=PASSWORD)
    project = services.project_create(
        actor=lead,
        name="Viewer benchmark",
        raters_per_scan=1,
        labels=[
            {"value": 1, "name": "CSF", "color": "#3366ff"},
            {"value": 2, "name": "Grey matter", "color": "#22aa55"},
            {"value": 3, "name": "White matter", "color": "#eeeeee"},
        ],
    )
    services.membership_set(project=project, actor=lead, user=annotator, role=Role.ANNOTATOR)
    scan = services.scan_create(
        project=project,
        actor=lead,
        raw=gzip.compress(image.to_bytes(), 1),
        filename="mni152.nii.gz",
        subject_id="mni152",
    )
    assignment = Assignment.objects.get(scan=scan, annotator=annotator)
    raw = gzip.compress(nib.Nifti1Image(labels, template.affine).to_bytes(), 1)
    revision, _ = services.revision_create(assignment=assignment, actor=annotator, raw=raw, base_revision_id=None)
    return {"scan": scan.pk, "assignment": assignment.pk, "revision": revision.pk, "shape": list(scan.shape)}


def start_server(env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [PYTHON, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start within 60 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def logged_in_context(browser, base: str, *, autosave_ms: int = 60000):
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(f"window.localStorage.setItem('mriannot.autosaveDelayMs', '{autosave_ms}')")
    # The log-in POST needs the CSRF token (login CSRF): GET gives the cookie and the token.
    csrf = context.request.get(f"{base}/api/v1/auth/login/").json()["csrf_token"]
    response = context.request.post(
        f"{base}/api/v1/auth/login/",
        data={"username": USER, "password": PASSWORD},
        headers={"X-CSRFToken": csrf, "Referer": f"{base}/login/"},
    )
    if not response.ok:
        raise RuntimeError(f"log-in failed: {response.status} {response.text()}")
    return context


def open_viewer(browser, base: str, data: dict, *, keep: bool = False):
    context = logged_in_context(browser, base)
    page = context.new_page()
    page.goto(f"{base}/annotate/{data['assignment']}/")
    page.wait_for_function("window.mriannot && window.mriannot.timing.firstFrame", timeout=180000)
    timing = page.evaluate("window.mriannot.timing")
    canvas = page.locator("#gl").bounding_box()
    result = {"first_frame_ms": timing["firstFrame"], "phases_ms": timing}
    if keep:
        return result, canvas, context, page
    context.close()
    return result, canvas


def open_bare(browser, base: str, data: dict, bare_dist: Path, canvas: dict) -> dict:
    context = logged_in_context(browser, base)
    files = {p.relative_to(bare_dist).as_posix(): p.read_bytes() for p in bare_dist.rglob("*") if p.is_file()}

    def serve(route):
        name = route.request.url.split("/__bench__/", 1)[1].split("?", 1)[0] or "index.html"
        body = files.get(name)
        if body is None:
            route.fulfill(status=404, body="not found")
            return
        kind = (
            "text/html"
            if name.endswith(".html")
            else "text/javascript"
            if name.endswith(".js")
            else "application/octet-stream"
        )
        route.fulfill(status=200, body=body, headers={"Content-Type": kind})

    context.route(f"{base}/__bench__/**", serve)
    page = context.new_page()
    image = f"/api/v1/scans/{data['scan']}/image/"
    labels = f"/api/v1/revisions/{data['revision']}/labels/"
    page.goto(
        f"{base}/__bench__/index.html?image={image}&labels={labels}&w={int(canvas['width'])}&h={int(canvas['height'])}"
    )
    page.wait_for_function("window.bench && window.bench.firstFrame", timeout=180000)
    bench = page.evaluate("window.bench")
    context.close()
    if not bench["drawingLoaded"] or bench["voxels"] != data["voxels"]:
        raise RuntimeError(f"the bare page did not load the drawing: {bench}")
    return {"first_frame_ms": bench["firstFrame"], "phases_ms": bench["phases"]}


SAVE_ONE = """async (i) => {
  const app = window.mriannot;
  const [nx, ny, nz] = app.viewer.dims;
  const bitmap = app.viewer.bitmap;
  // an edit somewhere in the brain: a 6x6x6 block takes the next label
  const x0 = 60 + (i * 7) % 60, y0 = 80 + (i * 11) % 60, z0 = 60 + (i * 5) % 50;
  for (let z = z0; z < z0 + 6; z++) for (let y = y0; y < y0 + 6; y++) for (let x = x0; x < x0 + 6; x++)
    bitmap[x + y * nx + z * nx * ny] = 1 + (i % 3);
  app.tools.syncNiivue();
  const state = await app.autosave.flush();
  return { state, timing: app.autosave.lastTiming, revision: app.autosave.base };
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="page opens of each kind (default 5)")
    parser.add_argument("--saves", type=int, default=20, help="measured saves (default 20, after 2 warm-ups)")
    parser.add_argument("--resolution", type=int, default=1, choices=[1, 2], help="MNI152 resolution in mm")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    build_frontend()
    bare_dist = build_bare_page()
    data_dir = Path(tempfile.mkdtemp(prefix="mriannot-bench-"))
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mriannot.settings",
            "DJANGO_DEBUG": "true",  # runserver serves the static files, as in scripts/run.sh
            "MRIANNOT_DATA_DIR": str(data_dir),
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    from mriannot.localredis import start_redis

    # The app queues background work (ranking new scans) on a Redis broker; no worker is needed here.
    redis = start_redis(env=env)
    env["REDIS_URL"] = redis.url
    os.environ.update(
        {
            k: env[k]
            for k in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "MRIANNOT_DATA_DIR", "DJANGO_LOG_LEVEL", "REDIS_URL")
        }
    )
    server = None
    try:
        subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True
        )
        log(f"making a {args.resolution} mm scan and its revision")
        data = make_data(args.resolution)
        data["voxels"] = data["shape"][0] * data["shape"][1] * data["shape"][2]
        port = free_port()
        server = start_server(env, port)
        base = f"http://127.0.0.1:{port}"
        log(f"server at {base}; scan {data['shape']} ({data['voxels']} voxels)")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            _, canvas = open_viewer(browser, base, data)  # warm-up (server, disk cache); also sizes the bare canvas
            viewer_runs, bare_runs = [], []
            for run in range(args.runs):
                bare_runs.append(open_bare(browser, base, data, bare_dist, canvas))
                viewer_runs.append(open_viewer(browser, base, data)[0])
                for kind, result in (("bare", bare_runs[-1]), ("viewer", viewer_runs[-1])):
                    phases = ", ".join(f"{k} {v:.0f}" for k, v in result["phases_ms"].items())
                    log(f"open run {run + 1}/{args.runs}, {kind}: {result['first_frame_ms']:.0f} ms ({phases})")
            _, _, context, page = open_viewer(browser, base, data, keep=True)
            saves = []
            for i in range(2 + args.saves):
                result = page.evaluate(SAVE_ONE, i)
                if result["state"] != "saved":
                    raise RuntimeError(f"save {i} ended in state {result['state']}")
                if i >= 2:
                    saves.append(result["timing"])
            context.close()
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    bare = [r["first_frame_ms"] for r in bare_runs]
    viewer = [r["first_frame_ms"] for r in viewer_runs]
    ratio = statistics.median(viewer) / statistics.median(bare)
    totals = [s["total"] for s in saves]
    summary = {
        "scan_shape": data["shape"],
        "runs": args.runs,
        "open_bare_ms": bare,
        "open_viewer_ms": viewer,
        "open_ratio_median": ratio,
        "saves": saves,
        "save_p50_ms": percentile(totals, 0.5),
        "save_p95_ms": percentile(totals, 0.95),
        "save_max_ms": max(totals),
        "save_phase_median_ms": {k: statistics.median(s[k] for s in saves) for k in ("export", "gzip", "request")},
        "save_gzip_bytes_median": statistics.median(s["bytes"] for s in saves),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    (OUT / "bench_viewer.json").write_text(json.dumps(summary, indent=2))

    shape = "x".join(str(n) for n in data["shape"])
    print()
    print(f"Viewer benchmark: {args.resolution} mm scan {shape}, loopback, headless Chromium (SwiftShader)")
    print(f"{'measure':<46} {'median':>9} {'min':>9} {'max':>9}")
    print(
        f"{'open, bare NiiVue page (ms to first frame)':<46} {statistics.median(bare):>9.0f} {min(bare):>9.0f} {max(bare):>9.0f}"
    )
    print(
        f"{'open, viewer /annotate/ (ms to first frame)':<46} {statistics.median(viewer):>9.0f} {min(viewer):>9.0f} {max(viewer):>9.0f}"
    )
    print(
        f"{'open ratio viewer / bare (medians)':<46} {ratio:>9.2f}   target <= 1.20  {'PASS' if ratio <= 1.2 else 'FAIL'}"
    )
    print(
        f"{'save round trip (ms), ' + str(len(totals)) + ' saves':<46} p50 {summary['save_p50_ms']:>5.0f}  p95 {summary['save_p95_ms']:>5.0f}  max {summary['save_max_ms']:>5.0f}   target p95 < 300  {'PASS' if summary['save_p95_ms'] < 300 else 'FAIL'}"
    )
    phases = summary["save_phase_median_ms"]
    print(
        f"{'  of which (medians): export / gzip / request':<46} {phases['export']:.0f} / {phases['gzip']:.0f} / {phases['request']:.0f} ms"
        f"  ({summary['save_gzip_bytes_median'] / 1024:.0f} KiB sent)"
    )
    print(
        f"(machine: {os.cpu_count()} CPUs, 1-min load average {summary['load_average_1min']:.1f}; raw figures in {OUT / 'bench_viewer.json'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
