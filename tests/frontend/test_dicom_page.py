"""The Scans page's DICOM import in headless Chromium, against the real server and a real Celery
worker. All DICOM data SIMULATED (simulation.dicom).

- A lead chooses a zipped study: it goes up, the page follows the job's analysis with a progress
  bar ("series k of 8"), then shows the eight series, the usable ones with their guessed role
  preselected and the refused ones greyed with their reason; the lead changes a role (saved at
  once), confirms, follows the creation, and the scans appear in the table with the corrected
  roles; the summary says what was taken and what was left.
- In a project whose scans hold T1w + FLAIR, a study's folder chosen in the browser is zipped
  there (neutral names), and the plan shows the T1w as the scan and the FLAIR as its sequence; a
  second FLAIR is superseded; confirming makes one scan with a FLAIR channel.
- The settings page edits the project's declared sequences.
"""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from labeling import dicom_imports, services
from labeling.models import DicomImport, Project, Scan, ScanChannel
from simulation import dicom as sim
from tests import factories
from tests.frontend.helpers import log_in
from tests.frontend.lead_helpers import purge_queues, record_text

pytestmark = [pytest.mark.browser, pytest.mark.celery]

SHAPE = (12, 10, 5)


@pytest.fixture
def dicom_world(celery_worker, celery_session_app, settings, tmp_path, monkeypatch):
    """A project with a lead and three annotators, no scans; a real worker; progress a little slow
    (each step 0.2 s longer, a scan's 0.7 s) so the page can be seen following it."""
    purge_queues(celery_session_app)
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(tmp_path / "spool")
    real = dicom_imports.job_progress

    def progress(model, pk, fraction, message):
        real(model, pk, fraction, message)
        time.sleep(0.7 if message.startswith("storing") else 0.2)  # a step outlasts the page's 0.5 s poll

    monkeypatch.setattr(dicom_imports, "job_progress", progress)
    return factories.make_world()


def study_zip(datasets) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for ds in datasets:
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"DOE_JANE/{ds.SeriesNumber:03d}/{int(ds.InstanceNumber):03d}.dcm", raw.getvalue())
    return buffer.getvalue()


def open_scans_page(page, base_url: str, project_id: int) -> None:
    page.goto(f"{base_url}/projects/{project_id}/scans/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")


def series_rows(page) -> dict[int, dict]:
    """The series table by series number: state, plan, role, whether its select is enabled, text."""
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#dicom-body tr[data-series]')].map((tr) => ({
             number: Number(tr.cells[0].innerText), status: tr.dataset.status, plan: tr.dataset.plan,
             role: tr.querySelector('select').value, enabled: !tr.querySelector('select').disabled,
             refused: tr.classList.contains('refused'), text: tr.cells[5].innerText }))"""
    )
    return {r["number"]: r for r in rows}


def test_lead_uploads_a_study_corrects_a_role_and_creates_the_scans(live_server, page, dicom_world, shot):
    world = dicom_world
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)
    assert page.get_attribute("#dicom-card", "data-state") == "idle"
    record_text(page, "dicom-status")
    page.set_input_files(
        "#dicom-file",
        {
            "name": "DOE_JANE_MRN-7734219.zip",
            "mimeType": "application/zip",
            "buffer": study_zip(sim.study_datasets(shape=SHAPE)),
        },
    )
    page.wait_for_selector('#dicom-card[data-state="review"]', timeout=60_000)
    page.locator("#dicom-card").scroll_into_view_if_needed()
    shot(page, "review")
    seen = page.evaluate("window.progressSeen")
    assert any(text.startswith("Uploading the study") for text in seen), seen
    assert any(text.startswith("Analysing: series ") and text.endswith(" of 8") for text in seen), seen

    rows = series_rows(page)
    assert len(rows) == 8
    assert (rows[2]["role"], rows[2]["plan"], rows[2]["enabled"]) == ("T1w", "scan", True)
    assert (rows[3]["role"], rows[3]["plan"]) == ("FLAIR", "scan")
    for spec in sim.BROKEN:
        row = rows[spec.number]
        assert row["refused"] and not row["enabled"] and row["status"] == "refused"
        assert row["text"].startswith("refused · ")
    assert "localizer" in rows[1]["text"]
    assert "2 usable, 6 refused" in page.inner_text("#dicom-review-text")
    assert not Scan.objects.exists()

    # The lead says #3 is a T2w: saved at once, the server's answer shown.
    job = DicomImport.objects.get()
    page.select_option(f'#dicom-body select[aria-label="Role of series {_index(job, 3)}"]', "T2w")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#dicom-body tr[data-series]')]
             .some((tr) => tr.cells[0].innerText === '3' && tr.dataset.role === 'T2w')"""
    )
    job.refresh_from_db()
    assert {r["series_number"]: r["role"] for r in job.series if r["status"] == "ready"} == {2: "T1w", 3: "T2w"}

    record_text(page, "dicom-status")
    page.click("#dicom-confirm")
    page.wait_for_selector('#dicom-card[data-state="done"]', timeout=60_000)
    seen = page.evaluate("window.progressSeen")
    assert any(text.startswith("Creating the scans: storing series") for text in seen), seen
    summary = page.inner_text("#dicom-summary")
    assert summary.startswith("Done: 2 series stored as 2 scans") and "6 refused" in summary, summary
    page.locator("#dicom-summary").scroll_into_view_if_needed()
    shot(page, "done")
    scans = {s.sequence: s for s in Scan.objects.filter(project=world.project)}
    assert set(scans) == {"T1w", "T2w"}
    # The scans appear in the table, with their sequences.
    page.wait_for_function("document.querySelectorAll('#scan-body tr[data-scan]').length === 2")
    sequences = page.evaluate(
        "[...document.querySelectorAll('#scan-body tr[data-scan]')].map((tr) => tr.cells[8].innerText).sort()"
    )
    assert sequences == ["T1w", "T2w"]
    rows = series_rows(page)
    assert rows[3]["text"].startswith("stored") and f"scan {scans['T2w'].pk}" in rows[3]["text"]
    assert not rows[3]["enabled"]
    assert not list(dicom_imports.spool_dir().iterdir())  # the upload is gone


