"""Concurrent annotators saving through the real HTTP API on the scaled layout (issue 17).

N annotators (default 20), each with an assignment of their own and an API token of their own,
save a label-map revision every 2 s for D seconds (default 180), as the viewer's autosave does
(``frontend/src/js/autosave.js``, ``api.saveRevision``): ``POST
/api/v1/assignments/<id>/revisions/?base_revision=<previous id or none>&source=manual`` with the
gzip NIfTI as an ``application/octet-stream`` body, one save at a time per annotator, each based
on the revision the previous save returned; a 5xx or a lost connection is retried with the same
bytes and base (the server answers 200 with the revision when the first attempt had landed).
The label maps are on a 2 mm MNI grid (99 x 117 x 95), in the canonical form a viewer sends
(``volumes.label_map_to_bytes``), each save a little different from the one before.

Servers: gunicorn (``--web-workers``, 4 sync workers) on PostgreSQL (a private cluster) and
SeaweedFS's S3 gateway, with Redis (no Celery worker: jobs queue), all started here
(``bench/scaled_layout.py``, ``mriannot.scaled``) in production mode; ``--database sqlite
--storage local`` runs the one-machine layout instead, for comparison.

Afterwards every acknowledged revision (id and sha256 answered) is checked through the ORM and
Django's storage API: it exists once, its stored file has exactly the bytes sent (sha256), each
assignment's revisions are numbered 1..n and chained base to base, and no revision exists that
no save acknowledged.

Target: p95 save under 300 ms. Prints a table and writes ``bench/out/bench_concurrency.json``
(the load average is recorded with the figures: read them on a quiet machine only).

    nice .venv/bin/python bench/bench_concurrency.py                                   # 20 x 180 s
    .venv/bin/python bench/bench_concurrency.py --annotators 20 --seconds 30           # a short check
    .venv/bin/python bench/bench_concurrency.py --database sqlite --storage local      # one machine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scaled_layout import Layout, loadavg

SHAPE = (99, 117, 95)  # MNI152 at 2 mm
SPACING = 2.0
TARGET_P95_MS = 300.0
OUT = ROOT / "bench" / "out" / "bench_concurrency.json"


# --- the project ------------------------------------------------------------------------------


def build_project(n_annotators: int) -> list[dict]:
    """A project with one rater per scan, ``n_annotators`` annotators and a scan each; returns
    per annotator its username, assignment id, API token and the scan's affine."""
    import numpy as np
    from django.contrib.auth import get_user_model

    from labeling import auth_services, services, volumes
    from labeling.models import Assignment, Role

    User = get_user_model()
    lead = User.objects.create_user("bench-lead", password="x")
    annotators = [User.objects.create_user(f"bench-rater{i + 1:02d}", password="x") for i in range(n_annotators)]
    labels = [{"value": 1, "name": "lesion", "color": "#ff0000"}, {"value": 2, "name": "csf", "color": "#00ff00"}]
    project = services.project_create(actor=lead, name="Concurrency", raters_per_scan=1, labels=labels)
    for user in annotators:
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-98.0, -134.0, -72.0]
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    head = (1.0 - (x**2 + y**2 + z**2)).clip(0, None).astype(np.float32) * 1000
    for i in range(n_annotators):
        image = head.copy()
        image[0, 0, 0] = i + 1  # distinct bytes per scan (the same image twice is refused)
        services.scan_create(
            project=project, actor=lead, raw=volumes.image_to_bytes(image, affine), subject_id=f"sub-{i + 1:02d}"
        )
    people = []
    for user in annotators:
        assignment = Assignment.objects.filter(scan__project=project, annotator=user).order_by("id").first()
        if assignment is None:  # the balancer gave someone two scans: give this one a scan
            raise RuntimeError(f"{user.username} has no assignment")
        _token, key = auth_services.api_token_create(user=user, name="bench", actor=user)
        people.append(
            {"username": user.username, "assignment": assignment.pk, "token": key, "affine": assignment.scan.affine}
        )
    return people


class Drawing:
    """An annotator's label map: each ``next()`` paints one more stroke and returns the canonical
    gzip NIfTI bytes the viewer would send."""

    def __init__(self, seed: int, affine) -> None:
        import numpy as np

        self.rng = random.Random(seed)
        self.affine = np.asarray(affine, dtype=float)
        self.labels = np.zeros(SHAPE, np.uint8)
        self.labels[40:60, 50:70, 40:55] = 2

    def next(self) -> bytes:
        from labeling import volumes

        r = self.rng
        x, y, z = r.randrange(10, SHAPE[0] - 10), r.randrange(10, SHAPE[1] - 10), r.randrange(10, SHAPE[2] - 10)
        s = r.randrange(2, 6)
        self.labels[x - s : x + s, y - s : y + s, z - s : z + s] = r.choice((0, 1, 2))
        self.labels[0, 0, r.randrange(SHAPE[2])] ^= 1  # never the same bytes twice
        return volumes.label_map_to_bytes(self.labels, self.affine)


