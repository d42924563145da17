"""Jobs that survive a dead worker, and a broker that is down (mriannot/jobs.py, queue.py, celery.py).

- a lease: a running job's heartbeat (a thread, and every progress report) must stay younger
  than its kind's heartbeat lease; the workers' periodic check sends a job that lost its worker
  again, and it finishes once; a job whose heartbeat is fresh is neither re-sent nor run by a
  second delivery;
- a broker that is down: a send connects once, with the short timeout, never retries, and
  the request answers at once with the row queued; the check sends it when Redis is back,
  scoring included (it has no row);
- every queue is consumed by a plain worker, and the queue-health endpoint says which queue
  has no worker;
- the launcher stops everything it started on SIGTERM, even when a second one follows.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis.connection
from celery.signals import task_postrun
from django.utils import timezone

from active_learning import services as al_services
from active_learning.models import ModelVersion, ScanScore
from consensus import services as consensus_services
from consensus.models import ConsensusRun, Export, RaterPerformance
from consensus.services import runs as consensus_runs
from mriannot import jobs, queue
from mriannot.jobs import JobStatus
from mriannot.localredis import free_port
from tests import factories

SHAPE = (24, 20, 16)
ROOT = Path(__file__).resolve().parents[1]


def _rated_scan(world, seed=0):
    scan = factories.add_scan(world, seed=seed, shape=SHAPE)
    truth = factories.sphere_truth(SHAPE)
    factories.submit_panel(world, scan, [truth, np.roll(truth, 1, axis=0), truth])
    return scan


def _lost_consensus_run(world) -> ConsensusRun:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(consensus_runs, "enqueue_on_commit", lambda *args: None)  # the message is lost
        _rated_scan(world)
    return ConsensusRun.objects.get()


@pytest.fixture
def clean_redis(redis_server, celery_session_app):
    """The session's Redis without the worker records and 'once' keys of earlier tests."""
    client = queue.broker_redis()
    for key in [*client.scan_iter(match="mriannot:*")]:
        client.delete(key)
    queue.queues_health_reset()
    yield client
    for name in ("default", "consensus", "training", "export"):
        client.delete(name)  # messages a test sent and no worker took: no later test's worker runs them
    queue.queues_health_reset()


@pytest.fixture
def fast_checks(settings, clean_redis):
    """Heartbeats every 0.2 s, a 5 s lease, a jobs check every 0.5 s (set before the worker starts)."""
    settings.MRIANNOT_JOB_HEARTBEAT_S = 0.2
    settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S = 5.0
    settings.MRIANNOT_JOBS_REQUEUE_EVERY_S = 0.5
    settings.MRIANNOT_QUEUE_HEALTH_CACHE_S = 0


@pytest.fixture
def checks_counted(monkeypatch):
    """How many periodic jobs checks the worker watch has run."""
    from mriannot import celery as mriannot_celery

    count = {"n": 0}
    real = mriannot_celery.jobs_check

    def counted():
        result = real()
        count["n"] += 1
        return result

    monkeypatch.setattr(mriannot_celery, "jobs_check", counted)
    return count


# --- the lease, without a worker ------------------------------------------------------------


@pytest.mark.django_db
def test_the_lease_rules(settings):
    settings.MRIANNOT_JOB_SEND_GRACE_S = 30
    settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S = 90
    now = timezone.now()
    ago = lambda s: now - timedelta(seconds=s)  # noqa: E731

    def job(**fields):
        return Export(**{"status": JobStatus.QUEUED, "created_at": ago(0), **fields})

    # Queued: never handed to the broker after the grace (it was down), or handed over longer
    # ago than the lease (the broker lost it).
    assert not job(created_at=ago(29)).is_stale(now=now)
    assert job(created_at=ago(31)).is_stale(now=now)
    assert not job(created_at=ago(600), sent_at=ago(600)).is_stale(now=now)
    assert job(created_at=ago(600), sent_at=ago(Export.lease_s + 1)).is_stale(now=now)
    assert job(created_at=ago(5), sent_at=ago(5)).is_stale(now=now, queued_for_s=0)  # the broker was emptied
    # Running: a heartbeat within the lease keeps it, a long job included; no heartbeat for the
    # lease, or past the kind's longest run, loses it.
    running = {"status": JobStatus.RUNNING, "created_at": ago(7200)}
    assert not job(**running, started_at=ago(3000), heartbeat_at=ago(89)).is_stale(now=now)
    assert job(**running, started_at=ago(3000), heartbeat_at=ago(91)).is_stale(now=now)
    assert job(**running, started_at=ago(91)).is_stale(now=now)  # claimed, and never a beat since
    assert job(**running, started_at=ago(Export.lease_s + 1), heartbeat_at=ago(1)).is_stale(now=now)
    assert not job(status=JobStatus.DONE, created_at=ago(10**6)).is_stale(now=now)


