"""Upload 100 scans through the Scans page: total time and the server's peak memory.

A lead opens ``/projects/<id>/scans/`` in headless Chromium (Debian's, through Playwright),
sets the batch metadata (site, sequence) and picks 100 NIfTI files in the file picker; the page
sends them two at a time (XMLHttpRequest, with per-file progress) to the real server and shows
each file's result. Timed: from handing the files to the picker until every row shows its
result; then the stored scans are counted.

Data: by default 100 subjects SIMULATED from the MNI152 template at 2 mm (``simulation``,
99 x 117 x 95 float32, about 3.9 MB each as .nii.gz), generated once and cached in
``bench/out/console-uploads/``; ``--synthetic`` uses smooth random volumes of the same shape
(factories-like, quicker to make, compress better).

Server: gunicorn (``--workers`` sync workers, default 2: one per upload in flight) on a
throwaway SQLite database and data folder, migrated, with a lead, three annotators (two raters
per scan, so every upload also assigns its raters) and a local Redis broker (tasks queued on
commit wait there; no worker runs them). Settings: ``mriannot.test_settings`` (the production
settings; cookies not marked Secure, so the browser keeps its session over plain http).
Memory: the proportional set size (PSS) of the gunicorn master and its workers summed from
/proc every 50 ms; the table gives the peak, idle before the uploads, and the anonymous part
(heap and arrays) above idle.

Usage::

    .venv/bin/python bench/bench_console_uploads.py              # ~3 min the first time, ~1 min after
    .venv/bin/python bench/bench_console_uploads.py --scans 20 --synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_probe import PeakSampler, free_port, server_memory, wait_for_port

CACHE = ROOT / "bench" / "out" / "console-uploads"
CHROMIUM = os.environ.get("MRIANNOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
MiB = 1 << 20
PASSWORD = "bench-password"

SETUP = """
import json
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("collectstatic", "--noinput", verbosity=0)
from django.contrib.auth import get_user_model
from labeling import services
from labeling.models import Role

User = get_user_model()
lead = User.objects.create_user("lead", password=%(password)r)
project = services.project_create(actor=lead, name="console bench", raters_per_scan=2, is_simulated=True,
                                  labels=[{"value": 1, "name": "lesion", "color": "#ff0000"}])
for i in range(3):
    user = User.objects.create_user(f"rater{i + 1}", password=%(password)r)
    services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
