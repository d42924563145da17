"""One job lifecycle for consensus runs, exports and model versions (mriannot/jobs.py).

- the claim rules, without a worker: a finished job is returned untouched, a job running on
  another worker within its lease is left alone, a failure is recorded with its error;
- a lost message, for every kind of job, through a real Celery worker on a real Redis: the
  row stays queued until ``manage.py jobs_requeue`` sends it again, then it finishes once, and
  a second delivery does nothing; a job whose worker died is picked up again.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from active_learning import services as al_services
from active_learning.models import ModelVersion
from consensus import services as consensus_services
from consensus.models import ConsensusRun, Export
from consensus.services import runs as consensus_runs
from labeling.models import Split
from mriannot import jobs
from mriannot.jobs import JobStatus
from tests import factories

SHAPE = (24, 20, 16)


@pytest.fixture(autouse=True)
def tiny_model(settings):
    settings.MRIANNOT_AL_NETWORK = {
        "working_shape": (16, 16, 16),
        "channels": (4, 8),
        "strides": (2,),
        "num_res_units": 0,
    }
    settings.MRIANNOT_AL_TRAINING = {"steps": 6, "steps_per_scan": 0, "patch_shape": None, "batch_size": 2}


def _rated_scan(world, seed=0, split=Split.TRAIN):
    scan = factories.add_scan(world, seed=seed, shape=SHAPE)
    scan.split = split
    scan.save()
    truth = factories.sphere_truth(SHAPE)
    factories.submit_panel(world, scan, [truth, np.roll(truth, 1, axis=0), truth])
    return scan


def _wait(job, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (JobStatus.DONE, JobStatus.FAILED):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job} did not finish")


def test_every_kind_of_job_names_a_registered_task():
    from mriannot.celery import app

    app.loader.import_default_modules()
    kinds = jobs.job_kinds()
    assert {k.__name__ for k in kinds} == {"ConsensusRun", "Export", "ModelVersion", "DicomImport"}
    assert all(k.task_name in app.tasks and k.lease_s > 0 for k in kinds)


@pytest.mark.django_db
def test_a_finished_or_busy_job_is_not_run_again_and_a_failure_is_recorded():
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    _rated_scan(world)
    export = consensus_services.export_request(project=world.project, actor=world.lead, format="nnunet", queue=False)
    calls = []

    def work(job):
        calls.append(job.pk)
        raise RuntimeError("disk on fire")

    # Running on another worker, within its lease: left alone.
    Export.objects.filter(pk=export.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
    assert jobs.job_execute(Export, export.pk, work).status == JobStatus.RUNNING and calls == []
    # Past its lease (its worker died): claimed again, and the failure recorded.
    Export.objects.filter(pk=export.pk).update(started_at=timezone.now() - timedelta(seconds=Export.lease_s + 1))
    with pytest.raises(RuntimeError, match="disk on fire"):
        jobs.job_execute(Export, export.pk, work)
    export.refresh_from_db()
    assert calls == [export.pk]
    assert (export.status, export.error, export.attempts) == (JobStatus.FAILED, "RuntimeError: disk on fire", 1)
    # Done: returned as it is.
    Export.objects.filter(pk=export.pk).update(status=JobStatus.DONE)
    assert jobs.job_execute(Export, export.pk, work).status == JobStatus.DONE and calls == [export.pk]


def _lost_consensus_run(world, monkeypatch):
    monkeypatch.setattr(consensus_runs, "enqueue_on_commit", lambda *args: None)  # the message is lost
    _rated_scan(world)
    monkeypatch.undo()
    return ConsensusRun.objects.get()


def _lost_export(world, monkeypatch):
    _rated_scan(world)
    consensus_services.consensus_run_execute(run_id=ConsensusRun.objects.get().pk)
    return consensus_services.export_request(project=world.project, actor=world.lead, format="monai", queue=False)


def _lost_model_version(world, monkeypatch):
    for seed in range(2):
        factories.train_scan_with_truth(world, seed=seed, shape=SHAPE)
    ModelVersion.objects.all().delete()  # a retraining the ground truths may have queued
    monkeypatch.setattr(al_services, "enqueue_on_commit", lambda *args: None)
    version, queued = al_services.model_version_request(project=world.project, actor=world.lead)
    monkeypatch.undo()
    assert queued
    return version


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("make", [_lost_consensus_run, _lost_export, _lost_model_version])
def test_a_lost_message_is_sent_again_and_the_job_finishes_once(make, celery_worker, monkeypatch):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    job = make(world, monkeypatch)
    time.sleep(1.0)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)  # nobody is coming for it

    call_command("jobs_requeue", "--queued-for", "0")
    job = _wait(job)
    assert (job.status, job.attempts) == (JobStatus.DONE, 1), job.error
    finished = job.finished_at

    # Once: nothing is stale any more, and a second delivery of the same job does nothing.
    assert jobs.jobs_requeue_stale(queued_for_s=0) == {}
    jobs.job_send(job)
    time.sleep(2.0)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.finished_at) == (JobStatus.DONE, 1, finished)


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_worker_died_is_picked_up_again(celery_worker, monkeypatch):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    run = _lost_consensus_run(world, monkeypatch)
    # It was claimed by a worker that died an hour past the lease ago.
    died = timezone.now() - timedelta(seconds=ConsensusRun.lease_s + 3600)
    ConsensusRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, attempts=1, started_at=died)
    assert jobs.jobs_requeue_stale() == {"consensus.ConsensusRun": [run.pk]}
    run = _wait(run)
    assert (run.status, run.attempts) == (JobStatus.DONE, 2), run.error
