"""The Scans page in headless Chromium, against the real server: a lead drops five files (one
malformed) and sees each file's result (the malformed one's reason from the server, and nothing of
it stored), deals the scans 60/20/20 by rule after a preview, filters and pages the table, edits a
scan whose split is frozen (the override names the model version it invalidates), and sets
metadata from a CSV; an annotator is refused the page."""

from __future__ import annotations

import base64
from collections import Counter

import numpy as np
import pytest

from active_learning.models import ModelVersion
from consensus import services as consensus_services
from labeling import volumes
from labeling.models import AuditEvent, Scan, Split
from mriannot.jobs import JobStatus
from tests import factories
from tests.frontend.helpers import log_in

pytestmark = [pytest.mark.browser]

BROKEN = b"\x1f\x8b\x08\x00" + b"this is not a NIfTI file" * 4


@pytest.fixture
def console_world(transactional_db, local_queue):
    """A project with a lead and three annotators (two raters per scan), no scans yet."""
    return factories.make_world()


def open_scans_page(page, base_url: str, project_id: int) -> None:
    page.goto(f"{base_url}/projects/{project_id}/scans/")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#page-error")


def drop_files(page, files: dict[str, bytes]) -> None:
    """Drop files on the drop zone as a person would from a file manager (a DataTransfer of Files)."""
    page.evaluate(
        """(files) => {
          const transfer = new DataTransfer();
          for (const [name, b64] of Object.entries(files)) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, { type: "application/octet-stream" }));
          }
          const zone = document.getElementById("drop-zone");
          zone.dispatchEvent(new DragEvent("dragenter", { dataTransfer: transfer, bubbles: true }));
          zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        {name: base64.b64encode(data).decode() for name, data in files.items()},
    )


def wait_uploads_done(page, n: int) -> None:
    page.wait_for_function(
        """(n) => {
          const rows = [...document.querySelectorAll('#upload-body tr')];
          return rows.length === n && rows.every((r) => !['queued', 'uploading', 'checking'].includes(r.dataset.state));
        }""",
        arg=n,
        timeout=60_000,
    )


def table_rows(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#scan-body tr[data-scan]')].map((tr) => ({
             id: Number(tr.dataset.scan), split: tr.dataset.split,
             cells: [...tr.querySelectorAll('td')].map((td) => td.innerText.trim()) }))"""
    )


def wait_table(page, predicate: str) -> None:
    """Wait until the rendered table satisfies ``predicate`` (JS, given ``rows`` as table_rows gives them)."""
    page.wait_for_function(
        f"""() => {{
          const rows = [...document.querySelectorAll('#scan-body tr[data-scan]')].map((tr) => ({{
            id: Number(tr.dataset.scan), split: tr.dataset.split }}));
          return {predicate};
        }}"""
    )


COUNT_UPLOADS_IN_FLIGHT = """
  window.uploadsInFlight = 0;
  window.uploadsMaxInFlight = 0;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    window.uploadsInFlight += 1;
    window.uploadsMaxInFlight = Math.max(window.uploadsMaxInFlight, window.uploadsInFlight);
    // readyState 4 comes before "load", where the page starts the next upload.
    this.addEventListener("readystatechange", () => { if (this.readyState === 4) window.uploadsInFlight -= 1; });
    return send.call(this, body);
  };
"""


