"""How each page's API cost grows with the project (issue 17): p50 / p95 and queries per call.

Builds one project grown to 500, 2,000 and 10,000 scans (3 raters each) with a bulk loader that
keeps the app's invariants (every scan stored once by content hash, through the storage API;
3 distinct raters per scan; each submitted assignment with its revision; each flagged or
ground-truth scan with a finished consensus run and its rater performances, cloned from one
real consensus run made through the services, and the agreement rows a finished run writes for
the dashboard; every upload in the audit trail; a model version
with a score per open scan). Files share content where the app allows it (revisions and
ground truths name one label map). Then it times every page's API calls in process (Django's
test client: no HTTP server, so these are the server's own costs), counting SQL queries and
answer bytes, at each size, on SQLite and on PostgreSQL (a private cluster,
``mriannot.scaled.start_postgres``).

    nice .venv/bin/python bench/bench_scale.py                      # 500, 2000, 10000; both databases
    nice .venv/bin/python bench/bench_scale.py --sizes 500 2000 --databases sqlite
    nice .venv/bin/python bench/bench_scale.py --databases sqlite --calls agreement   # those calls only

Prints a table and writes bench/out/bench_scale.json. Targets (issue 17): every page API p95
under 200 ms at 10,000 scans on PostgreSQL, the dashboard under 1 s, paged calls flat.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_ANNOTATORS = 12
#: Seconds of samples per call after which a slow call stops repeating (at least 3 samples).
BUDGET_S = 15.0
RATERS = 3
SHAPE = (12, 10, 8)


def setup_django(database_url: str, data_dir: str) -> None:
    os.environ["MRIANNOT_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "mriannot.test_settings"
    # Nothing listens on port 1: a job's message fails at once and its row stays queued (the
    # bench runs the one consensus it needs itself).
    os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
    os.environ["MRIANNOT_BROKER_CONNECT_TIMEOUT_S"] = "0.2"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("axes").setLevel(logging.WARNING)  # a line per log-in otherwise


# --- the project ------------------------------------------------------------------------------


def nifti_gz(data, affine) -> bytes:
    import nibabel as nib
    import numpy as np

    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=1)


def make_base(*, n_annotators: int = N_ANNOTATORS):
    """The project, its people, one scan through the services with a real consensus run (the
    template the bulk loader clones), and a finished model version. Returns a dict."""
    import numpy as np
    from django.contrib.auth import get_user_model

    from active_learning.models import ModelVersion
    from consensus.models import ConsensusRun
    from consensus.services import runs as run_services
    from labeling import services
    from labeling.models import Role
    from mriannot.jobs import JobStatus

    User = get_user_model()
    lead = User.objects.create_user("lead", password="x")
    annotators = [User.objects.create_user(f"rater{i + 1}", password="x") for i in range(n_annotators)]
    labels = [{"value": 1, "name": "lesion", "color": "#ff0000"}, {"value": 2, "name": "csf", "color": "#00ff00"}]
    project = services.project_create(actor=lead, name="Scale", raters_per_scan=RATERS, labels=labels)
    for user in annotators:
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    scan = services.scan_create(
        project=project, actor=lead, raw=nifti_gz(rng.random(SHAPE).astype(np.float32), affine), subject_id="t0"
    )
    truth = np.zeros(SHAPE, np.uint8)
    truth[3:9, 2:8, 2:6] = 1
    truth[5:7, 4:6, 3:5] = 2
    for k, assignment in enumerate(scan.assignments.order_by("id")):
        labels_k = truth.copy()
        labels_k[3 + k, 2:8, 2:6] = 0  # the raters differ a little
        services.revision_create(
            assignment=assignment, actor=assignment.annotator, raw=nifti_gz(labels_k, affine), base_revision_id=None
        )
        services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    run = ConsensusRun.objects.filter(scan=scan).latest("id")
    run = run_services.consensus_run_execute(run_id=run.pk)
    assert run.status == JobStatus.DONE, run.error
    model = ModelVersion.objects.create(
        project=project,
        version=1,
        status=JobStatus.DONE,
        validation_dice={"1": 0.8, "2": 0.7},
        ground_truth_ids=[],
    )
    return {"project": project, "lead": lead, "annotators": annotators, "template": run, "model": model}


def grow_project(*, base: dict, n_scans: int, seed: int = 0) -> None:
    """Add scans (with their assignments, revisions, runs, ground truths, audit events and
    scores) until the project holds ``n_scans``; see the module docstring for what is kept."""
    import hashlib

    import numpy as np
    from django.db import transaction
    from django.utils import timezone

    from active_learning.models import ScanScore
    from consensus.models import ConsensusRun, GroundTruth, GroundTruthSource, RaterPerformance
    from consensus.services.runs import agreement_rows, agreement_rows_create
    from labeling.models import AnnotationRevision, Assignment, AssignmentStatus, AuditEvent, Scan, ScanStatus
    from mriannot.jobs import JobStatus
    from mriannot.storage import file_write

    project, lead, annotators = base["project"], base["lead"], base["annotators"]
    template: ConsensusRun = base["template"]
    template_scan = template.scan
    template_revision = AnnotationRevision.objects.filter(pk__in=template.revision_ids).first()
    performances = list(template.performances.all())
    rng = np.random.default_rng(seed + n_scans)
    start = Scan.objects.filter(project=project).count()
    now = timezone.now()
    batch = 500
    for first in range(start, n_scans, batch):
        last = min(first + batch, n_scans)
        with transaction.atomic():
            scans = []
            for i in range(first, last):
                image = np.full(SHAPE, 0.5, np.float32)
                image.flat[:8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)  # distinct bytes per scan
                raw = nifti_gz(image, template_scan.affine)
                sha = hashlib.sha256(raw).hexdigest()
                name = f"scans/{sha}.nii.gz"
                file_write(name=name, data=raw, reuse=True)
                kind = i % 20
                status = (
                    ScanStatus.NEW
                    if kind < 8
                    else ScanStatus.IN_PROGRESS
                    if kind < 12
                    else ScanStatus.GROUND_TRUTH
                    if kind < 17
                    else ScanStatus.FLAGGED
                )
                scans.append(
                    Scan(
                        project=project,
                        sha256=sha,
                        image=name,
                        original_filename=f"s{i}.nii.gz",
                        shape=template_scan.shape,
                        spacing=template_scan.spacing,
                        affine=template_scan.affine,
                        orientation=template_scan.orientation,
                        subject_id=f"sub{i:05d}",
                        status=status,
                        uploaded_by=lead,
                    )
                )
            Scan.objects.bulk_create(scans)
            scans = list(Scan.objects.filter(project=project, subject_id__in=[s.subject_id for s in scans]))
            assignments = []
            for scan in scans:
                i = int(scan.subject_id[3:])
                done = scan.status in (ScanStatus.GROUND_TRUTH, ScanStatus.FLAGGED)
                for k in range(RATERS):
                    status = AssignmentStatus.SUBMITTED if done else AssignmentStatus.TODO
                    if scan.status == ScanStatus.IN_PROGRESS and k == 0:
                        status = AssignmentStatus.IN_PROGRESS
                    assignments.append(
                        Assignment(
                            scan=scan,
                            annotator=annotators[(i * RATERS + k) % len(annotators)],
                            status=status,
                            priority=float(rng.random()),
                            submitted_at=now if done else None,
                        )
                    )
            Assignment.objects.bulk_create(assignments)
            assignments = list(Assignment.objects.filter(scan__in=scans).order_by("scan_id", "id"))
            revisions = [
                AnnotationRevision(
                    assignment=a,
                    number=1,
                    file=template_revision.file.name,
                    sha256=template_revision.sha256,
                    label_counts=template_revision.label_counts,
                    created_by_id=a.annotator_id,
                )
                for a in assignments
                if a.status != AssignmentStatus.TODO
            ]
            AnnotationRevision.objects.bulk_create(revisions)
            by_scan: dict[int, list] = {}
            for revision in AnnotationRevision.objects.filter(assignment__scan__in=scans).select_related("assignment"):
                by_scan.setdefault(revision.assignment.scan_id, []).append(revision)
            runs = []
            for scan in scans:
                if scan.status not in (ScanStatus.GROUND_TRUTH, ScanStatus.FLAGGED):
                    continue
                flagged = scan.status == ScanStatus.FLAGGED
                runs.append(
                    ConsensusRun(
                        scan=scan,
                        method=template.method,
                        options=template.options,
                        kernel_report=template.kernel_report,
                        revision_ids=[r.pk for r in sorted(by_scan[scan.pk], key=lambda r: r.pk)],
                        input_key=f"bulk-{scan.pk}",
                        code_version=template.code_version,
                        labels_file=template.labels_file.name,
                        posterior_file=template.posterior_file.name,
                        label_values=template.label_values,
                        iterations=template.iterations,
                        converged=template.converged,
                        ambiguity=float(rng.random() * 0.2) if flagged else float(rng.random() * 0.04),
                        ambiguity_details=template.ambiguity_details,
                        flagged=flagged,
                        flag_reasons=template.flag_reasons if flagged else [],
                        agreement=template.agreement,
                        status=JobStatus.DONE,
                        progress=1.0,
                        finished_at=now,
                    )
                )
            ConsensusRun.objects.bulk_create(runs)
            runs = list(ConsensusRun.objects.filter(scan__in=scans))
            RaterPerformance.objects.bulk_create(
                [
                    RaterPerformance(
                        run=run,
                        rater_index=p.rater_index,
                        revision=revision,
                        annotator_id=revision.created_by_id,
                        sensitivity=p.sensitivity,
                        specificity=p.specificity,
                        dice=p.dice,
                        confusion=p.confusion,
                    )
                    for run in runs
                    for p, revision in zip(performances, sorted(by_scan[run.scan_id], key=lambda r: r.pk), strict=False)
                ]
            )
            # the agreement rows a finished run writes (consensus.services.runs.agreement_rows_write);
            # each bulk run is its scan's only finished run, so its rows are current
            agreement_rows_create(
                rows=[
                    row
                    for run in runs
                    for raters in [sorted(by_scan[run.scan_id], key=lambda r: r.pk)]
                    for row in agreement_rows(
                        run=run,
                        project_id=project.pk,
                        rater_ids=[r.created_by_id for r in raters],
                        performances=[
                            (r.created_by_id, p.dice, p.sensitivity, p.specificity)
                            for p, r in zip(performances, raters, strict=False)
                        ],
                        current=True,
                    )
                ]
            )
            GroundTruth.objects.bulk_create(
                [
                    GroundTruth(
                        scan=run.scan,
                        run=run,
                        source=GroundTruthSource.CONSENSUS,
                        file=template.labels_file.name,
                        sha256=template.ground_truths.first().sha256 if template.ground_truths.exists() else "",
                        created_by=None,
                    )
                    for run in runs
                    if not run.flagged
                ]
            )
            ScanScore.objects.bulk_create(
                [
                    ScanScore(
                        scan=scan,
                        model_version=base["model"],
                        strategy="entropy",
                        score=float(rng.random()),
                        entropy=float(rng.random()),
                    )
                    for scan in scans
                    if scan.status in (ScanStatus.NEW, ScanStatus.IN_PROGRESS)
                ]
            )
            AuditEvent.objects.bulk_create(
                [
                    AuditEvent(
                        actor=lead,
                        actor_username=lead.username,
                        project=project,
                        action="scan.upload",
                        target_type="scan",
                        target_id=str(scan.pk),
                        data={"sha256": scan.sha256},
                    )
                    for scan in scans
                ]
            )


# --- the measurements ---------------------------------------------------------------------------


def calls(base: dict) -> list[tuple[str, str, str, int]]:
    """(name, user, path, repeats) of every page's API calls."""
    from consensus.models import ConsensusRun
    from labeling.models import Assignment, ScanStatus

    p = base["project"].pk
    flagged = (
        ConsensusRun.objects.filter(scan__project_id=p, scan__status=ScanStatus.FLAGGED).order_by("-id").first().scan_id
    )
    rater = base["annotators"][0].username
    first_assignment = Assignment.objects.filter(annotator=base["annotators"][0]).order_by("id").first().pk
    tables = ("scans", "pairs", "per_label", "per_rater", "rater_matrix", "over_time", "by_metadata")
    return [
        ("worklist (annotator)", rater, "/api/v1/me/worklist/", 15),
        ("projects (lead)", "lead", "/api/v1/projects/", 15),
        ("project home: summary", "lead", f"/api/v1/projects/{p}/summary/", 15),
        ("project home: flagged", "lead", f"/api/v1/projects/{p}/flagged-scans/", 15),
        ("project home: models", "lead", f"/api/v1/projects/{p}/models/", 15),
        ("scans table (50 a page)", "lead", f"/api/v1/projects/{p}/scans/?limit=50", 15),
        ("scans table, last page", "lead", f"/api/v1/projects/{p}/scans/?limit=50&offset=1000000", 5),
        ("assignments ?project=", "lead", f"/api/v1/assignments/?project={p}", 15),
        ("people: raters", "lead", f"/api/v1/projects/{p}/raters/", 10),
        ("people: members", "lead", f"/api/v1/projects/{p}/members/", 15),
        ("review data (flagged scan)", "lead", f"/api/v1/scans/{flagged}/review/", 15),
        ("agreement dashboard", "lead", f"/api/v1/projects/{p}/agreement/", 5),
        *((f"agreement CSV {t}", "lead", f"/api/v1/projects/{p}/agreement/?table={t}", 3) for t in tables),
        ("audit trail", "lead", f"/api/v1/projects/{p}/audit/", 15),
        ("ranking", "lead", f"/api/v1/projects/{p}/ranking/", 15),
        ("viewer: assignment", rater, f"/api/v1/assignments/{first_assignment}/", 15),
    ]


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def measure(base: dict, *, only: list[str] | None = None) -> list[dict]:
    """Time every call of :func:`calls` (only those whose name holds one of ``only``, when given;
    the save and submit are timed when ``only`` is not given or names them)."""
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from labeling.models import Assignment, AssignmentStatus

    clients = {}
    rows = []
    for name, user, path, repeats in calls(base):
        if only and not any(part in name for part in only):
            continue
        if user not in clients:
            from django.contrib.auth import get_user_model

            clients[user] = Client()
            clients[user].force_login(get_user_model().objects.get(username=user))
        client = clients[user]
        _body(client.get(path))  # warm: the first call of a kind pays imports and caches
        times, queries, size = [], 0, 0
        for _ in range(repeats):
            if len(times) >= 3 and sum(times) > BUDGET_S:  # a slow call: fewer samples (n says how many)
                break
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                t0 = time.perf_counter()
                response = client.get(path)
                body = _body(response)  # a streamed answer is timed until its last byte
                times.append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, response.status_code, body[:300])
            queries = len(captured.captured_queries)
            size = len(body)
        rows.append(_row(name, times, queries, size))
    if only and not any(part in name for part in only for name in ("save (viewer)", "submit (viewer)")):
        return rows
    # a save and a submit: an annotator's open assignment of a scan that others still rate
    import numpy as np

    template = base["template"].scan
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    body = nifti_gz(labels, template.affine)
    todo = list(
        Assignment.objects.filter(scan__project=base["project"], status=AssignmentStatus.TODO)
        .select_related("annotator")
        .order_by("-id")[:10]
    )
    save_times, submit_times, save_q, submit_q = [], [], 0, 0
    for assignment in todo:
        client = Client()
        client.force_login(assignment.annotator)
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            response = client.post(
                f"/api/v1/assignments/{assignment.pk}/revisions/?base_revision=none",
                data=body,
                content_type="application/octet-stream",
            )
            save_times.append(time.perf_counter() - t0)
        assert response.status_code == 201, response.content[:300]
        save_q = len(captured.captured_queries)
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            response = client.post(
                f"/api/v1/assignments/{assignment.pk}/submit/", data={}, content_type="application/json"
            )
            submit_times.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.content[:300]
        submit_q = len(captured.captured_queries)
    rows.append(_row("save (viewer)", save_times, save_q, 0))
    rows.append(_row("submit (viewer)", submit_times, submit_q, 0))
    return rows