@pytest.mark.django_db
def test_a_kind_may_set_its_own_heartbeat_lease(settings, monkeypatch):
    settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S = 90
    assert ModelVersion.heartbeat_lease() == 90
    monkeypatch.setattr(ModelVersion, "heartbeat_lease_s", 600.0)
    now = timezone.now()
    version = ModelVersion(
        status=JobStatus.RUNNING, started_at=now - timedelta(seconds=900), heartbeat_at=now - timedelta(seconds=300)
    )
    assert ModelVersion.heartbeat_lease() == 600 and not version.is_stale(now=now)


@pytest.mark.django_db(transaction=True)
def test_the_work_runs_with_a_heartbeat_that_stops_with_it(settings):
    settings.MRIANNOT_JOB_HEARTBEAT_S = 0.05
    world = factories.make_world()
    export = consensus_services.export_request(project=world.project, actor=world.lead, format="nnunet", queue=False)
    name = f"heartbeat consensus.Export {export.pk}"

    def work(job):
        claimed = job.heartbeat_at
        factories.wait_for(lambda: Export.objects.get(pk=job.pk).heartbeat_at > claimed, timeout=10, what="a heartbeat")
        assert any(t.name == name for t in threading.enumerate())
        job.mark_done("ok")
        job.save()
        return job

    assert jobs.job_execute(Export, export.pk, work).status == JobStatus.DONE
    assert not any(t.name == name for t in threading.enumerate())  # stopped with the work
    export.refresh_from_db()
    assert (export.status, export.attempts) == (JobStatus.DONE, 1)


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_while_the_first_runs_returns_without_running():
    world = factories.make_world()
    export = consensus_services.export_request(project=world.project, actor=world.lead, format="nnunet", queue=False)
    started, release, calls = threading.Event(), threading.Event(), []

    def work(job):
        calls.append(job.pk)
        started.set()
        assert release.wait(30)
        job.mark_done("ok")
        job.save()
        return job

    first = threading.Thread(target=jobs.job_execute, args=(Export, export.pk, work))
    first.start()
    try:
        assert started.wait(30)
        again = jobs.job_execute(Export, export.pk, work)  # the same message, delivered again
        assert again.status == JobStatus.RUNNING and calls == [export.pk]
        assert jobs.jobs_requeue_stale() == {}  # a fresh heartbeat: not sent again either
    finally:
        release.set()
        first.join(30)
    export.refresh_from_db()
    assert (export.status, export.attempts, calls) == (JobStatus.DONE, 1, [export.pk])


# --- through a real worker --------------------------------------------------------------------


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_heartbeat_stopped_is_sent_again_by_the_workers_check_and_finishes_once(
    fast_checks, checks_counted, celery_worker, monkeypatch
):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    run = _lost_consensus_run(world)
    # A worker claimed it and was killed (SIGKILL): running, its last heartbeat a minute old.
    died = timezone.now() - timedelta(seconds=60)
    ConsensusRun.objects.filter(pk=run.pk).update(
        status=JobStatus.RUNNING, attempts=1, started_at=died, heartbeat_at=died
    )

    run = factories.wait_for(
        lambda: ConsensusRun.objects.filter(pk=run.pk, status=JobStatus.DONE).first(), what="the rerun"
    )
    assert run.attempts == 2, run.error
    # Once: while the checks go on, it is neither sent nor run again.
    seen = checks_counted["n"]
    factories.wait_for(lambda: checks_counted["n"] >= seen + 3, timeout=30, what="three more checks")
    again = ConsensusRun.objects.get(pk=run.pk)
    assert (again.status, again.attempts, again.finished_at) == (JobStatus.DONE, 2, run.finished_at)
    assert RaterPerformance.objects.filter(run=run).count() == 3


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_running_job_with_a_fresh_heartbeat_delivered_twice_is_not_run_again(clean_redis, celery_worker, monkeypatch):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    run = _lost_consensus_run(world)
    now = timezone.now()  # running on another worker, alive
    ConsensusRun.objects.filter(pk=run.pk).update(
        status=JobStatus.RUNNING, attempts=1, started_at=now, heartbeat_at=now
    )
    done = []

    def finished(sender=None, args=None, **kwargs):
        if sender.name == ConsensusRun.task_name and list(args) == [run.pk]:
            done.append(run.pk)

    task_postrun.connect(finished, weak=False)
    try:
        assert jobs.job_send(run) and jobs.job_send(run)
        factories.wait_for(lambda: len(done) == 2, what="both deliveries")
    finally:
        task_postrun.disconnect(finished)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.finished_at) == (JobStatus.RUNNING, 1, None)
    assert not RaterPerformance.objects.filter(run=run).exists()
    assert jobs.jobs_requeue_stale() == {}


