"""Active learning through the services and API: cold start, training, scoring, ranking,
pre-labels, editing effort, retraining every N ground truths, and one task through a worker."""

from __future__ import annotations

import time

import numpy as np
import pytest

from active_learning import selectors, services, uncertainty
from active_learning.models import EditingEffort, ModelVersion, ScanScore
from consensus import services as consensus_services
from consensus.models import GroundTruth
from labeling import services as labeling_services
from labeling import volumes
from labeling.models import ALStrategy, Assignment, Split
from mriannot.jobs import JobStatus
from tests import factories

TINY_NETWORK = {"working_shape": (16, 16, 16), "channels": (4, 8), "strides": (2,), "num_res_units": 0}
TINY_TRAINING = {"steps": 6, "steps_per_scan": 0, "patch_shape": None, "batch_size": 2}
SHAPE = (24, 20, 16)


@pytest.fixture(autouse=True)
def tiny_model(settings):
    settings.MRIANNOT_AL_NETWORK = TINY_NETWORK
    settings.MRIANNOT_AL_TRAINING = TINY_TRAINING


def _project(n_scans=5, splits=(Split.TRAIN, Split.TRAIN, Split.VALIDATION, Split.UNASSIGNED, Split.UNASSIGNED)):
    world = factories.make_world(raters_per_scan=2, n_annotators=3)
    scans = []
    for i in range(n_scans):
        scan = factories.add_scan(world, seed=i, shape=SHAPE)
        scan.split = splits[i]
        scan.save()
        scans.append(scan)
    return world, scans


def _ground_truth(world, scan):
    truth = factories.sphere_truth(SHAPE)
    return consensus_services.ground_truth_edit(
        scan=scan, actor=world.lead, raw=factories.nifti_bytes(truth, np.asarray(scan.affine))
    )


@pytest.mark.django_db
def test_cold_start_orders_by_diversity_and_says_so():
    world, _scans = _project()
    result = services.scores_update(project_id=world.project.pk)
    assert result["scored"] == 5 and result["model_version"] is None
    world.project.refresh_from_db()
    assert world.project.priority_note.startswith("Cold start")
    priorities = sorted(Assignment.objects.filter(scan__project=world.project).values_list("priority", flat=True))
    assert len(set(priorities)) == 5  # a strict order over the five scans
    worklist = world.client(world.annotators[0]).get("/api/v1/me/worklist/").json()
    assert [w["priority"] for w in worklist] == sorted((w["priority"] for w in worklist), reverse=True)
    assert worklist[0]["priority_note"].startswith("Cold start")

    # Each upload queues a ranking: only the new scan's features are computed again.
    assert services.scores_update(project_id=world.project.pk)["computed"] == 0
    factories.add_scan(world, seed=9, shape=SHAPE)
    result = services.scores_update(project_id=world.project.pk)
    assert (result["scored"], result["computed"]) == (6, 1)
    priorities = Assignment.objects.filter(scan__project=world.project).values_list("priority", flat=True)
    assert len(set(priorities)) == 6


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["patch", "whole"])  # new versions; the earlier whole-volume ones
def test_train_score_rank_and_prelabel(mode, settings):
    settings.MRIANNOT_AL_NETWORK = {**TINY_NETWORK, "mode": mode, "patch_shape": (16, 16, 16)}
    world, scans = _project()
    for scan in scans[:3]:
        _ground_truth(world, scan)
    version, queued = services.model_version_request(project=world.project, actor=world.lead)
    assert queued and version.version == 1
    again, queued = services.model_version_request(project=world.project, actor=world.lead)
    assert (again.pk, queued) == (version.pk, False)  # one training at a time

    version = services.model_version_train(version_id=version.pk)
    assert version.status == JobStatus.DONE and version.weights.name == f"models/{world.project.pk}/1.pt"
    assert len(version.ground_truth_ids) == 2 and len(version.validation_ground_truth_ids) == 1
    assert set(version.validation_dice) == {"1", "2", "3"}
    assert version.hyperparameters["training"]["steps"] == 6
    assert version.hyperparameters["network"]["mode"] == mode

    # The model card names the ground truths (ids, scans, hashes, split), the recipe and the
    # validation results; the Markdown card shows the per-label Dice.
    lead = world.client(world.lead)
    card = lead.get(f"/api/v1/models/{version.pk}/card/").json()
    truths = {t.pk: t for t in GroundTruth.objects.filter(scan__in=scans[:3])}
    assert [r["id"] for r in card["data"]["train"]] == version.ground_truth_ids
    assert [(r["scan"], r["sha256"]) for r in card["data"]["validation"]] == [
        (truths[i].scan_id, truths[i].sha256) for i in version.validation_ground_truth_ids
    ]
    assert card["validation"]["dice"] == version.validation_dice and card["model"]["mode"] == mode
    assert card["recipe"]["steps_trained"] == 6 and card["code_version"] == version.code_version
    assert card["validation"]["calibration"]["voxels"] > 0 and 0 <= card["validation"]["calibration"]["ece"] <= 1
    markdown = lead.get(f"/api/v1/models/{version.pk}/card.md")
    assert markdown.status_code == 200 and markdown["Content-Type"].startswith("text/markdown")
    text = markdown.content.decode()
    names = dict(world.project.label_classes.values_list("value", "name"))
    for value, dice in version.validation_dice.items():
        assert f"| {names[int(value)]} | {'–' if dice is None else f'{dice:.3f}'} |" in text
    assert world.client(world.annotators[0]).get(f"/api/v1/models/{version.pk}/card/").status_code == 403

    result = services.scores_update(project_id=world.project.pk)
    assert (
        result["model_version"] == 1 and result["scored"] == result["computed"] == 2
    )  # the two scans without ground truth
    scores = ScanScore.objects.filter(model_version=version)
    assert scores.count() == 2 and all(s.entropy >= 0 and s.bald >= 0 for s in scores)
    before = sorted(scores.values_list("scan_id", "score", "prelabel"))
    again = services.scores_update(project_id=world.project.pk)  # a retried or repeated task
    assert (again["scored"], again["computed"]) == (2, 0)
    assert sorted(ScanScore.objects.filter(model_version=version).values_list("scan_id", "score", "prelabel")) == before
    for score in scores:
        assert set(Assignment.objects.filter(scan=score.scan).values_list("priority", flat=True)) == {score.score}
    ranking = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/ranking/").json()
    assert ranking["model_version"] == 1 and ranking["note"].startswith("Model v1")
    assert [r["score"] for r in ranking["scans"]] == sorted((r["score"] for r in ranking["scans"]), reverse=True)

    assignment = Assignment.objects.filter(scan=scans[3]).first()
    response = world.client(assignment.annotator).get(f"/api/v1/assignments/{assignment.pk}/prelabel/")
    assert response.status_code == 200 and response["X-Model-Version"] == "1"
    prelabel, affine = volumes.read_array(b"".join(response.streaming_content))
    assert prelabel.shape == SHAPE and set(np.unique(prelabel)) <= {0, 1, 2, 3}
    np.testing.assert_allclose(affine, np.asarray(scans[3].affine))

    other = Assignment.objects.exclude(scan=scans[3]).exclude(annotator=assignment.annotator).first()
    assert world.client(assignment.annotator).get(f"/api/v1/assignments/{other.pk}/prelabel/").status_code == 404


