"""Ground truth: automatic for clear scans, accepted or edited by a lead, superseded never overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from consensus import fusion, services
from consensus.models import ConsensusRun, GroundTruth, GroundTruthSource, Method
from labeling import volumes
from labeling.models import AuditEvent, ScanStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_voxel_uncertain(monkeypatch):
    """Make every labelled voxel count as uncertain, so any threshold below 1 flags the scan."""
    monkeypatch.setattr(fusion, "UNCERTAIN_BELOW", 1.01)


def _scan_with_run(threshold: float, shift: int = 2):
    """Three raters: the truth, and the truth moved by ``shift`` voxels along x and along y."""
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.ambiguity_threshold = threshold
    world.project.save()
    scan = factories.add_scan(world, shape=(24, 20, 16))
    truth = factories.sphere_truth((24, 20, 16))
    shifted = np.roll(truth, shift, axis=0)
    factories.submit_panel(world, scan, [truth, shifted, np.roll(truth, -shift, axis=1)])
    run = services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=scan).pk)
    return world, scan, run, truth


def test_a_clear_scan_gets_its_consensus_as_ground_truth():
    _world, scan, run, _truth = _scan_with_run(threshold=1.0, shift=1)
    assert run.flag_reasons == [] and not run.flagged
    gt = GroundTruth.objects.get(scan=scan)
    assert (gt.source, gt.run_id, gt.created_by, gt.file.name) == (
        GroundTruthSource.CONSENSUS,
        run.pk,
        None,
        run.labels_file.name,
    )
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH


def test_a_flagged_scan_waits_for_the_lead_who_accepts_then_edits(every_voxel_uncertain):
    world, scan, run, truth = _scan_with_run(threshold=0.0)
    assert run.flagged and not GroundTruth.objects.filter(scan=scan).exists()
    client = world.client(world.lead)
    review = client.get(f"/api/v1/scans/{scan.pk}/review/").json()
    assert review["latest_run"]["id"] == run.pk and len(review["raters"]) == 3 and review["ground_truth"] is None
    assert scan.pk in review["flagged_scans"]

    accepted = client.post(
        f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": run.pk, "note": "looks right"}, format="json"
    )
    assert accepted.status_code == 201 and accepted.json()["source"] == "accepted"
    again = client.post(f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": run.pk}, format="json")
    assert again.json()["id"] == accepted.json()["id"]  # accepting twice adds nothing

    edited_labels = truth.copy()
    edited_labels[:, :, :2] = 0
    edited = client.post(
        f"/api/v1/scans/{scan.pk}/ground-truths/edit/?run={run.pk}&note=trimmed",
        factories.nifti_bytes(edited_labels, np.asarray(scan.affine)),
        content_type="application/octet-stream",
    )
    assert edited.status_code == 201, edited.json()
    body = edited.json()
    assert body["source"] == "edited" and body["supersedes"] == accepted.json()["id"] and body["run"] == run.pk
    history = client.get(f"/api/v1/scans/{scan.pk}/ground-truths/").json()
    assert [h["id"] for h in history] == [body["id"], accepted.json()["id"]]  # nothing overwritten
    raw = b"".join(client.get(f"/api/v1/ground-truths/{body['id']}/labels/").streaming_content)
    np.testing.assert_array_equal(volumes.read_array(raw)[0], edited_labels)
    assert AuditEvent.objects.filter(action="ground_truth.edited", actor=world.lead).exists()


def test_a_bad_edit_is_refused_and_nothing_is_stored(stored_files, every_voxel_uncertain):
    world, scan, _run, _truth = _scan_with_run(threshold=0.0)
    before = stored_files()
    response = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/ground-truths/edit/",
        factories.nifti_bytes(np.full((24, 20, 16), 9, np.uint8), np.asarray(scan.affine)),
        content_type="application/octet-stream",
    )
    assert response.status_code == 400 and response.json()["error"] == "labels_outside_schema"
    assert stored_files() == before and not GroundTruth.objects.exists()


def test_only_leads_adjudicate(every_voxel_uncertain):
    world, scan, run, _truth = _scan_with_run(threshold=0.0)
    rater = scan.assignments.first().annotator
    client = world.client(rater)
    assert client.get(f"/api/v1/scans/{scan.pk}/review/").status_code == 403
    assert client.post(f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": run.pk}, format="json").status_code == 403
    assert not GroundTruth.objects.exists()


def test_a_rerun_does_not_replace_an_adjudicated_ground_truth():
    world, scan, _run, _truth = _scan_with_run(threshold=1.0, shift=1)
    first = GroundTruth.objects.get(scan=scan)
    rerun, _ = services.consensus_run_request(scan=scan, actor=world.lead, method=Method.MAJORITY_VOTE)
    services.consensus_run_execute(run_id=rerun.pk)
    assert list(GroundTruth.objects.filter(scan=scan)) == [first]
    accepted = services.ground_truth_accept(run=ConsensusRun.objects.get(pk=rerun.pk), actor=world.lead)
    assert accepted.supersedes_id == first.pk