# --- a broker that is down ----------------------------------------------------------------------


@pytest.fixture
def connects(monkeypatch):
    """Every TCP connection attempt to Redis, with the connect timeout it used."""
    attempts = []
    real = redis.connection.Connection._connect

    def spy(self):
        attempts.append({"port": self.port, "timeout": self.socket_connect_timeout})
        return real(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", spy)
    return attempts


@pytest.fixture
def broker_down(settings):
    """The Celery app's broker is a closed port; yields the port. Restores the broker after."""
    from celery import current_app

    port = free_port()  # nothing listens there
    keys = ("CELERY_BROKER_URL", "broker_url")
    before = {key: current_app.conf.get(key) for key in keys}
    for key in keys:
        current_app.conf[key] = f"redis://127.0.0.1:{port}/0"
    settings.MRIANNOT_QUEUE_HEALTH_CACHE_S = 0
    queue.queues_health_reset()
    yield port
    for key, value in before.items():
        current_app.conf[key] = value
    queue.queues_health_reset()


def test_a_send_to_a_broker_that_is_down_tries_once_with_the_short_timeout(settings, broker_down, connects):
    settings.MRIANNOT_BROKER_CONNECT_TIMEOUT_S = 0.5
    assert queue.task_send(ConsensusRun.task_name, [1]) is False
    assert connects == [{"port": broker_down, "timeout": 0.5}]  # one attempt: no retry


@pytest.mark.celery
def test_a_send_publishes_without_retry(clean_redis, monkeypatch):
    from kombu import Producer

    published = []
    real = Producer.publish

    def spy(self, body, **options):
        published.append({k: options.get(k) for k in ("retry", "routing_key")})
        return real(self, body, **options)

    monkeypatch.setattr(Producer, "publish", spy)
    assert queue.task_send("consensus.tasks.export_execute_task", [10**9])
    assert published == [{"retry": False, "routing_key": "export"}]


def _upload(world, seed):
    upload = io.BytesIO(factories.nifti_bytes(factories.image_array(seed=seed), factories.AFFINE))
    upload.name = f"scan{seed}.nii.gz"
    return world.client(world.lead).post(
        f"/api/v1/projects/{world.project.pk}/scans/", {"file": upload}, format="multipart"
    )


def _training_truth(world, seed=5):
    scan = factories.train_scan_with_truth(world, seed=seed, shape=SHAPE)
    ModelVersion.objects.all().delete()  # a retraining the ground truth may have queued
    return scan


@pytest.mark.celery
@pytest.mark.django_db
def test_with_the_broker_down_the_api_answers_and_the_check_sends_everything_when_it_is_back(
    settings, clean_redis, connects, django_capture_on_commit_callbacks
):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = _rated_scan(world)
    _training_truth(world)
    ConsensusRun.objects.all().delete()  # asked for again below
    settings.MRIANNOT_JOB_SEND_GRACE_S = 0
    from celery import current_app

    up = current_app.conf.broker_url
    port = free_port()
    current_app.conf["CELERY_BROKER_URL"] = current_app.conf["broker_url"] = f"redis://127.0.0.1:{port}/0"
    lead = world.client(world.lead)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            uploaded = _upload(world, seed=7)
        with django_capture_on_commit_callbacks(execute=True):
            run = lead.post(f"/api/v1/scans/{scan.pk}/consensus-runs/", {}, format="json")
        with django_capture_on_commit_callbacks(execute=True):
            train = lead.post(f"/api/v1/projects/{world.project.pk}/models/")
        with django_capture_on_commit_callbacks(execute=True):
            train_again = lead.post(f"/api/v1/projects/{world.project.pk}/models/")
    finally:
        current_app.conf["CELERY_BROKER_URL"] = current_app.conf["broker_url"] = up
    assert (uploaded.status_code, run.status_code, train.status_code) == (201, 202, 202), uploaded.json()
    # Each send connected once to the dead broker and gave up: no retry held the request.
    down = [c for c in connects if c["port"] == port]
    assert len(down) == 4 and {c["timeout"] for c in down} == {settings.MRIANNOT_BROKER_CONNECT_TIMEOUT_S}
    # The same training is returned while it waits; nothing was sent, the rows stay queued.
    assert train_again.json() == {**train.json(), "reused": True}
    run_row, version = ConsensusRun.objects.get(), ModelVersion.objects.get()
    assert (run_row.status, run_row.sent_at) == (JobStatus.QUEUED, None)
    assert (version.status, version.sent_at) == (JobStatus.QUEUED, None)
    assert not ScanScore.objects.filter(scan_id=uploaded.json()["id"]).exists()

    # The broker is back: the check sends the run, the training and the scoring, once each.
    sent = jobs.jobs_requeue_stale()
    assert sent == {
        "consensus.ConsensusRun": [run_row.pk],
        "active_learning.ModelVersion": [version.pk],
        "active_learning.scoring": [world.project.pk],
    }
    assert ConsensusRun.objects.get().sent_at is not None and ModelVersion.objects.get().sent_at is not None
    assert jobs.jobs_requeue_stale() == {}


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)  # sent when the service's transaction commits, as in production
def test_asking_again_for_a_job_that_lost_its_worker_sends_it_again(settings, clean_redis):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = _rated_scan(world)
    _training_truth(world)
    run = ConsensusRun.objects.get()
    assert run.sent_at is not None  # handed to the broker when the last submission committed
    version, _ = al_services.model_version_request(project=world.project, actor=world.lead)
    died = timezone.now() - timedelta(seconds=settings.MRIANNOT_JOB_HEARTBEAT_LEASE_S + 1)
    for model, pk in ((ConsensusRun, run.pk), (ModelVersion, version.pk)):
        model.objects.filter(pk=pk).update(status=JobStatus.RUNNING, attempts=1, started_at=died, heartbeat_at=died)
    lead = world.client(world.lead)

    again = lead.post(f"/api/v1/scans/{scan.pk}/consensus-runs/", {}, format="json")
    train = lead.post(f"/api/v1/projects/{world.project.pk}/models/")
    assert again.json() == {"id": run.pk, "status": "queued", "reused": True}
    assert (train.json()["id"], train.json()["status"], train.json()["reused"]) == (version.pk, "queued", True)
    for row in (ConsensusRun.objects.get(pk=run.pk), ModelVersion.objects.get(pk=version.pk)):
        assert (row.status, row.attempts) == (JobStatus.QUEUED, 1) and row.sent_at is not None


