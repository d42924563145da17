"""Consensus through a real Celery worker on a real Redis: submit -> queued on commit -> done."""

from __future__ import annotations

import pytest
from scipy import ndimage

from consensus.models import ConsensusRun, RaterPerformance
from consensus.tasks import consensus_run_execute_task
from labeling.models import Scan, ScanStatus
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def _panel(shape=(24, 20, 16)):
    truth = factories.sphere_truth(shape)
    generous = truth.copy()
    generous[ndimage.binary_dilation(truth > 0) & (truth == 0)] = 1
    return [truth, generous, truth]


def test_last_submission_runs_consensus_in_the_worker(celery_worker, stored_files):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = factories.add_scan(world, shape=(24, 20, 16))
    factories.submit_panel(world, scan, _panel())
    run = factories.wait_for(lambda: ConsensusRun.objects.filter(scan=scan, status=JobStatus.DONE).first())
    assert run.attempts == 1 and run.timings["fuse"] >= 0
    assert RaterPerformance.objects.filter(run=run).count() == 3
    # Two raters agree exactly; the third draws label 1 one voxel wider (pairwise Dice 0.81,
    # volumes 41 % apart): no reason to flag, so the consensus is the ground truth.
    assert run.flag_reasons == [] and not run.flagged
    assert Scan.objects.get(pk=scan.pk).status == ScanStatus.GROUND_TRUTH
    assert f"consensus/{scan.pk}/{run.pk}/labels.nii.gz" in stored_files()


def test_the_same_task_delivered_twice_leaves_one_result(celery_worker, stored_files):
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    scan = factories.add_scan(world, shape=(24, 20, 16))
    factories.submit_panel(world, scan, _panel())
    run = factories.wait_for(lambda: ConsensusRun.objects.filter(scan=scan, status=JobStatus.DONE).first())
    files = stored_files()
    result = consensus_run_execute_task.delay(run.pk)  # a duplicate delivery
    result.get(timeout=60)
    assert ConsensusRun.objects.filter(scan=scan).count() == 1
    assert RaterPerformance.objects.filter(run=run).count() == 3
    assert stored_files() == files
    assert ConsensusRun.objects.get(pk=run.pk).attempts == 1  # the finished run was not executed again