@pytest.mark.django_db
def test_editing_effort_is_kept_when_starting_from_a_prelabel():
    world, scans = _project()
    for scan in scans[:3]:
        _ground_truth(world, scan)
    version, _ = services.model_version_request(project=world.project)
    services.model_version_train(version_id=version.pk)
    services.scores_update(project_id=world.project.pk)
    assignment = Assignment.objects.filter(scan=scans[3]).first()
    score = selectors.prelabel_for(assignment=assignment)
    with score.prelabel.open("rb") as handle:
        prelabel_bytes = handle.read()
    labeling_services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=prelabel_bytes, base_revision_id=None, source="prelabel"
    )
    labeling_services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    effort = EditingEffort.objects.get(assignment=assignment)
    assert effort.model_version_id == version.pk
    present = [v for v in effort.dice.values() if v is not None]
    assert present and all(v == pytest.approx(1.0) for v in present)  # submitted the pre-label unchanged


@pytest.mark.django_db
def test_retraining_is_batched_every_n_ground_truths(django_capture_on_commit_callbacks):
    world, scans = _project()
    world.project.al_retrain_every = 2
    world.project.save()
    _ground_truth(world, scans[0])
    assert not ModelVersion.objects.exists()  # one new ground truth: not yet
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _ground_truth(world, scans[1])
    version = ModelVersion.objects.get()
    assert version.trigger == "auto" and version.status == JobStatus.QUEUED and len(callbacks) == 1
    _ground_truth(world, scans[2])  # a validation scan: does not count towards retraining
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_training_needs_ground_truth_and_leads_only():
    world, _scans = _project()
    response = world.client(world.lead).post(f"/api/v1/projects/{world.project.pk}/models/")
    assert response.status_code == 409 and response.json()["error"] == "no_training_data"
    assert world.client(world.annotators[0]).post(f"/api/v1/projects/{world.project.pk}/models/").status_code == 403
    assert world.client(world.annotators[0]).get(f"/api/v1/projects/{world.project.pk}/ranking/").status_code == 403


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_training_runs_through_a_real_worker(celery_worker):
    world, scans = _project()
    for scan in scans[:3]:
        _ground_truth(world, scan)
    version, _ = services.model_version_request(project=world.project, actor=world.lead)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        version.refresh_from_db()
        if version.status in (JobStatus.DONE, JobStatus.FAILED) and version.scored_at:
            break
        time.sleep(0.2)
    assert version.status == JobStatus.DONE, version.error
    assert version.scored_at is not None  # the worker scored the open scans after training
    assert ScanScore.objects.filter(model_version=version).count() == 2