def _row(name: str, times: list[float], queries: int, size: int) -> dict:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "call": name,
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "queries": queries,
        "bytes": size,
        "n": len(times),
    }


def run_database(kind: str, sizes: list[int], out: dict, *, only: list[str] | None = None) -> None:
    """Build and measure at every size on one database, in this process (Django is set up once)."""
    from mriannot.scaled import start_postgres

    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{kind}-"))
    work.chmod(0o755)  # run as root, the private PostgreSQL runs as its own user (mriannot.scaled)
    server = None
    try:
        if kind == "postgres":
            server = start_postgres(work / "postgres")
            url = server.url
        else:
            url = f"sqlite:///{work / 'db.sqlite3'}"
        setup_django(url, str(work / "data"))
        from django.conf import settings

        settings.STORAGES["default"]["OPTIONS"]["location"] = str(work / "media")
        t0 = time.perf_counter()
        base = make_base()
        for size in sizes:
            t1 = time.perf_counter()
            grow_project(base=base, n_scans=size)
            built = time.perf_counter() - t1
            print(f"[{kind}] {size} scans built in {built:.0f} s (total {time.perf_counter() - t0:.0f} s)", flush=True)
            rows = measure(base, only=only)
            out.setdefault(kind, {})[str(size)] = {"build_s": round(built, 1), "calls": rows}
            _print(kind, size, rows)
            _save(out)
    finally:
        if server is not None:
            server.stop()


