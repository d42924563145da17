"""The demo project (SIMULATED from MNI152): its hardest scan waits for a lead, with its reasons.

Scan 004 is rated by the three poor demo raters (generous, sloppy, conservative). Plain EM
over the contested voxels made the sloppy rater's map the consensus, with a posterior of ~1
and so an ambiguity of 0: the scan became ground truth by itself. Now its consensus is the
majority vote and the scan is flagged, with the collapse and the raters' low agreement named.
"""

from __future__ import annotations

import numpy as np
import pytest

import simulation
from consensus import services as consensus_services
from consensus.models import ConsensusRun, GroundTruth
from consensus.voting import majority_vote
from labeling import demo, selectors, volumes
from labeling.models import Scan, ScanStatus

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    return 2.0 * (x & y).sum() / (x.sum() + y.sum())


def test_demo_scan_004_is_flagged_with_reasons_and_no_worse_than_the_vote():
    summary = demo.demo_project_create(n_scans=5, n_rated=4)
    for run in ConsensusRun.objects.filter(scan__project=summary.project).order_by("id"):
        consensus_services.consensus_run_execute(run_id=run.pk)

    scan = Scan.objects.get(project=summary.project, subject_id="004")
    raters = [a.annotator.username for a in scan.assignments.order_by("id")]
    assert [demo.RATERS[name] for name in raters] == ["generous", "sloppy", "conservative"]
    run = ConsensusRun.objects.get(scan=scan)
    codes = [reason["code"] for reason in run.flag_reasons]
    assert run.flagged and "collapse" in codes and "low_agreement" in codes
    lesion = next(r for r in run.flag_reasons if r["code"] == "low_agreement" and r["label"] == 4)
    assert "Lesion" in lesion["message"] and lesion["value"] < 0.5
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FLAGGED and not GroundTruth.objects.filter(scan=scan).exists()

    # The consensus is no worse than the majority vote on any label, against the simulated truth.
    truth = simulation.simulate_subject(simulation.mni152_anatomy(resolution=2), seed=2026 + 3).labels
    with run.labels_file.open("rb") as handle:
        consensus, _ = volumes.read_array(handle.read())
    segs = []
    for revision_id in run.revision_ids:
        revision = scan.assignments.get(revisions__id=revision_id).revisions.get(pk=revision_id)
        with revision.file.open("rb") as handle:
            segs.append(np.asarray(volumes.read_array(handle.read())[0], np.uint8))
    vote = majority_vote(np.stack(segs)).labels
    for value in (1, 2, 3, 4):
        assert _dice(np.asarray(consensus), truth, value) >= _dice(vote, truth, value) - 0.002


def test_demo_scans_hold_a_t1w_and_a_flair_of_the_same_subject():
    summary = demo.demo_project_create(n_scans=2, n_rated=0)
    assert summary.project.channels == ["T1w", "FLAIR"]
    for scan in Scan.objects.filter(project=summary.project):
        (t1_role, t1_file), (flair_role, flair_file) = selectors.scan_channel_files(scan=scan)
        assert (t1_role, flair_role) == ("T1w", "FLAIR")
        t1, t1_affine = volumes.read_array(t1_file.read())
        flair, flair_affine = volumes.read_array(flair_file.read())
        assert t1.shape == flair.shape and np.allclose(t1_affine, flair_affine)
        assert not scan.channels.get().resampled
        # FLAIR: CSF dark, unlike T1w where it is dark too but white matter is brightest; lesions bright.
        truth = simulation.simulate_subject(
            simulation.mni152_anatomy(resolution=2), seed=2026 + int(scan.subject_id) - 1
        )
        lesion, white = truth.labels == 4, truth.labels == 3
        if lesion.any():
            assert flair[lesion].mean() > flair[white].mean()
            assert t1[lesion].mean() < t1[white].mean()