@pytest.mark.django_db
def test_combined_strategy_weighs_model_uncertainty_with_rater_disagreement():
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.al_strategy = ALStrategy.ENTROPY_DISAGREEMENT
    world.project.save()
    splits = (Split.TRAIN, Split.TRAIN, Split.VALIDATION) + (Split.UNASSIGNED,) * 3
    scans = []
    for i, split in enumerate(splits):
        scan = factories.add_scan(world, seed=i, shape=SHAPE)
        scan.split = split
        scan.save()
        scans.append(scan)
    for scan in scans[:3]:
        _ground_truth(world, scan)
    version, _ = services.model_version_request(project=world.project)
    services.model_version_train(version_id=version.pk)
    agreeing = factories.sphere_truth(SHAPE)
    missing_inner = agreeing.copy()
    missing_inner[missing_inner == 2] = 1  # the second rater did not draw label 2
    factories.submit_panel(world, scans[3], [agreeing, missing_inner])  # 2 of 3 raters
    factories.submit_panel(world, scans[4], [agreeing])  # 1 of 3: nothing to compare

    result = services.scores_update(project_id=world.project.pk)
    assert result["scored"] == 3
    scores = {s.scan_id: s for s in ScanScore.objects.filter(model_version=version)}
    expected = uncertainty.rater_disagreement(np.stack([agreeing, missing_inner]))
    assert expected > 0.1
    assert scores[scans[3].pk].disagreement == pytest.approx(expected)
    assert scores[scans[4].pk].disagreement is None and scores[scans[5].pk].disagreement is None
    open_ids = [scans[3].pk, scans[4].pk, scans[5].pk]
    entropy_rank = uncertainty.rank_normalise(np.array([scores[i].entropy for i in open_ids]))
    assert scores[scans[3].pk].score == pytest.approx(0.5 * entropy_rank[0] + 0.5 * expected)
    assert scores[scans[4].pk].score == pytest.approx(entropy_rank[1])
    assert all(s.strategy == "combined" for s in scores.values())


@pytest.mark.django_db
def test_stratified_strategy_spreads_each_batch_over_the_rarest_labels_expected_volume():
    splits = (Split.TRAIN, Split.TRAIN, Split.VALIDATION) + (Split.UNASSIGNED,) * 5
    world, scans = _project(n_scans=8, splits=splits)
    for scan in scans[:3]:
        _ground_truth(world, scan)
    version, _ = services.model_version_request(project=world.project)
    services.model_version_train(version_id=version.pk)
    assert services.scores_update(project_id=world.project.pk)["computed"] == 5  # entropy: no volumes needed
    assert all(s.expected_volume_ml is not None for s in ScanScore.objects.filter(model_version=version))
    ScanScore.objects.filter(model_version=version).update(expected_volume_ml=None)  # scored by older code

    world.project.al_strategy = ALStrategy.ENTROPY_STRATIFIED
    world.project.al_retrain_every = 2
    world.project.save()
    result = services.scores_update(project_id=world.project.pk)
    assert (result["scored"], result["computed"]) == (5, 5)  # the volumes are computed again, once
    assert services.scores_update(project_id=world.project.pk)["computed"] == 0
    scores = list(ScanScore.objects.filter(model_version=version).order_by("scan_id"))
    labels = {str(v) for v in world.project.label_classes.values_list("value", flat=True)}
    assert all(set(s.expected_volume_ml) == labels for s in scores)
    assert all(v >= 0 for s in scores for v in s.expected_volume_ml.values())
    mean = {v: np.mean([s.expected_volume_ml[v] for s in scores]) for v in labels}
    rarest = min(labels, key=lambda v: mean[v])
    order = uncertainty.stratified_order(
        [s.entropy for s in scores], [s.expected_volume_ml[rarest] for s in scores], n_strata=2
    )
    assert [scores[i].scan_id for i in order] == [
        s.scan_id for s in sorted(scores, key=lambda s: s.score, reverse=True)
    ]
    assert all(s.strategy == "stratified" for s in scores)
    world.project.refresh_from_db()
    name = world.project.label_classes.get(value=int(rarest)).name
    assert f"One scan of each of 2 strata of the expected volume of {name} (label {rarest}) in every 2." in (
        world.project.priority_note
    )
    ranking = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/ranking/").json()
    assert ranking["strategy"] == "entropy_stratified" and "strata of the expected volume" in ranking["note"]
    by_scan = {s.scan_id: s for s in scores}
    assert [r["scan"] for r in ranking["scans"]] == [scores[i].scan_id for i in order]
    assert all(r["expected_volume_ml"] == by_scan[r["scan"]].expected_volume_ml for r in ranking["scans"])