def _print(kind: str, size: int, rows: list[dict]) -> None:
    print(f"\n{kind}, {size} scans")
    print(f"{'call':34} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'KB':>8}")
    for r in rows:
        print(f"{r['call']:34} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['queries']:8d} {r['bytes'] / 1024:8.1f}")
    sys.stdout.flush()


OUT = ROOT / "bench" / "out" / "bench_scale.json"


def _save(out: dict) -> None:
    path = OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def markdown(out: dict) -> str:
    """The table of docs/scale.md: per call, p50 / p95 ms and queries at each size, per database."""
    lines = []
    for kind in ("sqlite", "postgres"):
        sizes = sorted(out.get(kind, {}), key=int)
        if not sizes:
            continue
        lines += [
            f"**{kind}** (p50 / p95 ms, queries per request)",
            "",
            "| call | " + " | ".join(f"{int(n):,} scans" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        names = [row["call"] for row in out[kind][sizes[0]]["calls"]]
        for name in names:
            cells = []
            for n in sizes:
                row = next((r for r in out[kind][n]["calls"] if r["call"] == name), None)
                cells.append(f"{row['p50_ms']:,.0f} / {row['p95_ms']:,.0f}, {row['queries']} q" if row else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--one", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes (bench/out/bench_scale.json)")
    parser.add_argument("--table", nargs="+", type=Path, help="print the markdown table of these JSON files, and stop")
    parser.add_argument(
        "--calls", nargs="+", metavar="TEXT", help="time only the calls whose name holds one of these (e.g. agreement)"
    )
    args = parser.parse_args()
    if args.table:
        merged: dict = {}
        for path in args.table:
            merged.update(json.loads(path.read_text()))
        print(markdown(merged))
        return 0
    OUT = out_path = args.out
    if args.one:
        out = json.loads(out_path.read_text()) if out_path.exists() else {}
        out.setdefault("meta", {})["machine"] = f"{os.cpu_count()} CPUs"
        run_database(args.one, sorted(args.sizes), out, only=args.calls)
        return 0
    import subprocess

    if out_path.exists():
        out_path.unlink()
    for kind in args.databases:  # one process per database: Django is set up once per process
        command = [sys.executable, __file__, "--one", kind, "--out", str(out_path), "--sizes", *map(str, args.sizes)]
        command += ["--calls", *args.calls] if args.calls else []
        subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
