"""A model version keeps its validation Dice per scan, and the model card breaks it down by scan
metadata with n per group."""

from __future__ import annotations

import math

import numpy as np
import pytest

from active_learning import services
from active_learning.models import ModelVersion
from consensus import services as consensus_services
from labeling.models import Scan, Split
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db

TINY_NETWORK = {"working_shape": (16, 16, 16), "channels": (4, 8), "strides": (2,), "num_res_units": 0}
TINY_TRAINING = {"steps": 4, "steps_per_scan": 0, "patch_shape": None, "batch_size": 2}
SHAPE = (24, 20, 16)


def test_the_model_card_breaks_validation_dice_down_by_metadata_with_n(world):
    scans = [factories.add_scan(world, seed=i) for i in range(3)]
    for scan, (site, sex) in zip(scans, [("SITE-A", "F"), ("SITE-A", "M"), ("SITE-B", "F")], strict=True):
        Scan.objects.filter(pk=scan.pk).update(site=site, sex=sex)
    version = ModelVersion.objects.create(
        project=world.project,
        version=1,
        status=JobStatus.DONE,
        validation_dice_per_scan={
            str(scans[0].pk): {"1": 0.8, "2": None},
            str(scans[1].pk): {"1": 0.6, "2": 0.5},
            str(scans[2].pk): {"1": 0.4, "2": 0.9},
        },
    )
    body = world.client(world.lead).get(f"/api/v1/models/{version.pk}/").json()
    rows = {
        (r["column"], r["group"], r["label"]): (r["scans"], round(r["mean_dice"], 4))
        for r in body["validation_by_metadata"]
    }
    assert rows[("site", "SITE-A", 1)] == (2, 0.7)
    assert rows[("site", "SITE-A", 2)] == (1, 0.5)  # scan 1 measured nothing for label 2
    assert rows[("site", "SITE-B", 1)] == (1, 0.4)
    assert rows[("sex", "F", 1)] == (2, 0.6)
    assert rows[("sequence", "not recorded", 2)] == (2, 0.7)
    assert {r["label_name"] for r in body["validation_by_metadata"] if r["label"] == 1} == {"CSF"}
    rater = world.annotators[0]
    assert world.client(rater).get(f"/api/v1/models/{version.pk}/").status_code == 403


def test_training_records_the_validation_dice_of_every_scan(world, settings):
    settings.MRIANNOT_AL_NETWORK = TINY_NETWORK
    settings.MRIANNOT_AL_TRAINING = TINY_TRAINING
    splits = [Split.TRAIN, Split.TRAIN, Split.VALIDATION, Split.VALIDATION]
    scans = []
    for i, split in enumerate(splits):
        scan = factories.add_scan(world, seed=i, shape=SHAPE)
        Scan.objects.filter(pk=scan.pk).update(split=split, site=f"SITE-{'AB'[i % 2]}")
        consensus_services.ground_truth_edit(
            scan=scan,
            actor=world.lead,
            raw=factories.nifti_bytes(factories.sphere_truth(SHAPE), np.asarray(scan.affine)),
        )
        scans.append(scan)
    version, _ = services.model_version_request(project=world.project, actor=world.lead)
    version = services.model_version_train(version_id=version.pk)
    per_scan = version.validation_dice_per_scan
    assert set(per_scan) == {str(scans[2].pk), str(scans[3].pk)}
    for label, mean in version.validation_dice.items():
        measured = [d[label] for d in per_scan.values() if d[label] is not None]
        if mean is None:
            assert measured == []
        else:
            assert math.isclose(mean, float(np.mean(measured)), rel_tol=1e-9)
    body = world.client(world.lead).get(f"/api/v1/models/{version.pk}/").json()
    assert {(r["group"], r["scans"]) for r in body["validation_by_metadata"] if r["column"] == "site"} >= {
        ("SITE-A", 1),
        ("SITE-B", 1),
    }


@pytest.mark.parametrize(("roles", "warned"), [(["T1w"], True), ([], True), (["T1w", "FLAIR"], False)])
def test_the_model_card_warns_when_a_lesion_label_is_learnt_without_flair(world, roles, warned):
    from active_learning.model_card import LESION_WITHOUT_FLAIR
    from labeling import services as labeling_services

    labeling_services.label_class_create(
        project=world.project, actor=world.lead, value=4, name="Lesion", color="#ff8800"
    )
    version = ModelVersion.objects.create(
        project=world.project, version=1, status=JobStatus.DONE, hyperparameters={"network": {"input_roles": roles}}
    )
    client = world.client(world.lead)
    limits = client.get(f"/api/v1/models/{version.pk}/card/").json()["known_limits"]
    assert (LESION_WITHOUT_FLAIR in limits) is warned
    assert (LESION_WITHOUT_FLAIR in client.get(f"/api/v1/models/{version.pk}/card.md").content.decode()) is warned


@pytest.mark.parametrize(
    ("name", "warned"),
    [
        ("WMH", True),
        ("White matter hyperintensities", True),
        ("MS plaque", True),
        ("Demyelination", True),
        ("CSF", False),
        ("Thalamus", False),
        ("Plasma", False),
    ],
)
def test_labels_named_as_lesions_by_other_words_get_the_warning(name, warned):
    from active_learning.model_card import KNOWN_LIMITS, LESION_WITHOUT_FLAIR, known_limits

    limits = known_limits(label_names=["Background", name], channels=["T1w"])
    assert (LESION_WITHOUT_FLAIR in limits) is warned
    assert limits[: len(KNOWN_LIMITS)] == KNOWN_LIMITS
