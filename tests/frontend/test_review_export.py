"""The lead's review and export pages in headless Chromium, against the real server and a real
Celery worker: review a flagged scan (overlays, rater performance, agreement), accept its
consensus, rerun it with another method, edit it and save the edit as the ground truth, walk
the flagged scans; build an export with its options, follow its progress, download the zip."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from consensus import services as consensus_services
from consensus.models import ConsensusRun, Export, GroundTruth
from labeling.models import ScanStatus
from mriannot.jobs import JobStatus
from tests import factories
from tests.frontend.helpers import canvas_point, drawing, log_in, read_nifti, stroke
from tests.frontend.lead_helpers import purge_queues, rated_project, record_text

pytestmark = [pytest.mark.browser, pytest.mark.celery]


@pytest.fixture
def review_world(transactional_db, local_queue, request):
    """Three raters on three scans (rater3 drifting), every consensus flagged (threshold 0), and a
    real Celery worker for what the pages ask for (reruns, exports)."""
    world = rated_project(n_raters=3, n_scans=3, drifting="rater3", ambiguity_threshold=0.0)
    purge_queues(local_queue)  # tasks queued while building the world: already run here
    request.getfixturevalue("celery_worker")
    return world


def open_review(page, base_url: str, scan_id: int) -> None:
    page.goto(f"{base_url}/review/{scan_id}/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")


def show(page, overlay: str) -> None:
    page.check(f"#overlay-{overlay}")
    page.wait_for_selector(f"body[data-overlay={overlay}]")


def labels_of(field) -> np.ndarray:
    return np.asarray(read_nifti(field.name).dataobj).astype(np.uint8)


def test_review_accept_rerun_edit_and_walk_flagged_scans(live_server, page, review_world, shot):
    world = review_world
    assert all(s.status == ScanStatus.FLAGGED for s in world.project.scans.all())
    # Leads work through the flagged scans most ambiguous first.
    order = [
        row["id"] for row in world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/flagged-scans/").json()
    ]
    assert len(order) == 3
    scan = world.project.scans.get(pk=order[0])
    run = ConsensusRun.objects.get(scan=scan)
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_review(page, live_server.url, scan.pk)

    # Where we are among the flagged scans.
    assert page.inner_text("#flag-position") == "Flagged scan 1 of 3"
    assert page.get_attribute("#prev-flagged", "aria-disabled") == "true"
    assert page.get_attribute("#next-flagged", "href") == f"/review/{order[1]}/"
    assert page.is_visible("#simulated-notice")

    # The consensus is shown first: exactly the run's stored labels.
    assert page.evaluate("document.body.dataset.overlay") == "consensus"
    np.testing.assert_array_equal(drawing(page), labels_of(run.labels_file))
    assert "flagged" in page.inner_text("#run-ambiguity")
    # Why: every reason the server stored, in its words, in order.
    assert run.flag_reasons
    reasons = page.locator("#flag-reasons-list li")
    assert page.is_visible("#flag-reasons")
    assert reasons.all_inner_texts() == [r["message"] for r in run.flag_reasons]
    assert [reasons.nth(i).get_attribute("data-code") for i in range(reasons.count())] == [
        r["code"] for r in run.flag_reasons
    ]
    shot(page, "review-opened")

    # Rater performance (3 raters x 3 labels) and the agreement report, with the server's figures.
    assert page.locator("#perf-body tr").count() == 9
    perf = run.performances.get(rater_index=2)
    cells = page.locator('#perf-body tr[data-rater="2"][data-label="1"] td')
    assert cells.first.inner_text() == f"3: {perf.annotator.username}" == "3: rater3"
    assert f"{perf.dice['1']:.3f}" in page.inner_text('#perf-body tr[data-rater="2"][data-label="1"]')
    kappa = run.agreement["overall"]["all"]["fleiss_kappa"]
    assert f"{kappa:.3f}" in page.inner_text("#agreement-facts")
    assert page.locator("#agreement-body tr").count() == 3

    # Each rater's labels, one at a time.
    show(page, "rater-3")
    revision = perf.revision
    np.testing.assert_array_equal(drawing(page), labels_of(revision.file))
    assert page.inner_text("#readout-overlay") == "Rater 3: rater3"

    # The uncertainty overlay: 1 - max posterior of the stored posterior (the API computes it).
    show(page, "uncertainty")
    posterior = np.asarray(read_nifti(run.posterior_file.name).dataobj, dtype=np.float32)
    expected = 1.0 - posterior.max(axis=-1)
    summary = page.evaluate("window.mriannot.uncertainty.summary")
    assert summary["max"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert abs(summary["above"] - int((expected > 0.01).sum())) <= 2 and summary["above"] > 0
    assert page.evaluate("window.mriannot.viewer.nv.volumes.length") == 2
    page.fill("#overlay-opacity", "90")
    assert page.inner_text("#overlay-opacity-value") == "90 %"
    shot(page, "review-uncertainty")

    # Accept the consensus: a ground truth row, and the scan leaves the flagged list.
    show(page, "consensus")
    page.fill("#decision-note", "looks right")
    page.click("#accept")
    page.wait_for_selector("body[data-accepted]")
    truth = GroundTruth.objects.get(scan=scan)
    assert (truth.source, truth.run_id, truth.note, truth.created_by) == ("accepted", run.pk, "looks right", world.lead)
    assert page.evaluate("document.body.dataset.accepted") == str(truth.pk)
    assert "accepted by a lead" in page.inner_text("#truth-text")
    assert "Not flagged · 2 flagged scans waiting" == page.inner_text("#flag-position")
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH
    shot(page, "review-accepted")

    # Rerun with majority vote: the worker runs it, the page follows its progress and shows it.
    # (The form starts from the options of the run shown.)
    assert page.input_value("#opt-prior") == run.options["prior"]
    assert page.input_value("#opt-region") == run.options["region"]
    assert page.input_value("#opt-overrule") == run.options["overrule"] == "ties"
    page.select_option("#rerun-method", "majority_vote")
    assert page.is_hidden("#staple-options")
    page.click("#rerun")
    page.wait_for_selector("#run-progress[data-status=done]", timeout=60000)
    rerun = ConsensusRun.objects.get(scan=scan, method="majority_vote")
    assert rerun.status == JobStatus.DONE
    page.wait_for_selector(f"body[data-run='{rerun.pk}']")
    assert "100 %" in page.inner_text("#run-text")
    assert page.locator("#runs-body tr").count() == 2
    assert page.inner_text("#run-method").startswith("Majority vote")
    np.testing.assert_array_equal(drawing(page), labels_of(rerun.labels_file))

    # Edit a copy of that consensus with the viewer's tools and save it as the ground truth.
    page.click("#edit-start")
    page.wait_for_selector("body[data-editing=true]")
    assert page.is_visible("#edit-tools") and page.is_disabled("#accept")
    page.click("#view-buttons [data-view=axial]")
    page.click('#palette button[data-value="3"]')  # White matter: no rater drew it
    assert page.evaluate("window.mriannot.tools.tool") == "brush"
    stroke(page, canvas_point(page, 0.35, 0.5), canvas_point(page, 0.65, 0.5), steps=4)
    edited = drawing(page)
    assert (edited == 3).sum() > 0
    page.fill("#edit-note", "one more white-matter line")
    page.click("#edit-save")
    page.wait_for_selector("body[data-saved]")
    edit = GroundTruth.objects.filter(scan=scan).order_by("-id").first()
    assert (edit.source, edit.run_id, edit.supersedes_id) == ("edited", rerun.pk, truth.pk)
    stored = labels_of(edit.file)
    np.testing.assert_array_equal(stored, edited)
    assert edit.label_counts.get("3", 0) == int((edited == 3).sum())
    assert page.evaluate("document.body.dataset.overlay") == "truth"
    assert "edited by a lead" in page.inner_text("#truth-text")
    shot(page, "review-edited")

    # On to the next flagged scan.
    page.click("#next-flagged")
    page.wait_for_url(f"**/review/{order[1]}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#flag-position") == "Flagged scan 1 of 2"
    assert page.get_attribute("#prev-flagged", "aria-disabled") == "true"
    assert page.get_attribute("#next-flagged", "href") == f"/review/{order[2]}/"


def test_export_with_options_progress_and_download(live_server, page, review_world, shot, tmp_path):
    world = review_world
    scans = list(world.project.scans.order_by("id"))
    consensus_services.ground_truth_accept(run=ConsensusRun.objects.get(scan=scans[0]), actor=world.lead)
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    page.goto(f"{live_server.url}/exports/{world.project.pk}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#exports-body") == "No export yet."

    # nnU-Net with the raters' labels and the posteriors; the progress shows while it builds.
    record_text(page, "export-text")
    page.check("input[name=format][value=nnunet]")
    page.check("#include-raters")
    page.check("#include-posterior")
    page.click("#export-start")
    page.wait_for_selector("#export-progress[data-status=done]", timeout=60000)
    seen = page.evaluate("window.progressSeen")
    assert seen and seen[-1].startswith("100 %")
    export = Export.objects.get()
    assert export.status == JobStatus.DONE
    assert export.options == {
        "include_raters": True,
        "include_posterior": True,
        "only_adjudicated": False,
        "dataset_id": 500,
    }
    page.wait_for_selector(f'#exports-body tr[data-export="{export.pk}"][data-status=done]')
    shot(page, "export-done")

    with page.expect_download() as download:
        page.click("#export-result a")
    path = tmp_path / "export.zip"
    download.value.save_as(path)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == export.sha256 and len(data) == export.size
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    base = "Dataset500_TestProject/"
    assert base + "dataset.json" in names and base + "datasheet.json" in names
    assert sum(n.startswith(base + "raters/") for n in names) == 9  # 3 scans x 3 raters
    assert sum(n.startswith(base + "posteriors/") for n in names) == 3

    # BIDS, only the adjudicated scan: the options reach the server.
    page.check("input[name=format][value=bids]")
    page.uncheck("#include-raters")
    page.uncheck("#include-posterior")
    page.check("#only-adjudicated")
    page.click("#export-start")
    page.wait_for_function(
        "document.querySelectorAll('#exports-body tr[data-status=done]').length === 2", timeout=60000
    )
    second = Export.objects.order_by("-id").first()
    assert second.format == "bids" and second.options["only_adjudicated"] is True
    assert second.message == "1 scans"
    response = page.request.get(f"{live_server.url}/api/v1/exports/{second.pk}/download/")
    assert response.status == 200
    bids = zipfile.ZipFile(io.BytesIO(response.body())).namelist()
    assert len({n.split("/")[2] for n in bids if "/sub-" in n and n.count("/") >= 3}) == 1
    shot(page, "export-list")
