"""Exports carry the model cards of the model versions behind their labels: the versions whose
pre-labels a rater started from on an exported scan, and the project's current model; the
datasheet names them; the field's validators still pass."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from active_learning import selectors as al_selectors
from active_learning.models import EditingEffort, ModelVersion, ScanScore
from consensus import services
from consensus.models import ConsensusRun, GroundTruth
from consensus.signals import model_cards_requested
from labeling import services as labeling_services
from labeling.models import Split
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db

SHAPE = (24, 20, 16)
#: Whether active learning answered the request when Django started (no test connects it).
WIRED_AT_START = any(key[0] == "active_learning.model_cards" for key, *_ in model_cards_requested.receivers)


def _decide(world, scan, *, prelabel: bytes | None = None):
    """Three raters submit (the first starting from ``prelabel`` when given), the consensus runs."""
    truth = factories.sphere_truth(SHAPE)
    assignments = list(scan.assignments.order_by("id"))
    for k, (assignment, labels) in enumerate(zip(assignments, [truth, np.roll(truth, 1, axis=0), truth], strict=True)):
        raw = prelabel if (k == 0 and prelabel is not None) else factories.nifti_bytes(labels, factories.AFFINE)
        labeling_services.revision_create(
            assignment=assignment,
            actor=assignment.annotator,
            raw=raw,
            base_revision_id=None,
            source="prelabel" if (k == 0 and prelabel is not None) else "manual",
        )
        labeling_services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    for run in ConsensusRun.objects.filter(scan=scan, status=JobStatus.QUEUED):
        services.consensus_run_execute(run_id=run.pk)
    return GroundTruth.objects.filter(scan=scan).latest("id")


@pytest.fixture
def carded(db):
    """Three scans (train, validation, test). Model v1 trained on the first scan's ground truth and
    validated on the second's; a rater of the third started from v1's pre-label. Model v2 is the
    project's current model; nobody started from it."""
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.ambiguity_threshold = 1.0
    world.project.al_retrain_every = 1000  # no automatic training in the way
    world.project.save()
    scans = []
    for seed, split in enumerate([Split.TRAIN, Split.VALIDATION, Split.TEST]):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE)
        scan.split = split
        scan.save()
        scans.append(scan)
    train, validation = _decide(world, scans[0]), _decide(world, scans[1])
    done = {"status": JobStatus.DONE, "finished_at": timezone.now(), "requested_by": world.lead}
    v1 = ModelVersion.objects.create(
        project=world.project,
        version=1,
        ground_truth_ids=[train.pk],
        validation_ground_truth_ids=[validation.pk],
        validation_dice={"1": 0.8},
        code_version="test-v1",
        **done,
    )
    prelabel = factories.nifti_bytes(factories.sphere_truth(SHAPE), factories.AFFINE)
    name = default_storage.save(f"prelabels/{scans[2].pk}/v1.nii.gz", ContentFile(prelabel))
    ScanScore.objects.update_or_create(
        scan=scans[2], model_version=v1, defaults={"strategy": "entropy", "score": 1.0, "prelabel": name}
    )
    _decide(world, scans[2], prelabel=prelabel)
    v2 = ModelVersion.objects.create(
        project=world.project,
        version=2,
        ground_truth_ids=[train.pk],
        validation_ground_truth_ids=[validation.pk],
        code_version="test-v2",
        **done,
    )
    world.scans, world.truths, world.versions = scans, (train, validation), (v1, v2)
    return world


def _export(world, format: str, tmp_path: Path) -> Path:
    export = services.export_request(project=world.project, actor=world.lead, format=format, queue=False)
    export = services.export_execute(export_id=export.pk)
    assert export.status == JobStatus.DONE, export.error
    assert export.summary["model_versions"] == [1, 2]
    with export.file.open("rb") as handle:
        zipfile.ZipFile(io.BytesIO(handle.read())).extractall(tmp_path / "export")
    (folder,) = (tmp_path / "export").iterdir()
    return folder


def test_active_learning_answers_the_exports_request_for_model_cards():
    """The receiver is connected when Django starts (active_learning/receivers.py), not by a test."""
    assert WIRED_AT_START, "active_learning does not answer consensus.signals.model_cards_requested"