def test_lead_drops_five_files_and_sees_each_result(live_server, page, console_world, stored_files, shot):
    world = console_world
    page.add_init_script(COUNT_UPLOADS_IN_FLIGHT)
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)
    assert page.inner_text("#scan-body") == "No scan matches."

    page.fill("#batch-site", "SITE-A")
    page.select_option("#batch-sequence", "FLAIR")
    page.select_option("#batch-split", "train")
    good = {
        f"sub-0{i}.nii.gz": factories.nifti_bytes(factories.image_array(seed=i), factories.AFFINE) for i in (1, 2, 3, 4)
    }
    files = {**dict(list(good.items())[:2]), "broken.nii.gz": BROKEN, **dict(list(good.items())[2:])}
    drop_files(page, files)
    wait_uploads_done(page, 5)
    shot(page, "uploaded")

    states = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#upload-body tr')].map((r) => [r.dataset.file, r.dataset.state]))"
    )
    assert states == {**dict.fromkeys(good, "stored"), "broken.nii.gz": "refused"}
    # The malformed file: the server's own reason, and nothing of it stored.
    with pytest.raises(volumes.VolumeError) as refusal:
        volumes.load_image(BROKEN, max_decompressed_bytes=2**30)
    reason = page.inner_text('#upload-body tr[data-file="broken.nii.gz"] td:last-child')
    assert reason == f"Refused: {refusal.value.message}"
    stored = {s.original_filename: s for s in Scan.objects.filter(project=world.project)}
    assert set(stored) == set(good)
    assert all((s.site, s.sequence, s.split) == ("SITE-A", "FLAIR", "train") for s in stored.values())
    assert len([f for f in stored_files() if f.startswith("scans/")]) == 4
    for name, scan in stored.items():
        row = page.locator(f'#upload-body tr[data-file="{name}"]')
        assert row.locator("td:last-child").inner_text() == f"Stored as scan {scan.pk}"
        assert row.locator("a").get_attribute("href") == f"/review/{scan.pk}/"
        assert row.locator("progress").evaluate("p => p.value") == 1
    summary = page.inner_text("#upload-summary")
    assert summary == "5 files: 4 stored, 1 refused."
    assert page.evaluate("window.uploadsMaxInFlight") == 2  # two at a time, never more

    # The table follows the uploads: four scans, their raters' progress, their metadata.
    wait_table(page, "rows.length === 4")
    rows = table_rows(page)
    assert sorted(r["id"] for r in rows) == sorted(s.pk for s in stored.values())
    assert all(r["cells"][4].startswith("0/2 submitted") and r["cells"][5] == "SITE-A" for r in rows)

    # The same image again: named as the duplicate of its scan, not stored twice.
    drop_files(page, {"again.nii.gz": good["sub-01.nii.gz"]})
    wait_uploads_done(page, 6)
    again = page.locator('#upload-body tr[data-file="again.nii.gz"]')
    assert again.get_attribute("data-state") == "duplicate"
    assert (
        again.locator("td:last-child").inner_text()
        == f"Duplicate of scan {stored['sub-01.nii.gz'].pk} (not stored again)"
    )
    assert Scan.objects.count() == 4


def test_lead_splits_60_20_20_by_rule_and_filters_the_table(live_server, page, console_world, shot):
    world = console_world
    for i in range(30):
        scan = factories.add_scan(world, seed=i, subject_id=f"sub-{i:02d}")
        Scan.objects.filter(pk=scan.pk).update(site="SITE-A" if i < 20 else "SITE-B")
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)

    # Paged on the server: 25 of 30, then the last 5.
    assert page.inner_text("#page-text") == "1–25 of 30" and len(table_rows(page)) == 25
    page.click("#page-next")
    page.wait_for_function("document.getElementById('page-text').textContent === '26–30 of 30'")
    assert len(table_rows(page)) == 5

    # 60/20/20, stratified by site: a preview first, nothing changed yet.
    for field, value in (("train", "60"), ("validation", "20"), ("test", "20"), ("seed", "11")):
        page.fill(f"#split-{field}", value)
    page.select_option("#split-stratify", "site")
    page.click("#split-preview")
    page.wait_for_selector("#split-preview-box:not([hidden])")
    strata = page.evaluate(
        "[...document.querySelectorAll('#split-strata tr')].map((tr) => [...tr.children].map((td) => td.textContent))"
    )
    assert strata == [["SITE-A", "20", "12", "4", "4"], ["SITE-B", "10", "6", "2", "2"]]
    assert page.inner_text("#split-summary").startswith("30 scans dealt, 30 change split.")
    assert set(Scan.objects.values_list("split", flat=True)) == {Split.UNASSIGNED}
    shot(page, "split-preview")

    page.click("#split-apply")
    page.wait_for_selector("#split-result:not([hidden])")
    assert page.inner_text("#split-result") == "Applied: 30 scans moved."
    counts = Counter(Scan.objects.values_list("split", flat=True))
    assert counts == {"train": 18, "validation": 6, "test": 6}
    for site, share in (("SITE-A", (12, 4, 4)), ("SITE-B", (6, 2, 2))):
        c = Counter(Scan.objects.filter(site=site).values_list("split", flat=True))
        assert (c["train"], c["validation"], c["test"]) == share

    # Filter: the validation split, then a subject within it.
    page.select_option("#filter-split", "validation")
    page.wait_for_function("document.getElementById('page-text').textContent === '1–6 of 6'")
    validation = set(Scan.objects.filter(split=Split.VALIDATION).values_list("id", flat=True))
    assert {r["id"] for r in table_rows(page)} == validation
    assert all(r["split"] == "validation" for r in table_rows(page))
    subject = Scan.objects.filter(split=Split.VALIDATION).order_by("id").first().subject_id
    page.fill("#filter-text", subject)
    page.wait_for_function("document.getElementById('page-text').textContent === '1–1 of 1'")
    assert [r["cells"][1] for r in table_rows(page)] == [subject]
    shot(page, "filtered")


