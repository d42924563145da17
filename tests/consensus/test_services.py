"""Consensus runs through the services: queueing on submission, execution, idempotency, failure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from consensus import fusion, services, staple
from consensus.models import ConsensusRun, Method, RaterPerformance
from labeling.models import AuditEvent, ScanStatus
from mriannot.errors import Conflict, ValidationFailed
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def panel_world(db):
    """Three raters on one 24x20x16 phantom: accurate, generous (dilated), and one that misses label 2."""
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = factories.add_scan(world, shape=(24, 20, 16))
    truth = factories.sphere_truth((24, 20, 16))
    generous = truth.copy()
    generous[ndimage.binary_dilation(truth > 0) & (truth == 0)] = 1
    misses = truth.copy()
    misses[misses == 2] = 1
    return world, scan, truth, [truth, generous, misses]


def test_last_submission_queues_one_run_on_commit(panel_world, django_capture_on_commit_callbacks):
    world, scan, _truth, maps = panel_world
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        revisions = factories.submit_panel(world, scan, maps)
    run = ConsensusRun.objects.get(scan=scan)
    assert run.status == JobStatus.QUEUED
    assert run.revision_ids == [r.pk for r in revisions]
    assert run.method == Method.STAPLE and run.options == fusion.method_defaults(Method.STAPLE)
    assert len(callbacks) == 1  # the task is sent only once the transaction commits


def test_execute_stores_consensus_posterior_and_performance(panel_world, stored_files):
    world, scan, truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    run = services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=scan).pk)
    assert run.status == JobStatus.DONE and run.progress == 1.0 and run.code_version
    files = stored_files()
    assert f"consensus/{scan.pk}/{run.pk}/labels.nii.gz" in files
    assert f"consensus/{scan.pk}/{run.pk}/posterior.nii.gz" in files
    from labeling import volumes

    with run.labels_file.open("rb") as handle:
        labels, affine = volumes.read_array(handle.read())
    # two of three raters agree everywhere except where the generous rater dilated: truth wins
    assert (labels == truth).mean() > 0.99
    np.testing.assert_allclose(affine, np.asarray(scan.affine))
    with run.posterior_file.open("rb") as handle:
        posterior, _ = volumes.read_array(handle.read())
    assert posterior.shape == (*truth.shape, len(run.label_values))
    np.testing.assert_allclose(posterior.sum(axis=-1), 1.0, atol=1e-5)

    perf = {p.rater_index: p for p in RaterPerformance.objects.filter(run=run)}
    assert sorted(perf) == [0, 1, 2]
    assert perf[0].dice["2"] > 0.99 and perf[2].dice["2"] == 0.0  # rater 3 never drew label 2
    assert perf[2].sensitivity["2"] < 0.5 < perf[0].sensitivity["2"]
    assert run.agreement["pairs"] and run.ambiguity is not None
    # The third rater never drew label 2, which both others did: the scan waits for a lead.
    assert run.flagged and [(r["code"], r.get("rater"), r.get("label")) for r in run.flag_reasons][:1] == [
        ("missing_label", 2, 2)
    ]
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FLAGGED
    assert AuditEvent.objects.filter(action="consensus.done", target_id=str(run.pk)).exists()


def test_running_twice_leaves_one_result(panel_world, stored_files):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    run_id = ConsensusRun.objects.get(scan=scan).pk
    services.consensus_run_execute(run_id=run_id)
    files = stored_files()
    # a redelivered task after a lost ack, and a crashed attempt that is retried
    ConsensusRun.objects.filter(pk=run_id).update(status=JobStatus.RUNNING)
    services.consensus_run_execute(run_id=run_id)
    services.consensus_run_execute(run_id=run_id)
    assert ConsensusRun.objects.count() == 1
    assert RaterPerformance.objects.filter(run_id=run_id).count() == 3
    assert stored_files() == files


def test_same_request_reuses_the_run_and_other_options_make_a_new_one(panel_world):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    first = ConsensusRun.objects.get(scan=scan)
    again, queued = services.consensus_run_request(scan=scan, actor=world.lead)
    assert (again.pk, queued) == (first.pk, False)
    explicit, queued = services.consensus_run_request(
        scan=scan, actor=world.lead, options=fusion.method_defaults(Method.STAPLE)
    )
    assert (explicit.pk, queued) == (first.pk, False)  # defaults spelled out are the same inputs
    vote, queued = services.consensus_run_request(scan=scan, actor=world.lead, method=Method.MAJORITY_VOTE)
    assert queued and vote.pk != first.pk
    other = "all" if first.options["region"] != "all" else "disagreement"
    rerun, queued = services.consensus_run_request(scan=scan, actor=world.lead, options={"region": other})
    assert queued and rerun.pk not in (first.pk, vote.pk)


def test_majority_vote_run(panel_world):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    run, _ = services.consensus_run_request(scan=scan, actor=world.lead, method=Method.MAJORITY_VOTE)
    run = services.consensus_run_execute(run_id=run.pk)
    assert run.status == JobStatus.DONE and run.iterations is None
    assert "ties" in run.kernel_report
    perf = RaterPerformance.objects.get(run=run, rater_index=1)
    assert perf.confusion is None and 0 < perf.specificity["1"] < 1


@pytest.mark.parametrize(
    "method, options, code",
    [
        ("psychic", {}, "unknown_method"),
        (Method.STAPLE, {"bogus": 1}, "unknown_option"),
        (Method.STAPLE, {"max_iter": "many"}, "invalid_option"),
        (Method.MAJORITY_VOTE, {"region": "all"}, "unknown_option"),
    ],
)
def test_bad_options_are_refused(panel_world, method, options, code):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    with pytest.raises(ValidationFailed) as excinfo:
        services.consensus_run_request(scan=scan, actor=world.lead, method=method, options=options)
    assert excinfo.value.code == code
    assert ConsensusRun.objects.count() == 1  # only the automatic run


def test_consensus_needs_two_submitted_raters(panel_world):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps[:1])
    with pytest.raises(Conflict, match="at least 2"):
        services.consensus_run_request(scan=scan, actor=world.lead)
    assert not ConsensusRun.objects.exists()


def test_a_failed_run_says_why_and_can_be_queued_again(panel_world, monkeypatch):
    world, scan, _truth, maps = panel_world
    factories.submit_panel(world, scan, maps)
    run = ConsensusRun.objects.get(scan=scan)

    def broken(*args, **kwargs):
        raise ValueError("segmentations: simulated failure")

    monkeypatch.setattr(staple, "staple_multilabel", broken)
    with pytest.raises(ValueError):
        services.consensus_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED and "simulated failure" in run.error
    monkeypatch.undo()
    again, queued = services.consensus_run_request(scan=scan, actor=world.lead)
    assert queued and again.pk == run.pk and again.status == JobStatus.QUEUED
    assert services.consensus_run_execute(run_id=run.pk).status == JobStatus.DONE


def test_ambiguity_flags_scans_over_the_project_threshold(panel_world, monkeypatch):
    monkeypatch.setattr(fusion, "UNCERTAIN_BELOW", 1.01)  # every labelled voxel counts as uncertain
    world, scan, _truth, maps = panel_world
    world.project.ambiguity_threshold = 0.0
    world.project.save()
    factories.submit_panel(world, scan, maps)
    run = services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=scan).pk)
    assert run.ambiguity > 0 and run.flagged
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FLAGGED
