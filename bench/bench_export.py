"""Benchmark dataset export: 100 scans at 2 mm, each format, with and without raters/posteriors.

Data: a project SIMULATED from the MNI152 template (``simulation``): 100 subjects at
2 mm (99 x 117 x 95), three simulated raters each (expert, generous, sloppy), submitted
through the real services, fused by the real consensus runs. Setup is not timed; it is
cached in ``bench/out/export-data`` so a second run only times the exports.

Each row times ``consensus.services.export_execute``: gathering, writing the layout,
datasheet, CSV and manifest, re-reading and checking every file, and packing the zip.
The target (issue 7) is under 60 s for 100 scans at 2 mm.

``--scaled`` runs it on the scaled layout (issue 17): PostgreSQL (a private cluster) and
SeaweedFS's S3 gateway (``bench/scaled_layout.py``), the files read from and the zip written to
the bucket through Django's storage API; the project is cached in ``bench/out/export-scaled``
(the cluster's and the store's folders), and a build cut short resumes where it stopped. The
target there (issue 17) is 1,000 scans at 2 mm under 3 minutes.

Usage::

    .venv/bin/python bench/bench_export.py [--scans 100] [--fresh]
    nice .venv/bin/python bench/bench_export.py --scaled --scans 1000 --cases nnunet   # issue 17

Prints a table and writes ``bench/out/bench_export.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: Path):
    from mriannot.localredis import start_redis

    redis = start_redis()  # tasks queued on commit land here; the benchmark runs the services itself
    os.environ["REDIS_URL"] = redis.url
    os.environ["MRIANNOT_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'db.sqlite3'}"
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ["DJANGO_SETTINGS_MODULE"] = "mriannot.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    return redis


def build_project(n_scans: int):
    from django.contrib.auth import get_user_model

    import simulation
    from consensus.models import ConsensusRun
    from consensus.services import consensus_run_execute
    from labeling import services, volumes
    from labeling.models import Assignment, Project, Role

    User = get_user_model()
    project = Project.objects.filter(name="Export benchmark").first()
    if project is not None and project.scans.count() >= n_scans:
        return project
    lead = User.objects.get_or_create(username="bench-lead")[0]
    raters = [User.objects.get_or_create(username=f"bench-rater{i}")[0] for i in range(3)]
    if project is None:
        project = services.project_create(
            actor=lead,
            name="Export benchmark",
            raters_per_scan=3,
            ambiguity_threshold=0.1,
            labels=[{"value": v, "name": n, "color": c} for v, (n, c) in simulation.LABELS.items() if v],
            is_simulated=True,
        )
        for user in raters:
            services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    anatomy = simulation.mni152_anatomy(resolution=2)
    profiles = ("expert", "generous", "sloppy")
    t0 = time.perf_counter()
    for i in range(project.scans.count(), n_scans):  # a build cut short goes on from where it stopped
        subject = simulation.simulate_subject(anatomy, seed=i)
        split = "train" if i % 5 < 3 else ("validation" if i % 5 == 3 else "test")
        scan = services.scan_create(
            project=project,
            actor=lead,
            raw=volumes.image_to_bytes(subject.image, subject.affine),
            subject_id=f"{i:03d}",
            split=split,
        )
        for assignment, profile in zip(Assignment.objects.filter(scan=scan).order_by("id"), profiles, strict=False):
            labels = simulation.simulate_rater(subject.labels, profile=profile, seed=i * 10 + len(profile))
            services.revision_create(
                assignment=assignment,
                actor=assignment.annotator,
                raw=volumes.label_map_to_bytes(labels, subject.affine),
                base_revision_id=None,
            )
            services.assignment_submit(assignment=assignment, actor=assignment.annotator)
        for run in ConsensusRun.objects.filter(scan=scan):
            consensus_run_execute(run_id=run.pk)
        if (i + 1) % 10 == 0:
            print(f"  set up {i + 1}/{n_scans} scans ({time.perf_counter() - t0:.0f} s)", flush=True)
    return project


CASES = {
    "nnunet": ("nnunet", {}),
    "nnunet+raters": ("nnunet", {"include_raters": True, "include_posterior": True}),
    "monai": ("monai", {}),
    "bids": ("bids", {}),
    "bids+raters": ("bids", {"include_raters": True, "include_posterior": True}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached project")
    parser.add_argument(
        "--scaled", action="store_true", help="on PostgreSQL and SeaweedFS (S3), cached in bench/out/export-scaled"
    )
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="formats to time")
    args = parser.parse_args()
    data_dir = ROOT / "bench" / "out" / ("export-scaled" if args.scaled else "export-data")
    if args.fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.scaled:
        sys.path.insert(0, str(ROOT / "bench"))
        from scaled_layout import Layout

        servers = Layout(database="postgres", storage="s3", folder=str(data_dir)).start()  # and Redis
        servers.django()
    else:
        servers = setup_django(data_dir)  # Redis
    try:
        return run(args, data_dir)
    finally:
        servers.stop()


def run(args, data_dir: Path) -> int:
    import json

    sys.path.insert(0, str(ROOT / "bench"))
    from scaled_layout import loadavg

    print(f"Setting up {args.scans} simulated scans at 2 mm (cached in {data_dir}) ...", flush=True)
    t_build = time.perf_counter()
    project = build_project(args.scans)
    print(f"  ready in {time.perf_counter() - t_build:.0f} s", flush=True)

    from consensus.services import export_execute, export_request
    from labeling.models import ScanStatus

    flagged = project.scans.filter(status=ScanStatus.FLAGGED).count()
    layout_name = "postgres+s3" if args.scaled else "sqlite+local"
    print(
        f"\nExport of {project.scans.count()} scans at 2 mm ({flagged} flagged, exported as consensus) on "
        f"{layout_name}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'format':<8} {'raters+posteriors':<18} {'seconds':>8} {'zip MB':>8} {'files':>6}  load avg  checks")
    rows = []
    for case in args.cases:
        fmt, options = CASES[case]
        load_before = loadavg()
        export = export_request(project=project, actor=None, format=fmt, queue=False, **options)
        t0 = time.perf_counter()
        export = export_execute(export_id=export.pk)
        seconds = time.perf_counter() - t0
        import zipfile

        from django.core.files.storage import default_storage

        with default_storage.open(export.file.name, "rb") as handle:
            files = len(zipfile.ZipFile(handle).namelist())
        load_after = loadavg()
        print(
            f"{fmt:<8} {bool(options)!s:<18} {seconds:>8.1f} {export.size / 1e6:>8.1f} {files:>6}  "
            f"{load_after}  {export.summary.get('checks')}",
            flush=True,
        )
        rows.append(
            {
                "case": case,
                "seconds": round(seconds, 1),
                "zip_mb": round(export.size / 1e6, 1),
                "files": files,
                "status": export.status,
                "checks": export.summary.get("checks"),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            }
        )
    out = ROOT / "bench" / "out" / "bench_export.json"
    result = {
        "layout": layout_name,
        "scans": project.scans.count(),
        "flagged": flagged,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", []) if isinstance(previous, dict) else []
    out.write_text(json.dumps({"runs": [*runs, result], "last": result}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