# --- the load ---------------------------------------------------------------------------------


class Annotator(threading.Thread):
    def __init__(self, *, person: dict, index: int, url: str, seconds: float, period: float, start_at: float) -> None:
        super().__init__(daemon=True, name=person["username"])
        self.person, self.index, self.url = person, index, url
        self.seconds, self.period, self.start_at = seconds, period, start_at
        self.acked: list[dict] = []  # {id, sha256, sent_sha256, base, number}
        self.attempts: list[dict] = []  # {ms, status, ok}
        self.gave_up = 0
        self.stopped_by: str | None = None

    def run(self) -> None:
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.person['token']}"
        drawing = Drawing(self.index, self.person["affine"])
        base: int | None = None
        endpoint = f"{self.url}/api/v1/assignments/{self.person['assignment']}/revisions/"
        offset = random.Random(1000 + self.index).uniform(0, self.period)
        k = 0
        body = drawing.next()
        while True:
            due = self.start_at + offset + k * self.period
            if due - self.start_at >= self.seconds:
                break
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            k += 1
            revision = self.send(session, endpoint, body, base)
            if revision is None:
                if self.stopped_by:
                    return
                continue  # gave up on this save; the next one keeps the same base (the viewer keeps the edits)
            base = revision["id"]
            body = drawing.next()

    def send(self, session, endpoint: str, body: bytes, base: int | None) -> dict | None:
        """One save, retried like the viewer on 5xx and lost connections (same bytes, same base)."""
        import requests

        sent_sha = hashlib.sha256(body).hexdigest()
        params = {"base_revision": "none" if base is None else str(base), "source": "manual"}
        for attempt in range(5):
            t0 = time.perf_counter()
            try:
                answer = session.post(
                    endpoint,
                    params=params,
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=60,
                )
                status = answer.status_code
            except requests.RequestException as exc:
                answer, status = None, f"{type(exc).__name__}"
            ms = (time.perf_counter() - t0) * 1000
            ok = status in (200, 201)
            self.attempts.append(
                {
                    "t": t0 - self.start_at,
                    "ms": ms,
                    "status": status,
                    "ok": ok,
                    "retry": attempt > 0,
                    "bytes": len(body),
                }
            )
            if ok:
                revision = answer.json()
                self.acked.append(
                    {
                        "id": revision["id"],
                        "sha256": revision["sha256"],
                        "sent_sha256": sent_sha,
                        "base": base,
                        "number": revision["number"],
                        "status": status,
                    }
                )
                return revision
            if isinstance(status, int) and status < 500 and status not in (401, 403):
                # 409 stale_revision / submitted, 400: the viewer stops and shows the message
                self.stopped_by = f"{status}: {answer.text[:200]}"
                return None
            time.sleep(min(1.0 * 2**attempt, 8.0))
        self.gave_up += 1
        return None


def warm_up(url: str, people: list[dict], *, saves: int = 3) -> dict:
    """Each warm-up annotator (one per web worker) saves ``saves`` revisions, all at once, so
    that every gunicorn worker has imported what a save needs (nibabel, numpy) and opened its
    database and S3 connections (boto3's client costs ~0.1-0.3 s the first time) before the
    timed run. Returns the answers' statuses."""
    import requests

    statuses: Counter = Counter()

    def one(index: int, person: dict) -> None:
        drawing = Drawing(9000 + index, person["affine"])
        base = "none"
        for _ in range(saves):
            try:
                answer = requests.post(
                    f"{url}/api/v1/assignments/{person['assignment']}/revisions/?base_revision={base}",
                    data=drawing.next(),
                    headers={"Authorization": f"Token {person['token']}", "Content-Type": "application/octet-stream"},
                    timeout=120,
                )
                statuses[str(answer.status_code)] += 1
                if answer.status_code in (200, 201):
                    base = str(answer.json()["id"])
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return dict(statuses)


# --- checks -----------------------------------------------------------------------------------


