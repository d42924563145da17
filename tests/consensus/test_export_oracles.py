"""Exports checked by the field's own tools: the official BIDS validator, nnU-Net's
``verify_dataset_integrity``, MONAI's datalist loader and ``LoadImaged``, on a one-channel and a
two-channel (T1w + FLAIR) project; and the BIDS validator on kernel-built cases with every role."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from consensus import exporters
from tests import factories

SHAPE = (24, 20, 16)  # 2 mm voxels (factories.AFFINE)
PROJECT_CHANNELS = {"one-channel": [], "two-channels": ["T1w", "FLAIR"]}


#: The dispatch uid of active learning's answer to the export's request for model cards.
@pytest.fixture(params=list(PROJECT_CHANNELS))
def project(request, db):
    """Three scans (train, validation, test), three raters each, a finished consensus; in the
    two-channel project each scan also holds a FLAIR, one of them on a finer grid (resampled).
    The project has a current model, whose card every export carries (``models/v1/``)."""
    from consensus import services
    from consensus.models import ConsensusRun
    from labeling import services as labeling_services
    from labeling.models import Split

    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.ambiguity_threshold = 1.0
    world.project.save()
    channels = PROJECT_CHANNELS[request.param]
    if channels:
        labeling_services.project_update(project=world.project, actor=world.lead, channels=channels)
        world.project.refresh_from_db()
    truth = factories.sphere_truth(SHAPE)
    for seed, split in enumerate([Split.TRAIN, Split.VALIDATION, Split.TEST]):
        scan = factories.add_scan(world, seed=seed, shape=SHAPE)
        scan.split = split
        scan.save()
        if channels:
            shape, affine = SHAPE, factories.AFFINE
            if seed == 1:
                shape, affine = tuple(2 * n for n in SHAPE), np.diag([1.0, 1.0, 1.0, 1.0])
            flair = factories.nifti_bytes(factories.image_array(shape, seed=10 + seed), affine)
            labeling_services.scan_channel_add(scan=scan, actor=world.lead, raw=flair, role="FLAIR")
        factories.submit_panel(world, scan, [truth, np.roll(truth, 1, axis=0), truth])
    for run in ConsensusRun.objects.all():
        services.consensus_run_execute(run_id=run.pk)
    _current_model(world)
    world.channels = channels
    return world


def _current_model(world):
    from django.utils import timezone

    from active_learning.models import ModelVersion
    from consensus.models import GroundTruth
    from mriannot.jobs import JobStatus

    truths = list(GroundTruth.objects.filter(scan__project=world.project).order_by("id").values_list("id", flat=True))
    return ModelVersion.objects.create(
        project=world.project,
        version=1,
        status=JobStatus.DONE,
        finished_at=timezone.now(),
        ground_truth_ids=truths[:1],
        validation_ground_truth_ids=truths[1:2],
    )


def _export(world, format: str, tmp_path: Path, **options) -> Path:
    from consensus import services
    from mriannot.jobs import JobStatus

    export = services.export_request(project=world.project, actor=world.lead, format=format, queue=False, **options)
    export = services.export_execute(export_id=export.pk)
    assert export.status == JobStatus.DONE, export.error
    with export.file.open("rb") as handle:
        zipfile.ZipFile(io.BytesIO(handle.read())).extractall(tmp_path / "export")
    (folder,) = (tmp_path / "export").iterdir()
    return folder


def bids_validator(folder: Path, cwd: Path) -> list[dict]:
    """The issues ``bids-validator-deno`` reports on ``folder`` (its JSON output)."""
    tool = Path(sys.executable).with_name("bids-validator-deno")
    command = str(tool) if tool.exists() else shutil.which("bids-validator-deno")
    assert command, "bids-validator-deno is not installed (requirements-dev.txt)"
    result = subprocess.run(
        [command, str(folder), "--format", "json"], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    try:
        return json.loads(result.stdout)["issues"]["issues"]
    except (ValueError, KeyError):
        pytest.fail(f"bids-validator-deno gave no JSON (exit {result.returncode}): {result.stderr[-2000:]}")


def assert_bids_valid(folder: Path, cwd: Path) -> None:
    issues = bids_validator(folder, cwd)
    errors = [i for i in issues if i["severity"] == "error"]
    assert not errors, "BIDS validator errors:\n" + "\n".join(json.dumps(i)[:400] for i in errors)
    fixed = {"NIFTI_UNIT", "TOO_FEW_AUTHORS", "SIDECAR_KEY_RECOMMENDED", "SIDECAR_FIELD_OVERRIDE"}
    back = [i for i in issues if i["code"] in fixed]
    assert not back, "BIDS validator warnings:\n" + "\n".join(json.dumps(i)[:400] for i in back)


@pytest.mark.slow
def test_bids_export_passes_the_bids_validator(project, tmp_path):
    folder = _export(project, "bids", tmp_path, include_raters=True, include_posterior=True)
    assert (folder / "models/v1/model_card.json").is_file()  # ignored by the validator (.bidsignore)
    assert_bids_valid(folder, tmp_path)
    suffixes = {"T1w": "T1w", "FLAIR": "FLAIR"}
    roles = project.channels or ["T1w"]
    anat = folder / "sub-001" / "anat"
    sidecar = json.loads((anat / "sub-001_space-orig_desc-staple_dseg.json").read_text())
    assert sidecar["Sources"] == [
        f"bids::sub-001/anat/sub-001_space-orig_desc-preproc_{suffixes[role]}.nii.gz" for role in roles
    ]
    assert sidecar["SpatialReference"] == sidecar["Sources"][0]


@pytest.mark.slow
def test_nnunet_export_passes_nnunets_dataset_check(project, tmp_path, monkeypatch, capfd):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    folder = _export(project, "nnunet", tmp_path, include_raters=True, include_posterior=True)
    assert (folder / "models/v1/model_card.md").is_file()  # beside the layout nnU-Net checks
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)
    output = capfd.readouterr().out
    assert "Error" not in output and "Warning" not in output, output
    dataset = json.loads((folder / "dataset.json").read_text())
    roles = project.channels or ["T1w"]
    assert dataset["channel_names"] == {str(k): role for k, role in enumerate(roles)}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[: len(roles)] == [
        f"case_001_{k:04d}.nii.gz" for k in range(len(roles))
    ]


@pytest.mark.slow
def test_monai_datalist_loads_with_monai(project, tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    folder = _export(project, "monai", tmp_path)
    datalist = json.loads((folder / "datalist.json").read_text())
    load = LoadImaged(keys=["image", "label"])
    n = len(project.channels) or 1
    loaded = 0
    for key in ("training", "validation", "test"):
        if not datalist[key]:
            continue
        for item in load_decathlon_datalist(str(folder / "datalist.json"), data_list_key=key):
            assert isinstance(item["image"], list) == (n > 1)
            data = load(item)
            image, label = data["image"], data["label"]
            assert tuple(label.shape) == SHAPE
            assert tuple(image.shape) == ((n, *SHAPE) if n > 1 else SHAPE)
            np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-4)
            loaded += 1
    assert loaded == 3


def _stored(data: np.ndarray) -> bytes:
    """A volume as mriannot stores it: RAS+, gzip, units mm (labeling/volumes.py)."""
    img = nib.Nifti1Image(data, factories.AFFINE)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    return gzip.compress(img.to_bytes(), mtime=0)


def _case(case_id: str, roles, seed: int, split: str = "train") -> exporters.ExportCase:
    truth = factories.sphere_truth(SHAPE)
    posterior = np.stack([(truth == v).astype(np.float32) for v in (0, 1, 2)], axis=-1)
    return exporters.ExportCase(
        case_id=case_id,
        split=split,
        images=tuple((role, _stored(factories.image_array(SHAPE, seed + k))) for k, role in enumerate(roles)),
        labels=_stored(truth),
        ground_truth={"source": "consensus"},
        agreement={"mean_pairwise_dice": 0.9},
        posterior=_stored(posterior),
        posterior_labels=(0, 1, 2),
        raters=(("rater01", _stored(truth)),),
    )


LABELS = {0: ("background", "#000000"), 1: ("Grey matter", "#999999"), 2: ("Grey matter lesion", "#ff0000")}


@pytest.mark.parametrize(
    "roles", [("T1w", "FLAIR"), ("T2w", "PD", "other"), ("other",)], ids=["T1w+FLAIR", "T2w+PD+other", "other"]
)
def test_bids_validator_on_every_channel_role(roles, tmp_path):
    spec = exporters.ExportSpec(
        format="bids",
        project_name="Kernel cases",
        labels=LABELS,
        include_raters=True,
        include_posterior=True,
        channels=roles,
        authors=("A. Lead", "rater01 (pseudonymous rater)"),
    )
    cases = [_case(f"sub-{i:03d}", roles, seed=i, split=split) for i, split in enumerate(["train", "test"], 1)]
    summary = exporters.write_export(tmp_path / "out", spec, cases)
    folder = tmp_path / "out" / summary["folder"]
    assert exporters.verify_export(folder, spec=spec) == []
    assert_bids_valid(folder, tmp_path)
    names = {p.name for p in (folder / "sub-001" / "anat").iterdir()}
    suffix = {"T1w": "T1w", "FLAIR": "FLAIR", "T2w": "T2w", "PD": "PDw", "other": "other"}
    assert {f"sub-001_space-orig_desc-preproc_{suffix[r]}.nii.gz" for r in roles} <= names
    assert {"sub-001_space-orig_label-GREYMATT_desc-staple_probseg.nii.gz"} <= names
    assert {"sub-001_space-orig_label-GREYMAT2_desc-staple_probseg.nii.gz"} <= names
    ignored = (folder / ".bidsignore").read_text().splitlines()
    assert ("*_desc-preproc_other.nii.gz" in ignored) == ("other" in roles)
