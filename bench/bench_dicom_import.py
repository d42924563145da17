"""Benchmark the DICOM import: simulated T1w + FLAIR studies at 2 mm and 1 mm through the job.

Data: SIMULATED sessions (``simulation.dicom.session_study``: the MNI152 anatomy at 2 mm,
99 x 117 x 95, or 1 mm, 197 x 233 x 189; one oblique T1w and one FLAIR series per session, a
slice per file, uint16; invented PHI in the headers). With ``--other-grid`` the FLAIR is an axial
2-D series on its own grid (1.2 x the in-plane spacing, 1.5 x the slices), resampled onto the
T1w's at creation. Setup (simulation, zipping) is not timed; the zips are cached in
``bench/out/dicom-studies``.

Each study goes through the real path in this process: ``labeling.dicom_imports.dicom_study_import``
(spooled upload, the job's analysis under ``mriannot.jobs.job_execute``, the wait for review),
then the confirmation and the job's second phase (one scan with its FLAIR channel, in a project
declaring T1w + FLAIR), on a fresh database and storage under ``bench/out/dicom-data``. The
table gives series per minute and slices per second of the whole import (wall clock), and per
series the wall clock of the analysis, split into the steps the job records (summed over its two
threads, so they overlap): reading the zip (inflate, parse), de-identification (allow-list copy
and encoding), conversion (dcm2niix, re-reading its NIfTI, the geometry check, gzip) and staging
(the de-identified NIfTI and zip of slices written to storage); and the wall clock of the
creation (``scan_create`` / ``scan_channel_add``: validation, reorientation to RAS+ and its gzip,
resampling, storage, raters).

Usage::

    .venv/bin/python bench/bench_dicom_import.py [--studies-2mm 4] [--studies-1mm 2] [--other-grid]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
STEPS = ("read", "deidentify", "convert", "stage", "store")


def setup_django(data_dir: Path):
    from mriannot.localredis import start_redis

    redis = start_redis()  # the job is run in this process; nothing is sent to a worker
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


def study_zip(*, seed: int, resolution: int, other_grid: bool) -> Path:
    """A cached zip of one simulated session (one file per slice, folders naming the patient)."""
    from simulation import dicom as sim

    folder = OUT / "dicom-studies"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"session-{resolution}mm-seed{seed}{'-othergrid' if other_grid else ''}.zip"
    if path.exists():
        return path
    study = sim.session_study(seed=seed, resolution=resolution, other_grid=("FLAIR",) if other_grid else ())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for ds in study.datasets:
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"DOE_JANE/{int(ds.SeriesNumber):03d}/{int(ds.InstanceNumber):04d}.dcm", raw.getvalue())
    return path


def run(resolution: int, n_studies: int, *, other_grid: bool) -> dict:
    from django.contrib.auth import get_user_model

    from labeling import dicom_imports, services

    lead, _ = get_user_model().objects.get_or_create(username="bench-lead")
    project = services.project_create(
        actor=lead, name=f"DICOM bench {resolution} mm {time.time()}", raters_per_scan=1, channels=["T1w", "FLAIR"]
    )
    zips = [study_zip(seed=seed, resolution=resolution, other_grid=other_grid) for seed in range(n_studies)]
    steps = dict.fromkeys(STEPS, 0.0)
    series = slices = scans = 0
    analysis = creation = 0.0
    for path in zips:
        start = time.perf_counter()
        job = dicom_imports.dicom_study_import(project=project, actor=lead, archive=path, review=True)
        analysed = time.perf_counter()
        job = dicom_imports.dicom_import_confirm(job=job, actor=lead, queue=False)
        job = dicom_imports.dicom_import_execute(import_id=job.pk)
        analysis += analysed - start
        creation += time.perf_counter() - analysed
        assert dicom_imports.dicom_import_state(job) == "done", job.error
        assert job.summary["stored"] == 2 and job.summary["scans"] == 1, job.summary
        for step in STEPS:
            steps[step] += job.timings.get(step, 0.0)
        series += job.summary["stored"]
        slices += job.files
        scans += job.summary["scans"]
    return {
        "resolution_mm": resolution,
        "studies": n_studies,
        "series": series,
        "slices": slices,
        "scans": scans,
        "zip_mb": round(sum(p.stat().st_size for p in zips) / 1e6, 1),
        "wall_s": round(analysis + creation, 2),
        "series_per_min": round(60 * series / (analysis + creation), 1),
        "slices_per_s": round(slices / (analysis + creation), 1),
        "analysis_s_per_series": round(analysis / series, 3),
        "creation_s_per_series": round(creation / series, 3),
        "per_series_s": {step: round(seconds / series, 3) for step, seconds in steps.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies-2mm", type=int, default=4)
    parser.add_argument("--studies-1mm", type=int, default=2)
    parser.add_argument("--other-grid", action="store_true", help="the FLAIR on its own axial grid (resampled)")
    args = parser.parse_args()
    data = OUT / "dicom-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    redis = setup_django(data)
    try:
        rows = [run(r, n, other_grid=args.other_grid) for r, n in ((2, args.studies_2mm), (1, args.studies_1mm)) if n]
    finally:
        redis.stop()
    print(f"DICOM import, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"FLAIR {'on its own grid' if args.other_grid else 'on the T1w grid'}")  # fmt: skip
    head = f"{'mm':>3} {'series':>6} {'slices':>6} {'wall s':>7} {'series/min':>10} {'slices/s':>8}"
    head += f" | {'analysis':>8} {'read':>6} {'de-id':>6} {'dcm2niix':>8} {'stage':>6} | {'creation':>8}"
    print(head)
    for row in rows:
        step = row["per_series_s"]
        line = f"{row['resolution_mm']:>3} {row['series']:>6} {row['slices']:>6} {row['wall_s']:>7.1f} "
        line += f"{row['series_per_min']:>10.1f} {row['slices_per_s']:>8.1f} | {row['analysis_s_per_series']:>8.2f}"
        line += f" {step['read']:>6.2f} {step['deidentify']:>6.2f} {step['convert']:>8.2f} {step['stage']:>6.2f}"
        line += f" | {row['creation_s_per_series']:>8.2f}"
        print(line)
    print(
        "seconds per series; analysis = wall clock of the job's first phase, its steps summed over two threads "
        "(conversion and staging overlap the next series' reading and de-identification); creation = wall "
        "clock of the second phase (store: scan_create / scan_channel_add)"
    )
    name = "dicom-import-othergrid.json" if args.other_grid else "dicom-import.json"
    (OUT / name).write_text(
        json.dumps({"platform": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
