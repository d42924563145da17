"""The DICOM import through a real Celery worker on a real Redis (mriannot/jobs.py's lifecycle).
All DICOM data SIMULATED.

A lead uploads a study through the API (202); the worker analyses it while the API shows its
progress ("series 3 of 8"); the job waits for review with one result per series; the lead
corrects a role and confirms; the worker creates the scans with the corrected roles. A confirmed
import whose message was lost is sent again by ``manage.py jobs_requeue`` and finishes once.
"""

from __future__ import annotations

import io
import re
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from labeling import dicom_imports
from labeling.models import DicomImport, Scan
from mriannot import jobs
from mriannot.jobs import JobStatus
from simulation import dicom as sim
from tests import factories

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

SHAPE = (12, 10, 5)
SETTLED = {"review", "done", "failed", "discarded"}


def study_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(sim.study_datasets(shape=SHAPE)):
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"{n:05d}.dcm", raw.getvalue())
    return buffer.getvalue()


@pytest.fixture
def slow_progress(monkeypatch):
    """Every progress step is recorded and lasts 0.15 s more, so a page polling the job sees it."""
    steps = []
    real = dicom_imports.job_progress

    def progress(model, pk, fraction, message):
        steps.append((round(fraction, 3), message))
        real(model, pk, fraction, message)
        time.sleep(0.15)

    monkeypatch.setattr(dicom_imports, "job_progress", progress)
    return steps


def follow(client, pk: int, *, timeout: float = 120.0) -> tuple[dict, list[dict]]:
    """Poll the job's API until it settles; its last answer and every answer seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/dicom-imports/{pk}/").json()
        seen.append(answer)
        if answer["state"] in SETTLED:
            return answer, seen
        time.sleep(0.05)
    raise AssertionError(f"DICOM import {pk} did not settle: {seen[-1]}")


def test_upload_progress_review_role_change_confirm(celery_worker, settings, tmp_path, slow_progress):
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(tmp_path / "spool")
    world = factories.make_world()
    client = world.client(world.lead)
    upload = SimpleUploadedFile("study.zip", study_zip(), content_type="application/zip")
    response = client.post(f"/api/v1/projects/{world.project.pk}/dicom-studies/", {"file": upload}, format="multipart")
    assert response.status_code == 202 and response.json()["state"] == "queued"
    pk = response.json()["id"]

    job, seen = follow(client, pk)
    assert job["state"] == "review", job["error"]
    # The page saw the analysis going: its state, a growing bar and "series k of 8".
    assert "analysing" in {a["state"] for a in seen}
    shown = [a["message"] for a in seen if a["state"] == "analysing"]
    assert any(re.fullmatch(r"series [1-8] of 8", m) for m in shown), shown
    progress = [a["progress"] for a in seen if a["state"] == "analysing"]
    assert progress == sorted(progress) and progress[-1] > 0
    assert [m for _, m in slow_progress if m.startswith("series")] == [f"series {k} of 8" for k in range(1, 9)]
    # One result per series: the usable ones ready with their numbers, the others refused.
    assert len(job["series"]) == 8
    ready = {r["series_number"]: r for r in job["series"] if r["status"] == "ready"}
    assert set(ready) == {2, 3} and ready[3]["role_guess"] == "FLAIR" and ready[2]["shape"]
    assert sorted(r["error"] for r in job["series"] if r["status"] == "refused") == sorted(
        spec.expect for spec in sim.BROKEN
    )
    assert not list((tmp_path / "spool").iterdir())

    # The lead says series #3 is a T2w, and confirms: the second phase runs on the worker.
    patched = client.patch(f"/api/v1/dicom-imports/{pk}/", {"roles": {str(ready[3]["index"]): "T2w"}}, format="json")
    assert patched.status_code == 200
    slow_progress.clear()
    confirmed = client.post(f"/api/v1/dicom-imports/{pk}/confirm/", {}, format="json")
    assert confirmed.status_code == 202
    job, seen = follow(client, pk)
    assert job["state"] == "done", job["error"]
    assert "creating" in {a["state"] for a in seen}
    assert [m for _, m in slow_progress] == ["storing series 1 of 2", "storing series 2 of 2"]
    assert {s.sequence for s in Scan.objects.filter(project=world.project)} == {"T1w", "T2w"}
    stored = {r["series_number"]: r for r in job["series"] if r["status"] == "stored"}
    assert set(stored) == {2, 3} and stored[3]["role"] == "T2w"
    assert (job["summary"]["stored"], job["summary"]["refused"]) == (2, 6)
    row = DicomImport.objects.get(pk=pk)
    assert (row.status, row.attempts, row.confirmed_by) == (JobStatus.DONE, 2, world.lead)


def test_a_lost_confirmation_is_sent_again_and_creates_the_scans_once(celery_worker, settings, tmp_path, monkeypatch):
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(tmp_path / "spool")
    world = factories.make_world()
    job = dicom_imports.dicom_study_import(
        project=world.project, actor=world.lead, archive=io.BytesIO(study_zip()), review=True
    )
    assert dicom_imports.dicom_import_state(job) == "review"
    monkeypatch.setattr(dicom_imports, "enqueue_on_commit", lambda *args: None)  # the message is lost
    dicom_imports.dicom_import_confirm(job=job, actor=world.lead)
    monkeypatch.undo()
    time.sleep(1.0)
    job.refresh_from_db()
    assert (job.status, job.phase) == (JobStatus.QUEUED, "create")  # nobody is coming for it
    call_command("jobs_requeue", "--queued-for", "0")
    deadline = time.monotonic() + 120
    while job.status not in (JobStatus.DONE, JobStatus.FAILED) and time.monotonic() < deadline:
        time.sleep(0.2)
        job.refresh_from_db()
    assert (job.status, job.phase) == (JobStatus.DONE, "finished"), job.error
    assert Scan.objects.filter(project=world.project).count() == 2
    # Once: a second delivery does nothing.
    finished = job.finished_at
    jobs.job_send(job)
    time.sleep(1.5)
    job.refresh_from_db()
    assert job.finished_at == finished and Scan.objects.count() == 2


def test_the_job_kind_names_a_registered_task():
    from mriannot.celery import app

    app.loader.import_default_modules()
    assert DicomImport in jobs.job_kinds()
    assert DicomImport.task_name in app.tasks and jobs.job_queue(DicomImport) == "default"
