"""Several sequences per scan (T1w + FLAIR): the network reads every channel the project declares,
records them, skips scans that lack one, and older single-channel versions keep working."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from active_learning import network, services, training
from active_learning.models import ModelVersion, ScanScore
from active_learning.network import NetworkConfig, build_network, load_checkpoint, save_checkpoint
from active_learning.working_grid import to_working
from consensus import services as consensus_services
from consensus.models import GroundTruth
from labeling import services as labeling_services
from labeling.models import Assignment, Split
from labeling.selectors import label_values
from mriannot.jobs import JobStatus
from tests import factories

TINY_NETWORK = {"working_shape": (16, 16, 16), "channels": (4, 8), "strides": (2,), "num_res_units": 0}
TINY_TRAINING = {"steps": 4, "steps_per_scan": 0, "patch_shape": None, "batch_size": 2}
SHAPE = (24, 20, 16)
TWO = NetworkConfig(
    labels=(0, 1, 2),
    working_shape=(16, 16, 16),
    channels=(4, 8),
    strides=(2,),
    crop_foreground=False,
    input_roles=("T1w", "FLAIR"),
)


@pytest.fixture(autouse=True)
def tiny_model(settings):
    settings.MRIANNOT_AL_NETWORK = TINY_NETWORK
    settings.MRIANNOT_AL_TRAINING = TINY_TRAINING


def _first_conv(model: torch.nn.Module) -> torch.nn.Conv3d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))


def _add_flair(world, scan, seed: int):
    flair = (400.0 - factories.image_array(SHAPE, seed + 100)).astype(np.float32)  # another contrast
    return labeling_services.scan_channel_add(
        scan=scan,
        actor=world.lead,
        raw=factories.nifti_bytes(flair, np.asarray(scan.affine, dtype=float)),
        role="FLAIR",
    )


def _declare(world, channels):
    labeling_services.project_update(project=world.project, actor=world.lead, channels=channels)
    world.project.refresh_from_db()


# ---------------------------------------------------------------------------- kernels


def test_config_records_input_roles_and_old_configs_read_as_one_channel():
    assert TWO.in_channels == 2 and NetworkConfig.from_dict(json.loads(json.dumps(TWO.to_dict()))) == TWO
    old = TWO.to_dict()
    del old["input_roles"]  # a checkpoint written before channels were named
    assert NetworkConfig.from_dict(old).in_channels == 1
    with pytest.raises(ValueError, match="input_roles"):
        NetworkConfig(input_roles=("T1w", "T1w"))
    assert _first_conv(build_network(TWO)).in_channels == 2


def test_to_working_normalises_each_channel_on_its_own_and_stacks_them():
    image = factories.image_array(SHAPE, 0)
    other = 1000.0 + 50.0 * factories.image_array(SHAPE, 1)
    work, geometry = to_working(np.stack([image, other]), config=TWO, spacing=(2.0, 2.0, 2.0))
    alone, alone_geometry = to_working(image, config=TWO, spacing=(2.0, 2.0, 2.0))
    assert work.shape == (2, 16, 16, 16) and work.dtype == np.float32
    np.testing.assert_array_equal(work[0], alone)  # the first channel as a scan of its own
    assert geometry == alone_geometry
    np.testing.assert_array_equal(work[1], to_working(other, config=TWO, spacing=(2.0, 2.0, 2.0))[0])
    rescaled, _ = to_working(np.stack([image, 7.0 * image + 300.0]), config=TWO, spacing=(2.0, 2.0, 2.0))
    np.testing.assert_allclose(rescaled[1], rescaled[0], atol=1e-4)  # each z-scored on its own: scale is gone


def test_training_and_mc_dropout_take_the_channels_the_network_reads():
    rng = np.random.default_rng(0)
    target = np.zeros((16, 16, 16), np.uint8)
    target[4:10, 4:10, 4:10] = 1
    target[6:8, 6:8, 6:8] = 2
    images = [np.stack([target + rng.normal(0, 0.3, target.shape), -target + rng.normal(0, 0.3, target.shape)])]
    images = [im.astype(np.float32) for im in images]
    result = training.train_segmentation(
        images, [target], config=TWO, training=training.TrainingConfig(steps=2, steps_per_scan=0, flip_axes=(0,))
    )
    model, config = load_checkpoint(save_checkpoint(result.model, TWO))
    assert config.input_roles == ("T1w", "FLAIR") and _first_conv(model).in_channels == 2
    assert training.mc_dropout_probabilities(model, images[0], n_samples=2).shape == (2, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="channels"):
        training.train_segmentation([images[0][0]], [target], config=TWO)


# ---------------------------------------------------------------------------- services


def _two_channel_world():
    world = factories.make_world(raters_per_scan=2, n_annotators=3)
    _declare(world, ["T1w", "FLAIR"])
    train = [factories.train_scan_with_truth(world, seed=i, shape=SHAPE) for i in range(3)]
    for i, scan in enumerate(train[:2]):
        _add_flair(world, scan, i)  # train[2] has no FLAIR
    open_with = factories.add_scan(world, seed=5, shape=SHAPE)
    open_without = factories.add_scan(world, seed=6, shape=SHAPE)
    _add_flair(world, open_with, 5)
    return world, train, open_with, open_without


@pytest.mark.django_db
def test_a_two_channel_project_trains_scores_and_skips_scans_without_flair():
    world, train, with_flair, without_flair = _two_channel_world()
    version, _ = services.model_version_request(project=world.project, actor=world.lead)
    version = services.model_version_train(version_id=version.pk)
    assert version.status == JobStatus.DONE, version.error
    assert version.channel_roles == ["T1w", "FLAIR"]
    assert version.hyperparameters["network"]["input_roles"] == ["T1w", "FLAIR"]
    truth_of = {t.pk: t.scan_id for t in GroundTruth.objects.all()}
    assert sorted(truth_of[t] for t in version.ground_truth_ids) == [train[0].pk, train[1].pk]
    skipped = version.hyperparameters["skipped_missing_channels"]
    assert [(row["scan"], row["split"], row["missing"]) for row in skipped] == [(train[2].pk, Split.TRAIN, ["FLAIR"])]
    assert "skipped 1 ground truths lacking FLAIR" in version.message
    with version.weights.open("rb") as handle:
        model, config = network.load_checkpoint(handle.read())
    assert config.in_channels == 2 and _first_conv(model).in_channels == 2

    result = services.scores_update(project_id=world.project.pk)
    assert (result["scored"], result["computed"], result["unscored"]) == (1, 1, 1)
    assert "1 not scored (no FLAIR)" in result["note"]
    score = ScanScore.objects.get(model_version=version)
    assert score.scan_id == with_flair.pk and score.prelabel and score.entropy >= 0
    assert not ScanScore.objects.filter(scan=without_flair, model_version=version).exists()
    assert set(Assignment.objects.filter(scan=without_flair).values_list("priority", flat=True)) == {0.0}

    lead = world.client(world.lead)
    rows = {r["scan"]: r for r in lead.get(f"/api/v1/projects/{world.project.pk}/ranking/").json()["scans"]}
    assert rows[with_flair.pk]["score"] is not None and rows[with_flair.pk]["unscored_reason"] is None
    assert rows[without_flair.pk]["score"] is None and "FLAIR" in rows[without_flair.pk]["unscored_reason"]
    assert lead.get(f"/api/v1/models/{version.pk}/").json()["channels"] == ["T1w", "FLAIR"]

    for scan, status in ((with_flair, 200), (without_flair, 404)):
        assignment = Assignment.objects.filter(scan=scan).first()
        response = world.client(assignment.annotator).get(f"/api/v1/assignments/{assignment.pk}/prelabel/")
        assert response.status_code == status

    _add_flair(world, without_flair, 6)  # once it has its FLAIR, the next ranking scores it
    result = services.scores_update(project_id=world.project.pk)
    assert (result["scored"], result["computed"], result["unscored"]) == (2, 1, 0)
    assert ScanScore.objects.filter(scan=without_flair, model_version=version).exclude(prelabel="").exists()


@pytest.mark.django_db
def test_training_is_refused_when_no_training_scan_has_every_channel():
    world = factories.make_world()
    _declare(world, ["T1w", "FLAIR"])
    factories.train_scan_with_truth(world, seed=0, shape=SHAPE)
    response = world.client(world.lead).post(f"/api/v1/projects/{world.project.pk}/models/")
    assert response.status_code == 409 and response.json()["error"] == "missing_channels"
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_version_recorded_without_roles_still_scores_single_channel_scans():
    world = factories.make_world()
    scans = [factories.add_scan(world, seed=i, shape=SHAPE) for i in range(2)]
    labels = tuple(label_values(project=world.project))
    config = NetworkConfig(labels=labels, **TINY_NETWORK)
    torch.manual_seed(0)
    payload = torch.load(
        io.BytesIO(save_checkpoint(build_network(config), config)), map_location="cpu", weights_only=True
    )
    old_config = json.loads(payload["config"])
    del old_config["input_roles"]  # as written before this change
    payload["config"] = json.dumps(old_config)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    name = consensus_services.write_file(f"models/{world.project.pk}/1.pt", buffer.getvalue())
    version = ModelVersion.objects.create(
        project=world.project,
        version=1,
        status=JobStatus.DONE,
        weights=name,
        hyperparameters={"network": old_config, "training": {}},
    )
    assert version.channel_roles == []
    _declare(world, ["T1w", "FLAIR"])  # the project adds FLAIR later: the old model reads the T1w alone

    result = services.scores_update(project_id=world.project.pk)
    assert (result["scored"], result["computed"], result["unscored"]) == (2, 2, 0)
    scores = ScanScore.objects.filter(model_version=version)
    assert {s.scan_id for s in scores} == {s.pk for s in scans} and all(s.prelabel for s in scores)
    rows = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/ranking/").json()["scans"]
    assert all(r["score"] is not None and r["unscored_reason"] is None for r in rows)


@pytest.mark.django_db
def test_only_ground_truths_with_every_channel_count_towards_retraining(django_capture_on_commit_callbacks):
    world = factories.make_world()
    world.project.al_retrain_every = 2
    world.project.save()
    _declare(world, ["T1w", "FLAIR"])
    factories.train_scan_with_truth(world, seed=0, shape=SHAPE)  # no FLAIR: does not count
    for seed in (1, 2):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE)
        scan.split = Split.TRAIN
        scan.save()
        _add_flair(world, scan, seed)
        with django_capture_on_commit_callbacks(execute=False):
            consensus_services.ground_truth_edit(
                scan=scan,
                actor=world.lead,
                raw=factories.nifti_bytes(factories.sphere_truth(SHAPE), np.asarray(scan.affine)),
            )
        assert ModelVersion.objects.count() == seed - 1  # the second with FLAIR queues one
    assert ModelVersion.objects.get().trigger == "auto"