def test_a_frozen_split_needs_the_override_which_names_the_model(live_server, page, console_world):
    world = console_world
    scan = factories.add_scan(world, seed=1, subject_id="sub-frozen")
    Scan.objects.filter(pk=scan.pk).update(split=Split.VALIDATION)
    truth = consensus_services.ground_truth_edit(
        scan=scan, actor=world.lead, raw=factories.nifti_bytes(factories.label_array(), np.asarray(scan.affine))
    )
    ModelVersion.objects.create(
        project=world.project, version=1, status=JobStatus.DONE, validation_ground_truth_ids=[truth.pk]
    )
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)

    page.select_option(f'select[data-scan="{scan.pk}"]', "train")
    page.wait_for_selector("#edit-dialog[open] #edit-frozen:not([hidden])")
    assert "model version v1" in page.inner_text("#edit-frozen-text")
    assert Scan.objects.get(pk=scan.pk).split == Split.VALIDATION
    page.check("#edit-override")
    page.fill("#edit-scanner", "Prisma 3T")
    page.click("#edit-save")
    page.wait_for_selector("#edit-dialog", state="hidden")
    wait_table(page, f"rows.some((r) => r.id === {scan.pk} && r.split === 'train')")
    scan.refresh_from_db()
    assert (scan.split, scan.scanner) == ("train", "Prisma 3T")
    event = AuditEvent.objects.get(action="scan.split_change", target_id=str(scan.pk))
    assert [v["version"] for v in event.data["invalidated_model_versions"]] == [1]


def test_metadata_from_a_csv_preview_then_apply(live_server, page, console_world, tmp_path):
    world = console_world
    scans = [factories.add_scan(world, seed=i, subject_id=f"sub-{i}") for i in range(3)]
    log_in(page, live_server.url, "lead", factories.PASSWORD)
    open_scans_page(page, live_server.url, world.project.pk)

    bad = tmp_path / "bad.csv"
    bad.write_text("subject_id,site,sex\nsub-0,SITE-A,F\nsub-9,SITE-A,M\nsub-1,Smith 2024-01-02,M\n")
    page.set_input_files("#csv-file", str(bad))
    page.click("#csv-preview")
    page.wait_for_selector("#csv-table:not([hidden])")
    errors = page.evaluate(
        "[...document.querySelectorAll('#csv-body tr')].map((tr) => tr.querySelector('td.errors').textContent)"
    )
    assert errors[0] == "" and errors[1] == "no scan of this subject" and "looks like a date" in errors[2]
    assert page.is_disabled("#csv-apply")
    assert "2 in error" in page.inner_text("#csv-summary")

    good = tmp_path / "good.csv"
    good.write_text("subject_id,site,sex,age_band\nsub-0,SITE-A,F,60-69\nsub-2,SITE-B,M,80+\n")
    page.set_input_files("#csv-file", str(good))
    page.click("#csv-preview")
    page.wait_for_function("!document.getElementById('csv-apply').disabled")
    page.click("#csv-apply")
    page.wait_for_function("document.getElementById('csv-summary').textContent === 'Applied: 2 scans changed.'")
    wait_table(page, "rows.length === 3")
    page.wait_for_function(
        f"document.querySelector('#scan-body tr[data-scan=\"{scans[2].pk}\"]').innerText.includes('SITE-B')"
    )
    assert list(Scan.objects.order_by("id").values_list("site", "sex", "age_band")) == [
        ("SITE-A", "F", "60-69"),
        ("", "", ""),
        ("SITE-B", "M", "80+"),
    ]


def test_an_annotator_is_refused_the_scans_page(live_server, page, console_world):
    world = console_world
    response = page.request.get(f"{live_server.url}/projects/{world.project.pk}/scans/")
    assert response.status == 200  # nobody logged in: the page sends them to log in
    log_in(page, live_server.url, world.annotators[0].username, factories.PASSWORD)
    answer = page.goto(f"{live_server.url}/projects/{world.project.pk}/scans/")
    assert answer.status == 403
    page.wait_for_selector("body[data-ready=forbidden]")
    assert page.is_visible("#forbidden") and page.is_hidden("#scans-page")
    assert "leads and admins" in page.inner_text("#forbidden-text")
