"""Benchmark dataset export: 100 scans at 2 mm, each format, with and without raters/posteriors.

Data: a project SIMULATED from the MNI152 template (``simulation``): 100 subjects at
2 mm (99 x 117 x 95), three simulated raters each (expert, generous, sloppy), submitted
through the real services, fused by the real consensus runs. Setup is not timed; it is
cached in ``bench/out/export-data`` so a second run only times the exports.

Each row times ``consensus.services.export_execute``: gathering, writing the layout,
datasheet, CSV and manifest, re-reading and checking every file, and packing the zip.
The target (issue 7) is under 60 s for 100 scans at 2 mm.

Usage::

    .venv/bin/python bench/bench_export.py [--scans 100] [--fresh]
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
    if project is not None and project.scans.count() == n_scans:
        return project
    lead = User.objects.create(username="bench-lead")
    raters = [User.objects.create(username=f"bench-rater{i}") for i in range(3)]
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
    for i in range(n_scans):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached project")
    args = parser.parse_args()
    data_dir = ROOT / "bench" / "out" / "export-data"
    if args.fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    redis = setup_django(data_dir)
    print(f"Setting up {args.scans} simulated scans at 2 mm (cached in {data_dir}) ...", flush=True)
    project = build_project(args.scans)

    from consensus.services import export_execute, export_request
    from labeling.models import ScanStatus

    flagged = project.scans.filter(status=ScanStatus.FLAGGED).count()
    cases = [
        ("nnunet", {}),
        ("nnunet", {"include_raters": True, "include_posterior": True}),
        ("monai", {}),
        ("bids", {}),
        ("bids", {"include_raters": True, "include_posterior": True}),
    ]
    print(
        f"\nExport of {project.scans.count()} scans at 2 mm ({flagged} flagged, exported as consensus), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'format':<8} {'raters+posteriors':<18} {'seconds':>8} {'zip MB':>8} {'files':>6}  checks")
    for fmt, options in cases:
        export = export_request(project=project, actor=None, format=fmt, queue=False, **options)
        t0 = time.perf_counter()
        export = export_execute(export_id=export.pk)
        seconds = time.perf_counter() - t0
        import zipfile

        from django.core.files.storage import default_storage

        with default_storage.open(export.file.name, "rb") as handle:
            files = len(zipfile.ZipFile(handle).namelist())
        print(
            f"{fmt:<8} {bool(options)!s:<18} {seconds:>8.1f} {export.size / 1e6:>8.1f} {files:>6}  "
            f"{export.summary.get('checks')}",
            flush=True,
        )
    redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
