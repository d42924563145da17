"""Consensus runs per minute with 1 and 2 Celery workers on the scaled layout (issue 17).

For each worker count: K scans (default 40) at 2 mm (99 x 117 x 95), SIMULATED from the MNI152
template (``simulation``), each rated by 3 simulated raters (expert, generous, sloppy) whose
revisions are saved and submitted through the services; the last submission of each scan queues
its consensus run (STAPLE) on the ``consensus`` queue, as in the app. No worker runs while the
scans are built, so the K messages wait in Redis. Then N Celery worker processes (``celery
worker -Q consensus --pool=threads --concurrency=1``, separate processes) start, and the clock
runs until every run is DONE. The database is PostgreSQL (a private cluster) and the files are
in SeaweedFS's S3 gateway (``bench/scaled_layout.py``, ``mriannot.scaled``).

Reported per worker count: the wall time from the workers' start to the last run done (it
includes the workers' own start, a few seconds), the span from the first run's start to the last
run's end (``started_at`` / ``finished_at``), runs per minute over that span, and the speed-up
of 2 workers over 1. Each worker process is single-threaded here, so on a machine with C cores
the speed-up is bounded by min(N, C) and by whatever else runs (this project's VM has 2 cores).

    nice .venv/bin/python bench/bench_consensus_workers.py                    # 40 scans, 1 and 2 workers
    .venv/bin/python bench/bench_consensus_workers.py --scans 6 --workers 1 2 # a short check

Prints a table and writes ``bench/out/bench_consensus_workers.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scaled_layout import Layout, loadavg

OUT = ROOT / "bench" / "out" / "bench_consensus_workers.json"


def build_project(*, name: str, n_scans: int, seed: int):
    """K simulated scans at 2 mm with 3 submitted raters each; their consensus runs are queued."""
    from django.contrib.auth import get_user_model

    import simulation
    from labeling import services, volumes
    from labeling.models import Assignment, Role

    User = get_user_model()
    lead, _ = User.objects.get_or_create(username="bench-lead")
    raters = [User.objects.get_or_create(username=f"bench-rater{i}")[0] for i in range(3)]
    project = services.project_create(
        actor=lead,
        name=name,
        raters_per_scan=3,
        labels=[{"value": v, "name": n, "color": c} for v, (n, c) in simulation.LABELS.items() if v],
        is_simulated=True,
    )
    for user in raters:
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    anatomy = simulation.mni152_anatomy(resolution=2)
    t0 = time.perf_counter()
    for i in range(n_scans):
        subject = simulation.simulate_subject(anatomy, seed=seed + i)
        scan = services.scan_create(
            project=project,
            actor=lead,
            raw=volumes.image_to_bytes(subject.image, subject.affine),
            subject_id=f"{seed + i:04d}",
        )
        for k, (assignment, profile) in enumerate(
            zip(Assignment.objects.filter(scan=scan).order_by("id"), ("expert", "generous", "sloppy"), strict=True)
        ):
            labels = simulation.simulate_rater(subject.labels, profile=profile, seed=(seed + i) * 10 + k)
            services.revision_create(
                assignment=assignment,
                actor=assignment.annotator,
                raw=volumes.label_map_to_bytes(labels, subject.affine),
                base_revision_id=None,
            )
            services.assignment_submit(assignment=assignment, actor=assignment.annotator)
        if (i + 1) % 10 == 0 or i + 1 == n_scans:
            print(f"  {name}: {i + 1}/{n_scans} scans built ({time.perf_counter() - t0:.0f} s)", flush=True)
    return project


def measure(layout: Layout, *, workers: int, n_scans: int, seed: int, timeout: float) -> dict:
    from consensus.models import ConsensusRun
    from mriannot.jobs import JobStatus

    project = build_project(name=f"Consensus x{workers}", n_scans=n_scans, seed=seed)
    runs = ConsensusRun.objects.filter(scan__project=project)
    queued = runs.filter(status=JobStatus.QUEUED).count()
    if queued != n_scans:
        raise RuntimeError(f"expected {n_scans} queued consensus runs, found {queued} ({runs.count()} in all)")
    load_before = loadavg()
    t0 = time.perf_counter()
    for k in range(workers):
        layout.celery_worker(queue="consensus", name=f"consensus{k + 1}", concurrency=1)
    load_samples = []
    last_print = t0
    while True:
        done = runs.filter(status__in=[JobStatus.DONE, JobStatus.FAILED]).count()
        if done == n_scans:
            break
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{done}/{n_scans} runs finished after {timeout:.0f} s")
        if any(child.poll() is not None for child in layout.children):
            raise RuntimeError("a Celery worker exited; see its log in the work folder")
        if time.perf_counter() - last_print > 15:
            last_print = time.perf_counter()
            load_samples.append(loadavg())
            print(f"  {workers} worker(s): {done}/{n_scans} runs done ({last_print - t0:.0f} s)", flush=True)
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    load_after = loadavg()
    layout.stop_children()
    failed = list(runs.filter(status=JobStatus.FAILED).values_list("pk", "error"))
    times = list(runs.values_list("started_at", "finished_at"))
    first = min(s for s, _ in times)
    last = max(f for _, f in times)
    span = (last - first).total_seconds()
    per_run = sorted((f - s).total_seconds() for s, f in times)
    return {
        "workers": workers,
        "runs": n_scans,
        "failed": len(failed),
        "errors": [e[:200] for _, e in failed[:5]],
        "wall_s": round(wall, 1),
        "span_s": round(span, 1),
        "runs_per_min": round(n_scans / span * 60, 2) if span else None,
        "runs_per_min_wall": round(n_scans / wall * 60, 2),
        "run_s_median": round(per_run[len(per_run) // 2], 2),
        "run_s_max": round(per_run[-1], 2),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "loadavg_samples": load_samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=40, help="consensus runs per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one worker count")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    layout = Layout(database=args.database, storage=args.storage).start()
    rows = []
    try:
        layout.django()
        for k, workers in enumerate(args.workers):
            print(f"[{layout.name}] {args.scans} scans for {workers} worker(s) ...", flush=True)
            rows.append(measure(layout, workers=workers, n_scans=args.scans, seed=1000 * (k + 1), timeout=args.timeout))
            print(f"[{layout.name}] {workers} worker(s): {rows[-1]['runs_per_min']} runs/min", flush=True)
    finally:
        layout.stop()
    base = rows[0]["runs_per_min"] if rows and rows[0]["workers"] == 1 else None
    for row in rows:
        row["speed_up"] = round(row["runs_per_min"] / base, 2) if base and row["runs_per_min"] else None
    print()
    print(
        f"Consensus (STAPLE, 3 raters, 2 mm) on {layout.name}, Celery workers on the consensus queue "
        f"(1 process each, concurrency 1), {os.cpu_count()} cores"
    )
    print(
        "| workers | runs | wall s | span s | runs/min | speed-up | median run s | failed | load avg before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['runs']} | {row['wall_s']} | {row['span_s']} | {row['runs_per_min']} | "
            f"{row['speed_up']} | {row['run_s_median']} | {row['failed']} | "
            f"{row['loadavg_before']} -> {row['loadavg_after']} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "layout": layout.name,
        "scans": args.scans,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0 if all(row["failed"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