def verify(people: list[dict], annotators: list[Annotator]) -> dict:
    """Every acknowledged revision exists once with the bytes sent; no revision nobody acknowledged."""
    from django.core.files.storage import default_storage

    from labeling.models import AnnotationRevision

    problems: list[str] = []
    checked = unacknowledged = 0
    for person, annotator in zip(people, annotators, strict=True):
        acked: dict[int, dict] = {}
        for ack in annotator.acked:
            if ack["id"] in acked:  # the same id acknowledged twice: only a retry may do that
                problems.append(f"{person['username']}: revision {ack['id']} acknowledged twice")
            acked[ack["id"]] = ack
        revisions = list(AnnotationRevision.objects.filter(assignment_id=person["assignment"]).order_by("number"))
        stored_ids = [r.pk for r in revisions]
        if len(set(stored_ids)) != len(stored_ids):
            problems.append(f"{person['username']}: a revision id appears twice")
        for missing in sorted(set(acked) - set(stored_ids)):
            problems.append(f"{person['username']}: acknowledged revision {missing} is not stored (lost)")
        for extra in sorted(set(stored_ids) - set(acked)):
            unacknowledged += 1
            problems.append(f"{person['username']}: revision {extra} is stored but no save acknowledged it")
        seen = Counter((r.sha256, r.base_id) for r in revisions)
        for (sha, base_id), count in seen.items():
            if count > 1:
                problems.append(f"{person['username']}: {count} revisions with sha {sha[:12]} on base {base_id}")
        previous = None
        for number, revision in enumerate(revisions, start=1):
            if revision.number != number:
                problems.append(
                    f"{person['username']}: revision {revision.pk} is number {revision.number}, not {number}"
                )
            if revision.base_id != (previous.pk if previous else None):
                problems.append(f"{person['username']}: revision {revision.pk} is based on {revision.base_id}")
            previous = revision
            ack = acked.get(revision.pk)
            if ack is None:
                continue
            if revision.sha256 != ack["sha256"] or ack["sha256"] != ack["sent_sha256"]:
                problems.append(
                    f"{person['username']}: revision {revision.pk} sha256 stored {revision.sha256[:12]}, "
                    f"answered {ack['sha256'][:12]}, sent {ack['sent_sha256'][:12]}"
                )
            with default_storage.open(revision.file.name, "rb") as handle:
                stored = hashlib.sha256(handle.read()).hexdigest()
            if stored != ack["sent_sha256"]:
                problems.append(
                    f"{person['username']}: revision {revision.pk}'s stored file differs from the bytes sent"
                )
            checked += 1
    return {
        "acknowledged": sum(len(a.acked) for a in annotators),
        "files_checked": checked,
        "unacknowledged_stored": unacknowledged,
        "problems": problems[:50],
        "n_problems": len(problems),
        "ok": not problems,
    }