@pytest.mark.django_db
def test_a_failed_run_asked_again_while_the_broker_is_down_is_marked_unsent(
    settings, broker_down, django_capture_on_commit_callbacks
):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = _rated_scan(world)
    long_ago = timezone.now() - timedelta(hours=1)
    ConsensusRun.objects.update(status=JobStatus.FAILED, sent_at=long_ago, created_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        run, queued = consensus_services.consensus_run_request(scan=scan, actor=world.lead)
    run.refresh_from_db()
    assert queued and (run.status, run.sent_at) == (JobStatus.QUEUED, None)
    # So the next check sends it after the grace, not after the lease.
    settings.MRIANNOT_JOB_SEND_GRACE_S = 30
    assert run.is_stale() and not run.is_stale(now=long_ago + timedelta(seconds=29))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_scan_uploaded_while_the_broker_was_down_is_scored_when_it_is_back(
    settings, redis_server, fast_checks, celery_worker, broker_down
):
    settings.MRIANNOT_JOB_SEND_GRACE_S = 0
    world = factories.make_world()
    response = _upload(world, seed=3)  # its scoring is sent to the dead broker, and lost
    assert response.status_code == 201
    assert not ScanScore.objects.filter(scan_id=response.json()["id"]).exists()
    from celery import current_app

    current_app.conf["CELERY_BROKER_URL"] = current_app.conf["broker_url"] = redis_server.url
    factories.wait_for(
        lambda: ScanScore.objects.filter(scan_id=response.json()["id"]).exists(), what="the scan's score"
    )


# --- queues and workers -------------------------------------------------------------------------


def test_a_plain_worker_consumes_every_queue():
    from celery import Celery

    app = Celery("plain")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    consumed = set(app.amqp.queues.consume_from)  # a worker started without -Q
    assert consumed == {"default", "consensus", "training", "export"}
    routed = {app.amqp.router.route({}, model.task_name)["queue"].name for model in jobs.job_kinds()}
    assert routed == {"consensus", "training", "export", "default"}  # DICOM imports: default


@pytest.mark.celery
@pytest.mark.django_db
def test_the_queue_health_says_which_queue_has_no_worker(settings, clean_redis):
    settings.MRIANNOT_QUEUE_HEALTH_CACHE_S = 0
    world = factories.make_world()
    export = consensus_services.export_request(project=world.project, actor=world.lead, format="nnunet", queue=False)
    Export.objects.filter(pk=export.pk).update(created_at=timezone.now() - timedelta(seconds=120))
    queue.worker_announce(hostname="w1@box", queues=["default", "consensus", "training"])

    response = world.client(world.annotators[0]).get("/api/v1/queues/")
    assert response.status_code == 200
    body = response.json()
    by_name = {q["name"]: q for q in body["queues"]}
    assert body["broker"] == "ok" and set(by_name) == {"default", "consensus", "training", "export"}
    assert (by_name["export"]["workers"], by_name["export"]["no_worker"]) == ([], True)
    assert by_name["export"]["worker_last_seen_at"] is None
    assert (by_name["export"]["waiting"], by_name["export"]["kinds"]) == (1, ["consensus.Export"])
    assert by_name["export"]["oldest_waiting_s"] >= 120
    assert (by_name["consensus"]["workers"], by_name["consensus"]["no_worker"]) == (["w1@box"], False)
    assert (by_name["consensus"]["waiting"], by_name["consensus"]["oldest_waiting_s"]) == (0, None)


@pytest.mark.django_db
def test_the_queue_health_answers_at_once_when_the_broker_is_down_and_asks_it_once_per_period(
    settings, broker_down, connects
):
    world = factories.make_world()
    settings.MRIANNOT_QUEUE_HEALTH_CACHE_S = 60
    client = world.client(world.lead)
    first, second = client.get("/api/v1/queues/").json(), client.get("/api/v1/queues/").json()
    assert first == second and first["broker"] == "unreachable"
    assert all(q["workers"] is None and q["no_worker"] is False for q in first["queues"])  # unknown, not "none"
    assert [c["port"] for c in connects] == [broker_down]  # one attempt, then the cached answer


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_is_seen_on_every_queue_it_consumes(fast_checks, celery_worker):
    world = factories.make_world()
    client = world.client(world.lead)
    body = factories.wait_for(
        lambda: (b := client.get("/api/v1/queues/").json()) and all(q["workers"] for q in b["queues"]) and b,
        what="the worker's announcement",
    )
    assert {tuple(q["workers"]) for q in body["queues"]} == {(celery_worker.hostname,)}


# --- the launcher ---------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Every living descendant of ``pid`` (parents read from /proc/<pid>/stat)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {child for child, ppid in parents.items() if ppid == parent} - found
        found |= kids
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_the_launcher_stopped_by_sigterm_twice_stops_everything_without_a_traceback(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "DJANGO_SECRET_KEY"}
    }
    env.update(MRIANNOT_DATA_DIR=str(tmp_path), MRIANNOT_PORT=str(free_port()), MRIANNOT_DEMO="0")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "mriannot.launcher"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout: list[str] = []
    stderr: list[str] = []
    readers = [
        threading.Thread(target=lambda: stdout.extend(launcher.stdout), daemon=True),
        threading.Thread(target=lambda: stderr.extend(launcher.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()

    def printed(words: str) -> bool:
        if launcher.poll() is not None:
            pytest.fail(f"the launcher exited ({launcher.returncode}): " + "".join(stderr)[-3000:])
        return any(words in line for line in list(stdout))

    try:
        factories.wait_for(lambda: printed("mriannot is running at"), timeout=300, what="the launcher's start")
        children = factories.wait_for(
            lambda: (kids := _children(launcher.pid)) and len(kids) >= 3 and kids, what="3 children"
        )
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children}
        assert any("redis-server" in n for n in names) and any("celery" in n for n in names)
        assert any("runserver" in n for n in names)

        launcher.send_signal(signal.SIGTERM)
        factories.wait_for(lambda: any("stopping" in line for line in list(stdout)), timeout=30, what="'stopping'")
        launcher.send_signal(signal.SIGTERM)  # a second one, while it stops
        assert launcher.wait(timeout=60) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    for reader in readers:
        reader.join(10)
    text = "".join(stderr)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert not [pid for pid in children if _alive(pid)], names