print("SETUP " + json.dumps({"project": project.pk}))
"""

COUNT = """
from labeling.models import Scan
print("COUNT " + str(Scan.objects.filter(project_id=%(project)d, site="SITE-A").count()))
"""


# --- the files --------------------------------------------------------------------------------


def _simulated(seed: int) -> bytes:
    import simulation
    from labeling import volumes

    anatomy = simulation.mni152_anatomy(resolution=2)
    subject = simulation.simulate_subject(anatomy, seed=seed)
    return volumes.image_to_bytes(subject.image, subject.affine)


def _synthetic(seed: int) -> bytes:
    import numpy as np
    from scipy import ndimage

    from labeling import volumes

    rng = np.random.default_rng(seed)
    shape = (99, 117, 95)
    image = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 3) * 400 + 600
    return volumes.image_to_bytes(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def _write(args: tuple[str, int, str]) -> str:
    kind, seed, path = args
    data = _simulated(seed) if kind == "simulated" else _synthetic(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path


def scan_files(kind: str, n: int) -> list[Path]:
    """``n`` NIfTI files of the kind, made once (two processes) and cached."""
    folder = CACHE / f"{kind}-2mm"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sub-{i:03d}.nii.gz" for i in range(n)]
    missing = [(kind, i, str(p)) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"making {len(missing)} {kind} scans at 2 mm in {folder} (once) ...", flush=True)
        with ProcessPoolExecutor(max_workers=2) as pool:
            for done, _ in enumerate(pool.map(_write, missing), start=1):
                if done % 10 == 0:
                    print(f"  {done}/{len(missing)}", flush=True)
    return paths


# --- the server and its memory ------------------------------------------------------------------


def _env(data_dir: Path, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mriannot.test_settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "MRIANNOT_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
            "REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _manage_shell(code: str, env: dict, tag: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line for line in out.splitlines() if line.startswith(tag + " "))[len(tag) + 1 :]


# --- the browser ----------------------------------------------------------------------------------


def upload_through_page(base: str, project: int, paths: list[Path], master: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Playwright's wait_for_function evaluates its predicate with eval, which the pages' policy forbids.
        page = browser.new_context(bypass_csp=True).new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{base}/login/")
        page.fill("#username", "lead")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url(lambda url: "/login/" not in url)
        page.goto(f"{base}/projects/{project}/scans/")
        page.wait_for_selector("body[data-ready]")
        if page.evaluate("document.body.dataset.ready") != "true":
            raise SystemExit(f"the Scans page did not open: {page.inner_text('#page-error')}")
        page.fill("#batch-site", "SITE-A")
        page.select_option("#batch-sequence", "T1w")
        time.sleep(1.0)
        idle = []
        for _ in range(10):  # the median of ten samples, 50 ms apart
            idle.append(server_memory(master))
            time.sleep(0.05)
        idle_total = sorted(t for t, _ in idle)[len(idle) // 2]
        idle_anon = sorted(a for _, a in idle)[len(idle) // 2]
        with PeakSampler(master) as sampler:
            started = time.perf_counter()
            page.set_input_files("#file-input", [str(p) for p in paths])
            page.wait_for_function(
                """(n) => {
                  const rows = [...document.querySelectorAll('#upload-body tr')];
                  const open = ['queued', 'uploading', 'checking'];
                  return rows.length === n && rows.every((r) => !open.includes(r.dataset.state));
                }""",
                arg=len(paths),
                timeout=600_000,
                polling=100,
            )
            wall = time.perf_counter() - started
        states = page.evaluate(
            "[...document.querySelectorAll('#upload-body tr')].reduce((c, r) => "
            "(c[r.dataset.state] = (c[r.dataset.state] || 0) + 1, c), {})"
        )
        page.wait_for_function(f"document.getElementById('table-count').textContent.startsWith('{len(paths)} scans')")
        browser.close()
    return {
        "wall": wall,
        "states": states,
        "idle": idle_total,
        "idle_anon": idle_anon,
        "peak": sampler.peak,
        "peak_anon": sampler.peak_anon,
        "samples": sampler.samples,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--synthetic", action="store_true", help="smooth random volumes instead of simulated subjects")
    parser.add_argument("--fresh", action="store_true", help="make the cached files again")
    args = parser.parse_args(argv)
    kind = "synthetic" if args.synthetic else "simulated"
    if args.fresh:
        shutil.rmtree(CACHE / f"{kind}-2mm", ignore_errors=True)
    started = time.perf_counter()
    paths = scan_files(kind, args.scans)
    size = sum(p.stat().st_size for p in paths)

    from mriannot.localredis import start_redis

    redis = start_redis()
    data_dir = Path(tempfile.mkdtemp(prefix="mriannot-bench-console-"))
    env = _env(data_dir, redis.url)
    server = None
    try:
        print("migrating a throwaway database, collecting the static files, a project ...", flush=True)
        setup = json.loads(_manage_shell(SETUP % {"password": PASSWORD}, env, "SETUP"))
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "mriannot.wsgi", "--workers", str(args.workers)]
        command += ["--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning"]
        log = open(data_dir / "gunicorn.log", "w")  # open while the server runs
        server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
        wait_for_port(port, server)
        print(f"uploading {len(paths)} files through the page ...", flush=True)
        result = upload_through_page(f"http://127.0.0.1:{port}", setup["project"], paths, server.pid)
        stored = int(_manage_shell(COUNT % {"project": setup["project"]}, env, "COUNT"))
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    n = len(paths)
    what = "simulated subjects (MNI152)" if kind == "simulated" else "synthetic volumes"
    print(
        f"\n{n} {what} at 2 mm (99x117x95 float32), {size / MiB:.0f} MiB as .nii.gz; gunicorn {args.workers} sync "
        f"workers on {os.cpu_count()} cores; the page sends 2 files at a time; memory sampled every 50 ms "
        f"plus the time /proc takes to read ({result['samples']} samples in {result['wall']:.0f} s)\n"
    )
    rows = [
        ("files stored (in the database, with the batch's site)", f"{stored} of {n}"),
        ("results shown on the page", ", ".join(f"{v} {k}" for k, v in sorted(result["states"].items()))),
        ("total time, files picked to every result shown", f"{result['wall']:.1f} s"),
        ("per file", f"{result['wall'] / n * 1000:.0f} ms"),
        ("throughput", f"{n / result['wall'] * 60:.0f} scans/min, {size / MiB / result['wall']:.1f} MiB/s"),
        ("server PSS, idle before the uploads", f"{result['idle'] / MiB:.0f} MiB"),
        ("server PSS, peak during the uploads", f"{result['peak'] / MiB:.0f} MiB"),
        ("server anonymous PSS, peak above idle", f"{(result['peak_anon'] - result['idle_anon']) / MiB:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
    return 0 if stored == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