# --- run --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run(args) -> dict:
    layout = Layout(database=args.database, storage=args.storage).start()
    try:
        layout.django()
        t0 = time.perf_counter()
        people = build_project(args.annotators + args.web_workers)  # the last ones warm the server up
        print(
            f"[{layout.name}] project with {len(people)} annotators built in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        port = layout.gunicorn(workers=args.web_workers)
        url = f"http://127.0.0.1:{port}"
        print(
            f"[{layout.name}] gunicorn -w {args.web_workers} at {url}; {args.annotators} annotators saving every "
            f"{args.period:g} s for {args.seconds:g} s ...",
            flush=True,
        )
        people, warmers = people[: args.annotators], people[args.annotators :]
        warm_statuses = warm_up(url, warmers)
        load_before = loadavg()
        cpu_before, client_cpu = layout.cpu_seconds(), time.process_time()
        start_at = time.perf_counter() + 1.0
        annotators = [
            Annotator(person=p, index=i, url=url, seconds=args.seconds, period=args.period, start_at=start_at)
            for i, p in enumerate(people)
        ]
        for a in annotators:
            a.start()
        load_samples = []
        while any(a.is_alive() for a in annotators):
            time.sleep(5)
            load_samples.append(loadavg())
        elapsed = time.perf_counter() - start_at
        load_after = loadavg()
        cpu_after, client_cpu = layout.cpu_seconds(), time.process_time() - client_cpu
        layout.stop_children()  # gunicorn done: nothing writes while we check
        t1 = time.perf_counter()
        check = verify(people, annotators)
        print(f"[{layout.name}] verified in {time.perf_counter() - t1:.0f} s", flush=True)
        attempts = [x for a in annotators for x in a.attempts]
        ok_ms = [x["ms"] for x in attempts if x["ok"]]
        statuses = Counter(str(x["status"]) for x in attempts)
        span = max((x["t"] + x["ms"] / 1000 for x in attempts), default=0.0) - min(
            (x["t"] for x in attempts), default=0.0
        )
        window = max(10.0, args.seconds / 6)
        windows = []
        for k in range(int(args.seconds // window) + 1):
            ms = [x["ms"] for x in attempts if x["ok"] and k * window <= x["t"] < (k + 1) * window]
            if ms:
                windows.append(
                    {
                        "from_s": round(k * window),
                        "saves": len(ms),
                        "p50_ms": round(statistics.median(ms), 1),
                        "p95_ms": round(percentile(ms, 0.95), 1),
                    }
                )
        return {
            "layout": layout.name,
            "annotators": args.annotators,
            "seconds": args.seconds,
            "period_s": args.period,
            "web_workers": args.web_workers,
            "cpu_count": os.cpu_count(),
            "elapsed_s": round(elapsed, 1),
            "attempts": len(attempts),
            "saves_acknowledged": len(ok_ms),
            "saves_per_s": round(len(ok_ms) / max(span, args.seconds), 2),
            "expected_saves_per_s": round(args.annotators / args.period, 2),
            "p50_ms": round(statistics.median(ok_ms), 1) if ok_ms else None,
            "p95_ms": round(percentile(ok_ms, 0.95), 1) if ok_ms else None,
            "p99_ms": round(percentile(ok_ms, 0.99), 1) if ok_ms else None,
            "max_ms": round(max(ok_ms), 1) if ok_ms else None,
            "statuses": dict(statuses),
            "retried_attempts": sum(1 for x in attempts if x["retry"]),
            "gave_up": sum(a.gave_up for a in annotators),
            "stopped": {a.person["username"]: a.stopped_by for a in annotators if a.stopped_by},
            "target_p95_ms": TARGET_P95_MS,
            "target_met": bool(ok_ms) and percentile(ok_ms, 0.95) < TARGET_P95_MS and check["ok"],
            "body_bytes_mean": round(statistics.mean(x["bytes"] for x in attempts)) if attempts else None,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "loadavg_samples": load_samples,
            "cpu_s": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
            "client_cpu_s": round(client_cpu, 2),
            "server_cpu_ms_per_save": round(
                sum(cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after) * 1000 / len(ok_ms), 1
            )
            if ok_ms
            else None,
            "windows": windows,
            "samples": [
                {"annotator": i, "t": round(x["t"], 3), "ms": round(x["ms"], 1), "status": x["status"]}
                for i, a in enumerate(annotators)
                for x in a.attempts
            ],
            "warm_up_statuses": warm_statuses,
            "verification": check,
        }
    finally:
        layout.stop()


def print_table(result: dict) -> None:
    print()
    print(
        f"{result['annotators']} annotators x {result['seconds']:g} s, a save every {result['period_s']:g} s, "
        f"gunicorn -w {result['web_workers']} on {result['layout']}, {result['cpu_count']} cores, "
        f"load average {result['loadavg_before']} -> {result['loadavg_after']}"
    )
    print(f"| {'layout':<16} | saves | saves/s | p50 ms | p95 ms | max ms | statuses | verified |")
    print("|---|---|---|---|---|---|---|---|")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items()))
    check = result["verification"]
    verdict = f"{check['files_checked']} files ok" if check["ok"] else f"{check['n_problems']} PROBLEMS"
    print(
        f"| {result['layout']:<16} | {result['saves_acknowledged']} | {result['saves_per_s']} "
        f"(of {result['expected_saves_per_s']}) | {result['p50_ms']} | {result['p95_ms']} | {result['max_ms']} | "
        f"{statuses} | {verdict} |"
    )
    print(
        "over time: "
        + "; ".join(
            f"{w['from_s']} s: {w['saves']} saves, p50 {w['p50_ms']} / p95 {w['p95_ms']} ms" for w in result["windows"]
        )
    )
    cpu = ", ".join(f"{k} {v} s" for k, v in result["cpu_s"].items())
    print(
        f"server CPU during the run: {cpu} ({result['server_cpu_ms_per_save']} ms a save: at most "
        f"~{result['cpu_count'] * 1000 / result['server_cpu_ms_per_save']:.0f} saves/s on {result['cpu_count']} "
        f"idle cores); the load generator itself: {result['client_cpu_s']} s"
        if result["server_cpu_ms_per_save"]
        else ""
    )
    met = "met" if result["target_met"] else "NOT met"
    print(f"target p95 < {TARGET_P95_MS:.0f} ms and every revision verified: {met}")
    for problem in check["problems"][:10]:
        print(f"  problem: {problem}")
    for who, why in result["stopped"].items():
        print(f"  {who} stopped: {why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the annotators save")
    parser.add_argument("--period", type=float, default=2.0, help="seconds between an annotator's saves")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", []) if isinstance(previous, dict) else []
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs.append(result)
    out.write_text(json.dumps({"runs": runs, "last": result}, indent=2))
    print(f"wrote {out}")
    return 0 if result["verification"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