def test_an_export_carries_the_card_of_the_model_a_rater_started_from(carded, tmp_path):
    folder = _export(carded, "nnunet", tmp_path)
    (train, validation), (v1, v2) = carded.truths, carded.versions

    card = json.loads((folder / "models/v1/model_card.json").read_text())
    assert card["format"] == "mriannot.model_card/1" and card["version"] == 1 and card["id"] == v1.pk
    assert card["code_version"] == "test-v1"
    assert card["data"]["train"] == [{"id": train.pk, "scan": carded.scans[0].pk, "sha256": train.sha256}]
    assert [row["id"] for row in card["data"]["validation"]] == [validation.pk]
    markdown = (folder / "models/v1/model_card.md").read_text()
    assert markdown.startswith("# Model card: Test project, model v1") and train.sha256[:16] in markdown
    assert json.loads((folder / "models/v2/model_card.json").read_text())["version"] == 2

    sheet = json.loads((folder / "datasheet.json").read_text())
    first, current = sheet["models"]
    assert first == {
        "version": 1,
        "model_version": v1.pk,
        "current": False,
        "card": "models/v1/model_card.json",
        "card_markdown": "models/v1/model_card.md",
        "code_version": "test-v1",
        "prelabel_cases": ["case_003"],
        "training_ground_truths": 1,
        "validation_ground_truths": 1,
        "trained_on_cases": ["case_001"],
        "validated_on_cases": ["case_002"],
    }
    assert current["model_version"] == v2.pk and current["current"] is True and current["prelabel_cases"] == []
    per_case = sheet["ground_truth_per_case"]
    assert per_case["case_003"]["prelabel_model_versions"] == [1]
    assert per_case["case_001"]["prelabel_model_versions"] == []
    readme = (folder / "README.md").read_text()
    assert "### Models behind the labels" in readme
    assert "| v1 | `models/v1/model_card.json` | case_003 | 1 ground truths (case_001) |" in readme
    assert "| v2 (current) |" in readme
    manifest = (folder / "MANIFEST.sha256").read_text()
    assert "models/v1/model_card.json" in manifest and "models/v2/model_card.md" in manifest
    # nnU-Net's and the BIDS validator's checks with cards in place: tests/consensus/test_export_oracles.py

    # Without the editing effort recorded at submission, the newest pre-label made before the
    # rater's first save names the version all the same.
    revisions = [r for run in ConsensusRun.objects.all() for r in run.revision_ids]
    assert al_selectors.prelabel_starts(revision_ids=revisions) == {v1.pk: [carded.scans[2].pk]}
    assert EditingEffort.objects.filter(model_version=v1).count() == 1
    EditingEffort.objects.all().delete()
    assert al_selectors.prelabel_starts(revision_ids=revisions) == {v1.pk: [carded.scans[2].pk]}
    others = [r for run in ConsensusRun.objects.exclude(scan=carded.scans[2]) for r in run.revision_ids]
    assert al_selectors.prelabel_starts(revision_ids=others) == {}


def test_the_bids_export_lists_its_cards_in_bidsignore(carded, tmp_path):
    folder = _export(carded, "bids", tmp_path)
    assert (folder / "models/v1/model_card.json").is_file() and (folder / "models/v2/model_card.md").is_file()
    assert (folder / ".bidsignore").read_text().split() == [
        "/datasheet.json",
        "/agreement.csv",
        "/MANIFEST.sha256",
        "/models",
    ]


def test_a_project_without_models_exports_no_cards():
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.ambiguity_threshold = 1.0
    world.project.save()
    scan = factories.add_scan(world, seed=0, shape=SHAPE)
    _decide(world, scan)
    export = services.export_request(project=world.project, actor=world.lead, format="monai", queue=False)
    export = services.export_execute(export_id=export.pk)
    with export.file.open("rb") as handle:
        names = zipfile.ZipFile(io.BytesIO(handle.read())).namelist()
    assert not any("/models/" in name for name in names)
    assert export.summary["model_versions"] == []
