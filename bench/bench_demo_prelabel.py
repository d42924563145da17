"""The demo's pre-labels, end to end: a model version trained on 20 SIMULATED scans at 2 mm and the
lesions its pre-labels draw on scans nobody labelled (issue 19).

Builds the demo project (``labeling.demo``: T1w + FLAIR, simulated raters) with more rated scans
than the default demo, on a throwaway database, then does what the workers would do, in process
and in order, timing each step:

1. the consensus of every rated scan (``consensus_run_execute``); a scan the consensus flags gets its
   consensus accepted as the ground truth by the lead (what a lead does after reading the reasons);
2. one model version trained on every ground truth of the train split (``model_version_train``,
   the app's own recipe and 14-min budget) and validated on the validation split;
3. the ranking with its pre-labels (``scores_update``).

The pre-labels of the scans nobody labelled are compared with the simulation's truth (per-label
Dice; lesion-wise detection of lesions >= 3 mm radius as in ``bench_lesion_model``). Then a rater
opens the scan with the largest true lesion load in the real viewer (headless Chromium against the
app's server), starts from the model's drawing, and the axial slice through the largest lesion is
saved as a screenshot (``docs/prelabel_lesion_demo.png`` with ``--screenshot``).

    nice .venv/bin/python bench/bench_demo_prelabel.py --screenshot docs/prelabel_lesion_demo.png

Prints a table; writes bench/out/demo_prelabel.json. Times are this machine's (2 cores, no GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from bench.bench_editing_effort import poll
from bench.bench_lesion_model import DETECT_RADIUS_MM, f1, lesion_detection
from bench.bench_viewer import PYTHON, build_frontend, free_port, start_server

LESION = 4


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def read_labels(field) -> np.ndarray:
    from django.core.files.storage import default_storage

    from labeling import volumes

    with default_storage.open(field.name, "rb") as handle:
        labels, _ = volumes.read_array(handle.read())
    return np.asarray(labels)


def build(args) -> dict:
    """The demo, its consensus, a model version and its pre-labels; timings and figures."""
    import django

    django.setup()
    from django.conf import settings

    if args.max_steps:
        settings.MRIANNOT_AL_TRAINING = {"steps": args.max_steps, "steps_per_scan": 0, "max_steps": args.max_steps}
    import simulation
    from active_learning import services as al_services
    from active_learning.models import ScanScore
    from consensus.models import ConsensusRun
    from consensus.services import ground_truth as gt_services
    from consensus.services import runs as run_services
    from labeling.demo import demo_project_create
    from labeling.models import Scan as ScanModel
    from mriannot.jobs import JobStatus

    timings: dict[str, float] = {}
    start = time.perf_counter()
    summary = demo_project_create(n_scans=args.scans, n_rated=args.rated, resolution=2, seed=args.seed)
    project = summary.project
    timings["demo"] = time.perf_counter() - start
    log(f"demo: {summary.scans} scans, {summary.fully_rated} rated, {timings['demo']:.0f} s")

    start = time.perf_counter()
    lead = project.memberships.get(user__username="lead").user
    accepted = 0
    for run in ConsensusRun.objects.filter(scan__project=project).order_by("id"):
        run = run_services.consensus_run_execute(run_id=run.pk)
        if run.status == JobStatus.DONE and run.flagged and gt_services.current_ground_truth(scan=run.scan) is None:
            gt_services.ground_truth_accept(run=run, actor=lead, note="bench: accepted after reading the reasons")
            accepted += 1
    timings["consensus"] = time.perf_counter() - start
    log(f"consensus of {summary.fully_rated} scans: {timings['consensus']:.0f} s ({accepted} flagged, accepted)")

    version, _ = al_services.model_version_request(project=project, actor=lead)
    start = time.perf_counter()
    version = al_services.model_version_train(version_id=version.pk)
    timings["training"] = time.perf_counter() - start
    if version.status != JobStatus.DONE:
        raise RuntimeError(f"training failed: {version.message}")
    log(f"model version {version.version}: {version.message} ({timings['training']:.0f} s)")

    start = time.perf_counter()
    al_services.scores_update(project_id=project.pk)
    timings["scoring"] = time.perf_counter() - start
    scored = ScanScore.objects.filter(model_version=version).exclude(prelabel="")
    log(f"scored {scored.count()} open scans with pre-labels: {timings['scoring']:.0f} s")

    anatomy = simulation.mni152_anatomy(resolution=2)
    scans = list(ScanModel.objects.filter(project=project).order_by("id"))
    rows = []
    totals = {"found": 0, "missed": 0, "false_positive": 0}
    for score in scored.select_related("scan"):
        index = scans.index(score.scan)
        truth = simulation.simulate_subject(anatomy, seed=args.seed + index).labels
        prelabel = read_labels(score.prelabel)
        if prelabel.shape != truth.shape:
            raise RuntimeError(f"pre-label {prelabel.shape} and truth {truth.shape} differ")
        found = lesion_detection(prelabel == LESION, truth == LESION, anatomy.spacing, min_radius_mm=DETECT_RADIUS_MM)
        for key in totals:
            totals[key] += found[key]
        rows.append(
            {
                "scan": score.scan_id,
                "subject_id": score.scan.subject_id,
                "split": score.scan.split,
                "lesion_voxels_truth": int((truth == LESION).sum()),
                "lesion_voxels_prelabel": int((prelabel == LESION).sum()),
                "dice": {
                    str(value): dice(prelabel == value, truth == value) for value in sorted(simulation.LABELS) if value
                },
                "detection": found,
            }
        )
    version.refresh_from_db()
    return {
        "project": project.pk,
        "scans": summary.scans,
        "rated": summary.fully_rated,
        "flagged_accepted": accepted,
        "train_ground_truths": len(version.ground_truth_ids),
        "validation_ground_truths": len(version.validation_ground_truth_ids),
        "validation_dice": version.validation_dice,
        "hyperparameters": {
            k: version.hyperparameters.get(k) for k in ("steps_trained", "training_seconds", "patch_size", "batch_size")
        },
        "timings_s": timings,
        "prelabels": rows,
        "detection": {**totals, **f1(totals["found"], totals["missed"], totals["false_positive"])},
    }


def screenshot(result: dict, base: str, target: Path) -> dict:
    """Open the scan with the largest true lesion load as its first rater; start from the model."""
    import bench.bench_viewer as viewer_bench
    from labeling.demo import DEMO_PASSWORD
    from labeling.models import Assignment
    from tests.frontend.conftest import CHROMIUM, CHROMIUM_ARGS

    # The scan with the most lesion voxels in truth among those with a rater who has not started
    # (the demo's first unrated scan holds one rater's saved revision: the viewer would open that).
    row, assignment = None, None
    for candidate in sorted(result["prelabels"], key=lambda r: -r["lesion_voxels_truth"]):
        fresh = (
            Assignment.objects.filter(scan_id=candidate["scan"], revisions__isnull=True)
            .select_related("annotator")
            .order_by("id")
            .first()
        )
        if fresh is not None:
            row, assignment = candidate, fresh
            break
    viewer_bench.USER, viewer_bench.PASSWORD = assignment.annotator.username, DEMO_PASSWORD
    from playwright.sync_api import sync_playwright

    import simulation
    from active_learning.models import ScanScore

    anatomy = simulation.mni152_anatomy(resolution=2)
    truth = simulation.simulate_subject(anatomy, seed=int(result["seed"]) + int(row["subject_id"]) - 1).labels
    score = ScanScore.objects.filter(scan_id=row["scan"]).exclude(prelabel="").latest("id")
    prelabel = read_labels(score.prelabel)
    views = {
        "model": (largest_lesion_centre(prelabel), target),
        "truth": (largest_lesion_centre(truth), target.with_name(f"{target.stem}-truth{target.suffix}")),
    }
    shots = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = viewer_bench.logged_in_context(browser, base)
        page = context.new_page()
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"{base}/annotate/{assignment.pk}/")
        page.wait_for_selector("body[data-ready]", timeout=180000)
        if page.is_visible("#start-from-model"):
            page.click("#start-from-model")
        poll(page, "window.mriannot.viewer.bitmap.some((v) => v > 0)")
        page.keyboard.press("a")  # the axial view
        status = page.inner_text("#message")
        target.parent.mkdir(parents=True, exist_ok=True)
        for name, (centre, path) in views.items():
            if centre is None:
                continue
            # The model's lesion without the crosshair over it; the true lesion at the crosshair.
            page.evaluate(
                """([voxel, width]) => {
                    const viewer = window.mriannot.viewer;
                    const nv = viewer.nv;
                    viewer.resetView();
                    nv.scene.crosshairPos = nv.vox2frac(voxel);
                    nv.opts.crosshairWidth = width;
                    nv.createOnLocationChange();
                    viewer.zoomBy(2.5);  // about the crosshair, as Ctrl+wheel does
                }""",
                [centre, 0 if name == "model" else 1],
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(path))
            shots[name] = {"voxel": centre, "file": str(path), "readout": page.inner_text("#readout")}
        browser.close()
    return {
        "scan": row["scan"],
        "subject_id": row["subject_id"],
        "rater": assignment.annotator.username,
        "message": status,
        "views": shots,
    }


def largest_lesion_centre(labels: np.ndarray) -> list[int] | None:
    """The voxel nearest the centre of mass of the largest lesion (26-connected), or None."""
    from scipy import ndimage as ndi

    components, n = ndi.label(labels == LESION, np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    sizes = ndi.sum_labels(labels == LESION, components, index=np.arange(1, n + 1))
    return [round(c) for c in ndi.center_of_mass(components == int(np.argmax(sizes)) + 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=34, help="demo scans (default 34: 21 train, 7 validation)")
    parser.add_argument("--rated", type=int, default=24, help="scans every rater labelled (default 24)")
    parser.add_argument("--seed", type=int, default=2026, help="the demo's seed (default: the demo's own)")
    parser.add_argument("--screenshot", type=Path, help="save the viewer's screenshot here")
    parser.add_argument("--max-steps", type=int, help="cap the training steps (a quick check of the script)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the database and files here; a second run reuses them (screenshots only)"
    )
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="mriannot-demo-prelabel-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    kept = data_dir / "bench-result.json"
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mriannot.settings",
            "DJANGO_DEBUG": "true",
            "MRIANNOT_DATA_DIR": str(data_dir),
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            # No worker: the bench runs every job itself, in order (a job's message fails at once).
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "MRIANNOT_BROKER_CONNECT_TIMEOUT_S": "0.2",
        }
    )
    env.pop("DATABASE_URL", None)
    os.environ.update(env)
    server = None
    try:
        subprocess.run([PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], env=env, check=True)
        if args.data_dir and kept.exists():
            import django

            django.setup()
            result = json.loads(kept.read_text())
        else:
            result = build(args)
            result["seed"] = args.seed
            result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
            kept.write_text(json.dumps(result))
        if args.screenshot:
            build_frontend()
            port = free_port()
            server = start_server(env, port)
            result["screenshot"] = screenshot(result, f"http://127.0.0.1:{port}", args.screenshot)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    (OUT / "demo_prelabel.json").write_text(json.dumps(result, indent=2))

    print("\n| step | seconds |\n|---|---|")
    for step, seconds in result["timings_s"].items():
        print(f"| {step} | {seconds:,.0f} |")
    print("\n| open scan | split | lesion voxels truth / pre-label | lesion Dice | CSF | GM | WM |")
    print("|---|---|---|---|---|---|---|")
    for row in result["prelabels"]:
        d = row["dice"]
        print(
            f"| {row['subject_id']} | {row['split']} | {row['lesion_voxels_truth']} / {row['lesion_voxels_prelabel']} "
            f"| {d['4']:.2f} | {d['1']:.2f} | {d['2']:.2f} | {d['3']:.2f} |"
        )
    det = result["detection"]
    print(
        f"\nlesions >= {DETECT_RADIUS_MM} mm radius: found {det['found']}, missed {det['missed']}, "
        f"false positives {det['false_positive']}, F1 {det['f1']:.2f}; "
        f"trained on {result['train_ground_truths']} ground truths, "
        f"{result['hyperparameters']['steps_trained']} steps; load {' '.join(result['loadavg'])}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
