"""Consensus API: leads request and read runs; annotators never see consensus (blinding)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from consensus import services
from consensus.models import ConsensusRun
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def done_run(db):
    world = factories.make_world(raters_per_scan=2, n_annotators=3)
    scan = factories.add_scan(world, shape=(24, 20, 16))
    truth = factories.sphere_truth((24, 20, 16))
    other = truth.copy()
    other[:, :, :3] = 0
    factories.submit_panel(world, scan, [truth, other])
    run = services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=scan).pk)
    return world, scan, run


def _roles(world, scan):
    raters = set(scan.assignments.values_list("annotator_id", flat=True))
    return {
        "rater": next(u for u in world.annotators if u.pk in raters),
        "other": next(u for u in world.annotators if u.pk not in raters),
        "lead": world.lead,
        "outsider": world.outsider,
        "siteadmin": world.site_admin,
    }


@pytest.mark.parametrize(
    "path, expected",
    [
        (
            "/api/v1/scans/{scan}/consensus-runs/",
            {"rater": 403, "other": 404, "lead": 200, "outsider": 404, "siteadmin": 200},
        ),
        ("/api/v1/consensus-runs/{run}/", {"rater": 404, "other": 404, "lead": 200, "outsider": 404, "siteadmin": 200}),
        (
            "/api/v1/consensus-runs/{run}/labels/",
            {"rater": 404, "other": 404, "lead": 200, "outsider": 404, "siteadmin": 200},
        ),
        (
            "/api/v1/consensus-runs/{run}/posterior/",
            {"rater": 404, "other": 404, "lead": 200, "outsider": 404, "siteadmin": 200},
        ),
        (
            "/api/v1/projects/{project}/flagged-scans/",
            {"rater": 403, "other": 403, "lead": 200, "outsider": 404, "siteadmin": 200},
        ),
    ],
)
def test_only_leads_and_admins_see_consensus(done_run, path, expected):
    world, scan, run = done_run
    url = path.format(scan=scan.pk, run=run.pk, project=world.project.pk)
    for role, user in _roles(world, scan).items():
        response = world.client(user).get(url)
        assert response.status_code == expected[role], (role, url)
    assert world.client().get(url).status_code == 401


def test_lead_requests_a_rerun_and_gets_202(done_run, django_capture_on_commit_callbacks):
    world, scan, run = done_run
    client = world.client(world.lead)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"/api/v1/scans/{scan.pk}/consensus-runs/", {"method": "majority_vote"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["reused"] is False and len(callbacks) == 1
    same = client.post(f"/api/v1/scans/{scan.pk}/consensus-runs/", {}, format="json")
    assert same.status_code == 202 and same.json() == {"id": run.pk, "status": "done", "reused": True}


def test_annotator_cannot_request_consensus(done_run):
    world, scan, _run = done_run
    rater = _roles(world, scan)["rater"]
    response = world.client(rater).post(f"/api/v1/scans/{scan.pk}/consensus-runs/", {}, format="json")
    assert response.status_code == 403
    assert ConsensusRun.objects.count() == 1


def test_bad_options_answer_400_naming_the_option(done_run):
    world, scan, _run = done_run
    response = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/consensus-runs/", {"options": {"max_iterations": 3}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unknown_option" and "max_iterations" in response.json()["detail"]


def test_run_detail_has_rater_performance_and_files(done_run):
    world, _scan, run = done_run
    client = world.client(world.lead)
    detail = client.get(f"/api/v1/consensus-runs/{run.pk}/").json()
    assert detail["status"] == "done" and len(detail["performances"]) == 2
    assert {p["annotator"] for p in detail["performances"]} <= {u.username for u in world.annotators}
    assert detail["agreement"]["pairs"]
    raw = b"".join(client.get(f"/api/v1/consensus-runs/{run.pk}/labels/").streaming_content)
    labels = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(raw)).dataobj)
    assert labels.shape == (24, 20, 16) and set(np.unique(labels)) <= {0, 1, 2}


def test_uncertainty_overlay_is_one_minus_the_posterior_maximum(done_run):
    world, scan, run = done_run
    client = world.client(world.lead)
    from labeling import volumes

    posterior = volumes.read_array(
        b"".join(client.get(f"/api/v1/consensus-runs/{run.pk}/posterior/").streaming_content)
    )[0]
    response = client.get(f"/api/v1/consensus-runs/{run.pk}/uncertainty/")
    assert response.status_code == 200
    uncertainty, affine = volumes.read_array(response.content)
    np.testing.assert_allclose(uncertainty, 1.0 - posterior.max(axis=-1), atol=1e-6)
    np.testing.assert_allclose(affine, np.asarray(scan.affine))
    rater = scan.assignments.first().annotator
    assert world.client(rater).get(f"/api/v1/consensus-runs/{run.pk}/uncertainty/").status_code == 404