def _index(job: DicomImport, number: int) -> int:
    return next(r["index"] for r in job.series if r["series_number"] == number)


def test_a_folder_into_a_two_sequence_project_makes_one_scan_with_its_flair(
    live_server, page, dicom_world, tmp_path, shot
):
    world = dicom_world
    services.project_update(project=world.project, actor=world.lead, channels=["T1w", "FLAIR"])
    again = sim.spec_with(sim.USABLE[1], description="FLAIR AX repeat", number=9)
    sim.study_write(tmp_path / "DOE_JANE", shape=SHAPE, specs=(*sim.USABLE, again))
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)
    page.set_input_files("#dicom-folder", str(tmp_path / "DOE_JANE"))
    page.wait_for_selector('#dicom-card[data-state="review"]', timeout=60_000)
    rows = series_rows(page)
    page.locator("#dicom-card").scroll_into_view_if_needed()
    shot(page, "review")
    assert {n: r["plan"] for n, r in rows.items()} == {2: "scan", 3: "superseded", 9: "channel"}
    assert "T1w + FLAIR" in page.inner_text("#dicom-review-text")
    assert "#9" in rows[3]["text"]
    page.click("#dicom-confirm")
    page.wait_for_selector('#dicom-card[data-state="done"]', timeout=60_000)
    scan = Scan.objects.get(project=world.project)
    assert list(ScanChannel.objects.filter(scan=scan).values_list("role", flat=True)) == ["FLAIR"]
    rows = series_rows(page)
    assert rows[9]["text"].startswith(f"stored · the FLAIR sequence of scan {scan.pk}")
    assert rows[3]["text"].startswith("left: superseded")
    assert "1 left out" in page.inner_text("#dicom-summary")


def test_settings_page_edits_the_declared_sequences(live_server, page, dicom_world):
    world = dicom_world
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    page.goto(f"{live_server.url}/projects/{world.project.pk}/settings/")
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("#channels-body").startswith("None")
    page.select_option("#channel-role", "T1w")
    page.click("#channel-add")
    page.select_option("#channel-role", "FLAIR")
    page.click("#channel-add")
    page.select_option("#channel-role", "T2w")
    page.click("#channel-add")
    page.click('#channels-body tr[data-role="T2w"] button[data-action="up"]')  # T1w, T2w, FLAIR
    page.click('#channels-body tr[data-role="FLAIR"] button[data-action="remove"]')  # T1w, T2w
    page.click("#channels-save")
    page.wait_for_function("document.getElementById('channels-result').textContent.startsWith('Saved')")
    assert Project.objects.get(pk=world.project.pk).channels == ["T1w", "T2w"]
    first = page.inner_text('#channels-body tr[data-role="T1w"]')
    assert "the scan's own image" in first


def test_lead_adds_a_missing_sequence_to_a_scan(live_server, page, dicom_world):
    """A two-sequence project: the table's Sequences column says the NIfTI scan lacks its FLAIR;
    the lead adds one (on another grid: resampled onto the scan's)."""
    world = dicom_world
    services.project_update(project=world.project, actor=world.lead, channels=["T1w", "FLAIR"])
    scan = factories.add_scan(world, seed=1, shape=(12, 10, 8))
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)
    cell = page.locator(f'#scan-body td[data-channels="{scan.pk}"]')
    cell.locator('span[data-role="FLAIR"] button').wait_for()
    assert cell.inner_text().startswith("T1w ✓ FLAIR missing")
    flair = factories.nifti_bytes(
        factories.image_array((10, 9, 8), 5), factories.AFFINE @ np.diag([1.1, 1.1, 1.0, 1.0])
    )
    page.set_input_files(
        f'input[data-channel-input="{scan.pk}-FLAIR"]',
        {"name": "flair.nii.gz", "mimeType": "application/gzip", "buffer": flair},
    )
    page.wait_for_function(
        f"document.querySelector('#scan-body td[data-channels=\"{scan.pk}\"]').dataset.present === 'T1w,FLAIR'"
    )
    channel = ScanChannel.objects.get(scan=scan)
    assert (channel.role, channel.resampled) == ("FLAIR", True)
    assert "resampled" in cell.locator('span[data-role="FLAIR"]').get_attribute("title")
